//! `exportTo`: which namespaces see a Service, a ServiceEntry, a VirtualService or a
//! DestinationRule, as Istio's `visibility` package reads it.
//!
//! Each entry is `*` (every namespace), `.` (the object's own namespace), `~` (no namespace)
//! or a namespace name. An empty list means the mesh default, which is `*` for all four kinds
//! (Istio's `defaultServiceExportTo`, `defaultVirtualServiceExportTo` and
//! `defaultDestinationRuleExportTo`). Validation has already rejected `*` or `~` mixed with
//! other entries; this reads whatever it is given without failing.

/// `*`: exported to every namespace.
pub const PUBLIC: &str = "*";
/// `.`: exported to the object's own namespace only.
pub const PRIVATE: &str = ".";
/// `~`: exported to no namespace.
pub const NONE: &str = "~";

/// Whether an object of `owner_namespace` exported to `export_to` is visible from
/// `viewer_namespace`. A proxy without a namespace (anonymous) sees only public objects.
pub fn is_visible(
    export_to: &[String],
    owner_namespace: &str,
    viewer_namespace: Option<&str>,
) -> bool {
    if export_to.is_empty() {
        return true;
    }
    export_to.iter().any(|e| match e.as_str() {
        PUBLIC => true,
        NONE => false,
        PRIVATE => viewer_namespace == Some(owner_namespace),
        ns => viewer_namespace == Some(ns),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn export_to_table() {
        let cases: &[(&[&str], &str, Option<&str>, bool)] = &[
            (&[], "a", Some("b"), true),
            (&[], "a", None, true),
            (&["*"], "a", Some("b"), true),
            (&["."], "a", Some("a"), true),
            (&["."], "a", Some("b"), false),
            (&["."], "a", None, false),
            (&["~"], "a", Some("a"), false),
            (&["b"], "a", Some("b"), true),
            (&["b"], "a", Some("a"), false),
            (&[".", "c"], "a", Some("c"), true),
            (&[".", "c"], "a", Some("a"), true),
            (&[".", "c"], "a", Some("b"), false),
        ];
        for (export_to, owner, viewer, want) in cases {
            assert_eq!(
                is_visible(&list(export_to), owner, *viewer),
                *want,
                "{export_to:?} of {owner} from {viewer:?}"
            );
        }
    }
}

//! Trust domain aliases (Istio's `trustdomain.Bundle`): principals written for one trust
//! domain also match the same identity in the mesh's trust domain and its aliases.

/// The mesh's trust domain first, then its aliases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// Trust domains, the local one first.
    pub trust_domains: Vec<String>,
}

/// The pointer to the local trust domain in policies.
const CLUSTER_LOCAL: &str = "cluster.local";

impl Bundle {
    /// A bundle of `local` and its `aliases`.
    pub fn new(local: &str, aliases: &[String]) -> Bundle {
        let mut trust_domains = vec![local.to_string()];
        trust_domains.extend(aliases.iter().cloned());
        Bundle { trust_domains }
    }

    /// Each principal `TD/ns/NS/sa/SA` whose trust domain is the local one, an alias, or
    /// `cluster.local` becomes one principal per trust domain of the bundle; a `*` trust
    /// domain and other forms are kept as they are.
    pub fn replace_aliases(&self, principals: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for principal in principals {
            let parts: Vec<&str> = principal.split('/').collect();
            if parts.len() != 5 || parts[0] == "*" {
                out.push(principal.clone());
                continue;
            }
            let td = parts[0];
            if !(string_match(td, &self.trust_domains) || td == CLUSTER_LOCAL) {
                out.push(principal.clone());
                continue;
            }
            let mut for_aliases: Vec<String> = Vec::new();
            for alias in &self.trust_domains {
                let candidate = if suffix_match(alias, td) {
                    principal.clone()
                } else {
                    format!("{alias}/{}", parts[1..].join("/"))
                };
                if !for_aliases.contains(&candidate) {
                    for_aliases.push(candidate);
                }
            }
            out.extend(for_aliases);
        }
        out
    }

    /// Each value naming a trust domain of the bundle becomes every trust domain of the
    /// bundle (duplicates removed).
    pub fn expand(&self, values: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in values {
            let expanded = if self.trust_domains.contains(v) {
                self.trust_domains.clone()
            } else {
                vec![v.clone()]
            };
            for e in expanded {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
        out
    }
}

/// Whether `a` matches an entry of `list`, either side being a `*`, `x*` or `*x` pattern.
fn string_match(a: &str, list: &[String]) -> bool {
    list.iter().any(|s| {
        a == s
            || s == "*"
            || prefix_match(a, s)
            || prefix_match(s, a)
            || suffix_match(a, s)
            || suffix_match(s, a)
    })
}

fn prefix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_suffix('*').is_some_and(|p| a.starts_with(p))
}

fn suffix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_prefix('*').is_some_and(|p| a.ends_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn aliases_as_istio() {
        let b = Bundle::new("td1", &s(&["cluster.local"]));
        assert_eq!(
            b.replace_aliases(&s(&["cluster.local/ns/a/sa/b"])),
            s(&["td1/ns/a/sa/b", "cluster.local/ns/a/sa/b"])
        );
        let b = Bundle::new("td1", &s(&["foobar"]));
        assert_eq!(
            b.replace_aliases(&s(&["*/ns/a/sa/b", "*bar/ns/a/sa/c"])),
            s(&["*/ns/a/sa/b", "td1/ns/a/sa/c", "*bar/ns/a/sa/c"])
        );
        let b = Bundle::new("new-td", &s(&["old-td", "some-trustdomain"]));
        assert_eq!(
            b.replace_aliases(&s(&["*", "*-td/ns/foo/sa/p"])),
            s(&["*", "*-td/ns/foo/sa/p", "some-trustdomain/ns/foo/sa/p"])
        );
        let b = Bundle::new("cluster.local", &[]);
        assert_eq!(
            b.replace_aliases(&s(&["other/ns/a/sa/b", "x"])),
            s(&["other/ns/a/sa/b", "x"])
        );
        assert_eq!(
            b.expand(&s(&["cluster.local", "x"])),
            s(&["cluster.local", "x"])
        );
    }
}

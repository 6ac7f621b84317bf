//! Envoy matchers as istiod writes them for AuthorizationPolicy values: `exact`, `prefix*`,
//! `*suffix` and `*` forms, SPIFFE principals, namespaces, service accounts, trust domains,
//! paths and path templates, and JWT claims in `envoy.filters.http.jwt_authn` metadata.

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
use envoy_types::pb::envoy::config::rbac::v3::{permission, principal, Permission, Principal};
use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher};
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher, path_matcher, string_matcher, value_matcher, ListMatcher,
    MetadataMatcher, OrMatcher, PathMatcher, RegexMatcher, StringMatcher, ValueMatcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;

/// The SPIFFE URI prefix of peer identities.
pub const SPIFFE: &str = "spiffe://";
/// The dynamic metadata namespace of Envoy's JWT filter.
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";

fn pattern(p: string_matcher::MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case,
    }
}

/// A regex matcher (RE2, full match).
pub fn regex(r: impl Into<String>) -> StringMatcher {
    pattern(
        string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: r.into(),
            ..Default::default()
        }),
        false,
    )
}

/// An exact matcher.
pub fn exact(v: impl Into<String>) -> StringMatcher {
    pattern(string_matcher::MatchPattern::Exact(v.into()), false)
}

fn prefix(v: impl Into<String>, ignore_case: bool) -> StringMatcher {
    pattern(string_matcher::MatchPattern::Prefix(v.into()), ignore_case)
}

fn suffix(v: impl Into<String>, ignore_case: bool) -> StringMatcher {
    pattern(string_matcher::MatchPattern::Suffix(v.into()), ignore_case)
}

/// Go's `regexp.QuoteMeta`: the expression matching `s` literally.
pub fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Istio's string matcher: `*` is any non-empty value, `*x` a suffix, `x*` a prefix, else
/// exact.
pub fn string(v: &str) -> StringMatcher {
    if v == "*" {
        regex(".+")
    } else if let Some(rest) = v.strip_prefix('*') {
        suffix(rest, false)
    } else if let Some(rest) = v.strip_suffix('*') {
        prefix(rest, false)
    } else {
        exact(v)
    }
}

/// A SPIFFE principal (`cluster.local/ns/NS/sa/SA`): `spiffe://` is added, `*` is any,
/// `*x` becomes the expression `spiffe://.*x`, `x*` a prefix.
pub fn spiffe_principal(v: &str) -> StringMatcher {
    if v == "*" {
        regex(".+")
    } else if let Some(rest) = v.strip_prefix('*') {
        regex(format!("{SPIFFE}.*{}", quote_meta(rest)))
    } else if let Some(rest) = v.strip_suffix('*') {
        prefix(format!("{SPIFFE}{rest}"), false)
    } else {
        exact(format!("{SPIFFE}{v}"))
    }
}

/// A namespace, as the expression `.*/ns/NS/.*` on the principal (`*` is any text).
pub fn namespace(v: &str) -> StringMatcher {
    regex(format!(".*/ns/{}/.*", quote_meta(v).replace("\\*", ".*")))
}

/// A service account `SA` (of `default_ns`) or `NS/SA`.
pub fn service_account(default_ns: &str, v: &str) -> StringMatcher {
    let (ns, sa) = v.split_once('/').unwrap_or((default_ns, v));
    regex(format!(
        "{SPIFFE}.+/ns/{}/(.+/|)sa/{}(/.+)?",
        quote_meta(ns),
        quote_meta(sa)
    ))
}

/// A trust domain: a `spiffe://TD/` prefix, or an expression when it holds `*` (any
/// characters but `/`).
pub fn trust_domain(v: &str) -> StringMatcher {
    if v.contains('*') {
        regex(format!(
            "{SPIFFE}{}/.*",
            quote_meta(v).replace("\\*", "[^/]*")
        ))
    } else {
        prefix(format!("{SPIFFE}{v}/"), false)
    }
}

/// `authenticated.principal_name`.
pub fn authenticated(m: StringMatcher) -> Principal {
    id(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: Some(m),
        },
    ))
}

/// A header matcher: `*` is presence, `*x` suffix, `x*` prefix, else exact.
pub fn header(name: &str, v: &str) -> HeaderMatcher {
    let spec = if v == "*" {
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    } else if let Some(rest) = v.strip_prefix('*') {
        header_matcher::HeaderMatchSpecifier::StringMatch(suffix(rest, false))
    } else if let Some(rest) = v.strip_suffix('*') {
        header_matcher::HeaderMatchSpecifier::StringMatch(prefix(rest, false))
    } else {
        header_matcher::HeaderMatchSpecifier::StringMatch(exact(v))
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

/// A host matcher on `:authority`, case-insensitive.
pub fn host(v: &str) -> HeaderMatcher {
    let spec = if v == "*" {
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    } else {
        let m = if let Some(rest) = v.strip_prefix('*') {
            suffix(rest, true)
        } else if let Some(rest) = v.strip_suffix('*') {
            prefix(rest, true)
        } else {
            pattern(string_matcher::MatchPattern::Exact(v.to_string()), true)
        };
        header_matcher::HeaderMatchSpecifier::StringMatch(m)
    };
    HeaderMatcher {
        name: ":authority".to_string(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

/// Whether a path uses Istio's templates `{*}` / `{**}`.
pub fn is_path_template(v: &str) -> bool {
    v.contains("{*}") || v.contains("{**}")
}

/// A path permission: `url_path`, or `uri_template` for a template.
pub fn path(v: &str) -> Permission {
    if is_path_template(v) {
        let template = v.replace("{**}", "**").replace("{*}", "*");
        return perm(permission::Rule::UriTemplate(TypedExtensionConfig {
            name: "uri-template".to_string(),
            typed_config: Some(pack_any(UriTemplateMatchConfig {
                path_template: template,
            })),
        }));
    }
    perm(permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(string(v))),
    }))
}

/// An IP or CIDR as Envoy's range (a bare address is a /32 or /128); `None` when it does not
/// parse (validation rejects that before).
pub fn cidr(v: &str) -> Option<CidrRange> {
    let (addr, len) = match v.split_once('/') {
        Some((a, l)) => (a.parse::<std::net::IpAddr>().ok()?, l.parse::<u32>().ok()?),
        None => {
            let a = v.parse::<std::net::IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    Some(CidrRange {
        address_prefix: addr.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

/// A metadata matcher on `filter` at `path`.
pub fn metadata(filter: &str, path: &[&str], value: ValueMatcher) -> MetadataMatcher {
    MetadataMatcher {
        filter: filter.to_string(),
        path: path
            .iter()
            .map(|k| metadata_matcher::PathSegment {
                segment: Some(metadata_matcher::path_segment::Segment::Key(k.to_string())),
            })
            .collect(),
        value: Some(value),
        invert: false,
    }
}

/// A value matcher on a string.
pub fn value_string(m: StringMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
    }
}

/// One value matcher, or an OR of several (Envoy's OR needs two or more).
pub fn value_or(mut all: Vec<ValueMatcher>) -> ValueMatcher {
    if all.len() == 1 {
        return all.remove(0);
    }
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
            value_matchers: all,
        })),
    }
}

/// A list whose elements include one matching `m`.
pub fn value_list_one_of(m: ValueMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(m))),
            },
        ))),
    }
}

/// A JWT claim (`payload.CLAIM...`) that is one of `values` or a list holding one of them.
pub fn jwt_claim_list(claims: &[&str], values: &[String]) -> MetadataMatcher {
    let strings = value_or(values.iter().map(|v| value_string(string(v))).collect());
    let mut path = vec!["payload"];
    path.extend_from_slice(claims);
    metadata(
        JWT_FILTER,
        &path,
        value_or(vec![value_list_one_of(strings.clone()), strings]),
    )
}

/// A JWT claim (`payload.CLAIM`) that is a string matching `m`.
pub fn jwt_claim(claim: &str, m: StringMatcher) -> MetadataMatcher {
    metadata(JWT_FILTER, &["payload", claim], value_string(m))
}

/// A permission from its rule.
pub fn perm(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}

/// A principal from its identifier.
pub fn id(identifier: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(identifier),
    }
}

/// `any: true`.
pub fn perm_any() -> Permission {
    perm(permission::Rule::Any(true))
}

/// `any: true`.
pub fn id_any() -> Principal {
    id(principal::Identifier::Any(true))
}

/// `or_rules`.
pub fn perm_or(rules: Vec<Permission>) -> Permission {
    perm(permission::Rule::OrRules(permission::Set { rules }))
}

/// `and_rules`.
pub fn perm_and(rules: Vec<Permission>) -> Permission {
    perm(permission::Rule::AndRules(permission::Set { rules }))
}

/// `not_rule`.
pub fn perm_not(p: Permission) -> Permission {
    perm(permission::Rule::NotRule(Box::new(p)))
}

/// `or_ids`.
pub fn id_or(ids: Vec<Principal>) -> Principal {
    id(principal::Identifier::OrIds(principal::Set { ids }))
}

/// `and_ids`.
pub fn id_and(ids: Vec<Principal>) -> Principal {
    id(principal::Identifier::AndIds(principal::Set { ids }))
}

/// `not_id`.
pub fn id_not(p: Principal) -> Principal {
    id(principal::Identifier::NotId(Box::new(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex_of(m: &StringMatcher) -> &str {
        match &m.match_pattern {
            Some(string_matcher::MatchPattern::SafeRegex(r)) => &r.regex,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn istio_forms() {
        assert_eq!(string("a*"), prefix("a", false));
        assert_eq!(string("*a"), suffix("a", false));
        assert_eq!(regex_of(&string("*")), ".+");
        assert_eq!(
            regex_of(&spiffe_principal("*/ns/foo/sa/r[0]")),
            r"spiffe://.*/ns/foo/sa/r\[0\]"
        );
        assert_eq!(
            spiffe_principal("td/ns/a/sa/b"),
            exact("spiffe://td/ns/a/sa/b")
        );
        assert_eq!(regex_of(&namespace("ns-prefix-*")), ".*/ns/ns-prefix-.*/.*");
        assert_eq!(regex_of(&namespace("a[0]")), r".*/ns/a\[0\]/.*");
        assert_eq!(
            regex_of(&service_account("foo", "sa-only")),
            "spiffe://.+/ns/foo/(.+/|)sa/sa-only(/.+)?"
        );
        assert_eq!(regex_of(&trust_domain("bad*")), "spiffe://bad[^/]*/.*");
        assert_eq!(
            trust_domain("cluster.local"),
            prefix("spiffe://cluster.local/", false)
        );
        assert_eq!(cidr("10.0.0.1").unwrap().prefix_len.unwrap().value, 32);
        assert_eq!(cidr("5.6.0.0/16").unwrap().address_prefix, "5.6.0.0");
        assert_eq!(cidr("::1").unwrap().prefix_len.unwrap().value, 128);
    }
}

//! Istio's expected RBAC filters (Envoy's protobuf JSON, written as YAML) into the protobuf
//! messages the xDS client receives. Every key is accounted for: a field this reader does not
//! know fails the test instead of being dropped. Istio still writes deprecated fields
//! (`source_ip`, `metadata`, `safe_regex_match`), so they are read too.
#![allow(deprecated)]

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
use envoy_types::pb::envoy::config::rbac::v3::{
    self as rbac, permission, principal, Permission, Policy, Principal,
};
use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher, path_matcher, string_matcher, value_matcher, ListMatcher,
    MetadataMatcher, OrMatcher, PathMatcher, RegexMatcher, StringMatcher, ValueMatcher,
};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use serde_json::{Map, Value};

/// An object's fields, checked against the keys the caller reads.
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    at: String,
}

impl<'a> Obj<'a> {
    /// `v` as an object whose keys are all in `known`.
    pub fn new(v: &'a Value, at: &str, known: &[&str]) -> Obj<'a> {
        let map = v
            .as_object()
            .unwrap_or_else(|| panic!("{at}: not an object: {v}"));
        for k in map.keys() {
            assert!(known.contains(&k.as_str()), "{at}: unknown field {k}");
        }
        Obj {
            map,
            at: at.to_string(),
        }
    }

    /// A field.
    pub fn get(&self, k: &str) -> Option<&'a Value> {
        self.map.get(k)
    }

    fn str(&self, k: &str) -> String {
        self.get(k)
            .map(|v| {
                v.as_str()
                    .unwrap_or_else(|| panic!("{}.{k}: not a string", self.at))
                    .to_string()
            })
            .unwrap_or_default()
    }

    fn bool(&self, k: &str) -> bool {
        self.get(k).and_then(Value::as_bool).unwrap_or(false)
    }

    fn u64(&self, k: &str) -> Option<u64> {
        self.get(k).map(|v| {
            v.as_u64()
                .unwrap_or_else(|| panic!("{}.{k}: not a number", self.at))
        })
    }

    fn list(&self, k: &str) -> &'a [Value] {
        self.get(k)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The one key of a oneof object, with its value.
    pub fn one(&self) -> (&'a str, &'a Value) {
        assert_eq!(self.map.len(), 1, "{}: one field expected", self.at);
        let (k, v) = self.map.iter().next().unwrap();
        (k.as_str(), v)
    }
}

/// `typedConfig` of `envoy.filters.http.rbac`.
pub fn http_rbac(v: &Value) -> HttpRbac {
    let o = Obj::new(
        v,
        "RBAC",
        &[
            "@type",
            "rules",
            "shadowRules",
            "rulesStatPrefix",
            "shadowRulesStatPrefix",
        ],
    );
    HttpRbac {
        rules: o.get("rules").map(rules),
        shadow_rules: o.get("shadowRules").map(rules),
        rules_stat_prefix: o.str("rulesStatPrefix"),
        shadow_rules_stat_prefix: o.str("shadowRulesStatPrefix"),
        ..Default::default()
    }
}

/// `typedConfig` of `envoy.filters.network.rbac`.
pub fn network_rbac(v: &Value) -> NetworkRbac {
    let o = Obj::new(
        v,
        "RBAC",
        &[
            "@type",
            "rules",
            "shadowRules",
            "statPrefix",
            "shadowRulesStatPrefix",
        ],
    );
    NetworkRbac {
        rules: o.get("rules").map(rules),
        shadow_rules: o.get("shadowRules").map(rules),
        stat_prefix: o.str("statPrefix"),
        shadow_rules_stat_prefix: o.str("shadowRulesStatPrefix"),
        ..Default::default()
    }
}

fn rules(v: &Value) -> rbac::Rbac {
    let o = Obj::new(v, "rules", &["action", "policies"]);
    let action = match o.str("action").as_str() {
        "" | "ALLOW" => rbac::rbac::Action::Allow,
        "DENY" => rbac::rbac::Action::Deny,
        "LOG" => rbac::rbac::Action::Log,
        other => panic!("rules.action: {other}"),
    };
    let policies = o
        .get("policies")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), policy(v))).collect())
        .unwrap_or_default();
    rbac::Rbac {
        action: action as i32,
        policies,
        ..Default::default()
    }
}

fn policy(v: &Value) -> Policy {
    let o = Obj::new(v, "policy", &["permissions", "principals"]);
    Policy {
        permissions: o.list("permissions").iter().map(permission).collect(),
        principals: o.list("principals").iter().map(principal).collect(),
        ..Default::default()
    }
}

fn permission(v: &Value) -> Permission {
    use permission::Rule as R;
    let (k, v) = Obj::new(v, "permission", PERMISSION_KEYS).one();
    let set = |key: &str| permission::Set {
        rules: Obj::new(v, key, &["rules"])
            .list("rules")
            .iter()
            .map(permission)
            .collect(),
    };
    let rule = match k {
        "any" => R::Any(v.as_bool().unwrap()),
        "andRules" => R::AndRules(set(k)),
        "orRules" => R::OrRules(set(k)),
        "notRule" => R::NotRule(Box::new(permission(v))),
        "header" => R::Header(header(v)),
        "urlPath" => R::UrlPath(path(v)),
        "destinationIp" => R::DestinationIp(cidr(v)),
        "destinationPort" => R::DestinationPort(v.as_u64().unwrap() as u32),
        "destinationPortRange" => {
            let o = Obj::new(v, k, &["start", "end"]);
            R::DestinationPortRange(Int32Range {
                start: o.u64("start").unwrap_or(0) as i32,
                end: o.u64("end").unwrap_or(0) as i32,
            })
        }
        "requestedServerName" => R::RequestedServerName(string(v)),
        "metadata" => R::Metadata(metadata(v)),
        "uriTemplate" => R::UriTemplate(uri_template(v)),
        _ => unreachable!(),
    };
    Permission { rule: Some(rule) }
}

/// The keys of a permission.
pub const PERMISSION_KEYS: &[&str] = &[
    "any",
    "andRules",
    "orRules",
    "notRule",
    "header",
    "urlPath",
    "destinationIp",
    "destinationPort",
    "destinationPortRange",
    "requestedServerName",
    "metadata",
    "uriTemplate",
];

/// The keys of a principal.
pub const PRINCIPAL_KEYS: &[&str] = &[
    "any",
    "andIds",
    "orIds",
    "notId",
    "authenticated",
    "sourceIp",
    "directRemoteIp",
    "remoteIp",
    "header",
    "urlPath",
    "metadata",
];

fn principal(v: &Value) -> Principal {
    use principal::Identifier as I;
    let (k, v) = Obj::new(v, "principal", PRINCIPAL_KEYS).one();
    let set = |key: &str| principal::Set {
        ids: Obj::new(v, key, &["ids"])
            .list("ids")
            .iter()
            .map(principal)
            .collect(),
    };
    let id = match k {
        "any" => I::Any(v.as_bool().unwrap()),
        "andIds" => I::AndIds(set(k)),
        "orIds" => I::OrIds(set(k)),
        "notId" => I::NotId(Box::new(principal(v))),
        "authenticated" => I::Authenticated(principal::Authenticated {
            principal_name: Obj::new(v, k, &["principalName"])
                .get("principalName")
                .map(string),
        }),
        "sourceIp" => I::SourceIp(cidr(v)),
        "directRemoteIp" => I::DirectRemoteIp(cidr(v)),
        "remoteIp" => I::RemoteIp(cidr(v)),
        "header" => I::Header(header(v)),
        "urlPath" => I::UrlPath(path(v)),
        "metadata" => I::Metadata(metadata(v)),
        _ => unreachable!(),
    };
    Principal {
        identifier: Some(id),
    }
}

/// A `StringMatcher`.
pub fn string(v: &Value) -> StringMatcher {
    use string_matcher::MatchPattern as M;
    let o = Obj::new(
        v,
        "stringMatch",
        &[
            "exact",
            "prefix",
            "suffix",
            "contains",
            "safeRegex",
            "ignoreCase",
        ],
    );
    let pattern = if let Some(s) = o.get("exact") {
        M::Exact(s.as_str().unwrap().into())
    } else if let Some(s) = o.get("prefix") {
        M::Prefix(s.as_str().unwrap().into())
    } else if let Some(s) = o.get("suffix") {
        M::Suffix(s.as_str().unwrap().into())
    } else if let Some(s) = o.get("contains") {
        M::Contains(s.as_str().unwrap().into())
    } else if let Some(r) = o.get("safeRegex") {
        M::SafeRegex(regex(r))
    } else {
        panic!("stringMatch without a pattern: {v}")
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: o.bool("ignoreCase"),
    }
}

fn regex(v: &Value) -> RegexMatcher {
    RegexMatcher {
        regex: Obj::new(v, "safeRegex", &["regex"]).str("regex"),
        ..Default::default()
    }
}

fn header(v: &Value) -> HeaderMatcher {
    use header_matcher::HeaderMatchSpecifier as S;
    let o = Obj::new(
        v,
        "header",
        &[
            "name",
            "stringMatch",
            "presentMatch",
            "exactMatch",
            "prefixMatch",
            "suffixMatch",
            "safeRegexMatch",
            "invertMatch",
        ],
    );
    let spec = if let Some(m) = o.get("stringMatch") {
        S::StringMatch(string(m))
    } else if let Some(b) = o.get("presentMatch") {
        S::PresentMatch(b.as_bool().unwrap())
    } else if let Some(s) = o.get("exactMatch") {
        S::ExactMatch(s.as_str().unwrap().into())
    } else if let Some(s) = o.get("prefixMatch") {
        S::PrefixMatch(s.as_str().unwrap().into())
    } else if let Some(s) = o.get("suffixMatch") {
        S::SuffixMatch(s.as_str().unwrap().into())
    } else if let Some(r) = o.get("safeRegexMatch") {
        S::SafeRegexMatch(regex(r))
    } else {
        panic!("header matcher without a rule: {v}")
    };
    HeaderMatcher {
        name: o.str("name"),
        invert_match: o.bool("invertMatch"),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

fn path(v: &Value) -> PathMatcher {
    let o = Obj::new(v, "urlPath", &["path"]);
    PathMatcher {
        rule: Some(path_matcher::Rule::Path(string(o.get("path").unwrap()))),
    }
}

fn cidr(v: &Value) -> CidrRange {
    let o = Obj::new(v, "cidr", &["addressPrefix", "prefixLen"]);
    CidrRange {
        address_prefix: o.str("addressPrefix"),
        prefix_len: o.u64("prefixLen").map(|n| UInt32Value { value: n as u32 }),
    }
}

fn metadata(v: &Value) -> MetadataMatcher {
    let o = Obj::new(v, "metadata", &["filter", "path", "value", "invert"]);
    MetadataMatcher {
        filter: o.str("filter"),
        path: o
            .list("path")
            .iter()
            .map(|s| metadata_matcher::PathSegment {
                segment: Some(metadata_matcher::path_segment::Segment::Key(
                    Obj::new(s, "path", &["key"]).str("key"),
                )),
            })
            .collect(),
        value: o.get("value").map(value_matcher),
        invert: o.bool("invert"),
    }
}

fn value_matcher(v: &Value) -> ValueMatcher {
    use value_matcher::MatchPattern as M;
    let (k, v) = Obj::new(
        v,
        "value",
        &[
            "stringMatch",
            "presentMatch",
            "boolMatch",
            "listMatch",
            "orMatch",
        ],
    )
    .one();
    let pattern = match k {
        "stringMatch" => M::StringMatch(string(v)),
        "presentMatch" => M::PresentMatch(v.as_bool().unwrap()),
        "boolMatch" => M::BoolMatch(v.as_bool().unwrap()),
        "listMatch" => M::ListMatch(Box::new(ListMatcher {
            match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(value_matcher(
                Obj::new(v, k, &["oneOf"]).get("oneOf").unwrap(),
            )))),
        })),
        "orMatch" => M::OrMatch(OrMatcher {
            value_matchers: Obj::new(v, k, &["valueMatchers"])
                .list("valueMatchers")
                .iter()
                .map(value_matcher)
                .collect(),
        }),
        _ => unreachable!(),
    };
    ValueMatcher {
        match_pattern: Some(pattern),
    }
}

fn uri_template(v: &Value) -> TypedExtensionConfig {
    let o = Obj::new(v, "uriTemplate", &["name", "typedConfig"]);
    let cfg = Obj::new(
        o.get("typedConfig").unwrap(),
        "uriTemplate.typedConfig",
        &["@type", "pathTemplate"],
    );
    TypedExtensionConfig {
        name: o.str("name"),
        typed_config: Some(pack_any(UriTemplateMatchConfig {
            path_template: cfg.str("pathTemplate"),
        })),
    }
}

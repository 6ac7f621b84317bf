//! Rendering of the RBAC filters (HTTP and network): rules, policies, permission and
//! principal trees, and the matchers they hold.

use std::collections::BTreeMap;
use std::mem::take;

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action, Permission, Policy, Principal, Rbac,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher, path_matcher, value_matcher, MetadataMatcher, PathMatcher,
    ValueMatcher,
};
use serde_json::{Map, Value};

use super::route::{header_matcher, string_matcher};
use super::{any, enum_name, wrapped_u32, Obj, R};

fn cidr(mut c: CidrRange) -> R {
    let mut o = Obj::default();
    o.str("address_prefix", take(&mut c.address_prefix));
    o.msg("prefix_len", c.prefix_len.take(), wrapped_u32)?;
    o.done(c, "CidrRange")
}

fn path(mut p: PathMatcher) -> R {
    let mut o = Obj::default();
    match p.rule.take() {
        Some(path_matcher::Rule::Path(s)) => {
            o.msg("path", Some(s), string_matcher)?;
        }
        other => p.rule = other,
    }
    o.done(p, "PathMatcher")
}

fn value(mut v: ValueMatcher) -> R {
    use value_matcher::MatchPattern as P;
    let mut o = Obj::default();
    match v.match_pattern.take() {
        Some(P::StringMatch(s)) => {
            o.msg("string_match", Some(s), string_matcher)?;
        }
        Some(P::ListMatch(mut l)) => {
            let mut inner = Obj::default();
            match l.match_pattern.take() {
                Some(list_matcher::MatchPattern::OneOf(one)) => {
                    inner.msg("one_of", Some(*one), value)?;
                }
                other => l.match_pattern = other,
            }
            o.val("list_match", Some(inner.done(*l, "ListMatcher")?));
        }
        Some(P::OrMatch(mut or)) => {
            let mut inner = Obj::default();
            inner.list("value_matchers", take(&mut or.value_matchers), value)?;
            o.val("or_match", Some(inner.done(or, "OrMatcher")?));
        }
        other => v.match_pattern = other,
    }
    o.done(v, "ValueMatcher")
}

fn metadata(mut m: MetadataMatcher) -> R {
    let mut o = Obj::default();
    o.str("filter", take(&mut m.filter));
    let segments = take(&mut m.path)
        .into_iter()
        .map(|mut s| {
            let mut seg = Obj::default();
            match s.segment.take() {
                Some(metadata_matcher::path_segment::Segment::Key(k)) => {
                    seg.str("key", k);
                }
                other => s.segment = other,
            }
            seg.done(s, "PathSegment")
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !segments.is_empty() {
        o.val("path", Some(Value::Array(segments)));
    }
    o.msg("value", m.value.take(), value)?;
    o.bool("invert", take(&mut m.invert));
    o.done(m, "MetadataMatcher")
}

fn extension(mut e: TypedExtensionConfig) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut e.name));
    if let Some(a) = e.typed_config.take() {
        o.val("typed_config", Some(any(a)?));
    }
    o.done(e, "TypedExtensionConfig")
}

/// `UriTemplateMatchConfig`.
pub(super) fn uri_template(mut t: UriTemplateMatchConfig) -> R {
    let mut o = Obj::default();
    o.str("path_template", take(&mut t.path_template));
    o.done(t, "UriTemplateMatchConfig")
}

#[allow(deprecated)]
fn permission_json(mut p: Permission) -> R {
    use permission::Rule as Ru;
    let mut o = Obj::default();
    let set = |mut s: permission::Set| -> R {
        let mut inner = Obj::default();
        inner.list("rules", take(&mut s.rules), permission_json)?;
        inner.done(s, "Permission.Set")
    };
    match p.rule.take() {
        Some(Ru::AndRules(s)) => {
            o.val("and_rules", Some(set(s)?));
        }
        Some(Ru::OrRules(s)) => {
            o.val("or_rules", Some(set(s)?));
        }
        Some(Ru::Any(a)) => {
            o.val("any", Some(Value::Bool(a)));
        }
        Some(Ru::NotRule(inner)) => {
            o.msg("not_rule", Some(*inner), permission_json)?;
        }
        Some(Ru::Header(h)) => {
            o.msg("header", Some(h), header_matcher)?;
        }
        Some(Ru::UrlPath(u)) => {
            o.msg("url_path", Some(u), path)?;
        }
        Some(Ru::DestinationIp(c)) => {
            o.msg("destination_ip", Some(c), cidr)?;
        }
        Some(Ru::DestinationPort(port)) => {
            o.val("destination_port", Some(Value::from(port)));
        }
        Some(Ru::Metadata(m)) => {
            o.msg("metadata", Some(m), metadata)?;
        }
        Some(Ru::RequestedServerName(s)) => {
            o.msg("requested_server_name", Some(s), string_matcher)?;
        }
        Some(Ru::UriTemplate(t)) => {
            o.msg("uri_template", Some(t), extension)?;
        }
        other => p.rule = other,
    }
    o.done(p, "Permission")
}

#[allow(deprecated)]
fn principal_json(mut p: Principal) -> R {
    use principal::Identifier as I;
    let mut o = Obj::default();
    let set = |mut s: principal::Set| -> R {
        let mut inner = Obj::default();
        inner.list("ids", take(&mut s.ids), principal_json)?;
        inner.done(s, "Principal.Set")
    };
    match p.identifier.take() {
        Some(I::AndIds(s)) => {
            o.val("and_ids", Some(set(s)?));
        }
        Some(I::OrIds(s)) => {
            o.val("or_ids", Some(set(s)?));
        }
        Some(I::Any(a)) => {
            o.val("any", Some(Value::Bool(a)));
        }
        Some(I::NotId(inner)) => {
            o.msg("not_id", Some(*inner), principal_json)?;
        }
        Some(I::Authenticated(mut a)) => {
            let mut inner = Obj::default();
            inner.msg("principal_name", a.principal_name.take(), string_matcher)?;
            o.val("authenticated", Some(inner.done(a, "Authenticated")?));
        }
        Some(I::DirectRemoteIp(c)) => {
            o.msg("direct_remote_ip", Some(c), cidr)?;
        }
        Some(I::RemoteIp(c)) => {
            o.msg("remote_ip", Some(c), cidr)?;
        }
        Some(I::Header(h)) => {
            o.msg("header", Some(h), header_matcher)?;
        }
        Some(I::Metadata(m)) => {
            o.msg("metadata", Some(m), metadata)?;
        }
        other => p.identifier = other,
    }
    o.done(p, "Principal")
}

fn policy(mut p: Policy) -> R {
    let mut o = Obj::default();
    o.list("permissions", take(&mut p.permissions), permission_json)?;
    o.list("principals", take(&mut p.principals), principal_json)?;
    o.done(p, "Policy")
}

fn rules(mut r: Rbac) -> R {
    let mut o = Obj::default();
    o.val(
        "action",
        enum_name::<Action>("RBAC.Action", take(&mut r.action), Action::as_str_name)?,
    );
    let sorted: BTreeMap<String, Policy> = take(&mut r.policies).into_iter().collect();
    let mut policies = Map::new();
    for (name, p) in sorted {
        policies.insert(name, policy(p)?);
    }
    // An empty policy map is meaningful (ALLOW with no policy denies everything).
    o.val("policies", Some(Value::Object(policies)));
    o.done(r, "RBAC")
}

/// `envoy.extensions.filters.http.rbac.v3.RBAC`.
pub(super) fn http_rbac(mut m: HttpRbac) -> R {
    let mut o = Obj::default();
    o.msg("rules", m.rules.take(), rules)?;
    o.msg("shadow_rules", m.shadow_rules.take(), rules)?;
    o.str(
        "shadow_rules_stat_prefix",
        take(&mut m.shadow_rules_stat_prefix),
    );
    o.done(m, "RBAC(http)")
}

/// `envoy.extensions.filters.network.rbac.v3.RBAC`.
pub(super) fn network_rbac(mut m: NetworkRbac) -> R {
    let mut o = Obj::default();
    o.msg("rules", m.rules.take(), rules)?;
    o.msg("shadow_rules", m.shadow_rules.take(), rules)?;
    o.str(
        "shadow_rules_stat_prefix",
        take(&mut m.shadow_rules_stat_prefix),
    );
    o.str("stat_prefix", take(&mut m.stat_prefix));
    o.done(m, "RBAC(network)")
}

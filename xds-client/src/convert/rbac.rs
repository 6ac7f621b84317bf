//! Role-based access control: `envoy.config.rbac.v3.RBAC` and the two filters that carry it,
//! `envoy.filters.http.rbac` and `envoy.filters.network.rbac`.
//!
//! Ignored fields: `RBAC(http).track_per_rule_stats` (statistics only). Rejected when set: the
//! generic matcher trees (`matcher`, `shadow_matcher`), `RBAC.audit_logging_options`,
//! `Policy.{condition, checked_condition, cel_config}` (CEL), the network filter's
//! `delay_deny`, permissions `matcher` and `sourced_metadata`, principals `filter_state`,
//! `sourced_metadata` and `custom`. Both network enforcement types are accepted: the proxy
//! evaluates the rules once, when the connection is set up, with attributes that do not change
//! afterwards.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::rbac::v3::{self as pb, permission, principal, rbac::Action};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as PbHttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as PbNetworkRbac;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use prost::Name;

use super::listener::cidr;
use super::matcher::{path, string};
use super::{decode_any, reject_set, type_name, ConvertError, Within};
use crate::model::matcher::{HeaderMatcher, MetadataMatcher, Regex};
use crate::model::rbac::{Permission, Policy, Principal, Rbac, RbacAction, RbacRules, UriTemplate};

/// `envoy.extensions.filters.http.rbac.v3.RBAC`.
impl TryFrom<PbHttpRbac> for Rbac {
    type Error = ConvertError;

    fn try_from(proto: PbHttpRbac) -> Result<Self, ConvertError> {
        reject_set!(proto, matcher, shadow_matcher);
        Ok(Rbac {
            rules: proto.rules.as_ref().map(rules).transpose().at("rules")?,
            shadow_rules: proto
                .shadow_rules
                .as_ref()
                .map(rules)
                .transpose()
                .at("shadow_rules")?,
            rules_stat_prefix: proto.rules_stat_prefix,
            shadow_rules_stat_prefix: proto.shadow_rules_stat_prefix,
            stat_prefix: String::new(),
        })
    }
}

/// `envoy.extensions.filters.network.rbac.v3.RBAC`.
impl TryFrom<PbNetworkRbac> for Rbac {
    type Error = ConvertError;

    fn try_from(proto: PbNetworkRbac) -> Result<Self, ConvertError> {
        reject_set!(proto, matcher, shadow_matcher, delay_deny);
        if proto.stat_prefix.is_empty() {
            return Err(ConvertError::missing("stat_prefix"));
        }
        Ok(Rbac {
            rules: proto.rules.as_ref().map(rules).transpose().at("rules")?,
            shadow_rules: proto
                .shadow_rules
                .as_ref()
                .map(rules)
                .transpose()
                .at("shadow_rules")?,
            rules_stat_prefix: String::new(),
            shadow_rules_stat_prefix: proto.shadow_rules_stat_prefix,
            stat_prefix: proto.stat_prefix,
        })
    }
}

/// `envoy.config.rbac.v3.RBAC`.
fn rules(proto: &pb::Rbac) -> Result<RbacRules, ConvertError> {
    reject_set!(proto, audit_logging_options);
    let action = match Action::try_from(proto.action) {
        Ok(Action::Allow) => RbacAction::Allow,
        Ok(Action::Deny) => RbacAction::Deny,
        Ok(Action::Log) => RbacAction::Log,
        Err(_) => {
            return Err(ConvertError::unsupported_value(
                "action",
                proto.action.to_string(),
            ))
        }
    };
    let mut policies = BTreeMap::new();
    for (name, policy) in &proto.policies {
        let policy = convert_policy(policy).map_err(|e| e.at_key("policies", name))?;
        policies.insert(name.clone(), policy);
    }
    Ok(RbacRules { action, policies })
}

fn convert_policy(proto: &pb::Policy) -> Result<Policy, ConvertError> {
    reject_set!(proto, condition, checked_condition, cel_config);
    if proto.permissions.is_empty() {
        return Err(ConvertError::missing("permissions"));
    }
    if proto.principals.is_empty() {
        return Err(ConvertError::missing("principals"));
    }
    let permissions = proto
        .permissions
        .iter()
        .enumerate()
        .map(|(i, p)| Permission::try_from(p).at_index("permissions", i))
        .collect::<Result<_, _>>()?;
    let principals = proto
        .principals
        .iter()
        .enumerate()
        .map(|(i, p)| Principal::try_from(p).at_index("principals", i))
        .collect::<Result<_, _>>()?;
    Ok(Policy {
        permissions,
        principals,
    })
}

fn any_true(any: bool) -> Result<(), ConvertError> {
    if any {
        Ok(())
    } else {
        Err(ConvertError::invalid("any (must be true)", "false").at("any"))
    }
}

/// `envoy.config.rbac.v3.Permission`.
impl TryFrom<&pb::Permission> for Permission {
    type Error = ConvertError;

    #[allow(deprecated)]
    fn try_from(proto: &pb::Permission) -> Result<Self, ConvertError> {
        use permission::Rule as R;
        let set = |rules: &[pb::Permission], field: &'static str| {
            if rules.is_empty() {
                return Err(ConvertError::missing("rules").at(field));
            }
            rules
                .iter()
                .enumerate()
                .map(|(i, p)| Permission::try_from(p).at_index("rules", i).at(field))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match &proto.rule {
            Some(R::AndRules(s)) => Permission::And(set(&s.rules, "and_rules")?),
            Some(R::OrRules(s)) => Permission::Or(set(&s.rules, "or_rules")?),
            Some(R::Any(any)) => {
                any_true(*any)?;
                Permission::Any
            }
            Some(R::NotRule(inner)) => Permission::Not(Box::new(
                Permission::try_from(inner.as_ref()).at("not_rule")?,
            )),
            Some(R::Header(h)) => Permission::Header(HeaderMatcher::try_from(h).at("header")?),
            Some(R::UrlPath(p)) => Permission::UrlPath(path(p).at("url_path")?),
            Some(R::DestinationIp(c)) => Permission::DestinationIp(cidr(c).at("destination_ip")?),
            Some(R::DestinationPort(p)) => Permission::DestinationPort(
                u16::try_from(*p)
                    .map_err(|_| ConvertError::invalid("port", p.to_string()))
                    .at("destination_port")?,
            ),
            Some(R::DestinationPortRange(r)) => {
                let valid = |v: i32| u32::try_from(v).ok().filter(|v| *v <= 65536);
                match (valid(r.start), valid(r.end)) {
                    (Some(start), Some(end)) if start < end => {
                        Permission::DestinationPortRange { start, end }
                    }
                    _ => {
                        return Err(ConvertError::invalid(
                            "port range",
                            format!("[{}, {})", r.start, r.end),
                        )
                        .at("destination_port_range"))
                    }
                }
            }
            Some(R::Metadata(m)) => {
                Permission::Metadata(MetadataMatcher::try_from(m).at("metadata")?)
            }
            Some(R::RequestedServerName(m)) => {
                Permission::RequestedServerName(string(Some(m), "requested_server_name")?)
            }
            Some(R::UriTemplate(t)) => Permission::UriTemplate(uri_template(t).at("uri_template")?),
            Some(R::Matcher(_)) => return Err(ConvertError::unsupported("matcher")),
            Some(R::SourcedMetadata(_)) => {
                return Err(ConvertError::unsupported("sourced_metadata"))
            }
            None => return Err(ConvertError::missing("rule")),
        })
    }
}

/// `envoy.config.rbac.v3.Principal`.
impl TryFrom<&pb::Principal> for Principal {
    type Error = ConvertError;

    #[allow(deprecated)]
    fn try_from(proto: &pb::Principal) -> Result<Self, ConvertError> {
        use principal::Identifier as I;
        let set = |ids: &[pb::Principal], field: &'static str| {
            if ids.is_empty() {
                return Err(ConvertError::missing("ids").at(field));
            }
            ids.iter()
                .enumerate()
                .map(|(i, p)| Principal::try_from(p).at_index("ids", i).at(field))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match &proto.identifier {
            Some(I::AndIds(s)) => Principal::And(set(&s.ids, "and_ids")?),
            Some(I::OrIds(s)) => Principal::Or(set(&s.ids, "or_ids")?),
            Some(I::Any(any)) => {
                any_true(*any)?;
                Principal::Any
            }
            Some(I::NotId(inner)) => {
                Principal::Not(Box::new(Principal::try_from(inner.as_ref()).at("not_id")?))
            }
            Some(I::Authenticated(a)) => Principal::Authenticated(
                a.principal_name
                    .as_ref()
                    .map(|m| string(Some(m), "principal_name"))
                    .transpose()
                    .at("authenticated")?,
            ),
            Some(I::SourceIp(c)) => Principal::SourceIp(cidr(c).at("source_ip")?),
            Some(I::DirectRemoteIp(c)) => {
                Principal::DirectRemoteIp(cidr(c).at("direct_remote_ip")?)
            }
            Some(I::RemoteIp(c)) => Principal::RemoteIp(cidr(c).at("remote_ip")?),
            Some(I::Header(h)) => Principal::Header(HeaderMatcher::try_from(h).at("header")?),
            Some(I::UrlPath(p)) => Principal::UrlPath(path(p).at("url_path")?),
            Some(I::Metadata(m)) => {
                Principal::Metadata(MetadataMatcher::try_from(m).at("metadata")?)
            }
            Some(I::FilterState(_)) => return Err(ConvertError::unsupported("filter_state")),
            Some(I::SourcedMetadata(_)) => {
                return Err(ConvertError::unsupported("sourced_metadata"))
            }
            Some(I::Custom(_)) => return Err(ConvertError::unsupported("custom")),
            None => return Err(ConvertError::missing("identifier")),
        })
    }
}

/// A `uri_template` permission: `UriTemplateMatchConfig`, compiled.
fn uri_template(proto: &TypedExtensionConfig) -> Result<UriTemplate, ConvertError> {
    let any = proto
        .typed_config
        .as_ref()
        .ok_or_else(|| ConvertError::missing("typed_config"))?;
    if type_name(&any.type_url) != UriTemplateMatchConfig::full_name() {
        return Err(ConvertError::UnsupportedValue {
            at: Default::default(),
            value: any.type_url.clone(),
        }
        .at("typed_config"));
    }
    let config: UriTemplateMatchConfig = decode_any(any).at("typed_config")?;
    let template = config.path_template;
    let pattern = template_regex(&template).map_err(|reason| {
        ConvertError::invalid("path template", format!("{template}: {reason}"))
            .at("path_template")
            .at("typed_config")
    })?;
    let regex = Regex::new(&pattern).map_err(|e| {
        ConvertError::invalid("path template", format!("{template}: {e}")).at("typed_config")
    })?;
    Ok(UriTemplate { template, regex })
}

/// RFC 3986 `pchar` without `*` and `=`: what a template literal and a `*` segment may hold.
const LITERAL: &str = r"a-zA-Z0-9\-._~%!$&'()+,;:@";

fn is_literal(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@".contains(&b))
}

fn escape_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '$' | '(' | ')' | '+' | '.') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Envoy's `uri_template` syntax to an expression: the template starts with `/`, segments
/// are literals, `*` (one segment), `**` (any text, slashes included), or variables
/// `{name}` / `{name=segments}`; a segment may end in a literal suffix; no operator may follow
/// `**`.
pub(crate) fn template_regex(template: &str) -> Result<String, &'static str> {
    let Some(mut rest) = template.strip_prefix('/') else {
        return Err("must start with /");
    };
    if !template.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("invalid characters");
    }
    let one = format!("[{LITERAL}]+");
    let any = format!("[{LITERAL}/]*");
    let mut parts: Vec<String> = Vec::new();
    let mut suffix = String::new();
    let mut seen_text_glob = false;
    let operator = |text_glob: bool, seen: &mut bool| {
        if *seen {
            return Err("no operator may follow **");
        }
        *seen = text_glob;
        Ok(())
    };
    let mut variables = std::collections::BTreeSet::new();
    while !rest.is_empty() {
        let (segment, after) = if let Some(r) = rest.strip_prefix("**") {
            operator(true, &mut seen_text_glob)?;
            (any.clone(), r)
        } else if let Some(r) = rest.strip_prefix('*') {
            operator(false, &mut seen_text_glob)?;
            (one.clone(), r)
        } else if let Some(r) = rest.strip_prefix('{') {
            let (body, r) = r.split_once('}').ok_or("unmatched variable bracket")?;
            let (name, matcher) = match body.split_once('=') {
                Some((n, m)) => (n, Some(m)),
                None => (body, None),
            };
            let valid_name = name.len() <= 16
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name || !variables.insert(name.to_string()) || variables.len() > 5 {
                return Err("invalid, repeated or too many variable names");
            }
            let inner = match matcher {
                None => {
                    operator(false, &mut seen_text_glob)?;
                    one.clone()
                }
                Some("") => return Err("empty variable match"),
                Some(m) => {
                    let mut pieces = Vec::new();
                    for piece in m.split('/') {
                        pieces.push(match piece {
                            "**" => {
                                operator(true, &mut seen_text_glob)?;
                                any.clone()
                            }
                            "*" => {
                                operator(false, &mut seen_text_glob)?;
                                one.clone()
                            }
                            lit if is_literal(lit) => escape_literal(lit),
                            _ => return Err("invalid variable match"),
                        });
                    }
                    pieces.join("/")
                }
            };
            (format!("(?P<{name}>{inner})"), r)
        } else {
            let end = rest.find('/').unwrap_or(rest.len());
            let lit = &rest[..end];
            if !is_literal(lit) {
                return Err("invalid literal");
            }
            (escape_literal(lit), &rest[end..])
        };
        parts.push(segment);
        rest = after;
        if rest.is_empty() {
            break;
        }
        if rest == "/" {
            parts.push(String::new());
            break;
        }
        if let Some(r) = rest.strip_prefix('/') {
            rest = r;
        } else {
            if !is_literal(rest) {
                return Err("a suffix must be a literal that ends the template");
            }
            suffix = escape_literal(rest);
            break;
        }
    }
    Ok(format!("/{}{suffix}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::template_regex;
    use crate::model::matcher::Regex;

    fn matches(template: &str, path: &str) -> bool {
        Regex::new(&template_regex(template).unwrap())
            .unwrap()
            .is_match(path)
    }

    #[test]
    fn uri_templates_follow_envoy() {
        assert!(matches("/path/template/*", "/path/template/x"));
        assert!(!matches("/path/template/*", "/path/template/x/y"));
        assert!(!matches("/path/template/*", "/path/template/"));
        assert!(matches("/**/path/template", "/a/b/path/template"));
        assert!(matches("/**/path/template", "//path/template"));
        assert!(!matches("/**/path/template", "/path/template"));
        assert!(matches("/v1/{id}/items", "/v1/7/items"));
        assert!(matches("/videos/*/*.m4s", "/videos/1/a.m4s"));
        assert!(!matches("/videos/*/*.m4s", "/videos/1/a.mp4"));
        assert!(matches("/**.mpd", "/content/1/a.mpd"));
        assert!(matches("/a/", "/a/"));
        assert!(template_regex("/**/*").is_err());
        assert!(template_regex("no-slash").is_err());
        assert!(template_regex("/a{b").is_err());
    }
}

//! One AuthorizationPolicy rule as Envoy RBAC permissions and principals, as istiod's
//! `authz/model` builds them.
//!
//! Each `when` condition becomes an entry of the base permission list (`destination.ip`,
//! `destination.port`, `connection.sni`, `experimental.envoy.filters.*`) or of the base
//! principal list (the others), in order. Each `to` operation is the base permission list
//! with its hosts, methods, paths and ports in front; each `from` source is the base
//! principal list with its principals, request principals, trust domains, service accounts,
//! namespaces, remote IPs and IPs in front. A rule is one policy: one of its permissions and
//! one of its principals must match; each list is an AND of its entries, each entry an OR of
//! its values, AND NOT an OR of its not-values.
//!
//! Fail closed: an entry that cannot apply (an HTTP attribute on a TCP chain) makes an ALLOW
//! rule disappear (it allows less) and is left out of a DENY or AUDIT rule (which then matches
//! more). An attribute the model does not know drops the rule whatever the action; validation
//! rejects those before they get here.

use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, Permission, Policy, Principal,
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;

use super::matchers::{self as m, perm};
use super::trust_domain::Bundle;
use crate::config::istio::authorization_policy::{Condition, Rule};

/// What an entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    // Permissions.
    Host,
    Method,
    Path,
    Port,
    DestinationIp,
    ServerName,
    EnvoyFilter,
    // Principals.
    SourcePrincipal,
    RequestPrincipal,
    TrustDomain,
    ServiceAccount,
    Namespace,
    RemoteIp,
    SourceIp,
    Header,
    Audiences,
    Presenter,
    Claims,
}

impl Kind {
    /// Only HTTP requests carry it.
    fn http_only(self) -> bool {
        matches!(
            self,
            Kind::Host
                | Kind::Method
                | Kind::Path
                | Kind::RequestPrincipal
                | Kind::Header
                | Kind::Audiences
                | Kind::Presenter
                | Kind::Claims
        )
    }

    /// Generated from all values at once (JWT claims and metadata).
    fn extended(self) -> bool {
        matches!(
            self,
            Kind::RequestPrincipal
                | Kind::Audiences
                | Kind::Presenter
                | Kind::Claims
                | Kind::EnvoyFilter
        )
    }
}

/// One entry: an attribute and its values.
#[derive(Clone, Debug)]
struct Entry {
    kind: Kind,
    key: String,
    values: Vec<String>,
    not_values: Vec<String>,
}

/// Why a rule was left out of the generated policies.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A `when` key the model does not know.
    #[error("unknown attribute {0}")]
    UnknownAttribute(String),
    /// An attribute that does not apply to TCP traffic, in an ALLOW rule.
    #[error("{0:?} is HTTP only")]
    HttpOnly(String),
    /// A value that does not parse.
    #[error("invalid value {value:?} for {key}")]
    InvalidValue {
        /// The attribute.
        key: String,
        /// The value.
        value: String,
    },
}

/// A rule's permission and principal lists.
#[derive(Clone, Debug, Default)]
pub struct RuleModel {
    permissions: Vec<Vec<Entry>>,
    principals: Vec<Vec<Entry>>,
}

fn entry(kind: Kind, key: &str, values: &[String], not_values: &[String]) -> Option<Entry> {
    (!values.is_empty() || !not_values.is_empty()).then(|| Entry {
        kind,
        key: key.to_string(),
        values: values.to_vec(),
        not_values: not_values.to_vec(),
    })
}

fn when_kind(key: &str) -> Option<Kind> {
    Some(match key {
        "destination.ip" => Kind::DestinationIp,
        "destination.port" => Kind::Port,
        "connection.sni" => Kind::ServerName,
        k if k.starts_with("experimental.envoy.filters.") => Kind::EnvoyFilter,
        "source.ip" => Kind::SourceIp,
        "remote.ip" => Kind::RemoteIp,
        "source.namespace" => Kind::Namespace,
        "source.serviceAccount" => Kind::ServiceAccount,
        "source.principal" => Kind::SourcePrincipal,
        "source.trustDomain" => Kind::TrustDomain,
        "request.auth.principal" => Kind::RequestPrincipal,
        "request.auth.audiences" => Kind::Audiences,
        "request.auth.presenter" => Kind::Presenter,
        k if k.starts_with("request.headers") => Kind::Header,
        k if k.starts_with("request.experimental.inline.headers") => Kind::Header,
        k if k.starts_with("request.auth.claims") => Kind::Claims,
        _ => return None,
    })
}

fn is_permission(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Host
            | Kind::Method
            | Kind::Path
            | Kind::Port
            | Kind::DestinationIp
            | Kind::ServerName
            | Kind::EnvoyFilter
    )
}

impl RuleModel {
    /// The model of `rule`.
    pub fn new(rule: &Rule) -> Result<RuleModel, RuleError> {
        let mut base_permission = Vec::new();
        let mut base_principal = Vec::new();
        for Condition {
            key,
            values,
            not_values,
        } in &rule.when
        {
            let kind = when_kind(key).ok_or_else(|| RuleError::UnknownAttribute(key.clone()))?;
            let list = if is_permission(kind) {
                &mut base_permission
            } else {
                &mut base_principal
            };
            list.extend(entry(kind, key, values, not_values));
        }
        let mut model = RuleModel::default();
        for from in rule.from.iter().flatten() {
            let mut merged = Vec::new();
            if let Some(s) = &from.source {
                let fields = [
                    (
                        Kind::SourcePrincipal,
                        "source.principal",
                        &s.principals,
                        &s.not_principals,
                    ),
                    (
                        Kind::RequestPrincipal,
                        "request.auth.principal",
                        &s.request_principals,
                        &s.not_request_principals,
                    ),
                    (
                        Kind::TrustDomain,
                        "source.trustDomain",
                        &s.trust_domains,
                        &s.not_trust_domains,
                    ),
                    (
                        Kind::ServiceAccount,
                        "source.serviceAccount",
                        &s.service_accounts,
                        &s.not_service_accounts,
                    ),
                    (
                        Kind::Namespace,
                        "source.namespace",
                        &s.namespaces,
                        &s.not_namespaces,
                    ),
                    (
                        Kind::RemoteIp,
                        "remote.ip",
                        &s.remote_ip_blocks,
                        &s.not_remote_ip_blocks,
                    ),
                    (Kind::SourceIp, "source.ip", &s.ip_blocks, &s.not_ip_blocks),
                ];
                for (kind, key, values, not_values) in fields {
                    merged.extend(entry(kind, key, values, not_values));
                }
            }
            merged.extend(base_principal.iter().cloned());
            model.principals.push(merged);
        }
        if rule.from.as_ref().is_none_or(Vec::is_empty) {
            model.principals.push(base_principal);
        }
        for to in rule.to.iter().flatten() {
            let mut merged = Vec::new();
            if let Some(o) = &to.operation {
                let fields = [
                    (Kind::Host, ":authority", &o.hosts, &o.not_hosts),
                    (Kind::Method, ":method", &o.methods, &o.not_methods),
                    (Kind::Path, "path-matcher", &o.paths, &o.not_paths),
                    (Kind::Port, "destination.port", &o.ports, &o.not_ports),
                ];
                for (kind, key, values, not_values) in fields {
                    merged.extend(entry(kind, key, values, not_values));
                }
            }
            merged.extend(base_permission.iter().cloned());
            model.permissions.push(merged);
        }
        if rule.to.as_ref().is_none_or(Vec::is_empty) {
            model.permissions.push(base_permission);
        }
        Ok(model)
    }

    /// Replaces source principals by their forms in every trust domain of `bundle`.
    pub fn migrate_trust_domain(&mut self, bundle: &Bundle) {
        for list in &mut self.principals {
            for e in list.iter_mut() {
                match e.kind {
                    Kind::SourcePrincipal => {
                        e.values = bundle.replace_aliases(&e.values);
                        e.not_values = bundle.replace_aliases(&e.not_values);
                    }
                    Kind::TrustDomain => {
                        e.values = bundle.expand(&e.values);
                        e.not_values = bundle.expand(&e.not_values);
                    }
                    _ => {}
                }
            }
        }
    }

    /// The RBAC policy of the rule, for a TCP chain or an HTTP one. `strict` is true for ALLOW
    /// (an entry that cannot apply drops the rule) and false for DENY and AUDIT (the entry is
    /// left out). `namespace` is the policy's (service accounts without one are in it).
    pub fn generate(
        &self,
        for_tcp: bool,
        strict: bool,
        namespace: &str,
    ) -> Result<Policy, RuleError> {
        let gen = Gen {
            for_tcp,
            strict,
            namespace,
        };
        let permissions = self
            .permissions
            .iter()
            .map(|list| gen.permission_list(list))
            .collect::<Result<Vec<_>, _>>()?;
        let principals = self
            .principals
            .iter()
            .map(|list| gen.principal_list(list))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            permissions,
            principals,
            ..Default::default()
        })
    }
}

struct Gen<'a> {
    for_tcp: bool,
    strict: bool,
    namespace: &'a str,
}

impl Gen<'_> {
    /// `Ok(None)` for a value left out (a failure in a DENY or AUDIT rule).
    fn check<T>(&self, r: Result<T, RuleError>) -> Result<Option<T>, RuleError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if self.strict => Err(e),
            Err(_) => Ok(None),
        }
    }

    fn applies(&self, e: &Entry) -> Result<(), RuleError> {
        if self.for_tcp && e.kind.http_only() {
            return Err(RuleError::HttpOnly(e.key.clone()));
        }
        Ok(())
    }

    fn permission_list(&self, list: &[Entry]) -> Result<Permission, RuleError> {
        let mut and = Vec::new();
        for e in list {
            if e.kind.extended() {
                if !e.values.is_empty() {
                    and.extend(self.check(self.extended_permission(e, &e.values))?);
                }
                if !e.not_values.is_empty() {
                    let p = self.check(self.extended_permission(e, &e.not_values))?;
                    and.extend(p.map(m::perm_not));
                }
                continue;
            }
            for (values, negate) in [(&e.values, false), (&e.not_values, true)] {
                let mut or = Vec::new();
                for v in values {
                    or.extend(self.check(self.applies(e).and_then(|()| permission(e, v)))?);
                }
                if !or.is_empty() {
                    let p = m::perm_or(or);
                    and.push(if negate { m::perm_not(p) } else { p });
                }
            }
        }
        if and.is_empty() {
            and.push(m::perm_any());
        }
        Ok(m::perm_and(and))
    }

    fn principal_list(&self, list: &[Entry]) -> Result<Principal, RuleError> {
        let mut and = Vec::new();
        for e in list {
            if e.kind.extended() {
                if !e.values.is_empty() {
                    and.extend(self.check(self.extended_principal(e, &e.values))?);
                }
                if !e.not_values.is_empty() {
                    let p = self.check(self.extended_principal(e, &e.not_values))?;
                    and.extend(p.map(m::id_not));
                }
                continue;
            }
            for (values, negate) in [(&e.values, false), (&e.not_values, true)] {
                let mut or = Vec::new();
                for v in values {
                    let p = self
                        .applies(e)
                        .and_then(|()| principal(e, v, self.namespace));
                    or.extend(self.check(p)?);
                }
                if !or.is_empty() {
                    let p = m::id_or(or);
                    and.push(if negate { m::id_not(p) } else { p });
                }
            }
        }
        if and.is_empty() {
            and.push(m::id_any());
        }
        Ok(m::id_and(and))
    }

    #[allow(deprecated)]
    fn extended_permission(&self, e: &Entry, values: &[String]) -> Result<Permission, RuleError> {
        // `experimental.envoy.filters.a.b[c]`: metadata `c` of filter `envoy.filters.a.b`;
        // Istio generates it for TCP chains too.
        let inner = e
            .key
            .trim_start_matches("experimental.")
            .trim_end_matches(']');
        let Some((filter, key)) = inner.split_once('[') else {
            return Err(RuleError::UnknownAttribute(e.key.clone()));
        };
        let matchers = values
            .iter()
            .map(
                |v| match v.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
                    Some(item) => m::value_list_one_of(m::value_string(m::string(item))),
                    None => m::value_string(m::string(v)),
                },
            )
            .collect();
        Ok(perm(permission::Rule::Metadata(m::metadata(
            filter,
            &[key],
            m::value_or(matchers),
        ))))
    }

    #[allow(deprecated)]
    fn extended_principal(&self, e: &Entry, values: &[String]) -> Result<Principal, RuleError> {
        self.applies(e)?;
        let metadata = |mm| m::id(principal::Identifier::Metadata(mm));
        match e.kind {
            Kind::RequestPrincipal => {
                let mut or: Vec<Principal> = values
                    .iter()
                    .map(|v| {
                        let (iss, sub) = request_principal(v);
                        m::id_and(vec![
                            metadata(m::jwt_claim("iss", iss)),
                            metadata(m::jwt_claim("sub", sub)),
                        ])
                    })
                    .collect();
                Ok(if or.len() == 1 {
                    or.remove(0)
                } else {
                    m::id_or(or)
                })
            }
            Kind::Audiences => Ok(metadata(m::jwt_claim_list(&["aud"], values))),
            Kind::Presenter => Ok(metadata(m::jwt_claim_list(&["azp"], values))),
            Kind::Claims => {
                let claims = nested_names(e.key.trim_start_matches("request.auth.claims"))
                    .ok_or_else(|| RuleError::UnknownAttribute(e.key.clone()))?;
                let refs: Vec<&str> = claims.iter().map(String::as_str).collect();
                Ok(metadata(m::jwt_claim_list(&refs, values)))
            }
            _ => Err(RuleError::UnknownAttribute(e.key.clone())),
        }
    }
}

/// The issuer and subject matchers of a request principal `ISS/SUB` (split at the last `/`).
fn request_principal(v: &str) -> (StringMatcher, StringMatcher) {
    let any = || m::regex(".+");
    let split = v.rfind('/').map(|i| (&v[..i], &v[i + 1..]));
    if v == "*" {
        return (any(), any());
    }
    if v.starts_with('*') {
        return match split {
            Some((iss, sub)) => {
                let iss = if iss == "*" { any() } else { m::string(iss) };
                (iss, m::exact(sub))
            }
            None => (any(), m::string(v)),
        };
    }
    if v.ends_with('*') {
        return match split {
            Some((iss, sub)) => {
                let sub = if sub == "*" { any() } else { m::string(sub) };
                (m::exact(iss), sub)
            }
            None => (m::string(v), any()),
        };
    }
    match split {
        Some((iss, sub)) => (m::exact(iss), m::exact(sub)),
        None => (m::exact(v), m::exact("")),
    }
}

/// `[a][b]` as `["a", "b"]`.
fn nested_names(s: &str) -> Option<Vec<String>> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let names: Vec<String> = inner.split("][").map(str::to_string).collect();
    names.iter().all(|n| !n.is_empty()).then_some(names)
}

/// The name in `[NAME]`.
fn bracketed(s: &str) -> Option<&str> {
    s.strip_prefix('[')?.strip_suffix(']')
}

fn invalid(e: &Entry, v: &str) -> RuleError {
    RuleError::InvalidValue {
        key: e.key.clone(),
        value: v.to_string(),
    }
}

fn permission(e: &Entry, v: &str) -> Result<Permission, RuleError> {
    Ok(match e.kind {
        Kind::Host => perm(permission::Rule::Header(m::host(v))),
        Kind::Method => perm(permission::Rule::Header(m::header(":method", v))),
        Kind::Path => m::path(v),
        Kind::Port => {
            let port: u32 = v
                .parse()
                .ok()
                .filter(|p| *p <= 65535)
                .ok_or_else(|| invalid(e, v))?;
            perm(permission::Rule::DestinationPort(port))
        }
        Kind::DestinationIp => perm(permission::Rule::DestinationIp(
            m::cidr(v).ok_or_else(|| invalid(e, v))?,
        )),
        Kind::ServerName => perm(permission::Rule::RequestedServerName(m::string(v))),
        _ => return Err(RuleError::UnknownAttribute(e.key.clone())),
    })
}

fn principal(e: &Entry, v: &str, namespace: &str) -> Result<Principal, RuleError> {
    Ok(match e.kind {
        Kind::SourcePrincipal => m::authenticated(m::spiffe_principal(v)),
        Kind::TrustDomain => m::authenticated(m::trust_domain(v)),
        Kind::ServiceAccount => m::authenticated(m::service_account(namespace, v)),
        Kind::Namespace => m::authenticated(m::namespace(v)),
        Kind::RemoteIp => m::id(principal::Identifier::RemoteIp(
            m::cidr(v).ok_or_else(|| invalid(e, v))?,
        )),
        Kind::SourceIp => m::id(principal::Identifier::DirectRemoteIp(
            m::cidr(v).ok_or_else(|| invalid(e, v))?,
        )),
        Kind::Header => {
            let rest = e
                .key
                .trim_start_matches("request.experimental.inline.headers")
                .trim_start_matches("request.headers");
            let name = bracketed(rest).ok_or_else(|| RuleError::UnknownAttribute(e.key.clone()))?;
            m::id(principal::Identifier::Header(m::header(name, v)))
        }
        _ => return Err(RuleError::UnknownAttribute(e.key.clone())),
    })
}

/// The policy that never matches (a policy without rules).
pub fn never() -> Policy {
    Policy {
        permissions: vec![m::perm_not(m::perm_any())],
        principals: vec![m::id_not(m::id_any())],
        ..Default::default()
    }
}

//! Authorization: Envoy's RBAC engine, as Istio's AuthorizationPolicy uses it.
//!
//! The control plane translates AuthorizationPolicies into RBAC filters
//! (`envoy.filters.http.rbac` on HTTP chains, `envoy.filters.network.rbac` before `tcp_proxy`
//! on TCP chains); the xDS client converts them into [`xds_client::model::rbac`]; here they are
//! compiled once per configuration snapshot ([`RbacFilter::new`], [`Engine::new`]) and
//! evaluated per request or per connection.
//!
//! Evaluation, as Envoy's:
//! - a policy matches when one of its permissions and one of its principals match;
//! - ALLOW rules allow a request when a policy matches and deny it otherwise; DENY rules deny
//!   it when a policy matches; LOG rules always allow and ask for the request to be logged
//!   (Istio's AUDIT);
//! - policies are tried in name order; the first match is the effective policy, reported as
//!   `rbac_access_denied_matched_policy[NAME]` (`[none]` when an ALLOW filter found none);
//! - shadow rules (Istio's `istio.io/dry-run`) are evaluated and counted but never enforced;
//! - a filter without enforced rules lets everything through.
//!
//! Istio emits one filter per action (AUDIT, DENY, ALLOW, in that order): a request passes
//! when it passes every filter, so DENY wins over ALLOW and no ALLOW policy means allowed.
//!
//! # Entry point
//! [`Engine::evaluate`] takes [`Attributes`] — the connection's addresses, its verified peer
//! identity and server name, and for HTTP the request's method, normalized path, authority
//! and headers — and returns a [`Decision`]. Nothing is allocated per evaluation except when a
//! matched header is repeated (its values are joined) or an authority has both a trailing dot
//! and a port.
//!
//! ```
//! use std::net::SocketAddr;
//! use proxy::authz::{Attributes, Engine, RequestAttributes};
//! use xds_client::model::rbac::{Permission, Policy, Principal, RbacAction, RbacRules};
//!
//! let rules = RbacRules {
//!     action: RbacAction::Allow,
//!     policies: [("allow-get".to_string(), Policy {
//!         permissions: vec![Permission::DestinationPort(8080)],
//!         principals: vec![Principal::Any],
//!     })].into(),
//! };
//! let engine = Engine::new(&rules);
//! let headers = http::HeaderMap::new();
//! let source: SocketAddr = "10.0.0.1:40000".parse().unwrap();
//! let request = RequestAttributes {
//!     method: "GET", path: "/", authority: "svc", scheme: "http",
//!     headers: &headers, remote_ip: source.ip(),
//! };
//! let attrs = Attributes {
//!     source,
//!     destination: "10.0.0.2:8080".parse().unwrap(),
//!     principal: None,
//!     server_name: None,
//!     request: Some(&request),
//! };
//! assert!(engine.evaluate(&attrs).allowed);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod tree;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use xds_client::model::rbac::{Rbac, RbacAction, RbacRules};

use crate::stats::{Counters, Stats};
use tree::{Perm, Prin};

pub use tree::header_value;

/// What the rules look at.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// The connection's peer address (`source.ip`, `direct_remote_ip`).
    pub source: SocketAddr,
    /// The connection's original destination (`destination.ip`, `destination.port`).
    pub destination: SocketAddr,
    /// The peer's verified identity (its certificate's SPIFFE ID) on a mutual-TLS connection;
    /// `None` on plaintext, where `authenticated` principals never match.
    pub principal: Option<&'a str>,
    /// The TLS server name the client asked for (`connection.sni`).
    pub server_name: Option<&'a str>,
    /// The HTTP request; `None` on TCP connections, where request fields are absent.
    pub request: Option<&'a RequestAttributes<'a>>,
}

/// The request fields an HTTP RBAC filter reads.
#[derive(Clone, Copy, Debug)]
pub struct RequestAttributes<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path` after normalization, with its query.
    pub path: &'a str,
    /// `:authority` (or `Host`).
    pub authority: &'a str,
    /// `:scheme` (`http` or `https`).
    pub scheme: &'a str,
    /// The other headers.
    pub headers: &'a http::HeaderMap,
    /// The original client address (`remote.ip`): see [`remote_ip`].
    pub remote_ip: IpAddr,
}

/// The original client address as Envoy determines it for a sidecar's inbound listener
/// (`use_remote_address: false`, no trusted hops): the right-most address of
/// `x-forwarded-for` when there is one, else the connection's peer.
pub fn remote_ip(headers: &http::HeaderMap, peer: IpAddr) -> IpAddr {
    headers
        .get_all(http::header::HeaderName::from_static("x-forwarded-for"))
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer)
}

/// The outcome of one set of rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'e> {
    /// Whether the rules let the request through.
    pub allowed: bool,
    /// The effective policy: the first matching policy (in name order).
    pub policy: Option<&'e str>,
}

/// One compiled policy.
#[derive(Debug)]
struct CompiledPolicy {
    name: Arc<str>,
    denied_details: Arc<str>,
    permissions: Box<[Perm]>,
    principals: Box<[Prin]>,
}

/// A compiled set of rules ([`RbacRules`]).
#[derive(Debug)]
pub struct Engine {
    action: RbacAction,
    policies: Box<[CompiledPolicy]>,
    none_details: Arc<str>,
}

impl Engine {
    /// Compiles `rules` (regular expressions were compiled by the conversion already).
    pub fn new(rules: &RbacRules) -> Engine {
        let policies = rules
            .policies
            .iter()
            .map(|(name, p)| CompiledPolicy {
                name: name.as_str().into(),
                denied_details: format!("rbac_access_denied_matched_policy[{name}]").into(),
                permissions: p.permissions.iter().map(Perm::compile).collect(),
                principals: p.principals.iter().map(Prin::compile).collect(),
            })
            .collect();
        Engine {
            action: rules.action,
            policies,
            none_details: "rbac_access_denied_matched_policy[none]".into(),
        }
    }

    /// The action of a matching policy.
    pub fn action(&self) -> RbacAction {
        self.action
    }

    fn first_match(&self, a: &Attributes<'_>) -> Option<&CompiledPolicy> {
        self.policies.iter().find(|p| {
            p.permissions.iter().any(|perm| perm.matches(a))
                && p.principals.iter().any(|prin| prin.matches(a))
        })
    }

    fn allowed(&self, matched: Option<&CompiledPolicy>) -> bool {
        match self.action {
            RbacAction::Allow => matched.is_some(),
            RbacAction::Deny => matched.is_none(),
            RbacAction::Log => true,
        }
    }

    /// Evaluates the rules on `attrs`.
    pub fn evaluate(&self, attrs: &Attributes<'_>) -> Decision<'_> {
        let matched = self.first_match(attrs);
        Decision {
            allowed: self.allowed(matched),
            policy: matched.map(|p| &*p.name),
        }
    }
}

/// The counters of one RBAC filter (Envoy's names under the filter's prefix: `allowed`,
/// `denied`, `shadow_allowed`, `shadow_denied`, `logged`, `not_logged`).
#[derive(Debug, Clone)]
pub struct RbacStats {
    /// Requests or connections the enforced rules allowed.
    pub allowed: Arc<AtomicU64>,
    /// Requests or connections the enforced rules denied.
    pub denied: Arc<AtomicU64>,
    /// Shadow rules would have allowed.
    pub shadow_allowed: Arc<AtomicU64>,
    /// Shadow rules would have denied.
    pub shadow_denied: Arc<AtomicU64>,
    /// LOG rules matched (Istio's AUDIT).
    pub logged: Arc<AtomicU64>,
    /// LOG rules did not match.
    pub not_logged: Arc<AtomicU64>,
}

impl RbacStats {
    /// The counters named `PREFIXrbac.RULES_PREFIXallowed`, `PREFIXrbac.SHADOW_PREFIXshadow_denied`...
    /// as Envoy names them (`http.inbound_0.0.0.0_8080.rbac.allowed`, `tcp.rbac.denied`,
    /// `http.inbound_0.0.0.0_8080.rbac.istio_dry_run_allow_shadow_denied`).
    pub fn new(counters: &Counters, prefix: &str, rbac: &Rbac) -> RbacStats {
        let base = if prefix.is_empty() || prefix.ends_with('.') {
            format!("{prefix}rbac.")
        } else {
            format!("{prefix}.rbac.")
        };
        let rules = format!("{base}{}", rbac.rules_stat_prefix);
        let shadow = format!("{base}{}", rbac.shadow_rules_stat_prefix);
        RbacStats {
            allowed: counters.counter(&format!("{rules}allowed")),
            denied: counters.counter(&format!("{rules}denied")),
            shadow_allowed: counters.counter(&format!("{shadow}shadow_allowed")),
            shadow_denied: counters.counter(&format!("{shadow}shadow_denied")),
            logged: counters.counter(&format!("{rules}logged")),
            not_logged: counters.counter(&format!("{rules}not_logged")),
        }
    }
}

/// What one RBAC filter decided about a request or connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterOutcome {
    /// Whether it goes on.
    pub allowed: bool,
    /// For a denial: `rbac_access_denied_matched_policy[...]`.
    pub denied_details: Option<Arc<str>>,
    /// The shadow rules' verdict, when the filter has shadow rules.
    pub shadow: Option<ShadowOutcome>,
    /// LOG rules matched: the request should be logged (Envoy's `access_log_hint`).
    pub log: bool,
}

/// What the shadow (dry-run) rules would have decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowOutcome {
    /// Whether they would have allowed it.
    pub allowed: bool,
    /// Their effective policy.
    pub policy: Option<Arc<str>>,
}

/// When header `name` has several values: the one value that replaces them, joined as the
/// rules read them (see [`header_value`]). `None` when it has one value or none.
pub fn joined_value(
    headers: &http::HeaderMap,
    name: &http::HeaderName,
) -> Option<http::HeaderValue> {
    headers.get_all(name).iter().nth(1)?;
    let joined = header_value(headers, name)?.into_owned();
    // The values were valid header values, and so is their join (commas and spaces added).
    http::HeaderValue::from_bytes(joined.as_bytes()).ok()
}

/// One RBAC filter (HTTP or network): enforced and shadow engines and their counters.
#[derive(Debug)]
pub struct RbacFilter {
    rules: Option<Engine>,
    shadow: Option<Engine>,
    stats: RbacStats,
    headers: Vec<http::HeaderName>,
}

impl RbacFilter {
    /// Compiles `rbac`, with counters under `prefix` (`http.<connection manager prefix>` for
    /// the HTTP filter, the filter's own `stat_prefix` for the network filter).
    pub fn new(rbac: &Rbac, counters: &Counters, prefix: &str) -> RbacFilter {
        let rules = rbac.rules.as_ref().map(Engine::new);
        let shadow = rbac.shadow_rules.as_ref().map(Engine::new);
        let mut headers = Vec::new();
        for engine in rules.iter().chain(shadow.iter()) {
            for p in engine.policies.iter() {
                p.permissions.iter().for_each(|t| t.headers(&mut headers));
                p.principals.iter().for_each(|t| t.headers(&mut headers));
            }
        }
        RbacFilter {
            rules,
            shadow,
            stats: RbacStats::new(counters, prefix, rbac),
            headers,
        }
    }

    /// The request headers (not pseudo-headers) the rules read.
    pub fn header_names(&self) -> &[http::HeaderName] {
        &self.headers
    }

    /// Whether the enforced rules are LOG rules (Istio's AUDIT).
    pub fn has_log_rules(&self) -> bool {
        self.rules
            .as_ref()
            .is_some_and(|e| e.action == RbacAction::Log)
    }

    /// Evaluates shadow then enforced rules, counting both.
    pub fn check(&self, attrs: &Attributes<'_>) -> FilterOutcome {
        let shadow = self.shadow.as_ref().map(|engine| {
            let matched = engine.first_match(attrs);
            let allowed = engine.allowed(matched);
            Stats::incr(if allowed {
                &self.stats.shadow_allowed
            } else {
                &self.stats.shadow_denied
            });
            ShadowOutcome {
                allowed,
                policy: matched.map(|p| p.name.clone()),
            }
        });
        let Some(engine) = &self.rules else {
            return FilterOutcome {
                allowed: true,
                denied_details: None,
                shadow,
                log: false,
            };
        };
        let matched = engine.first_match(attrs);
        let allowed = engine.allowed(matched);
        let log = engine.action() == RbacAction::Log && matched.is_some();
        if engine.action() == RbacAction::Log {
            Stats::incr(if log {
                &self.stats.logged
            } else {
                &self.stats.not_logged
            });
        }
        Stats::incr(if allowed {
            &self.stats.allowed
        } else {
            &self.stats.denied
        });
        let denied_details = (!allowed).then(|| {
            matched.map_or_else(|| engine.none_details.clone(), |p| p.denied_details.clone())
        });
        FilterOutcome {
            allowed,
            denied_details,
            shadow,
            log,
        }
    }

    /// The filter's counters.
    pub fn stats(&self) -> &RbacStats {
        &self.stats
    }
}

/// The combined outcome of a list of RBAC filters, in order: the first denial stops.
pub fn check_all<'f>(
    filters: impl IntoIterator<Item = &'f RbacFilter>,
    attrs: &Attributes<'_>,
) -> FilterOutcome {
    let mut total = FilterOutcome {
        allowed: true,
        denied_details: None,
        shadow: None,
        log: false,
    };
    for f in filters {
        let out = f.check(attrs);
        total.log |= out.log;
        if out.shadow.is_some() {
            total.shadow = out.shadow;
        }
        if !out.allowed {
            total.allowed = false;
            total.denied_details = out.denied_details;
            break;
        }
    }
    total
}

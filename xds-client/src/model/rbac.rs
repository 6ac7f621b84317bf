//! Envoy's role-based access control (`envoy.config.rbac.v3`), as carried by the HTTP filter
//! `envoy.filters.http.rbac` and the network filter `envoy.filters.network.rbac`: the
//! translation of Istio's AuthorizationPolicy.
//!
//! A policy matches when one of its permissions (what is done: method, path, host, port...)
//! and one of its principals (who does it: peer identity, addresses, headers) match. The
//! proxy evaluates these trees in `proxy::authz`; here they are validated data.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Serialize;

use super::matcher::{HeaderMatcher, MetadataMatcher, Regex, StringMatcher};

/// One RBAC filter: enforced rules, shadow (dry-run) rules, and stat prefixes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rbac {
    /// Enforced rules. `None`: nothing is enforced (every request passes this filter), which
    /// differs from rules with no policy (ALLOW with no policy denies everything).
    pub rules: Option<RbacRules>,
    /// Rules evaluated and recorded (logged and counted) but never enforced.
    pub shadow_rules: Option<RbacRules>,
    /// Prefix of the statistics of the enforced rules (`rules_stat_prefix`, HTTP only).
    pub rules_stat_prefix: String,
    /// Prefix of the shadow statistics (`istio_dry_run_allow_`, `istio_dry_run_deny_`).
    pub shadow_rules_stat_prefix: String,
    /// The network filter's statistics prefix (`tcp.`); empty for the HTTP filter, whose
    /// statistics are under the connection manager's prefix.
    pub stat_prefix: String,
}

/// A set of policies and what a match means.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RbacRules {
    /// What a matching policy does.
    pub action: RbacAction,
    /// Policies by name; evaluated in name order (Envoy keeps them in an ordered map), the
    /// first match is the effective policy.
    pub policies: BTreeMap<String, Policy>,
}

/// Envoy's `RBAC.Action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RbacAction {
    /// Allow when a policy matches, deny otherwise.
    Allow,
    /// Deny when a policy matches, allow otherwise.
    Deny,
    /// Always allow; a match asks for the request to be logged (Istio's AUDIT).
    Log,
}

/// One policy: any permission and any principal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Policy {
    /// What the request does; at least one must match.
    pub permissions: Vec<Permission>,
    /// Who sends it; at least one must match.
    pub principals: Vec<Principal>,
}

/// Envoy's `Permission`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Always matches.
    Any,
    /// All of these match.
    And(Vec<Permission>),
    /// One of these matches.
    Or(Vec<Permission>),
    /// This does not match.
    Not(Box<Permission>),
    /// A request header (including `:method`, `:authority`, `:path`).
    Header(HeaderMatcher),
    /// The path without query and fragment.
    UrlPath(StringMatcher),
    /// The path without query and fragment matches a URI template (Envoy's
    /// `envoy.path.match.uri_template.uri_template_matcher`).
    UriTemplate(UriTemplate),
    /// The connection's original destination address is in this range.
    DestinationIp(IpNet),
    /// The connection's original destination port.
    DestinationPort(u16),
    /// The destination port is in `[start, end)`.
    DestinationPortRange {
        /// Inclusive start.
        start: u32,
        /// Exclusive end.
        end: u32,
    },
    /// The TLS server name (SNI) the client asked for; the empty string without TLS.
    RequestedServerName(StringMatcher),
    /// Dynamic metadata.
    Metadata(MetadataMatcher),
}

/// Envoy's `Principal`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Principal {
    /// Always matches.
    Any,
    /// All of these match.
    And(Vec<Principal>),
    /// One of these matches.
    Or(Vec<Principal>),
    /// This does not match.
    Not(Box<Principal>),
    /// The connection is mutual TLS with a verified peer certificate whose identity (URI SAN,
    /// the SPIFFE ID) matches; `None` matches any verified peer.
    Authenticated(Option<StringMatcher>),
    /// The downstream address (Envoy's deprecated `source_ip`: the peer or PROXY protocol
    /// address; without PROXY protocol, the peer).
    SourceIp(IpNet),
    /// The peer address of the connection.
    DirectRemoteIp(IpNet),
    /// The original client address (the right-most `x-forwarded-for` entry when the request
    /// carries one, else the peer).
    RemoteIp(IpNet),
    /// A request header.
    Header(HeaderMatcher),
    /// The path without query and fragment.
    UrlPath(StringMatcher),
    /// Dynamic metadata.
    Metadata(MetadataMatcher),
}

/// A URI template (`/v1/*/items/**`) and the expression it compiles to, with Envoy's rules:
/// `*` is one path segment of RFC 3986 `pchar`s, `**` any number of segments, variables
/// `{name}` or `{name=...}` capture the same.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UriTemplate {
    /// The template as configured.
    pub template: String,
    /// The compiled expression, matched against the whole path.
    #[serde(skip)]
    pub regex: Regex,
}

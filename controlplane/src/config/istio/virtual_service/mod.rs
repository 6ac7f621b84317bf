//! `VirtualService` (`networking.istio.io`): traffic routing rules for hosts. The types mirror
//! Istio's `virtual_service.proto` field by field (route actions in [`actions`]); the checks are
//! Istio's webhook rules and the CRD schema's.

mod action_checks;
mod actions;
pub(crate) mod check;
mod routes;

pub use actions::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::duration::Duration;
use super::types::{Destination, Percent, StringMatch};

/// `VirtualService.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// The destination hosts to which traffic is being sent (empty for a delegate).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways and sidecars that apply these routes (`mesh` for all sidecars).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// HTTP routes, in order; the first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// Routes for unterminated TLS and HTTPS traffic, by SNI.
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    /// Routes for opaque TCP traffic.
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    /// Namespaces to which this virtual service is exported.
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// `HTTPRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Name of the route, for debugging.
    #[serde(default)]
    pub name: String,
    /// Conditions to satisfy (any of them) for the rule to apply.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<HttpRouteDestination>>,
    /// A redirect sent back instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// A fixed response sent back instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// A delegate VirtualService holding this route's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// URI and authority rewrites before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Timeout for the whole request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Mirror traffic to another destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Several mirror destinations, each with its percentage.
    #[serde(default)]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated: percentage of traffic mirrored (use `mirrorPercentage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
    /// Percentage of traffic mirrored by `mirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// Cross-Origin Resource Sharing policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// `Delegate`: the VirtualService a root route delegates to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// Name of the delegate VirtualService.
    #[serde(default)]
    pub name: String,
    /// Its namespace (defaults to the root's).
    #[serde(default)]
    pub namespace: String,
}

/// `Headers`: operations on request and response headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Operations on the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Operations on the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// `HeaderOperations`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these headers.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `TLSRoute`: a route for TLS traffic by SNI.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Conditions to satisfy (any of them).
    #[serde(default, rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `TCPRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Conditions to satisfy (any of them).
    #[serde(default, rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `HTTPMatchRequest`: conditions that must all hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Name of the match, appended to the route's name.
    #[serde(default)]
    pub name: String,
    /// URI match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// URI scheme match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// HTTP method match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Authority (Host) match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Header matches (lowercase names), including JWT claims.
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Port the request is addressed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels of the source workload.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to (overrides the VirtualService's).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Query parameter matches.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Case-insensitive URI match.
    #[serde(default)]
    pub ignore_uri_case: bool,
    /// Headers that must be absent (or not match).
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Namespace of the source workload.
    #[serde(default)]
    pub source_namespace: String,
    /// Prefix of the route's stats.
    #[serde(default)]
    pub stat_prefix: String,
}

/// `HTTPRouteDestination`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to forward the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Relative share of the traffic.
    #[serde(default)]
    pub weight: i32,
    /// Header manipulation for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// `RouteDestination` (TCP and TLS routes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to forward the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Relative share of the traffic.
    #[serde(default)]
    pub weight: i32,
}

/// `L4MatchAttributes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination IPs or subnets.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Source subnet (deprecated in Istio, kept for completeness).
    #[serde(default)]
    pub source_subnet: String,
    /// Labels of the source workload.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Namespace of the source workload.
    #[serde(default)]
    pub source_namespace: String,
}

/// `TLSMatchAttributes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI values to match.
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    /// Destination IPs or subnets.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels of the source workload.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Namespace of the source workload.
    #[serde(default)]
    pub source_namespace: String,
}

/// What is wrong with a VirtualService.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    /// A delegate (no hosts) with gateways.
    #[error("delegate virtual service must have no gateways specified")]
    DelegateGateways,
    /// A delegate with TLS routes.
    #[error("delegate virtual service must have no tls route specified")]
    DelegateTls,
    /// A delegate with TCP routes.
    #[error("delegate virtual service must have no tcp route specified")]
    DelegateTcp,
    /// JWT claim routing outside a gateway.
    #[error("JWT claim based routing (key: {key}) is only supported for gateway, found no gateways: [{gateways}]")]
    JwtClaimWithoutGateway {
        /// The match key.
        key: String,
        /// The VirtualService's gateways, space separated.
        gateways: String,
    },
    /// `*` for the mesh.
    #[error("wildcard host * is not allowed for virtual services bound to the mesh gateway")]
    MeshWildcardHost,
    /// Overlapping hosts.
    #[error("duplicate hosts in virtual service: {0} & {1}")]
    DuplicateHosts(String, String),
    /// No routes at all.
    #[error("http, tcp or tls must be provided in virtual service")]
    NoRoutes,
    /// A root route with a redirect.
    #[error("root HTTP route {0} must not specify redirect")]
    RootRedirect(String),
    /// A root route with destinations.
    #[error("root HTTP route {0} must not specify route")]
    RootRoute(String),
    /// A delegate route delegating again.
    #[error("delegate HTTP route cannot contain delegate")]
    DelegateDelegate,
    /// Exclusive route actions (`what` is "HTTP route" or "HTTP route rule", as Istio words
    /// each case).
    #[error("{what} cannot contain both {first} and {second}")]
    Conflict {
        /// The subject of Istio's sentence.
        what: &'static str,
        /// The first field.
        first: &'static str,
        /// The second field.
        second: &'static str,
    },
    /// No action.
    #[error("HTTP route, redirect or direct_response is required")]
    NoAction,
    /// A null header match.
    #[error("header match {0} cannot be null")]
    NullHeaderMatch(String),
    /// A bad source namespace.
    #[error("sourceNamespace match {0} is invalid")]
    SourceNamespace(String),
    /// The authority set twice.
    #[error(
        "authority header cannot be set multiple times: have {have:?}, attempting to set {set:?}"
    )]
    AuthorityTwice {
        /// The first value.
        have: String,
        /// The second value.
        set: String,
    },
    /// `mirror_percent` over 100.
    #[error("mirror_percent must have a max value of 100 (it has {0})")]
    MirrorPercent(u32),
    /// Deprecated `mirrorPercent` (a warning).
    #[error("using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead")]
    MirrorPercentDeprecated,
    /// `mirrorPercentage` out of range.
    #[error("mirror_percentage must have a {bound} value of {limit} (it has {value:.6})")]
    MirrorPercentage {
        /// `max` or `min`.
        bound: &'static str,
        /// 100 or 0.
        limit: u32,
        /// The value.
        value: f64,
    },
    /// A mirror without a destination.
    #[error("destination is required for mirrors")]
    MirrorDestination,
    /// `mirrors` entry percentage out of range.
    #[error("mirror percentage must have a {bound} value of {limit} (it has {value:.6})")]
    MirrorsPercentage {
        /// `max` or `min`.
        bound: &'static str,
        /// 100 or 0.
        limit: u32,
        /// The value.
        value: f64,
    },
    /// A redirect that changes nothing.
    #[error("redirect must specify URI, authority, scheme, or port")]
    RedirectEmpty,
    /// A redirect code outside 3xx.
    #[error("{0} is not a valid redirect code, must be 3xx")]
    RedirectCode(u32),
    /// A redirect scheme other than http, https.
    #[error("invalid redirect scheme, must be \"http\" or \"https\"")]
    RedirectScheme,
    /// Both port and derivePort.
    #[error("only one of port or derivePort may be set")]
    RedirectPortOneOf,
    /// A direct response body over 1 MB.
    #[error("large direct_responses may impact control plane performance, must be less than 1MB")]
    DirectResponseTooLarge,
    /// A direct response body over 100 KB (a warning).
    #[error("large direct_responses may impact control plane performance")]
    DirectResponseLarge,
    /// Both string and bytes bodies.
    #[error("only one of string or bytes may be set")]
    BodyOneOf,
    /// Bytes that are not base64.
    #[error("bytes must be base64 encoded")]
    BodyBase64,
    /// Both uri and uriRegexRewrite.
    #[error("rewrite may only contain one of URI or UriRegexRewrite")]
    RewriteBoth,
    /// An empty rewrite.
    #[error("rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified")]
    RewriteEmpty,
    /// An incomplete regex rewrite.
    #[error("UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match fields to be specified")]
    RegexRewriteIncomplete,
    /// Negative retry attempts.
    #[error("attempts cannot be negative")]
    RetryAttempts,
    /// Retry settings with retries disabled.
    #[error("http retry policy configured when attempts are set to 0 (disabled)")]
    RetryDisabled,
    /// An unknown retry condition.
    #[error("{0:?} is not a valid retryOn policy")]
    RetryOn(String),
    /// A CORS origin with no match.
    #[error("'' is not a valid match type for CORS allow origins")]
    CorsOrigin,
    /// A CORS method Go does not know.
    #[error("{0:?} is not a supported HTTP method")]
    CorsMethod(String),
    /// A CORS max age finer than seconds.
    #[error("max_age duration is accurate only to seconds precision")]
    CorsMaxAge,
    /// A fault with neither delay nor abort.
    #[error("HTTP fault injection must have an abort and/or a delay")]
    FaultEmpty,
    /// An abort without an error type (a warning).
    #[error("abort configured, but error type not set")]
    AbortNoType,
    /// Several abort error types.
    #[error("only one of httpStatus, grpcStatus or http2Error may be set")]
    AbortOneOf,
    /// HTTP/2 abort.
    #[error("HTTP/2 abort fault injection not supported yet")]
    AbortHttp2,
    /// An unknown gRPC status.
    #[error("gRPC status {0:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'")]
    GrpcStatus(String),
    /// Exponential delay.
    #[error("exponentialDelay not supported yet")]
    ExponentialDelay,
    /// Both delay kinds.
    #[error("only one of fixedDelay or exponentialDelay may be set")]
    DelayOneOf,
    /// A route destination without destination.
    #[error("destination is required")]
    DestinationRequired,
    /// `*` as a destination.
    #[error("invalid destination host {0}")]
    DestinationHost(String),
    /// An empty subset name.
    #[error("subset name cannot be empty")]
    SubsetEmpty,
    /// A subset name that is not a DNS label.
    #[error("subset name is invalid: {0}")]
    SubsetName(String),
    /// A negative weight.
    #[error("weight {0} < 0")]
    NegativeWeight(i32),
    /// Several destinations whose weights add up to 0.
    #[error("total destination weight = 0")]
    TotalWeightZero,
    /// A TLS route without match.
    #[error("TLS route must have at least one match condition")]
    TlsNoMatch,
    /// A TLS match without SNI hosts.
    #[error("TLS match must have at least one SNI host")]
    TlsNoSni,
    /// A TLS route without destinations.
    #[error("TLS route is required")]
    TlsNoRoute,
    /// An IP address as SNI (a warning).
    #[error(
        "using an IP address ({0:?}) goes against SNI spec and most clients do not support this"
    )]
    SniIp(String),
    /// An SNI host outside the VirtualService's hosts.
    #[error("SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{hosts}]")]
    SniNotSubset {
        /// The SNI host.
        sni: String,
        /// The hosts, comma separated.
        hosts: String,
    },
    /// A TCP route without destinations.
    #[error("TCP route is required")]
    TcpNoRoute,
    /// A rule that can never match (a warning; Istio's VirtualServiceUnreachableRule).
    #[error("virtualService rule {rule} not used ({reason})")]
    UnreachableRule {
        /// `#2` or `"name"`.
        rule: String,
        /// Why.
        reason: &'static str,
    },
    /// A match shadowed by an earlier one (a warning; VirtualServiceIneffectiveMatch).
    #[error("virtualService rule {rule} match {matched} is not used (duplicate/overlapping match in rule {dup})")]
    IneffectiveMatch {
        /// The rule.
        rule: String,
        /// The match.
        matched: String,
        /// The earlier rule.
        dup: String,
    },
}

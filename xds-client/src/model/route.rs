//! Route configurations: virtual hosts, routes, their matches and actions (Envoy's
//! `RouteConfiguration`, the subset istiod sends for VirtualServices).

use std::time::Duration;

use serde::{Serialize, Serializer};

use super::filter::FilterConfigs;
use super::matcher::{Fraction, HeaderMatcher, QueryParameterMatcher, Regex};

/// A route configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteConfig {
    /// Name (for outbound RDS: the port, e.g. `9080`).
    pub name: String,
    /// Virtual hosts, matched by the request's authority.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Header operations for every route of the configuration (applied last).
    pub headers: HeaderOps,
}

/// A virtual host: a set of domains and the routes for them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualHost {
    /// Name (`reviews.default.svc.cluster.local:9080`, `allow_any`, ...).
    pub name: String,
    /// Domains, matched as Envoy matches them: exact first, then the longest `*.suffix`, then
    /// the longest `prefix*`, then `*`. Stored lowercase.
    pub domains: Vec<String>,
    /// Routes in order; the first that matches wins.
    pub routes: Vec<Route>,
    /// Header operations for every route of the virtual host.
    pub headers: HeaderOps,
    /// Per-filter settings for every route of the virtual host (a route's own win).
    pub filter_configs: FilterConfigs,
    /// Retry policy of routes that have none of their own.
    pub retry_policy: Option<RetryPolicy>,
    /// Send `x-envoy-attempt-count` upstream.
    pub include_attempt_count: bool,
    /// Send `x-envoy-attempt-count` downstream.
    pub include_attempt_count_in_response: bool,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Route {
    /// Name (may be empty).
    pub name: String,
    /// When the route applies.
    pub matcher: RouteMatch,
    /// What to do.
    pub action: RouteAction,
    /// Header operations of the route.
    pub headers: HeaderOps,
    /// Per-filter settings of the route (`typed_per_filter_config`).
    pub filter_configs: FilterConfigs,
}

/// Envoy's `RouteMatch`, the supported subset. All conditions must hold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteMatch {
    /// Path condition.
    pub path: PathMatch,
    /// Whether prefix and exact paths compare case-sensitively (regexes always do); when
    /// false, the stored path is lowercase.
    pub case_sensitive: bool,
    /// Header conditions (pseudo-headers `:authority`, `:method`, `:path`, `:scheme` included).
    pub headers: Vec<HeaderMatcher>,
    /// Query parameter conditions.
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Only gRPC requests (`content-type: application/grpc...`).
    pub grpc: bool,
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum PathMatch {
    /// Path (query included) starts with this.
    Prefix(String),
    /// Path (query excluded) equals this.
    Exact(String),
    /// Path (query excluded) matches this regular expression, wholly.
    Regex(Regex),
    /// Path (query excluded) equals this or continues it after a `/`.
    PathSeparatedPrefix(String),
}

/// What a route does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum RouteAction {
    /// Forward to a cluster (or one of weighted clusters).
    Forward(Box<ForwardAction>),
    /// Answer with a redirect.
    Redirect(RedirectAction),
    /// Answer with a fixed response.
    DirectResponse(DirectResponse),
}

/// Envoy's `RouteAction`: where and how to forward.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForwardAction {
    /// The cluster or clusters.
    pub destination: Destination,
    /// Overall timeout, from the end of the request to the end of the response; `None`: none.
    pub timeout: Option<Duration>,
    /// Longest silence on the stream; `None`: none.
    pub idle_timeout: Option<Duration>,
    /// For gRPC requests: honour `grpc-timeout`.
    pub grpc_timeout: Option<GrpcTimeout>,
    /// Replace the matched prefix (or the whole exact path) with this.
    pub prefix_rewrite: Option<String>,
    /// Rewrite the path (query excluded) with a regex substitution.
    pub regex_rewrite: Option<RegexRewrite>,
    /// Replace the authority with this.
    pub host_rewrite: Option<String>,
    /// Retries, when set (the virtual host's otherwise).
    pub retry_policy: Option<RetryPolicy>,
    /// Copies of the request sent elsewhere, fire and forget.
    pub mirrors: Vec<MirrorPolicy>,
    /// How to hash the request for `RING_HASH` and `MAGLEV` clusters.
    pub hash_policy: Vec<HashPolicy>,
    /// Status when the cluster does not exist (503, 404 or 500).
    pub cluster_not_found_status: u16,
}

/// The clusters a route forwards to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Destination {
    /// One cluster.
    Cluster(String),
    /// One of several, chosen at random by weight (weights add up to more than zero).
    Weighted(Vec<WeightedCluster>),
}

/// One entry of `weighted_clusters`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightedCluster {
    /// Cluster name.
    pub name: String,
    /// Weight (zero: never chosen).
    pub weight: u32,
    /// Header operations when this cluster is chosen (applied first).
    pub headers: HeaderOps,
    /// Replace the authority with this when this cluster is chosen.
    pub host_rewrite: Option<String>,
    /// Per-filter settings when this cluster is chosen.
    pub filter_configs: FilterConfigs,
}

/// How a gRPC request's `grpc-timeout` header sets its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GrpcTimeout {
    /// Upper bound of the header's value; `None`: unbounded.
    pub max: Option<Duration>,
    /// Subtracted from the header's value.
    pub offset: Duration,
}

/// A regex substitution (Envoy's `RegexMatchAndSubstitute`): every match is replaced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegexRewrite {
    /// The pattern (unanchored).
    pub pattern: Regex,
    /// The replacement, in the regex crate's syntax (`${1}` for Envoy's `\1`).
    pub substitution: String,
}

/// Envoy's `RedirectAction`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RedirectAction {
    /// New scheme (`https_redirect` is `https`).
    pub scheme: Option<String>,
    /// New host (port excluded).
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New path.
    pub path: PathRedirect,
    /// Drop the query string.
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// How a redirect changes the path.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum PathRedirect {
    /// Keep the request's path.
    Keep,
    /// Replace the path (and the query, when it has one).
    Path(String),
    /// Replace the matched prefix.
    Prefix(String),
    /// Regex substitution on the path.
    Regex(RegexRewrite),
}

/// Envoy's `DirectResponseAction`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DirectResponse {
    /// HTTP status.
    pub status: u16,
    /// Body, if any.
    pub body: Option<Vec<u8>>,
}

/// Header operations (Envoy's `*_headers_to_add` / `*_headers_to_remove`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeaderOps {
    /// Added to (or set on) the request sent upstream.
    pub request_add: Vec<HeaderAppend>,
    /// Removed from the request sent upstream (lowercase names).
    pub request_remove: Vec<String>,
    /// Added to (or set on) the response sent downstream.
    pub response_add: Vec<HeaderAppend>,
    /// Removed from the response sent downstream (lowercase names).
    pub response_remove: Vec<String>,
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }
}

/// One header to add (Envoy's `HeaderValueOption`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderAppend {
    /// Lowercase name.
    pub name: String,
    /// The value, with Envoy's `%VARIABLE%` substitutions parsed.
    pub value: HeaderValue,
    /// What to do when the header exists.
    pub action: AppendAction,
    /// Add the header even when its value is empty.
    pub keep_empty: bool,
}

/// Envoy's `HeaderAppendAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AppendAction {
    /// Add another value (or the header).
    AppendIfExistsOrAdd,
    /// Add only if absent.
    AddIfAbsent,
    /// Replace every value (or add).
    OverwriteIfExistsOrAdd,
    /// Replace every value, only if present.
    OverwriteIfExists,
}

/// A header value: literal text and Envoy's substitution variables.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderValue(pub Vec<ValuePart>);

/// One part of a [`HeaderValue`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ValuePart {
    /// Text as is (`%%` already turned into `%`).
    Literal(String),
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`
    DownstreamRemoteAddress,
    /// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`
    DownstreamRemoteAddressWithoutPort,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`
    DownstreamLocalAddress,
    /// `%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%`
    DownstreamLocalAddressWithoutPort,
    /// `%PROTOCOL%`
    Protocol,
    /// `%HOSTNAME%`
    Hostname,
    /// `%REQ(name)%`: a request header's value (lowercase name).
    RequestHeader(String),
}

impl HeaderValue {
    /// The value when it has no variables.
    pub fn as_literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [ValuePart::Literal(s)] => Some(s),
            _ => None,
        }
    }
}

/// Envoy's `RetryPolicy`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// The conditions that trigger a retry.
    pub retry_on: RetryOn,
    /// Retries after the first attempt.
    pub num_retries: u32,
    /// Timeout of each attempt; `None`: only the route's timeout.
    pub per_try_timeout: Option<Duration>,
    /// A retry avoids hosts already tried (`envoy.retry_host_predicates.previous_hosts`).
    pub previous_hosts: bool,
    /// A retry prefers priorities not yet tried
    /// (`envoy.retry_priorities.previous_priorities`).
    pub previous_priorities: bool,
    /// Host choices per attempt before accepting a host the predicate rejects.
    pub host_selection_max_attempts: u32,
    /// Status codes retried under `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// Backoff between attempts (fully jittered exponential).
    pub back_off: RetryBackOff,
    /// Response headers that make a response retriable under `retriable-headers`.
    pub retriable_headers: Vec<HeaderMatcher>,
    /// The request is retried only if it matches one of these (when any).
    pub retriable_request_headers: Vec<HeaderMatcher>,
}

/// Envoy's retry back-off: each wait is random in `[0, base * 2^n)`, capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RetryBackOff {
    /// Base interval (Envoy's default 25 ms).
    pub base: Duration,
    /// Upper bound (default ten times the base).
    pub max: Duration,
}

/// The `retry_on` conditions, a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetryOn(u32);

impl RetryOn {
    /// `5xx`: any 5xx response, a reset, a connect failure or a per-try timeout.
    pub const FIVE_XX: RetryOn = RetryOn(1);
    /// `gateway-error`: 502, 503, 504, resets, connect failures, per-try timeouts.
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    /// `reset`: the upstream did not answer (disconnect, reset, read timeout).
    pub const RESET: RetryOn = RetryOn(1 << 2);
    /// `reset-before-request`: the upstream reset before the request was sent.
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 3);
    /// `connect-failure`.
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 4);
    /// `envoy-ratelimited`: a response carrying `x-envoy-ratelimited`.
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 5);
    /// `retriable-4xx`: 409.
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 6);
    /// `refused-stream`: an HTTP/2 `REFUSED_STREAM` reset.
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 7);
    /// `retriable-status-codes`.
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 8);
    /// `retriable-headers`.
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(1 << 9);
    /// `http3-post-connect-failure` (no HTTP/3 upstreams: never fires).
    pub const HTTP3_POST_CONNECT_FAILURE: RetryOn = RetryOn(1 << 10);
    /// gRPC `cancelled`.
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 11);
    /// gRPC `deadline-exceeded`.
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 12);
    /// gRPC `internal`.
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 13);
    /// gRPC `resource-exhausted`.
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 14);
    /// gRPC `unavailable`.
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 15);

    /// Envoy's names, in the order they are written.
    pub const NAMES: [(&'static str, RetryOn); 16] = [
        ("5xx", RetryOn::FIVE_XX),
        ("gateway-error", RetryOn::GATEWAY_ERROR),
        ("reset", RetryOn::RESET),
        ("reset-before-request", RetryOn::RESET_BEFORE_REQUEST),
        ("connect-failure", RetryOn::CONNECT_FAILURE),
        ("envoy-ratelimited", RetryOn::ENVOY_RATELIMITED),
        ("retriable-4xx", RetryOn::RETRIABLE_4XX),
        ("refused-stream", RetryOn::REFUSED_STREAM),
        ("retriable-status-codes", RetryOn::RETRIABLE_STATUS_CODES),
        ("retriable-headers", RetryOn::RETRIABLE_HEADERS),
        (
            "http3-post-connect-failure",
            RetryOn::HTTP3_POST_CONNECT_FAILURE,
        ),
        ("cancelled", RetryOn::GRPC_CANCELLED),
        ("deadline-exceeded", RetryOn::GRPC_DEADLINE_EXCEEDED),
        ("internal", RetryOn::GRPC_INTERNAL),
        ("resource-exhausted", RetryOn::GRPC_RESOURCE_EXHAUSTED),
        ("unavailable", RetryOn::GRPC_UNAVAILABLE),
    ];

    /// The empty set.
    pub const fn empty() -> RetryOn {
        RetryOn(0)
    }

    /// The condition named `name` (Envoy's spelling), if known.
    pub fn from_name(name: &str) -> Option<RetryOn> {
        RetryOn::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// Whether any of `other`'s conditions is in the set.
    pub const fn intersects(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    /// The union.
    pub const fn union(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }

    /// Whether no condition is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = RetryOn::NAMES
            .iter()
            .filter(|(_, v)| self.intersects(*v))
            .map(|(n, _)| *n)
            .collect();
        s.serialize_str(&names.join(","))
    }
}

/// Envoy's `RequestMirrorPolicy`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MirrorPolicy {
    /// The cluster that gets the copy.
    pub cluster: String,
    /// Share of requests mirrored.
    pub fraction: Fraction,
    /// Append `-shadow` to the copy's host, as Envoy does by default.
    pub shadow_suffix: bool,
}

/// One entry of a route's `hash_policy`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HashPolicy {
    /// What is hashed.
    pub source: HashSource,
    /// Stop at this policy when it produced a hash.
    pub terminal: bool,
}

/// What a hash policy hashes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum HashSource {
    /// A request header's value (lowercase name).
    Header(String),
    /// A cookie; when absent and `ttl` is set, the proxy makes one up and sets it on the
    /// response.
    Cookie {
        /// Cookie name.
        name: String,
        /// Lifetime of a generated cookie.
        ttl: Option<Duration>,
        /// `Path` of a generated cookie (may be empty).
        path: String,
    },
    /// The downstream's IP address.
    SourceIp,
    /// A query parameter's value.
    QueryParameter(String),
}

impl RouteConfig {
    /// A route configuration with no header operations.
    pub fn new(name: impl Into<String>, virtual_hosts: Vec<VirtualHost>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            virtual_hosts,
            headers: HeaderOps::default(),
        }
    }
}

impl VirtualHost {
    /// A virtual host with only domains and routes.
    pub fn new(name: impl Into<String>, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            routes,
            headers: HeaderOps::default(),
            filter_configs: FilterConfigs::default(),
            retry_policy: None,
            include_attempt_count: false,
            include_attempt_count_in_response: false,
        }
    }
}

impl Route {
    /// A route with no header operations or per-filter settings.
    pub fn new(name: impl Into<String>, matcher: RouteMatch, action: RouteAction) -> Route {
        Route {
            name: name.into(),
            matcher,
            action,
            headers: HeaderOps::default(),
            filter_configs: FilterConfigs::default(),
        }
    }
}

impl RouteMatch {
    /// A case-sensitive path condition alone.
    pub fn path(path: PathMatch) -> RouteMatch {
        RouteMatch {
            path,
            case_sensitive: true,
            headers: Vec::new(),
            query_parameters: Vec::new(),
            grpc: false,
        }
    }
}

impl ForwardAction {
    /// Forward to `cluster` with no timeout, retries, rewrites or mirrors.
    pub fn to_cluster(cluster: impl Into<String>) -> ForwardAction {
        ForwardAction {
            destination: Destination::Cluster(cluster.into()),
            timeout: None,
            idle_timeout: None,
            grpc_timeout: None,
            prefix_rewrite: None,
            regex_rewrite: None,
            host_rewrite: None,
            retry_policy: None,
            mirrors: Vec::new(),
            hash_policy: Vec::new(),
            cluster_not_found_status: 503,
        }
    }
}

impl RouteAction {
    /// Forward to `cluster` (see [`ForwardAction::to_cluster`]).
    pub fn cluster(cluster: impl Into<String>) -> RouteAction {
        RouteAction::Forward(Box::new(ForwardAction::to_cluster(cluster)))
    }
}

//! The proxy's own configuration model.
//!
//! Envoy's v3 resources are converted into these types once, at the edge (see
//! [`crate::convert`]); the data path never sees a protobuf type. Every value here has been
//! validated: addresses are parsed, names are non-empty, references are plain names that the
//! proxy resolves against the same [`ProxyConfig`] snapshot at request time.
//!
//! The types mirror the parts of Envoy's API the proxy supports, so that a person reading
//! `/config_dump` next to Envoy's can map one onto the other. They are plain data
//! (`Clone + Debug + PartialEq + Serialize`): handles such as metrics, pools and identities live
//! beside the config in the proxy, never inside it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

pub mod cluster;
pub mod filter;
pub mod matcher;
pub mod rbac;
pub mod route;
pub mod telemetry;
pub mod tls;

pub use self::cluster::{
    CircuitBreakers, ConnectionOptions, LbSettings, OutlierDetection, TcpKeepalive,
};
pub use self::filter::{
    AbortStatus, CorsPolicy, FaultAbort, FaultConfig, FaultDelay, FilterConfigs,
};
pub use self::matcher::{
    Fraction, HeaderMatch, HeaderMatcher, QueryParameterMatcher, Regex, StringMatcher,
};
pub use self::route::{
    AppendAction, Destination, DirectResponse, ForwardAction, GrpcTimeout, HashPolicy, HashSource,
    HeaderAppend, HeaderOps, HeaderValue, MirrorPolicy, PathMatch, PathRedirect, RedirectAction,
    RegexRewrite, RetryBackOff, RetryOn, RetryPolicy, Route, RouteAction, RouteConfig, RouteMatch,
    ValuePart, VirtualHost, WeightedCluster,
};
pub use rbac::Rbac;
pub use telemetry::{AccessLogger, TracingConfig};
pub use tls::{DownstreamTls, TransportSocketMatch, UpstreamTls, Xfcc};

/// The four resource types of the slice, in the order a control plane should send them
/// (make-before-break: clusters and their endpoints before the listeners and routes that
/// reference them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ResourceType {
    /// `type.googleapis.com/envoy.config.cluster.v3.Cluster`
    Cluster,
    /// `type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment`
    Endpoint,
    /// `type.googleapis.com/envoy.config.listener.v3.Listener`
    Listener,
    /// `type.googleapis.com/envoy.config.route.v3.RouteConfiguration`
    Route,
}

impl ResourceType {
    /// All types, in make-before-break order.
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    /// The Envoy v3 type URL of this resource type.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    /// The type for a type URL, if it is one the proxy understands.
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name used in logs, `/config_dump` and metrics (`cds`, `eds`, `lds`, `rds`).
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
        }
    }
}

/// One complete, self-consistent snapshot of everything the proxy applies.
///
/// Published by the xDS client through a `tokio::sync::watch` channel; readers clone the
/// `Arc` and keep using their snapshot for the lifetime of a connection or request.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProxyConfig {
    /// Listeners by name (`virtualOutbound`, `virtualInbound`, `0.0.0.0_9080`, ...).
    pub listeners: BTreeMap<String, Listener>,
    /// Route configurations by name (`9080`, ...), as delivered by RDS.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Clusters by name (`outbound|9080||reviews.default.svc.cluster.local`, ...).
    pub clusters: BTreeMap<String, Cluster>,
    /// Endpoints by cluster name, as delivered by EDS.
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// The version last applied (ACKed) for each type; absent until the first response.
    pub versions: BTreeMap<ResourceType, String>,
    /// True when a response has been applied for CDS and LDS and for every RDS and EDS name
    /// they reference, as of this snapshot: the proxy's readiness condition for configuration.
    /// It turns false again while a newly referenced name awaits its first response; readiness
    /// ("a first full config is applied") latches on the first true.
    pub synced: bool,
}

/// Direction of a listener's traffic, from Envoy's `traffic_direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Direction {
    /// Traffic from the local app to somewhere else.
    Outbound,
    /// Traffic from elsewhere to the local app.
    Inbound,
    /// Not stated.
    Unspecified,
}

/// A listener: either a real socket (`bind_to_port`) or a virtual one that the capture
/// listeners hand connections to by their original destination.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Listener {
    /// Listener name.
    pub name: String,
    /// The address it stands for (for virtual listeners, the original destination it matches;
    /// `0.0.0.0:PORT` matches any address on that port).
    pub address: SocketAddr,
    /// Whether the proxy binds this address. False for per-service outbound listeners.
    pub bind_to_port: bool,
    /// Whether connections accepted here are handed to the listener matching their original
    /// destination (Envoy's `use_original_dst`).
    pub use_original_dst: bool,
    /// Traffic direction.
    pub direction: Direction,
    /// Filter chains, tried by the most specific match (Envoy's filter chain match order:
    /// destination port, destination IP, server names, transport protocol, application
    /// protocols, source).
    pub filter_chains: Vec<FilterChain>,
    /// Chain used when no other chain matches.
    pub default_filter_chain: Option<FilterChain>,
}

/// One filter chain of a listener.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FilterChain {
    /// Chain name (may be empty).
    pub name: String,
    /// When this chain applies.
    pub matcher: FilterChainMatch,
    /// `envoy.filters.network.rbac` filters placed before the terminal filter, in order:
    /// evaluated once per connection, before anything is sent upstream.
    pub rbac: Vec<Rbac>,
    /// TLS terminated on this chain (`transport_socket` `envoy.transport_sockets.tls`);
    /// `None`: plaintext.
    pub tls: Option<DownstreamTls>,
    /// The terminal network filter of the chain.
    pub filter: NetworkFilter,
}

/// Envoy's `FilterChainMatch`, the supported subset. Empty fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FilterChainMatch {
    /// Original destination port.
    pub destination_port: Option<u16>,
    /// Original destination address ranges.
    pub prefix_ranges: Vec<IpNet>,
    /// Detected transport protocol: `raw_buffer` or `tls`.
    pub transport_protocol: Option<String>,
    /// Detected application protocols: `http/1.1`, `h2c` (plaintext sniffing), or ALPN values.
    pub application_protocols: Vec<String>,
    /// TLS SNI names.
    pub server_names: Vec<String>,
}

/// The terminal network filter of a chain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum NetworkFilter {
    /// `envoy.filters.network.http_connection_manager`.
    Http(HttpConnectionManager),
    /// `envoy.filters.network.tcp_proxy`.
    Tcp(TcpProxy),
}

/// `envoy.filters.network.http_connection_manager`, the supported subset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpConnectionManager {
    /// Statistics prefix.
    pub stat_prefix: String,
    /// Where the routes come from.
    pub routes: RouteSource,
    /// HTTP filters in order; the last is the router.
    pub http_filters: Vec<HttpFilter>,
    /// How the request path is normalized before any filter or route sees it (and is
    /// forwarded so).
    pub path_normalization: PathNormalization,
    /// `x-forwarded-client-cert` handling.
    pub xfcc: Xfcc,
    /// `access_log`; empty: the proxy's default (`--access-log`).
    pub access_log: Vec<AccessLogger>,
    /// `tracing`; `None`: the proxy's own tracing settings.
    pub tracing: Option<TracingConfig>,
}

/// The connection manager's path normalization: `normalize_path`, `merge_slashes`,
/// `path_with_escaped_slashes_action` (istiod sets them from the mesh's `pathNormalization`:
/// BASE is `normalize`, MERGE_SLASHES adds `merge_slashes`, DECODE_AND_MERGE_SLASHES adds
/// unescaping of `%2F` and `%5C`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PathNormalization {
    /// RFC 3986 normalization: dot segments removed, percent-encoded unreserved characters
    /// decoded, backslashes made slashes.
    pub normalize: bool,
    /// Consecutive slashes merged into one.
    pub merge_slashes: bool,
    /// What to do with `%2F` and `%5C` (case-insensitive) in the path.
    pub escaped_slashes: EscapedSlashes,
}

/// Envoy's `path_with_escaped_slashes_action`, the supported values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum EscapedSlashes {
    /// Leave them encoded (Envoy's default).
    #[default]
    Keep,
    /// Refuse the request with 400.
    Reject,
    /// Decode them before the other normalization steps, and forward the result.
    UnescapeAndForward,
}

/// Where an HTTP connection manager finds its routes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum RouteSource {
    /// By name, through RDS.
    Rds(String),
    /// Inline in the listener.
    Inline(RouteConfig),
}

/// An HTTP filter of the connection manager.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum HttpFilter {
    /// `envoy.filters.http.rbac`.
    Rbac(Box<Rbac>),
    /// `envoy.filters.http.fault`, with its filter-wide settings (routes may override them).
    Fault(FaultConfig),
    /// `envoy.filters.http.cors` (its settings are per route).
    Cors,
    /// `envoy.filters.http.router`.
    Router,
}

/// `envoy.filters.network.tcp_proxy`, the supported subset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcpProxy {
    /// Statistics prefix.
    pub stat_prefix: String,
    /// Destination cluster name (with weighted clusters: the first, for logs).
    pub cluster: String,
    /// Weighted clusters (name, weight): one is chosen per connection. Empty: `cluster`.
    pub weighted_clusters: Vec<(String, u32)>,
    /// Close the connection after this long without traffic either way.
    pub idle_timeout: Option<Duration>,
    /// `access_log`; empty: the proxy's default (`--access-log`).
    pub access_log: Vec<AccessLogger>,
}

/// A cluster: a set of upstream endpoints and how to reach them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cluster {
    /// Name (`outbound|PORT|SUBSET|HOST`, `inbound|PORT||`, `PassthroughCluster`, ...).
    pub name: String,
    /// Where the endpoints come from.
    pub discovery: Discovery,
    /// Timeout for establishing a connection.
    pub connect_timeout: Duration,
    /// Load balancing policy.
    pub lb_policy: LbPolicy,
    /// Protocol spoken to the upstream.
    pub upstream_protocol: UpstreamProtocol,
    /// Local address to bind upstream sockets to (Envoy's `upstream_bind_config`; inbound
    /// clusters use 127.0.0.6 so the delivery to the app is not captured again).
    pub bind_address: Option<IpAddr>,
    /// Load-balancer settings.
    pub lb_settings: LbSettings,
    /// Circuit breaker thresholds.
    pub circuit_breakers: CircuitBreakers,
    /// Outlier detection, when enabled.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream connection options.
    pub connection: ConnectionOptions,
    /// TLS to every endpoint (`transport_socket`), unless a `transport_socket_matches` entry
    /// applies to the endpoint.
    pub transport_socket: Option<UpstreamTls>,
    /// Per-endpoint transports, the first whose criteria the endpoint's metadata holds wins.
    pub transport_socket_matches: Vec<TransportSocketMatch>,
}

impl Cluster {
    /// A cluster with Envoy's defaults: round robin, HTTP/1.1, 5 s connect timeout, default
    /// circuit breakers, no outlier detection.
    pub fn new(name: impl Into<String>, discovery: Discovery) -> Cluster {
        Cluster {
            name: name.into(),
            discovery,
            connect_timeout: Duration::from_secs(5),
            lb_policy: LbPolicy::RoundRobin,
            upstream_protocol: UpstreamProtocol::Http1,
            bind_address: None,
            lb_settings: LbSettings::default(),
            circuit_breakers: CircuitBreakers::default(),
            outlier_detection: None,
            connection: ConnectionOptions::default(),
            transport_socket: None,
            transport_socket_matches: Vec::new(),
        }
    }
}

/// How a cluster finds its endpoints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Discovery {
    /// Through EDS, under the cluster's name (or `service_name` when set).
    Eds {
        /// The EDS resource name.
        service_name: String,
    },
    /// The connection's original destination (Envoy's `ORIGINAL_DST`).
    OriginalDst,
    /// Endpoints given inline (Envoy's `STATIC`).
    Static(ClusterLoadAssignment),
    /// Host names given inline, resolved by the proxy (Envoy's `STRICT_DNS` and
    /// `LOGICAL_DNS`).
    Dns(DnsDiscovery),
}

/// A DNS-resolved cluster's settings and targets.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DnsDiscovery {
    /// Every address of every target (`STRICT_DNS`), or the first address only
    /// (`LOGICAL_DNS`, exactly one target).
    pub mode: DnsMode,
    /// Which address families are used.
    pub lookup_family: DnsLookupFamily,
    /// How often the targets are resolved again (Envoy's default: 5 s).
    pub refresh_rate: Duration,
    /// After a failed resolution, the first retry delay and the longest one (Envoy's
    /// `dns_failure_refresh_rate`; the refresh rate when not set).
    pub failure_refresh: (Duration, Duration),
    /// What to resolve, in order.
    pub targets: Vec<DnsTarget>,
}

/// `STRICT_DNS` or `LOGICAL_DNS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DnsMode {
    /// Every resolved address is an endpoint.
    Strict,
    /// The first resolved address of the only target is the endpoint.
    Logical,
}

/// Envoy's `dns_lookup_family`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DnsLookupFamily {
    /// IPv6 addresses if there are any, else IPv4 (Envoy's default).
    Auto,
    /// IPv4 only.
    V4Only,
    /// IPv6 only.
    V6Only,
    /// IPv4 addresses if there are any, else IPv6.
    V4Preferred,
    /// Both families.
    All,
}

/// One host name (or IP literal) of a DNS-resolved cluster.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DnsTarget {
    /// The name to resolve.
    pub host: String,
    /// The port of every address it resolves to.
    pub port: u16,
    /// Load-balancing weight of each of its addresses (at least 1).
    pub weight: u32,
    /// Locality as `region/zone/subzone` (empty parts allowed).
    pub locality: String,
}

/// Load-balancing policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LbPolicy {
    /// Envoy's `ROUND_ROBIN`.
    RoundRobin,
    /// Envoy's `LEAST_REQUEST`.
    LeastRequest,
    /// Envoy's `RANDOM`.
    Random,
    /// Envoy's `RING_HASH` (consistent hashing on a ring).
    RingHash,
    /// Envoy's `MAGLEV` (consistent hashing with a lookup table).
    Maglev,
    /// Envoy's `CLUSTER_PROVIDED` (used with `ORIGINAL_DST`).
    ClusterProvided,
}

/// Protocol towards the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 upstream.
    Http1,
    /// HTTP/2 (prior knowledge over plaintext) upstream.
    Http2,
    /// The downstream's protocol (Istio's `USE_DOWNSTREAM_PROTOCOL`).
    UseDownstream,
}

/// The endpoints of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterLoadAssignment {
    /// Cluster (or EDS service) name.
    pub cluster_name: String,
    /// All endpoints, flattened over localities.
    pub endpoints: Vec<Endpoint>,
}

/// One upstream endpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Endpoint {
    /// Socket address.
    pub address: SocketAddr,
    /// Load-balancing weight (at least 1).
    pub weight: u32,
    /// Health as the control plane reports it.
    pub health: HealthStatus,
    /// Locality as `region/zone/subzone` (empty parts allowed).
    pub locality: String,
    /// Priority of its locality group (0 is the highest): lower priorities get traffic only
    /// when no host of a higher one is available.
    pub priority: u32,
    /// Its transport-socket metadata (`filter_metadata["envoy.transport_socket_match"]`,
    /// string values), which selects the cluster's `transport_socket_matches` entry:
    /// `tlsMode: istio` for endpoints that have a sidecar.
    pub transport_metadata: BTreeMap<String, String>,
    /// The workload behind the address, from the endpoint's telemetry metadata (what the
    /// metrics label this peer with); `None` when the control plane sent none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<EndpointWorkload>,
}

/// The workload of an endpoint, as istiod describes it in `filter_metadata.istio.workload`
/// (`WORKLOAD;NAMESPACE;CANONICAL_SERVICE;CANONICAL_REVISION;CLUSTER`), with the `app` and
/// `version` labels this project's control plane adds beside it (`istio.app`,
/// `istio.version`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct EndpointWorkload {
    /// Workload name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Canonical service (empty: not sent).
    pub canonical_service: String,
    /// Canonical revision (empty: istiod leaves out its default `latest`).
    pub canonical_revision: String,
    /// Cluster id.
    pub cluster: String,
    /// `app` label, when sent.
    pub app: Option<String>,
    /// `version` label, when sent.
    pub version: Option<String>,
}

/// Endpoint health as reported by EDS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HealthStatus {
    /// Healthy or unknown: eligible for traffic.
    Healthy,
    /// Unhealthy, draining, timed out: not eligible.
    Unhealthy,
}

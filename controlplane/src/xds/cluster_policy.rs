//! A DestinationRule's traffic policy on a cluster, as istiod applies it
//! (`cluster_traffic_policy.go`): the policy of a port (port-level settings replace the
//! rule's connection pool, load balancer, outlier detection and TLS as a whole), of a subset
//! (overriding the rule's, then its own port-level settings), connection pool limits as
//! circuit breaker thresholds (unlimited when unset, on every cluster), HTTP connection
//! options, TCP keepalive, the load balancer (simple or consistent hash: ring hash or maglev)
//! and outlier detection.

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds,
    cluster::{
        self, ClusterDiscoveryType, CommonLbConfig, DiscoveryType, LbPolicy, MaglevLbConfig,
        RingHashLbConfig,
    },
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier, UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions,
    TcpKeepalive,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
        UseDownstreamHttpConfig,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::UInt64Value;
use envoy_types::util::pack_any;

use super::build::{self, HTTP_PROTOCOL_OPTIONS};
use super::http_routes::policy::duration;
use crate::config::istio::destination_rule::{
    ConnectionPoolSettings, H2UpgradePolicy, LoadBalancerSettings, OutlierDetection, SimpleLb,
    Subset, TrafficPolicy,
};
use crate::registry::Protocol;

/// Istio's `MergeTrafficPolicy`: `subset`'s policy over `original`, then `subset`'s
/// port-level settings for `port` (which replace, not merge). With `original` = `None` it
/// gives a rule's own policy for a port.
pub fn merge(
    original: Option<&TrafficPolicy>,
    subset: Option<&TrafficPolicy>,
    port: u16,
) -> Option<TrafficPolicy> {
    let Some(subset) = subset else {
        return original.cloned();
    };
    let base = match original {
        Some(o)
            if o.port_level_settings
                .as_ref()
                .is_some_and(|p| !p.is_empty()) =>
        {
            merge(None, Some(o), port)
        }
        other => other.cloned(),
    };
    let mut out = TrafficPolicy::default();
    if let Some(b) = base {
        out.connection_pool = b.connection_pool;
        out.load_balancer = b.load_balancer;
        out.outlier_detection = b.outlier_detection;
        out.tls = b.tls;
        out.tunnel = b.tunnel;
        out.proxy_protocol = b.proxy_protocol;
        out.retry_budget = b.retry_budget;
    }
    macro_rules! over {
        ($($f:ident),*) => { $( if subset.$f.is_some() { out.$f = subset.$f.clone(); } )* };
    }
    over!(
        connection_pool,
        outlier_detection,
        load_balancer,
        tls,
        tunnel,
        proxy_protocol,
        retry_budget
    );
    if let Some(p) = subset
        .port_level_settings
        .iter()
        .flatten()
        .find(|p| p.port.map(|x| x.number) == Some(u32::from(port)))
    {
        out.connection_pool = p.connection_pool.clone();
        out.outlier_detection = p.outlier_detection.clone();
        out.load_balancer = p.load_balancer.clone();
        out.tls = p.tls.clone();
    }
    Some(out)
}

/// The policy of a cluster: the rule's for the port, merged with the subset's if any.
pub fn cluster_policy(
    rule: Option<&TrafficPolicy>,
    subset: Option<&Subset>,
    port: u16,
) -> Option<TrafficPolicy> {
    let top = merge(None, rule, port);
    match subset {
        None => top,
        Some(s) => merge(top.as_ref(), s.traffic_policy.as_ref(), port),
    }
}

/// Istio's default thresholds: everything unlimited, remaining capacity tracked.
pub fn default_thresholds() -> Thresholds {
    Thresholds {
        max_connections: build::u32_value(u32::MAX),
        max_pending_requests: build::u32_value(u32::MAX),
        max_requests: build::u32_value(u32::MAX),
        max_retries: build::u32_value(u32::MAX),
        track_remaining: true,
        ..Default::default()
    }
}

/// Sets the default (unlimited) circuit breakers.
pub fn default_circuit_breakers(c: &mut Cluster) {
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![default_thresholds()],
        ..Default::default()
    });
}

/// The HTTP protocol options a port's protocol starts with: explicit HTTP/2 for HTTP/2 and
/// gRPC, the downstream's protocol for sniffed ports, none otherwise.
pub fn protocol_options(protocol: Protocol) -> Option<HttpProtocolOptions> {
    let options = if protocol.is_http2() {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )),
        })
    } else if protocol == Protocol::Auto {
        use_downstream()
    } else {
        return None;
    };
    Some(HttpProtocolOptions {
        upstream_protocol_options: Some(options),
        ..Default::default()
    })
}

fn use_downstream() -> UpstreamProtocolOptions {
    UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
        http_protocol_options: Some(Http1ProtocolOptions::default()),
        http2_protocol_options: Some(Http2ProtocolOptions::default()),
        ..Default::default()
    })
}

/// What a policy's application needs besides the cluster.
pub struct Applied {
    /// The HTTP protocol options (packed into the cluster by [`finish`]).
    pub http: Option<HttpProtocolOptions>,
}

/// Applies a traffic policy (or only the defaults, for `None`) to an outbound cluster of a
/// port of `protocol`; call [`finish`] afterwards.
pub fn apply(c: &mut Cluster, protocol: Protocol, policy: Option<&TrafficPolicy>) -> Applied {
    let mut applied = Applied {
        http: protocol_options(protocol),
    };
    let empty = ConnectionPoolSettings::default();
    let pool = policy
        .and_then(|p| p.connection_pool.as_ref())
        .unwrap_or(&empty);
    connection_pool(c, &mut applied, pool);
    if should_h2_upgrade(protocol, pool) {
        applied
            .http
            .get_or_insert_with(Default::default)
            .upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        ));
    }
    if let Some(o) = policy.and_then(|p| p.outlier_detection.as_ref()) {
        outlier_detection(c, o);
    }
    load_balancer(c, policy.and_then(|p| p.load_balancer.as_ref()));
    applied
}

/// Packs the HTTP protocol options (HTTP/1.1 explicitly when only connection options were
/// set: Envoy requires a protocol).
pub fn finish(c: &mut Cluster, applied: Applied) {
    if let Some(mut options) = applied.http {
        if options.upstream_protocol_options.is_none() {
            options.upstream_protocol_options = Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                        Http1ProtocolOptions::default(),
                    )),
                },
            ));
        }
        c.typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), pack_any(options));
    }
}

fn positive(v: i32) -> Option<u32> {
    u32::try_from(v).ok().filter(|v| *v > 0)
}

/// Istio's `applyConnectionPool`.
fn connection_pool(c: &mut Cluster, applied: &mut Applied, pool: &ConnectionPoolSettings) {
    let mut t = default_thresholds();
    let mut idle_timeout = None;
    let mut max_requests_per_connection = None;
    let mut max_concurrent_streams = None;
    let mut max_connection_duration = None;
    if let Some(h) = &pool.http {
        if let Some(v) = positive(h.http2_max_requests) {
            t.max_requests = build::u32_value(v);
        }
        if let Some(v) = positive(h.http1_max_pending_requests) {
            t.max_pending_requests = build::u32_value(v);
        }
        if let Some(v) = positive(h.max_retries) {
            t.max_retries = build::u32_value(v);
        }
        idle_timeout = h.idle_timeout.map(duration);
        max_requests_per_connection = positive(h.max_requests_per_connection);
        max_concurrent_streams = positive(h.max_concurrent_streams);
    }
    if let Some(tcp) = &pool.tcp {
        if let Some(ct) = tcp.connect_timeout {
            c.connect_timeout = Some(duration(ct));
        }
        if let Some(v) = positive(tcp.max_connections) {
            t.max_connections = build::u32_value(v);
        }
        max_connection_duration = tcp.max_connection_duration.map(duration);
        if idle_timeout.is_none() {
            idle_timeout = tcp.idle_timeout.map(duration);
        }
        if let Some(k) = &tcp.tcp_keepalive {
            let keepalive = TcpKeepalive {
                keepalive_probes: (k.probes > 0)
                    .then_some(k.probes)
                    .and_then(build::u32_value),
                keepalive_time: k.time.and_then(whole_seconds).and_then(build::u32_value),
                keepalive_interval: k
                    .interval
                    .and_then(whole_seconds)
                    .and_then(build::u32_value),
            };
            c.upstream_connection_options = Some(UpstreamConnectionOptions {
                tcp_keepalive: Some(keepalive),
                ..Default::default()
            });
        }
    }
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![t],
        ..Default::default()
    });
    if idle_timeout.is_some()
        || max_requests_per_connection.is_some()
        || max_connection_duration.is_some()
        || max_concurrent_streams.is_some()
    {
        let options = applied.http.get_or_insert_with(Default::default);
        let common = options
            .common_http_protocol_options
            .get_or_insert_with(CommonHttpOptions::default);
        if idle_timeout.is_some() {
            common.idle_timeout = idle_timeout;
        }
        if let Some(v) = max_requests_per_connection {
            common.max_requests_per_connection = build::u32_value(v);
        }
        if max_connection_duration.is_some() {
            common.max_connection_duration = max_connection_duration;
        }
        if let Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(h2)),
        })) = &mut options.upstream_protocol_options
        {
            if let Some(v) = max_concurrent_streams {
                h2.max_concurrent_streams = build::u32_value(v);
            }
        }
    }
    if pool.http.as_ref().is_some_and(|h| h.use_client_protocol) {
        applied
            .http
            .get_or_insert_with(Default::default)
            .upstream_protocol_options = Some(use_downstream());
    }
}

/// Seconds of a duration (Istio keeps the seconds of keepalive durations).
fn whole_seconds(d: crate::config::istio::Duration) -> Option<u32> {
    u32::try_from(d.as_nanos() / 1_000_000_000).ok()
}

/// Istio's `shouldH2Upgrade` with the mesh default (`DO_NOT_UPGRADE`): only an HTTP port
/// whose policy says `UPGRADE`.
fn should_h2_upgrade(protocol: Protocol, pool: &ConnectionPoolSettings) -> bool {
    protocol.is_http()
        && !protocol.is_http2()
        && pool
            .http
            .as_ref()
            .and_then(|h| h.h2_upgrade_policy)
            .is_some_and(|p| p == H2UpgradePolicy::Upgrade)
}

/// Istio's `applyOutlierDetection`.
fn outlier_detection(c: &mut Cluster, o: &OutlierDetection) {
    let enforcing = |v: u32| build::u32_value(if v > 0 { 100 } else { 0 });
    let mut out = EnvoyOutlier {
        enforcing_success_rate: build::u32_value(0),
        ..Default::default()
    };
    if let Some(v) = o.consecutive5xx_errors {
        out.consecutive_5xx = build::u32_value(v);
        out.enforcing_consecutive_5xx = enforcing(v);
    }
    if let Some(v) = o.consecutive_gateway_errors {
        out.consecutive_gateway_failure = build::u32_value(v);
        out.enforcing_consecutive_gateway_failure = enforcing(v);
    }
    if o.consecutive5xx_errors.is_none() && o.consecutive_gateway_errors.is_none() {
        // The deprecated `consecutiveErrors` counts gateway errors only.
        if let Some(v) = positive(o.consecutive_errors) {
            out.consecutive_gateway_failure = build::u32_value(v);
            out.enforcing_consecutive_gateway_failure = build::u32_value(100);
            out.enforcing_consecutive_5xx = build::u32_value(0);
        }
    }
    out.interval = o.interval.map(duration);
    out.base_ejection_time = o.base_ejection_time.map(duration);
    if let Some(v) = positive(o.max_ejection_percent) {
        out.max_ejection_percent = build::u32_value(v);
    }
    if o.split_external_local_origin_errors {
        out.split_external_local_origin_errors = true;
        if let Some(v) = o.consecutive_local_origin_failures.filter(|v| *v > 0) {
            out.consecutive_local_origin_failure = build::u32_value(v);
            out.enforcing_consecutive_local_origin_failure = build::u32_value(100);
        }
        out.enforcing_local_origin_success_rate = build::u32_value(0);
    }
    c.outlier_detection = Some(out);
    if o.min_health_percent >= 0 {
        c.common_lb_config
            .get_or_insert_with(CommonLbConfig::default)
            .healthy_panic_threshold = Some(Percent {
            value: f64::from(o.min_health_percent),
        });
    }
}

/// Istio's `applyLoadBalancer` (without locality settings); the default algorithm is this
/// mesh's, round robin.
fn load_balancer(c: &mut Cluster, lb: Option<&LoadBalancerSettings>) {
    if c.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ))
    {
        c.lb_policy = LbPolicy::ClusterProvided as i32;
        return;
    }
    match lb.and_then(|l| l.simple) {
        Some(SimpleLb::LeastConn | SimpleLb::LeastRequest) => {
            c.lb_policy = LbPolicy::LeastRequest as i32;
        }
        Some(SimpleLb::Random) => c.lb_policy = LbPolicy::Random as i32,
        Some(SimpleLb::Passthrough) => {
            c.lb_policy = LbPolicy::ClusterProvided as i32;
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            c.eds_cluster_config = None;
            c.load_assignment = None;
        }
        Some(SimpleLb::RoundRobin | SimpleLb::Unspecified) | None => {
            c.lb_policy = LbPolicy::RoundRobin as i32;
        }
    }
    let Some(hash) = lb.and_then(|l| l.consistent_hash.as_ref()) else {
        return;
    };
    let size = |v: u64| Some(UInt64Value { value: v });
    if let Some(m) = &hash.maglev {
        c.lb_policy = LbPolicy::Maglev as i32;
        if m.table_size != 0 {
            c.lb_config = Some(cluster::LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: size(m.table_size),
            }));
        }
    } else if let Some(r) = &hash.ring_hash {
        c.lb_policy = LbPolicy::RingHash as i32;
        if r.minimum_ring_size != 0 {
            c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(RingHashLbConfig {
                minimum_ring_size: size(r.minimum_ring_size),
                ..Default::default()
            }));
        }
    } else {
        let min = if hash.minimum_ring_size != 0 {
            hash.minimum_ring_size
        } else {
            1024
        };
        c.lb_policy = LbPolicy::RingHash as i32;
        c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: size(min),
            ..Default::default()
        }));
    }
}

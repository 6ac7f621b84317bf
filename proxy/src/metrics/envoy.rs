//! The proxy's own health, under Envoy's statistic names as Envoy's Prometheus output writes
//! them (`envoy_` prefix, dots made underscores, tags as labels): per-cluster request and
//! connection counters that the data path increments through [`ClusterStats`] handles, and
//! server, xDS and listener values refreshed from the proxy's state at scrape time
//! ([`EnvoyMetrics::refresh`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{
    Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::istio::RegisterError;
use crate::upstream::host::HostState;

/// The upstream connections the pool keeps open (Pingora owns the pool and never says when
/// it closes one), by descriptor, each with the identity of its socket (`/proc/self/fd`'s
/// `socket:[inode]`). A descriptor that now names another socket, or none, means the
/// connection closed: [`UpstreamConnections::sweep`] (at every scrape) and a new connection
/// on the same descriptor take it out of `upstream_cx_active`.
#[derive(Default)]
struct UpstreamConnections {
    by_fd: Mutex<HashMap<i32, OpenConnection>>,
}

struct OpenConnection {
    socket: Option<std::path::PathBuf>,
    stats: Arc<ClusterStats>,
    host: Option<Arc<HostState>>,
}

impl OpenConnection {
    fn closed(&self) {
        self.stats.upstream_cx_active.dec();
        if let Some(h) = &self.host {
            h.connection_closed();
        }
    }
}

fn socket_of(fd: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

impl UpstreamConnections {
    fn opened(&self, fd: i32, stats: Arc<ClusterStats>, host: Option<Arc<HostState>>) {
        stats.upstream_cx_total.inc();
        stats.upstream_cx_active.inc();
        if let Some(h) = &host {
            h.connection_opened();
        }
        let conn = OpenConnection {
            socket: socket_of(fd),
            stats,
            host,
        };
        let mut map = self.by_fd.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = map.insert(fd, conn) {
            old.closed();
        }
    }

    fn sweep(&self) {
        let mut map = self.by_fd.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|fd, conn| {
            let open = conn.socket.is_some() && socket_of(*fd) == conn.socket;
            if !open {
                conn.closed();
            }
            open
        });
    }
}

/// Per-cluster handles, created once per cluster name and kept for the life of the process
/// (a cluster rebuilt by a new snapshot keeps counting where it was). Every field is a
/// lock-free atomic: increment from the data path without allocating.
#[derive(Debug)]
pub struct ClusterStats {
    /// `envoy_cluster_upstream_rq_total`: requests sent upstream (each attempt, as Envoy).
    pub upstream_rq_total: IntCounter,
    /// `envoy_cluster_upstream_rq_completed`: requests that got a response.
    pub upstream_rq_completed: IntCounter,
    /// `envoy_cluster_upstream_rq_xx{envoy_response_code_class="1".."5"}`.
    pub upstream_rq_xx: [IntCounter; 5],
    /// `envoy_cluster_upstream_rq_retry`: retries sent (the retry filter increments it).
    pub upstream_rq_retry: IntCounter,
    /// `envoy_cluster_upstream_rq_retry_success`.
    pub upstream_rq_retry_success: IntCounter,
    /// `envoy_cluster_upstream_rq_retry_overflow`: retries refused by the retry budget or
    /// circuit breaker.
    pub upstream_rq_retry_overflow: IntCounter,
    /// `envoy_cluster_upstream_rq_timeout`: requests that hit the route timeout.
    pub upstream_rq_timeout: IntCounter,
    /// `envoy_cluster_upstream_rq_per_try_timeout`.
    pub upstream_rq_per_try_timeout: IntCounter,
    /// `envoy_cluster_upstream_rq_pending_overflow`: requests refused by the circuit breaker
    /// (`UO`).
    pub upstream_rq_pending_overflow: IntCounter,
    /// `envoy_cluster_upstream_cx_total`: upstream connections opened.
    pub upstream_cx_total: IntCounter,
    /// `envoy_cluster_upstream_cx_active`.
    pub upstream_cx_active: IntGauge,
    /// `envoy_cluster_upstream_cx_connect_fail`.
    pub upstream_cx_connect_fail: IntCounter,
    /// `envoy_cluster_upstream_cx_overflow`: connections refused by the circuit breaker.
    pub upstream_cx_overflow: IntCounter,
    /// `envoy_cluster_outlier_detection_ejections_active`: hosts ejected now.
    pub outlier_detection_ejections_active: IntGauge,
    /// `envoy_cluster_outlier_detection_ejections_enforced_total`.
    pub outlier_detection_ejections_enforced_total: IntCounter,
    /// `envoy_cluster_membership_healthy`: endpoints eligible for traffic.
    pub membership_healthy: IntGauge,
    /// `envoy_cluster_membership_total`.
    pub membership_total: IntGauge,
}

impl ClusterStats {
    /// Count an upstream response by its status class.
    pub fn response(&self, status: u16) {
        self.upstream_rq_completed.inc();
        if let Some(c) = self
            .upstream_rq_xx
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            c.inc();
        }
    }
}

struct ClusterFamilies {
    counters: BTreeMap<&'static str, IntCounterVec>,
    gauges: BTreeMap<&'static str, IntGaugeVec>,
    xx: IntCounterVec,
}

const CLUSTER_COUNTERS: [&str; 12] = [
    "upstream_rq_total",
    "upstream_rq_completed",
    "upstream_rq_retry",
    "upstream_rq_retry_success",
    "upstream_rq_retry_overflow",
    "upstream_rq_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_rq_pending_overflow",
    "upstream_cx_total",
    "upstream_cx_connect_fail",
    "upstream_cx_overflow",
    "outlier_detection_ejections_enforced_total",
];

const CLUSTER_GAUGES: [&str; 4] = [
    "upstream_cx_active",
    "outlier_detection_ejections_active",
    "membership_healthy",
    "membership_total",
];

/// What [`EnvoyMetrics::refresh`] reads: the proxy's state at scrape time.
#[derive(Debug, Default, Clone)]
pub struct HealthInput {
    /// Envoy's server state: 0 LIVE, 1 DRAINING, 2 PRE_INITIALIZING, 3 INITIALIZING.
    pub server_state: i64,
    /// Seconds since start.
    pub uptime_seconds: i64,
    /// Bytes allocated (jemalloc's `stats.allocated`), if known.
    pub memory_allocated: Option<u64>,
    /// Days until the workload certificate expires, if one is held.
    pub days_until_cert_expiry: Option<f64>,
    /// Whether an ADS stream is up.
    pub control_plane_connected: bool,
    /// Per xDS type (`cds`, `eds`, `lds`, `rds`): (updates applied, updates rejected, hash of
    /// the applied version).
    pub xds: BTreeMap<&'static str, (u64, u64, u64)>,
    /// The route configurations applied now (each gets an RDS version gauge).
    pub route_configs: Vec<String>,
    /// The EDS clusters holding endpoints now (each gets a cluster version gauge).
    pub eds_clusters: Vec<String>,
    /// Connections accepted on the capture listeners.
    pub downstream_cx_total: u64,
    /// Connections open now.
    pub downstream_cx_active: u64,
    /// HTTP requests handled.
    pub downstream_rq_total: u64,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: u64,
    /// Spans dropped (queue full or export failed).
    pub spans_dropped: u64,
    /// Spans exported.
    pub spans_exported: u64,
}

/// Envoy-named health metrics.
pub struct EnvoyMetrics {
    clusters: ClusterFamilies,
    by_cluster: Mutex<HashMap<String, Arc<ClusterStats>>>,
    server_live: IntGauge,
    server_state: IntGauge,
    server_uptime: IntGauge,
    server_memory_allocated: IntGauge,
    server_days_until_first_cert_expiring: Gauge,
    control_plane_connected_state: IntGauge,
    xds_success: BTreeMap<&'static str, IntCounter>,
    xds_rejected: BTreeMap<&'static str, IntCounter>,
    cds_version: Gauge,
    lds_version: Gauge,
    rds_version: GaugeVec,
    eds_version: GaugeVec,
    upstream_connections: UpstreamConnections,
    downstream_cx_total: IntCounter,
    downstream_cx_active: IntGauge,
    downstream_rq_total: IntCounter,
    access_log_dropped: IntCounter,
    spans_dropped: IntCounter,
    spans_exported: IntCounter,
    refresh: Mutex<()>,
}

impl std::fmt::Debug for EnvoyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvoyMetrics").finish_non_exhaustive()
    }
}

/// Where each xDS type's update counters live in Envoy's tree.
fn xds_stat(kind: &str) -> &'static str {
    match kind {
        "cds" => "envoy_cluster_manager_cds",
        "lds" => "envoy_listener_manager_lds",
        "rds" => "envoy_http_rds",
        _ => "envoy_cluster_eds",
    }
}

/// The xDS types, as the proxy names them.
pub const XDS_TYPES: [&str; 4] = ["cds", "eds", "lds", "rds"];

impl EnvoyMetrics {
    /// Create the families and register them with `registry`.
    pub fn register(registry: &Registry) -> Result<EnvoyMetrics, RegisterError> {
        let reg = |c: Box<dyn prometheus::core::Collector>| registry.register(c);
        let mut counters = BTreeMap::new();
        for name in CLUSTER_COUNTERS {
            let v = IntCounterVec::new(
                Opts::new(format!("envoy_cluster_{name}"), format!("cluster.{name}")),
                &["cluster_name"],
            )?;
            reg(Box::new(v.clone()))?;
            counters.insert(name, v);
        }
        let mut gauges = BTreeMap::new();
        for name in CLUSTER_GAUGES {
            let v = IntGaugeVec::new(
                Opts::new(format!("envoy_cluster_{name}"), format!("cluster.{name}")),
                &["cluster_name"],
            )?;
            reg(Box::new(v.clone()))?;
            gauges.insert(name, v);
        }
        let xx = IntCounterVec::new(
            Opts::new(
                "envoy_cluster_upstream_rq_xx",
                "cluster.upstream_rq_<class>xx",
            ),
            &["envoy_response_code_class", "cluster_name"],
        )?;
        reg(Box::new(xx.clone()))?;
        let int_gauge = |name: &str, help: &str| -> Result<IntGauge, RegisterError> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, RegisterError> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let days = Gauge::new(
            "envoy_server_days_until_first_cert_expiring",
            "Days until the workload certificate expires.",
        )?;
        registry.register(Box::new(days.clone()))?;
        let mut xds_success = BTreeMap::new();
        let mut xds_rejected = BTreeMap::new();
        for kind in XDS_TYPES {
            let prefix = xds_stat(kind);
            xds_success.insert(
                kind,
                counter(
                    &format!("{prefix}_update_success"),
                    &format!("{kind} updates applied"),
                )?,
            );
            xds_rejected.insert(
                kind,
                counter(
                    &format!("{prefix}_update_rejected"),
                    &format!("{kind} updates rejected (NACKed)"),
                )?,
            );
        }
        let gauge = |name: &str, help: &str| -> Result<Gauge, RegisterError> {
            let g = Gauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let gauge_vec = |name: &str, help: &str, label: &str| -> Result<GaugeVec, RegisterError> {
            let g = GaugeVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(EnvoyMetrics {
            clusters: ClusterFamilies {
                counters,
                gauges,
                xx,
            },
            by_cluster: Mutex::new(HashMap::new()),
            server_live: int_gauge("envoy_server_live", "1 when the server is live")?,
            server_state: int_gauge(
                "envoy_server_state",
                "0 live, 1 draining, 2 pre-initializing, 3 initializing",
            )?,
            server_uptime: int_gauge("envoy_server_uptime", "Seconds since the server started")?,
            server_memory_allocated: int_gauge(
                "envoy_server_memory_allocated",
                "Bytes allocated (jemalloc stats.allocated)",
            )?,
            server_days_until_first_cert_expiring: days,
            control_plane_connected_state: int_gauge(
                "envoy_control_plane_connected_state",
                "1 while connected to the control plane",
            )?,
            xds_success,
            xds_rejected,
            cds_version: gauge(
                "envoy_cluster_manager_cds_version",
                "cluster_manager.cds.version: hash of the applied CDS version",
            )?,
            lds_version: gauge(
                "envoy_listener_manager_lds_version",
                "listener_manager.lds.version: hash of the applied LDS version",
            )?,
            rds_version: gauge_vec(
                "envoy_http_rds_version",
                "http.rds.<route_config>.version: hash of the RDS version a route configuration was applied with",
                "envoy_rds_route_config",
            )?,
            eds_version: gauge_vec(
                "envoy_cluster_version",
                "cluster.<name>.version: hash of the EDS version a cluster's endpoints were applied with",
                "cluster_name",
            )?,
            upstream_connections: UpstreamConnections::default(),
            downstream_cx_total: counter(
                "envoy_listener_downstream_cx_total",
                "Connections accepted on the capture listeners",
            )?,
            downstream_cx_active: int_gauge(
                "envoy_listener_downstream_cx_active",
                "Connections open on the capture listeners",
            )?,
            downstream_rq_total: counter(
                "envoy_http_downstream_rq_total",
                "HTTP requests handled",
            )?,
            access_log_dropped: counter(
                "envoy_access_logs_dropped",
                "Access-log lines dropped because the writer fell behind",
            )?,
            spans_dropped: counter(
                "envoy_tracing_opentelemetry_spans_dropped",
                "Spans dropped: export queue full or export failed",
            )?,
            spans_exported: counter(
                "envoy_tracing_opentelemetry_spans_sent",
                "Spans exported to the collector",
            )?,
            refresh: Mutex::new(()),
        })
    }

    /// The handles of the cluster named `name` (created the first time).
    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        let mut map = self
            .by_cluster
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = map.get(name) {
            return s.clone();
        }
        let c = |stat: &str| self.clusters.counters[stat].with_label_values(&[name]);
        let g = |stat: &str| self.clusters.gauges[stat].with_label_values(&[name]);
        let xx = |class: &str| self.clusters.xx.with_label_values(&[class, name]);
        let stats = Arc::new(ClusterStats {
            upstream_rq_total: c("upstream_rq_total"),
            upstream_rq_completed: c("upstream_rq_completed"),
            upstream_rq_xx: [xx("1"), xx("2"), xx("3"), xx("4"), xx("5")],
            upstream_rq_retry: c("upstream_rq_retry"),
            upstream_rq_retry_success: c("upstream_rq_retry_success"),
            upstream_rq_retry_overflow: c("upstream_rq_retry_overflow"),
            upstream_rq_timeout: c("upstream_rq_timeout"),
            upstream_rq_per_try_timeout: c("upstream_rq_per_try_timeout"),
            upstream_rq_pending_overflow: c("upstream_rq_pending_overflow"),
            upstream_cx_total: c("upstream_cx_total"),
            upstream_cx_active: g("upstream_cx_active"),
            upstream_cx_connect_fail: c("upstream_cx_connect_fail"),
            upstream_cx_overflow: c("upstream_cx_overflow"),
            outlier_detection_ejections_active: g("outlier_detection_ejections_active"),
            outlier_detection_ejections_enforced_total: c(
                "outlier_detection_ejections_enforced_total",
            ),
            membership_healthy: g("membership_healthy"),
            membership_total: g("membership_total"),
        });
        map.insert(name.to_string(), stats.clone());
        stats
    }

    /// A new upstream connection of the cluster `stats` on descriptor `fd`: counted in its
    /// `upstream_cx_total` and, until it closes, in `upstream_cx_active`. `host` (the
    /// endpoint's live state) gets the same per-host counts.
    pub fn upstream_connection_opened(
        &self,
        fd: i32,
        stats: Arc<ClusterStats>,
        host: Option<Arc<HostState>>,
    ) {
        self.upstream_connections.opened(fd, stats, host);
    }

    /// Every cluster's handles seen so far, by name.
    pub fn clusters(&self) -> Vec<(String, Arc<ClusterStats>)> {
        let map = self
            .by_cluster
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Bring the scrape-time values up to date.
    pub fn refresh(&self, input: &HealthInput) {
        let _one_at_a_time = self.refresh.lock().unwrap_or_else(PoisonError::into_inner);
        let catch_up = |c: &IntCounter, value: u64| {
            let now = c.get();
            if value > now {
                c.inc_by(value - now);
            }
        };
        self.server_state.set(input.server_state);
        self.server_live.set(i64::from(input.server_state == 0));
        self.server_uptime.set(input.uptime_seconds);
        if let Some(bytes) = input.memory_allocated {
            self.server_memory_allocated
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        self.server_days_until_first_cert_expiring
            .set(input.days_until_cert_expiry.unwrap_or(0.0));
        self.control_plane_connected_state
            .set(i64::from(input.control_plane_connected));
        for (kind, (success, rejected, _)) in &input.xds {
            if let Some(c) = self.xds_success.get(kind) {
                catch_up(c, *success);
            }
            if let Some(c) = self.xds_rejected.get(kind) {
                catch_up(c, *rejected);
            }
        }
        let version = |kind: &str| input.xds.get(kind).map_or(0.0, |v| v.2 as f64);
        self.cds_version.set(version("cds"));
        self.lds_version.set(version("lds"));
        // Names no longer applied lose their series.
        self.rds_version.reset();
        for name in &input.route_configs {
            self.rds_version
                .with_label_values(&[name])
                .set(version("rds"));
        }
        self.eds_version.reset();
        for name in &input.eds_clusters {
            self.eds_version
                .with_label_values(&[name])
                .set(version("eds"));
        }
        self.upstream_connections.sweep();
        catch_up(&self.downstream_cx_total, input.downstream_cx_total);
        self.downstream_cx_active
            .set(i64::try_from(input.downstream_cx_active).unwrap_or(i64::MAX));
        catch_up(&self.downstream_rq_total, input.downstream_rq_total);
        catch_up(&self.access_log_dropped, input.access_log_dropped);
        catch_up(&self.spans_dropped, input.spans_dropped);
        catch_up(&self.spans_exported, input.spans_exported);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_handles_are_shared_and_counted_by_class() {
        let registry = Registry::new();
        let m = EnvoyMetrics::register(&registry).unwrap();
        let a = m.cluster("outbound|9080||reviews.default.svc.cluster.local");
        let b = m.cluster("outbound|9080||reviews.default.svc.cluster.local");
        assert!(Arc::ptr_eq(&a, &b));
        a.upstream_rq_total.inc();
        a.response(503);
        a.response(200);
        assert_eq!(b.upstream_rq_xx[4].get(), 1);
        assert_eq!(b.upstream_rq_xx[1].get(), 1);
        assert_eq!(b.upstream_rq_completed.get(), 2);
        // An odd status is not a class.
        a.response(42);
        assert_eq!(b.upstream_rq_completed.get(), 3);
    }

    #[test]
    fn refresh_catches_counters_up_and_never_back() {
        let registry = Registry::new();
        let m = EnvoyMetrics::register(&registry).unwrap();
        let mut input = HealthInput {
            downstream_cx_total: 5,
            ..HealthInput::default()
        };
        input.xds.insert("cds", (3, 1, 42));
        m.refresh(&input);
        input.downstream_cx_total = 4;
        m.refresh(&input);
        assert_eq!(m.downstream_cx_total.get(), 5);
        assert_eq!(m.xds_rejected["cds"].get(), 1);
        assert_eq!(m.server_live.get(), 1);
    }
}

//! The admin pages beyond readiness: `/stats/prometheus`, `/clusters`, `/listeners`, the
//! Envoy-like sections of `/config_dump`, `/memory` and `/logging`, each as Envoy writes it
//! where Envoy has a format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use serde_json::{json, Value};
use tracing_subscriber::EnvFilter;
use xds_client::model::{Discovery, HealthStatus, ResourceType};

use super::{AdminState, ServerState};
use crate::identity::now_unix;
use crate::metrics::HealthInput;
use crate::upstream::host::HostCounts;

/// Query parameters, in order.
pub type Query = Vec<(String, String)>;

/// Parse a query string (`a=1&b`); names and values are percent-decoded.
pub fn parse_query(q: Option<&str>) -> Query {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let Ok(b) =
                    u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
                {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// A parameter problem: answered 400 with the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Refuse parameters other than `allowed`.
pub fn only(query: &Query, allowed: &[&str]) -> Result<(), BadRequest> {
    for (k, _) in query {
        if !allowed.contains(&k.as_str()) {
            return Err(BadRequest(if allowed.is_empty() {
                format!("unknown parameter `{k}`: this endpoint takes none\n")
            } else {
                format!(
                    "unknown parameter `{k}`; expected one of: {}\n",
                    allowed.join(", ")
                )
            }));
        }
    }
    Ok(())
}

/// The value of `name`, if given.
pub fn param<'a>(query: &'a Query, name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `format=json|text` (text by default).
pub fn wants_json(query: &Query) -> Result<bool, BadRequest> {
    match param(query, "format") {
        None | Some("text") => Ok(false),
        Some("json") => Ok(true),
        Some(other) => Err(BadRequest(format!(
            "invalid format `{other}`: expected text or json\n"
        ))),
    }
}

fn version_hash(v: &str) -> u64 {
    // FNV-1a: a stable number for a version string (Envoy's *_version gauges).
    v.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    }) & ((1 << 53) - 1)
}

/// jemalloc's statistics, when jemalloc is the allocator.
pub fn memory() -> Option<BTreeMap<&'static str, u64>> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let mut m = BTreeMap::new();
    m.insert("allocated", stats::allocated::read().ok()? as u64);
    m.insert("active", stats::active::read().ok()? as u64);
    m.insert("metadata", stats::metadata::read().ok()? as u64);
    m.insert("resident", stats::resident::read().ok()? as u64);
    m.insert("mapped", stats::mapped::read().ok()? as u64);
    m.insert("retained", stats::retained::read().ok()? as u64);
    Some(m)
}

/// `/memory`: Envoy's field names where they map (`allocated`, `heap_size` as jemalloc's
/// mapped bytes, `total_physical_bytes` as resident), jemalloc's own beside them.
pub fn memory_page() -> Value {
    match memory() {
        Some(m) => json!({
            "allocated": m["allocated"].to_string(),
            "heap_size": m["mapped"].to_string(),
            "total_physical_bytes": m["resident"].to_string(),
            "pageheap_unmapped": m["retained"].to_string(),
            "jemalloc": m,
        }),
        None => json!({"error": "jemalloc statistics unavailable"}),
    }
}

/// Bring the scrape-time metrics up to date and render every metric.
pub fn prometheus(state: &AdminState) -> Vec<u8> {
    let shared = &state.shared;
    let xds = state.xds.status();
    let snapshot = shared.snapshot.load();
    let config = snapshot.config();
    let mut input = HealthInput {
        server_state: match state.state() {
            ServerState::Live => 0,
            ServerState::Draining => 1,
            ServerState::PreInitializing => 2,
            ServerState::Initializing => 3,
        },
        uptime_seconds: shared.started.elapsed().as_secs() as i64,
        memory_allocated: memory().map(|m| m["allocated"]),
        days_until_cert_expiry: shared
            .identity
            .current()
            .map(|c| (c.not_after - now_unix()) as f64 / 86_400.0),
        control_plane_connected: xds.connected,
        downstream_cx_total: shared
            .stats
            .downstream_cx_total
            .load(std::sync::atomic::Ordering::Relaxed),
        downstream_cx_active: shared.stats.active_connections(),
        downstream_rq_total: shared
            .stats
            .downstream_rq_total
            .load(std::sync::atomic::Ordering::Relaxed),
        access_log_dropped: shared.access_log.dropped(),
        route_configs: config.routes.keys().cloned().collect(),
        eds_clusters: config
            .clusters
            .iter()
            .filter(|(_, c)| {
                matches!(&c.discovery, Discovery::Eds { service_name } if config.endpoints.contains_key(service_name))
            })
            .map(|(name, _)| name.clone())
            .collect(),
        ..HealthInput::default()
    };
    if let Some(t) = &shared.tracer {
        input.spans_dropped = t.dropped.load(std::sync::atomic::Ordering::Relaxed);
        input.spans_exported = t.exported.load(std::sync::atomic::Ordering::Relaxed);
    }
    for kind in ResourceType::ALL {
        let short = kind.short_name();
        let (ok, rejected) = xds.by_type.get(short).copied().unwrap_or_default();
        let version = config.versions.get(&kind).map_or(0, |v| version_hash(v));
        input.xds.insert(short, (ok, rejected, version));
    }
    // Membership of every configured cluster.
    for (name, cluster) in &config.clusters {
        let stats = shared.metrics.envoy.cluster(name);
        let (healthy, total) = match &cluster.discovery {
            Discovery::Eds { service_name } => {
                config.endpoints.get(service_name).map_or((0, 0), |cla| {
                    let healthy = cla
                        .endpoints
                        .iter()
                        .filter(|e| e.health == HealthStatus::Healthy)
                        .count();
                    (healthy, cla.endpoints.len())
                })
            }
            Discovery::Static(cla) => (cla.endpoints.len(), cla.endpoints.len()),
            Discovery::Dns(_) => {
                let n = shared.snapshot.dns().endpoints(name).len();
                (n, n)
            }
            Discovery::OriginalDst => (0, 0),
        };
        stats.membership_healthy.set(healthy as i64);
        stats.membership_total.set(total as i64);
        stats
            .outlier_detection_ejections_active
            .set(ejected_hosts(&snapshot, name) as i64);
    }
    shared.metrics.envoy.refresh(&input);
    shared.metrics.encode()
}

/// `/listeners`: Envoy's text form (`NAME::ADDRESS` per line) or JSON.
pub fn listeners(state: &AdminState, json: bool) -> (String, bool) {
    let snapshot = state.shared.snapshot.load();
    let config = snapshot.config();
    if json {
        let items: Vec<Value> = config
            .listeners
            .values()
            .map(|l| {
                json!({
                    "name": l.name,
                    "local_address": {"socket_address": {"address": l.address.ip().to_string(), "port_value": l.address.port()}},
                    "bind_to_port": l.bind_to_port,
                    "filter_chains": l.filter_chains.len() + usize::from(l.default_filter_chain.is_some()),
                })
            })
            .collect();
        return (json!({ "listener_statuses": items }).to_string(), true);
    }
    let mut out = String::new();
    for l in config.listeners.values() {
        let _ = writeln!(out, "{}::{}", l.name, l.address);
    }
    (out, false)
}

/// `/clusters`: Envoy's text form — per cluster its settings, per endpoint
/// `CLUSTER::ADDRESS::STAT::VALUE` lines (health flags, weight, locality, counters) — or
/// JSON (`cluster_statuses`).
pub fn clusters(state: &AdminState, json: bool) -> (String, bool) {
    let snapshot = state.shared.snapshot.load();
    let config = snapshot.config();
    let envoy = &state.shared.metrics.envoy;
    let mut out = String::new();
    let mut statuses = Vec::new();
    for (name, cluster) in &config.clusters {
        let stats = envoy.cluster(name);
        let endpoints = match &cluster.discovery {
            Discovery::Eds { service_name } => config
                .endpoints
                .get(service_name)
                .map(|c| c.endpoints.clone())
                .unwrap_or_default(),
            Discovery::Static(cla) => cla.endpoints.clone(),
            Discovery::Dns(_) => state.shared.snapshot.dns().endpoints(name),
            Discovery::OriginalDst => Vec::new(),
        };
        let _ = writeln!(out, "{name}::observability_name::{name}");
        let _ = writeln!(out, "{name}::outlier::success_rate_average::-1");
        // The live state of each host (outlier ejection, counters), by address.
        let live: BTreeMap<std::net::SocketAddr, (bool, HostCounts)> = snapshot
            .cluster(name)
            .map(|c| {
                c.host_counts()
                    .into_iter()
                    .map(|(a, ejected, counts)| (a, (ejected, counts)))
                    .collect()
            })
            .unwrap_or_default();
        let ejections = live.values().filter(|(ejected, _)| *ejected).count();
        stats
            .outlier_detection_ejections_active
            .set(ejections as i64);
        let _ = writeln!(out, "{name}::outlier::ejections_active::{ejections}");
        let mut hosts = Vec::new();
        for e in &endpoints {
            let (ejected, counts) = live.get(&e.address).copied().unwrap_or_default();
            let flags = health_flags(e.health == HealthStatus::Unhealthy, ejected);
            let mut parts = e.locality.splitn(3, '/');
            let (region, zone, sub_zone) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let a = e.address;
            // Envoy's per-host counters first, then the host's settings, as Envoy lists them.
            for (stat, value) in counts.named() {
                let _ = writeln!(out, "{name}::{a}::{stat}::{value}");
            }
            for (stat, value) in [
                ("health_flags", flags.clone()),
                ("weight", e.weight.to_string()),
                ("region", region.to_string()),
                ("zone", zone.to_string()),
                ("sub_zone", sub_zone.to_string()),
                ("canary", "false".to_string()),
                ("priority", "0".to_string()),
                ("success_rate", "-1".to_string()),
                ("local_origin_success_rate", "-1".to_string()),
            ] {
                let _ = writeln!(out, "{name}::{a}::{stat}::{value}");
            }
            hosts.push(json!({
                "address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}},
                "health_status": {
                    "eds_health_status": if e.health == HealthStatus::Healthy { "HEALTHY" } else { "UNHEALTHY" },
                    "failed_outlier_check": ejected,
                },
                "stats": counts.named().iter().map(|(stat, value)| {
                    let kind = if stat.ends_with("_active") { "GAUGE" } else { "COUNTER" };
                    json!({"name": stat, "type": kind, "value": value})
                }).collect::<Vec<_>>(),
                "weight": e.weight,
                "locality": {"region": region, "zone": zone, "sub_zone": sub_zone},
            }));
        }
        let counters = [
            ("upstream_rq_total", stats.upstream_rq_total.get()),
            ("upstream_rq_retry", stats.upstream_rq_retry.get()),
            ("upstream_rq_timeout", stats.upstream_rq_timeout.get()),
            (
                "upstream_rq_pending_overflow",
                stats.upstream_rq_pending_overflow.get(),
            ),
            ("upstream_cx_total", stats.upstream_cx_total.get()),
            (
                "upstream_cx_connect_fail",
                stats.upstream_cx_connect_fail.get(),
            ),
        ];
        for (stat, value) in counters {
            let _ = writeln!(out, "{name}::{stat}::{value}");
        }
        statuses.push(json!({
            "name": name,
            "observability_name": name,
            "host_statuses": hosts,
            "stats": counters.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        }));
    }
    if json {
        (json!({ "cluster_statuses": statuses }).to_string(), true)
    } else {
        (out, false)
    }
}

/// How many of `cluster`'s hosts outlier detection has ejected now.
fn ejected_hosts(snapshot: &crate::snapshot::Snapshot, cluster: &str) -> usize {
    snapshot.cluster(cluster).map_or(0, |c| {
        c.host_states()
            .iter()
            .filter(|(_, ejected, _)| *ejected)
            .count()
    })
}

/// Envoy's `health_flags` text: `healthy`, else each failed check as `/failed_...`, outlier
/// detection first as Envoy writes them.
pub fn health_flags(eds_unhealthy: bool, outlier_ejected: bool) -> String {
    let mut flags = String::new();
    if outlier_ejected {
        flags.push_str("/failed_outlier_check");
    }
    if eds_unhealthy {
        flags.push_str("/failed_eds_health");
    }
    if flags.is_empty() {
        flags.push_str("healthy");
    }
    flags
}

/// The runtime log filter (`/logging`), reloadable.
pub struct LogControl {
    handle: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
    current: Mutex<String>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl").finish_non_exhaustive()
    }
}

/// Log levels `/logging` accepts.
pub const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl LogControl {
    /// A control over a filter whose current value is `current`, replaced through `reload`.
    pub fn new(
        current: &str,
        reload: impl Fn(EnvFilter) -> Result<(), String> + Send + Sync + 'static,
    ) -> LogControl {
        LogControl {
            handle: Box::new(reload),
            current: Mutex::new(current.to_string()),
        }
    }

    /// The current filter.
    pub fn current(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Apply `/logging`'s parameters: `level=L` sets every module; `paths=MOD:L,MOD:L` and
    /// `MOD=L` set modules (Rust targets such as `proxy::http`, `xds_client`, `pingora_core`)
    /// on top of the current filter.
    pub fn apply(&self, query: &Query) -> Result<String, BadRequest> {
        let check = |level: &str| {
            if LEVELS.contains(&level) {
                Ok(())
            } else {
                Err(BadRequest(format!(
                    "invalid level `{level}`: expected one of {}\n",
                    LEVELS.join(", ")
                )))
            }
        };
        let mut directives: Vec<(String, String)> = Vec::new();
        let mut base: Option<String> = None;
        for (k, v) in query {
            match k.as_str() {
                "level" => {
                    check(v)?;
                    base = Some(v.clone());
                }
                "paths" => {
                    for pair in v.split(',').filter(|p| !p.is_empty()) {
                        let (module, level) = pair.rsplit_once(':').ok_or_else(|| {
                            BadRequest(format!(
                                "invalid paths entry `{pair}`: expected MODULE:LEVEL\n"
                            ))
                        })?;
                        check(level)?;
                        directives.push((module.to_string(), level.to_string()));
                    }
                }
                module => {
                    check(v)?;
                    directives.push((module.to_string(), v.clone()));
                }
            }
        }
        if base.is_none() && directives.is_empty() {
            return Err(BadRequest(
                "give level=LEVEL, paths=MODULE:LEVEL,... or MODULE=LEVEL\n".into(),
            ));
        }
        for (module, _) in &directives {
            let valid = !module.is_empty()
                && module.split("::").all(|p| {
                    !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
            if !valid {
                return Err(BadRequest(format!("invalid module `{module}`\n")));
            }
        }
        let mut current = self
            .current
            .lock()
            .map_err(|_| BadRequest("poisoned".into()))?;
        let mut parts: Vec<String> = match &base {
            Some(level) => vec![level.clone()],
            None => current.split(',').map(str::to_string).collect(),
        };
        for (module, level) in directives {
            parts.retain(|p| !p.starts_with(&format!("{module}=")));
            parts.push(format!("{module}={level}"));
        }
        let filter = parts.join(",");
        let env = EnvFilter::try_new(&filter)
            .map_err(|e| BadRequest(format!("invalid filter `{filter}`: {e}\n")))?;
        (self.handle)(env).map_err(|e| BadRequest(format!("cannot reload the filter: {e}\n")))?;
        *current = filter.clone();
        Ok(filter)
    }
}

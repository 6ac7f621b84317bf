//! Process-wide counters of the data path, shown on the admin `/stats` page and read by the
//! drain logic (which waits for the active-connection gauge to reach zero).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Counters named at configuration time (per filter, per listener...): each name maps to one
/// counter for the life of the process, so a filter rebuilt by a new configuration keeps
/// counting where the previous one stopped. Lookups happen when a snapshot is built, never
/// per request: filters hold their `Arc`s.
#[derive(Debug, Default)]
pub struct Counters {
    by_name: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl Counters {
    /// The counter named `name`, created at zero the first time.
    pub fn counter(&self, name: &str) -> Arc<AtomicU64> {
        let mut map = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_string()).or_default().clone()
    }

    /// Every counter's name and value, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let map = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Counters of the capture listeners. All updates are relaxed atomics: totals only grow, the
/// one gauge (`downstream_cx_active`) is kept exact by [`ActiveConnection`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted on the capture listeners.
    pub downstream_cx_total: AtomicU64,
    /// Connections currently open on the capture listeners.
    pub downstream_cx_active: AtomicU64,
    /// Connections closed at once because no configuration had been applied yet.
    pub downstream_cx_no_config: AtomicU64,
    /// Connections closed because no filter chain matched them.
    pub downstream_cx_no_chain: AtomicU64,
    /// Connections whose application protocol was sniffed.
    pub downstream_cx_sniffed: AtomicU64,
    /// HTTP requests handled (each one gets an access-log line).
    pub downstream_rq_total: AtomicU64,
    /// HTTP requests answered by the proxy itself (404 `NR`, 503 `UH`, ...).
    pub downstream_rq_local_reply: AtomicU64,
    /// TCP proxy sessions handled.
    pub tcp_sessions_total: AtomicU64,
    /// TCP proxy sessions whose upstream connection failed.
    pub tcp_connect_fail: AtomicU64,
    /// TLS handshakes completed on filter chains (`ssl.handshake`).
    pub ssl_handshake: AtomicU64,
    /// TLS handshakes that failed on filter chains (`ssl.connection_error`).
    pub ssl_connection_error: AtomicU64,
    /// Client certificates refused for their SANs (`ssl.fail_verify_san`).
    pub ssl_fail_verify_san: AtomicU64,
    /// Clients refused for presenting no certificate (`ssl.fail_verify_no_cert`).
    pub ssl_fail_verify_no_cert: AtomicU64,
    /// TLS handshakes completed towards upstreams (`upstream_ssl.handshake`).
    pub upstream_ssl_handshake: AtomicU64,
    /// TLS connections to upstreams that failed (`upstream_ssl.connection_error`).
    pub upstream_ssl_connection_error: AtomicU64,
    /// Upstreams refused for their certificate's SANs (`upstream_ssl.fail_verify_san`).
    pub upstream_ssl_fail_verify_san: AtomicU64,
    /// Counters named by the configuration (RBAC filters' `allowed`, `denied`...).
    pub counters: Arc<Counters>,
}

impl Stats {
    /// Count a newly accepted connection; the returned guard keeps it in the active gauge
    /// until dropped.
    pub fn connection(&self) -> ActiveConnection<'_> {
        self.downstream_cx_total.fetch_add(1, Ordering::Relaxed);
        self.downstream_cx_active.fetch_add(1, Ordering::Relaxed);
        ActiveConnection { stats: self }
    }

    /// Connections currently open on the capture listeners.
    pub fn active_connections(&self) -> u64 {
        self.downstream_cx_active.load(Ordering::Relaxed)
    }

    /// Add one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in Envoy's `/stats` text form (`name: value` per line), followed by the
    /// given extra counters.
    pub fn render(&self, extra: &[(&str, u64)]) -> String {
        let own = [
            ("downstream_cx_total", &self.downstream_cx_total),
            ("downstream_cx_active", &self.downstream_cx_active),
            ("downstream_cx_no_config", &self.downstream_cx_no_config),
            (
                "downstream_cx_no_filter_chain_match",
                &self.downstream_cx_no_chain,
            ),
            ("downstream_cx_sniffed", &self.downstream_cx_sniffed),
            ("downstream_rq_total", &self.downstream_rq_total),
            ("downstream_rq_local_reply", &self.downstream_rq_local_reply),
            ("tcp.sessions_total", &self.tcp_sessions_total),
            ("tcp.upstream_cx_connect_fail", &self.tcp_connect_fail),
            ("ssl.handshake", &self.ssl_handshake),
            ("ssl.connection_error", &self.ssl_connection_error),
            ("ssl.fail_verify_san", &self.ssl_fail_verify_san),
            ("ssl.fail_verify_no_cert", &self.ssl_fail_verify_no_cert),
            ("upstream_ssl.handshake", &self.upstream_ssl_handshake),
            (
                "upstream_ssl.connection_error",
                &self.upstream_ssl_connection_error,
            ),
            (
                "upstream_ssl.fail_verify_san",
                &self.upstream_ssl_fail_verify_san,
            ),
        ];
        let mut out = String::new();
        for (name, value) in own {
            let _ = writeln!(out, "{name}: {}", value.load(Ordering::Relaxed));
        }
        for (name, value) in extra {
            let _ = writeln!(out, "{name}: {value}");
        }
        for (name, value) in self.counters.snapshot() {
            let _ = writeln!(out, "{name}: {value}");
        }
        out
    }
}

/// One open connection in [`Stats::downstream_cx_active`]; decrements the gauge on drop.
#[derive(Debug)]
pub struct ActiveConnection<'a> {
    stats: &'a Stats,
}

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        self.stats
            .downstream_cx_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

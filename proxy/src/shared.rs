//! State shared by every part of the running sidecar: the current config snapshot, the
//! workload identity, the access log, the counters and metrics, the tracer and the lifecycle
//! (draining, quit requests).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use xds_client::model::PathNormalization;

use crate::accesslog::AccessLog;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::snapshot::SnapshotCell;
use crate::stats::Stats;
use crate::trace::Tracer;

/// Shared by the capture listeners, the HTTP and TCP proxies and the admin servers.
#[derive(Debug)]
pub struct Shared {
    /// The current configuration snapshot.
    pub snapshot: SnapshotCell,
    /// The workload identity (certificate and trust bundle).
    pub identity: Arc<Identity>,
    /// The access log sink.
    pub access_log: Arc<AccessLog>,
    /// Data-path counters.
    pub stats: Stats,
    /// Draining state and quit requests.
    pub lifecycle: Lifecycle,
    /// Path normalization forced on every HTTP chain (`--path-normalization`); `None`: each
    /// chain's own.
    pub path_normalization: Option<PathNormalization>,
    /// Istio's standard metrics and the Envoy-named health metrics (one registry).
    pub metrics: Arc<Metrics>,
    /// The tracer, when tracing is on (`--tracing-otlp-endpoint`).
    pub tracer: Option<Arc<Tracer>>,
    /// When the sidecar started.
    pub started: std::time::Instant,
}

impl Shared {
    /// Shared state with an empty snapshot and no identity.
    pub fn new(access_log: Arc<AccessLog>) -> Shared {
        Shared::with_identity(access_log, Arc::new(Identity::disabled()))
    }

    /// Shared state with an empty snapshot and `identity`.
    pub fn with_identity(access_log: Arc<AccessLog>, identity: Arc<Identity>) -> Shared {
        let stats = Stats::default();
        Shared {
            snapshot: SnapshotCell::with_counters(stats.counters.clone()),
            identity,
            access_log,
            stats,
            lifecycle: Lifecycle::default(),
            path_normalization: None,
            metrics: Metrics::unlabelled(),
            tracer: None,
            started: std::time::Instant::now(),
        }
    }
}

/// Whether the sidecar is draining, and the channel through which `/quitquitquit` asks it
/// to.
#[derive(Debug)]
pub struct Lifecycle {
    draining: AtomicBool,
    quit: Notify,
    epoch: std::time::Instant,
    /// Milliseconds after `epoch` from which the capture listeners refuse new connections
    /// (`/drain_listeners`); `u64::MAX`: never.
    refuse_after_ms: AtomicU64,
    /// Whether only the inbound listener refuses them.
    inbound_only: AtomicBool,
    /// The graceful drain period of `/drain_listeners?graceful` (Envoy's `--drain-time-s`).
    drain_time: std::time::Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new(GRACEFUL_DRAIN)
    }
}

/// The default graceful drain period of `/drain_listeners?graceful` (the default of
/// `--drain-duration`): connections are still accepted (readiness already fails, responses
/// ask clients to close) before the listeners refuse new ones.
pub const GRACEFUL_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How `/drain_listeners` stops the capture listeners (Envoy's query parameters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainRequest {
    /// `?graceful`: keep accepting for the drain period first.
    pub graceful: bool,
    /// `?inboundonly`: only the inbound listener.
    pub inbound_only: bool,
    /// `?skip_exit` (with `graceful`): after the drain period, keep the listeners open.
    pub skip_exit: bool,
}

impl Lifecycle {
    /// A lifecycle whose graceful drain period is `drain_time` (`--drain-duration`).
    pub fn new(drain_time: std::time::Duration) -> Lifecycle {
        Lifecycle {
            draining: AtomicBool::new(false),
            quit: Notify::new(),
            epoch: std::time::Instant::now(),
            refuse_after_ms: AtomicU64::new(u64::MAX),
            inbound_only: AtomicBool::new(false),
            drain_time,
        }
    }

    /// True once a shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Mark the shutdown as started (readiness turns 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// `/drain_listeners`: readiness fails from now on and HTTP/1 responses carry
    /// `connection: close`; the capture listeners (or only the inbound one) refuse new
    /// connections at once, or after the drain period when `graceful`, or never when
    /// `graceful` with `skip_exit` (as Envoy). Open connections are left to finish.
    pub fn drain_listeners(&self, request: DrainRequest) {
        self.start_draining();
        if request.graceful && request.skip_exit {
            return;
        }
        let delay = if request.graceful {
            self.drain_time
        } else {
            std::time::Duration::ZERO
        };
        let at = (self.epoch.elapsed() + delay).as_millis() as u64;
        self.inbound_only
            .store(request.inbound_only, Ordering::Relaxed);
        self.refuse_after_ms.fetch_min(at, Ordering::Relaxed);
    }

    /// Whether a capture listener (`inbound` or not) refuses new connections now.
    pub fn refuses_connections(&self, inbound: bool) -> bool {
        let at = self.refuse_after_ms.load(Ordering::Relaxed);
        at != u64::MAX
            && (inbound || !self.inbound_only.load(Ordering::Relaxed))
            && self.epoch.elapsed().as_millis() as u64 >= at
    }

    /// Ask for a graceful exit (as SIGTERM does).
    pub fn request_quit(&self) {
        self.start_draining();
        self.quit.notify_one();
    }

    /// Resolves once [`Lifecycle::request_quit`] has been called (also if it was called
    /// before this future was created).
    pub async fn quit_requested(&self) {
        self.quit.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::{DrainRequest, Lifecycle};
    use std::time::Duration;

    #[test]
    fn drain_requests_refuse_as_envoy_does() {
        let graceful = |inbound_only, skip_exit| DrainRequest {
            graceful: true,
            inbound_only,
            skip_exit,
        };
        // With no drain period left, a graceful drain refuses at once...
        let l = Lifecycle::new(Duration::ZERO);
        assert!(!l.refuses_connections(true));
        l.drain_listeners(graceful(true, false));
        assert!(l.is_draining());
        assert!(l.refuses_connections(true));
        assert!(!l.refuses_connections(false), "inbound only");
        // ...unless told to keep the listeners (`skip_exit`): draining, still accepting.
        let l = Lifecycle::new(Duration::ZERO);
        l.drain_listeners(graceful(false, true));
        assert!(l.is_draining());
        assert!(!l.refuses_connections(true) && !l.refuses_connections(false));
        // The drain period is the lifecycle's; a plain drain refuses at once everywhere.
        let l = Lifecycle::new(Duration::from_secs(60));
        l.drain_listeners(graceful(false, false));
        assert!(!l.refuses_connections(true));
        l.drain_listeners(DrainRequest::default());
        assert!(l.refuses_connections(true) && l.refuses_connections(false));
    }
}

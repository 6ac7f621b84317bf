//! State shared by every part of the running sidecar: the current config snapshot, the
//! workload identity, the access log, the counters and the lifecycle (draining, quit requests).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use xds_client::model::PathNormalization;

use crate::accesslog::AccessLog;
use crate::identity::Identity;
use crate::snapshot::SnapshotCell;
use crate::stats::Stats;

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
        }
    }
}

/// Whether the sidecar is draining, and the channel through which `/quitquitquit` asks it
/// to.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    quit: Notify,
}

impl Lifecycle {
    /// True once a shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Mark the shutdown as started (readiness turns 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
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

//! Auto-registered workloads: the proxies connected now, and those whose connection ended
//! less than a grace period ago, as Istio keeps an auto-registered WorkloadEntry for
//! `PILOT_WORKLOAD_ENTRY_GRACE_PERIOD` after its proxy disconnects. A proxy that reconnects
//! within the grace period (a network blip, a control plane restart) stays an endpoint
//! throughout, instead of vanishing from every other proxy's EDS until it is back.
//!
//! With a state file, the registrations also survive a restart of the control plane: the file
//! is rewritten (atomically) whenever they change, and read at start, each workload then
//! counting as just disconnected. Without it, a restarted control plane knows a workload
//! only once its proxy has reconnected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{ConnectionId, ProxyInfo};

/// Istio's default `PILOT_WORKLOAD_ENTRY_GRACE_PERIOD`.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// The state file's name in the control plane's state directory.
pub const STATE_FILE: &str = "workloads.json";

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a JSON list of workloads.
    #[error("{path} is not a list of workloads: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// The registered workloads and their lifetimes.
#[derive(Debug)]
pub struct Workloads {
    live: BTreeMap<ConnectionId, Arc<ProxyInfo>>,
    /// Gone, with the time they stop counting.
    departed: Vec<(Arc<ProxyInfo>, Instant)>,
    grace: Duration,
    state_file: Option<PathBuf>,
}

impl Workloads {
    /// No workloads; nothing kept across restarts.
    pub fn in_memory(grace: Duration) -> Workloads {
        Workloads {
            live: BTreeMap::new(),
            departed: Vec::new(),
            grace,
            state_file: None,
        }
    }

    /// The workloads of `state_file` (none if it does not exist), each kept for `grace`
    /// unless its proxy reconnects; the file is kept up to date from then on.
    pub fn persistent(grace: Duration, state_file: PathBuf) -> Result<Workloads, StateError> {
        let saved = load(&state_file)?;
        let until = Instant::now() + grace;
        Ok(Workloads {
            live: BTreeMap::new(),
            departed: saved.into_iter().map(|p| (Arc::new(p), until)).collect(),
            grace,
            state_file: Some(state_file),
        })
    }

    /// Records a connection; it replaces a departed registration of the same node.
    pub fn connect(&mut self, conn: ConnectionId, proxy: Arc<ProxyInfo>) {
        self.departed.retain(|(p, _)| p.id != proxy.id);
        self.live.insert(conn, proxy);
    }

    /// Records that `conn` ended at `now`: its workload counts until `now + grace`, unless
    /// the same node is connected on another stream.
    pub fn disconnect(&mut self, conn: ConnectionId, now: Instant) {
        let Some(proxy) = self.live.remove(&conn) else {
            return;
        };
        if self.grace.is_zero() || self.live.values().any(|p| p.id == proxy.id) {
            return;
        }
        self.departed.retain(|(p, _)| p.id != proxy.id);
        self.departed.push((proxy, now + self.grace));
    }

    /// Forgets the departed workloads whose grace period is over at `now`; true if any was.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.departed.len();
        self.departed.retain(|(_, until)| *until > now);
        self.departed.len() != before
    }

    /// When the next departed workload expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.departed.iter().map(|(_, until)| *until).min()
    }

    /// Every registered workload: the connected ones, then the departed ones.
    pub fn all(&self) -> impl Iterator<Item = &ProxyInfo> {
        self.live
            .values()
            .chain(self.departed.iter().map(|(p, _)| p))
            .map(|p| &**p)
    }

    /// Writes every registered workload to the state file, if there is one.
    pub fn save(&self) -> Result<(), StateError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let all: Vec<&ProxyInfo> = self.all().collect();
        // Serializing plain strings, maps and addresses cannot fail.
        let body = serde_json::to_vec_pretty(&all).unwrap_or_default();
        let tmp = path.with_extension("json.tmp");
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::write(&tmp, body).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("rename to", path))
    }
}

fn load(path: &Path) -> Result<Vec<ProxyInfo>, StateError> {
    let body = match std::fs::read(path) {
        Ok(body) => body,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&body).map_err(|source| StateError::Format {
        path: path.to_path_buf(),
        source,
    })
}

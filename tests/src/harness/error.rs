//! The harness's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building, running or tearing down a topology.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A host command (`ip`, `mesh-proxy init`, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, for the reader.
        command: String,
        /// How it exited.
        status: String,
        /// What it wrote on stderr (trimmed).
        stderr: String,
    },
    /// A command could not be started at all.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error from `fork`/`exec`.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "create directory", ...).
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A workspace binary is not built.
    #[error("binary `{name}` not found (looked at {looked}): run `cargo build --workspace --bins` first (./scripts/test.sh does)")]
    MissingBinary {
        /// The binary (`mesh-proxy`, ...).
        name: String,
        /// The paths looked at, comma separated.
        looked: String,
    },
    /// Every test slot (subnet) is held by a live process.
    #[error("no free test slot: all {0} subnets are in use")]
    NoFreeSlot(u8),
    /// A pod or service name is not usable (not a DNS label, too long, or taken).
    #[error("invalid name `{name}`: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The topology's subnet has no address left for another pod.
    #[error("topology is full: no pod address left in its /24")]
    SubnetFull,
    /// A wait ran out of time.
    #[error("timed out after {waited:?} waiting for {what}{detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// Extra context (the last error seen, a log tail), possibly empty.
        detail: String,
    },
    /// A process that should be running has exited.
    #[error("process `{name}` exited ({status}); last log lines:\n{log_tail}")]
    ProcessExited {
        /// The process's harness name (`POD/NAME` or `host/NAME`).
        name: String,
        /// How it exited.
        status: String,
        /// The end of its logs.
        log_tail: String,
    },
    /// A command run with `exec` finished unsuccessfully where success was required.
    #[error("`{command}` exited {status}\nstdout: {stdout}\nstderr: {stderr}")]
    ExecFailed {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// Its stdout (lossy UTF-8).
        stdout: String,
        /// Its stderr (lossy UTF-8).
        stderr: String,
    },
    /// Sending a signal failed for a reason other than the process being gone.
    #[error("cannot signal process {pid}: {source}")]
    Signal {
        /// The process (group) id.
        pid: i32,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// An HTTP request made from the host failed or got an unparsable answer.
    #[error("HTTP GET http://{addr}{path}: {reason}")]
    Http {
        /// The server address.
        addr: std::net::SocketAddr,
        /// The request path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// [`Process::start_again`](super::Process::start_again) on a process that still runs.
    #[error("process `{0}` is still running")]
    StillRunning(String),
    /// The topology was already torn down.
    #[error("topology {0} is torn down")]
    TornDown(String),
}

/// The harness's result type.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

impl HarnessError {
    /// An [`HarnessError::Io`] for `action` on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| HarnessError::Io {
            action,
            path,
            source,
        }
    }
}

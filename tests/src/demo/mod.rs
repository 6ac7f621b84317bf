//! The demo mesh (`mesh-demo`): the Bookinfo-like services of `conf/demo/` on the end-to-end
//! harness's topology, with traffic sent through it and a summary of who answered.
//!
//! What [`run`] does, in order:
//!
//! 1. reads the config directory ([`DemoConfig::load`]): its Services (name, namespace,
//!    ClusterIP, ports, selector) and, from their `mesh-demo/versions` and
//!    `mesh-demo/service-account` annotations, the workloads behind them;
//! 2. builds a [`Topology`](crate::harness::Topology) named after the run (logs in
//!    `target/e2e-logs/NAME/`), copies the config files into its config directory and makes
//!    every pod's `/etc/hosts` resolve the Services to their ClusterIPs;
//! 3. starts the control plane on that directory and reports the objects it rejected;
//! 4. creates one injected pod per workload (`reviews-v2`: labels `app: reviews`,
//!    `version: v2`) running `mesh-echo --name reviews --version v2 --http-port 9080`, and an
//!    injected `client` pod;
//! 5. waits until every sidecar is ready and, in the control plane's `/debug/registryz` and
//!    `/debug/syncz`, every Service has its endpoints and every sidecar has acknowledged what
//!    it was sent;
//! 6. sends `requests` HTTP requests from the client to each Service by name and counts the
//!    status codes and who answered;
//! 7. prints the [summary](Summary) and, unless `no_wait`, waits for `SIGINT` or `SIGTERM`;
//!    then removes everything (the harness's teardown).
//!
//! A problem found on the way (a rejected object, a sidecar that never synced, a request that
//! failed, a version that never answered) does not stop the demo: it is listed in the
//! summary and makes [`Outcome::problems`] non-empty. A failure to build the mesh (a process
//! that exits, a sidecar that never gets ready) is a [`DemoError`].

#![forbid(unsafe_code)]

mod config;
mod mesh;
mod signals;
mod summary;
mod traffic;

use std::path::PathBuf;
use std::time::Duration;

pub use config::{DemoConfig, DemoService, Workload, ANNOTATION_SA, ANNOTATION_VERSIONS};
pub use mesh::{DemoMesh, CLIENT_POD};
pub use signals::Signals;
pub use summary::Summary;
pub use traffic::Tally;

use crate::harness::HarnessError;

/// How long [`run`] waits for every sidecar to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long [`run`] waits for the control plane to show every sidecar in sync.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything that stops the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The harness could not build or drive the topology.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// A file or directory of the config directory could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid YAML.
    #[error("{}: invalid YAML: {source}", file.display())]
    Yaml {
        /// The file.
        file: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_norway::Error,
    },
    /// A Service the demo cannot run.
    #[error("{}: Service {service}: {field}: {reason}", file.display())]
    Service {
        /// The file.
        file: PathBuf,
        /// `NAMESPACE/NAME`.
        service: String,
        /// The field, e.g. `spec.clusterIP`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The config directory has no Service.
    #[error("{}: no Service found: nothing to run", dir.display())]
    NoServices {
        /// The directory.
        dir: PathBuf,
    },
    /// A debug endpoint of the control plane answered something unexpected.
    #[error("control plane {path}: {reason}")]
    Debug {
        /// The endpoint, e.g. `/debug/syncz`.
        path: &'static str,
        /// What was wrong with the answer.
        reason: String,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// `SIGINT` or `SIGTERM` arrived before the summary (everything is removed before this
    /// is returned).
    #[error("interrupted by {0} while starting; removing everything")]
    Interrupted(&'static str),
}

/// What [`run`] is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config directory (`conf/demo`).
    pub config_dir: PathBuf,
    /// Requests sent to each Service.
    pub requests: u32,
    /// Tear down right after the summary instead of waiting for a signal.
    pub no_wait: bool,
    /// The run's name: logs go to `target/e2e-logs/NAME/`.
    pub name: String,
}

/// How a demo run ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// What went wrong in the mesh (empty when every request got a 200 from the expected
    /// workloads).
    pub problems: Vec<String>,
    /// Problems of the teardown (empty when everything was removed).
    pub leftovers: Vec<String>,
}

/// Builds the demo mesh, sends traffic, prints the summary on stdout, waits for a signal
/// (unless [`Options::no_wait`]) and removes everything. Progress goes to stderr.
pub fn run(opts: &Options, signals: &Signals) -> Result<Outcome, DemoError> {
    let config = DemoConfig::load(&opts.config_dir)?;
    let mut mesh = DemoMesh::build(&opts.name, &config, signals)?;
    let mut problems = mesh.problems().to_vec();
    let tallies = match mesh.send_traffic(opts.requests, signals) {
        Ok(tallies) => tallies,
        Err(e @ DemoError::Interrupted(_)) => {
            eprintln!("mesh-demo: {e}");
            mesh.teardown();
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    for tally in &tallies {
        problems.extend(tally.problems());
    }
    let summary = Summary {
        mesh: &mesh,
        tallies: &tallies,
        problems: &problems,
        waiting: !opts.no_wait,
    };
    println!("{summary}");
    if !opts.no_wait {
        let sig = signals.wait();
        eprintln!("mesh-demo: {sig}: removing everything");
    }
    let leftovers = mesh.teardown();
    Ok(Outcome {
        problems,
        leftovers,
    })
}

//! The topology's control plane: `mesh-controlplane` on the host, bound to the bridge's
//! address, reading the topology's config directory; start, readiness, stop, kill, restart.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::process::ExitStatus;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::cmd::wait_until;
use super::error::Result;
use super::http::{http_get, HttpResponse};
use super::paths::bin;
use super::pod::expect_200;
use super::process::{Launch, Process};
use super::topology::{Topology, TopologyInner};

/// xDS over plaintext gRPC.
pub const XDS_PORT: u16 = 15010;
/// xDS and CA over TLS.
pub const XDS_TLS_PORT: u16 = 15012;
/// The control plane's own metrics.
pub const MONITORING_PORT: u16 = 15014;
/// The injection webhook.
pub const WEBHOOK_PORT: u16 = 15017;
/// Debug endpoints (`/debug/syncz`, `/ready`).
pub const DEBUG_PORT: u16 = 8080;
/// How long [`Topology::start_control_plane`] waits for `/ready`.
pub const CONTROL_PLANE_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle on a topology's control plane (running or not). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub(crate) topo: Arc<TopologyInner>,
}

impl Topology {
    /// The control plane handle (nothing is started).
    pub fn control_plane(&self) -> ControlPlane {
        ControlPlane {
            topo: Arc::clone(&self.inner),
        }
    }

    /// Starts `mesh-controlplane` with no extra flags and waits for its `/ready`.
    pub fn start_control_plane(&self) -> Result<ControlPlane> {
        let cp = self.control_plane();
        cp.start(&[])?;
        cp.wait_ready(CONTROL_PLANE_READY_TIMEOUT)?;
        Ok(cp)
    }

    /// Where pods reach xDS: `10.211.N.1:15010`.
    pub fn xds_address(&self) -> SocketAddr {
        self.inner.host_addr(XDS_PORT)
    }

    /// Waits until the control plane (if started) is ready and every injected pod's sidecar
    /// answers 200 on `/healthz/ready`, all within `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        let cp = self.control_plane();
        if cp.process().is_some() {
            cp.wait_ready(left())?;
        }
        for pod in self.pods() {
            if pod.proxy().is_some() {
                pod.wait_proxy_ready(left())?;
            }
        }
        Ok(())
    }
}

/// The `--help` output of the control plane binary (read once per process; empty if it
/// cannot be run, in which case starting it reports the problem).
fn help_text(program: &Path) -> String {
    static HELP: OnceLock<String> = OnceLock::new();
    HELP.get_or_init(|| {
        Command::new(program)
            .arg("--help")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    })
    .clone()
}

impl ControlPlane {
    /// `10.211.N.1:15010`.
    pub fn xds_address(&self) -> SocketAddr {
        self.topo.host_addr(XDS_PORT)
    }

    /// `10.211.N.1:8080`.
    pub fn debug_address(&self) -> SocketAddr {
        self.topo.host_addr(DEBUG_PORT)
    }

    /// Starts `mesh-controlplane --config-dir DIR --xds-addr H:15010 --debug-addr H:8080`
    /// (`H` the bridge address), plus `--xds-tls-addr`, `--monitoring-addr` and
    /// `--webhook-addr` on `H` for those of them its `--help` lists (listeners that default
    /// to `0.0.0.0` would collide between parallel topologies) and `--state-dir` in the
    /// topology's state directory if listed (so that a restart keeps the registered
    /// workloads, as istiod's WorkloadEntries survive it), then `extra_args`, as process
    /// `host/controlplane`. Does not wait; see [`ControlPlane::wait_ready`]. If one is running
    /// already it is stopped first.
    pub fn start(&self, extra_args: &[&str]) -> Result<Process> {
        if let Some(old) = self.process() {
            old.stop();
        }
        let h = self.topo.host_ip();
        let program = bin("mesh-controlplane");
        let help = help_text(&program);
        let mut argv: Vec<OsString> = vec![program.into(), "--config-dir".into()];
        argv.push(self.topo.config_dir.clone().into());
        for (flag, port, always) in [
            ("--xds-addr", XDS_PORT, true),
            ("--xds-tls-addr", XDS_TLS_PORT, false),
            ("--monitoring-addr", MONITORING_PORT, false),
            ("--webhook-addr", WEBHOOK_PORT, false),
            ("--debug-addr", DEBUG_PORT, true),
        ] {
            if always || help.contains(flag) {
                argv.push(flag.into());
                argv.push(format!("{h}:{port}").into());
            }
        }
        if help.contains("--state-dir") {
            // Kept across restarts of this control plane, removed with the topology.
            argv.push("--state-dir".into());
            argv.push(self.topo.state_dir.join("controlplane").into());
        }
        argv.extend(extra_args.iter().map(OsString::from));
        let ca_dir = extra_args
            .iter()
            .position(|a| *a == "--ca-dir")
            .and_then(|i| extra_args.get(i + 1))
            .map(std::path::PathBuf::from);
        self.topo.lock().ca_dir = ca_dir;
        let launch = Launch {
            netns: None,
            user: None,
            argv,
            env: vec![("RUST_LOG".into(), "info".into())],
            cwd: Some(self.topo.state_dir.clone()),
            slot: self.topo.slot_n,
        };
        let proc = self.topo.start_process("host", "controlplane", launch)?;
        self.topo.lock().control_plane = Some(proc.clone());
        Ok(proc)
    }

    /// The running (or last) control plane process.
    pub fn process(&self) -> Option<Process> {
        self.topo.lock().control_plane.clone()
    }

    /// Waits until `GET /ready` on the debug address answers 200 (fails at once if the
    /// process exits), then writes the bootstrap tokens injected pods still lack (the CA
    /// exists by then).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let proc = self.process();
        let addr = self.debug_address();
        wait_until(
            &format!("the control plane to be ready at {addr}"),
            timeout,
            Duration::from_millis(100),
            || {
                if let Some(p) = &proc {
                    p.check_running()?;
                }
                expect_200(addr, "/ready")
            },
        )?;
        self.topo.write_tokens()
    }

    /// `10.211.N.1:15014`.
    pub fn monitoring_address(&self) -> SocketAddr {
        self.topo.host_addr(MONITORING_PORT)
    }

    /// The body of `/metrics` on the monitoring address (Prometheus text).
    pub fn metrics(&self) -> Result<String> {
        Ok(http_get(
            self.monitoring_address(),
            "/metrics",
            Duration::from_secs(5),
        )?
        .body)
    }

    /// `GET PATH` on the debug address.
    pub fn debug_get(&self, path: &str) -> Result<HttpResponse> {
        http_get(self.debug_address(), path, Duration::from_secs(5))
    }

    /// The body of `/debug/syncz` (each proxy's acked versions).
    pub fn syncz(&self) -> Result<String> {
        Ok(self.debug_get("/debug/syncz")?.body)
    }

    /// Stops it gracefully (`SIGTERM`, then `SIGKILL` after the grace period).
    pub fn stop(&self) -> Option<ExitStatus> {
        self.process().and_then(|p| p.stop())
    }

    /// Kills it at once (a crash).
    pub fn kill(&self) -> Option<ExitStatus> {
        self.process().and_then(|p| p.kill())
    }

    /// Stops it and starts it again with the same flags, then waits for `/ready`.
    pub fn restart(&self) -> Result<()> {
        match self.process() {
            Some(p) => p.restart()?,
            None => {
                self.start(&[])?;
            }
        }
        self.wait_ready(CONTROL_PLANE_READY_TIMEOUT)
    }

    /// Starts it again after [`ControlPlane::kill`] or [`ControlPlane::stop`] with the same
    /// flags, then waits for `/ready`.
    pub fn start_again(&self) -> Result<()> {
        match self.process() {
            Some(p) => p.start_again()?,
            None => {
                self.start(&[])?;
            }
        }
        self.wait_ready(CONTROL_PLANE_READY_TIMEOUT)
    }
}

//! gRPC's proxyless xDS client in a pod: Python `grpcio` with its `xds:///` resolver, fed by
//! the topology's control plane through a bootstrap file (`GRPC_XDS_BOOTSTRAP`), calling
//! `mesh-echo`'s EchoService directly (no sidecar in the path). The client is
//! `tests/peers/grpc_xds_client.py`; see its header for what it prints.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::cmd::ExecOutput;
use super::envoy::{node_metadata, sidecar_node_id};
use super::error::{HarnessError, Result};
use super::paths::workspace_dir;
use super::peers;
use super::pod::{Cmd, Pod};
use super::process::Process;

/// The bootstrap file's name in the pod's work directory.
pub const GRPC_BOOTSTRAP_FILE: &str = "grpc-bootstrap.json";
/// The client script, relative to the workspace root.
pub const GRPC_CLIENT_SCRIPT: &str = "tests/peers/grpc_xds_client.py";

/// The gRPC xDS bootstrap of a proxyless client in `pod` reaching xDS at `xds`, as
/// istio-agent writes it for proxyless pods: one plaintext xDS server with
/// `server_features: ["xds_v3"]`, the node id of a sidecar in that pod and Istio's metadata
/// with `GENERATOR: grpc` (what makes the control plane serve it istiod's proxyless shape).
pub fn grpc_bootstrap(pod: &Pod, xds: SocketAddr) -> Value {
    let mut meta = node_metadata(pod, "default");
    meta.insert("GENERATOR".into(), "grpc".into());
    json!({
        "xds_servers": [{
            "server_uri": xds.to_string(),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"]
        }],
        "node": {
            "id": sidecar_node_id(pod),
            "cluster": format!("{}.{}", pod.name(), pod.namespace()),
            "locality": {},
            "metadata": meta
        },
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s"
    })
}

/// A run of the proxyless client in a pod, made by [`Pod::grpc_xds_client`].
#[derive(Debug, Clone)]
pub struct GrpcXdsClient {
    cmd: Cmd,
}

impl GrpcXdsClient {
    /// Appends client arguments (`--timeout 5`, `--message m`...).
    pub fn args<S: Into<OsString>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd = self.cmd.args(args);
        self
    }

    /// Makes `n` calls (`--calls N --interval 0`) and returns the client's JSON lines; a
    /// client that exits non-zero (a failed call) is not an error here: read each line's `ok`.
    pub fn calls(self, n: u32) -> Result<(ExecOutput, Vec<Value>)> {
        let out = self
            .cmd
            .args(["--calls".to_owned(), n.to_string()])
            .args(["--interval", "0"])
            .timeout(Duration::from_secs(60))
            .exec()?;
        let lines = json_lines(&out.stdout);
        Ok((out, lines))
    }

    /// Starts the client in the background as process `name`, calling every `interval` for
    /// `duration` on one channel (so that it must follow xDS updates); its JSON lines go to
    /// the process's stdout log (read them with [`json_lines`] on [`Process::stdout`]).
    pub fn spawn(self, name: &str, duration: Duration, interval: Duration) -> Result<Process> {
        self.cmd
            .args([
                "--duration".to_owned(),
                format!("{:.3}", duration.as_secs_f64()),
            ])
            .args([
                "--interval".to_owned(),
                format!("{:.3}", interval.as_secs_f64()),
            ])
            .spawn(name)
    }
}

/// Every line of `text` that is a JSON value (others, such as gRPC's own logs, are skipped).
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect()
}

impl Pod {
    /// The proxyless gRPC client for `target` (e.g. `xds:///reviews.default.svc.cluster.local:7070`)
    /// in this pod, as root: its bootstrap ([`grpc_bootstrap`], reaching the topology's
    /// control plane on the bridge address) written to `<work dir>/grpc-bootstrap.json`
    /// and named by `GRPC_XDS_BOOTSTRAP`. Fails when Python's grpcio is not installed (see
    /// [`peers::grpc_python`]). The pod should have no sidecar (proxyless), or its capture
    /// would redirect the client's calls.
    pub fn grpc_xds_client(&self, target: &str) -> Result<GrpcXdsClient> {
        let (python, _version) = peers::grpc_python().map_err(|why| HarnessError::Spawn {
            command: "python3 (grpcio)".to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, why.to_owned()),
        })?;
        let xds = self.topo.host_addr(super::controlplane::XDS_PORT);
        let bootstrap: PathBuf = self.work_dir().join(GRPC_BOOTSTRAP_FILE);
        let text = serde_json::to_string_pretty(&grpc_bootstrap(self, xds)).unwrap_or_default();
        std::fs::write(&bootstrap, text).map_err(HarnessError::io("write", &bootstrap))?;
        let cmd = self
            .command([python.as_os_str()])
            .arg("-u")
            .arg(workspace_dir().join(GRPC_CLIENT_SCRIPT))
            .arg(target)
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        Ok(GrpcXdsClient { cmd })
    }
}

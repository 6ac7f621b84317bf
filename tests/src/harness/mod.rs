//! The end-to-end harness: pods as network namespaces on a per-test bridge, processes in
//! them, the control plane on the host, and cleanup of all of it.
//!
//! ```no_run
//! use std::time::Duration;
//! use mesh_tests::harness::{EchoSpec, ServiceSpec, Topology};
//!
//! fn reviews_answer() -> anyhow::Result<()> {
//!     mesh_tests::skip_unless_netns!();
//!     let topo = Topology::new("reviews_answer")?;
//!     topo.add_namespace("default")?;
//!     topo.add_service(&ServiceSpec::new("reviews", "default").port("http", 9080, 9080).selector("app", "reviews"))?;
//!     topo.start_control_plane()?;
//!     let reviews = topo.injected_pod("reviews-v1", "default", &[("app", "reviews"), ("version", "v1")])?;
//!     reviews.spawn_echo(&EchoSpec::new("reviews", "v1").http(9080))?;
//!     let client = topo.injected_pod("client", "default", &[("app", "client")])?;
//!     topo.wait_ready(Duration::from_secs(30))?;
//!     let body = client.curl(&["http://reviews:9080/"])?.ok()?;
//!     assert!(body.contains("reviews"));
//!     Ok(())
//! }
//! ```
//!
//! Addresses: topology N (a slot held across processes, see [`sweep`]) owns `10.211.N.0/24`;
//! the bridge `mtbrN` holds `.1`, pods get `.2` on. The host's `ip_forward` is left as it is
//! and pods have no default route, so nothing leaves a topology's subnet. A rule
//! `FORWARD -i mtbrN -o mtbrN -j ACCEPT` lets pods reach each other across the bridge on hosts
//! whose FORWARD policy is DROP (Docker's) while bridged traffic is filtered
//! (`bridge-nf-call-iptables=1`); it goes with the bridge.

#![forbid(unsafe_code)]

mod cmd;
mod config;
mod controlplane;
mod envoy;
mod error;
mod grpc_xds;
mod http;
mod identity;
mod paths;
mod peers;
mod pod;
mod process;
mod slot;
mod topology;

use std::process::Command;
use std::sync::OnceLock;

pub use cmd::{wait_until, ExecOutput};
pub use config::{endpoints_yaml, namespace_yaml, ServicePort, ServiceSpec};
pub use controlplane::{
    ControlPlane, CONTROL_PLANE_READY_TIMEOUT, DEBUG_PORT, MONITORING_PORT, WEBHOOK_PORT, XDS_PORT,
    XDS_TLS_PORT,
};
pub use envoy::{
    envoy_bootstrap, node_metadata, sidecar_node_id, EnvoyOptions, ENVOY_BOOTSTRAP_FILE,
    ENVOY_ISTIO_VERSION, SDS_SOCKET, TLS_MODE_LABEL,
};
pub use error::{HarnessError, Result};
pub use grpc_xds::{
    grpc_bootstrap, json_lines, GrpcXdsClient, GRPC_BOOTSTRAP_FILE, GRPC_CLIENT_SCRIPT,
};
pub use http::{http_get, HttpResponse};
pub use identity::create_token;
pub use paths::{bin, find_bin, target_dir, workspace_dir};
pub use peers::{
    envoy, grpc_python, peer_skip_reason, should_skip_peer, Peer, ENVOY_ENV, ENVOY_VENV,
    GRPC_PYTHON_ENV, GRPC_VENV, REQUIRE_PEERS_ENV,
};
pub use pod::{
    Cmd, EchoSpec, Pod, ProxyOptions, ADMIN_PORT, EXEC_TIMEOUT, ISTIO_INIT_ARGS, READINESS_PORT,
};
pub use process::{Process, PROXY_UID, STOP_GRACE};
pub use slot::{sweep, FIRST_SLOT, LAST_SLOT, SLOT_ENV, STATE_ROOT};
pub use topology::{Resources, Topology, CLUSTER_DOMAIN, CLUSTER_IP_RANGE, TEST_NET_PREFIX};

/// Environment variable: when set to `1`, a missing privilege makes
/// [`skip_unless_netns!`](crate::skip_unless_netns) fail the test instead of skipping it
/// (`scripts/test.sh` sets it when running as root, so CI cannot pass by skipping).
pub const REQUIRE_ENV: &str = "MESH_TESTS_REQUIRE_NETNS";

/// Why network-namespace tests cannot run here (not root, or `ip netns` does not work), or
/// `None` when they can. Checked once per process by creating and deleting a namespace.
pub fn skip_reason() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON.get_or_init(probe).clone()
}

fn probe() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".to_owned());
    }
    let name = format!("mtprobe-{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &name]).output() {
        Err(e) => Some(format!("`ip` is not available: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => {
            // A failure here leaves a harmless empty namespace named after this process.
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            None
        }
    }
}

/// What a skipped test returns: `()` or `Ok(())`.
pub trait SkipReturn {
    /// The value a skipped test returns.
    fn skipped() -> Self;
}

impl SkipReturn for () {
    fn skipped() -> Self {}
}

impl<E> SkipReturn for std::result::Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
}

/// Decides at run time whether the calling test skips: prints `SKIPPED: <test>: <reason>`
/// and returns true when [`skip_reason`] has one; panics instead when [`REQUIRE_ENV`] is `1`.
/// The test is named after the current thread (libtest names it after the test), else
/// `fallback`.
pub fn should_skip(fallback: &str) -> bool {
    let Some(reason) = skip_reason() else {
        return false;
    };
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or(fallback);
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{test}: network-namespace tests are required ({REQUIRE_ENV}=1) but cannot run: {reason}");
    }
    println!("SKIPPED: {test}: {reason}");
    true
}

/// At the top of an end-to-end test: returns early (printing `SKIPPED: ...`) when the test
/// cannot create network namespaces (not root, no `ip netns`). Works in tests returning `()`
/// and `Result<(), E>`.
#[macro_export]
macro_rules! skip_unless_netns {
    () => {
        if $crate::harness::should_skip(module_path!()) {
            return $crate::harness::SkipReturn::skipped();
        }
    };
}

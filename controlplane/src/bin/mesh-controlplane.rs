//! `mesh-controlplane`: the istiod-like control plane. Reads the config directory, serves
//! ADS on `--xds-addr` and the debug endpoints on `--debug-addr`; SIGTERM or SIGINT stops it.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use controlplane::app::{ControlPlane, Options};
use controlplane::watch::Debounce;
use tokio::signal::unix::{signal, SignalKind};

/// The mesh's control plane: Kubernetes-style YAML in, Envoy v3 xDS out.
#[derive(Debug, Parser)]
#[command(name = "mesh-controlplane", version)]
struct Args {
    /// Directory of Kubernetes-style YAML (Services, Endpoints, EndpointSlices, Namespaces),
    /// read recursively and reloaded on change.
    #[arg(long, env = "MESH_CONFIG_DIR")]
    config_dir: PathBuf,
    /// ADS over plaintext gRPC.
    #[arg(long, default_value = "0.0.0.0:15010")]
    xds_addr: SocketAddr,
    /// Debug HTTP server: /debug/syncz, /debug/configz, /ready.
    #[arg(long, default_value = "127.0.0.1:8080")]
    debug_addr: SocketAddr,
    /// Cluster DNS domain of Service host names (NAME.NS.svc.DOMAIN).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// xDS and CA over TLS. Accepted for forward compatibility; NOT served yet (the TLS
    /// server and the CA come in a later version).
    #[arg(long, default_value = "0.0.0.0:15012")]
    xds_tls_addr: SocketAddr,
    /// Prometheus metrics at /metrics. Accepted for forward compatibility; NOT served yet.
    #[arg(long, default_value = "0.0.0.0:15014")]
    monitoring_addr: SocketAddr,
    /// Sidecar injection webhook (HTTPS). Accepted for forward compatibility; NOT served yet.
    #[arg(long, default_value = "0.0.0.0:15017")]
    webhook_addr: SocketAddr,
    /// Directory for state kept across restarts (the auto-registered workloads, so that a
    /// restarted control plane still knows every endpoint while the proxies reconnect).
    /// Created if missing. Without it nothing is kept.
    #[arg(long, env = "MESH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// How long a workload stays an endpoint after its proxy disconnects (Istio's
    /// PILOT_WORKLOAD_ENTRY_GRACE_PERIOD), e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    workload_grace_period: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    tracing::info!(
        xds_tls_addr = %args.xds_tls_addr,
        monitoring_addr = %args.monitoring_addr,
        webhook_addr = %args.webhook_addr,
        "TLS xDS/CA, monitoring and webhook servers are not implemented yet: not listening there"
    );
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let cp = ControlPlane::start(Options {
        config_dir: args.config_dir,
        xds_addr: args.xds_addr,
        debug_addr: args.debug_addr,
        cluster_domain: args.cluster_domain,
        debounce: Debounce::default(),
        workload_grace: args.workload_grace_period,
        state_dir: args.state_dir,
    })
    .await
    .context("starting the control plane")?;
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "shutting down");
    if tokio::time::timeout(Duration::from_secs(5), cp.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown took longer than 5 s; exiting anyway");
    }
    Ok(())
}

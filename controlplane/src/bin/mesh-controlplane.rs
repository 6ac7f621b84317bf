//! `mesh-controlplane`: the istiod-like control plane. Reads the config directory, serves
//! ADS and the CA on `--xds-addr` (plaintext) and `--xds-tls-addr` (TLS), the debug endpoints
//! on `--debug-addr`; SIGTERM or SIGINT stops it.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use controlplane::app::{ControlPlane, Options};
use controlplane::authz::PathNormalization;
use controlplane::ca::service::CertPolicy;
use controlplane::ca::MIN_WORKLOAD_TTL;
use controlplane::watch::Debounce;
use tokio::signal::unix::{signal, SignalKind};

/// jemalloc: pushes allocate and free many small objects from every worker thread (the
/// system allocator spent a fifth of a full push's CPU there) and large short-lived
/// responses, whose memory jemalloc's background thread hands back to the system.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long jemalloc keeps freed pages before returning them (its default is 10 s): a full
/// push frees the responses of every stream at once, tens of MiB that would otherwise count
/// in the RSS for seconds.
const DIRTY_DECAY_MS: isize = 1000;

/// Starts jemalloc's background thread (it returns freed memory on its own) and shortens
/// the time freed pages are kept, for new arenas and those in use.
fn tune_allocator() {
    use tikv_jemalloc_ctl::{Access, AsName};
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc's background thread could not start: freed memory returns to the system only as the control plane allocates");
    }
    if let Err(e) = b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS) {
        tracing::warn!(error = %e, "jemalloc's decay time could not be set");
    }
    let arenas = tikv_jemalloc_ctl::arenas::narenas::read().unwrap_or(0);
    for i in 0..arenas {
        // Arenas not created yet refuse: they take the default set above when they are.
        let key = format!("arena.{i}.dirty_decay_ms\0");
        let _ = key.as_str().name().write(DIRTY_DECAY_MS);
    }
}

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
    /// xDS and CA over TLS, with the control plane's certificate (SAN
    /// istiod.istio-system.svc) signed by the CA; clients may authenticate with their workload
    /// certificate (certificate renewals).
    #[arg(long, default_value = "0.0.0.0:15012")]
    xds_tls_addr: SocketAddr,
    /// The CA's certificates and key in Istio's `cacerts` layout (ca-cert.pem, ca-key.pem,
    /// root-cert.pem, cert-chain.pem). Without it, a root CA is generated on first start and
    /// kept in `ca/` of the state directory.
    #[arg(long, env = "MESH_CA_DIR")]
    ca_dir: Option<PathBuf>,
    /// Lifetime of workload certificates when the request asks for none (Istio's
    /// DEFAULT_WORKLOAD_CERT_TTL), e.g. `24h`, `10m`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    workload_cert_ttl: Duration,
    /// Longest lifetime a workload may ask for (Istio's MAX_WORKLOAD_CERT_TTL).
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    max_workload_cert_ttl: Duration,
    /// The control plane's own Prometheus metrics at /metrics (istiod's names).
    #[arg(long, default_value = "0.0.0.0:15014")]
    monitoring_addr: SocketAddr,
    /// Sidecar injection webhook (HTTPS). Accepted for forward compatibility; NOT served yet.
    #[arg(long, default_value = "0.0.0.0:15017")]
    webhook_addr: SocketAddr,
    /// Directory for state kept across restarts (the auto-registered workloads, so that a
    /// restarted control plane still knows every endpoint while the proxies reconnect; the
    /// generated CA, in `ca/`). Created if missing. Without it, workloads are not kept and a
    /// generated CA lives in $XDG_STATE_HOME/mesh/ca (else ~/.local/state/mesh/ca), where
    /// `meshctl token create` finds it too.
    #[arg(long, env = "MESH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// How long a workload stays an endpoint after its proxy disconnects (Istio's
    /// PILOT_WORKLOAD_ENTRY_GRACE_PERIOD), e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    workload_grace_period: Duration,
    /// How request paths are normalized before authorization and routing (Istio's
    /// `meshConfig.pathNormalization`): NONE, BASE, MERGE_SLASHES or
    /// DECODE_AND_MERGE_SLASHES. Sent to every sidecar in its connection managers.
    #[arg(long, env = "MESH_PATH_NORMALIZATION", default_value = "BASE")]
    path_normalization: PathNormalization,
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
    tune_allocator();
    tracing::info!(
        webhook_addr = %args.webhook_addr,
        "the webhook server is not implemented yet: not listening there"
    );
    if args.workload_cert_ttl < MIN_WORKLOAD_TTL
        || args.workload_cert_ttl > args.max_workload_cert_ttl
    {
        anyhow::bail!(
            "--workload-cert-ttl must be between {} and --max-workload-cert-ttl ({})",
            humantime::format_duration(MIN_WORKLOAD_TTL),
            humantime::format_duration(args.max_workload_cert_ttl)
        );
    }
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let cp = ControlPlane::start(Options {
        config_dir: args.config_dir,
        xds_addr: args.xds_addr,
        debug_addr: args.debug_addr,
        monitoring_addr: args.monitoring_addr,
        cluster_domain: args.cluster_domain,
        debounce: Debounce::default(),
        workload_grace: args.workload_grace_period,
        state_dir: args.state_dir,
        xds_tls_addr: Some(args.xds_tls_addr),
        ca_dir: args.ca_dir,
        cert_policy: CertPolicy {
            default_ttl: args.workload_cert_ttl,
            max_ttl: args.max_workload_cert_ttl,
        },
        path_normalization: args.path_normalization,
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

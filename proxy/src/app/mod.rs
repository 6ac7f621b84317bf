//! `mesh-proxy run`: assembles the sidecar — the xDS client, the Pingora server with the
//! capture listeners (HTTP and TCP proxying), the admin and readiness ports and the access
//! log — and runs it until it is told to stop.
//!
//! Logs (`RUST_LOG` filter, default `info`) go to stderr; stdout carries only access logs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod control;
pub mod server;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora_core::server::RunArgs as PingoraRunArgs;
use tracing_subscriber::EnvFilter;
use xds_client::{ClientOptions, NodeInfo, XdsClient};

pub use self::args::RunArgs;
use self::args::Settings;
use crate::accesslog::{self, AccessLog};
use crate::admin::pages::LogControl;
use crate::admin::AdminState;
use crate::identity::client::CaClient;
use crate::identity::Identity;
use crate::metrics::{LocalMetadata, Metrics};
use crate::shared::Shared;
use crate::trace::{Tracer, TracingSettings};

/// Access-log lines that may wait for the writer before new ones are dropped.
const ACCESS_LOG_QUEUE: usize = 16 * 1024;
/// First xDS reconnect delay.
const XDS_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest xDS reconnect delay.
const XDS_MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Errors of `mesh-proxy run`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag has a bad value.
    #[error("invalid {flag}: {reason}")]
    InvalidFlag {
        /// The flag.
        flag: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A listen address cannot be bound.
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        /// The flag that set the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The access log could not start.
    #[error(transparent)]
    AccessLog(#[from] accesslog::Error),
    /// The metrics could not be registered.
    #[error(transparent)]
    Metrics(crate::metrics::RegisterError),
}

fn bind(flag: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    std::net::TcpListener::bind(addr).map_err(|source| Error::Bind { flag, addr, source })
}

/// Install the log subscriber (stderr, `RUST_LOG`, default `info`) with a reloadable
/// filter; the returned control is what the admin port's `/logging` changes.
pub(crate) fn init_tracing() -> Option<Arc<LogControl>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let initial = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| "info".to_string());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(EnvFilter::new(&initial));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .ok()?;
    Some(Arc::new(LogControl::new(&initial, move |f| {
        handle.reload(f).map_err(|e| e.to_string())
    })))
}

/// The label of a workload whose sidecar does Istio's mutual TLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// The xDS node for these settings.
pub fn node_info(settings: &Settings) -> NodeInfo {
    let a = &settings.args;
    NodeInfo {
        pod_name: a.pod_name.clone(),
        namespace: a.namespace.clone(),
        ip: a.ip,
        labels: {
            // Istio's injector marks a pod with a sidecar able to do mutual TLS; endpoints of
            // a proxy with a workload identity get `tlsMode: istio` from it.
            let mut labels = a.labels.0.clone();
            if settings.identity.is_some() {
                labels
                    .entry(TLS_MODE_LABEL.to_string())
                    .or_insert_with(|| "istio".to_string());
            }
            labels
        },
        service_account: a.service_account.clone(),
        cluster_domain: a.cluster_domain.clone(),
    }
}

/// Run the sidecar until SIGTERM, SIGQUIT or `/quitquitquit` (drain, then exit) or SIGINT
/// (exit at once). Fails before starting anything when a flag is invalid or a port is taken.
pub fn run(args: RunArgs) -> Result<(), Error> {
    let logging = init_tracing();
    let settings = args.validate()?;
    let a = &settings.args;

    // Bind (or probe) every port first, so that a taken port is a clear error, not a panic
    // inside Pingora's listener setup.
    let admin_listener = bind("--admin-addr", a.admin_addr)?;
    let readiness_listener = bind("--readiness-addr", a.readiness_addr)?;
    let stats_listener = bind("--stats-addr", a.stats_addr)?;
    let status_listener = bind("--status-addr", a.status_addr)?;
    drop(bind("--outbound-addr", a.outbound_addr)?);
    drop(bind("--inbound-addr", a.inbound_addr)?);

    let node = node_info(&settings);
    let (client, xds) = XdsClient::new(ClientOptions {
        address: a.xds_address.clone(),
        node: node.clone(),
        initial_backoff: XDS_INITIAL_BACKOFF,
        max_backoff: XDS_MAX_BACKOFF,
    });
    let access_log = if a.access_log {
        AccessLog::spawn_with(std::io::stdout(), ACCESS_LOG_QUEUE, a.access_log_format)?
    } else {
        AccessLog::off()
    };
    let mesh_id = a
        .mesh_id
        .clone()
        .unwrap_or_else(|| a.cluster_domain.clone());
    let local = LocalMetadata::new(
        &node,
        a.workload_name.as_deref(),
        xds_client::node::CLUSTER_ID,
        &mesh_id,
    );
    let mut metrics = Metrics::new(local.clone()).map_err(Error::Metrics)?;
    // This workload's SPIFFE ID: the source principal of what it sends over mutual TLS and the
    // destination principal of what it receives so.
    metrics.local_principal = settings
        .identity
        .as_ref()
        .map(|id| Arc::from(id.spiffe_id.as_str()));
    let metrics = Arc::new(metrics);
    // The tracer always exists: a listener's tracing (Telemetry API) may name a collector
    // even when `--tracing-otlp-endpoint` does not.
    let tracer = Some({
        let info = &local.info;
        Arc::new(Tracer::new(TracingSettings {
            sampling: a.tracing_sampling,
            endpoint: a.tracing_otlp_endpoint.clone(),
            service_name: format!("{}.{}", info.canonical_service, info.namespace),
            tags: vec![
                (
                    "istio.canonical_service",
                    info.canonical_service.to_string(),
                ),
                (
                    "istio.canonical_revision",
                    info.canonical_revision.to_string(),
                ),
                ("istio.mesh_id", mesh_id.clone()),
                ("istio.namespace", info.namespace.to_string()),
                ("istio.cluster_id", info.cluster.to_string()),
                ("node_id", node.node_id()),
            ],
        }))
    });
    let identity = Arc::new(match &settings.identity {
        Some(id) => Identity::new(id.spiffe_id.clone()),
        None => {
            tracing::warn!("no --token-file: running without a workload identity (no mutual TLS)");
            Identity::disabled()
        }
    });
    let renewal = settings
        .identity
        .as_ref()
        .map(|id| (CaClient::new(id.ca.clone()), id.forced_renewal));
    let mut shared = Shared::with_identity(access_log.clone(), identity);
    shared.path_normalization = a.path_normalization;
    shared.lifecycle = crate::shared::Lifecycle::new(a.drain_duration);
    shared.metrics = metrics;
    shared.tracer = tracer;
    let shared = Arc::new(shared);
    let admin = Arc::new(AdminState {
        shared: shared.clone(),
        xds,
        node,
        logging,
    });
    let control = control::Control::new(
        client,
        renewal,
        admin,
        control::Listeners {
            admin: admin_listener,
            readiness: readiness_listener,
            stats: stats_listener,
            status: status_listener,
        },
    );
    let server = server::build(&settings, shared.clone(), control);
    tracing::info!(
        outbound = %a.outbound_addr,
        inbound = %a.inbound_addr,
        admin = %a.admin_addr,
        readiness = %a.readiness_addr,
        stats = %a.stats_addr,
        status = %a.status_addr,
        xds = %a.xds_address,
        threads = settings.threads,
        "mesh-proxy starting"
    );
    server.run(PingoraRunArgs {
        shutdown_signal: Box::new(server::Signals::new(shared)),
    });
    access_log.flush(Duration::from_secs(1));
    Ok(())
}

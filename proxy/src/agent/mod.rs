//! `mesh-proxy agent`: the node agent of an Envoy sidecar, as istio-agent (pilot-agent) is
//! for Istio's Envoy. It holds the workload identity with the same code as `mesh-proxy run`
//! ([`crate::identity`]: its own ECDSA P-256 key, a CSR with the bootstrap token, renewal at
//! half-life over mutual TLS) and serves the secrets to Envoy over SDS on a Unix socket
//! ([`sds`]), the cluster `sds-grpc` of Envoy's bootstrap. The key never leaves the pod: the
//! control plane only signs, and its listeners and clusters name the secrets (`default`,
//! `ROOTCA`, `file-cert:`, `file-root:`) with `sds-grpc` as their source.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod sds;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::UnixListenerStream;

use crate::app::args::{parse_duration, IdentityFlags};
use crate::identity::client::CaClient;
use crate::identity::Identity;

/// Istio's SDS socket (relative to `/` in Istio's container; absolute here).
pub const DEFAULT_SDS_SOCKET: &str = "/var/run/secrets/workload-spiffe-uds/socket";

/// Flags of `mesh-proxy agent`. Identity flags are `mesh-proxy run`'s, with the same
/// environment fallbacks.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Where the SDS server listens (a Unix socket path; a stale socket is replaced).
    #[arg(long, env = "MESH_SDS_SOCKET", default_value = DEFAULT_SDS_SOCKET)]
    pub sds_socket: PathBuf,
    /// Control plane address (`host:port` or `http://host:port`): the CA's default address.
    #[arg(long, env = "MESH_XDS_ADDRESS")]
    pub xds_address: String,
    /// Pod namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Service account of the pod.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,
    /// Cluster DNS domain (the trust domain).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Bootstrap token proving the namespace and service account to the CA
    /// (`meshctl token create`); read at each attempt.
    #[arg(long, env = "MESH_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// The CA (`host:port` or `http://host:port` plaintext, `https://host:port` TLS);
    /// default: the xDS address.
    #[arg(long, env = "CA_ADDR")]
    pub ca_address: Option<String>,
    /// Where renewals go, over mutual TLS with the current certificate (`host:port`).
    #[arg(long)]
    pub ca_tls_address: Option<String>,
    /// PEM roots the CA's serving certificate must chain to (needed for https://).
    #[arg(long, env = "MESH_CA_ROOT_CERT")]
    pub ca_root_cert: Option<PathBuf>,
    /// Lifetime asked for the workload certificate (at least 1m); renewed at half of it.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,
    /// Renew the certificate at least this often (tests: rotation within seconds).
    #[arg(long, value_parser = parse_duration)]
    pub cert_renew_interval: Option<Duration>,
}

/// Errors of `mesh-proxy agent`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag has a bad value.
    #[error(transparent)]
    Flags(#[from] crate::app::Error),
    /// The socket cannot be prepared or bound.
    #[error("SDS socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime cannot start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The gRPC server failed.
    #[error("SDS server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs the agent until it is killed: the renewal task and the SDS server.
pub fn run(args: AgentArgs) -> Result<(), Error> {
    let _log_control = crate::app::init_tracing();
    let settings = IdentityFlags {
        xds_address: &args.xds_address,
        namespace: &args.namespace,
        service_account: &args.service_account,
        cluster_domain: &args.cluster_domain,
        token_file: &args.token_file,
        ca_address: args.ca_address.as_deref(),
        ca_tls_address: args.ca_tls_address.as_deref(),
        ca_root_cert: args.ca_root_cert.as_deref(),
        cert_ttl: args.cert_ttl,
        cert_renew_interval: args.cert_renew_interval,
    }
    .validate()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        let listener = bind(&args.sds_socket)?;
        let identity = Arc::new(Identity::new(settings.spiffe_id.clone()));
        tracing::info!(
            identity = %settings.spiffe_id,
            socket = %args.sds_socket.display(),
            "SDS agent serving"
        );
        tokio::spawn(crate::identity::renew::run(
            identity.clone(),
            CaClient::new(settings.ca.clone()),
            settings.forced_renewal,
        ));
        tonic::transport::Server::builder()
            .add_service(sds::server(identity))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await?;
        Ok(())
    })
}

/// Binds the socket, creating its directory and replacing a stale socket file.
fn bind(path: &std::path::Path) -> Result<tokio::net::UnixListener, Error> {
    let err = |source| Error::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    tokio::net::UnixListener::bind(path).map_err(err)
}

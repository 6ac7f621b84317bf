//! The control plane assembled: config store and watcher, registry, certificate authority,
//! the gRPC servers (ADS and CA in plaintext on the xDS address, the same over TLS on the
//! xDS TLS address), the push coordinator, the debug server and the monitoring server
//! (`/metrics`: the control plane's and the CA's metrics on one registry), started together
//! and stopped together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::authz::PathNormalization;
use crate::ca::metrics::CaMetrics;
use crate::ca::service::{CaService, CertPolicy};
use crate::ca::tls::{TlsError, TlsServing};
use crate::ca::{Authority, CaError};
use crate::config::{ConfigSnapshot, ConfigStore};
use crate::debug::{self, DebugState};
use crate::metrics::{self, Metrics, MetricsError};
use crate::registry::workloads::{StateError, STATE_FILE};
use crate::registry::{spawn_registry, MeshSettings, RegistryHandle, Workloads};
use crate::watch::{watch_config, ConfigWatcher, Debounce, WatchError};
use crate::xds::hub::{spawn_config_metrics, spawn_coordinator, PushHub};
use crate::xds::server::AdsService;
use crate::xds::status::SyncStatus;

pub use crate::registry::workloads::DEFAULT_GRACE_PERIOD;

/// What the control plane needs to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// The config directory.
    pub config_dir: PathBuf,
    /// ADS over plaintext gRPC.
    pub xds_addr: SocketAddr,
    /// Debug HTTP server.
    pub debug_addr: SocketAddr,
    /// Prometheus metrics (`/metrics`).
    pub monitoring_addr: SocketAddr,
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// Debounce of config reloads and of registry changes.
    pub debounce: Debounce,
    /// How long an auto-registered workload stays an endpoint after its proxy disconnects
    /// ([`DEFAULT_GRACE_PERIOD`], Istio's `PILOT_WORKLOAD_ENTRY_GRACE_PERIOD`).
    pub workload_grace: Duration,
    /// Where state is kept across restarts (the auto-registered workloads, in
    /// [`STATE_FILE`]; a generated CA, in `ca/`); created if missing. `None`: workloads are
    /// not kept, and a generated CA lives in [`crate::ca::store::default_state_dir`].
    pub state_dir: Option<PathBuf>,
    /// xDS and CA over TLS (15012); `None`: not served.
    pub xds_tls_addr: Option<SocketAddr>,
    /// The CA's files in Istio's `cacerts` layout; `None`: a root generated on first start
    /// and kept in the state directory.
    pub ca_dir: Option<PathBuf>,
    /// Lifetimes of workload certificates.
    pub cert_policy: CertPolicy,
    /// Path normalization of every connection manager (Istio's
    /// `meshConfig.pathNormalization`).
    pub path_normalization: PathNormalization,
}

impl Options {
    /// Options for `config_dir` with the design's defaults on loopback ports chosen by the
    /// kernel (for tests and tools): no TLS port, no state kept, a generated CA in
    /// `state_dir` when set.
    pub fn new(config_dir: PathBuf) -> Options {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Options {
            config_dir,
            xds_addr: any,
            debug_addr: any,
            monitoring_addr: any,
            cluster_domain: "cluster.local".to_string(),
            debounce: Debounce::default(),
            workload_grace: DEFAULT_GRACE_PERIOD,
            state_dir: None,
            xds_tls_addr: None,
            ca_dir: None,
            cert_policy: CertPolicy::default(),
            path_normalization: PathNormalization::default(),
        }
    }
}

/// Errors starting the control plane.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config directory does not exist or is not a directory.
    #[error("config directory {0}: not a directory")]
    ConfigDir(PathBuf),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which server.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config directory cannot be watched.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The state directory cannot be created.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The saved state cannot be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The certificate authority cannot be loaded or created.
    #[error("certificate authority: {0}")]
    Ca(#[from] CaError),
    /// The TLS server cannot be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The metrics cannot be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    /// The bound ADS address.
    pub xds_addr: SocketAddr,
    /// The bound debug address.
    pub debug_addr: SocketAddr,
    /// The bound xDS/CA TLS address, when served.
    pub xds_tls_addr: Option<SocketAddr>,
    /// The certificate authority.
    pub ca: Arc<Authority>,
    /// The CA's metrics (registered with the monitoring registry).
    pub ca_metrics: CaMetrics,
    /// The bound monitoring address.
    pub monitoring_addr: SocketAddr,
    /// The control plane's metrics.
    pub metrics: Metrics,
    /// The registry.
    pub registry: RegistryHandle,
    /// Connected proxies' sync status.
    pub status: Arc<SyncStatus>,
    /// The config in force.
    pub config: watch::Receiver<Arc<ConfigSnapshot>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Tasks that run until aborted.
    background: Vec<JoinHandle<()>>,
    _watcher: ConfigWatcher,
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, what, source })
}

fn local_addr(
    listener: &TcpListener,
    addr: SocketAddr,
    what: &'static str,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, what, source })
}

impl ControlPlane {
    /// Loads the config, binds the listeners and starts every server on the current runtime.
    pub async fn start(options: Options) -> Result<ControlPlane, StartError> {
        if !options.config_dir.is_dir() {
            return Err(StartError::ConfigDir(options.config_dir));
        }
        let xds_listener = bind(options.xds_addr, "xDS").await?;
        let debug_listener = bind(options.debug_addr, "debug").await?;
        let xds_addr = local_addr(&xds_listener, options.xds_addr, "xDS")?;
        let debug_addr = local_addr(&debug_listener, options.debug_addr, "debug")?;
        let monitoring_listener = bind(options.monitoring_addr, "monitoring").await?;
        let monitoring_addr =
            local_addr(&monitoring_listener, options.monitoring_addr, "monitoring")?;
        let metrics = Metrics::new(prometheus::Registry::new())?;
        let tls_listener = match options.xds_tls_addr {
            Some(addr) => Some(bind(addr, "xDS/CA over TLS").await?),
            None => None,
        };
        let xds_tls_addr = match (&tls_listener, options.xds_tls_addr) {
            (Some(l), Some(addr)) => Some(local_addr(l, addr, "xDS/CA over TLS")?),
            _ => None,
        };
        let ca = Arc::new(Authority::load_or_create(
            options.ca_dir.as_deref(),
            options.state_dir.as_deref(),
            &options.cluster_domain,
        )?);
        tracing::info!(
            dir = %ca.dir().display(),
            origin = ?ca.origin(),
            trust_domain = ca.trust_domain(),
            "certificate authority ready"
        );
        let ca_metrics = CaMetrics::new();
        ca_metrics
            .register(metrics.registry())
            .map_err(MetricsError::from)?;
        ca_metrics.root_expiry.set(ca.expires());
        let ca_service = CaService::new(ca.clone(), options.cert_policy, ca_metrics.clone());

        let store = ConfigStore::load_in_domain(&options.config_dir, &options.cluster_domain);
        let first = store.current();
        tracing::info!(
            dir = %options.config_dir.display(),
            objects = first.objects.len(),
            errors = first.errors.len(),
            "config loaded"
        );
        for e in &first.errors {
            tracing::warn!("{e}");
        }
        let (config, watcher) = watch_config(store, options.debounce)?;
        let workloads = match &options.state_dir {
            None => Workloads::in_memory(options.workload_grace),
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| StartError::StateDir {
                    path: dir.clone(),
                    source,
                })?;
                let workloads =
                    Workloads::persistent(options.workload_grace, dir.join(STATE_FILE))?;
                tracing::info!(
                    state_dir = %dir.display(),
                    workloads = workloads.all().count(),
                    "registered workloads restored"
                );
                workloads
            }
        };
        let registry = spawn_registry(
            config.clone(),
            MeshSettings {
                cluster_domain: options.cluster_domain,
                path_normalization: options.path_normalization,
            },
            options.debounce,
            workloads,
        );
        let status = Arc::new(SyncStatus::default());
        let (shutdown, shutdown_rx) = watch::channel(false);

        let hub = PushHub::new(registry.current());
        let background = vec![
            spawn_coordinator(&registry, hub.clone(), metrics.clone()),
            spawn_config_metrics(config.clone(), metrics.clone()),
        ];

        let ads = AdsService::new(
            registry.clone(),
            hub,
            metrics.clone(),
            status.clone(),
            shutdown_rx.clone(),
        );
        let mut tasks = Vec::new();
        if let Some(listener) = tls_listener {
            let serving = Arc::new(TlsServing::new(ca.clone())?);
            let (ads, ca_service) = (ads.clone(), ca_service.clone());
            let mut down = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let served = tonic::transport::Server::builder()
                    .add_service(ads.into_server())
                    .add_service(ca_service.into_server())
                    .serve_with_incoming_shutdown(serving.incoming(listener), async move {
                        let _ = down.wait_for(|down| *down).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "xDS/CA TLS server failed");
                }
            }));
        }
        let mut xds_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(ads.into_server())
                .add_service(ca_service.into_server())
                .serve_with_incoming_shutdown(TcpListenerStream::new(xds_listener), async move {
                    let _ = xds_shutdown.wait_for(|down| *down).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "xDS server failed");
            }
        }));
        let debug_state = DebugState {
            registry: registry.clone(),
            status: status.clone(),
            config: config.clone(),
        };
        tasks.push(tokio::spawn(debug::serve(
            debug_listener,
            debug_state,
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(metrics::serve(
            monitoring_listener,
            metrics.clone(),
            shutdown_rx,
        )));
        tracing::info!(
            %xds_addr,
            ?xds_tls_addr,
            %debug_addr,
            %monitoring_addr,
            "control plane serving"
        );
        Ok(ControlPlane {
            xds_addr,
            debug_addr,
            xds_tls_addr,
            ca,
            ca_metrics,
            monitoring_addr,
            metrics,
            registry,
            status,
            config,
            shutdown,
            tasks,
            background,
            _watcher: watcher,
        })
    }

    /// Stops every server: open ADS streams end, then the listeners close.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        for task in self.background {
            task.abort();
        }
    }
}

//! The Pingora server of the sidecar: its tuning, its services and its shutdown signals.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::background::GenBackgroundService;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;
use tokio::signal::unix::{signal, SignalKind};

use super::args::Settings;
use super::control::Control;
use crate::http::MeshHttp;
use crate::listener::conn::Role;
use crate::listener::{CaptureApp, CaptureListener};
use crate::shared::Shared;

/// Idle upstream connections kept per proxy direction: at least the peak number of concurrent
/// upstream connections, or the pool churns (NOTES: 16 for 64 clients cost 1.86x the CPU).
const UPSTREAM_KEEPALIVE_POOL: usize = 1024;

/// Pingora's server configuration for these settings: one runtime of `--concurrency` threads
/// without work stealing, no fast-timeout timer thread, a large upstream pool, and grace
/// periods that fit the drain duration.
pub fn server_conf(settings: &Settings) -> ServerConf {
    ServerConf {
        threads: settings.threads,
        work_stealing: false,
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        upstream_keepalive_pool_size: UPSTREAM_KEEPALIVE_POOL,
        grace_period_seconds: Some(settings.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(settings.shutdown_timeout_secs),
        // Pingora's bound on attempts per request; the route's retry policy (and the
        // stale-connection allowance) decide the real number, so this must never cut in.
        max_retries: usize::MAX,
        ..ServerConf::default()
    }
}

fn http_proxy(shared: &Arc<Shared>, server: &Server) -> Arc<HttpProxy<MeshHttp>> {
    let mut proxy = HttpProxy::new(MeshHttp::new(shared.clone()), server.configuration.clone());
    proxy.handle_init_modules();
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    proxy.server_options = Some(options);
    Arc::new(proxy)
}

/// Build the server: the capture service (both listeners on one runtime of `--concurrency`
/// threads) and the control service (one thread).
pub fn build(settings: &Settings, shared: Arc<Shared>, control: Control) -> Server {
    let mut server = Server::new_with_opt_and_conf(None, server_conf(settings));
    server.bootstrap();
    let listeners = vec![
        CaptureListener {
            bound: settings.args.outbound_addr,
            role: Role::Outbound,
            http: http_proxy(&shared, &server),
        },
        CaptureListener {
            bound: settings.args.inbound_addr,
            role: Role::Inbound,
            http: http_proxy(&shared, &server),
        },
    ];
    let app = CaptureApp::new(shared, listeners, settings.args.protocol_detection_timeout);
    let mut capture = Service::new("capture".to_string(), app);
    capture.add_tcp(&settings.args.outbound_addr.to_string());
    capture.add_tcp(&settings.args.inbound_addr.to_string());
    capture.threads = Some(settings.threads);
    server.add_service(capture);
    let mut control = GenBackgroundService::new("control".to_string(), Arc::new(control));
    control.threads = Some(1);
    server.add_service(control);
    server
}

/// The sidecar's shutdown signals: SIGTERM, SIGQUIT and `/quitquitquit` drain; SIGINT exits
/// at once. (SIGQUIT does not hand sockets to a new process: a sidecar is never upgraded in
/// place, and side-by-side proxies must not share Pingora's upgrade socket.)
pub struct Signals {
    shared: Arc<Shared>,
}

impl Signals {
    /// Signals that mark `shared` as draining when they fire.
    pub fn new(shared: Arc<Shared>) -> Signals {
        Signals { shared }
    }
}

async fn next(kind: SignalKind) {
    match signal(kind) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch a signal");
            std::future::pending::<()>().await
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let signal = tokio::select! {
            _ = next(SignalKind::terminate()) => {
                tracing::info!("SIGTERM: draining");
                ShutdownSignal::GracefulTerminate
            }
            _ = next(SignalKind::quit()) => {
                tracing::info!("SIGQUIT: draining");
                ShutdownSignal::GracefulTerminate
            }
            _ = next(SignalKind::interrupt()) => {
                tracing::info!("SIGINT: exiting");
                ShutdownSignal::FastShutdown
            }
            _ = self.shared.lifecycle.quit_requested() => ShutdownSignal::GracefulTerminate,
        };
        self.shared.lifecycle.start_draining();
        signal
    }
}

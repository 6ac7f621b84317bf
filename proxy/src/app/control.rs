//! The control side of the sidecar, one Pingora background service on its own thread: the xDS
//! client, the task that turns each published config into a snapshot, the certificate
//! renewal, the admin and readiness servers, and the drain that ends the process once
//! shutdown has started and no connection is left.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use xds_client::{XdsClient, XdsHandle};

use crate::admin::{self, AdminState, Port};
use crate::identity::client::CaClient;
use crate::shared::Shared;

/// How often the drain checks for remaining connections.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How long the access log gets to flush before the process exits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// A value handed out exactly once (`BackgroundService::start` only gets `&self`).
#[derive(Debug)]
struct Slot<T>(Mutex<Option<T>>);

impl<T> Slot<T> {
    fn new(value: T) -> Self {
        Slot(Mutex::new(Some(value)))
    }

    fn take(&self) -> Option<T> {
        self.0.lock().map_or(None, |mut v| v.take())
    }
}

/// The pre-bound listeners of the control service.
#[derive(Debug)]
pub struct Listeners {
    /// Admin (15000).
    pub admin: std::net::TcpListener,
    /// Readiness (15021).
    pub readiness: std::net::TcpListener,
    /// Prometheus (15090).
    pub stats: std::net::TcpListener,
    /// Merged stats and health (15020).
    pub status: std::net::TcpListener,
}

/// The control background service.
pub struct Control {
    client: Slot<XdsClient>,
    renewal: Slot<(CaClient, Option<Duration>)>,
    xds: XdsHandle,
    shared: Arc<Shared>,
    admin: Arc<AdminState>,
    listeners: Slot<Listeners>,
}

impl Control {
    /// The service, with its listeners already bound (so that bind errors surface before the
    /// server starts).
    pub fn new(
        client: XdsClient,
        renewal: Option<(CaClient, Option<Duration>)>,
        admin: Arc<AdminState>,
        listeners: Listeners,
    ) -> Control {
        Control {
            client: Slot::new(client),
            renewal: Slot(Mutex::new(renewal)),
            xds: admin.xds.clone(),
            shared: admin.shared.clone(),
            admin,
            listeners: Slot::new(listeners),
        }
    }
}

/// Follow the xDS client's snapshots: build and publish the data path's view of each.
async fn follow_config(xds: XdsHandle, shared: Arc<Shared>) {
    let mut rx = xds.subscribe();
    loop {
        let config = rx.borrow_and_update().clone();
        shared.snapshot.apply(config);
        if rx.changed().await.is_err() {
            tracing::warn!("xDS client stopped publishing configuration");
            return;
        }
    }
}

#[async_trait]
impl BackgroundService for Control {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Some(client) = self.client.take() {
            tokio::spawn(client.run());
        }
        if let Some((ca, forced)) = self.renewal.take() {
            let identity = self.shared.identity.clone();
            tokio::spawn(crate::identity::renew::run(identity, ca, forced));
        }
        tokio::spawn(follow_config(self.xds.clone(), self.shared.clone()));
        if let Some(tracer) = &self.shared.tracer {
            if let Some(rx) = tracer.take_receiver() {
                let service = tracer.settings().service_name.clone();
                let (exported, dropped) = (tracer.exported.clone(), tracer.dropped.clone());
                tokio::spawn(crate::trace::export::run(rx, service, exported, dropped));
            }
        }
        if let Some(l) = self.listeners.take() {
            for (listener, port) in [
                (l.admin, Port::Admin),
                (l.readiness, Port::Readiness),
                (l.stats, Port::Stats),
                (l.status, Port::Status),
            ] {
                let state = self.admin.clone();
                tokio::spawn(async move {
                    if let Err(e) = admin::serve(listener, port, state).await {
                        tracing::error!(error = %e, "admin server stopped");
                    }
                });
            }
        }
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        self.shared.lifecycle.start_draining();
        tracing::info!(
            active = self.shared.stats.active_connections(),
            "draining: waiting for open connections"
        );
        while self.shared.stats.active_connections() > 0 {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let log = self.shared.access_log.clone();
        let _ = tokio::task::spawn_blocking(move || log.flush(FLUSH_TIMEOUT)).await;
        tracing::info!("drained: exiting");
        std::process::exit(0);
    }
}

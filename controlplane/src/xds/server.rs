//! The aggregated discovery service (state of the world) over gRPC.
//!
//! Each stream runs in its own task: it identifies the proxy from the first request's node,
//! registers it with the registry (auto-registration), answers requests per
//! [`super::stream`]'s rules, takes the push requests the coordinator ([`super::hub`])
//! queues for it, and on its end (client gone, error, or server shutdown) deregisters the
//! proxy and removes its syncz entry and queue. Delta xDS is answered with `UNIMPLEMENTED`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::hub::{PushHub, QueueGuard};
use super::status::{ProxyStatus, StatusEntry, SyncStatus};
use super::stream::{RequestKind, StreamState};
use super::ResourceType;
use crate::metrics::Metrics;
use crate::registry::{ConnectionId, RegistryHandle};

/// Responses buffered per stream before the stream task waits for the client.
const STREAM_BUFFER: usize = 16;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The ADS implementation.
#[derive(Clone, Debug)]
pub struct AdsService {
    registry: RegistryHandle,
    hub: Arc<PushHub>,
    metrics: Metrics,
    status: Arc<SyncStatus>,
    next_connection: Arc<AtomicU64>,
    shutdown: watch::Receiver<bool>,
}

impl AdsService {
    /// A service over `registry`, taking pushes from `hub`, recording streams in `status`
    /// and `metrics`; streams end when `shutdown` becomes true.
    pub fn new(
        registry: RegistryHandle,
        hub: Arc<PushHub>,
        metrics: Metrics,
        status: Arc<SyncStatus>,
        shutdown: watch::Receiver<bool>,
    ) -> AdsService {
        AdsService {
            registry,
            hub,
            metrics,
            status,
            next_connection: Arc::new(AtomicU64::new(1)),
            shutdown,
        }
    }

    /// The tonic server wrapping this service.
    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<AdsService> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let conn = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let peer = request.remote_addr().map(|a| a.to_string());
        let entry = self.status.register(ProxyStatus::new(conn, peer.clone()));
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        // Registered before the first snapshot is read: every later one reaches this stream.
        let queue = self.hub.register(conn);
        let stream = AdsStream {
            conn,
            peer,
            inbound: request.into_inner(),
            tx,
            registry: self.registry.clone(),
            hub: self.hub.clone(),
            queue,
            metrics: self.metrics.clone(),
            entry,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(stream.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "delta xDS is not supported: use state of the world ADS",
        ))
    }
}

/// One stream's task.
struct AdsStream {
    conn: ConnectionId,
    peer: Option<String>,
    inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    registry: RegistryHandle,
    hub: Arc<PushHub>,
    queue: QueueGuard,
    metrics: Metrics,
    entry: StatusEntry,
    shutdown: watch::Receiver<bool>,
}

impl AdsStream {
    async fn run(mut self) {
        let mut state = StreamState::new(
            self.conn,
            self.entry.writer.clone(),
            self.metrics.clone(),
            self.hub.current(),
        );
        let mut registered: Option<String> = None;
        let end = loop {
            let responses = tokio::select! {
                msg = self.inbound.message() => match msg {
                    Ok(Some(req)) => {
                        if state.identify(&req) {
                            let proxy = state.proxy().cloned().unwrap_or_default();
                            tracing::info!(
                                conn = self.conn,
                                node = %proxy.id,
                                peer = self.peer.as_deref().unwrap_or("-"),
                                "proxy connected"
                            );
                            let version = proxy.version.clone().unwrap_or_default();
                            self.metrics.xds_clients.with_label_values(&[&version]).inc();
                            self.registry.connect(self.conn, proxy);
                            registered = Some(version);
                        }
                        let type_url = req.type_url.clone();
                        let (kind, responses) = state.on_request(req, &self.hub.current());
                        match kind {
                            RequestKind::UnknownType => tracing::debug!(
                                conn = self.conn, %type_url, "request for an unserved type ignored"
                            ),
                            RequestKind::Stale => tracing::debug!(
                                conn = self.conn, %type_url, "stale nonce ignored"
                            ),
                            RequestKind::Initial | RequestKind::Ack | RequestKind::Nack => {}
                        }
                        responses
                    }
                    Ok(None) => break "closed by the client",
                    Err(_) => break "stream error",
                },
                () = self.queue.queue.notify.notified() => match self.queue.queue.take() {
                    Some(queued) => {
                        self.metrics
                            .queue_time
                            .observe(queued.enqueued.elapsed().as_secs_f64());
                        state.on_push(&queued.request, &self.hub.current())
                    }
                    None => Vec::new(),
                },
                _ = self.shutdown.wait_for(|down| *down) => break "server shutting down",
                () = self.tx.closed() => break "response stream dropped",
            };
            let mut gone = false;
            for r in responses {
                let kind = ResourceType::from_type_url(&r.type_url);
                let started = std::time::Instant::now();
                if self.tx.send(Ok(r)).await.is_err() {
                    if let Some(kind) = kind {
                        self.metrics
                            .pushes
                            .with_label_values(&[&format!("{}_senderr", kind.short_name())])
                            .inc();
                    }
                    gone = true;
                    break;
                }
                self.metrics
                    .send_time
                    .observe(started.elapsed().as_secs_f64());
            }
            if gone {
                break "response stream dropped";
            }
        };
        if let Some(version) = registered {
            self.metrics
                .xds_clients
                .with_label_values(&[&version])
                .dec();
            self.registry.disconnect(self.conn);
        }
        let node = state.proxy().map(|p| p.id.clone()).unwrap_or_default();
        tracing::info!(conn = self.conn, %node, reason = end, "proxy disconnected");
    }
}

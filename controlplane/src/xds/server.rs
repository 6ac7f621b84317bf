//! The aggregated discovery service (state of the world) over gRPC.
//!
//! Each stream runs in its own task: it identifies the proxy from the first request's node,
//! registers it with the registry (auto-registration), answers requests per
//! [`super::stream`]'s rules, pushes on every registry snapshot that changes its resources,
//! and on its end (client gone, error, or server shutdown) deregisters the proxy and removes
//! its syncz entry. Delta xDS is answered with `UNIMPLEMENTED`.

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

use super::status::{ProxyStatus, StatusEntry, SyncStatus};
use super::stream::{RequestKind, StreamState};
use crate::registry::{ConnectionId, RegistryHandle};

/// Responses buffered per stream before the stream task waits for the client.
const STREAM_BUFFER: usize = 16;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The ADS implementation.
#[derive(Clone, Debug)]
pub struct AdsService {
    registry: RegistryHandle,
    status: Arc<SyncStatus>,
    next_connection: Arc<AtomicU64>,
    shutdown: watch::Receiver<bool>,
}

impl AdsService {
    /// A service over `registry`, recording streams in `status`; streams end when
    /// `shutdown` becomes true.
    pub fn new(
        registry: RegistryHandle,
        status: Arc<SyncStatus>,
        shutdown: watch::Receiver<bool>,
    ) -> AdsService {
        AdsService {
            registry,
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
        let stream = AdsStream {
            conn,
            peer,
            inbound: request.into_inner(),
            tx,
            registry: self.registry.clone(),
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
    entry: StatusEntry,
    shutdown: watch::Receiver<bool>,
}

impl AdsStream {
    async fn run(mut self) {
        let mut state = StreamState::new(self.conn, self.entry.writer.clone());
        let mut mesh = self.registry.subscribe();
        mesh.mark_unchanged();
        let mut registered = false;
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
                            self.registry.connect(self.conn, proxy);
                            registered = true;
                        }
                        let type_url = req.type_url.clone();
                        let nack = req.error_detail.as_ref().map(|e| e.message.clone());
                        // Not marked as seen: a pending registry change still triggers a
                        // push of the other types.
                        let snapshot = mesh.borrow().clone();
                        let (kind, responses) = state.on_request(req, &snapshot);
                        match kind {
                            RequestKind::Nack => tracing::warn!(
                                conn = self.conn,
                                %type_url,
                                error = nack.as_deref().unwrap_or(""),
                                "NACK"
                            ),
                            RequestKind::UnknownType => tracing::debug!(
                                conn = self.conn, %type_url, "request for an unserved type ignored"
                            ),
                            RequestKind::Stale => tracing::debug!(
                                conn = self.conn, %type_url, "stale nonce ignored"
                            ),
                            RequestKind::Initial | RequestKind::Ack => {}
                        }
                        responses
                    }
                    Ok(None) => break "closed by the client",
                    Err(_) => break "stream error",
                },
                changed = mesh.changed() => {
                    if changed.is_err() {
                        break "registry stopped";
                    }
                    let snapshot = mesh.borrow_and_update().clone();
                    state.on_mesh_change(&snapshot)
                }
                _ = self.shutdown.wait_for(|down| *down) => break "server shutting down",
                _ = self.tx.closed() => break "response stream dropped",
            };
            let mut gone = false;
            for r in responses {
                if self.tx.send(Ok(r)).await.is_err() {
                    gone = true;
                    break;
                }
            }
            if gone {
                break "response stream dropped";
            }
        };
        if registered {
            self.registry.disconnect(self.conn);
        }
        let node = state.proxy().map(|p| p.id.clone()).unwrap_or_default();
        tracing::info!(conn = self.conn, %node, reason = end, "proxy disconnected");
    }
}

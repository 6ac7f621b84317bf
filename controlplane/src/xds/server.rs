//! The aggregated discovery service (state of the world) over gRPC.
//!
//! Each stream runs in its own task: it identifies the proxy from the first request's node,
//! registers it with the registry (auto-registration), answers requests per
//! [`super::stream`]'s rules, takes the push requests the coordinator ([`super::hub`])
//! queues for it, and on its end (client gone, error, or server shutdown) deregisters the
//! proxy and removes its syncz entry and queue. Delta xDS is answered with `UNIMPLEMENTED`.
//!
//! The gRPC service is written here rather than generated: its responses are written from
//! the resources' shared encodings ([`super::wire`]), so a stream copies nothing per
//! resource and keeps no encode buffer between responses.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tonic::body::Body;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::server::NamedService;
use tonic::Status;

use super::hub::{PushHub, QueueGuard};
use super::status::{ProxyStatus, StatusEntry, SyncStatus};
use super::stream::{RequestKind, StreamState};
use super::wire::{ResponseBody, SharedResponse};
use super::ResourceType;
use crate::metrics::Metrics;
use crate::registry::{ConnectionId, RegistryHandle};

/// Responses buffered per stream before the stream task waits for the client.
const STREAM_BUFFER: usize = 16;

/// The gRPC method of state-of-the-world ADS.
const STREAM_METHOD: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// The largest request taken (gRPC's default limit).
const MAX_REQUEST: usize = 4 * 1024 * 1024;

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

    /// The gRPC service to add to a tonic server.
    pub fn into_server(self) -> AdsServer {
        AdsServer(self)
    }

    /// Starts a stream's task; the response's body carries what it sends.
    fn open(&self, request: http::Request<Body>) -> http::Response<Body> {
        let request = tonic::Request::from_http(request);
        let conn = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let peer = request.remote_addr().map(|a| a.to_string());
        let entry = self.status.register(ProxyStatus::new(conn, peer.clone()));
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        // Registered before the first snapshot is read: every later one reaches this stream.
        let queue = self.hub.register(conn);
        let inbound = Streaming::new_request(
            RequestDecoder,
            request.into_inner(),
            None,
            Some(MAX_REQUEST),
        );
        let stream = AdsStream {
            conn,
            peer,
            inbound,
            tx,
            registry: self.registry.clone(),
            hub: self.hub.clone(),
            queue,
            metrics: self.metrics.clone(),
            entry,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(stream.run());
        let mut response = http::Response::new(Body::new(ResponseBody::new(rx)));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        response
    }
}

/// ADS as a gRPC service: `StreamAggregatedResources` is served with responses written from
/// the shared encodings ([`super::wire`]); delta xDS (and any other method) is answered with
/// `UNIMPLEMENTED`.
#[derive(Clone, Debug)]
pub struct AdsServer(AdsService);

impl NamedService for AdsServer {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl tower_service::Service<http::Request<Body>> for AdsServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() == STREAM_METHOD {
            return ready(Ok(self.0.open(request)));
        }
        let status = if request.uri().path().ends_with("/DeltaAggregatedResources") {
            Status::unimplemented("delta xDS is not supported: use state of the world ADS")
        } else {
            Status::unimplemented(format!("no method {}", request.uri().path()))
        };
        ready(Ok(status.into_http()))
    }
}

/// Decodes `DiscoveryRequest`s.
#[derive(Debug)]
struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = DiscoveryRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<DiscoveryRequest>, Status> {
        DiscoveryRequest::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(format!("invalid DiscoveryRequest: {e}")))
    }
}

/// One stream's task.
struct AdsStream {
    conn: ConnectionId,
    peer: Option<String>,
    inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<SharedResponse>,
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
                let kind = ResourceType::from_type_url(r.type_url);
                let started = std::time::Instant::now();
                if self.tx.send(r).await.is_err() {
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

//! Loopback upstreams for the proxy tests: an HTTP echo (HTTP/1.1 and h2c), a gRPC echo
//! (bidirectional streaming, using the ADS service definition as its schema), a WebSocket
//! echo, a TCP echo and a server-first TCP banner.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::{SinkExt, Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn query_number(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

/// What the HTTP echo saw, as JSON: `name`, `method`, `path`, `host`, `version`, `peer`,
/// `headers`, `body_len`. `?delay_ms=N` delays the answer; `?trickle=N` answers at once with
/// a body of N chunks sent 100 ms apart.
async fn echo(
    name: &'static str,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(ms) = query_number(&req, "delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = query_number(&req, "trickle") {
        let chunks = futures::stream::unfold(0, move |i| async move {
            if i >= n {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let frame = hyper::body::Frame::data(Bytes::from_static(b"chunk\n"));
            Some((Ok::<_, Infallible>(frame), i + 1))
        });
        return Ok(Response::new(BodyExt::boxed(
            http_body_util::StreamBody::new(chunks),
        )));
    }
    let method = req.method().to_string();
    let path = req.uri().path_and_query().map(|p| p.to_string());
    let version = format!("{:?}", req.version());
    let host = req.uri().authority().map(|a| a.to_string()).or_else(|| {
        req.headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    });
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let json = serde_json::json!({
        "name": name, "method": method, "path": path, "host": host, "version": version,
        "peer": peer.to_string(), "headers": headers, "body_len": body,
    });
    Ok(Response::new(
        Full::new(Bytes::from(json.to_string())).boxed(),
    ))
}

/// An HTTP/1.1 + h2c echo server named `name`.
pub async fn http_echo(name: &'static str) -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req| echo(name, peer, req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A WebSocket echo server.
pub async fn ws_echo() -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A TCP echo server.
pub async fn tcp_echo() -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A server-first TCP service: writes `banner`, then echoes.
pub async fn tcp_banner(banner: &'static [u8]) -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if stream.write_all(banner).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// gRPC echo: every `DiscoveryRequest` on the stream comes back as a `DiscoveryResponse`
/// whose `type_url` is the request's and whose `nonce` counts the messages.
struct GrpcEcho;

type Echoes = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;
type DeltaEchoes =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for GrpcEcho {
    type StreamAggregatedResourcesStream = Echoes;
    type DeltaAggregatedResourcesStream = DeltaEchoes;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Echoes>, tonic::Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok(Some(req)) = requests.message().await {
                n += 1;
                let resp = DiscoveryResponse {
                    type_url: req.type_url,
                    nonce: n.to_string(),
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaEchoes>, tonic::Status> {
        Err(tonic::Status::unimplemented("echo has no delta"))
    }
}

/// A gRPC (h2c) echo server.
pub async fn grpc_echo() -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(GrpcEcho))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

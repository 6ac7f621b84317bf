//! Request mirroring (Envoy's `request_mirror_policies`, Istio's `mirror`): a copy of the
//! request, its body streamed as it arrives, sent to another cluster with `-shadow` appended
//! to the host, fire and forget. The copy never delays or fails the original: its body
//! channel is fed with `try_send` (a slow mirror loses its copy, not the original's time),
//! and its response is read and dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pingora_http::RequestHeader;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use xds_client::model::UpstreamProtocol;

use crate::upstream::{ClusterRuntime, OriginalDestination};

type Body = BoxBody<Bytes, Infallible>;

/// Chunks of request body buffered per mirror before the copy is abandoned.
const BODY_CHUNKS: usize = 64;
/// Longest a mirrored request may take when the route sets no timeout.
const MAX_MIRROR_TIME: Duration = Duration::from_secs(60);

/// The clients mirrored requests go out on (HTTP/1.1 and HTTP/2 prior knowledge), shared by
/// every request of a proxy.
#[derive(Debug, Clone)]
pub struct Mirrors {
    h1: Client<HttpConnector, Body>,
    h2: Client<HttpConnector, Body>,
}

impl Default for Mirrors {
    fn default() -> Self {
        Mirrors::new()
    }
}

/// `host` with `-shadow` appended to its name (before any port), as Envoy does.
pub fn shadow_host(host: &str) -> String {
    if !host.starts_with('[') {
        if let Some((name, port)) = host.rsplit_once(':') {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                return format!("{name}-shadow:{port}");
            }
        }
    }
    format!("{host}-shadow")
}

impl Mirrors {
    /// Clients with no pool limits beyond hyper's defaults.
    pub fn new() -> Mirrors {
        let connector = || {
            let mut c = HttpConnector::new();
            c.set_nodelay(true);
            c
        };
        Mirrors {
            h1: Client::builder(TokioExecutor::new()).build(connector()),
            h2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(connector()),
        }
    }

    /// Send a copy of `req` to `cluster`; returns the sender of its body when the request has
    /// one (`has_body`). `None` when no host could be picked.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        cluster: &ClusterRuntime,
        dst: &OriginalDestination,
        req: &RequestHeader,
        authority: &str,
        shadow_suffix: bool,
        has_body: bool,
        timeout: Option<Duration>,
        is_h2: bool,
    ) -> Option<mpsc::Sender<Bytes>> {
        let address: SocketAddr = cluster.pick(dst).ok()?;
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let host = if shadow_suffix {
            shadow_host(authority)
        } else {
            authority.to_string()
        };
        let h2 = match cluster.protocol() {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::UseDownstream => is_h2,
        };
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(format!("http://{address}{path}"));
        for (name, value) in req.headers.iter() {
            if is_hop_by_hop(name.as_str()) {
                continue;
            }
            builder = builder.header(name, value);
        }
        builder = builder.header(http::header::HOST, host.as_str());
        let (sender, body): (Option<mpsc::Sender<Bytes>>, Body) = if has_body {
            let (tx, rx) = mpsc::channel::<Bytes>(BODY_CHUNKS);
            let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
            (Some(tx), BodyExt::boxed(StreamBody::new(stream)))
        } else {
            (None, BodyExt::boxed(Empty::new()))
        };
        let request = builder.body(body).ok()?;
        let client = if h2 { self.h2.clone() } else { self.h1.clone() };
        tokio::spawn(send(client, request, timeout));
        sender
    }
}

async fn send(
    client: Client<HttpConnector, Body>,
    request: http::Request<Body>,
    timeout: Option<Duration>,
) {
    let limit = timeout.unwrap_or(MAX_MIRROR_TIME).min(MAX_MIRROR_TIME);
    let exchange = async {
        match client.request(request).await {
            Ok(response) => {
                let _ = response.into_body().collect().await;
            }
            Err(e) => tracing::debug!(error = %e, "mirrored request failed"),
        }
    };
    let _ = tokio::time::timeout(limit, exchange).await;
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

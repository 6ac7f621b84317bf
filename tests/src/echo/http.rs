//! The HTTP port: HTTP/1.1 and h2c (prior knowledge) with JSON echo replies, and WebSocket
//! echo on any path.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::control::Controls;
use super::{ConnInfo, State};

/// What an HTTP reply says: who answered and what it saw. Serialized as the JSON body of
/// every non-WebSocket reply (one object, then a newline).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EchoReply {
    /// `--name` of the server.
    pub name: String,
    /// `--version` of the server.
    pub version: String,
    /// `--namespace` of the server, if given.
    pub namespace: Option<String>,
    /// Host name the server runs on.
    pub hostname: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: String,
    /// Request method.
    pub method: String,
    /// Request path with its query.
    pub path: String,
    /// `Host` header (HTTP/1) or `:authority` (HTTP/2); empty when absent.
    pub host: String,
    /// Every request header, lower-case name to its values in order (non-UTF-8 bytes
    /// replaced).
    pub headers: BTreeMap<String, Vec<String>>,
    /// Peer address as seen by the server (`ip:port`).
    pub peer: String,
    /// Local address of the connection (`ip:port`).
    pub local: String,
    /// The served port.
    pub port: u16,
    /// The status answered.
    pub status: u16,
    /// Size of the request body in bytes.
    pub body_len: usize,
    /// This call's number on its `fail-first` key, when the request used `fail-first`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_call: Option<u64>,
    /// Why a control was rejected (status 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `size` padding (`x` characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<String>,
}

impl EchoReply {
    /// Serializes the reply as one JSON line, padded to `size` bytes when that is larger than
    /// the unpadded line.
    pub fn to_body(&mut self, size: Option<usize>) -> Vec<u8> {
        self.padding = None;
        let plain = self.line();
        let Some(size) = size.filter(|s| *s > plain.len()) else {
            return plain;
        };
        self.padding = Some(String::new());
        let overhead = self.line().len();
        if size <= overhead {
            self.padding = None;
            return plain;
        }
        self.padding = Some("x".repeat(size - overhead));
        self.line()
    }

    fn line(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and maps of strings cannot fail.
        let mut body = serde_json::to_vec(self).unwrap_or_default();
        body.push(b'\n');
        body
    }
}

/// Names the protocol of a request the way replies print it.
pub fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Collects headers into name to values, keeping every value in order.
pub fn header_map(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        map.entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    map
}

/// Serves one HTTP connection (HTTP/1.1 or h2c, with upgrades) until it closes.
pub(crate) async fn serve_connection(state: Arc<State>, stream: TcpStream, conn: ConnInfo) {
    let service = hyper::service::service_fn(move |req| handle(state.clone(), conn, req));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!("http connection from {} ended: {e}", conn.peer);
    }
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == http::Method::GET
        && req.version() <= Version::HTTP_11
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && req.headers().contains_key(header::SEC_WEBSOCKET_KEY)
}

async fn handle(
    state: Arc<State>,
    conn: ConnInfo,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let start = Instant::now();
    let websocket = is_websocket(&req);
    let id = &state.identity;
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let mut reply = EchoReply {
        name: id.name.clone(),
        version: id.version.clone(),
        namespace: id.namespace.clone(),
        hostname: id.hostname.clone(),
        protocol: protocol_name(req.version()).to_string(),
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.to_string()),
        host,
        headers: header_map(req.headers()),
        peer: conn.peer.to_string(),
        local: conn.local.to_string(),
        port: conn.local.port(),
        status: 200,
        body_len: 0,
        fail_call: None,
        error: None,
        padding: None,
    };
    let controls = Controls::parse(req.headers(), req.uri().query());
    let on_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    if !websocket {
        match req.into_body().collect().await {
            Ok(body) => reply.body_len = body.to_bytes().len(),
            Err(e) => reply.error = Some(format!("reading the request body: {e}")),
        }
    }
    let controls = match controls {
        Ok(c) => c,
        Err(e) => {
            reply.error = Some(e.to_string());
            reply.status = 400;
            Controls::default()
        }
    };
    if let Some(delay) = controls.delay {
        tokio::time::sleep(delay).await;
    }
    if reply.error.is_none() {
        let outcome = controls.count_call(&state.counters, req_path(&reply.path));
        reply.fail_call = outcome.map(|o| o.call);
        reply.status = controls.http_status(outcome);
    }
    let mut response = match on_upgrade {
        Some(on_upgrade) if reply.status == 200 => {
            let mut response = websocket_accept(&reply);
            tokio::spawn(websocket_echo(on_upgrade, conn));
            reply.status = 101;
            response.headers_mut().extend(extra_headers(&state));
            response
        }
        _ => {
            let body = reply.to_body(controls.size);
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() =
                StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response.headers_mut().extend(extra_headers(&state));
            response
        }
    };
    for (name, value) in controls.response_headers {
        response.headers_mut().append(name, value);
    }
    tracing::info!(
        "{} {} {} host={} {} peer={} local={} {:.1}ms",
        reply.protocol,
        reply.method,
        reply.path,
        reply.host,
        reply.status,
        reply.peer,
        reply.local,
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(response)
}

/// The path without its query: the default `fail-first` key.
fn req_path(path_and_query: &str) -> &str {
    path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p)
}

fn extra_headers(state: &State) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-echo-name", &state.identity.name),
        ("x-echo-version", &state.identity.version),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    headers
}

fn websocket_accept(reply: &EchoReply) -> Response<Full<Bytes>> {
    let key = reply
        .headers
        .get("sec-websocket-key")
        .and_then(|v| v.first())
        .map(String::as_bytes)
        .unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key)) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Echoes every text and binary message of an upgraded connection until it closes.
async fn websocket_echo(on_upgrade: hyper::upgrade::OnUpgrade, conn: ConnInfo) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::info!("websocket upgrade from {} failed: {e}", conn.peer);
            return;
        }
    };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let mut echoed = 0u64;
    while let Some(message) = ws.next().await {
        match message {
            Ok(m) if m.is_text() || m.is_binary() => {
                if ws.send(m).await.is_err() {
                    break;
                }
                echoed += 1;
            }
            // Pings are answered and closes acknowledged by tungstenite itself.
            Ok(_) => {}
            Err(_) => break,
        }
    }
    tracing::info!(
        "websocket from {} closed after {echoed} messages",
        conn.peer
    );
}

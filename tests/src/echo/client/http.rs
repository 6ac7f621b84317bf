//! `mesh-echo client http`: HTTP/1.1 or h2c requests, one JSON line per response.

use std::time::{Duration, Instant};

use ::http::header::{HeaderMap, HeaderName, HeaderValue, HOST, USER_AGENT};
use ::http::{Method, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{elapsed_ms, headers_json, parse_duration, parse_header, ClientError, Sink};

/// Flags of `mesh-echo client http`.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// `http://HOST[:PORT]/PATH?QUERY` (plaintext only).
    pub url: String,
    /// Speak h2c with prior knowledge instead of HTTP/1.1.
    #[arg(long)]
    pub h2c: bool,
    /// Request header `name: value` (repeatable); `Host` sets the authority.
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request method.
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: Method,
    /// Request body.
    #[arg(short = 'd', long)]
    pub data: Option<String>,
    /// Number of requests, sent one after the other on one connection.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Limit for each request, connecting included.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Treat any other status as a failure.
    #[arg(long)]
    pub expect_status: Option<u16>,
}

/// One response, as printed.
#[derive(Debug, serde::Serialize)]
struct Line {
    status: Option<u16>,
    headers: std::collections::BTreeMap<String, Vec<String>>,
    body: serde_json::Value,
    error: Option<String>,
    elapsed_ms: f64,
}

/// Where requests go and how they are addressed.
struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// Sends `--count` requests and prints one line each. Returns whether every request got a
/// response (with the expected status, when `--expect-status` is given).
pub async fn run(args: &HttpArgs, sink: &mut Sink<'_>) -> Result<bool, ClientError> {
    let target = parse_target(args)?;
    let mut sender = None;
    let mut ok = true;
    for _ in 0..args.count {
        let start = Instant::now();
        let result = tokio::time::timeout(args.timeout, send(&mut sender, &target, args))
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {:?}", args.timeout)));
        let line = match result {
            Ok((status, headers, body)) => {
                if args.expect_status.is_some_and(|s| s != status) {
                    ok = false;
                }
                Line {
                    status: Some(status),
                    headers: headers_json(&headers),
                    body: serde_json::from_slice(&body).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
                    }),
                    error: None,
                    elapsed_ms: elapsed_ms(start),
                }
            }
            Err(error) => {
                ok = false;
                sender = None;
                Line {
                    status: None,
                    headers: Default::default(),
                    body: serde_json::Value::Null,
                    error: Some(error),
                    elapsed_ms: elapsed_ms(start),
                }
            }
        };
        sink(&serde_json::to_value(&line).unwrap_or_default())?;
    }
    Ok(ok)
}

fn parse_target(args: &HttpArgs) -> Result<Target, ClientError> {
    let invalid = |reason: &str| ClientError::Target {
        target: args.url.clone(),
        reason: reason.to_string(),
    };
    let uri: Uri = args.url.parse().map_err(|_| invalid("not a URL"))?;
    if uri.scheme_str().is_some_and(|s| s != "http") {
        return Err(invalid("only http:// URLs are supported"));
    }
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
    let host_override = args
        .headers
        .iter()
        .find(|(name, _)| name == HOST)
        .and_then(|(_, v)| v.to_str().ok());
    Ok(Target {
        host: authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: authority.port_u16().unwrap_or(80),
        authority: host_override.unwrap_or(authority.as_str()).to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.to_string()),
    })
}

async fn connect(target: &Target, h2c: bool) -> Result<Sender, String> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", target.host, target.port))?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    if h2c {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2c handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| format!("http/1.1 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::H1(sender))
    }
}

async fn send(
    sender: &mut Option<Sender>,
    target: &Target,
    args: &HttpArgs,
) -> Result<(u16, HeaderMap, Bytes), String> {
    if sender.as_ref().is_none_or(Sender::is_closed) {
        *sender = Some(connect(target, args.h2c).await?);
    }
    let uri = if args.h2c {
        format!("http://{}{}", target.authority, target.path)
    } else {
        target.path.clone()
    };
    let body = Full::new(Bytes::from(args.data.clone().unwrap_or_default()));
    let mut req = Request::builder()
        .method(args.method.clone())
        .uri(uri)
        .body(body)
        .map_err(|e| format!("building the request: {e}"))?;
    let headers = req.headers_mut();
    headers.insert(USER_AGENT, HeaderValue::from_static("mesh-echo-client"));
    if !args.h2c {
        if let Ok(host) = HeaderValue::from_str(&target.authority) {
            headers.insert(HOST, host);
        }
    }
    for (name, value) in &args.headers {
        if name == HOST {
            continue;
        }
        if name == USER_AGENT {
            headers.remove(USER_AGENT);
        }
        headers.append(name.clone(), value.clone());
    }
    let response = match sender {
        Some(Sender::H1(s)) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(req).await
        }
        Some(Sender::H2(s)) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(req).await
        }
        None => return Err("no connection".to_string()),
    }
    .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("reading the response body: {e}"))?
        .to_bytes();
    Ok((parts.status.as_u16(), parts.headers, body))
}

//! `mesh-echo client ws`: WebSocket echo round trips, one JSON line in the end.

use std::time::Duration;

use ::http::header::{HeaderName, HeaderValue};
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use super::{headers_json, parse_duration, parse_header, ClientError, Sink};

/// Flags of `mesh-echo client ws`.
#[derive(Debug, Clone, clap::Args)]
pub struct WsArgs {
    /// `ws://HOST:PORT/PATH` (plaintext only).
    pub url: String,
    /// Number of messages to send (even ones text, odd ones binary).
    #[arg(long, default_value_t = 3)]
    pub messages: u32,
    /// Handshake request header `name: value` (repeatable); `Host` replaces the Host header.
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Limit for the handshake and for each echo.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The handshake and the messages so far, as printed.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    status: Option<u16>,
    headers: std::collections::BTreeMap<String, Vec<String>>,
    sent: u32,
    echoed: u32,
    ok: bool,
    error: Option<String>,
}

/// Connects, sends `--messages` messages one at a time, checks each echo, closes, and prints
/// one line. Returns whether every message came back unchanged.
pub async fn run(args: &WsArgs, sink: &mut Sink<'_>) -> Result<bool, ClientError> {
    let mut request = args
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Target {
            target: args.url.clone(),
            reason: e.to_string(),
        })?;
    for (name, value) in &args.headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let mut report = Report::default();
    if let Err(error) = exchange(args, request, &mut report).await {
        report.error = Some(error);
    }
    report.ok = report.error.is_none() && report.echoed == args.messages;
    sink(&serde_json::to_value(&report).unwrap_or_default())?;
    Ok(report.ok)
}

async fn exchange(
    args: &WsArgs,
    request: ::http::Request<()>,
    report: &mut Report,
) -> Result<(), String> {
    let limit = args.timeout;
    let timed_out = |what: &str| format!("{what} timed out after {limit:?}");
    let (mut ws, response) = tokio::time::timeout(limit, tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| timed_out("handshake"))?
        .map_err(|e| format!("handshake: {e}"))?;
    report.status = Some(response.status().as_u16());
    report.headers = headers_json(response.headers());
    for i in 0..args.messages {
        let text = format!("mesh-echo message {i}");
        let message = if i % 2 == 0 {
            Message::text(text)
        } else {
            Message::binary(text.into_bytes())
        };
        tokio::time::timeout(limit, ws.send(message.clone()))
            .await
            .map_err(|_| timed_out("send"))?
            .map_err(|e| format!("send: {e}"))?;
        report.sent += 1;
        let echo = loop {
            let next = tokio::time::timeout(limit, ws.next())
                .await
                .map_err(|_| timed_out("echo"))?
                .ok_or_else(|| format!("connection closed before echo {i}"))?
                .map_err(|e| format!("receive: {e}"))?;
            if next.is_text() || next.is_binary() || next.is_close() {
                break next;
            }
        };
        if echo != message {
            return Err(format!("echo {i} differs: sent {message:?}, got {echo:?}"));
        }
        report.echoed += 1;
    }
    // A clean close; the echo check is already done, so a failure here is only reported.
    let _ = tokio::time::timeout(limit, ws.close(None)).await;
    Ok(())
}

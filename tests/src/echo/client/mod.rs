//! `mesh-echo client`: the real clients end-to-end tests drive (gRPC, WebSocket, TCP, and
//! HTTP when curl is not enough).
//!
//! Every mode prints JSON lines on stdout and exits non-zero when something failed (see each
//! mode). Host names are resolved with the system resolver (`getaddrinfo`, so `/etc/hosts`).
//!
//! - `mesh-echo client http URL [--h2c] [-X METHOD] [-d BODY] [-H 'k: v']... [--count N]
//!   [--timeout 5s] [--expect-status S]`: one line per response,
//!   `{"status":200,"headers":{"k":["v"]},"body":<JSON or string>,"error":null,"elapsed_ms":1.2}`;
//!   a transport failure gives `"status":null` and `"error"`. Exit 1 when any request failed
//!   at transport level, or, with `--expect-status`, answered another status. `-H 'Host: x'`
//!   sets the Host header (HTTP/1.1) or `:authority` (h2c). One connection is reused across
//!   `--count` requests (reopened after a failure).
//! - `mesh-echo client grpc HOST:PORT [--authority A] [--message M] [--stream N | --chat N]
//!   [--count N] [-H 'k: v']... [--timeout 5s] [--expect-code C]`: `--count` calls of unary
//!   `Echo` (default), `StreamEcho` asking N replies, or `Chat` sending N messages. One line
//!   per reply, `{"rpc":"Echo","call":0,"code":0,"message":"","metadata":{...},"reply":{...}}`,
//!   or per failed call `{"rpc":..,"call":..,"code":14,"message":"...","reply":null}`; `reply`
//!   is the `EchoResponse` with `metadata` as name to values and `padding_len` for the
//!   padding. Exit 1 when any call ended with a code other than `--expect-code` (default 0),
//!   or a stream or chat got a different number of replies than asked.
//! - `mesh-echo client ws ws://HOST:PORT/PATH [--messages N] [-H 'k: v']... [--timeout 5s]`:
//!   sends N messages (even ones text `mesh-echo message I`, odd ones the same as binary),
//!   checks each echo, and prints one line `{"status":101,"headers":{...},"sent":N,
//!   "echoed":N,"ok":true,"error":null}`. Exit 1 unless every message came back unchanged.
//! - `mesh-echo client tcp HOST:PORT [--data STR] [--expect-banner] [--timeout 5s]`: with
//!   `--expect-banner`, first reads one line, which must start with `mesh-echo `, before
//!   sending anything; then sends the data (unless empty), half-closes, reads to the end and
//!   prints `{"banner":"mesh-echo reviews v2","sent":"..","received":"..","ok":true,
//!   "error":null}`. Exit 1 unless everything sent came back.

pub mod grpc;
pub mod http;
pub mod tcp;
pub mod ws;

use std::collections::BTreeMap;
use std::time::Duration;

use ::http::{HeaderName, HeaderValue};

/// Why a client run could not even start or failed as a whole. Per-request failures are
/// reported in the JSON lines instead.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A `-H` argument is not `name: value` with a valid name and value.
    #[error("invalid header {0:?}: expected 'name: value'")]
    Header(String),
    /// The URL or target cannot be used.
    #[error("invalid target {target:?}: {reason}")]
    Target {
        /// The URL or `HOST:PORT` given.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A duration flag is not a duration.
    #[error("invalid duration {0:?}")]
    Duration(String),
    /// Printing to stdout failed.
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

/// `mesh-echo client` modes.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCommand {
    /// HTTP/1.1 or h2c requests.
    Http(http::HttpArgs),
    /// gRPC calls to mesh.echo.v1.EchoService.
    Grpc(grpc::GrpcArgs),
    /// WebSocket echo round trips.
    Ws(ws::WsArgs),
    /// Raw TCP echo (and banner) check.
    Tcp(tcp::TcpArgs),
}

/// Runs one client mode, printing its JSON lines on stdout. Returns whether everything met
/// expectations (the process exit status).
pub async fn run(command: &ClientCommand) -> Result<bool, ClientError> {
    match command {
        ClientCommand::Http(args) => http::run(args, &mut print_line).await,
        ClientCommand::Grpc(args) => grpc::run(args, &mut print_line).await,
        ClientCommand::Ws(args) => ws::run(args, &mut print_line).await,
        ClientCommand::Tcp(args) => tcp::run(args, &mut print_line).await,
    }
}

/// Receives each JSON line a client mode produces.
pub type Sink<'a> = dyn FnMut(&serde_json::Value) -> Result<(), ClientError> + Send + 'a;

fn print_line(line: &serde_json::Value) -> Result<(), ClientError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(ClientError::Stdout)
}

/// Parses a `-H` argument, `name: value` (or `name=value`).
pub fn parse_header(arg: &str) -> Result<(HeaderName, HeaderValue), ClientError> {
    let invalid = || ClientError::Header(arg.to_string());
    let (name, value) = arg
        .split_once(':')
        .or_else(|| arg.split_once('='))
        .ok_or_else(invalid)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| invalid())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| invalid())?;
    Ok((name, value))
}

/// Parses a duration flag (`5s`, `250ms`, or bare milliseconds).
pub fn parse_duration(arg: &str) -> Result<Duration, ClientError> {
    super::control::parse_delay(arg).map_err(|_| ClientError::Duration(arg.to_string()))
}

/// Collects headers as name to every value, as the clients print them.
pub fn headers_json(headers: &::http::HeaderMap) -> BTreeMap<String, Vec<String>> {
    super::http::header_map(headers)
}

/// Milliseconds elapsed since `start`, rounded to microseconds.
fn elapsed_ms(start: std::time::Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
}

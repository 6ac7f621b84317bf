//! Access log: one line per HTTP request and per TCP connection, written to stdout as JSON with
//! Istio's JSON field names (`EnvoyJSONLogFormatIstio`) or in Istio's default TEXT layout
//! ([`text`]), per `--access-log-format json|text`; `--access-log off` turns it off.
//!
//! The data path never blocks on it: [`AccessLog::log`] hands the entry to a bounded channel
//! and returns; a dedicated writer thread formats and writes the lines (stdout may be a slow
//! pipe). When the channel is full the entry is dropped and counted ([`AccessLog::dropped`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

pub mod text;

#[cfg(test)]
mod tests;

/// How lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line, Istio's field names.
    #[default]
    Json,
    /// Istio's default text layout.
    Text,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "text" => Ok(Format::Text),
            _ => Err(format!("`{s}`: expected json or text")),
        }
    }
}

/// Errors of the access log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The writer thread could not be started.
    #[error("cannot start the access log writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Envoy's response flags, the subset the proxy sets. Serialized as Envoy's short code (`-`
/// when none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseFlag {
    /// No flag.
    #[default]
    None,
    /// `NR`: no route for the request, or no filter chain for the connection.
    NoRoute,
    /// `NC`: the route's or the TCP proxy's cluster does not exist.
    NoClusterFound,
    /// `UH`: no healthy upstream endpoint (includes the black hole).
    NoHealthyUpstream,
    /// `UF`: the upstream connection failed.
    UpstreamConnectionFailure,
    /// `UT`: the route's timeout elapsed before the upstream answered.
    UpstreamRequestTimeout,
    /// `UC`: the upstream closed or reset the connection before answering.
    UpstreamConnectionTermination,
    /// `DC`: the downstream closed the connection before the response was sent.
    DownstreamConnectionTermination,
    /// `SI`: an idle timeout closed the stream or connection.
    StreamIdleTimeout,
    /// `UO`: a circuit breaker refused the request (overflow).
    UpstreamOverflow,
    /// `URX`: the request was not retried because the retry limit was reached.
    UpstreamRetryLimitExceeded,
    /// `DI`: the fault filter delayed the request.
    DelayInjected,
    /// `FI`: the fault filter aborted the request.
    FaultInjected,
}

impl ResponseFlag {
    /// Envoy's short code.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::None => "-",
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoClusterFound => "NC",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::StreamIdleTimeout => "SI",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::DelayInjected => "DI",
            ResponseFlag::FaultInjected => "FI",
        }
    }

    /// A small distinct number per flag (1..=12).
    fn rank(self) -> u32 {
        match self {
            ResponseFlag::None => 0,
            ResponseFlag::NoHealthyUpstream => 1,
            ResponseFlag::UpstreamRequestTimeout => 2,
            ResponseFlag::UpstreamConnectionFailure => 3,
            ResponseFlag::UpstreamConnectionTermination => 4,
            ResponseFlag::UpstreamOverflow => 5,
            ResponseFlag::NoRoute => 6,
            ResponseFlag::DelayInjected => 7,
            ResponseFlag::FaultInjected => 8,
            ResponseFlag::DownstreamConnectionTermination => 9,
            ResponseFlag::UpstreamRetryLimitExceeded => 10,
            ResponseFlag::StreamIdleTimeout => 11,
            ResponseFlag::NoClusterFound => 12,
        }
    }

    fn from_rank(rank: u64) -> ResponseFlag {
        match rank {
            1 => ResponseFlag::NoHealthyUpstream,
            2 => ResponseFlag::UpstreamRequestTimeout,
            3 => ResponseFlag::UpstreamConnectionFailure,
            4 => ResponseFlag::UpstreamConnectionTermination,
            5 => ResponseFlag::UpstreamOverflow,
            6 => ResponseFlag::NoRoute,
            7 => ResponseFlag::DelayInjected,
            8 => ResponseFlag::FaultInjected,
            9 => ResponseFlag::DownstreamConnectionTermination,
            10 => ResponseFlag::UpstreamRetryLimitExceeded,
            11 => ResponseFlag::StreamIdleTimeout,
            12 => ResponseFlag::NoClusterFound,
            _ => ResponseFlag::None,
        }
    }
}

impl Serialize for ResponseFlag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A text field set by the data path: a constant, or a string built once with the
/// configuration and shared (no allocation per request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    /// A constant.
    Static(&'static str),
    /// A shared string (e.g. `rbac_access_denied_matched_policy[NAME]`).
    Shared(Arc<str>),
}

impl std::ops::Deref for Detail {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Detail::Static(s) => s,
            Detail::Shared(s) => s,
        }
    }
}

impl From<&'static str> for Detail {
    fn from(s: &'static str) -> Detail {
        Detail::Static(s)
    }
}

impl From<Arc<str>> for Detail {
    fn from(s: Arc<str>) -> Detail {
        Detail::Shared(s)
    }
}

impl Serialize for Detail {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

/// A set of response flags, written as Envoy 1.40 writes them: comma-separated in the order
/// they were set (a retry limit noted before the failure that ends the request gives
/// `URX,UF`, `URX,UT`), `-` when empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseFlags {
    /// Bit `rank` per flag set.
    set: u32,
    /// The ranks in the order they were set, 4 bits each, first in the low bits.
    order: u64,
}

impl ResponseFlags {
    /// Add a flag (a flag already set keeps its place).
    pub fn insert(&mut self, flag: ResponseFlag) {
        if flag == ResponseFlag::None || self.contains(flag) {
            return;
        }
        let slot = self.set.count_ones();
        self.set |= 1 << flag.rank();
        self.order |= u64::from(flag.rank()) << (4 * slot);
    }

    /// Whether `flag` is set.
    pub fn contains(self, flag: ResponseFlag) -> bool {
        flag != ResponseFlag::None && self.set & (1 << flag.rank()) != 0
    }

    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.set == 0
    }

    /// The flags in the order they were set.
    pub fn iter(self) -> impl Iterator<Item = ResponseFlag> {
        (0..self.set.count_ones())
            .map(move |i| ResponseFlag::from_rank((self.order >> (4 * i)) & 0xf))
    }
}

impl From<ResponseFlag> for ResponseFlags {
    fn from(flag: ResponseFlag) -> Self {
        let mut set = ResponseFlags::default();
        set.insert(flag);
        set
    }
}

impl std::fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, flag) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(flag.as_str())?;
        }
        Ok(())
    }
}

impl Serialize for ResponseFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One access-log line. Field names are Istio's JSON access log names; absent values are
/// written as `null` (Istio's `-`).
#[derive(Clone, Debug, Serialize)]
pub struct AccessLogEntry {
    /// When the request (or connection) started; written as RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339_ms")]
    pub start_time: SystemTime,
    /// HTTP method.
    pub method: Option<String>,
    /// Path with query.
    pub path: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`, ...; `null` for TCP.
    pub protocol: Option<&'static str>,
    /// Response status sent downstream; 0 for TCP or when nothing was sent.
    pub response_code: u16,
    /// Envoy response flags.
    pub response_flags: ResponseFlags,
    /// Why this response code (Envoy's `%RESPONSE_CODE_DETAILS%`).
    pub response_code_details: Option<Detail>,
    /// Why the proxy closed the connection (Envoy's `%CONNECTION_TERMINATION_DETAILS%`,
    /// e.g. a TCP connection denied by RBAC).
    pub connection_termination_details: Option<Detail>,
    /// What the dry-run (shadow) authorization rules decided: `allowed` or `denied` (Envoy's
    /// `shadow_engine_result` metadata); `null` when no dry-run rule applies.
    pub shadow_engine_result: Option<&'static str>,
    /// The dry-run policy that matched (Envoy's `shadow_effective_policy_id`).
    pub shadow_effective_policy_id: Option<Detail>,
    /// Set when an AUDIT authorization rule applies: whether it matched (Envoy's
    /// `access_log_hint`).
    pub access_log_hint: Option<bool>,
    /// The request's authority (`Host` or `:authority`).
    pub authority: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
    /// `x-forwarded-for`.
    pub x_forwarded_for: Option<String>,
    /// Milliseconds from start to the end of the request or connection.
    pub duration: u64,
    /// Body bytes received from the downstream.
    pub bytes_received: u64,
    /// Body bytes sent to the downstream.
    pub bytes_sent: u64,
    /// Address of the upstream endpoint used.
    pub upstream_host: Option<SocketAddr>,
    /// Name of the upstream cluster used.
    pub upstream_cluster: Option<String>,
    /// The downstream peer.
    pub downstream_remote_address: Option<SocketAddr>,
    /// The connection's original destination.
    pub downstream_local_address: Option<SocketAddr>,
    /// Name of the route that matched.
    pub route_name: Option<String>,
    /// Milliseconds from sending the request upstream to the first byte of the response
    /// (Envoy's `x-envoy-upstream-service-time`, written as a string as Envoy does).
    pub upstream_service_time: Option<String>,
    /// The local address of the upstream connection.
    pub upstream_local_address: Option<SocketAddr>,
    /// The TLS server name the downstream asked for.
    pub requested_server_name: Option<String>,
    /// The URI SAN of the downstream's verified client certificate (Envoy's
    /// `%DOWNSTREAM_PEER_URI_SAN%`): set on mutual TLS connections.
    pub downstream_peer_uri_san: Option<String>,
    /// Why the TLS connection to the upstream failed (Istio's
    /// `upstream_transport_failure_reason`).
    pub upstream_transport_failure_reason: Option<String>,
}

impl AccessLogEntry {
    /// An entry with only the start time set.
    pub fn new(start_time: SystemTime) -> AccessLogEntry {
        AccessLogEntry {
            start_time,
            method: None,
            path: None,
            protocol: None,
            response_code: 0,
            response_flags: ResponseFlags::default(),
            response_code_details: None,
            connection_termination_details: None,
            shadow_engine_result: None,
            shadow_effective_policy_id: None,
            access_log_hint: None,
            authority: None,
            request_id: None,
            user_agent: None,
            x_forwarded_for: None,
            duration: 0,
            bytes_received: 0,
            bytes_sent: 0,
            upstream_host: None,
            upstream_cluster: None,
            downstream_remote_address: None,
            downstream_local_address: None,
            route_name: None,
            upstream_service_time: None,
            upstream_local_address: None,
            requested_server_name: None,
            downstream_peer_uri_san: None,
            upstream_transport_failure_reason: None,
        }
    }

    /// The response flags as Envoy writes them (`-` for none).
    pub fn response_flags_str(&self) -> String {
        self.response_flags.to_string()
    }
}

fn rfc3339_ms<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let t: DateTime<Utc> = (*t).into();
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

enum Message {
    Entry(Box<AccessLogEntry>),
    Flush(SyncSender<()>),
}

/// The access log sink: cheap to call from any thread, never blocks.
#[derive(Debug)]
pub struct AccessLog {
    tx: Option<SyncSender<Message>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Entry(_) => f.write_str("Entry"),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AccessLog {
    /// Start a writer thread that writes to stdout, with room for `capacity` pending lines.
    pub fn stdout(capacity: usize) -> Result<Arc<AccessLog>, Error> {
        AccessLog::spawn(std::io::stdout(), capacity)
    }

    /// Start a writer thread that writes JSON lines to `out`, with room for `capacity`
    /// pending lines.
    pub fn spawn<W: Write + Send + 'static>(
        out: W,
        capacity: usize,
    ) -> Result<Arc<AccessLog>, Error> {
        AccessLog::spawn_with(out, capacity, Format::Json)
    }

    /// Start a writer thread that writes lines in `format` to `out`, with room for `capacity`
    /// pending lines.
    pub fn spawn_with<W: Write + Send + 'static>(
        out: W,
        capacity: usize,
        format: Format,
    ) -> Result<Arc<AccessLog>, Error> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out, format))
            .map_err(Error::Spawn)?;
        Ok(Arc::new(AccessLog {
            tx: Some(tx),
            dropped: AtomicU64::new(0),
        }))
    }

    /// An access log that writes nothing (`--access-log off`).
    pub fn off() -> Arc<AccessLog> {
        Arc::new(AccessLog {
            tx: None,
            dropped: AtomicU64::new(0),
        })
    }

    /// Whether lines are written at all (callers may skip building entries otherwise).
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queue one entry; drops (and counts) it when the queue is full.
    pub fn log(&self, entry: AccessLogEntry) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Message::Entry(Box::new(entry))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait (at most `timeout`) until every entry queued before this call is written and
    /// flushed. Returns whether that happened in time. May block: not for the data path.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let deadline = std::time::Instant::now() + timeout;
        let mut message = Message::Flush(ack_tx);
        loop {
            match tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if std::time::Instant::now() >= deadline {
                        return false;
                    }
                    message = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        ack_rx.recv_timeout(left).is_ok()
    }
}

fn writer<W: Write>(rx: Receiver<Message>, out: W, format: Format) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(1024);
    let mut text_line = String::with_capacity(1024);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Entry(entry) => match format {
                    Format::Json => {
                        line.clear();
                        if serde_json::to_writer(&mut line, &*entry).is_ok() {
                            line.push(b'\n');
                            let _ = out.write_all(&line);
                        }
                    }
                    Format::Text => {
                        text_line.clear();
                        text::render(&entry, &mut text_line);
                        text_line.push('\n');
                        let _ = out.write_all(text_line.as_bytes());
                    }
                },
                Message::Flush(ack) => {
                    let _ = out.flush();
                    let _ = ack.try_send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

//! Application protocol detection on plaintext connections (Envoy's HTTP inspector).
//!
//! The first bytes are read — with cancel-safe reads under one deadline — until they decide
//! the protocol: an HTTP/1.x request line (`METHOD SP TARGET SP HTTP/1.x`) is `http/1.1`, the
//! HTTP/2 connection preface is `h2c`, anything else is TCP. The caller puts the bytes back
//! ([`pingora_core::protocols::l4::stream::Stream::rewind`]). A client that sends nothing
//! within the detection timeout (a server-first protocol) is TCP, as is one that stops in the
//! middle of an undecided prefix.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest method token accepted.
const MAX_METHOD: usize = 32;
/// Longest request line inspected; longer undecided input is TCP.
pub const MAX_INSPECTED: usize = 16 * 1024;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 preface (prior knowledge, plaintext).
    H2c,
    /// Anything else, or nothing in time.
    Tcp,
}

impl Detected {
    /// The application protocol name filter chains match on (`http/1.1`, `h2c`), or `None`.
    pub fn application_protocol(self) -> Option<&'static str> {
        match self {
            Detected::Http1 => Some("http/1.1"),
            Detected::H2c => Some("h2c"),
            Detected::Tcp => None,
        }
    }
}

/// Classify the bytes read so far; `None` means more bytes are needed.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    let decided = classify_prefix(buf);
    if decided.is_none() && buf.len() >= MAX_INSPECTED {
        return Some(Detected::Tcp);
    }
    decided
}

fn classify_prefix(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return None;
    }
    if buf.starts_with(H2_PREFACE) {
        return Some(Detected::H2c);
    }
    // Method: a token, then one space.
    let method = buf.iter().take_while(|b| is_tchar(**b)).count();
    if method > MAX_METHOD {
        return Some(Detected::Tcp);
    }
    if method == buf.len() {
        return None;
    }
    if method == 0 || buf[method] != b' ' {
        return Some(Detected::Tcp);
    }
    // Target: visible ASCII, then one space.
    let rest = &buf[method + 1..];
    let target = rest
        .iter()
        .take_while(|b| (0x21..=0x7e).contains(*b))
        .count();
    if target == rest.len() {
        return None;
    }
    if target == 0 || rest[target] != b' ' {
        return Some(Detected::Tcp);
    }
    // Version: `HTTP/1.` DIGIT, then the end of the line.
    const VERSION: &[u8] = b"HTTP/1.";
    let version = &rest[target + 1..];
    let n = version.len().min(VERSION.len());
    if version[..n] != VERSION[..n] {
        return Some(Detected::Tcp);
    }
    match version.get(VERSION.len()) {
        None => None,
        Some(d) if !d.is_ascii_digit() => Some(Detected::Tcp),
        Some(_) => match version.get(VERSION.len() + 1) {
            None => None,
            Some(b'\r') | Some(b'\n') => Some(Detected::Http1),
            Some(_) => Some(Detected::Tcp),
        },
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Read from `stream` until its protocol is decided or `timeout` (counted from the call)
/// passes. Returns the decision and every byte read, which the caller must put back. Reads are
/// cancel-safe, so nothing is lost when the deadline cuts one short.
pub async fn detect<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> std::io::Result<(Detected, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_elapsed) => return Ok((Detected::Tcp, buf)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => return Ok((classify(&buf).unwrap_or(Detected::Tcp), buf)),
            Ok(Ok(_)) => {
                if let Some(decided) = classify(&buf) {
                    return Ok((decided, buf));
                }
            }
        }
    }
}

//! Transport protocol detection (Envoy's TLS inspector): a connection whose first bytes are a
//! TLS ClientHello is `tls`, with the SNI and ALPN protocols it offers; anything else, or
//! nothing within the detection timeout, is `raw_buffer`. The bytes read are put back.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest ClientHello inspected (Envoy's default `max_client_hello_size` is 16 KiB; a
/// handshake message may span records, so allow a little more).
pub const MAX_HELLO: usize = 64 * 1024;

/// What a ClientHello offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `server_name` extension's host name.
    pub server_name: Option<String>,
    /// The ALPN protocols offered, in the client's order.
    pub alpn: Vec<String>,
}

/// The result of inspecting the bytes read so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inspection {
    /// Not TLS (plaintext).
    Plain,
    /// A complete ClientHello.
    Tls(ClientHello),
    /// TLS so far; more bytes are needed.
    NeedMore,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Inspects the first bytes of a connection.
pub fn inspect(buf: &[u8]) -> Inspection {
    // Record header: handshake (22), version 3.x, length.
    match buf {
        [] => return Inspection::NeedMore,
        [22] | [22, 3] | [22, 3, _] | [22, 3, _, _] => return Inspection::NeedMore,
        [22, 3, minor, ..] if *minor <= 4 => {}
        _ => return Inspection::Plain,
    }
    // Gather the handshake bytes from consecutive handshake records.
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            break;
        }
        if rest[0] != 22 || rest[1] != 3 {
            return Inspection::Plain;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Inspection::Plain;
        }
        let available = rest.len().saturating_sub(5).min(len);
        handshake.extend_from_slice(&rest[5..5 + available]);
        if available < len {
            break;
        }
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            let body = usize::from(handshake[1]) << 16
                | usize::from(handshake[2]) << 8
                | usize::from(handshake[3]);
            if handshake.len() >= 4 + body {
                break;
            }
        }
    }
    if handshake.len() < 4 {
        return Inspection::NeedMore;
    }
    if handshake[0] != 1 {
        // Not a ClientHello.
        return Inspection::Plain;
    }
    let mut r = Reader {
        buf: &handshake[1..],
    };
    let Some(body_len) = r.u24() else {
        return Inspection::NeedMore;
    };
    if body_len + 4 > MAX_HELLO {
        return Inspection::Plain;
    }
    let Some(body) = r.take(body_len) else {
        return Inspection::NeedMore;
    };
    parse_client_hello(body).map_or(Inspection::Plain, Inspection::Tls)
}

fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader { buf: body };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    if r.buf.is_empty() {
        return Some(hello);
    }
    let mut ext = Reader { buf: r.vec16()? };
    while !ext.buf.is_empty() {
        let kind = ext.u16()?;
        let data = ext.vec16()?;
        let mut d = Reader { buf: data };
        match kind {
            0 => {
                let mut list = Reader { buf: d.vec16()? };
                while !list.buf.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 && hello.server_name.is_none() {
                        hello.server_name =
                            Some(String::from_utf8_lossy(name).to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let mut list = Reader { buf: d.vec16()? };
                while !list.buf.is_empty() {
                    let p = list.vec8()?;
                    hello.alpn.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// Reads from `stream` until the transport is decided or `timeout` (from the call) passes.
/// Returns the ClientHello (`None`: plaintext) and every byte read, which the caller must put
/// back. A client that sends nothing in time is plaintext (a server-first protocol).
pub async fn detect<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> std::io::Result<(Option<ClientHello>, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::with_capacity(2048);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8192);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_elapsed) => return Ok((None, buf)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => {
                let hello = match inspect(&buf) {
                    Inspection::Tls(h) => Some(h),
                    _ => None,
                };
                return Ok((hello, buf));
            }
            Ok(Ok(_)) => match inspect(&buf) {
                Inspection::Plain => return Ok((None, buf)),
                Inspection::Tls(h) => return Ok((Some(h), buf)),
                Inspection::NeedMore if buf.len() >= MAX_HELLO => return Ok((None, buf)),
                Inspection::NeedMore => {}
            },
        }
    }
}

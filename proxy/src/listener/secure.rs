//! TLS on the capture listeners: a terminated TLS connection handed to the HTTP proxy as a
//! plaintext stream (a Pingora virtual socket, so that the HTTP proxy detects HTTP/2 by its
//! preface, whatever ALPN the client used: Istio clients offer `istio-h2`, not `h2`), and the
//! access-log line of a failed handshake.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use pingora_boringssl::tokio_ssl::SslStream;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::accesslog::{AccessLogEntry, Detail, ResponseFlag};
use crate::shared::Shared;
use crate::stats::Stats;
use crate::tls::TlsError;

/// A terminated TLS connection.
pub struct TlsSocket(pub SslStream<Box<L4Stream>>);

impl std::fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSocket")
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl VirtualSocket for TlsSocket {
    fn set_socket_option(&self, _opt: VirtualSockOpt) -> io::Result<()> {
        // The TCP socket under the TLS session was set up at accept time.
        Ok(())
    }
}

impl TlsSocket {
    /// The connection as a Pingora L4 stream.
    pub fn into_stream(self) -> L4Stream {
        L4Stream::from(VirtualSocketStream::new(Box::new(self)))
    }
}

/// Counts a failed server handshake and writes its access-log line.
pub fn handshake_failed(
    shared: &Shared,
    error: &TlsError,
    peer: Option<SocketAddr>,
    destination: SocketAddr,
    server_name: Option<&str>,
) {
    let stats = &shared.stats;
    Stats::incr(&stats.ssl_connection_error);
    match error {
        TlsError::SanMismatch { .. } => Stats::incr(&stats.ssl_fail_verify_san),
        TlsError::NoPeerCertificate => Stats::incr(&stats.ssl_fail_verify_no_cert),
        TlsError::Handshake(m) if m.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") => {
            Stats::incr(&stats.ssl_fail_verify_no_cert)
        }
        _ => {}
    }
    tracing::debug!(?peer, error = %error, "downstream TLS handshake refused");
    let mut entry = AccessLogEntry::new(SystemTime::now());
    entry.response_flags = ResponseFlag::DownstreamConnectionTermination.into();
    entry.connection_termination_details =
        Some(Detail::Shared(format!("tls_error: {error}").into()));
    entry.downstream_remote_address = peer;
    entry.downstream_local_address = Some(destination);
    entry.requested_server_name = server_name.map(str::to_string);
    shared.access_log.log(entry);
}

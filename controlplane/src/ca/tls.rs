//! The TLS side of the control plane (15012): a BoringSSL acceptor with the control plane's
//! serving certificate ([`super::SERVING_NAMES`], signed by the CA, renewed at half its
//! life), client certificates requested but optional (a workload renewing its certificate
//! presents its current one; one asking for its first certificate has a token instead), and
//! ALPN `h2`. Accepted connections carry the verified peer identity to the gRPC services as
//! the request extension [`TlsConnectInfo`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use boring::ssl::{AlpnError, SslAcceptor, SslMethod, SslVerifyMode};
use boring::x509::store::X509StoreBuilder;
use pingora_boringssl::tokio_ssl::SslStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::identity::SpiffeId;
use super::{cert, Authority, SignError};

/// Lifetime of the serving certificate (renewed at half of it).
pub const SERVING_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for the gRPC server.
const BACKLOG: usize = 64;

/// The verified client certificate of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The workload identity of its URI SAN, when it is one.
    pub identity: Option<SpiffeId>,
    /// Its serial number (hex).
    pub serial: String,
    /// `notAfter`, seconds since the epoch.
    pub not_after: i64,
}

/// What the gRPC services learn about a TLS connection.
#[derive(Clone, Debug)]
pub struct TlsConnectInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client certificate, verified against the trust bundle, if one was presented.
    pub peer: Option<PeerCertificate>,
}

/// A TLS connection accepted on 15012.
pub struct TlsConn {
    stream: SslStream<TcpStream>,
    info: TlsConnectInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The current acceptor and when its certificate is due for renewal.
struct Current {
    acceptor: Arc<SslAcceptor>,
    renew_at: i64,
}

/// The serving side of 15012: builds acceptors from the CA and renews the serving
/// certificate when half of its life has passed.
pub struct TlsServing {
    authority: Arc<Authority>,
    current: Mutex<Current>,
}

/// Why the TLS server cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The serving certificate cannot be issued.
    #[error("issuing the control plane's serving certificate: {0}")]
    Sign(#[from] SignError),
    /// The acceptor cannot be built.
    #[error("building the TLS acceptor: {0}")]
    Ssl(#[from] boring::error::ErrorStack),
}

fn build_acceptor(authority: &Authority) -> Result<Current, TlsError> {
    let issued = authority.issue_serving(SERVING_TTL)?;
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    b.set_private_key(&issued.key)?;
    b.set_certificate(&issued.chain[0])?;
    for c in &issued.chain[1..] {
        b.add_extra_chain_cert(c.clone())?;
    }
    let mut store = X509StoreBuilder::new()?;
    for root in authority.roots() {
        store.add_cert(root.clone())?;
    }
    b.set_verify_cert_store(store.build())?;
    b.set_verify(SslVerifyMode::PEER);
    b.set_alpn_select_callback(|_, offered| {
        let mut rest = offered;
        while let Some((&len, tail)) = rest.split_first() {
            let len = usize::from(len);
            if tail.len() < len {
                break;
            }
            if &tail[..len] == b"h2" {
                return Ok(&tail[..len]);
            }
            rest = &tail[len..];
        }
        Err(AlpnError::NOACK)
    });
    let (not_before, not_after) = cert::validity(&issued.chain[0])?;
    Ok(Current {
        acceptor: Arc::new(b.build()),
        renew_at: not_before + (not_after - not_before) / 2,
    })
}

impl TlsServing {
    /// Issues the first serving certificate.
    pub fn new(authority: Arc<Authority>) -> Result<TlsServing, TlsError> {
        let current = build_acceptor(&authority)?;
        Ok(TlsServing {
            authority,
            current: Mutex::new(current),
        })
    }

    /// The acceptor for the next connection, renewing the certificate if it is due (a failed
    /// renewal keeps the current one and is retried on the next connection).
    fn acceptor(&self) -> Arc<SslAcceptor> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cert::now_unix() >= current.renew_at {
            match build_acceptor(&self.authority) {
                Ok(next) => {
                    tracing::info!("control plane serving certificate renewed");
                    *current = next;
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the serving certificate"),
            }
        }
        current.acceptor.clone()
    }

    /// Accepts connections from `listener` forever, handshaking each on its own task; the
    /// stream yields the connections whose handshake succeeded.
    pub fn incoming(self: Arc<Self>, listener: TcpListener) -> ReceiverStream<io::Result<TlsConn>> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed on the TLS port");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = self.acceptor();
                let conn_tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, tcp, remote))
                        .await
                    {
                        Ok(Ok(conn)) => {
                            let _ = conn_tx.send(Ok(conn)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

async fn handshake(
    acceptor: &SslAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Result<TlsConn, String> {
    let ssl = boring::ssl::Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    Pin::new(&mut stream)
        .accept()
        .await
        .map_err(|e| e.to_string())?;
    let peer = stream.ssl().peer_certificate().map(|c| PeerCertificate {
        identity: cert::uri_sans(&c)
            .iter()
            .find_map(|u| u.parse::<SpiffeId>().ok()),
        serial: cert::serial_hex(&c),
        not_after: cert::validity(&c).map_or(0, |(_, a)| a),
    });
    Ok(TlsConn {
        stream,
        info: TlsConnectInfo {
            remote_addr: Some(remote),
            peer,
        },
    })
}

//! A gRPC channel to the control plane's TLS port (15012): the server's certificate verified
//! against the trust bundle and the control plane's name ([`super::SERVING_NAMES`]),
//! optionally a client certificate (a workload renewing its own). For tools and tests; the
//! proxy has its own client.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use boring::pkey::{PKey, Private};
use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use boring::x509::store::X509StoreBuilder;
use boring::x509::X509;
use hyper_util::rt::TokioIo;
use pingora_boringssl::tokio_ssl::SslStream;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::SERVING_NAMES;

/// Connects TCP, then TLS, to a fixed address.
#[derive(Clone)]
pub struct TlsConnector {
    addr: SocketAddr,
    connector: Arc<SslConnector>,
}

impl TlsConnector {
    /// A connector to `addr` trusting `roots`, presenting `client` (key and chain, leaf
    /// first) when given.
    pub fn new(
        addr: SocketAddr,
        roots: &[X509],
        client: Option<(&PKey<Private>, &[X509])>,
    ) -> Result<TlsConnector, boring::error::ErrorStack> {
        let mut b = SslConnector::builder(SslMethod::tls())?;
        let mut store = X509StoreBuilder::new()?;
        for r in roots {
            store.add_cert(r.clone())?;
        }
        b.set_verify_cert_store(store.build())?;
        b.set_verify(SslVerifyMode::PEER);
        b.set_alpn_protos(b"\x02h2")?;
        if let Some((key, chain)) = client {
            b.set_private_key(key)?;
            if let Some(leaf) = chain.first() {
                b.set_certificate(leaf)?;
            }
            for c in chain.iter().skip(1) {
                b.add_extra_chain_cert(c.clone())?;
            }
        }
        Ok(TlsConnector {
            addr,
            connector: Arc::new(b.build()),
        })
    }

    /// A channel through this connector.
    pub async fn channel(self) -> Result<Channel, tonic::transport::Error> {
        let uri = format!("http://{}", self.addr);
        // The URI only names the channel; the connector decides where to connect.
        let endpoint = Endpoint::from_shared(uri)?;
        endpoint.connect_with_connector(self).await
    }
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<SslStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let (addr, connector) = (self.addr, self.connector.clone());
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            let config = connector.configure().map_err(io::Error::other)?;
            let ssl = config
                .into_ssl(SERVING_NAMES[0])
                .map_err(io::Error::other)?;
            let mut stream = SslStream::new(ssl, tcp).map_err(io::Error::other)?;
            Pin::new(&mut stream)
                .connect()
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
            Ok(TokioIo::new(stream))
        })
    }
}

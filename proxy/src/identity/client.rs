//! The CA client: `istio.v1.auth.IstioCertificateService/CreateCertificate`.
//!
//! The first certificate is asked with the bootstrap token (`authorization: Bearer TOKEN`,
//! read from `--token-file` at each attempt, so that a token written after the proxy started
//! is picked up) on `--ca-address`: plaintext for `host:port` / `http://`, TLS for
//! `https://`, where the CA's certificate must verify against `--ca-root-cert`. Renewals go
//! over mutual TLS to the CA's TLS address (`--ca-tls-address`, by default the CA's host on
//! 15012), authenticated by the current certificate and verifying the CA against the roots
//! the proxy already trusts. The CA's name is Istio's, `istiod.istio-system.svc`.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use boring::pkey::{PKey, Private};
use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use boring::x509::store::X509StoreBuilder;
use boring::x509::X509;
use hyper_util::rt::TokioIo;
use pingora_boringssl::tokio_ssl::SslStream;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::csr::{self, ChainError};
use super::WorkloadCert;

/// Generated client of `proto/istioca.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("istio.v1.auth");
}

use pb::istio_certificate_service_client::IstioCertificateServiceClient;
use pb::IstioCertificateRequest;

/// The control plane's name in its serving certificate (Istio's istiod).
pub const CA_SERVER_NAME: &str = "istiod.istio-system.svc";
/// Istio's CA port over TLS.
pub const CA_TLS_PORT: u16 = 15012;
/// How long a connection to the CA may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the CA is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaAddress {
    /// Plaintext gRPC, `host:port`.
    Plain(String),
    /// gRPC over TLS, `host:port`.
    Tls(String),
}

impl CaAddress {
    /// Parses `host:port`, `http://host:port` (plaintext) or `https://host:port` (TLS).
    pub fn parse(s: &str) -> Result<CaAddress, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if s.contains("://") {
            return Err(format!("`{s}`: the scheme must be http:// or https://"));
        } else {
            (false, s)
        };
        let rest = rest.trim_end_matches('/');
        let ok = rest
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !ok {
            return Err(format!("`{s}` is not host:port"));
        }
        Ok(if tls {
            CaAddress::Tls(rest.to_string())
        } else {
            CaAddress::Plain(rest.to_string())
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        match self {
            CaAddress::Plain(a) | CaAddress::Tls(a) => a,
        }
    }

    /// The TLS address for renewals: this one if TLS, else the same host on 15012.
    pub fn tls_default(&self) -> String {
        match self {
            CaAddress::Tls(a) => a.clone(),
            CaAddress::Plain(a) => {
                let host = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
                format!("{host}:{CA_TLS_PORT}")
            }
        }
    }
}

/// The CA client's settings.
#[derive(Clone, Debug)]
pub struct CaConfig {
    /// Where the first certificate is asked.
    pub address: CaAddress,
    /// Where renewals go (mutual TLS), `host:port`.
    pub tls_address: String,
    /// Roots that the CA's serving certificate must chain to on the first request over TLS
    /// (`--ca-root-cert`); also the anchors the first certificate must verify against.
    pub root_certs: Vec<X509>,
    /// The bootstrap token file.
    pub token_file: PathBuf,
    /// Requested certificate lifetime.
    pub ttl: Duration,
}

/// Why a request to the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    /// The token file cannot be read.
    #[error("cannot read the bootstrap token {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The token file is empty.
    #[error("the bootstrap token file {0} is empty")]
    EmptyToken(PathBuf),
    /// TLS to the CA without anything to verify it with.
    #[error("no root certificate to verify the CA at {0} with (give --ca-root-cert)")]
    NoAnchor(String),
    /// The connection failed.
    #[error("cannot connect to the CA at {address}: {detail}")]
    Connect {
        /// The address.
        address: String,
        /// The transport's error chain.
        detail: String,
    },
    /// The CA refused or failed.
    #[error("the CA answered {}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The request timed out.
    #[error("the CA did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not a usable certificate.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Key or CSR generation failed.
    #[error("cannot make the key or CSR: {0}")]
    Crypto(String),
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// TCP then TLS to a fixed `host:port`, verifying the CA's name.
#[derive(Clone)]
struct TlsConnector {
    address: String,
    connector: Arc<SslConnector>,
}

impl TlsConnector {
    fn new(
        address: &str,
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
            address: address.to_string(),
            connector: Arc::new(b.build()),
        })
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
        let (address, connector) = (self.address.clone(), self.connector.clone());
        Box::pin(async move {
            let tcp = TcpStream::connect(address.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            let ssl = connector
                .configure()
                .and_then(|c| c.into_ssl(CA_SERVER_NAME))
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

/// The CA client.
#[derive(Clone, Debug)]
pub struct CaClient {
    config: CaConfig,
}

impl CaClient {
    /// A client with `config`.
    pub fn new(config: CaConfig) -> CaClient {
        CaClient { config }
    }

    /// Its settings.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    async fn channel(
        &self,
        address: &CaAddress,
        roots: &[X509],
        client: Option<(&PKey<Private>, &[X509])>,
    ) -> Result<Channel, CaClientError> {
        let connect_err = |e: &dyn std::error::Error| CaClientError::Connect {
            address: address.authority().to_string(),
            detail: error_chain(e),
        };
        let endpoint = Endpoint::from_shared(format!("http://{}", address.authority()))
            .map_err(|e| connect_err(&e))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        match address {
            CaAddress::Plain(_) => endpoint.connect().await.map_err(|e| connect_err(&e)),
            CaAddress::Tls(a) => {
                if roots.is_empty() {
                    return Err(CaClientError::NoAnchor(a.clone()));
                }
                let connector = TlsConnector::new(a, roots, client)
                    .map_err(|e| CaClientError::Crypto(e.to_string()))?;
                endpoint
                    .connect_with_connector(connector)
                    .await
                    .map_err(|e| connect_err(&e))
            }
        }
    }

    async fn call(
        &self,
        channel: Channel,
        csr: String,
        token: Option<String>,
    ) -> Result<Vec<String>, CaClientError> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: self.config.ttl.as_secs() as i64,
            ..Default::default()
        });
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| CaClientError::EmptyToken(self.config.token_file.clone()))?;
            request.metadata_mut().insert("authorization", value);
        }
        let mut client = IstioCertificateServiceClient::new(channel);
        let call = client.create_certificate(request);
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Err(_) => Err(CaClientError::Timeout(REQUEST_TIMEOUT)),
            Ok(Err(status)) => Err(CaClientError::Status(status)),
            Ok(Ok(r)) => Ok(r.into_inner().cert_chain),
        }
    }

    fn token(&self) -> Result<String, CaClientError> {
        let path = &self.config.token_file;
        let token = std::fs::read_to_string(path).map_err(|source| CaClientError::Token {
            path: path.clone(),
            source,
        })?;
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(CaClientError::EmptyToken(path.clone()));
        }
        Ok(token)
    }

    /// A first certificate for `spiffe_id`, proven by the bootstrap token.
    pub async fn first_certificate(
        &self,
        spiffe_id: &str,
        generation: u64,
    ) -> Result<WorkloadCert, CaClientError> {
        let token = self.token()?;
        let key = csr::generate_key().map_err(|e| CaClientError::Crypto(e.to_string()))?;
        let csr =
            csr::build_csr(&key, spiffe_id).map_err(|e| CaClientError::Crypto(e.to_string()))?;
        let roots = self.config.root_certs.clone();
        let channel = self.channel(&self.config.address, &roots, None).await?;
        let chain = self.call(channel, csr, Some(token)).await?;
        Ok(csr::accept_chain(
            &chain, key, spiffe_id, &roots, generation,
        )?)
    }

    /// A renewal of `current`, proven by presenting it over mutual TLS.
    pub async fn renew(&self, current: &WorkloadCert) -> Result<WorkloadCert, CaClientError> {
        let key = csr::generate_key().map_err(|e| CaClientError::Crypto(e.to_string()))?;
        let csr = csr::build_csr(&key, &current.spiffe_id)
            .map_err(|e| CaClientError::Crypto(e.to_string()))?;
        let mut roots = current.roots.clone();
        roots.extend(self.config.root_certs.iter().cloned());
        let address = CaAddress::Tls(self.config.tls_address.clone());
        let channel = self
            .channel(&address, &roots, Some((&current.key, &current.chain)))
            .await?;
        let chain = self.call(channel, csr, None).await?;
        Ok(csr::accept_chain(
            &chain,
            key,
            &current.spiffe_id,
            &roots,
            current.generation + 1,
        )?)
    }
}

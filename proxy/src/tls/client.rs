//! TLS originated towards an upstream (`UpstreamTlsContext`).
//!
//! A cluster's transport is chosen per endpoint ([`ClusterTls`]): the first
//! `transport_socket_matches` entry whose criteria the endpoint's metadata holds (istiod's
//! `tlsMode-istio` for endpoints with a sidecar, `tlsMode-disabled` otherwise), else the
//! cluster's `transport_socket`, else plaintext.
//!
//! TCP proxying handshakes itself ([`ClientTls::connect`]) and offers exactly the configured
//! ALPN (`istio-peer-exchange`, `istio`). HTTP goes through Pingora's connector
//! ([`ClientTls::http_peer`]): the peer carries the client certificate, the trust bundle and a
//! handshake hook that records the server's SANs; [`verify_upstream`] (called once the
//! connection is made or reused) refuses a server whose SANs match none of the expected
//! identities. Pingora offers `h2`/`http/1.1` by the cluster's protocol, not the configured
//! ALPN (see ARCHITECTURE.md). The pool key covers the cluster, these TLS settings and the
//! trust bundle's version, so a connection verified for one identity set never carries
//! another's requests.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use boring::ssl::{Ssl, SslContext, SslContextBuilder, SslMethod, SslVerifyMode};
use boring::x509::store::X509StoreBuilder;
use boring::x509::X509;
use pingora_boringssl::tokio_ssl::SslStream;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_core::utils::tls::CertKey;
use tokio::io::{AsyncRead, AsyncWrite};
use xds_client::model::tls::{SanMatcher, SecretName, UpstreamTls};
use xds_client::model::{Cluster, ClusterLoadAssignment};

use super::server::ssl_version;
use super::{san_matches, FileSecrets, PeerCert, TlsError};
use crate::identity::Identity;

/// What the handshake hook found: the server's certificate and whether it matched.
#[derive(Debug)]
pub struct PeerCheck {
    /// `Ok` with the server's certificate facts, or why it is refused.
    pub result: Result<PeerCert, TlsError>,
}

/// The TLS client of one transport (a cluster's, or a transport socket match's).
pub struct ClientTls {
    config: UpstreamTls,
    files: FileSecrets,
    settings_key: u64,
    connector: Mutex<Option<(Versions, Arc<SslContext>)>>,
    http: Mutex<Option<(Versions, HttpMaterial)>>,
}

/// The versions (workload certificate, trust bundle) material was built from.
type Versions = (u64, u64);

/// A transport socket match: its criteria and its TLS (`None`: plaintext).
type Match<'a> = (&'a BTreeMap<String, String>, Option<Arc<ClientTls>>);

#[derive(Clone)]
struct HttpMaterial {
    cert_key: Option<Arc<CertKey>>,
    ca: Option<Arc<Box<[X509]>>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn alpn_wire(protocols: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in protocols {
        out.push(p.len() as u8);
        out.extend_from_slice(p.as_bytes());
    }
    out
}

impl ClientTls {
    /// The client of `config`; file secrets are read now.
    pub fn new(config: UpstreamTls) -> ClientTls {
        let files = FileSecrets::load(
            config.common.certificate.as_ref(),
            config.common.validation.as_ref().map(|v| &v.trusted_ca),
        );
        let mut h = DefaultHasher::new();
        format!("{config:?}").hash(&mut h);
        ClientTls {
            settings_key: h.finish(),
            config,
            files,
            connector: Mutex::new(None),
            http: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn config(&self) -> &UpstreamTls {
        &self.config
    }

    fn matchers(&self) -> Vec<SanMatcher> {
        self.config
            .common
            .validation
            .as_ref()
            .map(|v| v.san_matchers.clone())
            .unwrap_or_default()
    }

    /// The certificate and roots to use now, with their versions.
    #[allow(clippy::type_complexity)]
    fn material(
        &self,
        identity: &Identity,
    ) -> Result<(Option<super::CertMaterial>, Option<(Arc<Vec<X509>>, u64)>), TlsError> {
        let common = &self.config.common;
        let cert = match &common.certificate {
            Some(name) => Some(self.files.certificate(name, identity)?),
            None => None,
        };
        let roots = match &common.validation {
            Some(v) => Some(self.files.roots(&v.trusted_ca, identity)?),
            None => None,
        };
        Ok((cert, roots))
    }

    /// The TCP proxy's TLS context for the current material. Built from a bare context: an
    /// `SslConnector` would load the system trust store first (tens of milliseconds in a debug
    /// build, on every renewal), delaying the ClientHello past the server's TLS inspector.
    fn connector(&self, identity: &Identity) -> Result<Arc<SslContext>, TlsError> {
        let (cert, roots) = self.material(identity)?;
        let version = (
            cert.as_ref().map_or(0, |c| c.version),
            roots.as_ref().map_or(0, |(_, v)| *v),
        );
        let mut current = self.connector.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, c)) = current.as_ref() {
            if *v == version {
                return Ok(c.clone());
            }
        }
        let mut b = SslContextBuilder::new(SslMethod::tls())?;
        if let Some(cert) = &cert {
            b.set_private_key(&cert.key)?;
            b.set_certificate(&cert.chain[0])?;
            for c in &cert.chain[1..] {
                b.add_extra_chain_cert(c.clone())?;
            }
        }
        match &roots {
            Some((roots, _)) => {
                let mut store = X509StoreBuilder::new()?;
                for r in roots.iter() {
                    store.add_cert(r.clone())?;
                }
                b.set_verify_cert_store(store.build())?;
                b.set_verify(SslVerifyMode::PEER);
            }
            None => b.set_verify(SslVerifyMode::NONE),
        }
        let common = &self.config.common;
        if !common.alpn.is_empty() {
            b.set_alpn_protos(&alpn_wire(&common.alpn))?;
        }
        if let Some(v) = common.min_version {
            b.set_min_proto_version(Some(ssl_version(v)))?;
        }
        if let Some(v) = common.max_version {
            b.set_max_proto_version(Some(ssl_version(v)))?;
        }
        let connector = Arc::new(b.build());
        *current = Some((version, connector.clone()));
        Ok(connector)
    }

    /// Runs the client handshake on `stream` (a TCP proxy's upstream connection) and checks
    /// the server's SANs.
    pub async fn connect<S>(
        &self,
        stream: S,
        identity: &Identity,
    ) -> Result<(SslStream<S>, PeerCert), TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let context = self.connector(identity)?;
        let mut ssl = Ssl::new(&context)?;
        if let Some(sni) = &self.config.sni {
            ssl.set_hostname(sni)?;
        }
        let mut tls = SslStream::new(ssl, stream)?;
        Pin::new(&mut tls)
            .connect()
            .await
            .map_err(|e| TlsError::Handshake(e.to_string()))?;
        let peer = tls
            .ssl()
            .peer_certificate()
            .map(|c| PeerCert::of(&c))
            .ok_or(TlsError::NoPeerCertificate)?;
        if !san_matches(&peer, &self.matchers()) {
            return Err(TlsError::SanMismatch {
                presented: peer.presented(),
            });
        }
        Ok((tls, peer))
    }

    fn http_material(&self, identity: &Identity) -> Result<(HttpMaterial, u64), TlsError> {
        let (cert, roots) = self.material(identity)?;
        let version = (
            cert.as_ref().map_or(0, |c| c.version),
            roots.as_ref().map_or(0, |(_, v)| *v),
        );
        let mut current = self.http.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, m)) = current.as_ref() {
            if *v == version {
                return Ok((m.clone(), version.1));
            }
        }
        let cert_key = match (&cert, &self.config.common.certificate) {
            (Some(_), Some(SecretName::Workload)) => Some(
                identity
                    .current()
                    .ok_or(TlsError::NoCertificate)?
                    .cert_key
                    .clone(),
            ),
            (Some(c), _) => Some(Arc::new(CertKey::new(c.chain.clone(), c.key.clone()))),
            (None, _) => None,
        };
        let material = HttpMaterial {
            cert_key,
            ca: roots
                .map(|(r, _)| Arc::new(r.iter().cloned().collect::<Vec<_>>().into_boxed_slice())),
        };
        *current = Some((version, material.clone()));
        Ok((material, version.1))
    }

    /// A Pingora peer for `address` over this TLS (the caller sets ALPN, timeouts, binding),
    /// in a connection pool of its own: `pool` (the cluster's key) combined with these
    /// settings and the trust bundle's version.
    pub fn http_peer(
        &self,
        address: SocketAddr,
        identity: &Identity,
        pool: u64,
    ) -> Result<HttpPeer, TlsError> {
        let validation = self.config.common.validation.is_some();
        let sni = self.config.sni.clone().unwrap_or_default();
        if validation && sni.is_empty() {
            // Pingora skips verification without SNI: refuse rather than not verify.
            return Err(TlsError::Setup(
                "verifying the upstream's certificate needs an SNI".into(),
            ));
        }
        let (material, bundle) = self.http_material(identity)?;
        let mut peer = HttpPeer::new(address, true, sni);
        peer.client_cert_key = material.cert_key;
        peer.options.ca = material.ca;
        peer.options.verify_cert = validation;
        peer.options.verify_hostname = false;
        let matchers = self.matchers();
        peer.options.upstream_tls_handshake_complete_hook = Some(Arc::new(move |ssl| {
            let result = match ssl.peer_certificate() {
                None => Err(TlsError::NoPeerCertificate),
                Some(c) => {
                    let peer = PeerCert::of(&c);
                    if san_matches(&peer, &matchers) {
                        Ok(peer)
                    } else {
                        Err(TlsError::SanMismatch {
                            presented: peer.presented(),
                        })
                    }
                }
            };
            Some(Arc::new(PeerCheck { result }))
        }));
        let mut h = DefaultHasher::new();
        (pool, self.settings_key, bundle).hash(&mut h);
        peer.group_key = h.finish();
        Ok(peer)
    }
}

/// For an HTTP upstream connection just made or reused: a TLS peer must have passed the
/// handshake hook's check.
pub fn verify_upstream(peer: &HttpPeer, digest: Option<&Digest>) -> Result<(), TlsError> {
    if !peer.tls() {
        return Ok(());
    }
    let check = digest
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|d| d.extension.get::<PeerCheck>())
        .ok_or(TlsError::NoPeerCertificate)?;
    check.result.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// A cluster's transports, per endpoint.
#[derive(Debug, Default)]
pub struct ClusterTls {
    default: Option<Arc<ClientTls>>,
    by_endpoint: HashMap<SocketAddr, Option<Arc<ClientTls>>>,
}

fn holds(metadata: &BTreeMap<String, String>, criteria: &BTreeMap<String, String>) -> bool {
    criteria.iter().all(|(k, v)| metadata.get(k) == Some(v))
}

impl ClusterTls {
    /// The transports of `cluster` for the endpoints of `assignment`.
    pub fn new(cluster: &Cluster, assignment: Option<&ClusterLoadAssignment>) -> ClusterTls {
        let default = cluster
            .transport_socket
            .clone()
            .map(|t| Arc::new(ClientTls::new(t)));
        if cluster.transport_socket_matches.is_empty() {
            return ClusterTls {
                default,
                by_endpoint: HashMap::new(),
            };
        }
        let matches: Vec<Match<'_>> = cluster
            .transport_socket_matches
            .iter()
            .map(|m| {
                (
                    &m.criteria,
                    m.tls.clone().map(|t| Arc::new(ClientTls::new(t))),
                )
            })
            .collect();
        let by_endpoint = assignment
            .map(|cla| {
                cla.endpoints
                    .iter()
                    .map(|e| {
                        let tls = matches
                            .iter()
                            .find(|(criteria, _)| holds(&e.transport_metadata, criteria))
                            .map_or_else(|| default.clone(), |(_, t)| t.clone());
                        (e.address, tls)
                    })
                    .collect()
            })
            .unwrap_or_default();
        ClusterTls {
            default,
            by_endpoint,
        }
    }

    /// The transport to `address`: TLS, or `None` for plaintext.
    pub fn for_endpoint(&self, address: SocketAddr) -> Option<&Arc<ClientTls>> {
        match self.by_endpoint.get(&address) {
            Some(t) => t.as_ref(),
            None => self.default.as_ref(),
        }
    }
}

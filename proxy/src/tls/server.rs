//! TLS terminated on a filter chain (`DownstreamTlsContext`).
//!
//! An acceptor is built per chain from its settings, the certificate it names (the workload
//! certificate, or a file's) and the trust bundle, and kept until either changes (a
//! rotation builds the next one; established connections keep theirs). With
//! `require_client_certificate` the client must present a chain that verifies against the
//! bundle; its SANs must match the chain's matchers when it has any. ALPN: the first of the
//! chain's protocols (in its order) that the client offered, else none.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use boring::ssl::{AlpnError, Ssl, SslAcceptor, SslMethod, SslVerifyMode, SslVersion};
use boring::x509::store::X509StoreBuilder;
use pingora_boringssl::tokio_ssl::SslStream;
use tokio::io::{AsyncRead, AsyncWrite};
use xds_client::model::tls::{DownstreamTls, TlsVersion};

use super::{san_matches, FileSecrets, PeerCert, TlsError};
use crate::identity::Identity;

/// What a completed server handshake established.
#[derive(Clone, Debug, Default)]
pub struct Accepted {
    /// The client's certificate, when it presented one (verified).
    pub peer: Option<PeerCert>,
    /// The proxy's own URI SAN (the `By` of `x-forwarded-client-cert`).
    pub local_uri: Option<String>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// The SNI the client sent.
    pub server_name: Option<String>,
}

/// The version of an acceptor: certificate version and trust bundle version.
type Version = (u64, u64);

/// The TLS server of one filter chain.
pub struct ServerTls {
    config: DownstreamTls,
    files: FileSecrets,
    current: Mutex<Option<Current>>,
}

/// The acceptor built for a version of the secrets, and the local URI SAN.
type Current = (Version, Arc<SslAcceptor>, Option<String>);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn ssl_version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::Tls10 => SslVersion::TLS1,
        TlsVersion::Tls11 => SslVersion::TLS1_1,
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    }
}

/// The first of `ours` (wire format built from it) that appears in `offered` (ALPN wire
/// format).
pub(crate) fn select_alpn<'a>(ours: &[String], offered: &'a [u8]) -> Option<&'a [u8]> {
    for want in ours {
        let mut rest = offered;
        while let Some((&len, tail)) = rest.split_first() {
            let len = usize::from(len);
            if tail.len() < len {
                break;
            }
            if &tail[..len] == want.as_bytes() {
                return Some(&tail[..len]);
            }
            rest = &tail[len..];
        }
    }
    None
}

impl ServerTls {
    /// The server of a chain with `config`; file secrets are read now.
    pub fn new(config: DownstreamTls) -> ServerTls {
        let files = FileSecrets::load(
            config.common.certificate.as_ref(),
            config.common.validation.as_ref().map(|v| &v.trusted_ca),
        );
        ServerTls {
            config,
            files,
            current: Mutex::new(None),
        }
    }

    /// The chain's settings.
    pub fn config(&self) -> &DownstreamTls {
        &self.config
    }

    fn acceptor(
        &self,
        identity: &Identity,
    ) -> Result<(Arc<SslAcceptor>, Option<String>), TlsError> {
        let common = &self.config.common;
        let name = common.certificate.as_ref().ok_or(TlsError::NoCertificate)?;
        let cert = self.files.certificate(name, identity)?;
        let roots = match &common.validation {
            Some(v) => Some(self.files.roots(&v.trusted_ca, identity)?),
            None => None,
        };
        let version = (cert.version, roots.as_ref().map_or(0, |(_, v)| *v));
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, acceptor, uri)) = current.as_ref() {
            if *v == version {
                return Ok((acceptor.clone(), uri.clone()));
            }
        }
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
        b.set_private_key(&cert.key)?;
        b.set_certificate(&cert.chain[0])?;
        for c in &cert.chain[1..] {
            b.add_extra_chain_cert(c.clone())?;
        }
        if let Some((roots, _)) = &roots {
            let mut store = X509StoreBuilder::new()?;
            for r in roots.iter() {
                store.add_cert(r.clone())?;
            }
            b.set_verify_cert_store(store.build())?;
            let mut mode = SslVerifyMode::PEER;
            if self.config.require_client_certificate {
                mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
            }
            b.set_verify(mode);
        } else {
            b.set_verify(SslVerifyMode::NONE);
        }
        if let Some(v) = common.min_version {
            b.set_min_proto_version(Some(ssl_version(v)))?;
        }
        if let Some(v) = common.max_version {
            b.set_max_proto_version(Some(ssl_version(v)))?;
        }
        let alpn = common.alpn.clone();
        b.set_alpn_select_callback(move |_, offered| {
            select_alpn(&alpn, offered).ok_or(AlpnError::NOACK)
        });
        let acceptor = Arc::new(b.build());
        let uri = PeerCert::of(&cert.chain[0]).uris.into_iter().next();
        *current = Some((version, acceptor.clone(), uri.clone()));
        Ok((acceptor, uri))
    }

    /// Runs the server handshake on `stream` with the current certificate and bundle, then
    /// checks the client certificate's SANs.
    pub async fn accept<S>(
        &self,
        stream: S,
        identity: &Identity,
    ) -> Result<(SslStream<S>, Accepted), TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (acceptor, local_uri) = self.acceptor(identity)?;
        let ssl = Ssl::new(acceptor.context())?;
        let mut tls = SslStream::new(ssl, stream)?;
        Pin::new(&mut tls)
            .accept()
            .await
            .map_err(|e| TlsError::Handshake(e.to_string()))?;
        let peer = tls.ssl().peer_certificate().map(|c| PeerCert::of(&c));
        if let Some(v) = &self.config.common.validation {
            if let Some(p) = &peer {
                if !san_matches(p, &v.san_matchers) {
                    return Err(TlsError::SanMismatch {
                        presented: p.presented(),
                    });
                }
            } else if self.config.require_client_certificate {
                return Err(TlsError::NoPeerCertificate);
            }
        }
        let accepted = Accepted {
            alpn: tls
                .ssl()
                .selected_alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            server_name: tls
                .ssl()
                .servername(boring::ssl::NameType::HOST_NAME)
                .map(str::to_string),
            peer,
            local_uri,
        };
        Ok((tls, accepted))
    }
}

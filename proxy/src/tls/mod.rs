//! Mutual TLS in the data path (BoringSSL through `boring`).
//!
//! - [`hello`]: transport protocol detection from the ClientHello (Envoy's TLS inspector).
//! - [`server`]: TLS terminated on a filter chain (`DownstreamTlsContext`): the proxy's
//!   workload certificate, the client's chain verified against the trust bundle, the peer's
//!   identity for authorization and `x-forwarded-client-cert`.
//! - [`client`]: TLS originated towards an upstream (`UpstreamTlsContext`, per cluster or per
//!   endpoint through `transport_socket_matches`): the workload certificate (or a file's), the
//!   server's chain and SANs verified.
//!
//! Secrets are resolved here, the way istio-agent serves them to Envoy: `default` is the
//! workload certificate and `ROOTCA` the trust bundle that came with it (both from
//! [`crate::identity`], swapped at each rotation), `file-cert:`/`file-root:` are read from
//! disk when the chain or cluster is built. Anything missing fails the connection, never
//! falls back to plaintext.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod hello;
pub mod server;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use boring::hash::MessageDigest;
use boring::pkey::{PKey, Private};
use boring::x509::{X509Ref, X509};
use xds_client::model::tls::{SanMatcher, SanType, SecretName};

use crate::identity::Identity;

/// Why a TLS connection could not be made or accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// The proxy has no (valid) workload certificate.
    #[error("no valid workload certificate (secret \"default\")")]
    NoCertificate,
    /// The trust bundle is not available.
    #[error("no trust bundle (secret \"ROOTCA\")")]
    NoTrustBundle,
    /// A file secret could not be read.
    #[error("secret {name}: {problem}")]
    File {
        /// The secret name.
        name: String,
        /// What went wrong.
        problem: String,
    },
    /// A `kubernetes://` secret (DestinationRule `credentialName`): no secret store serves
    /// them to this proxy, so the connection fails closed.
    #[error("secret kubernetes://{0} is not served to this proxy (credentialName needs a secret store; use certificate files)")]
    NotServed(String),
    /// A secret of the wrong kind (a bundle where a certificate is needed, or the reverse).
    #[error("secret {0} is not usable here")]
    WrongKind(String),
    /// The handshake failed (including certificate verification).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The peer's certificate has none of the expected SANs.
    #[error("peer certificate SANs {presented:?} match none of the expected identities")]
    SanMismatch {
        /// What the peer presented (URI and DNS SANs).
        presented: Vec<String>,
    },
    /// The peer presented no certificate where one is required.
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// BoringSSL failed to build a context.
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

impl From<boring::error::ErrorStack> for TlsError {
    fn from(e: boring::error::ErrorStack) -> Self {
        TlsError::Setup(e.to_string())
    }
}

/// A certificate with its key.
#[derive(Clone)]
pub struct CertMaterial {
    /// The key.
    pub key: PKey<Private>,
    /// Leaf first, then intermediates.
    pub chain: Vec<X509>,
    /// A version: the workload certificate's generation, 0 for files.
    pub version: u64,
}

/// Material read from files when a chain or cluster is built.
#[derive(Clone, Default)]
pub(crate) struct FileSecrets {
    cert: Option<Result<CertMaterial, TlsError>>,
    roots: Option<Result<Arc<Vec<X509>>, TlsError>>,
}

fn read(name: &str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        name: name.to_string(),
        problem: format!("{path}: {e}"),
    })
}

fn file_cert(name: &str, cert: &str, key: &str) -> Result<CertMaterial, TlsError> {
    let chain = X509::stack_from_pem(&read(name, cert)?).map_err(|e| TlsError::File {
        name: name.to_string(),
        problem: format!("{cert}: {e}"),
    })?;
    if chain.is_empty() {
        return Err(TlsError::File {
            name: name.to_string(),
            problem: format!("{cert}: no certificate"),
        });
    }
    let key = PKey::private_key_from_pem(&read(name, key)?).map_err(|e| TlsError::File {
        name: name.to_string(),
        problem: format!("{key}: {e}"),
    })?;
    Ok(CertMaterial {
        key,
        chain,
        version: 0,
    })
}

fn file_roots(name: &str, path: &str) -> Result<Arc<Vec<X509>>, TlsError> {
    let roots = X509::stack_from_pem(&read(name, path)?).map_err(|e| TlsError::File {
        name: name.to_string(),
        problem: format!("{path}: {e}"),
    })?;
    if roots.is_empty() {
        return Err(TlsError::File {
            name: name.to_string(),
            problem: format!("{path}: no certificate"),
        });
    }
    Ok(Arc::new(roots))
}

impl FileSecrets {
    /// Reads the files `certificate` and `trust` name (if they name files).
    pub(crate) fn load(
        certificate: Option<&SecretName>,
        trust: Option<&SecretName>,
    ) -> FileSecrets {
        let name = |s: &SecretName| format!("{s:?}");
        FileSecrets {
            cert: match certificate {
                Some(s @ SecretName::FileCert { cert, key }) => {
                    Some(file_cert(&name(s), cert, key))
                }
                _ => None,
            },
            roots: match trust {
                Some(s @ SecretName::FileRoot(path)) => Some(file_roots(&name(s), path)),
                _ => None,
            },
        }
    }

    /// The certificate named `name`.
    pub(crate) fn certificate(
        &self,
        name: &SecretName,
        identity: &Identity,
    ) -> Result<CertMaterial, TlsError> {
        match name {
            SecretName::Workload => {
                let cert = identity.current().ok_or(TlsError::NoCertificate)?;
                Ok(CertMaterial {
                    key: cert.key.clone(),
                    chain: cert.chain.clone(),
                    version: cert.generation,
                })
            }
            SecretName::FileCert { .. } => self
                .cert
                .clone()
                .unwrap_or_else(|| Err(TlsError::WrongKind(format!("{name:?}")))),
            SecretName::Kubernetes(secret) => Err(TlsError::NotServed(secret.clone())),
            _ => Err(TlsError::WrongKind(format!("{name:?}"))),
        }
    }

    /// The trust bundle named `name`, with its version.
    pub(crate) fn roots(
        &self,
        name: &SecretName,
        identity: &Identity,
    ) -> Result<(Arc<Vec<X509>>, u64), TlsError> {
        match name {
            SecretName::Root => {
                let cert = identity.last().ok_or(TlsError::NoTrustBundle)?;
                Ok((Arc::new(cert.roots.clone()), cert.bundle_id))
            }
            SecretName::FileRoot(_) => self
                .roots
                .clone()
                .map(|r| r.map(|roots| (roots, 0)))
                .unwrap_or_else(|| Err(TlsError::WrongKind(format!("{name:?}")))),
            SecretName::Kubernetes(secret) => Err(TlsError::NotServed(secret.clone())),
            _ => Err(TlsError::WrongKind(format!("{name:?}"))),
        }
    }
}

/// What is known of the peer of a TLS connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// URI SANs.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// The subject, in Envoy's RFC 2253 style (empty for Istio's workload certificates).
    pub subject: String,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub hash: String,
}

impl PeerCert {
    /// The facts of `cert`.
    pub fn of(cert: &X509Ref) -> PeerCert {
        let mut uris = Vec::new();
        let mut dns = Vec::new();
        if let Some(names) = cert.subject_alt_names() {
            for n in &names {
                if let Some(u) = n.uri() {
                    uris.push(u.to_string());
                } else if let Some(d) = n.dnsname() {
                    dns.push(d.to_string());
                }
            }
        }
        let subject = cert
            .subject_name()
            .entries()
            .map(|e| {
                format!(
                    "{}={}",
                    e.object().nid().short_name().unwrap_or("?"),
                    e.data()
                        .as_utf8()
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        PeerCert {
            uris,
            dns,
            subject,
            hash: cert
                .digest(MessageDigest::sha256())
                .map(|d| hex(&d))
                .unwrap_or_default(),
        }
    }

    /// The SPIFFE ID (the first `spiffe://` URI SAN), the principal authorization matches.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.uris
            .iter()
            .map(String::as_str)
            .find(|u| u.starts_with("spiffe://"))
    }

    /// URI and DNS SANs, for messages.
    pub fn presented(&self) -> Vec<String> {
        self.uris.iter().chain(&self.dns).cloned().collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `peer` satisfies `matchers` (any of them; none means any certificate).
pub fn san_matches(peer: &PeerCert, matchers: &[SanMatcher]) -> bool {
    if matchers.is_empty() {
        return true;
    }
    matchers.iter().any(|m| {
        let candidates: Vec<&String> = match m.san_type {
            SanType::Uri => peer.uris.iter().collect(),
            SanType::Dns => peer.dns.iter().collect(),
            SanType::Email | SanType::IpAddress => Vec::new(),
            SanType::Any => peer.uris.iter().chain(&peer.dns).collect(),
        };
        candidates.iter().any(|c| m.matcher.matches(c))
    })
}

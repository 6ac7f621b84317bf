//! The mesh's certificate authority (Istio's CA in istiod).
//!
//! - [`Authority`]: the signing key and certificate, the chain to the root and the trust
//!   bundle, from `--ca-dir` (Istio's `cacerts` layout) or a root generated on first start
//!   and kept in the state directory ([`store`]).
//! - [`service`]: `istio.v1.auth.IstioCertificateService/CreateCertificate`. It signs only
//!   the identity the caller proves: a bootstrap [`token`] for that namespace and service
//!   account, or its current certificate over mutual TLS ([`tls`], port 15012). The CSR
//!   ([`csr`]) must name exactly that SPIFFE ID ([`identity`]).
//! - [`metrics`]: Istio's `citadel_server_*` counters.

pub mod cert;
pub mod client;
pub mod csr;
pub mod identity;
pub mod metrics;
pub mod service;
pub mod store;
pub mod tls;
pub mod token;

use std::path::{Path, PathBuf};
use std::time::Duration;

use boring::pkey::{PKey, Private, Public};
use boring::stack::Stack;
use boring::x509::store::X509StoreBuilder;
use boring::x509::{X509StoreContext, X509};
use serde::Serialize;

pub use identity::SpiffeId;
pub use store::StoreError;

use self::cert::LeafSpec;
use self::csr::ParsedCsr;

/// Istio's default workload certificate lifetime.
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Istio's default longest workload certificate lifetime (`MAX_WORKLOAD_CERT_TTL`).
pub const DEFAULT_MAX_WORKLOAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Shortest certificate lifetime the CA issues.
pub const MIN_WORKLOAD_TTL: Duration = Duration::from_secs(60);
/// The control plane's serving name on 15012 (Istio's istiod service).
pub const SERVING_NAMES: [&str; 2] = [
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
];

/// Errors loading or creating the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Files missing, unreadable or malformed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key is not the signing certificate's.
    #[error("{dir}: ca-key.pem is not the key of ca-cert.pem")]
    KeyMismatch {
        /// The CA directory.
        dir: PathBuf,
    },
    /// The signing certificate does not chain to a root of the bundle.
    #[error(
        "{dir}: ca-cert.pem does not verify against root-cert.pem through cert-chain.pem: {reason}"
    )]
    Chain {
        /// The CA directory.
        dir: PathBuf,
        /// The verifier's message.
        reason: String,
    },
    /// The signing certificate has expired.
    #[error("{dir}: ca-cert.pem expired")]
    Expired {
        /// The CA directory.
        dir: PathBuf,
    },
    /// A cryptographic operation failed.
    #[error("CA: {0}")]
    Crypto(#[from] boring::error::ErrorStack),
}

/// Where the CA came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Origin {
    /// `--ca-dir` (plugged-in certificates).
    Plugged,
    /// Generated on an earlier start and loaded from the state directory.
    Kept,
    /// Generated on this start.
    Generated,
}

/// A certificate with its key, as issued for the control plane or a workload.
pub struct Issued {
    /// The private key.
    pub key: PKey<Private>,
    /// The leaf, then the chain up to the root.
    pub chain: Vec<X509>,
}

/// The certificate authority.
pub struct Authority {
    key: PKey<Private>,
    public: PKey<Public>,
    cert: X509,
    chain: Vec<X509>,
    roots: Vec<X509>,
    trust_domain: String,
    dir: PathBuf,
    origin: Origin,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.dir)
            .field("trust_domain", &self.trust_domain)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Why a certificate cannot be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The signing certificate expires before the earliest `notAfter` the CA would give.
    #[error("the CA certificate expires too soon to sign")]
    CaExpiring,
    /// BoringSSL failed.
    #[error("signing failed: {0}")]
    Crypto(#[from] boring::error::ErrorStack),
}

fn verify_chain(m: &store::Material) -> Result<(), String> {
    let mut store = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    for root in &m.roots {
        store.add_cert(root.clone()).map_err(|e| e.to_string())?;
    }
    let store = store.build();
    let mut untrusted = Stack::new().map_err(|e| e.to_string())?;
    for c in &m.chain {
        untrusted.push(c.clone()).map_err(|e| e.to_string())?;
    }
    let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
    let ok = ctx
        .init(&store, &m.cert, &untrusted, |c| {
            let ok = c.verify_cert()?;
            Ok(if ok { Ok(()) } else { c.verify_result() })
        })
        .map_err(|e| e.to_string())?;
    ok.map_err(|e| e.error_string().to_string())
}

impl Authority {
    /// The CA of `ca_dir` when given (it must exist), else the one kept in the state
    /// directory (see [`store::ca_dir`]), generated there for `trust_domain` if missing.
    pub fn load_or_create(
        ca_dir: Option<&Path>,
        state_dir: Option<&Path>,
        trust_domain: &str,
    ) -> Result<Authority, CaError> {
        let dir = store::ca_dir(ca_dir, state_dir);
        let (material, origin) = if ca_dir.is_some() {
            (store::load(&dir)?, Origin::Plugged)
        } else if store::exists(&dir) {
            (store::load(&dir)?, Origin::Kept)
        } else {
            (store::generate(&dir, trust_domain)?, Origin::Generated)
        };
        Authority::from_material(material, dir, trust_domain, origin)
    }

    /// The CA of an existing directory (as `meshctl` reads it).
    pub fn load(dir: &Path, trust_domain: &str) -> Result<Authority, CaError> {
        Authority::from_material(
            store::load(dir)?,
            dir.to_path_buf(),
            trust_domain,
            Origin::Plugged,
        )
    }

    fn from_material(
        m: store::Material,
        dir: PathBuf,
        trust_domain: &str,
        origin: Origin,
    ) -> Result<Authority, CaError> {
        let public = m.cert.public_key()?;
        if !public.public_eq(&m.key) {
            return Err(CaError::KeyMismatch { dir });
        }
        verify_chain(&m).map_err(|reason| CaError::Chain {
            dir: dir.clone(),
            reason,
        })?;
        let (_, not_after) = cert::validity(&m.cert)?;
        if not_after <= cert::now_unix() {
            return Err(CaError::Expired { dir });
        }
        let mut chain = m.chain;
        // The response chain ends with the root, as Istio's does.
        let last_is_root = chain
            .last()
            .and_then(|c| c.to_der().ok())
            .is_some_and(|der| {
                m.roots
                    .iter()
                    .any(|r| r.to_der().ok().as_ref() == Some(&der))
            });
        if !last_is_root {
            chain.push(m.roots[0].clone());
        }
        Ok(Authority {
            key: m.key,
            public,
            cert: m.cert,
            chain,
            roots: m.roots,
            trust_domain: trust_domain.to_string(),
            dir,
            origin,
        })
    }

    /// The directory the CA was read from (or written to).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where it came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The trust domain of the identities it signs.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The signing key (bootstrap tokens are signed with it).
    pub fn signing_key(&self) -> &PKey<Private> {
        &self.key
    }

    /// The signing certificate's public key (bootstrap tokens are verified with it).
    pub fn public_key(&self) -> &PKey<Public> {
        &self.public
    }

    /// The roots of the trust bundle.
    pub fn roots(&self) -> &[X509] {
        &self.roots
    }

    /// The trust bundle as concatenated PEM.
    pub fn trust_bundle_pem(&self) -> String {
        cert::pem_strings(&self.roots)
            .map(|v| v.concat())
            .unwrap_or_default()
    }

    /// `notAfter` of the signing certificate, seconds since the epoch.
    pub fn expires(&self) -> i64 {
        cert::validity(&self.cert).map_or(0, |(_, a)| a)
    }

    /// A leaf for `public_key` valid for `ttl` from now (backdated by [`cert::BACKDATE`],
    /// never past the signing certificate), followed by the chain to the root.
    fn issue(
        &self,
        public_key: &PKey<Public>,
        uris: Vec<String>,
        dns: Vec<String>,
        ttl: Duration,
    ) -> Result<Vec<X509>, SignError> {
        let now = cert::now_unix();
        let not_after = (now + ttl.as_secs() as i64).min(self.expires());
        if not_after <= now {
            return Err(SignError::CaExpiring);
        }
        let spec = LeafSpec {
            uris,
            dns,
            not_before: now - cert::BACKDATE.as_secs() as i64,
            not_after,
        };
        let leaf = cert::issue_leaf(public_key, &spec, &self.cert, &self.key)?;
        let mut chain = vec![leaf];
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }

    /// Signs a validated CSR for its identity; the caller has checked that the identity is
    /// the one proven. Returns the PEM chain: leaf first, root last.
    pub fn sign_csr(&self, csr: &ParsedCsr, ttl: Duration) -> Result<Vec<String>, SignError> {
        let chain = self.issue(
            &csr.public_key,
            vec![csr.identity.to_string()],
            Vec::new(),
            ttl,
        )?;
        Ok(cert::pem_strings(&chain)?)
    }

    /// A fresh key and certificate for `identity` (certificates the control plane delivers
    /// itself, over SDS, to proxies that cannot send a CSR).
    pub fn issue_workload(&self, identity: &SpiffeId, ttl: Duration) -> Result<Issued, SignError> {
        let key = cert::generate_ec_key()?;
        let public = PKey::public_key_from_der(&key.public_key_to_der()?)?;
        let chain = self.issue(&public, vec![identity.to_string()], Vec::new(), ttl)?;
        Ok(Issued { key, chain })
    }

    /// A fresh key and serving certificate of the control plane ([`SERVING_NAMES`]).
    pub fn issue_serving(&self, ttl: Duration) -> Result<Issued, SignError> {
        let key = cert::generate_ec_key()?;
        let public = PKey::public_key_from_der(&key.public_key_to_der()?)?;
        let dns = SERVING_NAMES.iter().map(|s| s.to_string()).collect();
        let chain = self.issue(&public, Vec::new(), dns, ttl)?;
        Ok(Issued { key, chain })
    }
}

#[cfg(test)]
mod tests;

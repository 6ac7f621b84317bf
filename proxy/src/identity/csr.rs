//! The proxy's side of certificate issuance: its key (ECDSA P-256), the CSR naming its
//! SPIFFE ID, and the checks on what the CA sends back (the leaf certifies this key and this
//! identity, and chains to the root that ends the response).

use boring::asn1::{Asn1Time, Asn1TimeRef};
use boring::ec::{EcGroup, EcKey};
use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, PKeyRef, Private};
use boring::stack::Stack;
use boring::x509::extension::SubjectAlternativeName;
use boring::x509::store::X509StoreBuilder;
use boring::x509::{X509Ref, X509Req, X509StoreContext, X509};
use pingora_core::utils::tls::CertKey;
use std::sync::Arc;

use super::{now_unix, WorkloadCert};

/// What is wrong with the CA's answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// A certificate that does not parse.
    #[error("the CA's chain has an invalid PEM certificate")]
    Pem,
    /// Fewer than a leaf and a root.
    #[error("the CA's chain has {0} certificate(s); expected the leaf and at least the root")]
    TooShort(usize),
    /// The leaf certifies another key.
    #[error("the certificate is not for the key the proxy sent")]
    WrongKey,
    /// The leaf certifies another identity.
    #[error("the certificate names {found:?}, not {expected}")]
    WrongIdentity {
        /// Expected SPIFFE ID.
        expected: String,
        /// The leaf's URI SANs.
        found: Vec<String>,
    },
    /// The chain does not verify.
    #[error("the certificate does not verify against the trust bundle: {0}")]
    Untrusted(String),
    /// BoringSSL failed.
    #[error("certificate handling failed: {0}")]
    Crypto(String),
}

impl From<ErrorStack> for ChainError {
    fn from(e: ErrorStack) -> Self {
        ChainError::Crypto(e.to_string())
    }
}

/// A fresh ECDSA P-256 key.
pub fn generate_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

/// A PEM CSR for `key` whose only SAN is `spiffe_id`.
pub fn build_csr(key: &PKeyRef<Private>, spiffe_id: &str) -> Result<String, ErrorStack> {
    let mut b = X509Req::builder()?;
    b.set_version(0)?;
    b.set_pubkey(key)?;
    let mut san = SubjectAlternativeName::new();
    san.critical().uri(spiffe_id);
    let ext = san.build(&b.x509v3_context(None))?;
    let mut stack = Stack::new()?;
    stack.push(ext)?;
    b.add_extensions(&stack)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(String::from_utf8_lossy(&b.build().to_pem()?).into_owned())
}

/// Seconds since the epoch of an ASN.1 time.
pub fn unix_time(t: &Asn1TimeRef) -> Result<i64, ErrorStack> {
    let diff = Asn1Time::from_unix(0)?.diff(t)?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// `notBefore` and `notAfter` of a certificate.
pub fn validity(cert: &X509Ref) -> Result<(i64, i64), ErrorStack> {
    Ok((unix_time(cert.not_before())?, unix_time(cert.not_after())?))
}

/// Serial number, lowercase hex.
pub fn serial_hex(cert: &X509Ref) -> String {
    cert.serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_ascii_lowercase()))
        .unwrap_or_default()
}

/// URI SANs of a certificate.
pub fn uri_sans(cert: &X509Ref) -> Vec<String> {
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.uri().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// URI and DNS SANs, prefixed `URI:` / `DNS:`.
pub fn sans(cert: &X509Ref) -> Vec<String> {
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    n.uri()
                        .map(|u| format!("URI:{u}"))
                        .or_else(|| n.dnsname().map(|d| format!("DNS:{d}")))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every certificate of a list of PEM strings (each may hold several).
pub fn parse_pems(pems: &[String]) -> Result<Vec<X509>, ChainError> {
    let mut out = Vec::new();
    for pem in pems {
        let certs = X509::stack_from_pem(pem.as_bytes()).map_err(|_| ChainError::Pem)?;
        if certs.is_empty() {
            return Err(ChainError::Pem);
        }
        out.extend(certs);
    }
    Ok(out)
}

/// Verifies `leaf` with `intermediates` against `roots`.
pub fn verify(leaf: &X509Ref, intermediates: &[X509], roots: &[X509]) -> Result<(), ChainError> {
    let mut store = X509StoreBuilder::new()?;
    for r in roots {
        store.add_cert(r.clone())?;
    }
    let store = store.build();
    let mut untrusted = Stack::new()?;
    for c in intermediates {
        untrusted.push(c.clone())?;
    }
    let mut ctx = X509StoreContext::new()?;
    let result = ctx.init(&store, leaf, &untrusted, |c| {
        Ok(if c.verify_cert()? {
            Ok(())
        } else {
            c.verify_result()
        })
    })?;
    result.map_err(|e| ChainError::Untrusted(e.error_string().to_string()))
}

/// Checks the CA's response for `key` and `spiffe_id` and makes it the proxy's certificate.
/// The chain must verify against `anchors` when given (`--ca-root-cert`, or the roots the
/// proxy already trusts), else against the root that ends it.
pub fn accept_chain(
    pems: &[String],
    key: PKey<Private>,
    spiffe_id: &str,
    anchors: &[X509],
    generation: u64,
) -> Result<WorkloadCert, ChainError> {
    let certs = parse_pems(pems)?;
    if certs.len() < 2 {
        return Err(ChainError::TooShort(certs.len()));
    }
    let leaf = &certs[0];
    if !leaf.public_key()?.public_eq(&key) {
        return Err(ChainError::WrongKey);
    }
    let uris = uri_sans(leaf);
    if uris != [spiffe_id] {
        return Err(ChainError::WrongIdentity {
            expected: spiffe_id.to_string(),
            found: uris,
        });
    }
    let root = certs[certs.len() - 1].clone();
    let intermediates = &certs[1..certs.len() - 1];
    let roots = if anchors.is_empty() {
        vec![root]
    } else {
        anchors.to_vec()
    };
    verify(leaf, intermediates, &roots)?;
    let (not_before, not_after) = validity(leaf)?;
    let mut presented = vec![leaf.clone()];
    presented.extend(intermediates.iter().cloned());
    let cert_key = Arc::new(CertKey::new(presented.clone(), key.clone()));
    let bundle_id = bundle_id(&roots);
    Ok(WorkloadCert {
        spiffe_id: spiffe_id.to_string(),
        serial: serial_hex(leaf),
        key,
        chain: presented,
        roots,
        not_before,
        not_after,
        received: now_unix(),
        cert_key,
        generation,
        bundle_id,
    })
}

/// A fingerprint of a set of roots (their DER, hashed).
pub fn bundle_id(roots: &[X509]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    for r in roots {
        r.to_der().unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

//! Certificate signing requests: parsed, their signature checked, their key type and their
//! subject alternative names validated. A workload CSR names exactly one SAN, the workload's
//! SPIFFE ID; anything else (DNS names, IP addresses, e-mail, a second URI) is refused.

use boring::pkey::{Id, PKey, Public};
use boring::x509::{X509Req, X509};

use super::identity::{IdentityError, SpiffeId};

/// A validated CSR.
#[derive(Debug)]
pub struct ParsedCsr {
    /// The key to certify.
    pub public_key: PKey<Public>,
    /// The identity it asks for.
    pub identity: SpiffeId,
}

/// Why a CSR is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    /// Not a PEM `CERTIFICATE REQUEST`.
    #[error("the CSR is not a PEM-encoded certificate request")]
    Parse,
    /// The CSR's signature does not match its key.
    #[error("the CSR's signature does not verify with its own public key")]
    Signature,
    /// A key type or size the CA does not certify.
    #[error("unsupported key in the CSR: {0} (ECDSA P-256/P-384 or RSA of at least 2048 bits)")]
    Key(String),
    /// No subject alternative name.
    #[error(
        "the CSR has no subject alternative name: it must carry exactly the workload's SPIFFE ID"
    )]
    NoSan,
    /// More than the one SPIFFE ID.
    #[error("the CSR has subject alternative names other than one SPIFFE ID: {0}")]
    ExtraSans(String),
    /// The URI SAN is not a workload SPIFFE ID.
    #[error("the CSR's URI SAN is not a workload identity: {0}")]
    Identity(#[from] IdentityError),
}

fn check_key(key: &PKey<Public>) -> Result<(), CsrError> {
    match key.id() {
        Id::EC => {
            let bits = key.bits();
            if bits == 256 || bits == 384 {
                Ok(())
            } else {
                Err(CsrError::Key(format!("ECDSA key of {bits} bits")))
            }
        }
        Id::RSA => {
            let bits = key.bits();
            if bits >= 2048 {
                Ok(())
            } else {
                Err(CsrError::Key(format!("RSA key of {bits} bits")))
            }
        }
        other => Err(CsrError::Key(format!("key type {}", other.as_raw()))),
    }
}

/// Every SAN of the request's extensions, described (`URI:...`, `DNS:...`, `IP:...`).
fn sans(req: &X509Req) -> Result<Vec<(Option<String>, String)>, CsrError> {
    let Ok(extensions) = req.extensions() else {
        return Ok(Vec::new());
    };
    // BoringSSL reads SANs from certificates only: put the requested extensions on a
    // throwaway certificate and read them back from it.
    let mut scratch = X509::builder().map_err(|_| CsrError::Parse)?;
    for ext in &extensions {
        scratch.append_extension(ext).map_err(|_| CsrError::Parse)?;
    }
    let scratch = scratch.build();
    let Some(names) = scratch.subject_alt_names() else {
        return Ok(Vec::new());
    };
    Ok(names
        .iter()
        .map(|n| {
            if let Some(uri) = n.uri() {
                (Some(uri.to_string()), format!("URI:{uri}"))
            } else if let Some(dns) = n.dnsname() {
                (None, format!("DNS:{dns}"))
            } else if let Some(email) = n.email() {
                (None, format!("email:{email}"))
            } else if let Some(ip) = n.ipaddress() {
                (None, format!("IP:{}", hex::encode(ip)))
            } else {
                (None, "othername".to_string())
            }
        })
        .collect())
}

/// Parses and validates a PEM CSR.
pub fn parse_csr(pem: &str) -> Result<ParsedCsr, CsrError> {
    let req = X509Req::from_pem(pem.as_bytes()).map_err(|_| CsrError::Parse)?;
    let public_key = req.public_key().map_err(|_| CsrError::Parse)?;
    check_key(&public_key)?;
    if !req.verify(&public_key).unwrap_or(false) {
        return Err(CsrError::Signature);
    }
    let sans = sans(&req)?;
    match sans.as_slice() {
        [] => Err(CsrError::NoSan),
        [(Some(uri), _)] => Ok(ParsedCsr {
            public_key,
            identity: uri.parse()?,
        }),
        more => Err(CsrError::ExtraSans(
            more.iter()
                .map(|(_, d)| d.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// A PEM CSR for `key` naming `uris` and `dns` as SANs (what a proxy sends; for tools and
/// tests).
pub fn build_csr(
    key: &boring::pkey::PKeyRef<boring::pkey::Private>,
    uris: &[&str],
    dns: &[&str],
) -> Result<String, boring::error::ErrorStack> {
    use boring::stack::Stack;
    use boring::x509::extension::SubjectAlternativeName;
    let mut b = X509Req::builder()?;
    b.set_version(0)?;
    b.set_pubkey(key)?;
    if !uris.is_empty() || !dns.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for u in uris {
            san.uri(u);
        }
        for d in dns {
            san.dns(d);
        }
        let ext = san.build(&b.x509v3_context(None))?;
        let mut stack = Stack::new()?;
        stack.push(ext)?;
        b.add_extensions(&stack)?;
    }
    b.sign(key, boring::hash::MessageDigest::sha256())?;
    Ok(String::from_utf8_lossy(&b.build().to_pem()?).into_owned())
}

#[cfg(test)]
mod tests;

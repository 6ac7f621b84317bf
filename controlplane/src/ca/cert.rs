//! X.509 building blocks of the CA, on BoringSSL: keys, serials, times, the self-signed
//! root, leaf certificates, and reading certificates back (SANs, validity).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boring::asn1::{Asn1Integer, Asn1Time, Asn1TimeRef};
use boring::bn::{BigNum, MsbOption};
use boring::ec::{EcGroup, EcKey};
use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, PKeyRef, Private, Public};
use boring::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use boring::x509::{X509Name, X509Ref, X509};

/// How far back a new certificate's `notBefore` is set, for clocks a little behind ours.
pub const BACKDATE: Duration = Duration::from_secs(30);

/// A fresh ECDSA P-256 key.
pub fn generate_ec_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

/// Seconds since the epoch of an ASN.1 time.
pub fn unix_time(t: &Asn1TimeRef) -> Result<i64, ErrorStack> {
    let epoch = Asn1Time::from_unix(0)?;
    let diff = epoch.diff(t)?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn asn1_time(unix: i64) -> Result<Asn1Time, ErrorStack> {
    Asn1Time::from_unix(unix as _)
}

/// A random positive 128-bit serial number.
pub fn random_serial() -> Result<Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

/// A certificate's serial number in lowercase hex.
pub fn serial_hex(cert: &X509Ref) -> String {
    cert.serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_ascii_lowercase()))
        .unwrap_or_default()
}

/// The URI SANs of a certificate.
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

/// The DNS SANs of a certificate.
pub fn dns_sans(cert: &X509Ref) -> Vec<String> {
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.dnsname().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `notBefore` and `notAfter` in seconds since the epoch.
pub fn validity(cert: &X509Ref) -> Result<(i64, i64), ErrorStack> {
    Ok((unix_time(cert.not_before())?, unix_time(cert.not_after())?))
}

/// Certificates of a PEM bundle as PEM strings, in order.
pub fn pem_strings(certs: &[X509]) -> Result<Vec<String>, ErrorStack> {
    certs
        .iter()
        .map(|c| c.to_pem().map(|p| String::from_utf8_lossy(&p).into_owned()))
        .collect()
}

/// A self-signed root CA for `trust_domain` (subject `O=<trust domain>`, as Istio's), valid
/// for `ttl`.
pub fn self_signed_root(
    key: &PKeyRef<Private>,
    trust_domain: &str,
    ttl: Duration,
) -> Result<X509, ErrorStack> {
    let mut name = X509Name::builder()?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, trust_domain)?;
    let name = name.build();
    let now = now_unix();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(key)?;
    let not_before = asn1_time(now - BACKDATE.as_secs() as i64)?;
    let not_after = asn1_time(now + ttl.as_secs() as i64)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    let ext = BasicConstraints::new().critical().ca().build()?;
    b.append_extension(&ext)?;
    let ext = KeyUsage::new()
        .critical()
        .key_cert_sign()
        .crl_sign()
        .digital_signature()
        .build()?;
    b.append_extension(&ext)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(&ski)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// What a leaf certificate says.
#[derive(Clone, Debug, Default)]
pub struct LeafSpec {
    /// URI SANs (the SPIFFE ID of a workload).
    pub uris: Vec<String>,
    /// DNS SANs (the control plane's serving names).
    pub dns: Vec<String>,
    /// `notBefore`, seconds since the epoch.
    pub not_before: i64,
    /// `notAfter`, seconds since the epoch.
    pub not_after: i64,
}

/// A leaf certificate for `public_key`, issued by `issuer` with `issuer_key`: empty subject,
/// critical SANs (RFC 5280 requires them critical when the subject is empty), not a CA,
/// digital signature and key encipherment, server and client authentication.
pub fn issue_leaf(
    public_key: &PKeyRef<Public>,
    spec: &LeafSpec,
    issuer: &X509Ref,
    issuer_key: &PKeyRef<Private>,
) -> Result<X509, ErrorStack> {
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    let empty = X509Name::builder()?.build();
    b.set_subject_name(&empty)?;
    b.set_issuer_name(issuer.subject_name())?;
    b.set_pubkey(public_key)?;
    let not_before = asn1_time(spec.not_before)?;
    let not_after = asn1_time(spec.not_after)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    let ext = BasicConstraints::new().critical().build()?;
    b.append_extension(&ext)?;
    let ext = KeyUsage::new()
        .critical()
        .digital_signature()
        .key_encipherment()
        .build()?;
    b.append_extension(&ext)?;
    let ext = ExtendedKeyUsage::new()
        .server_auth()
        .client_auth()
        .build()?;
    b.append_extension(&ext)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&b.x509v3_context(Some(issuer), None))?;
    b.append_extension(&aki)?;
    let mut san = SubjectAlternativeName::new();
    san.critical();
    for uri in &spec.uris {
        san.uri(uri);
    }
    for dns in &spec.dns {
        san.dns(dns);
    }
    let san = san.build(&b.x509v3_context(Some(issuer), None))?;
    b.append_extension(&san)?;
    b.sign(issuer_key, MessageDigest::sha256())?;
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_leaf_verify_and_read_back() {
        let root_key = generate_ec_key().unwrap();
        let root = self_signed_root(&root_key, "cluster.local", Duration::from_secs(3600)).unwrap();
        assert!(root.verify(&root_key).unwrap());
        let leaf_key = generate_ec_key().unwrap();
        let public = PKey::public_key_from_pem(&leaf_key.public_key_to_pem().unwrap()).unwrap();
        let now = now_unix();
        let spec = LeafSpec {
            uris: vec!["spiffe://cluster.local/ns/a/sa/b".into()],
            dns: vec!["istiod.istio-system.svc".into()],
            not_before: now - 30,
            not_after: now + 600,
        };
        let leaf = issue_leaf(&public, &spec, &root, &root_key).unwrap();
        assert!(leaf.verify(&root_key).unwrap());
        assert_eq!(uri_sans(&leaf), spec.uris);
        assert_eq!(dns_sans(&leaf), spec.dns);
        assert_eq!(validity(&leaf).unwrap(), (now - 30, now + 600));
        assert!(serial_hex(&leaf).len() > 8);
        assert_ne!(serial_hex(&leaf), serial_hex(&root));
    }
}

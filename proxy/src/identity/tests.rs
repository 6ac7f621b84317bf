use std::time::Duration;

use boring::asn1::Asn1Time;
use boring::bn::{BigNum, MsbOption};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::x509::extension::{BasicConstraints, SubjectAlternativeName};
use boring::x509::{X509Name, X509Req, X509};

use super::client::CaAddress;
use super::csr::{self, ChainError};
use super::renew::renew_at;
use super::*;

const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

/// A test CA: a self-signed root that signs leaves for CSRs.
pub(crate) struct TestCa {
    pub key: PKey<Private>,
    pub root: X509,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = csr::generate_key().unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "cluster.local")
            .unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = serial();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        let (nb, na) = times(-60, 86400);
        b.set_not_before(&nb).unwrap();
        b.set_not_after(&na).unwrap();
        let ext = BasicConstraints::new().critical().ca().build().unwrap();
        b.append_extension(&ext).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        TestCa {
            key,
            root: b.build(),
        }
    }

    /// The CA's answer to `csr_pem`: leaf for `uri` (lifetime from `from` to `to` seconds
    /// from now) and the root.
    pub fn sign(&self, csr_pem: &str, uri: &str, from: i64, to: i64) -> Vec<String> {
        let req = X509Req::from_pem(csr_pem.as_bytes()).unwrap();
        let public = req.public_key().unwrap();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = serial();
        b.set_serial_number(&serial).unwrap();
        let empty = X509Name::builder().unwrap().build();
        b.set_subject_name(&empty).unwrap();
        b.set_issuer_name(self.root.subject_name()).unwrap();
        b.set_pubkey(&public).unwrap();
        let (nb, na) = times(from, to);
        b.set_not_before(&nb).unwrap();
        b.set_not_after(&na).unwrap();
        let san = SubjectAlternativeName::new()
            .critical()
            .uri(uri)
            .build(&b.x509v3_context(Some(&self.root), None))
            .unwrap();
        b.append_extension(&san).unwrap();
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        [b.build(), self.root.clone()]
            .iter()
            .map(|c| String::from_utf8(c.to_pem().unwrap()).unwrap())
            .collect()
    }
}

fn serial() -> boring::asn1::Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

fn times(from: i64, to: i64) -> (Asn1Time, Asn1Time) {
    let now = now_unix();
    (
        Asn1Time::from_unix((now + from) as _).unwrap(),
        Asn1Time::from_unix((now + to) as _).unwrap(),
    )
}

#[test]
fn the_csr_names_only_the_spiffe_id_and_the_answer_is_checked() {
    let ca = TestCa::new();
    let key = csr::generate_key().unwrap();
    let pem = csr::build_csr(&key, ID).unwrap();
    let req = X509Req::from_pem(pem.as_bytes()).unwrap();
    assert!(req.verify(&req.public_key().unwrap()).unwrap());
    let chain = ca.sign(&pem, ID, -30, 3600);
    let cert = csr::accept_chain(&chain, key.clone(), ID, &[], 1).unwrap();
    assert_eq!(cert.spiffe_id, ID);
    assert_eq!(cert.chain.len(), 1, "the root is not presented");
    assert_eq!(cert.roots.len(), 1);
    assert!(cert.valid_at(now_unix()));
    assert!(!cert.serial.is_empty());

    // Another identity, another key, a root other than the anchors, a short chain.
    let other = ca.sign(
        &pem,
        "spiffe://cluster.local/ns/default/sa/ratings",
        -30,
        3600,
    );
    assert!(matches!(
        csr::accept_chain(&other, key.clone(), ID, &[], 1),
        Err(ChainError::WrongIdentity { .. })
    ));
    let wrong_key = csr::generate_key().unwrap();
    assert_eq!(
        csr::accept_chain(&chain, wrong_key, ID, &[], 1).unwrap_err(),
        ChainError::WrongKey
    );
    let foreign = TestCa::new();
    assert!(matches!(
        csr::accept_chain(
            &chain,
            key.clone(),
            ID,
            std::slice::from_ref(&foreign.root),
            1
        ),
        Err(ChainError::Untrusted(_))
    ));
    assert_eq!(
        csr::accept_chain(&chain[..1], key.clone(), ID, &[], 1).unwrap_err(),
        ChainError::TooShort(1)
    );
    assert_eq!(
        csr::accept_chain(&["junk".to_string()], key, ID, &[], 1).unwrap_err(),
        ChainError::Pem
    );
}

#[test]
fn an_expired_certificate_fails_closed() {
    let ca = TestCa::new();
    let identity = Identity::new(ID.to_string());
    assert_eq!(identity.state(), IdentityState::Pending);
    assert!(!identity.is_ready());
    let key = csr::generate_key().unwrap();
    let pem = csr::build_csr(&key, ID).unwrap();
    let valid = csr::accept_chain(&ca.sign(&pem, ID, -30, 3600), key.clone(), ID, &[], 1).unwrap();
    identity.install(valid);
    assert_eq!(identity.state(), IdentityState::Valid);
    assert!(identity.is_ready());
    assert!(identity.current().is_some());
    let dump = serde_json::to_value(identity.dump()).unwrap();
    assert_eq!(dump["state"], "VALID");
    assert_eq!(dump["spiffe_id"], ID);
    assert!(dump["trust_bundle"][0]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!dump.to_string().contains("PRIVATE KEY"));

    // Expired a second ago: no certificate is handed out, readiness fails.
    let mut expired = csr::accept_chain(&ca.sign(&pem, ID, -7200, 3600), key, ID, &[], 2).unwrap();
    expired.not_after = now_unix() - 1;
    identity.install(expired);
    assert_eq!(identity.state(), IdentityState::Expired);
    assert!(identity.current().is_none());
    assert!(identity.last().is_some());
    assert!(!identity.is_ready());

    let disabled = Identity::disabled();
    assert_eq!(disabled.state(), IdentityState::Disabled);
    assert!(disabled.is_ready());
    assert!(disabled.current().is_none());
}

#[test]
fn renewal_at_half_the_remaining_life_or_the_forced_interval() {
    let ca = TestCa::new();
    let key = csr::generate_key().unwrap();
    let pem = csr::build_csr(&key, ID).unwrap();
    let mut cert = csr::accept_chain(&ca.sign(&pem, ID, -30, 600), key, ID, &[], 1).unwrap();
    cert.received = 1000;
    cert.not_after = 1600;
    assert_eq!(renew_at(&cert, None), 1300);
    assert_eq!(renew_at(&cert, Some(Duration::from_secs(5))), 1005);
    assert_eq!(renew_at(&cert, Some(Duration::from_secs(3600))), 1300);
}

#[test]
fn ca_addresses() {
    assert_eq!(
        CaAddress::parse("10.0.0.1:15010").unwrap(),
        CaAddress::Plain("10.0.0.1:15010".into())
    );
    assert_eq!(
        CaAddress::parse("http://istiod:15010/").unwrap(),
        CaAddress::Plain("istiod:15010".into())
    );
    let tls = CaAddress::parse("https://istiod.istio-system.svc:15012").unwrap();
    assert_eq!(tls, CaAddress::Tls("istiod.istio-system.svc:15012".into()));
    assert_eq!(tls.tls_default(), "istiod.istio-system.svc:15012");
    assert_eq!(
        CaAddress::parse("10.0.0.1:15010").unwrap().tls_default(),
        "10.0.0.1:15012"
    );
    for bad in ["grpc://x:1", "nohost", ":15010", "x:0", "x:99999"] {
        assert!(CaAddress::parse(bad).is_err(), "{bad}");
    }
}

use boring::ec::{EcGroup, EcKey};
use boring::nid::Nid;
use boring::pkey::PKey;
use boring::rsa::Rsa;

use super::*;
use crate::ca::cert::generate_ec_key;

const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

#[test]
fn a_workload_csr_is_accepted() {
    let key = generate_ec_key().unwrap();
    let csr = parse_csr(&build_csr(&key, &[ID], &[]).unwrap()).unwrap();
    assert_eq!(csr.identity.to_string(), ID);
    assert!(csr.public_key.public_eq(&key));
    // RSA 2048 too.
    let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    assert!(parse_csr(&build_csr(&rsa, &[ID], &[]).unwrap()).is_ok());
}

#[test]
fn extra_or_missing_sans_are_refused() {
    let key = generate_ec_key().unwrap();
    let csr = |uris: &[&str], dns: &[&str]| parse_csr(&build_csr(&key, uris, dns).unwrap());
    assert_eq!(csr(&[], &[]).unwrap_err(), CsrError::NoSan);
    let err = csr(&[ID], &["evil.example.com"]).unwrap_err();
    assert!(
        matches!(&err, CsrError::ExtraSans(s) if s.contains("DNS:evil.example.com")),
        "{err}"
    );
    let err = csr(&[ID, "spiffe://cluster.local/ns/kube-system/sa/admin"], &[]).unwrap_err();
    assert!(matches!(err, CsrError::ExtraSans(_)), "{err}");
    assert!(matches!(
        csr(&[], &["reviews.default.svc"]).unwrap_err(),
        CsrError::ExtraSans(_)
    ));
    assert!(matches!(
        csr(&["https://example.com/x"], &[]).unwrap_err(),
        CsrError::Identity(_)
    ));
}

#[test]
fn garbage_bad_signatures_and_weak_keys_are_refused() {
    assert_eq!(parse_csr("not a csr").unwrap_err(), CsrError::Parse);
    let weak = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
    assert!(matches!(
        parse_csr(&build_csr(&weak, &[ID], &[]).unwrap()).unwrap_err(),
        CsrError::Key(_)
    ));
    let p521 = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP521R1).unwrap()).unwrap();
    let p521 = PKey::from_ec_key(p521).unwrap();
    assert!(matches!(
        parse_csr(&build_csr(&p521, &[ID], &[]).unwrap()).unwrap_err(),
        CsrError::Key(_)
    ));
    // A CSR whose signature bytes were altered.
    let key = generate_ec_key().unwrap();
    let pem = build_csr(&key, &[ID], &[]).unwrap();
    let der = X509Req::from_pem(pem.as_bytes()).unwrap().to_der().unwrap();
    let mut tampered = der.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x55;
    let tampered = X509Req::from_der(&tampered).unwrap().to_pem().unwrap();
    assert_eq!(
        parse_csr(&String::from_utf8(tampered).unwrap()).unwrap_err(),
        CsrError::Signature
    );
}

use std::time::Duration;

use boring::x509::X509;

use super::cert;
use super::csr::{build_csr, parse_csr};
use super::store::{self, CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};
use super::*;

/// Writes an Istio `cacerts` directory: a root, an intermediate signed by it (the signing
/// CA), and the chain intermediate → root.
pub(crate) fn plugged_in_ca(dir: &Path) {
    let root_key = cert::generate_ec_key().unwrap();
    let root =
        cert::self_signed_root(&root_key, "cluster.local", Duration::from_secs(86400)).unwrap();
    let int_key = cert::generate_ec_key().unwrap();
    // An intermediate: a CA certificate signed by the root (built like a root, then re-signed).
    let mut b = X509::builder().unwrap();
    let own = cert::self_signed_root(&int_key, "intermediate", Duration::from_secs(86400)).unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&cert::random_serial().unwrap())
        .unwrap();
    b.set_subject_name(own.subject_name()).unwrap();
    b.set_issuer_name(root.subject_name()).unwrap();
    b.set_pubkey(&int_key).unwrap();
    b.set_not_before(own.not_before()).unwrap();
    b.set_not_after(own.not_after()).unwrap();
    b.append_extension(
        &boring::x509::extension::BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(
        &boring::x509::extension::KeyUsage::new()
            .critical()
            .key_cert_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(&root_key, boring::hash::MessageDigest::sha256())
        .unwrap();
    let int = b.build();
    std::fs::write(dir.join(CA_CERT), int.to_pem().unwrap()).unwrap();
    std::fs::write(
        dir.join(CA_KEY),
        int_key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join(ROOT_CERT), root.to_pem().unwrap()).unwrap();
    let mut chain = int.to_pem().unwrap();
    chain.extend(root.to_pem().unwrap());
    std::fs::write(dir.join(CERT_CHAIN), chain).unwrap();
}

#[test]
fn generated_root_is_kept_and_reloaded() {
    let state = tempfile::tempdir().unwrap();
    let first = Authority::load_or_create(None, Some(state.path()), "cluster.local").unwrap();
    assert_eq!(first.origin(), Origin::Generated);
    assert_eq!(first.dir(), state.path().join("ca"));
    for f in [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN] {
        assert!(state.path().join("ca").join(f).is_file(), "{f}");
    }
    let second = Authority::load_or_create(None, Some(state.path()), "cluster.local").unwrap();
    assert_eq!(second.origin(), Origin::Kept);
    assert_eq!(first.trust_bundle_pem(), second.trust_bundle_pem());
    // meshctl reads the same directory.
    let read = Authority::load(&store::ca_dir(None, Some(state.path())), "cluster.local").unwrap();
    assert!(read.public_key().public_eq(first.public_key()));
}

#[test]
fn plugged_in_intermediate_signs_with_the_full_chain() {
    let dir = tempfile::tempdir().unwrap();
    plugged_in_ca(dir.path());
    let ca = Authority::load_or_create(Some(dir.path()), None, "cluster.local").unwrap();
    assert_eq!(ca.origin(), Origin::Plugged);
    let key = cert::generate_ec_key().unwrap();
    let csr =
        parse_csr(&build_csr(&key, &["spiffe://cluster.local/ns/a/sa/b"], &[]).unwrap()).unwrap();
    let chain = ca.sign_csr(&csr, Duration::from_secs(600)).unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    let certs: Vec<X509> = chain
        .iter()
        .map(|p| X509::from_pem(p.as_bytes()).unwrap())
        .collect();
    assert_eq!(
        cert::uri_sans(&certs[0]),
        ["spiffe://cluster.local/ns/a/sa/b"]
    );
    assert!(certs[0].verify(&certs[1].public_key().unwrap()).unwrap());
    assert_eq!(
        certs[2].to_pem().unwrap(),
        ca.trust_bundle_pem().into_bytes()
    );
    let (nb, na) = cert::validity(&certs[0]).unwrap();
    assert!((na - nb - 600 - cert::BACKDATE.as_secs() as i64).abs() <= 2);
}

#[test]
fn bad_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Authority::load_or_create(Some(dir.path()), None, "cluster.local").unwrap_err();
    assert!(err.to_string().contains("ca-key.pem"), "{err}");
    plugged_in_ca(dir.path());
    // A key that is not the certificate's.
    let other = cert::generate_ec_key().unwrap();
    std::fs::write(
        dir.path().join(CA_KEY),
        other.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let err = Authority::load(dir.path(), "cluster.local").unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    // A signing certificate from another root.
    let dir2 = tempfile::tempdir().unwrap();
    plugged_in_ca(dir2.path());
    std::fs::copy(dir.path().join(ROOT_CERT), dir2.path().join(ROOT_CERT)).unwrap();
    std::fs::remove_file(dir2.path().join(CERT_CHAIN)).unwrap();
    let err = Authority::load(dir2.path(), "cluster.local").unwrap_err();
    assert!(matches!(err, CaError::Chain { .. }), "{err}");
}

#[test]
fn workload_and_serving_certificates() {
    let state = tempfile::tempdir().unwrap();
    let ca = Authority::load_or_create(None, Some(state.path()), "cluster.local").unwrap();
    let id = SpiffeId::new("cluster.local", "default", "envoy").unwrap();
    let issued = ca.issue_workload(&id, Duration::from_secs(3600)).unwrap();
    assert_eq!(cert::uri_sans(&issued.chain[0]), [id.to_string()]);
    assert!(issued.chain[0].public_key().unwrap().public_eq(&issued.key));
    let serving = ca.issue_serving(Duration::from_secs(3600)).unwrap();
    assert_eq!(cert::dns_sans(&serving.chain[0]), SERVING_NAMES);
}

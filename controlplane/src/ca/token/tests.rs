use std::time::Duration;

use boring::pkey::{PKey, Private, Public};
use boring::rsa::Rsa;

use super::*;
use crate::ca::cert::generate_ec_key;

fn public(key: &PKey<Private>) -> PKey<Public> {
    PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap()
}

#[test]
fn ec_and_rsa_tokens_verify() {
    for key in [
        generate_ec_key().unwrap(),
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
    ] {
        let pk = public(&key);
        let t = create(&key, &pk, "payments", "orders", Duration::from_secs(600)).unwrap();
        let id = verify(&pk, &t).unwrap();
        assert_eq!(
            (id.namespace.as_str(), id.service_account.as_str()),
            ("payments", "orders")
        );
        assert!(id.expires > now_unix());
    }
}

#[test]
fn expired_and_future_tokens_are_refused() {
    let key = generate_ec_key().unwrap();
    let pk = public(&key);
    let now = now_unix();
    let t = create_at(&key, &pk, "a", "b", now - 120, Duration::from_secs(60)).unwrap();
    assert!(matches!(verify(&pk, &t), Err(TokenError::Expired { .. })));
    let t = create_at(&key, &pk, "a", "b", now + 3600, Duration::from_secs(60)).unwrap();
    assert!(matches!(verify(&pk, &t), Err(TokenError::NotYetValid(_))));
    assert_eq!(
        create(&key, &pk, "a", "b", Duration::ZERO).unwrap_err(),
        TokenError::Ttl
    );
    assert_eq!(
        create(&key, &pk, "a", "b", MAX_TTL + Duration::from_secs(1)).unwrap_err(),
        TokenError::Ttl
    );
}

#[test]
fn forged_tokens_are_refused() {
    let key = generate_ec_key().unwrap();
    let pk = public(&key);
    let other = generate_ec_key().unwrap();
    // Signed by another CA.
    let t = create(&other, &public(&other), "a", "b", Duration::from_secs(60)).unwrap();
    assert_eq!(verify(&pk, &t).unwrap_err(), TokenError::Signature);
    // Claims swapped after signing.
    let good = create(&key, &pk, "a", "b", Duration::from_secs(60)).unwrap();
    let evil = create(
        &other,
        &public(&other),
        "kube-system",
        "admin",
        Duration::from_secs(60),
    )
    .unwrap();
    let g: Vec<&str> = good.split('.').collect();
    let e: Vec<&str> = evil.split('.').collect();
    let spliced = format!("{}.{}.{}", g[0], e[1], g[2]);
    assert_eq!(verify(&pk, &spliced).unwrap_err(), TokenError::Signature);
    // `alg: none` and an RSA algorithm on an EC key.
    let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), g[1]);
    assert!(matches!(
        verify(&pk, &none),
        Err(TokenError::Algorithm { .. })
    ));
    let rs = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
        g[1],
        g[2]
    );
    assert!(matches!(
        verify(&pk, &rs),
        Err(TokenError::Algorithm { .. })
    ));
    for junk in ["", "a.b", "a.b.c.d", "!!.??.**"] {
        assert!(
            matches!(verify(&pk, junk), Err(TokenError::Malformed(_))),
            "{junk}"
        );
    }
}

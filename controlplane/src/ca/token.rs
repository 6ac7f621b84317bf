//! Bootstrap tokens: short-lived JSON Web Tokens (RFC 7519) signed with the CA key, that
//! prove a workload's namespace and service account to the CA when it asks for its first
//! certificate (the part a Kubernetes service-account token plays for istiod).
//!
//! Format: compact JWS, `BASE64URL(header).BASE64URL(claims).BASE64URL(signature)`.
//! - Header: `{"alg": "ES256" | "ES384" | "RS256", "typ": "JWT", "kid": KID}`; the algorithm
//!   follows the CA key (ECDSA P-256, P-384, or RSA), `kid` is the first 16 bytes of the
//!   SHA-256 of the CA certificate's public key (DER), in hex.
//! - Claims, shaped like a Kubernetes service-account token: `iss` `mesh-ca`, `sub`
//!   `system:serviceaccount:NS:SA`, `aud` `["istio-ca"]`, `iat`, `nbf`, `exp` (seconds since
//!   the epoch), `jti` (random), and `kubernetes.io: {namespace, serviceaccount: {name}}`.
//! - Signature: ECDSA as the fixed-size `r || s` (RFC 7518 section 3.4) or RSASSA-PKCS1-v1_5,
//!   over `header.claims`, with SHA-256 (SHA-384 for P-384).
//!
//! Verification takes only the algorithm of the CA's own key (no `none`, no algorithm
//! confusion), checks the signature, the issuer, the audience, the subject against the
//! namespace and service account claims, and the time window (`exp` strictly in the future,
//! `nbf`/`iat` not more than [`CLOCK_SKEW`] ahead).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use boring::bn::BigNum;
use boring::ecdsa::EcdsaSig;
use boring::hash::{hash, MessageDigest};
use boring::pkey::{HasPublic, Id, PKeyRef, Private, Public};
use boring::sign::{Signer, Verifier};
use serde::{Deserialize, Serialize};

use super::cert::now_unix;

/// The `iss` of every token.
pub const ISSUER: &str = "mesh-ca";
/// The audience the CA accepts (Istio's default token audience).
pub const AUDIENCE: &str = "istio-ca";
/// Longest token lifetime `meshctl token create` issues.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// How far in the future `nbf` and `iat` may be (clock differences between machines).
pub const CLOCK_SKEW: i64 = 60;

/// Why a token is refused (or cannot be made).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The algorithm is not the CA key's.
    #[error("token algorithm {found:?} is not the CA key's ({expected})")]
    Algorithm {
        /// In the header.
        found: String,
        /// The CA key's.
        expected: &'static str,
    },
    /// Signed by another key.
    #[error("token signature does not verify with the CA key (forged, or from another CA)")]
    Signature,
    /// `exp` passed.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// `exp`.
        exp: i64,
        /// Now.
        now: i64,
    },
    /// `nbf` or `iat` in the future.
    #[error("token not valid before {0}")]
    NotYetValid(i64),
    /// A claim with the wrong value.
    #[error("token claim {claim}: {problem}")]
    Claim {
        /// The claim.
        claim: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The CA key cannot sign tokens (unsupported type) or signing failed.
    #[error("cannot sign with the CA key: {0}")]
    Key(String),
    /// A TTL of zero or over [`MAX_TTL`].
    #[error(
        "token TTL must be between 1s and {}",
        humantime::format_duration(MAX_TTL)
    )]
    Ttl,
}

/// Namespace and service account a valid token proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIdentity {
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// `exp`.
    pub expires: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ServiceAccountRef {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct KubernetesClaims {
    namespace: String,
    serviceaccount: ServiceAccountRef,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    iat: i64,
    #[serde(default)]
    nbf: Option<i64>,
    exp: i64,
    #[serde(default)]
    jti: Option<String>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaims,
}

/// The JWS algorithm of a key, with its digest and ECDSA coordinate size.
fn algorithm<T: HasPublic>(
    key: &PKeyRef<T>,
) -> Result<(&'static str, MessageDigest, usize), TokenError> {
    match (key.id(), key.bits()) {
        (Id::EC, 256) => Ok(("ES256", MessageDigest::sha256(), 32)),
        (Id::EC, 384) => Ok(("ES384", MessageDigest::sha384(), 48)),
        (Id::RSA, _) => Ok(("RS256", MessageDigest::sha256(), 0)),
        (id, bits) => Err(TokenError::Key(format!(
            "key type {} of {bits} bits",
            id.as_raw()
        ))),
    }
}

/// The `kid` of the CA's public key.
pub fn key_id(key: &PKeyRef<Public>) -> String {
    key.public_key_to_der()
        .ok()
        .and_then(|der| hash(MessageDigest::sha256(), &der).ok())
        .map(|h| hex::encode(&h[..16]))
        .unwrap_or_default()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(part: &str, what: &'static str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))
}

/// A token for `namespace`/`service_account`, valid from now for `ttl`, signed with `key`
/// (whose public half is `public`).
pub fn create(
    key: &PKeyRef<Private>,
    public: &PKeyRef<Public>,
    namespace: &str,
    service_account: &str,
    ttl: Duration,
) -> Result<String, TokenError> {
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(TokenError::Ttl);
    }
    create_at(key, public, namespace, service_account, now_unix(), ttl)
}

/// [`create`] with an explicit issue time (tests make expired tokens with it).
pub fn create_at(
    key: &PKeyRef<Private>,
    public: &PKeyRef<Public>,
    namespace: &str,
    service_account: &str,
    issued_at: i64,
    ttl: Duration,
) -> Result<String, TokenError> {
    let (alg, digest, size) = algorithm(key)?;
    let header = Header {
        alg: alg.to_string(),
        typ: Some("JWT".to_string()),
        kid: Some(key_id(public)),
    };
    let claims = Claims {
        iss: ISSUER.to_string(),
        sub: format!("system:serviceaccount:{namespace}:{service_account}"),
        aud: vec![AUDIENCE.to_string()],
        iat: issued_at,
        nbf: Some(issued_at),
        exp: issued_at + ttl.as_secs() as i64,
        jti: Some(hex::encode(rand::random::<[u8; 16]>())),
        kubernetes: KubernetesClaims {
            namespace: namespace.to_string(),
            serviceaccount: ServiceAccountRef {
                name: service_account.to_string(),
            },
        },
    };
    let input = format!("{}.{}", b64(&to_json(&header)), b64(&to_json(&claims)));
    let key_err = |e: boring::error::ErrorStack| TokenError::Key(e.to_string());
    let signature = if size == 0 {
        let mut signer = Signer::new(digest, key).map_err(key_err)?;
        signer.update(input.as_bytes()).map_err(key_err)?;
        signer.sign_to_vec().map_err(key_err)?
    } else {
        let ec = key.ec_key().map_err(key_err)?;
        let h = hash(digest, input.as_bytes()).map_err(key_err)?;
        let sig = EcdsaSig::sign(&h, &ec).map_err(key_err)?;
        let mut raw = sig.r().to_vec_padded(size).map_err(key_err)?;
        raw.extend(sig.s().to_vec_padded(size).map_err(key_err)?);
        raw
    };
    Ok(format!("{input}.{}", b64(&signature)))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings and numbers: serialization cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn verify_signature(
    key: &PKeyRef<Public>,
    input: &[u8],
    signature: &[u8],
) -> Result<(), TokenError> {
    let (_, digest, size) = algorithm(key)?;
    let ok = if size == 0 {
        Verifier::new(digest, key)
            .and_then(|mut v| {
                v.update(input)?;
                v.verify(signature)
            })
            .unwrap_or(false)
    } else {
        if signature.len() != 2 * size {
            return Err(TokenError::Signature);
        }
        let verified = (|| {
            let ec = key.ec_key()?;
            let sig = EcdsaSig::from_private_components(
                BigNum::from_slice(&signature[..size])?,
                BigNum::from_slice(&signature[size..])?,
            )?;
            sig.verify(&hash(digest, input)?, &ec)
        })();
        verified.unwrap_or(false)
    };
    if ok {
        Ok(())
    } else {
        Err(TokenError::Signature)
    }
}

/// Verifies a token against the CA's public key at time `now`.
pub fn verify_at(
    key: &PKeyRef<Public>,
    token: &str,
    now: i64,
) -> Result<TokenIdentity, TokenError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let header: Header = serde_json::from_slice(&unb64(h, "header is not base64url")?)
        .map_err(|_| TokenError::Malformed("header is not JSON"))?;
    let (expected, _, _) = algorithm(key)?;
    if header.alg != expected {
        return Err(TokenError::Algorithm {
            found: header.alg,
            expected,
        });
    }
    let signature = unb64(s, "signature is not base64url")?;
    verify_signature(key, format!("{h}.{c}").as_bytes(), &signature)?;
    let claims: Claims = serde_json::from_slice(&unb64(c, "claims are not base64url")?)
        .map_err(|_| TokenError::Malformed("claims are not the expected JSON"))?;
    let claim = |claim: &'static str, problem: String| Err(TokenError::Claim { claim, problem });
    if claims.iss != ISSUER {
        return claim("iss", format!("{:?} is not {ISSUER:?}", claims.iss));
    }
    if !claims.aud.iter().any(|a| a == AUDIENCE) {
        return claim(
            "aud",
            format!("{:?} does not include {AUDIENCE:?}", claims.aud),
        );
    }
    let k = &claims.kubernetes;
    let sub = format!(
        "system:serviceaccount:{}:{}",
        k.namespace, k.serviceaccount.name
    );
    if claims.sub != sub {
        return claim("sub", format!("{:?} does not match {sub:?}", claims.sub));
    }
    if claims.exp <= now {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now,
        });
    }
    let not_before = claims.nbf.unwrap_or(claims.iat).max(claims.iat);
    if not_before > now + CLOCK_SKEW {
        return Err(TokenError::NotYetValid(not_before));
    }
    Ok(TokenIdentity {
        namespace: k.namespace.clone(),
        service_account: k.serviceaccount.name.clone(),
        expires: claims.exp,
    })
}

/// Verifies a token against the CA's public key now.
pub fn verify(key: &PKeyRef<Public>, token: &str) -> Result<TokenIdentity, TokenError> {
    verify_at(key, token, now_unix())
}

#[cfg(test)]
mod tests;

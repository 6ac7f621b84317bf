//! SPIFFE identities of workloads: `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`,
//! the only form the CA signs (Istio's).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A workload identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SpiffeId {
    /// Trust domain (the cluster domain, `cluster.local` by default).
    pub trust_domain: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
}

/// Why a string is not a workload SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not `spiffe://`.
    #[error("{0:?} is not a spiffe:// URI")]
    Scheme(String),
    /// Not `TD/ns/NS/sa/SA`.
    #[error("{0:?} is not of the form spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT")]
    Shape(String),
    /// A part is empty or has characters a DNS label or service account name cannot have.
    #[error("{uri:?}: invalid {part} {value:?}")]
    Part {
        /// The whole URI.
        uri: String,
        /// Which part (`trust domain`, `namespace`, `service account`).
        part: &'static str,
        /// The value.
        value: String,
    },
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

impl SpiffeId {
    /// The identity of `namespace`/`service_account` in `trust_domain`, checked.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, IdentityError> {
        SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
        .checked()
    }

    fn checked(self) -> Result<SpiffeId, IdentityError> {
        for (part, value) in [
            ("trust domain", &self.trust_domain),
            ("namespace", &self.namespace),
            ("service account", &self.service_account),
        ] {
            if !valid_name(value) {
                return Err(IdentityError::Part {
                    uri: self.to_string(),
                    part,
                    value: value.clone(),
                });
            }
        }
        Ok(self)
    }

    /// The principal as authorization policies name it: the URI without `spiffe://`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(uri: &str) -> Result<SpiffeId, IdentityError> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::Scheme(uri.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [td, "ns", ns, "sa", sa] = parts.as_slice() else {
            return Err(IdentityError::Shape(uri.to_string()));
        };
        SpiffeId {
            trust_domain: td.to_string(),
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        }
        .checked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_principal() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
            .parse()
            .unwrap();
        assert_eq!(id.namespace, "default");
        assert_eq!(id.service_account, "bookinfo-reviews");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
        assert_eq!(
            id.principal(),
            "cluster.local/ns/default/sa/bookinfo-reviews"
        );
        assert_eq!(
            SpiffeId::new("cluster.local", "default", "bookinfo-reviews").unwrap(),
            id
        );
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/A/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b c",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} accepted");
        }
    }
}

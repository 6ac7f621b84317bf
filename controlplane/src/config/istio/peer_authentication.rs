//! `PeerAuthentication` (`security.istio.io`): the mTLS mode workloads accept, per workload
//! and per port. Types from Istio's `peer_authentication.proto`; Istio's
//! `ValidatePeerAuthentication` rules and the CRD's CEL rules.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::names::validate_selector_labels;
use super::types::WorkloadSelector;
use super::{key, Checker};

/// `PeerAuthentication.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// Workloads the policy applies to (the whole namespace when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// mTLS settings (inherited from the parent when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port mTLS settings (only with a selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<PortKey, MutualTls>>,
}

impl PeerAuthentication {
    /// The per-port settings by port number (all keys are valid ports once validated).
    pub fn ports(&self) -> impl Iterator<Item = (u16, &MutualTls)> {
        self.port_level_mtls
            .iter()
            .flatten()
            .filter_map(|(k, v)| k.port().map(|p| (p, v)))
    }
}

/// `PeerAuthentication.MutualTLS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// The mode (UNSET, inheriting, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

/// mTLS modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent (PERMISSIVE at the top).
    Unset,
    /// Plain text only.
    Disable,
    /// Plain text or mTLS.
    Permissive,
    /// mTLS only.
    Strict,
}

/// A `portLevelMtls` key as written (YAML keys may be numbers or strings); validation
/// requires a port number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortKey(pub String);

impl PortKey {
    /// The port, when the key is one.
    pub fn port(&self) -> Option<u16> {
        self.0.parse().ok().filter(|p| *p != 0)
    }
}

impl Serialize for PortKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortKey, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortKey, E> {
                Ok(PortKey(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortKey, E> {
                Ok(PortKey(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortKey, E> {
                Ok(PortKey(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// What is wrong with a PeerAuthentication.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Port-level settings without a selector.
    #[error("portLevelMtls requires selector")]
    PortLevelWithoutSelector,
    /// `portLevelMtls: {}`.
    #[error("port level mTLS, if defined, must have at least one element")]
    PortLevelEmpty,
    /// A key that is not a number.
    #[error("type conversion error from {0:?} to a port number")]
    PortKey(String),
    /// A key outside 1-65535.
    #[error("port must be between 1-65535")]
    PortRange,
}

/// Checks a PeerAuthentication's spec.
pub(crate) fn check(c: &mut Checker, pa: &PeerAuthentication) {
    let empty_selector = pa
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty());
    let path = "spec.portLevelMtls";
    if let Some(ports) = &pa.port_level_mtls {
        if ports.is_empty() {
            c.err(path, Problem::PortLevelEmpty);
        } else if empty_selector {
            c.err(path, Problem::PortLevelWithoutSelector);
        }
        for k in ports.keys() {
            match k.0.parse::<u64>() {
                Err(_) => c.err(key(path, &k.0), Problem::PortKey(k.0.clone())),
                Ok(p) if !(1..=65535).contains(&p) => c.err(key(path, &k.0), Problem::PortRange),
                Ok(_) => {}
            }
        }
    }
    if let Some(sel) = &pa.selector {
        validate_selector_labels(c, "spec.selector.matchLabels", &sel.match_labels);
    }
}

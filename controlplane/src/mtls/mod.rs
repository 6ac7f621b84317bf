//! PeerAuthentication: the mutual TLS mode a workload accepts on each port, resolved as
//! istiod resolves it (`pilot/pkg/security/authn`).
//!
//! - Mesh-wide: a policy without selector in the root namespace (`istio-system`).
//! - Namespace-wide: a policy without selector in the workload's namespace.
//! - Workload: a policy in the workload's namespace whose selector matches its labels; only
//!   such a policy may have `portLevelMtls` (keyed by the workload's port).
//!
//! Each level overrides the one above unless its mode is `UNSET` (or absent), and a port-level
//! mode overrides the workload's for that port; with nothing set the mode is `PERMISSIVE`.
//! Where several policies compete at one level, istiod takes the oldest; objects here carry
//! no creation time, so the first by name wins (deterministic, and documented).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::istio::peer_authentication::{MtlsMode, PeerAuthentication};
use crate::config::{ConfigSnapshot, Object};
use crate::networking::ROOT_NAMESPACE;

/// The effective mode of a workload port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Mode {
    /// Plaintext only.
    Disable,
    /// Mutual TLS and plaintext, told apart by the TLS inspector.
    Permissive,
    /// Mutual TLS only: plaintext is refused before any byte reaches the app.
    Strict,
}

/// One stored policy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyEntry {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The spec.
    pub spec: PeerAuthentication,
}

/// Every PeerAuthentication of the config, sorted by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeerAuthentications {
    policies: Vec<PolicyEntry>,
}

fn mode_of(mode: Option<MtlsMode>) -> Option<Mode> {
    match mode? {
        MtlsMode::Unset => None,
        MtlsMode::Disable => Some(Mode::Disable),
        MtlsMode::Permissive => Some(Mode::Permissive),
        MtlsMode::Strict => Some(Mode::Strict),
    }
}

impl PeerAuthentications {
    /// The policies of a config snapshot.
    pub fn build(config: &ConfigSnapshot) -> PeerAuthentications {
        let mut policies: Vec<PolicyEntry> = config
            .iter()
            .filter_map(|o| match o {
                Object::PeerAuthentication(pa) => Some(PolicyEntry {
                    name: pa.name.clone(),
                    namespace: pa.namespace.clone(),
                    spec: pa.spec.clone(),
                }),
                _ => None,
            })
            .collect();
        policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        PeerAuthentications { policies }
    }

    fn namespace_wide(&self, namespace: &str) -> Option<&PolicyEntry> {
        self.policies.iter().find(|p| {
            p.namespace == namespace
                && p.spec
                    .selector
                    .as_ref()
                    .is_none_or(|s| s.match_labels.is_empty())
        })
    }

    fn workload(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Option<&PolicyEntry> {
        self.policies.iter().find(|p| {
            p.namespace == namespace
                && p.spec.selector.as_ref().is_some_and(|s| {
                    !s.match_labels.is_empty()
                        && s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
        })
    }

    /// The mode of a workload (`namespace`, `labels`) on `port` (`None`: the workload's own
    /// mode, for ports no Service declares).
    pub fn mode(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        port: Option<u16>,
    ) -> Mode {
        let mut mode = Mode::Permissive;
        let levels = [
            self.namespace_wide(ROOT_NAMESPACE),
            self.namespace_wide(namespace),
            self.workload(namespace, labels),
        ];
        for level in levels.into_iter().flatten() {
            if let Some(m) = mode_of(level.spec.mtls.and_then(|m| m.mode)) {
                mode = m;
            }
        }
        if let (Some(port), Some(workload)) = (port, self.workload(namespace, labels)) {
            if let Some(m) = workload
                .spec
                .ports()
                .find(|(p, _)| *p == port)
                .and_then(|(_, m)| mode_of(m.mode))
            {
                mode = m;
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests;

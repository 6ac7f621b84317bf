//! Push requests: what changed between two registry snapshots, as istiod's `PushRequest`.
//!
//! A [`PushRequest`] names the config objects and Services that changed
//! ([`PushRequest::configs_updated`], istiod's `ConfigsUpdated`) and the hosts whose endpoints
//! changed ([`PushRequest::endpoints_updated`]). It is *full* when anything but endpoints
//! changed: then the proxies that depend on one of the changed configs (see [`super::scope`])
//! recompute the types that kind of config affects. A request that is not full is
//! endpoint-only: proxies recompute just the load assignments of the changed hosts they
//! subscribe to, and send EDS alone.
//!
//! Requests are computed by diffing snapshots (never from events), so however changes are
//! coalesced — by the debounce, or by a slow stream merging several requests — the result
//! covers every difference. The diff knows the registry's config objects, Services and
//! endpoints: whatever else the registry derives must come from those (a field of
//! [`MeshSnapshot`] fed by anything else needs its own entry here).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{ConfigSnapshot, Kind, ObjectKey};
use crate::registry::{MeshSnapshot, ServiceKey};

/// Why a push happened: istiod's trigger reasons, the `type` label of `pilot_push_triggers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TriggerReason {
    /// Endpoints of a Service changed (Endpoints objects, proxies connecting or leaving).
    Endpoint,
    /// A config object changed (VirtualService, DestinationRule, Sidecar...).
    Config,
    /// A Service (or other registry entry) was added, removed or changed.
    Service,
    /// Something changed that none of the above describes: everything is recomputed.
    Unknown,
}

impl TriggerReason {
    /// The label value (`endpoint`, `config`, `service`, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::Endpoint => "endpoint",
            TriggerReason::Config => "config",
            TriggerReason::Service => "service",
            TriggerReason::Unknown => "unknown",
        }
    }
}

/// Kinds whose changes reach proxies only through the endpoints they produce: diffed as
/// endpoints, never as config updates.
pub const ENDPOINT_KINDS: [Kind; 3] = [Kind::Endpoints, Kind::EndpointSlice, Kind::WorkloadEntry];

/// What a push must bring proxies up to date with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRequest {
    /// Anything but endpoints changed.
    pub full: bool,
    /// Changed config objects, and changed registry Services as `Service NS/NAME`.
    pub configs_updated: BTreeSet<ObjectKey>,
    /// Host names whose endpoints changed.
    pub endpoints_updated: BTreeSet<String>,
    /// Every reason merged into this request, with counts.
    pub reasons: BTreeMap<TriggerReason, u32>,
    /// The first change this request answers (for `pilot_proxy_convergence_time`).
    pub start: Instant,
}

impl PushRequest {
    /// A full push of everything to every proxy (no scoping possible).
    pub fn everything(start: Instant) -> PushRequest {
        PushRequest {
            full: true,
            configs_updated: BTreeSet::new(),
            endpoints_updated: BTreeSet::new(),
            reasons: [(TriggerReason::Unknown, 1)].into(),
            start,
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.full && self.endpoints_updated.is_empty()
    }

    /// Folds a later request into this one: the union of what changed, from the earlier
    /// start.
    pub fn merge(&mut self, other: PushRequest) {
        // A full request without configs means "everything": it stays so.
        let everything = |r: &PushRequest| r.full && r.configs_updated.is_empty();
        if everything(self) || everything(&other) {
            self.configs_updated.clear();
        } else {
            self.configs_updated.extend(other.configs_updated);
        }
        self.full |= other.full;
        self.endpoints_updated.extend(other.endpoints_updated);
        for (reason, n) in other.reasons {
            *self.reasons.entry(reason).or_default() += n;
        }
        self.start = self.start.min(other.start);
    }

    /// The request that brings a proxy from `old` to `new`; `start` when the snapshot does
    /// not say when its changes began.
    pub fn between(old: &MeshSnapshot, new: &MeshSnapshot, start: Instant) -> PushRequest {
        let mut configs_updated = config_changes(&old.config, &new.config)
            .into_iter()
            .filter(|(key, _)| !ENDPOINT_KINDS.contains(&key.kind))
            .map(|(key, _)| key)
            .collect::<BTreeSet<_>>();
        let mut reasons = BTreeMap::new();
        if !configs_updated.is_empty() {
            reasons.insert(TriggerReason::Config, 1);
        }
        let mut services_changed = false;
        for key in old.services.keys().chain(new.services.keys()) {
            if old.services.get(key) != new.services.get(key) {
                services_changed = true;
                configs_updated.insert(ObjectKey {
                    kind: Kind::Service,
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                });
            }
        }
        let mut endpoints_updated = BTreeSet::new();
        for key in old.endpoints.keys().chain(new.endpoints.keys()) {
            if old.endpoints.get(key) != new.endpoints.get(key) {
                let svc = new
                    .services
                    .get(&key.0)
                    .or_else(|| old.services.get(&key.0));
                if let Some(svc) = svc {
                    endpoints_updated.insert(svc.hostname.clone());
                }
                // The identities a service's endpoints run as are the SANs its clusters
                // verify (CDS): a change of them is a full push for the service, as in
                // istiod (`updateShardServiceAccount`).
                if service_accounts(old, key) != service_accounts(new, key) {
                    services_changed = true;
                    configs_updated.insert(ObjectKey {
                        kind: Kind::Service,
                        namespace: key.0.namespace.clone(),
                        name: key.0.name.clone(),
                    });
                }
            }
        }
        if services_changed {
            reasons.insert(TriggerReason::Service, 1);
        }
        if !endpoints_updated.is_empty() {
            reasons.insert(TriggerReason::Endpoint, 1);
        }
        let full = !configs_updated.is_empty();
        let start = new.trigger.map_or(start, |t| t.first_event);
        PushRequest {
            full,
            configs_updated,
            endpoints_updated,
            reasons,
            start,
        }
    }
}

/// The service accounts the endpoints of one Service port run as in `mesh`.
fn service_accounts<'a>(mesh: &'a MeshSnapshot, key: &(ServiceKey, u16)) -> BTreeSet<&'a str> {
    mesh.endpoints
        .get(key)
        .into_iter()
        .flatten()
        .filter_map(|e| e.service_account.as_deref())
        .collect()
}

/// How a config object changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigEvent {
    /// It appeared.
    Add,
    /// Its content changed.
    Update,
    /// It disappeared.
    Delete,
}

impl ConfigEvent {
    /// The `event` label of `pilot_k8s_cfg_events`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigEvent::Add => "add",
            ConfigEvent::Update => "update",
            ConfigEvent::Delete => "delete",
        }
    }
}

/// Every object added, changed (in content: its file or kept flag aside) or removed between
/// two config snapshots, in key order.
pub fn config_changes(old: &ConfigSnapshot, new: &ConfigSnapshot) -> Vec<(ObjectKey, ConfigEvent)> {
    let mut out = Vec::new();
    for (key, stored) in &new.objects {
        match old.objects.get(key) {
            None => out.push((key.clone(), ConfigEvent::Add)),
            Some(before) if before.object != stored.object => {
                out.push((key.clone(), ConfigEvent::Update));
            }
            Some(_) => {}
        }
    }
    for key in old.objects.keys() {
        if !new.objects.contains_key(key) {
            out.push((key.clone(), ConfigEvent::Delete));
        }
    }
    out.sort();
    out
}

/// The host of an Envoy cluster name `DIRECTION|PORT|SUBSET|HOST` (`None` for other names).
pub fn cluster_host(cluster: &str) -> Option<&str> {
    let mut parts = cluster.splitn(4, '|');
    let (_, _, _, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(host).filter(|h| !h.is_empty())
}

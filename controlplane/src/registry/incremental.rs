//! Updating a snapshot when only endpoints changed: istiod's incremental EDS update. When
//! every config object added, changed or removed since the last snapshot is an Endpoints or
//! EndpointSlice object (and no proxy came or went), the new snapshot shares everything with
//! the last one but the endpoints of the Services those objects feed, which are collected
//! again exactly as [`MeshSnapshot::build_with`] collects them (the same sources in the same
//! order, restricted to those Services). A change of one endpoint file then costs that
//! Service's endpoints, not a rebuild of the whole registry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::build::{collect_endpoints, Builder};
use super::{MeshSnapshot, ProxyInfo, ServiceKey};
use crate::config::{ConfigSnapshot, Object};

/// The Service whose endpoints an Endpoints or EndpointSlice object feeds; `None` for other
/// kinds.
fn fed_service(object: &Object) -> Option<ServiceKey> {
    match object {
        Object::Endpoints(e) => Some(ServiceKey {
            namespace: e.namespace.clone(),
            name: e.name.clone(),
        }),
        Object::EndpointSlice(s) => Some(ServiceKey {
            namespace: s.namespace.clone(),
            name: s.service_name.clone(),
        }),
        _ => None,
    }
}

/// The Services whose endpoints are all that can differ between `old` and `new`: `Some`
/// (possibly empty) when every object added, changed or removed is an Endpoints or
/// EndpointSlice object (the Services they feed, before and after), `None` when any other
/// object changed.
pub fn endpoint_only_changes(
    old: &ConfigSnapshot,
    new: &ConfigSnapshot,
) -> Option<BTreeSet<ServiceKey>> {
    let mut affected = BTreeSet::new();
    let mut changed = |object: &Object| -> Option<()> {
        affected.insert(fed_service(object)?);
        Some(())
    };
    for (key, stored) in &new.objects {
        match old.objects.get(key) {
            Some(before) if before.object == stored.object => {}
            Some(before) => {
                changed(&before.object)?;
                changed(&stored.object)?;
            }
            None => changed(&stored.object)?,
        }
    }
    for (key, stored) in &old.objects {
        if !new.objects.contains_key(key) {
            changed(&stored.object)?;
        }
    }
    Some(affected)
}

impl MeshSnapshot {
    /// The snapshot of `config` with the connected `proxies`, derived from `self`, which was
    /// built with the same proxies and settings from a config that differs from `config` in
    /// the endpoints of the `affected` Services only (see [`endpoint_only_changes`]): equal to
    /// [`MeshSnapshot::build_with`]`(config, proxies, settings)`, at the cost of the affected
    /// Services' endpoints. Version, trigger and render cache are left for the caller.
    pub fn with_endpoints_of<'a>(
        &self,
        config: &Arc<ConfigSnapshot>,
        proxies: impl IntoIterator<Item = &'a ProxyInfo>,
        affected: BTreeSet<ServiceKey>,
    ) -> MeshSnapshot {
        let proxies: Vec<&ProxyInfo> = proxies.into_iter().collect();
        let mut only: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for key in &affected {
            only.entry(key.namespace.clone())
                .or_default()
                .insert(key.name.clone());
        }
        let mut b = Builder {
            services: self.services.clone(),
            only: Some(only),
            ..Builder::default()
        };
        collect_endpoints(&mut b, config, &proxies);
        let mut endpoints = self.endpoints.clone();
        endpoints.retain(|(key, _), _| !affected.contains(key));
        endpoints.append(&mut b.endpoints);
        let mut dns_endpoints = self.dns_endpoints.clone();
        dns_endpoints.retain(|(key, _), _| !affected.contains(key));
        dns_endpoints.append(&mut b.dns_endpoints);
        MeshSnapshot {
            config: config.clone(),
            cluster_domain: self.cluster_domain.clone(),
            services: self.services.clone(),
            endpoints,
            dns_endpoints,
            networking: self.networking.clone(),
            authorization: self.authorization.clone(),
            sidecars: self.sidecars.clone(),
            peer_authentications: self.peer_authentications.clone(),
            version: 0,
            trigger: None,
            render_cache: Arc::default(),
        }
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;

//! What one proxy is sent: Istio's `SidecarScope`.
//!
//! A proxy sees the services exported to its namespace ([`super::visibility`]); the Sidecar
//! governing it ([`super::sidecar::select`]) narrows that to the hosts its egress listeners
//! import (an egress listener with a port keeps only that port of each service). Clusters,
//! endpoints, listeners and routes are built from this scope only: the main lever against
//! sidecar memory growth in big meshes.
//!
//! When several visible services share a host name (ServiceEntries may name any host), one is
//! kept: a Kubernetes Service before a ServiceEntry (no "squatting" on a Service's name), then
//! one of the proxy's own namespace, then the first by namespace and name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::model::{Protocol, Service, ServiceKey, ServicePort};
use super::proxy::ProxyInfo;
use super::sidecar::{self, EgressPort, EgressRule, OutboundMode, SidecarRule};
use super::visibility;
use super::MeshSnapshot;

/// The services of one egress listener.
#[derive(Clone, Debug)]
pub struct EgressScope {
    /// The listener's port (`None`: the catch-all listener, every port of its services).
    pub port: Option<EgressPort>,
    /// The address its listeners stand for, when the Sidecar binds one.
    pub bind: Option<IpAddr>,
    /// Its services, sorted by key, unique by host name.
    pub services: Vec<Arc<Service>>,
}

/// A proxy's view of the registry.
#[derive(Clone, Debug)]
pub struct ProxyScope {
    /// The proxy's namespace.
    pub namespace: Option<String>,
    /// The governing Sidecar, as `namespace/name`.
    pub sidecar: Option<String>,
    /// Traffic to unknown destinations.
    pub outbound: OutboundMode,
    /// Egress listeners in the Sidecar's order (one catch-all without a Sidecar).
    pub egress: Vec<EgressScope>,
    /// Every service of every egress listener (ports merged), sorted by key.
    pub services: Vec<Arc<Service>>,
}

/// A service's key as borrowed parts (namespace, name): ordered as [`ServiceKey`].
fn key_of(svc: &Service) -> (&str, &str) {
    (&svc.namespace, &svc.name)
}

/// Keeps one service per host name (see the module documentation), sorted by key.
fn unique_by_host(candidates: Vec<Arc<Service>>, namespace: Option<&str>) -> Vec<Arc<Service>> {
    let rank = |s: &Service| (!s.is_kubernetes(), Some(s.namespace.as_str()) != namespace);
    // Hashed, not ordered: a proxy's scope is computed for each type it is pushed.
    let mut by_host: FxHashMap<&str, usize> =
        FxHashMap::with_capacity_and_hasher(candidates.len(), Default::default());
    for (i, svc) in candidates.iter().enumerate() {
        match by_host.get(svc.hostname.as_str()) {
            Some(kept) if rank(&candidates[*kept]) <= rank(svc) => {}
            _ => {
                by_host.insert(&svc.hostname, i);
            }
        }
    }
    let mut keep = vec![false; candidates.len()];
    for i in by_host.into_values() {
        keep[i] = true;
    }
    let mut out: Vec<Arc<Service>> = candidates
        .into_iter()
        .zip(keep)
        .filter_map(|(s, k)| k.then_some(s))
        .collect();
    if !out.is_sorted_by(|a, b| key_of(a) <= key_of(b)) {
        out.sort_by(|a, b| key_of(a).cmp(&key_of(b)));
    }
    out
}

/// `svc` reduced to the ports `keep` accepts; `None` when no port is left.
fn trimmed(svc: &Arc<Service>, keep: impl Fn(&ServicePort) -> bool) -> Option<Arc<Service>> {
    if svc.ports.iter().all(&keep) {
        return Some(svc.clone());
    }
    let ports: Vec<ServicePort> = svc.ports.iter().filter(|p| keep(p)).cloned().collect();
    if ports.is_empty() {
        return None;
    }
    Some(Arc::new(Service {
        ports,
        ..(**svc).clone()
    }))
}

impl EgressScope {
    fn new(rule: &EgressRule, exported: &[Arc<Service>], namespace: Option<&str>) -> EgressScope {
        let imported = exported
            .iter()
            .filter(|s| {
                rule.hosts
                    .iter()
                    .any(|h| h.imports(&s.namespace, &s.hostname, namespace))
            })
            .filter_map(|s| match &rule.port {
                Some(port) => trimmed(s, |p| p.port == port.number),
                None => Some(s.clone()),
            })
            .collect();
        EgressScope {
            port: rule.port.clone(),
            bind: rule.bind,
            services: unique_by_host(imported, namespace),
        }
    }
}

/// The services of every egress listener, one per key with the union of their ports.
fn merge_ports(egress: &[EgressScope]) -> Vec<Arc<Service>> {
    let mut merged: BTreeMap<ServiceKey, Arc<Service>> = BTreeMap::new();
    for svc in egress.iter().flat_map(|e| &e.services) {
        match merged.get_mut(&svc.key()) {
            None => {
                merged.insert(svc.key(), svc.clone());
            }
            Some(kept) => {
                let missing: Vec<ServicePort> = svc
                    .ports
                    .iter()
                    .filter(|p| !kept.ports.contains(p))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    let mut full = (**kept).clone();
                    full.ports.extend(missing);
                    full.ports.sort_by_key(|p| p.port);
                    *kept = Arc::new(full);
                }
            }
        }
    }
    merged.into_values().collect()
}

impl ProxyScope {
    /// The scope of `proxy` in `mesh`.
    pub fn new(mesh: &MeshSnapshot, proxy: &ProxyInfo) -> ProxyScope {
        ProxyScope::of_services(mesh, proxy, |_| true)
    }

    /// [`ProxyScope::new`] restricted to the services named `hosts`: equal to the full scope
    /// with every other service left out (everything a scope decides is decided per host
    /// name), at the cost of those hosts only. What a push of a few hosts' load assignments
    /// needs.
    pub fn for_hosts(mesh: &MeshSnapshot, proxy: &ProxyInfo, hosts: &BTreeSet<&str>) -> ProxyScope {
        ProxyScope::of_services(mesh, proxy, |s| hosts.contains(s.hostname.as_str()))
    }

    fn of_services(
        mesh: &MeshSnapshot,
        proxy: &ProxyInfo,
        wanted: impl Fn(&Service) -> bool,
    ) -> ProxyScope {
        let namespace = proxy.namespace.as_deref();
        let exported: Vec<Arc<Service>> = mesh
            .services
            .values()
            .filter(|s| wanted(s) && visibility::is_visible(&s.export_to, &s.namespace, namespace))
            .cloned()
            .collect();
        let rule: Option<&SidecarRule> = sidecar::select(&mesh.sidecars, namespace, &proxy.labels);
        let egress: Vec<EgressScope> = match rule {
            Some(rule) => rule
                .egress
                .iter()
                .map(|e| EgressScope::new(e, &exported, namespace))
                .collect(),
            None => vec![EgressScope {
                port: None,
                bind: None,
                services: unique_by_host(exported, namespace),
            }],
        };
        let services = match egress.as_slice() {
            // One listener: its services are unique by host and sorted already.
            [only] => only.services.clone(),
            _ => unique_by_host(merge_ports(&egress), namespace),
        };
        ProxyScope {
            namespace: proxy.namespace.clone(),
            sidecar: rule.map(|r| format!("{}/{}", r.namespace, r.name)),
            outbound: rule.and_then(|r| r.outbound).unwrap_or_default(),
            egress,
            services,
        }
    }

    /// Whether traffic to unknown destinations passes through (ALLOW_ANY).
    pub fn allow_any(&self) -> bool {
        self.outbound == OutboundMode::AllowAny
    }

    /// Every proxied service port in scope (UDP and SCTP ports are not), in key order.
    pub fn outbound_ports(&self) -> impl Iterator<Item = (&Arc<Service>, &ServicePort)> {
        self.services.iter().flat_map(|svc| {
            svc.ports
                .iter()
                .filter(|p| p.protocol != Protocol::Udp)
                .map(move |p| (svc, p))
        })
    }

    /// The services whose virtual hosts go into the route configuration of `port`: those of
    /// the egress listener on that port, else those of the catch-all listener.
    pub fn route_services(&self, port: u16) -> &[Arc<Service>] {
        self.egress
            .iter()
            .find(|e| e.port.as_ref().is_some_and(|p| p.number == port))
            .or_else(|| self.egress.iter().find(|e| e.port.is_none()))
            .map_or(&[], |e| e.services.as_slice())
    }
}

#[cfg(test)]
#[path = "scope_tests.rs"]
mod tests;

//! The service registry: Services and their endpoints, from the config store and from the
//! proxies connected to the control plane (Istio's workload auto-registration).
//!
//! Contract:
//! - [`MeshSnapshot::build`] is a pure function of a config snapshot and the connected
//!   proxies; the snapshot keeps the config it was built from (what a push is computed from,
//!   istiod's `PushContext`).
//! - [`spawn_registry`] runs the registry's only writer: it rebuilds the snapshot at once on
//!   every config change, and debounced (100 ms / 10 s) on proxy connects and disconnects;
//!   readers get `Arc<MeshSnapshot>`s from a `watch` channel. A snapshot is published only
//!   when the config objects, Services or endpoints changed; it carries the [`Trigger`] of
//!   the changes it answers (for push metrics).
//! - A connected proxy with a namespace, labels and an IP is an endpoint `IP:targetPort` of
//!   every Service in its namespace whose selector matches its labels (numeric target ports
//!   only: a named target port needs the pod's container ports, which a node does not carry).
//!   Endpoints are deduplicated by address, config objects first.
//! - A proxy stays registered for a grace period after its connection ends, and optionally
//!   across restarts of the control plane ([`workloads`]).

pub mod model;
pub mod proxy;
pub mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::authz::{Authorization, PathNormalization};
use crate::config::objects::{EndpointPort, TargetPort};
use crate::config::{ConfigSnapshot, Object};
use crate::networking::Rules;
use crate::watch::{sleep_until, Debounce, Debouncer, Trigger};

pub use model::{Endpoint, EndpointSource, Locality, Protocol, Service, ServiceKey, ServicePort};
pub use proxy::ProxyInfo;
pub use workloads::Workloads;

/// A connection of a proxy to the control plane (unique per stream).
pub type ConnectionId = u64;

/// Services and endpoints at one moment, with the traffic rules that apply to them and the
/// config they were built from.
#[derive(Clone, Debug, Default)]
pub struct MeshSnapshot {
    /// The config snapshot this was built from.
    pub config: Arc<ConfigSnapshot>,
    /// Cluster DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// Services by key.
    pub services: BTreeMap<ServiceKey, Arc<Service>>,
    /// Endpoints of each Service port, by key and service port, sorted, unique by address.
    pub endpoints: BTreeMap<(ServiceKey, u16), Vec<Endpoint>>,
    /// Istio's traffic rules (VirtualServices, DestinationRules), resolved.
    pub networking: Arc<Rules>,
    /// AuthorizationPolicies and the path normalization of connection managers.
    pub authorization: Arc<Authorization>,
    /// Publication counter (0 for the first snapshot).
    pub version: u64,
    /// The changes this snapshot answers: config file changes and proxy (dis)connections,
    /// from the first event to the end of the debounce. `None` for the first snapshot.
    pub trigger: Option<Trigger>,
}

/// Mesh-wide settings a snapshot is built with (Istio's mesh config, the parts this control
/// plane has).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshSettings {
    /// Cluster DNS domain (and trust domain), `cluster.local`.
    pub cluster_domain: String,
    /// `meshConfig.pathNormalization`.
    pub path_normalization: PathNormalization,
}

impl From<String> for MeshSettings {
    fn from(cluster_domain: String) -> MeshSettings {
        MeshSettings {
            cluster_domain,
            ..MeshSettings::default()
        }
    }
}

impl MeshSnapshot {
    /// Builds the snapshot of `config` with the connected `proxies`, default settings.
    pub fn build<'a>(
        config: &Arc<ConfigSnapshot>,
        proxies: impl IntoIterator<Item = &'a ProxyInfo>,
        cluster_domain: &str,
    ) -> MeshSnapshot {
        MeshSnapshot::build_with(
            config,
            proxies,
            &MeshSettings::from(cluster_domain.to_string()),
        )
    }

    /// Builds the snapshot of `config` with the connected `proxies` and `settings`.
    pub fn build_with<'a>(
        config: &Arc<ConfigSnapshot>,
        proxies: impl IntoIterator<Item = &'a ProxyInfo>,
        settings: &MeshSettings,
    ) -> MeshSnapshot {
        let cluster_domain = settings.cluster_domain.as_str();
        let mut services = BTreeMap::new();
        for object in config.iter() {
            if let Object::Service(svc) = object {
                let key = ServiceKey {
                    namespace: svc.namespace.clone(),
                    name: svc.name.clone(),
                };
                services.insert(key, Arc::new(Service::from_config(svc, cluster_domain)));
            }
        }
        let mut endpoints: BTreeMap<(ServiceKey, u16), Vec<Endpoint>> = BTreeMap::new();
        let mut add = |svc: &Service, port: u16, ep: Endpoint| {
            let key = ServiceKey {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
            };
            endpoints.entry((key, port)).or_default().push(ep);
        };
        for object in config.iter() {
            match object {
                Object::Endpoints(eps) => {
                    let key = ServiceKey {
                        namespace: eps.namespace.clone(),
                        name: eps.name.clone(),
                    };
                    let Some(svc) = services.get(&key) else {
                        continue;
                    };
                    for subset in &eps.subsets {
                        for ep_port in &subset.ports {
                            let Some(sp) = matching_port(svc, ep_port) else {
                                continue;
                            };
                            let ready = subset.addresses.iter().map(|a| (a, true));
                            let not_ready = subset.not_ready_addresses.iter().map(|a| (a, false));
                            for (addr, healthy) in ready.chain(not_ready) {
                                add(
                                    svc,
                                    sp.port,
                                    Endpoint {
                                        locality: Locality::default(),
                                        ip: addr.ip,
                                        port: ep_port.port,
                                        healthy,
                                        source: EndpointSource::Config,
                                        labels: BTreeMap::new(),
                                    },
                                );
                            }
                        }
                    }
                }
                Object::EndpointSlice(slice) => {
                    let key = ServiceKey {
                        namespace: slice.namespace.clone(),
                        name: slice.service_name.clone(),
                    };
                    let Some(svc) = services.get(&key) else {
                        continue;
                    };
                    for ep_port in &slice.ports {
                        let Some(sp) = matching_port(svc, ep_port) else {
                            continue;
                        };
                        for ep in &slice.endpoints {
                            let locality = Locality {
                                zone: ep.zone.clone().unwrap_or_default(),
                                ..Locality::default()
                            };
                            for ip in &ep.addresses {
                                add(
                                    svc,
                                    sp.port,
                                    Endpoint {
                                        locality: locality.clone(),
                                        ip: *ip,
                                        port: ep_port.port,
                                        healthy: ep.ready,
                                        source: EndpointSource::Config,
                                        labels: BTreeMap::new(),
                                    },
                                );
                            }
                        }
                    }
                }
                // Istio's traffic rules are read by `Rules::build`.
                _ => {}
            }
        }
        let proxies: Vec<&ProxyInfo> = proxies.into_iter().collect();
        for proxy in &proxies {
            let Some((namespace, _)) = proxy.workload() else {
                continue;
            };
            for svc in services
                .values()
                .filter(|s| s.selects(namespace, &proxy.labels))
            {
                for sp in &svc.ports {
                    let TargetPort::Number(target) = sp.target_port else {
                        continue;
                    };
                    if sp.protocol == Protocol::Udp {
                        continue;
                    }
                    for ip in &proxy.ips {
                        add(
                            svc,
                            sp.port,
                            Endpoint {
                                locality: proxy.locality(),
                                ip: *ip,
                                port: target,
                                healthy: true,
                                source: EndpointSource::Proxy(proxy.id.clone()),
                                labels: proxy.labels.clone(),
                            },
                        );
                    }
                }
            }
        }
        // Addresses of Endpoints/EndpointSlice objects carry no labels: take those of the
        // connected proxy with that IP in the Service's namespace.
        let mut proxy_labels: BTreeMap<(&str, IpAddr), &BTreeMap<String, String>> = BTreeMap::new();
        for proxy in &proxies {
            if let Some(ns) = proxy.namespace.as_deref() {
                for ip in &proxy.ips {
                    proxy_labels.entry((ns, *ip)).or_insert(&proxy.labels);
                }
            }
        }
        for ((key, _), list) in endpoints.iter_mut() {
            let mut seen = BTreeSet::new();
            list.retain(|e| seen.insert((e.ip, e.port)));
            for ep in list
                .iter_mut()
                .filter(|e| e.source == EndpointSource::Config)
            {
                if let Some(labels) = proxy_labels.get(&(key.namespace.as_str(), ep.ip)) {
                    ep.labels = (*labels).clone();
                }
            }
            list.sort();
        }
        MeshSnapshot {
            config: config.clone(),
            cluster_domain: cluster_domain.to_string(),
            services,
            endpoints,
            networking: Arc::new(Rules::build(config, cluster_domain)),
            authorization: Arc::new(Authorization::build(config, settings.path_normalization)),
            version: 0,
            trigger: None,
        }
    }

    /// The endpoints of a Service port (empty when none).
    pub fn endpoints_of(&self, key: &ServiceKey, port: u16) -> &[Endpoint] {
        self.endpoints
            .get(&(key.clone(), port))
            .map_or(&[], Vec::as_slice)
    }

    fn same_content(&self, other: &MeshSnapshot) -> bool {
        self.services == other.services
            && self.endpoints == other.endpoints
            && self.networking == other.networking
            && same_objects(&self.config, &other.config)
            && self.authorization == other.authorization
    }
}

/// Whether two config snapshots hold the same objects (files and kept flags aside).
pub fn same_objects(a: &ConfigSnapshot, b: &ConfigSnapshot) -> bool {
    a.objects.len() == b.objects.len()
        && a.objects
            .iter()
            .zip(&b.objects)
            .all(|((ka, va), (kb, vb))| ka == kb && va.object == vb.object)
}

/// The Service port an Endpoints/EndpointSlice port belongs to: same name, or the only port
/// when both are unnamed.
fn matching_port<'a>(svc: &'a Service, ep_port: &EndpointPort) -> Option<&'a ServicePort> {
    svc.ports
        .iter()
        .find(|sp| sp.name == ep_port.name && sp.protocol != Protocol::Udp)
}

/// Registry events.
#[derive(Debug)]
enum Event {
    Connected(ConnectionId, Arc<ProxyInfo>),
    Disconnected(ConnectionId),
}

/// A handle on the running registry: register proxies and read snapshots. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RegistryHandle {
    events: mpsc::UnboundedSender<Event>,
    snapshots: watch::Receiver<Arc<MeshSnapshot>>,
}

impl RegistryHandle {
    /// Records a connected proxy (effective after the debounce).
    pub fn connect(&self, conn: ConnectionId, proxy: Arc<ProxyInfo>) {
        let _ = self.events.send(Event::Connected(conn, proxy));
    }

    /// Records that a connection ended (effective after the debounce).
    pub fn disconnect(&self, conn: ConnectionId) {
        let _ = self.events.send(Event::Disconnected(conn));
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<MeshSnapshot> {
        self.snapshots.borrow().clone()
    }

    /// A receiver notified of each new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshSnapshot>> {
        self.snapshots.clone()
    }
}

/// Starts the registry's writer task on the current Tokio runtime, with the workloads
/// registered so far (see [`Workloads`]). It ends when every [`RegistryHandle`] is dropped.
pub fn spawn_registry(
    mut config: watch::Receiver<Arc<ConfigSnapshot>>,
    settings: impl Into<MeshSettings>,
    timing: Debounce,
    mut workloads: Workloads,
) -> RegistryHandle {
    let first_config = config.borrow_and_update().clone();
    let first_generation = first_config.generation;
    let settings = settings.into();
    let first = MeshSnapshot::build_with(&first_config, workloads.all(), &settings);
    let (tx, rx) = watch::channel(Arc::new(first));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut debouncer = Debouncer::new(timing);
        let mut config_open = true;
        let mut built_generation = first_generation;
        loop {
            let rebuild = tokio::select! {
                changed = config.changed(), if config_open => {
                    config_open = changed.is_ok();
                    config_open
                }
                ev = events.recv() => {
                    match ev {
                        Some(Event::Connected(id, info)) => workloads.connect(id, info),
                        Some(Event::Disconnected(id)) => workloads.disconnect(id, Instant::now()),
                        None => return,
                    }
                    save(&workloads);
                    debouncer.event(Instant::now());
                    false
                }
                _ = sleep_until(workloads.next_expiry()) => {
                    if workloads.expire(Instant::now()) {
                        save(&workloads);
                    }
                    true
                }
                _ = sleep_until(debouncer.deadline()) => true,
            };
            if !rebuild {
                continue;
            }
            let now = Instant::now();
            let cfg = config.borrow_and_update().clone();
            // The config's trigger counts once: for the first rebuild after that load.
            let config_trigger = cfg.trigger.filter(|_| cfg.generation != built_generation);
            built_generation = cfg.generation;
            let trigger = [config_trigger, debouncer.take(now)]
                .into_iter()
                .flatten()
                .reduce(Trigger::merge)
                .unwrap_or_else(|| Trigger::immediate(now));
            let mut next = MeshSnapshot::build_with(&cfg, workloads.all(), &settings);
            let current = tx.borrow().clone();
            if next.same_content(&current) {
                continue;
            }
            next.version = current.version + 1;
            next.trigger = Some(trigger);
            tracing::debug!(
                version = next.version,
                services = next.services.len(),
                "registry updated"
            );
            if tx.send(Arc::new(next)).is_err() {
                return;
            }
        }
    });
    RegistryHandle {
        events: events_tx,
        snapshots: rx,
    }
}

/// Writes the registrations to the state file; a failure is logged (the registry itself
/// goes on: only the memory across restarts is lost).
fn save(workloads: &Workloads) {
    if let Err(e) = workloads.save() {
        tracing::warn!(error = %e, "cannot save the registered workloads");
    }
}

#[cfg(test)]
mod tests;

//! The service registry: Services and their endpoints, from the config store (Kubernetes
//! Services, Endpoints, EndpointSlices, ServiceEntries, WorkloadEntries, Sidecars) and from the
//! proxies connected to the control plane (Istio's workload auto-registration).
//!
//! Contract:
//! - [`MeshSnapshot::build`] is a pure function of a config snapshot and the connected
//!   proxies ([`build`], [`service_entry`]); the snapshot keeps the config it was built
//!   from (what a push is computed from, istiod's `PushContext`).
//! - What one proxy is sent is its [`ProxyScope`]: the services exported to its namespace
//!   ([`visibility`]), narrowed by the Sidecar governing it ([`sidecar`]).
//! - [`spawn_registry`] runs the registry's only writer: it rebuilds the snapshot at once on
//!   every config change (when only Endpoints or EndpointSlice objects changed, just the
//!   endpoints of their Services: [`incremental`]), and debounced (100 ms / 10 s) on proxy
//!   connects and disconnects;
//!   readers get `Arc<MeshSnapshot>`s from a `watch` channel. A snapshot is published only
//!   when the config objects, Services or endpoints changed; it carries the [`Trigger`] of
//!   the changes it answers (for push metrics).
//! - A connected proxy with a namespace, labels and an IP is an endpoint `IP:targetPort` of
//!   every Service in its namespace whose selector matches its labels (numeric target ports
//!   only: a named target port needs the pod's container ports, which a node does not carry).
//!   Endpoints are deduplicated by address, config objects first.
//! - A proxy stays registered for a grace period after its connection ends, and optionally
//!   across restarts of the control plane ([`workloads`]).

mod build;
pub mod incremental;
pub mod model;
pub mod proxy;
pub mod scope;
pub mod service_entry;
pub mod sidecar;
pub mod visibility;
pub mod workloads;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::authz::{Authorization, PathNormalization};
use crate::config::ConfigSnapshot;
use crate::mtls::PeerAuthentications;
use crate::networking::Rules;
use crate::watch::{sleep_until, Debounce, Debouncer, Trigger};
use crate::xds::cache::RenderCache;

pub use model::{
    DnsEndpoint, Endpoint, EndpointSource, EndpointWorkload, Locality, Protocol, Resolution,
    Service, ServiceKey, ServiceOrigin, ServicePort, TlsMode,
};
pub use proxy::ProxyInfo;
pub use scope::ProxyScope;
pub use sidecar::{OutboundMode, SidecarRule};
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
    /// Host-named endpoints of DNS-resolved Service ports (resolved by the proxies), sorted,
    /// unique by host and port.
    pub dns_endpoints: BTreeMap<(ServiceKey, u16), Vec<DnsEndpoint>>,
    /// The Sidecar resources, by namespace and name.
    pub sidecars: Vec<Arc<SidecarRule>>,
    /// The PeerAuthentication policies (mutual TLS modes of workloads).
    pub peer_authentications: Arc<PeerAuthentications>,
    /// Publication counter (0 for the first snapshot).
    pub version: u64,
    /// The changes this snapshot answers: config file changes and proxy (dis)connections,
    /// from the first event to the end of the debounce. `None` for the first snapshot.
    pub trigger: Option<Trigger>,
    /// Resources rendered for earlier pushes, shared by every proxy they are equal for (keyed
    /// by everything they depend on, so that the registry hands it from one snapshot to the
    /// next).
    pub render_cache: Arc<RenderCache>,
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

    /// The endpoints of a Service port (empty when none).
    pub fn endpoints_of(&self, key: &ServiceKey, port: u16) -> &[Endpoint] {
        self.endpoints
            .get(&(key.clone(), port))
            .map_or(&[], Vec::as_slice)
    }

    /// The host-named endpoints of a DNS-resolved Service port (empty when none).
    pub fn dns_endpoints_of(&self, key: &ServiceKey, port: u16) -> &[DnsEndpoint] {
        self.dns_endpoints
            .get(&(key.clone(), port))
            .map_or(&[], Vec::as_slice)
    }

    fn same_content(&self, other: &MeshSnapshot) -> bool {
        self.services == other.services
            && self.endpoints == other.endpoints
            && self.dns_endpoints == other.dns_endpoints
            && self.sidecars == other.sidecars
            && self.networking == other.networking
            && same_objects(&self.config, &other.config)
            && self.authorization == other.authorization
            && self.peer_authentications == other.peer_authentications
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
        // Proxies came, went or expired since the last rebuild.
        let mut proxies_changed = false;
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
                    proxies_changed = true;
                    debouncer.event(Instant::now());
                    false
                }
                _ = sleep_until(workloads.next_expiry()) => {
                    if workloads.expire(Instant::now()) {
                        save(&workloads);
                        proxies_changed = true;
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
            let current = tx.borrow().clone();
            let endpoints_only = if proxies_changed {
                None
            } else {
                incremental::endpoint_only_changes(&current.config, &cfg)
            };
            proxies_changed = false;
            let incremental = endpoints_only.is_some();
            let mut next = match endpoints_only {
                Some(affected) => current.with_endpoints_of(&cfg, workloads.all(), affected),
                None => MeshSnapshot::build_with(&cfg, workloads.all(), &settings),
            };
            if next.same_content(&current) {
                continue;
            }
            next.version = current.version + 1;
            next.trigger = Some(trigger);
            next.render_cache = current.render_cache.clone();
            tracing::debug!(
                version = next.version,
                services = next.services.len(),
                incremental,
                took_ms = now.elapsed().as_secs_f64() * 1e3,
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

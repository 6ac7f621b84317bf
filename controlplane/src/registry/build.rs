//! [`MeshSnapshot::build_with`]: the registry as a pure function of the config and the registered
//! proxies.
//!
//! Services come from Kubernetes Services and from ServiceEntries (one Service per host, see
//! [`super::service_entry`]); endpoints from Endpoints and EndpointSlice objects, from
//! WorkloadEntries, from the endpoints a ServiceEntry lists, and from connected proxies
//! (auto-registration). Each list is deduplicated by address (the first source wins, in the
//! order above) and sorted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::model::{
    DnsEndpoint, Endpoint, EndpointSource, Locality, Protocol, Service, ServiceKey, ServicePort,
    TlsMode,
};
use super::proxy::ProxyInfo;
use super::service_entry;
use super::sidecar::SidecarRule;
use super::{MeshSettings, MeshSnapshot};
use crate::authz::Authorization;
use crate::config::objects::{self, EndpointPort, TargetPort};
use crate::config::{ConfigSnapshot, Object};
use crate::networking::Rules;

/// Services and endpoints under construction.
#[derive(Default)]
pub(super) struct Builder {
    pub services: BTreeMap<ServiceKey, Arc<Service>>,
    pub endpoints: BTreeMap<(ServiceKey, u16), Vec<Endpoint>>,
    pub dns_endpoints: BTreeMap<(ServiceKey, u16), Vec<DnsEndpoint>>,
    /// When set, endpoints of other Services are not collected (an update of these
    /// Services' endpoints only, see [`super::incremental`]): names by namespace.
    pub only: Option<BTreeMap<String, BTreeSet<String>>>,
}

impl Builder {
    /// Whether endpoints of `svc` are collected.
    pub fn wants(&self, svc: &Service) -> bool {
        self.only.as_ref().is_none_or(|only| {
            only.get(svc.namespace.as_str())
                .is_some_and(|names| names.contains(svc.name.as_str()))
        })
    }

    /// Adds an endpoint of a Service port.
    pub fn endpoint(&mut self, svc: &Service, port: u16, ep: Endpoint) {
        if self.wants(svc) {
            self.endpoints
                .entry((svc.key(), port))
                .or_default()
                .push(ep);
        }
    }

    /// Adds a host-named endpoint of a DNS-resolved Service port.
    pub fn dns_endpoint(&mut self, svc: &Service, port: u16, ep: DnsEndpoint) {
        if self.wants(svc) {
            self.dns_endpoints
                .entry((svc.key(), port))
                .or_default()
                .push(ep);
        }
    }

    /// Adds a Service unless one with the same key exists (the first definition wins).
    pub fn service(&mut self, svc: Service) {
        self.services
            .entry(svc.key())
            .or_insert_with(|| Arc::new(svc));
    }
}

impl MeshSnapshot {
    /// Builds the snapshot of `config` with the connected `proxies` and `settings`.
    pub fn build_with<'a>(
        config: &Arc<ConfigSnapshot>,
        proxies: impl IntoIterator<Item = &'a ProxyInfo>,
        settings: &MeshSettings,
    ) -> MeshSnapshot {
        let cluster_domain = settings.cluster_domain.as_str();
        let proxies: Vec<&ProxyInfo> = proxies.into_iter().collect();
        let mut b = Builder::default();
        for object in config.iter() {
            if let Object::Service(svc) = object {
                b.service(Service::from_config(svc, cluster_domain));
            }
        }
        // Kubernetes Services first: a ServiceEntry cannot take a Kubernetes Service's key.
        for object in config.iter() {
            if let Object::ServiceEntry(se) = object {
                for svc in service_entry::services(se) {
                    b.service(svc);
                }
            }
        }
        let sidecars = config
            .iter()
            .filter_map(|object| match object {
                Object::Sidecar(sc) => Some(Arc::new(SidecarRule::from_config(sc))),
                _ => None,
            })
            .collect();
        collect_endpoints(&mut b, config, &proxies);
        MeshSnapshot {
            config: config.clone(),
            cluster_domain: cluster_domain.to_string(),
            services: b.services,
            endpoints: b.endpoints,
            dns_endpoints: b.dns_endpoints,
            sidecars,
            networking: Arc::new(Rules::build(config, cluster_domain)),
            authorization: Arc::new(Authorization::build(config, settings.path_normalization)),
            peer_authentications: Arc::new(crate::mtls::PeerAuthentications::build(config)),
            version: 0,
            trigger: None,
            render_cache: Arc::default(),
        }
    }
}

/// Collects the endpoints of the builder's Services (those [`Builder::wants`]) from the
/// config's objects and the connected proxies: deduplicated by address (config objects first,
/// in key order, then proxies in order), labelled from the proxies, sorted.
pub(super) fn collect_endpoints(b: &mut Builder, config: &ConfigSnapshot, proxies: &[&ProxyInfo]) {
    for object in config.iter() {
        match object {
            Object::Endpoints(eps) => endpoints_object(b, eps),
            Object::EndpointSlice(slice) => endpoint_slice(b, slice),
            Object::ServiceEntry(se) => service_entry::own_endpoints(b, se),
            Object::WorkloadEntry(we) => service_entry::workload_entry(b, we),
            _ => {}
        }
    }
    for proxy in proxies {
        proxy_endpoints(b, proxy);
    }
    // Addresses of Endpoints/EndpointSlice objects carry no labels: take those of the
    // connected proxy with that IP in the Service's namespace.
    let mut proxy_labels: BTreeMap<(&str, IpAddr), &ProxyInfo> = BTreeMap::new();
    for proxy in proxies {
        if let Some(ns) = proxy.namespace.as_deref() {
            for ip in &proxy.ips {
                proxy_labels.entry((ns, *ip)).or_insert(*proxy);
            }
        }
    }
    for ((key, _), list) in b.endpoints.iter_mut() {
        let mut seen = BTreeSet::new();
        list.retain(|e| seen.insert((e.ip, e.port)));
        for ep in list
            .iter_mut()
            .filter(|e| e.source == EndpointSource::Config)
        {
            if let Some(proxy) = proxy_labels.get(&(key.namespace.as_str(), ep.ip)) {
                ep.labels = proxy.labels.clone();
                ep.service_account = proxy.service_account.clone();
                ep.tls_mode = proxy_tls_mode(proxy);
                ep.workload = proxy.endpoint_workload();
            }
        }
        list.sort();
    }
    for list in b.dns_endpoints.values_mut() {
        let mut seen = BTreeSet::new();
        list.retain(|e| seen.insert((e.host.clone(), e.port)));
        list.sort();
    }
}

/// The Service port an Endpoints/EndpointSlice port belongs to: same name, or the only port
/// when both are unnamed.
fn matching_port<'a>(svc: &'a Service, ep_port: &EndpointPort) -> Option<&'a ServicePort> {
    svc.ports
        .iter()
        .find(|sp| sp.name == ep_port.name && sp.protocol != Protocol::Udp)
}

/// A Kubernetes Service by the name of an Endpoints or EndpointSlice object.
fn kube_service(b: &Builder, namespace: &str, name: &str) -> Option<Arc<Service>> {
    let key = ServiceKey {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    b.services.get(&key).filter(|s| s.is_kubernetes()).cloned()
}

/// Whether a connected proxy takes Istio mTLS: it carries `security.istio.io/tlsMode: istio`
/// (`mesh-proxy` with a workload certificate adds it; Envoy peers without one do not).
fn proxy_tls_mode(proxy: &ProxyInfo) -> TlsMode {
    if crate::xds::tls::has_mtls(&proxy.labels) {
        TlsMode::Istio
    } else {
        TlsMode::Disabled
    }
}

/// An endpoint from a Kubernetes object (no labels, no mTLS known, weight 1).
fn config_endpoint(locality: Locality, ip: IpAddr, port: u16, healthy: bool) -> Endpoint {
    Endpoint {
        locality,
        ip,
        port,
        healthy,
        source: EndpointSource::Config,
        weight: 1,
        tls_mode: TlsMode::Disabled,
        labels: BTreeMap::new(),
        service_account: None,
        workload: None,
    }
}

fn endpoints_object(b: &mut Builder, eps: &objects::Endpoints) {
    let Some(svc) = kube_service(b, &eps.namespace, &eps.name) else {
        return;
    };
    for subset in &eps.subsets {
        for ep_port in &subset.ports {
            let Some(sp) = matching_port(&svc, ep_port) else {
                continue;
            };
            let ready = subset.addresses.iter().map(|a| (a, true));
            let not_ready = subset.not_ready_addresses.iter().map(|a| (a, false));
            for (addr, healthy) in ready.chain(not_ready) {
                let ep = config_endpoint(Locality::default(), addr.ip, ep_port.port, healthy);
                b.endpoint(&svc, sp.port, ep);
            }
        }
    }
}

fn endpoint_slice(b: &mut Builder, slice: &objects::EndpointSlice) {
    let Some(svc) = kube_service(b, &slice.namespace, &slice.service_name) else {
        return;
    };
    for ep_port in &slice.ports {
        let Some(sp) = matching_port(&svc, ep_port) else {
            continue;
        };
        for ep in &slice.endpoints {
            let locality = Locality {
                zone: ep.zone.clone().unwrap_or_default(),
                ..Locality::default()
            };
            for ip in &ep.addresses {
                let e = config_endpoint(locality.clone(), *ip, ep_port.port, ep.ready);
                b.endpoint(&svc, sp.port, e);
            }
        }
    }
}

/// A connected proxy is an endpoint of every Service in its namespace whose selector matches
/// its labels: Kubernetes Services (numeric target ports only: a named target port needs the
/// pod's container ports, which a node does not carry) and ServiceEntries with a
/// `workloadSelector` (the port's `targetPort`, else its number).
fn proxy_endpoints(b: &mut Builder, proxy: &ProxyInfo) {
    let Some((namespace, _)) = proxy.workload() else {
        return;
    };
    let selecting: Vec<Arc<Service>> = b
        .services
        .values()
        .filter(|s| b.wants(s) && s.selects(namespace, &proxy.labels))
        .cloned()
        .collect();
    for svc in selecting {
        for sp in &svc.ports {
            let TargetPort::Number(target) = sp.target_port else {
                continue;
            };
            if sp.protocol == Protocol::Udp {
                continue;
            }
            for ip in &proxy.ips {
                let ep = Endpoint {
                    locality: proxy.locality(),
                    ip: *ip,
                    port: target,
                    healthy: true,
                    source: EndpointSource::Proxy(proxy.id.clone()),
                    weight: 1,
                    tls_mode: proxy_tls_mode(proxy),
                    labels: proxy.labels.clone(),
                    service_account: proxy.service_account.clone(),
                    workload: proxy.endpoint_workload(),
                };
                b.endpoint(&svc, sp.port, ep);
            }
        }
    }
}

//! ServiceEntries and WorkloadEntries in the registry, as Istio's `serviceentry` registry
//! converts them.
//!
//! - A ServiceEntry becomes one [`Service`] per host (keyed by namespace and host), with the
//!   entry's ports, `addresses` (VIPs and CIDRs), location, resolution and `exportTo`.
//!   Resolution NONE is [`Resolution::Passthrough`], STATIC [`Resolution::ClientSideLb`], DNS
//!   [`Resolution::Dns`], DNS_ROUND_ROBIN [`Resolution::DnsRoundRobin`]; DYNAMIC_DNS (a dynamic
//!   forward proxy in Istio) is not supported: such an entry adds no Service.
//! - Its endpoints: the `endpoints` it lists, or the WorkloadEntries and proxies of its
//!   namespace its `workloadSelector` matches, or for DNS resolution with neither, the host
//!   itself. An endpoint's port is the one its `ports` map gives for the service port's name,
//!   else the port's `targetPort`, else the port's number.
//! - A WorkloadEntry is also an endpoint of every Kubernetes Service of its namespace whose
//!   selector matches its (non-empty) labels: at the Service port's numeric `targetPort`
//!   (overridden by the entry's `ports` for the port's name), or at the entry's port named by
//!   a named `targetPort` (skipped when it has none).
//! - Endpoint addresses: IPs go to EDS; host names only to DNS-resolved services (the proxy
//!   resolves them); Unix sockets are not supported and skipped. `network` is ignored (one
//!   network); `locality` and `weight` are kept; mTLS is recorded from the
//!   `security.istio.io/tlsMode` label, else a service account means `istio`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::build::Builder;
use super::model::{
    DnsEndpoint, Endpoint, EndpointSource, EndpointWorkload, Locality, Protocol, Resolution,
    Service, ServiceOrigin, ServicePort, TlsMode,
};
use crate::config::istio::service_entry::{
    Location, Resolution as SeResolution, ServiceEntry, WorkloadEntry,
};
use crate::config::istio::IstioConfig;
use crate::config::objects::TargetPort;

/// The label that says whether a workload accepts Istio mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// The registry resolution of an entry's; `None` for DYNAMIC_DNS.
fn resolution(r: SeResolution) -> Option<Resolution> {
    Some(match r {
        SeResolution::None => Resolution::Passthrough,
        SeResolution::Static => Resolution::ClientSideLb,
        SeResolution::Dns => Resolution::Dns,
        SeResolution::DnsRoundRobin => Resolution::DnsRoundRobin,
        SeResolution::DynamicDns => return None,
    })
}

fn port_number(n: u32) -> u16 {
    // Validation keeps ports in 1-65535.
    u16::try_from(n).unwrap_or_default()
}

/// The Services of a ServiceEntry: one per host.
pub fn services(se: &IstioConfig<ServiceEntry>) -> Vec<Service> {
    let spec = &se.spec;
    let Some(resolution) = resolution(spec.resolution()) else {
        return Vec::new();
    };
    let addresses: Vec<IpNet> = spec
        .addresses
        .iter()
        .filter_map(|a| {
            a.parse::<IpNet>()
                .ok()
                .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect();
    let cluster_ip = addresses
        .iter()
        .find(|n| n.prefix_len() == n.max_prefix_len())
        .map(IpNet::addr);
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .map(|p| ServicePort {
            name: Some(p.name.clone()),
            port: port_number(p.number),
            target_port: TargetPort::Number(port_number(p.target_port.unwrap_or(p.number))),
            protocol: Protocol::parse(&p.protocol).unwrap_or(Protocol::Auto),
        })
        .collect();
    spec.hosts
        .iter()
        .map(|host| Service {
            name: host.clone(),
            namespace: se.namespace.clone(),
            hostname: host.clone(),
            cluster_ip,
            addresses: addresses.clone(),
            ports: ports.clone(),
            selector: spec.workload_selector.as_ref().map(|s| s.labels.clone()),
            origin: ServiceOrigin::ServiceEntry(se.name.clone()),
            resolution,
            mesh_external: spec.location != Some(Location::MeshInternal),
            export_to: spec.export_to.clone(),
        })
        .collect()
}

/// Istio's tlsMode of a WorkloadEntry: its label, else `istio` with a service account.
fn tls_mode(we: &WorkloadEntry) -> TlsMode {
    match we.labels.get(TLS_MODE_LABEL) {
        Some(mode) if mode == "istio" => TlsMode::Istio,
        Some(_) => TlsMode::Disabled,
        None if !we.service_account.is_empty() => TlsMode::Istio,
        None => TlsMode::Disabled,
    }
}

/// The workload of a WorkloadEntry endpoint: the entry's name and namespace (an endpoint
/// written inline in a ServiceEntry names no workload).
fn entry_workload(source: &EndpointSource) -> Option<EndpointWorkload> {
    let EndpointSource::WorkloadEntry(key) = source else {
        return None;
    };
    let (namespace, name) = key.split_once('/')?;
    Some(EndpointWorkload {
        name: name.to_string(),
        namespace: namespace.to_string(),
        cluster: "Kubernetes".to_string(),
    })
}

/// Adds `we` as an endpoint of `svc` on service port `sp` at workload port `port`, in the form
/// the service's resolution needs.
fn add_workload(
    b: &mut Builder,
    svc: &Service,
    sp: &ServicePort,
    we: &WorkloadEntry,
    port: u16,
    source: EndpointSource,
) {
    if we.address.starts_with("unix://") || we.address.is_empty() || port == 0 {
        return;
    }
    let workload = entry_workload(&source);
    let locality = Locality::parse(&we.locality);
    let weight = we.weight.max(1);
    let dns = matches!(svc.resolution, Resolution::Dns | Resolution::DnsRoundRobin);
    match we.address.parse::<IpAddr>() {
        Ok(ip) => b.endpoint(
            svc,
            sp.port,
            Endpoint {
                locality,
                ip,
                port,
                healthy: true,
                source,
                weight,
                tls_mode: tls_mode(we),
                labels: we.labels.clone(),
                service_account: Some(we.service_account.clone()).filter(|s| !s.is_empty()),
                workload,
            },
        ),
        Err(_) if dns => b.dns_endpoint(
            svc,
            sp.port,
            DnsEndpoint {
                locality,
                host: we.address.clone(),
                port,
                weight,
                source,
                labels: we.labels.clone(),
            },
        ),
        Err(_) => {}
    }
}

/// The workload port of a ServiceEntry port: the workload's port of that name, else the
/// port's `targetPort`, else its number.
fn entry_port(sp: &ServicePort, we: &WorkloadEntry) -> u16 {
    let named = sp
        .name
        .as_ref()
        .and_then(|n| we.ports.get(n))
        .copied()
        .filter(|p| *p > 0)
        .map(port_number);
    named.unwrap_or(match sp.target_port {
        TargetPort::Number(n) => n,
        TargetPort::Name(_) => sp.port,
    })
}

/// The services of a ServiceEntry in the builder (they may have lost their key to a
/// Kubernetes Service or an earlier entry: those are skipped).
fn entry_services(b: &Builder, se: &IstioConfig<ServiceEntry>) -> Vec<Arc<Service>> {
    let origin = ServiceOrigin::ServiceEntry(se.name.clone());
    se.spec
        .hosts
        .iter()
        .filter_map(|host| {
            let key = super::ServiceKey {
                namespace: se.namespace.clone(),
                name: host.clone(),
            };
            b.services.get(&key).filter(|s| s.origin == origin).cloned()
        })
        .collect()
}

/// The endpoints a ServiceEntry lists itself, or for DNS resolution without endpoints nor
/// selector, its hosts.
pub(super) fn own_endpoints(b: &mut Builder, se: &IstioConfig<ServiceEntry>) {
    let source = EndpointSource::ServiceEntry(format!("{}/{}", se.namespace, se.name));
    for svc in entry_services(b, se) {
        let dns = matches!(svc.resolution, Resolution::Dns | Resolution::DnsRoundRobin);
        if svc.resolution == Resolution::Passthrough {
            continue;
        }
        for sp in &svc.ports {
            if sp.protocol == Protocol::Udp {
                continue;
            }
            if se.spec.endpoints.is_none() && se.spec.workload_selector.is_none() && dns {
                let TargetPort::Number(port) = sp.target_port else {
                    continue;
                };
                b.dns_endpoint(
                    &svc,
                    sp.port,
                    DnsEndpoint {
                        locality: Locality::default(),
                        host: svc.hostname.clone(),
                        port,
                        weight: 1,
                        source: source.clone(),
                        labels: BTreeMap::new(),
                    },
                );
                continue;
            }
            for we in se.spec.endpoints() {
                let port = entry_port(sp, we);
                add_workload(b, &svc, sp, we, port, source.clone());
            }
        }
    }
}

/// A WorkloadEntry as an endpoint of the Kubernetes Services and the ServiceEntries of its
/// namespace that select it.
pub(super) fn workload_entry(b: &mut Builder, we: &IstioConfig<WorkloadEntry>) {
    let source = EndpointSource::WorkloadEntry(format!("{}/{}", we.namespace, we.name));
    let spec = &we.spec;
    let selecting: Vec<Arc<Service>> = b
        .services
        .values()
        .filter(|s| s.namespace == we.namespace && s.resolution != Resolution::Passthrough)
        .filter(|s| match &s.origin {
            // Istio ignores WorkloadEntries without labels for Kubernetes Services.
            ServiceOrigin::Kubernetes => {
                !spec.labels.is_empty() && s.selects(&we.namespace, &spec.labels)
            }
            ServiceOrigin::ServiceEntry(_) => s.selects(&we.namespace, &spec.labels),
        })
        .cloned()
        .collect();
    for svc in selecting {
        for sp in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            let port = match (&svc.origin, &sp.target_port) {
                (ServiceOrigin::ServiceEntry(_), _) => Some(entry_port(sp, spec)),
                (ServiceOrigin::Kubernetes, TargetPort::Number(n)) => Some(
                    sp.name
                        .as_ref()
                        .and_then(|name| spec.ports.get(name))
                        .copied()
                        .filter(|p| *p > 0)
                        .map_or(*n, port_number),
                ),
                (ServiceOrigin::Kubernetes, TargetPort::Name(name)) => spec
                    .ports
                    .get(name)
                    .copied()
                    .filter(|p| *p > 0)
                    .map(port_number),
            };
            if let Some(port) = port {
                add_workload(b, &svc, sp, spec, port, source.clone());
            }
        }
    }
}

//! Translation of the registry into Envoy v3 resources, per proxy, and the ADS server that
//! delivers them.
//!
//! The resources follow ARCHITECTURE.md's "xDS contract", which is istiod's sidecar shape:
//! clusters `outbound|PORT||HOST` (EDS), `inbound|PORT||` (ORIGINAL_DST), the passthrough and
//! black-hole clusters; listeners `virtualOutbound`, `virtualInbound`, `0.0.0.0_PORT` (HTTP)
//! and `CLUSTERIP_PORT` (TCP and sniffed); routes named by port; one load assignment per
//! outbound cluster. Every function here is pure and deterministic: the same registry and
//! proxy give the same resources in the same order.

pub mod build;
pub mod cache;
pub mod cluster_policy;
pub mod clusters;
pub mod endpoints;
pub mod grpcgen;
pub mod http_routes;
pub mod hub;
pub mod listeners;
pub mod outbound_listeners;
pub mod push;
pub mod render;
mod route_assembly;
pub mod routes;
pub mod scope;
pub mod server;
pub mod service_clusters;
pub mod status;
mod stream;
pub mod tcp_routes;
pub mod tls;
pub mod wire;

use std::collections::BTreeSet;

use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use serde::Serialize;

use crate::config::objects::TargetPort;
use crate::registry::{MeshSnapshot, Protocol, ProxyInfo, Service, ServicePort};
use cache::{Rendered, Shared};

/// The resource types served, in the order a push sends them (make before break).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ResourceType {
    /// CDS.
    Cluster,
    /// EDS.
    Endpoint,
    /// LDS.
    Listener,
    /// RDS.
    Route,
}

impl ResourceType {
    /// Every type, in push order: CDS, EDS, LDS, RDS.
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    /// The type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    /// The type of a type URL, if served.
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// `cds`, `eds`, `lds` or `rds`.
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
        }
    }

    /// LDS and CDS always carry the full set; EDS and RDS the names asked for.
    pub fn is_full_set(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// [`ResourceType::is_full_set`] for `proxy`: a proxyless gRPC client asks for every
    /// type by name.
    pub fn is_full_set_for(self, proxy: Option<&ProxyInfo>) -> bool {
        self.is_full_set() && !proxy.is_some_and(ProxyInfo::is_proxyless_grpc)
    }
}

/// `outbound|PORT||HOST`.
pub fn outbound_cluster_name(port: u16, hostname: &str) -> String {
    format!("outbound|{port}||{hostname}")
}

/// `outbound|PORT|SUBSET|HOST` (Istio's `BuildSubsetKey`; the subset may be empty).
pub fn subset_cluster_name(port: u16, subset: &str, hostname: &str) -> String {
    format!("outbound|{port}|{subset}|{hostname}")
}

/// The parts of an `outbound|PORT|SUBSET|HOST` name.
pub fn parse_outbound_cluster_name(name: &str) -> Option<(u16, &str, &str)> {
    let mut parts = name.split('|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    parts.next().is_none().then_some((port, subset, host))
}

/// `inbound|PORT||`.
pub fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// The proxy's own ports: these are never outbound listeners.
pub const PROXY_PORTS: [u16; 2] = [15001, 15006];

/// Every proxied Service port of the whole mesh (UDP and SCTP ports are not), in Service
/// order. What one proxy is sent is narrower: see
/// [`crate::registry::ProxyScope::outbound_ports`].
pub fn outbound_ports(mesh: &MeshSnapshot) -> impl Iterator<Item = (&Service, &ServicePort)> {
    mesh.services.values().flat_map(|svc| {
        svc.ports
            .iter()
            .filter(|p| p.protocol != Protocol::Udp)
            .map(move |p| (&**svc, p))
    })
}

/// One port the proxy's workload serves, from the Services that select it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundPort {
    /// The workload's port (the Service's numeric `targetPort`).
    pub port: u16,
    /// Its protocol (from the first Service, in key order, that declares it).
    pub protocol: Protocol,
}

/// The inbound ports of a proxy, sorted by port; none for a proxy without a workload. The
/// proxy's own capture ports are never inbound ports.
pub fn inbound_ports(mesh: &MeshSnapshot, proxy: &ProxyInfo) -> Vec<InboundPort> {
    let Some((namespace, _)) = proxy.workload() else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut ports = Vec::new();
    for svc in mesh
        .services
        .values()
        .filter(|s| s.selects(namespace, &proxy.labels))
    {
        for sp in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            if let TargetPort::Number(port) = sp.target_port {
                if !PROXY_PORTS.contains(&port) && seen.insert(port) {
                    ports.push(InboundPort {
                        port,
                        protocol: sp.protocol,
                    });
                }
            }
        }
    }
    ports.sort_by_key(|p| p.port);
    ports
}

/// Everything a proxy gets, rendered as JSON (see [`render`]): `clusters` and `listeners` in
/// full, `endpoints` and `routes` for the given names.
pub fn dump(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    eds_names: &BTreeSet<String>,
    rds_names: &BTreeSet<String>,
) -> Result<serde_json::Value, render::RenderError> {
    let none = BTreeSet::new();
    let mut out = serde_json::Map::new();
    for (key, kind, names) in [
        ("clusters", ResourceType::Cluster, &none),
        ("endpoints", ResourceType::Endpoint, eds_names),
        ("listeners", ResourceType::Listener, &none),
        ("routes", ResourceType::Route, rds_names),
    ] {
        let items = resources(kind, mesh, proxy, names)
            .into_iter()
            .map(|(_, any)| render::any(any))
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(key.to_string(), serde_json::Value::Array(items));
    }
    Ok(serde_json::Value::Object(out))
}

/// The resources of one type for a proxy, packed, with their names, in order. `names` are
/// the requested names (used by EDS and RDS only, and by every type for proxyless gRPC
/// clients, which [`grpcgen`] serves).
pub fn resources(
    kind: ResourceType,
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    names: &BTreeSet<String>,
) -> Vec<(String, Any)> {
    rendered(kind, mesh, proxy, names)
        .into_iter()
        .map(|r| (r.name.to_string(), r.any()))
        .collect()
}

/// [`resources`], shared: what a stream sends and keeps (see [`cache`]).
pub fn rendered(
    kind: ResourceType,
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    names: &BTreeSet<String>,
) -> Vec<Shared> {
    if proxy.is_proxyless_grpc() {
        return grpcgen::resources(kind, mesh, proxy, names)
            .into_iter()
            .map(|(name, any)| Rendered::new(name, any))
            .collect();
    }
    match kind {
        ResourceType::Cluster => clusters::clusters(mesh, proxy),
        ResourceType::Endpoint => endpoints::rendered(mesh, proxy, names),
        ResourceType::Listener => listeners::listeners(mesh, proxy)
            .into_iter()
            .map(|l| Rendered::new(l.name.clone(), pack_any(l)))
            .collect(),
        ResourceType::Route => routes::rendered(mesh, proxy, names),
    }
}

#[cfg(test)]
mod tests;

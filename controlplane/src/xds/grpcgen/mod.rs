//! Resources for proxyless gRPC clients, as istiod's `grpcgen` shapes them.
//!
//! A node whose metadata has `GENERATOR: grpc` is a gRPC library speaking xDS itself (target
//! `xds:///HOST:PORT`), not a sidecar. It asks for every type by name, and gets:
//! - Listener `HOST:PORT` (the name it asked for, which may be a short name such as
//!   `reviews:7070`, `reviews.default:7070` or `reviews.default.svc:7070`, or the FQDN; a
//!   name without a port is answered when the Service has exactly one port): an
//!   `api_listener` holding an HTTP connection manager with RDS `outbound|PORT||FQDN` over
//!   ADS and the HTTP filters fault, router.
//! - RouteConfiguration `outbound|PORT||FQDN`: the virtual hosts of the sidecar's outbound
//!   route configuration for that port that serve the Service (so a proxyless client is
//!   routed as a sidecar would be), or one virtual host to `outbound|PORT||FQDN` when the
//!   port has none (a TCP port).
//! - Cluster `outbound|PORT|SUBSET|FQDN` for each requested name whose Service and port
//!   exist: EDS over ADS under its own name, round robin, nothing a gRPC client would reject.
//! - ClusterLoadAssignment: the sidecars' EDS, by name (localities always set).
//!
//! Names that resolve to nothing are left out of the response, which a gRPC client reads as
//! "does not exist".

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
    Cluster,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

use super::{build, endpoints, outbound_cluster_name, routes, ResourceType};
use crate::registry::{MeshSnapshot, ProxyInfo, Service, ServicePort};

/// The node metadata key naming the generator a node wants (istiod's `GENERATOR`).
pub const GENERATOR_KEY: &str = "GENERATOR";
/// The generator value of proxyless gRPC clients.
pub const GRPC_GENERATOR: &str = "grpc";

/// The resources of one type for a proxyless gRPC node, packed, with their names, in name
/// order. Every type is answered by the requested `names`.
pub fn resources(
    kind: ResourceType,
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    names: &BTreeSet<String>,
) -> Vec<(String, Any)> {
    match kind {
        ResourceType::Listener => listeners(mesh, proxy, names)
            .into_iter()
            .map(|l| (l.name.clone(), pack_any(l)))
            .collect(),
        ResourceType::Route => route_configs(mesh, proxy, names)
            .into_iter()
            .map(|r| (r.name.clone(), pack_any(r)))
            .collect(),
        ResourceType::Cluster => clusters(mesh, names)
            .into_iter()
            .map(|c| (c.name.clone(), pack_any(c)))
            .collect(),
        ResourceType::Endpoint => endpoints::endpoints(mesh, proxy, names)
            .into_iter()
            .map(|c| (c.cluster_name.clone(), pack_any(c)))
            .collect(),
    }
}

/// The Service a host name means to a client in `proxy_ns`: the FQDN `NAME.NS.svc.DOMAIN`,
/// `NAME.NS.svc`, `NAME.NS`, or a bare `NAME` in the client's own namespace.
pub fn find_service<'a>(
    mesh: &'a MeshSnapshot,
    proxy_ns: Option<&str>,
    host: &str,
) -> Option<&'a Service> {
    mesh.services.values().map(|s| &**s).find(|svc| {
        let short = format!("{}.{}", svc.name, svc.namespace);
        host == svc.hostname
            || host == short
            || host == format!("{short}.svc")
            || (host == svc.name && proxy_ns == Some(svc.namespace.as_str()))
    })
}

/// Splits a listener name into host and port: `HOST:PORT`, or `HOST` alone.
fn split_host_port(name: &str) -> (&str, Option<u16>) {
    match name.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(p) if p.to_string() == port => (host, Some(p)),
            _ => (name, None),
        },
        None => (name, None),
    }
}

/// The Service and port a listener name designates, if any.
fn resolve_listener<'a>(
    mesh: &'a MeshSnapshot,
    proxy: &ProxyInfo,
    name: &str,
) -> Option<(&'a Service, &'a ServicePort)> {
    let (host, port) = split_host_port(name);
    let svc = find_service(mesh, proxy.namespace.as_deref(), host)?;
    let port = match port {
        Some(p) => svc.ports.iter().find(|sp| sp.port == p)?,
        None => match svc.ports.as_slice() {
            [only] => only,
            _ => return None,
        },
    };
    Some((svc, port))
}

fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// The API listener `name` for a Service port: an HCM with RDS `outbound|PORT||FQDN`.
pub fn api_listener(name: &str, svc: &Service, port: &ServicePort) -> Listener {
    let route = outbound_cluster_name(port.port, &svc.hostname);
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(build::ads()),
            route_config_name: route,
        })),
        http_filters: vec![
            http_filter("envoy.filters.http.fault", pack_any(HttpFault::default())),
            http_filter("envoy.filters.http.router", pack_any(Router::default())),
        ],
        ..Default::default()
    };
    let ip = svc.cluster_ip.unwrap_or_else(build::any_ip);
    Listener {
        name: name.to_string(),
        address: Some(build::address(ip, port.port)),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(hcm)),
        }),
        ..Default::default()
    }
}

/// The requested listeners that designate a Service port, in name order.
pub fn listeners(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    names: &BTreeSet<String>,
) -> Vec<Listener> {
    names
        .iter()
        .filter_map(|name| {
            let (svc, port) = resolve_listener(mesh, proxy, name)?;
            Some(api_listener(name, svc, port))
        })
        .collect()
}

/// The parts of `outbound|PORT|SUBSET|HOST`.
fn parse_outbound(name: &str) -> Option<(u16, &str, &str)> {
    let mut parts = name.splitn(4, '|');
    let (dir, port, subset, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if dir != "outbound" || host.is_empty() {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    Some((port, subset, host))
}

/// The Service port of an `outbound|PORT|SUBSET|FQDN` name, with the subset.
fn resolve_outbound<'a>(
    mesh: &'a MeshSnapshot,
    name: &'a str,
) -> Option<(&'a Service, &'a ServicePort, &'a str)> {
    let (port, subset, host) = parse_outbound(name)?;
    let svc = mesh
        .services
        .values()
        .map(|s| &**s)
        .find(|s| s.hostname == host)?;
    let sp = svc.ports.iter().find(|p| p.port == port)?;
    Some((svc, sp, subset))
}

/// The virtual hosts of `svc` on `port` as a sidecar in `proxy`'s place would get them.
fn virtual_hosts(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    svc: &Service,
    port: &ServicePort,
) -> Vec<VirtualHost> {
    let fqdn_port = format!("{}:{}", svc.hostname, port.port);
    let sidecar = routes::outbound_route(mesh, proxy, port.port);
    let own: Vec<VirtualHost> = sidecar
        .virtual_hosts
        .into_iter()
        .filter(|vh| {
            vh.domains
                .iter()
                .any(|d| *d == svc.hostname || *d == fqdn_port)
        })
        .collect();
    if !own.is_empty() {
        return own;
    }
    vec![VirtualHost {
        name: fqdn_port,
        domains: routes::domains(svc, port.port, proxy.namespace.as_deref()),
        routes: vec![routes::route_to(
            "default",
            &outbound_cluster_name(port.port, &svc.hostname),
        )],
        ..Default::default()
    }]
}

/// The requested route configurations `outbound|PORT||FQDN` whose Service port exists, in
/// name order.
pub fn route_configs(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    names: &BTreeSet<String>,
) -> Vec<RouteConfiguration> {
    names
        .iter()
        .filter_map(|name| {
            let (svc, port, subset) = resolve_outbound(mesh, name)?;
            if !subset.is_empty() {
                return None;
            }
            Some(RouteConfiguration {
                name: name.clone(),
                virtual_hosts: virtual_hosts(mesh, proxy, svc, port),
                ..Default::default()
            })
        })
        .collect()
}

/// An EDS cluster reading its endpoints over ADS under its own name, round robin.
pub fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(build::ads()),
            service_name: name.to_string(),
        }),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

/// The requested clusters `outbound|PORT|SUBSET|FQDN` whose Service port exists, in name
/// order.
pub fn clusters(mesh: &MeshSnapshot, names: &BTreeSet<String>) -> Vec<Cluster> {
    let mut out = BTreeMap::new();
    for name in names {
        if resolve_outbound(mesh, name).is_some() {
            out.insert(name.clone(), eds_cluster(name));
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests;

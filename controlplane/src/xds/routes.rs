//! RDS: route configurations named by port, and the inline inbound routes.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost,
};

use super::build;
use super::clusters::PASSTHROUGH;
use super::outbound_cluster_name;
use crate::registry::{MeshSnapshot, Protocol, ProxyInfo, Service};

/// A route for every path (prefix `/`) to `cluster`, without timeout.
pub fn route_to(name: &str, cluster: &str) -> Route {
    Route {
        name: name.to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
            timeout: Some(build::seconds(0)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The domains of a Service's virtual host on `port`, as seen from `proxy_ns`: `HOST`,
/// `HOST:PORT`, the short names (`NAME` only from the same namespace, `NAME.NS`,
/// `NAME.NS.svc`), each with and without the port, then the ClusterIP with and without it.
pub fn domains(svc: &Service, port: u16, proxy_ns: Option<&str>) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    if proxy_ns == Some(svc.namespace.as_str()) {
        names.push(svc.name.clone());
    }
    names.push(format!("{}.{}", svc.name, svc.namespace));
    names.push(format!("{}.{}.svc", svc.name, svc.namespace));
    names.extend(svc.cluster_ip.map(|ip| ip.to_string()));
    names
        .into_iter()
        .flat_map(|n| [n.clone(), format!("{n}:{port}")])
        .collect()
}

/// The outbound route configuration for `port`: a virtual host `HOST:PORT` per Service with
/// an HTTP or sniffed port `port`, then `allow_any` (`*`) to the passthrough cluster. A
/// domain already taken by an earlier virtual host is left out (Envoy rejects duplicates).
pub fn outbound_route(mesh: &MeshSnapshot, proxy: &ProxyInfo, port: u16) -> RouteConfiguration {
    let mut taken = BTreeSet::new();
    let mut virtual_hosts = Vec::new();
    for svc in mesh.services.values() {
        let Some(sp) = svc
            .ports
            .iter()
            .find(|p| p.port == port && (p.protocol.is_http() || p.protocol == Protocol::Auto))
        else {
            continue;
        };
        let domains: Vec<String> = domains(svc, sp.port, proxy.namespace.as_deref())
            .into_iter()
            .filter(|d| taken.insert(d.clone()))
            .collect();
        if domains.is_empty() {
            continue;
        }
        virtual_hosts.push(VirtualHost {
            name: format!("{}:{}", svc.hostname, port),
            domains,
            routes: vec![route_to(
                "default",
                &outbound_cluster_name(port, &svc.hostname),
            )],
            ..Default::default()
        });
    }
    virtual_hosts.push(VirtualHost {
        name: "allow_any".to_string(),
        domains: vec!["*".to_string()],
        routes: vec![route_to("allow_any", PASSTHROUGH)],
        ..Default::default()
    });
    RouteConfiguration {
        name: port.to_string(),
        virtual_hosts,
        validate_clusters: build::bool_value(false),
        ..Default::default()
    }
}

/// The requested route configurations: every requested name that is a port number, in name
/// order (a port without Services still gets `allow_any`).
pub fn routes(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    names: &BTreeSet<String>,
) -> Vec<RouteConfiguration> {
    let mut out = BTreeMap::new();
    for name in names {
        if let Ok(port) = name.parse::<u16>() {
            if port.to_string() == *name {
                out.insert(name.clone(), outbound_route(mesh, proxy, port));
            }
        }
    }
    out.into_values().collect()
}

/// An inline inbound route configuration: everything to `cluster`, under `name`, with one
/// virtual host `vhost` for `*`.
pub fn inbound_route(name: &str, vhost: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: vhost.to_string(),
            domains: vec!["*".to_string()],
            routes: vec![route_to("default", cluster)],
            ..Default::default()
        }],
        validate_clusters: build::bool_value(false),
        ..Default::default()
    }
}

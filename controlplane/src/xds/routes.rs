//! RDS: route configurations named by port, and the inline inbound routes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{
    route::Action,
    route_action::{ClusterSpecifier, HashPolicy},
    route_match::PathSpecifier,
    Decorator, DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost,
};

use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::build;
use super::cache::{Rendered, Shared, VhostKey};
use super::clusters::PASSTHROUGH;
use super::http_routes::{action, policy, virtual_service_routes, RouteCtx};
pub use super::route_assembly::Assembled;
use super::route_assembly::{dedup, share, Part, Plan, Planned};
use super::{outbound_cluster_name, ResourceType};
use crate::config::istio::names::hosts_match;
use crate::networking::VirtualServiceRule;
use crate::registry::{MeshSnapshot, Protocol, ProxyInfo, ProxyScope, Service, ServicePort};

/// Istio's `max_direct_response_body_size_bytes` on outbound route configurations (1 MiB, the
/// limit its validation puts on direct response bodies).
pub const MAX_DIRECT_RESPONSE_BODY: u32 = 1024 * 1024;

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

/// Istio's `BuildDefaultHTTPOutboundRoute`: everything to `cluster`, no timeout (nor gRPC
/// timeout cap), Istio's default retry policy, the trace operation `HOST:PORT/*`.
#[allow(deprecated)]
pub fn default_outbound_route(cluster: &str, host: &str, port: u16) -> Route {
    let mut route = route_to("default", cluster);
    if let Some(Action::Route(a)) = &mut route.action {
        a.retry_policy = Some(policy::default_retry(false));
        a.max_grpc_timeout = Some(build::seconds(0));
    }
    route.decorator = Some(Decorator {
        operation: format!("{host}:{port}/*"),
        ..Default::default()
    });
    route
}

/// istiod's `block_all` route (REGISTRY_ONLY): a direct 502 response for every request to a
/// host outside the registry.
fn block_all_route() -> Route {
    Route {
        name: "block_all".to_string(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(Action::DirectResponse(DirectResponseAction {
            status: 502,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The route of `allow_any`: everything to the passthrough cluster, no timeout.
#[allow(deprecated)]
fn allow_any_route() -> Route {
    let mut route = route_to("allow_any", PASSTHROUGH);
    if let Some(Action::Route(a)) = &mut route.action {
        a.max_grpc_timeout = Some(build::seconds(0));
    }
    route
}

/// The domains of a Service's virtual host on `port`, as seen from `proxy_ns`: `HOST`,
/// `HOST:PORT`, for a Kubernetes Service the short names (`NAME` only from the same namespace,
/// `NAME.NS`, `NAME.NS.svc`), each with and without the port, then its virtual IPs (the
/// ClusterIP, or a ServiceEntry's addresses that are single IPs) with and without it.
pub fn domains(svc: &Service, port: u16, proxy_ns: Option<&str>) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    if svc.is_kubernetes() {
        if proxy_ns == Some(svc.namespace.as_str()) {
            names.push(svc.name.clone());
        }
        names.push(format!("{}.{}", svc.name, svc.namespace));
        names.push(format!("{}.{}.svc", svc.name, svc.namespace));
        names.extend(svc.cluster_ip.map(|ip| ip.to_string()));
    } else {
        names.extend(
            svc.addresses
                .iter()
                .filter(|n| n.prefix_len() == n.max_prefix_len())
                .map(|n| n.addr().to_string()),
        );
    }
    names
        .into_iter()
        .flat_map(|n| [n.clone(), format!("{n}:{port}")])
        .collect()
}

/// The hash policy of a Service's DestinationRule for its default route (Istio's
/// `hashForService`: the rule's consistent hash, or its port-level one for `port`).
fn service_hash(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    svc: &Service,
    port: u16,
) -> Option<HashPolicy> {
    let rule = mesh
        .networking
        .destination_rule(proxy, &svc.hostname, &svc.namespace)?;
    let policy = rule.traffic_policy.as_ref()?;
    let port_level = policy
        .port_level_settings
        .iter()
        .flatten()
        .find(|s| s.port.map(|p| p.number) == Some(u32::from(port)))
        .and_then(|s| s.load_balancer.as_ref()?.consistent_hash.as_ref());
    let hash = port_level.or(policy.load_balancer.as_ref()?.consistent_hash.as_ref())?;
    action::hash_policy(hash)
}

/// The VirtualService whose wildcard host is the most specific match of each Service host
/// (Istio's `MostSpecificWildcardVirtualServiceIndex`), by index in `vses`.
fn wildcard_owners<'a>(
    vses: &[&VirtualServiceRule],
    services: &[(&'a Arc<Service>, &'a ServicePort)],
) -> BTreeMap<&'a str, usize> {
    let mut out: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (svc, _) in services {
        for (i, vs) in vses.iter().enumerate() {
            for h in vs.spec.hosts.iter().filter(|h| h.starts_with('*')) {
                if !hosts_match(h, &svc.hostname) {
                    continue;
                }
                let better = out
                    .get(svc.hostname.as_str())
                    .is_none_or(|(len, _)| h.len() > *len);
                if better {
                    out.insert(&svc.hostname, (h.len(), i));
                }
            }
        }
    }
    out.into_iter().map(|(k, (_, i))| (k, i)).collect()
}

/// The outbound route configuration for `port`, as istiod builds a sidecar's: a virtual host
/// `HOST:PORT` per Service with an HTTP or sniffed port `port`, whose routes come from the
/// first VirtualService of the proxy that applies to the Service on this port, or else one
/// default route to `outbound|PORT||HOST`; VirtualService hosts that are not Services get
/// their own virtual host (on port 80, or beside the VirtualService's Services). Virtual hosts
/// are sorted by name, a domain already taken is left out (Envoy rejects duplicates), and
/// `allow_any` (`*`, the passthrough cluster) comes last, or with REGISTRY_ONLY `block_all`
/// (the black hole). The Services are those of the proxy's scope for this port.
pub fn outbound_route(mesh: &MeshSnapshot, proxy: &ProxyInfo, port: u16) -> RouteConfiguration {
    outbound_route_in(mesh, &ProxyScope::new(mesh, proxy), proxy, port).message()
}

/// [`outbound_route`], assembled: the default virtual hosts of Services come from the
/// snapshot's render cache, shared with every proxy that gets the same.
pub fn assembled_route(
    mesh: &MeshSnapshot,
    scope: &ProxyScope,
    proxy: &ProxyInfo,
    port: u16,
) -> Assembled {
    outbound_route_in(mesh, scope, proxy, port)
}

fn outbound_route_in(
    mesh: &MeshSnapshot,
    scope: &ProxyScope,
    proxy: &ProxyInfo,
    port: u16,
) -> Assembled {
    let proxy_ns = proxy.namespace.as_deref();
    let on_port: Vec<(&Arc<Service>, &ServicePort)> = scope
        .route_services(port)
        .iter()
        .filter_map(|svc| {
            svc.ports
                .iter()
                .find(|p| p.port == port && (p.protocol.is_http() || p.protocol == Protocol::Auto))
                .map(|p| (svc, p))
        })
        .collect();
    let vses = mesh.networking.virtual_services_for(proxy);
    let owners = wildcard_owners(&vses, &on_port);
    // Indexes every Service by host: built only when VirtualServices are translated.
    let ctx = (!vses.is_empty()).then(|| RouteCtx::new(mesh, proxy, port));
    let mut planned = Vec::new();
    let mut claimed = BTreeSet::new();
    for (i, vs) in vses.iter().enumerate() {
        let mut services = Vec::new();
        let mut other_hosts = Vec::new();
        for h in &vs.spec.hosts {
            if h.starts_with('*') {
                let matching: Vec<_> = on_port
                    .iter()
                    .filter(|(s, _)| hosts_match(h, &s.hostname))
                    .collect();
                if matching.is_empty() {
                    other_hosts.push(h.clone());
                }
                services.extend(
                    matching
                        .into_iter()
                        .filter(|(s, _)| owners.get(s.hostname.as_str()) == Some(&i))
                        .copied(),
                );
            } else if let Some(found) = on_port.iter().find(|(s, _)| s.hostname == *h) {
                services.push(*found);
            } else {
                other_hosts.push(h.clone());
            }
        }
        if services.is_empty() && port != 80 {
            continue;
        }
        let Some(ctx) = &ctx else { continue };
        let routes = virtual_service_routes(ctx, vs);
        if routes.is_empty() {
            continue;
        }
        for h in other_hosts {
            let domains = vec![h.clone(), format!("{h}:{port}")];
            planned.push(Plan::Own(Planned::new(
                format!("{h}:{port}"),
                domains,
                routes.clone(),
            )));
        }
        for (svc, sp) in services {
            claimed.insert(svc.hostname.as_str());
            planned.push(Plan::Own(Planned::new(
                format!("{}:{}", svc.hostname, port),
                domains(svc, sp.port, proxy_ns),
                routes.clone(),
            )));
        }
    }
    for (svc, sp) in &on_port {
        if claimed.contains(svc.hostname.as_str()) {
            continue;
        }
        let hash = service_hash(mesh, proxy, svc, sp.port);
        let key = VhostKey {
            service: (*svc).clone(),
            port,
            same_namespace: proxy_ns == Some(svc.namespace.as_str()),
            hash_policy: hash.iter().flat_map(Message::encode_to_vec).collect(),
        };
        let render = || {
            let cluster = outbound_cluster_name(port, &svc.hostname);
            let mut route = default_outbound_route(&cluster, &svc.hostname, port);
            if let Some(Action::Route(a)) = &mut route.action {
                a.hash_policy.extend(hash.clone());
            }
            let name = format!("{}:{}", svc.hostname, port);
            share(Planned::new(name, domains(svc, sp.port, proxy_ns), vec![route]).virtual_host())
        };
        planned.push(Plan::Shared(mesh.render_cache.vhost(
            key,
            mesh.version,
            render,
        )));
    }
    let mut parts = dedup(&planned);
    parts.sort_by(|a, b| a.name().cmp(b.name()));
    let (catch_all, catch_all_route) = if scope.allow_any() {
        ("allow_any", allow_any_route())
    } else {
        ("block_all", block_all_route())
    };
    parts.push(Part::Own(Box::new(VirtualHost {
        name: catch_all.to_string(),
        domains: vec!["*".to_string()],
        routes: vec![catch_all_route],
        include_request_attempt_count: true,
        ..Default::default()
    })));
    Assembled {
        fields: RouteConfiguration {
            name: port.to_string(),
            validate_clusters: build::bool_value(false),
            max_direct_response_body_size_bytes: build::u32_value(MAX_DIRECT_RESPONSE_BODY),
            ..Default::default()
        },
        parts,
    }
}

/// The requested route configurations: every requested name that is a port number, in name
/// order (a port without Services still gets the catch-all virtual host).
pub fn routes(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    names: &BTreeSet<String>,
) -> Vec<RouteConfiguration> {
    assembled(mesh, proxy, names)
        .into_iter()
        .map(Assembled::message)
        .collect()
}

/// [`routes`], encoded and packed (see [`Assembled::encode`]).
pub fn rendered(mesh: &MeshSnapshot, proxy: &ProxyInfo, names: &BTreeSet<String>) -> Vec<Shared> {
    assembled(mesh, proxy, names)
        .into_iter()
        .map(|a| {
            let any = Any {
                type_url: ResourceType::Route.type_url().to_string(),
                value: a.encode(),
            };
            Rendered::new(a.name().to_string(), any)
        })
        .collect()
}

fn assembled(mesh: &MeshSnapshot, proxy: &ProxyInfo, names: &BTreeSet<String>) -> Vec<Assembled> {
    let scope = ProxyScope::new(mesh, proxy);
    let mut out = BTreeMap::new();
    for name in names {
        if let Ok(port) = name.parse::<u16>() {
            if port.to_string() == *name {
                out.insert(name.clone(), outbound_route_in(mesh, &scope, proxy, port));
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

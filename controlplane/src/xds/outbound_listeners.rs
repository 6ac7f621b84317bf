//! The per-port outbound listeners of a proxy, from its [`ProxyScope`], with istiod's rules
//! for where each service port listens and how colliding ports merge.
//!
//! - HTTP ports (and egress listeners with an HTTP protocol) share `0.0.0.0_PORT` (or
//!   `BIND_PORT`), whose routes (RDS `PORT`) carry one virtual host per service.
//! - TCP and sniffed ports listen on each service address: a VIP gives `VIP_PORT`; a CIDR
//!   gives a chain matching the range on `0.0.0.0_PORT`. A ServiceEntry without addresses
//!   listens on `0.0.0.0_PORT`, except with resolution NONE when it has endpoints or a
//!   selector: then one listener per endpoint address (not the proxy's own). A Kubernetes
//!   Service without a ClusterIP gets no TCP listener.
//! - Collisions on one address and port: HTTP and TCP merge into a sniffed listener (HTTP
//!   chain for sniffed HTTP, TCP chains for the rest); a sniffed port replaces an HTTP-only
//!   listener; a second TCP chain with the same match is dropped (the first service wins).
//! - A Sidecar's egress listeners with a port are built first; the catch-all listener then
//!   adds nothing to the addresses and ports they took.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener,
};
use ipnet::IpNet;

use super::build::{self, Routes};
use super::clusters::{BLACKHOLE, PASSTHROUGH};
use super::http_routes::RouteCtx;
use super::tcp_routes;
use super::{outbound_cluster_name, PROXY_PORTS};
use crate::config::istio::names::hosts_match;
use crate::networking::VirtualServiceRule;
use crate::registry::{
    MeshSnapshot, Protocol, ProxyInfo, ProxyScope, Resolution, Service, ServicePort,
};

/// How a listener handles its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// HTTP connection manager only.
    Http,
    /// TCP proxy only.
    Tcp,
    /// Sniffed: HTTP for detected HTTP, TCP otherwise.
    Auto,
}

impl Class {
    fn of(protocol: Protocol) -> Class {
        if protocol.is_http() {
            Class::Http
        } else if protocol == Protocol::Auto {
            Class::Auto
        } else {
            Class::Tcp
        }
    }
}

/// A TCP chain of a listener: its match (empty: everything) and its `tcp_proxy`.
#[derive(Clone, Debug)]
struct TcpChain {
    name: String,
    matcher: FilterChainMatch,
    filter: Filter,
}

/// One listener being built.
#[derive(Clone, Debug)]
struct Entry {
    address: IpAddr,
    port: u16,
    class: Class,
    /// Name of the HTTP chain (HTTP and sniffed listeners).
    http_chain: String,
    tcp: Vec<TcpChain>,
    /// Taken by an egress listener with a port: the catch-all adds nothing.
    locked: bool,
}

impl Entry {
    /// Adds chains whose match is not taken yet (Envoy rejects duplicates: the first wins).
    fn add_tcp(&mut self, chains: Vec<TcpChain>) {
        for chain in chains {
            if !self.tcp.iter().any(|c| c.matcher == chain.matcher) {
                self.tcp.push(chain);
            }
        }
    }
}

/// What one service port asks for.
struct Want<'a> {
    svc: &'a Service,
    port: &'a ServicePort,
    class: Class,
    address: IpAddr,
    cidr: Option<IpNet>,
}

/// The TCP chains of a service port (VirtualService `tcp` and `tls` routes, see
/// [`tcp_routes`], else the service's cluster), limited to `cidr` where a chain names no
/// subnet of its own.
fn tcp_chains(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    vses: &[&VirtualServiceRule],
    want: &Want<'_>,
) -> Vec<TcpChain> {
    let routed = vses.iter().any(|vs| {
        vs.spec
            .hosts
            .iter()
            .any(|h| hosts_match(h, &want.svc.hostname))
    });
    let chains = if routed {
        let ctx = RouteCtx::new(mesh, proxy, want.port.port);
        tcp_routes::chains(&ctx, want.svc, want.port, vses)
    } else {
        let cluster = outbound_cluster_name(want.port.port, &want.svc.hostname);
        vec![tcp_routes::TcpChain {
            name: cluster.clone(),
            matcher: None,
            filter: build::tcp_proxy(&cluster),
        }]
    };
    chains
        .into_iter()
        .map(|c| {
            let mut matcher = c.matcher.unwrap_or_default();
            if matcher.prefix_ranges.is_empty() {
                matcher.prefix_ranges.extend(want.cidr.map(|n| CidrRange {
                    address_prefix: n.addr().to_string(),
                    prefix_len: build::u32_value(n.prefix_len().into()),
                }));
            }
            TcpChain {
                name: c.name,
                matcher,
                filter: c.filter,
            }
        })
        .collect()
}

struct Builder<'m> {
    mesh: &'m MeshSnapshot,
    proxy: &'m ProxyInfo,
    vses: Vec<&'m VirtualServiceRule>,
    entries: BTreeMap<(IpAddr, u16), Entry>,
}

impl<'m> Builder<'m> {
    fn add(&mut self, want: Want<'_>) {
        let port = want.port.port;
        let cluster = outbound_cluster_name(port, &want.svc.hostname);
        let key = (want.address, port);
        let fresh = |class: Class, http_chain: String, tcp: Vec<TcpChain>| Entry {
            address: want.address,
            port,
            class,
            http_chain,
            tcp,
            locked: false,
        };
        if self.entries.get(&key).is_some_and(|e| e.locked) {
            return;
        }
        let tcp = if want.class == Class::Http {
            Vec::new()
        } else {
            tcp_chains(self.mesh, self.proxy, &self.vses, &want)
        };
        let Some(cur) = self.entries.get_mut(&key) else {
            let entry = match want.class {
                Class::Http => fresh(Class::Http, format!("{}_{port}", want.address), tcp),
                Class::Tcp => fresh(Class::Tcp, String::new(), tcp),
                Class::Auto => fresh(Class::Auto, format!("{cluster}-http"), tcp),
            };
            self.entries.insert(key, entry);
            return;
        };
        match (want.class, cur.class) {
            (Class::Http, Class::Tcp) => {
                cur.class = Class::Auto;
                cur.http_chain = format!("{}_{port}", want.address);
            }
            (Class::Http, _) | (Class::Auto, Class::Auto) => {}
            (Class::Tcp, Class::Http) | (Class::Auto, Class::Tcp) => {
                cur.class = Class::Auto;
                if cur.http_chain.is_empty() {
                    cur.http_chain = format!("{cluster}-http");
                }
                cur.add_tcp(tcp);
            }
            (Class::Tcp, _) => cur.add_tcp(tcp),
            (Class::Auto, Class::Http) => {
                *cur = fresh(Class::Auto, format!("{cluster}-http"), tcp);
            }
        }
    }

    /// Every listener a service port asks for, given the egress listener's bind address and
    /// protocol.
    fn service_port(
        &mut self,
        svc: &Arc<Service>,
        port: &ServicePort,
        protocol: Protocol,
        bind: Option<IpAddr>,
    ) {
        if PROXY_PORTS.contains(&port.port) || port.protocol == Protocol::Udp {
            return;
        }
        let class = Class::of(protocol);
        let want = |address: IpAddr, cidr: Option<IpNet>| Want {
            svc,
            port,
            class,
            address,
            cidr,
        };
        if class == Class::Http {
            self.add(want(bind.unwrap_or_else(build::any_ip), None));
            return;
        }
        if let Some(bind) = bind {
            self.add(want(bind, None));
            return;
        }
        if !svc.addresses.is_empty() {
            for net in &svc.addresses {
                if net.prefix_len() == net.max_prefix_len() {
                    self.add(want(net.addr(), None));
                } else {
                    self.add(want(build::any_ip(), Some(*net)));
                }
            }
            return;
        }
        if svc.is_kubernetes() {
            return;
        }
        let endpoints = self.mesh.endpoints_of(&svc.key(), port.port);
        if svc.resolution == Resolution::Passthrough
            && (!endpoints.is_empty() || svc.selector.is_some())
        {
            let own = self.proxy.ips.first();
            for ep in endpoints.iter().filter(|e| Some(&e.ip) != own) {
                self.add(want(ep.ip, None));
            }
            return;
        }
        self.add(want(build::any_ip(), None));
    }
}

fn chain(name: &str, matcher: Option<FilterChainMatch>, filter: Filter) -> FilterChain {
    FilterChain {
        name: name.to_string(),
        filter_chain_match: matcher,
        filters: vec![filter],
        ..Default::default()
    }
}

/// The catch-all chain of a listener whose chains do not cover every destination: to the
/// original destination (ALLOW_ANY) or the black hole (REGISTRY_ONLY).
pub fn passthrough_chain(allow_any: bool) -> FilterChain {
    let cluster = if allow_any { PASSTHROUGH } else { BLACKHOLE };
    chain("PassthroughFilterChain", None, build::tcp_proxy(cluster))
}

fn render(entry: Entry, allow_any: bool) -> Listener {
    let name = format!("{}_{}", entry.address, entry.port);
    let mut l = Listener {
        name: name.clone(),
        address: Some(build::address(entry.address, entry.port)),
        bind_to_port: build::bool_value(false),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    };
    let rds = || {
        build::http_connection_manager(
            &format!("outbound_0.0.0.0_{}", entry.port),
            Routes::Rds(entry.port.to_string()),
        )
    };
    let sniffed = entry.class == Class::Auto;
    if sniffed {
        l = super::listeners::sniffing(l);
    }
    match entry.class {
        Class::Http => l.filter_chains.push(chain(&entry.http_chain, None, rds())),
        Class::Auto => l.filter_chains.push(chain(
            &entry.http_chain,
            Some(super::listeners::http_match(None)),
            rds(),
        )),
        Class::Tcp => {}
    }
    let mut names = BTreeSet::new();
    if entry.tcp.iter().any(|c| !c.matcher.server_names.is_empty()) {
        l.listener_filters.push(build::tls_inspector());
        l.listener_filters_timeout = Some(super::listeners::detection_timeout());
        l.continue_on_listener_filters_timeout = true;
    }
    for tcp in entry.tcp.iter().cloned() {
        let mut matcher = tcp.matcher;
        if sniffed {
            matcher.transport_protocol = "raw_buffer".to_string();
        }
        let mut name = format!("{}-tcp", tcp.name);
        if !names.insert(name.clone()) {
            name = format!("{}-tcp-{}", tcp.name, names.len());
            names.insert(name.clone());
        }
        let matcher = (matcher != FilterChainMatch::default()).then_some(matcher);
        l.filter_chains.push(chain(&name, matcher, tcp.filter));
    }
    let covered = entry.class == Class::Http
        || entry
            .tcp
            .iter()
            .any(|t| t.matcher.prefix_ranges.is_empty() && t.matcher.server_names.is_empty());
    if !covered {
        l.default_filter_chain = Some(passthrough_chain(allow_any));
    }
    l
}

/// The outbound listeners of a proxy's scope, sorted by name.
pub fn listeners(mesh: &MeshSnapshot, proxy: &ProxyInfo, scope: &ProxyScope) -> Vec<Listener> {
    let mut b = Builder {
        mesh,
        proxy,
        vses: mesh.networking.virtual_services_for(proxy),
        entries: BTreeMap::new(),
    };
    for egress in &scope.egress {
        match &egress.port {
            Some(eport) => {
                for svc in &egress.services {
                    for port in svc.ports.iter().filter(|p| p.port == eport.number) {
                        // The listener speaks the egress port's protocol (sniffed when unset).
                        b.service_port(svc, port, eport.protocol, egress.bind);
                    }
                }
            }
            None => {
                b.entries.values_mut().for_each(|e| e.locked = true);
                for svc in &egress.services {
                    for port in &svc.ports {
                        b.service_port(svc, port, port.protocol, egress.bind);
                    }
                }
            }
        }
    }
    let mut out: Vec<Listener> = b
        .entries
        .into_values()
        .map(|e| render(e, scope.allow_any()))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

//! A Service port's outbound TCP filter chains from VirtualServices' `tls` and `tcp` routes, as
//! istiod builds them (`buildSidecarOutboundTCPTLSFilterChainOpts`):
//!
//! - On TLS and HTTPS ports, each `tls` match that applies to the proxy (`port`,
//!   `sourceLabels`, `sourceNamespace`, gateways naming `mesh`) gives a chain matching its
//!   `sniHosts` (`server_names`, read by the TLS inspector) and its `destinationSubnets`, whose
//!   `tcp_proxy` passes the TLS bytes through to the route's destinations; a repeated set of
//!   SNI hosts and subnets is generated once.
//! - Then `tcp` routes: a match with `destinationSubnets` gives a chain for those subnets; a
//!   route without matches, or a match without subnets, gives the last chain (no match).
//! - Without such a catch-all, the Service's own cluster ends the list.
//!
//! One destination: `tcp_proxy` to its cluster (stat prefix the cluster); several:
//! `weighted_clusters` (zero weights left out), stat prefix `NAME.NAMESPACE` of the
//! VirtualService.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChainMatch};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::{weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster},
    TcpProxy,
};
use envoy_types::util::pack_any;

use super::build;
use super::http_routes::RouteCtx;
use super::outbound_cluster_name;
use crate::config::istio::names::hosts_match;
use crate::config::istio::virtual_service::RouteDestination;
use crate::networking::{VirtualServiceRule, MESH_GATEWAY};
use crate::registry::{ProxyInfo, Service, ServicePort};

/// One outbound TCP chain: its match (`None`: the catch-all) and its `tcp_proxy`.
pub struct TcpChain {
    /// A name for the chain.
    pub name: String,
    /// SNI hosts and destination subnets (`None` for the catch-all chain).
    pub matcher: Option<FilterChainMatch>,
    /// The `tcp_proxy` filter.
    pub filter: Filter,
}

/// Istio's `matchTCP`/`matchTLS` static predicates.
fn applies(
    port: Option<u32>,
    labels: &std::collections::BTreeMap<String, String>,
    namespace: &str,
    gateways: &[String],
    proxy: &ProxyInfo,
    listen_port: u16,
) -> bool {
    let gateway_ok = gateways.is_empty() || gateways.iter().any(|g| g == MESH_GATEWAY);
    let labels_ok = labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v));
    let port_ok = port.is_none_or(|p| p == 0 || p == u32::from(listen_port));
    let ns_ok = namespace.is_empty() || proxy.namespace.as_deref() == Some(namespace);
    gateway_ok && labels_ok && port_ok && ns_ok
}

/// A CIDR range of an IP or subnet (validated by the store).
fn cidr(subnet: &str) -> Option<CidrRange> {
    let net: ipnet::IpNet = match subnet.parse() {
        Ok(n) => n,
        Err(_) => ipnet::IpNet::from(subnet.parse::<std::net::IpAddr>().ok()?),
    };
    Some(CidrRange {
        address_prefix: net.network().to_string(),
        prefix_len: build::u32_value(u32::from(net.prefix_len())),
    })
}

fn tcp_proxy_filter(proxy: TcpProxy) -> Filter {
    build::network_filter("envoy.filters.network.tcp_proxy", pack_any(proxy))
}

/// Istio's `buildOutboundNetworkFilters`: one cluster or weighted clusters.
fn route_filter(
    ctx: &RouteCtx<'_>,
    vs: &VirtualServiceRule,
    routes: &[RouteDestination],
) -> (String, Filter) {
    let cluster_of = |d: &RouteDestination| {
        d.destination
            .as_ref()
            .map(|dst| ctx.destination_cluster(dst))
            .unwrap_or_default()
    };
    if let [only] = routes {
        let cluster = cluster_of(only);
        return (cluster.clone(), build::tcp_proxy(&cluster));
    }
    let clusters: Vec<ClusterWeight> = routes
        .iter()
        .filter(|d| d.weight > 0)
        .map(|d| ClusterWeight {
            name: cluster_of(d),
            weight: u32::try_from(d.weight).unwrap_or(0),
            ..Default::default()
        })
        .collect();
    let stat_prefix = format!("{}.{}", vs.name, vs.namespace);
    let filter = tcp_proxy_filter(TcpProxy {
        stat_prefix: stat_prefix.clone(),
        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters,
        })),
        ..Default::default()
    });
    (stat_prefix, filter)
}

/// The outbound TCP chains of a Service's TCP, TLS or sniffed port for `ctx`'s proxy.
pub fn chains(
    ctx: &RouteCtx<'_>,
    svc: &Service,
    sp: &ServicePort,
    vses: &[&VirtualServiceRule],
) -> Vec<TcpChain> {
    let mine: Vec<&VirtualServiceRule> = vses
        .iter()
        .copied()
        .filter(|vs| vs.spec.hosts.iter().any(|h| hosts_match(h, &svc.hostname)))
        .collect();
    let mut out = Vec::new();
    if matches!(
        sp.protocol,
        crate::registry::Protocol::Tls | crate::registry::Protocol::Https
    ) {
        let mut seen = BTreeSet::new();
        for vs in &mine {
            for tls in &vs.spec.tls {
                for m in &tls.matches {
                    if !applies(
                        m.port,
                        &m.source_labels,
                        &m.source_namespace,
                        &m.gateways,
                        ctx.proxy,
                        sp.port,
                    ) {
                        continue;
                    }
                    let key = (m.sni_hosts.clone(), m.destination_subnets.clone());
                    if !seen.insert(key) {
                        continue;
                    }
                    let (name, filter) = route_filter(ctx, vs, &tls.route);
                    out.push(TcpChain {
                        name,
                        matcher: Some(FilterChainMatch {
                            server_names: m.sni_hosts.clone(),
                            prefix_ranges: m
                                .destination_subnets
                                .iter()
                                .filter_map(|s| cidr(s))
                                .collect(),
                            ..Default::default()
                        }),
                        filter,
                    });
                }
            }
        }
    }
    let mut catch_all = false;
    'vs: for vs in &mine {
        for tcp in &vs.spec.tcp {
            if tcp.matches.is_empty() {
                let (name, filter) = route_filter(ctx, vs, &tcp.route);
                out.push(TcpChain {
                    name,
                    matcher: None,
                    filter,
                });
                catch_all = true;
                break 'vs;
            }
            for m in &tcp.matches {
                if !applies(
                    m.port,
                    &m.source_labels,
                    &m.source_namespace,
                    &m.gateways,
                    ctx.proxy,
                    sp.port,
                ) {
                    continue;
                }
                let (name, filter) = route_filter(ctx, vs, &tcp.route);
                if m.destination_subnets.is_empty() {
                    out.push(TcpChain {
                        name,
                        matcher: None,
                        filter,
                    });
                    catch_all = true;
                    break 'vs;
                }
                out.push(TcpChain {
                    name,
                    matcher: Some(FilterChainMatch {
                        prefix_ranges: m
                            .destination_subnets
                            .iter()
                            .filter_map(|s| cidr(s))
                            .collect(),
                        ..Default::default()
                    }),
                    filter,
                });
            }
        }
    }
    if !catch_all {
        let cluster = outbound_cluster_name(sp.port, &svc.hostname);
        out.push(TcpChain {
            name: cluster.clone(),
            matcher: None,
            filter: build::tcp_proxy(&cluster),
        });
    }
    out
}

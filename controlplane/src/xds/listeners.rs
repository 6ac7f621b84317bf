//! LDS: the full set of listeners for a proxy.

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter_chain_match_predicate::{MatchSet, Rule},
    FilterChain, FilterChainMatch, Listener, ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use std::collections::{BTreeMap, BTreeSet};

use super::build::{self, Routes};
use super::clusters::{BLACKHOLE, INBOUND_PASSTHROUGH};
use super::outbound_listeners;
use super::routes::inbound_route;
use super::tls;
use super::{inbound_cluster_name, inbound_ports};
use crate::authz;
use crate::registry::{MeshSnapshot, Protocol, ProxyInfo, ProxyScope};

/// Outbound capture port.
pub const OUTBOUND_PORT: u16 = 15001;
/// Inbound capture port.
pub const INBOUND_PORT: u16 = 15006;
/// Application protocols the HTTP inspector reports for plaintext HTTP.
const HTTP_PROTOCOLS: [&str; 2] = ["http/1.1", "h2c"];
/// How long a sniffed listener waits for the client's first bytes before deciding on TCP
/// (server-first protocols), in milliseconds: Istio's former `protocolDetectionTimeout`
/// default, and what `mesh-proxy` waits (`--protocol-detection-timeout`). Envoy honours this
/// value; with the former 1 s, a server-first banner through an Envoy sidecar came a second
/// later than through `mesh-proxy` (found by the Envoy side-by-side tests).
const DETECTION_TIMEOUT_MS: i32 = 100;

fn chain(
    name: &str,
    matcher: Option<FilterChainMatch>,
    filter: envoy_types::pb::envoy::config::listener::v3::Filter,
) -> FilterChain {
    FilterChain {
        name: name.to_string(),
        filter_chain_match: matcher,
        filters: vec![filter],
        ..Default::default()
    }
}

fn port_match(port: u16) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: build::u32_value(port.into()),
        ..Default::default()
    }
}

/// A match on sniffed plaintext HTTP (optionally on a destination port).
pub(super) fn http_match(port: Option<u16>) -> FilterChainMatch {
    FilterChainMatch {
        application_protocols: HTTP_PROTOCOLS.iter().map(|s| s.to_string()).collect(),
        ..plaintext_match(port)
    }
}

/// A match on plaintext (`raw_buffer`) connections (optionally on a destination port): the
/// TCP half of a sniffed port. Envoy matches level by level without backtracking, so this
/// chain must name the transport protocol as the HTTP half does: a chain that leaves it
/// empty is never reached once the `raw_buffer` branch is taken, and a connection that is
/// not HTTP (a server-first protocol) would find no chain.
pub(super) fn plaintext_match(port: Option<u16>) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: port.and_then(|p| build::u32_value(p.into())),
        transport_protocol: "raw_buffer".to_string(),
        ..Default::default()
    }
}

/// How long listener filters (the HTTP and TLS inspectors) wait for the client's first bytes.
pub(super) fn detection_timeout() -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: 0,
        nanos: DETECTION_TIMEOUT_MS * 1_000_000,
    }
}

/// Adds the HTTP inspector and its detection timeout.
pub(super) fn sniffing(mut listener: Listener) -> Listener {
    listener.listener_filters.push(build::http_inspector());
    listener.listener_filters_timeout = Some(detection_timeout());
    listener.continue_on_listener_filters_timeout = true;
    listener
}

/// Turns the HTTP inspector of a finished listener off for the destination ports where no
/// chain matches on an HTTP application protocol, as istiod does (`filter_disabled`, one
/// `[port, port+1)` range per port, OR-ed): a connection to a declared TCP or HTTP port is
/// never sniffed. Sniffing it would make Envoy wait for the client's bytes (a server-first
/// protocol waits for the detection timeout) and close a client that half-closes before the
/// inspector is done (`downstream_listener_filter_remote_close`).
fn inspect_only_where_needed(listener: &mut Listener) {
    let mut needs_http: BTreeMap<u32, bool> = BTreeMap::new();
    for chain in &listener.filter_chains {
        let m = chain.filter_chain_match.clone().unwrap_or_default();
        let port = m.destination_port.map_or(0, |p| p.value);
        let http = m
            .application_protocols
            .iter()
            .any(|p| HTTP_PROTOCOLS.contains(&p.as_str()));
        *needs_http.entry(port).or_default() |= http;
    }
    let off: BTreeSet<u32> = needs_http
        .into_iter()
        .filter(|(_, http)| !http)
        .map(|(port, _)| port)
        .collect();
    let mut ranges: Vec<ListenerFilterChainMatchPredicate> = off
        .into_iter()
        .map(|p| ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range {
                start: i32::try_from(p).unwrap_or(i32::MAX),
                end: i32::try_from(p + 1).unwrap_or(i32::MAX),
            })),
        })
        .collect();
    let predicate = match ranges.len() {
        0 => return,
        1 => ranges.remove(0),
        _ => ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet { rules: ranges })),
        },
    };
    let inspector = build::http_inspector().name;
    for f in &mut listener.listener_filters {
        if f.name == inspector {
            f.filter_disabled = Some(predicate.clone());
        }
    }
}

/// `virtualOutbound`: 0.0.0.0:15001, hands connections to the listener of their original
/// destination; a chain for 15001 itself to the black hole; otherwise passthrough (ALLOW_ANY)
/// or the black hole (REGISTRY_ONLY).
pub fn virtual_outbound(allow_any: bool) -> Listener {
    Listener {
        name: "virtualOutbound".to_string(),
        address: Some(build::address(build::any_ip(), OUTBOUND_PORT)),
        use_original_dst: build::bool_value(true),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![chain(
            "virtualOutbound-blackhole",
            Some(port_match(OUTBOUND_PORT)),
            build::tcp_proxy(BLACKHOLE),
        )],
        default_filter_chain: Some(outbound_listeners::passthrough_chain(allow_any)),
        ..Default::default()
    }
}

/// `virtualInbound`: 0.0.0.0:15006, a chain per inbound port and transport (HTTP with an
/// inline route, TCP, or both for sniffed ports), 15006 itself to the black hole, sniffed
/// HTTP to any other port through `virtualInbound-catchall-http`, the rest passed through.
///
/// Each port's PeerAuthentication mode ([`tls::inbound_accepts`]) decides its chains: mutual
/// TLS chains (`transport_protocol: tls`, Istio's `DownstreamTlsContext`), plaintext chains
/// (`raw_buffer` when TLS chains sit beside them: PERMISSIVE, told apart by the TLS
/// inspector), or both. With mutual TLS in play the passthrough is a chain of its own, not
/// the default chain, so that plaintext to a STRICT port finds no chain and is closed.
pub fn virtual_inbound(mesh: &MeshSnapshot, proxy: &ProxyInfo) -> Listener {
    let mut chains = Vec::new();
    let mut any_tls = false;
    for p in inbound_ports(mesh, proxy) {
        let cluster = inbound_cluster_name(p.port);
        let accepts = tls::inbound_accepts(mesh, proxy, Some(p.port));
        any_tls |= accepts.mtls;
        let hcm = || {
            tls::with_xfcc(build::http_connection_manager(
                &format!("inbound_0.0.0.0_{}", p.port),
                Routes::Inline(Box::new(inbound_route(
                    &cluster,
                    &format!("inbound|http|{}", p.port),
                    &cluster,
                ))),
            ))
        };
        if accepts.mtls {
            let port = Some(p.port);
            if p.protocol.is_http() {
                chains.push(mtls_chain(
                    &format!("{cluster}-mtls-http"),
                    tls::tls_match(port, &[]),
                    hcm(),
                    true,
                ));
            } else if p.protocol == Protocol::Auto {
                let m = tls::tls_match(port, &tls::INBOUND_TLS_HTTP_ALPN);
                chains.push(mtls_chain(&format!("{cluster}-mtls-http"), m, hcm(), true));
                let m = tls::tls_match(port, &[]);
                chains.push(mtls_chain(
                    &format!("{cluster}-mtls-tcp"),
                    m,
                    build::tcp_proxy(&cluster),
                    false,
                ));
            } else {
                let m = tls::tls_match(port, &[]);
                chains.push(mtls_chain(
                    &format!("{cluster}-mtls-tcp"),
                    m,
                    build::tcp_proxy(&cluster),
                    false,
                ));
            }
        }
        if !accepts.plaintext {
            continue;
        }
        // Beside TLS chains, plaintext ones must name their transport.
        let exact = |port| match accepts.mtls {
            true => plaintext_match(Some(port)),
            false => port_match(port),
        };
        if p.protocol.is_http() {
            chains.push(chain(
                &format!("{cluster}-http"),
                Some(exact(p.port)),
                hcm(),
            ));
        } else if p.protocol == Protocol::Auto {
            chains.push(chain(
                &format!("{cluster}-http"),
                Some(http_match(Some(p.port))),
                hcm(),
            ));
            chains.push(chain(
                &format!("{cluster}-tcp"),
                Some(plaintext_match(Some(p.port))),
                build::tcp_proxy(&cluster),
            ));
        } else {
            chains.push(chain(
                &format!("{cluster}-tcp"),
                Some(exact(p.port)),
                build::tcp_proxy(&cluster),
            ));
        }
    }
    chains.push(chain(
        "virtualInbound-blackhole",
        Some(port_match(INBOUND_PORT)),
        build::tcp_proxy(BLACKHOLE),
    ));
    let workload = tls::inbound_accepts(mesh, proxy, None);
    any_tls |= workload.mtls;
    let passthrough_hcm = || {
        tls::with_xfcc(build::http_connection_manager(
            "InboundPassthroughCluster",
            Routes::Inline(Box::new(inbound_route(
                INBOUND_PASSTHROUGH,
                "inbound|http|0",
                INBOUND_PASSTHROUGH,
            ))),
        ))
    };
    if workload.mtls {
        chains.push(mtls_chain(
            "virtualInbound-mtls-catchall-http",
            tls::tls_match(None, &tls::INBOUND_TLS_HTTP_ALPN),
            passthrough_hcm(),
            true,
        ));
        chains.push(mtls_chain(
            "virtualInbound-mtls",
            tls::tls_match(None, &[]),
            build::tcp_proxy(INBOUND_PASSTHROUGH),
            false,
        ));
    }
    let mut default_filter_chain = None;
    if workload.plaintext {
        chains.push(chain(
            "virtualInbound-catchall-http",
            Some(http_match(None)),
            passthrough_hcm(),
        ));
        let passthrough = build::tcp_proxy(INBOUND_PASSTHROUGH);
        if any_tls {
            chains.push(chain(
                "virtualInbound",
                Some(plaintext_match(None)),
                passthrough,
            ));
        } else {
            default_filter_chain = Some(chain("virtualInbound", None, passthrough));
        }
    }
    let mut listener = sniffing(Listener {
        name: "virtualInbound".to_string(),
        address: Some(build::address(build::any_ip(), INBOUND_PORT)),
        traffic_direction: TrafficDirection::Inbound as i32,
        filter_chains: chains,
        default_filter_chain,
        ..Default::default()
    });
    if any_tls {
        listener.listener_filters.insert(0, build::tls_inspector());
    }
    listener.listener_filters.insert(0, build::original_dst());
    inspect_only_where_needed(&mut listener);
    let selected = mesh
        .authorization
        .select(proxy.namespace.as_deref(), &proxy.labels);
    if !selected.is_empty() {
        let filters = authz::InboundFilters::new(&selected, &mesh.cluster_domain);
        authz::apply_inbound(&mut listener, &filters, "virtualInbound-blackhole");
    }
    listener
}

/// A chain that terminates Istio's mutual TLS.
fn mtls_chain(
    name: &str,
    matcher: FilterChainMatch,
    filter: envoy_types::pb::envoy::config::listener::v3::Filter,
    http: bool,
) -> FilterChain {
    FilterChain {
        transport_socket: Some(tls::inbound_mtls(http)),
        ..chain(name, Some(matcher), filter)
    }
}

/// Every listener of a proxy: the two capture listeners first, then the per-port outbound ones
/// of its scope ([`outbound_listeners`]), sorted by name.
pub fn listeners(mesh: &MeshSnapshot, proxy: &ProxyInfo) -> Vec<Listener> {
    let scope = ProxyScope::new(mesh, proxy);
    let mut all = vec![
        virtual_outbound(scope.allow_any()),
        virtual_inbound(mesh, proxy),
    ];
    all.extend(outbound_listeners::listeners(mesh, proxy, &scope));
    for l in &mut all {
        authz::normalize_paths(l, mesh.authorization.path_normalization);
    }
    if let Some(ns) = proxy.namespace.as_deref() {
        let resolved =
            crate::telemetry::Telemetries::build(&mesh.config).resolve(ns, &proxy.labels);
        let service = format!("{}.{ns}", canonical_service(proxy));
        for l in &mut all {
            let side = if l.name == "virtualInbound" {
                &resolved.server
            } else {
                &resolved.client
            };
            crate::telemetry::apply(l, side, &service);
        }
    }
    all
}

/// The workload's canonical service, as Istio derives it from its labels.
fn canonical_service(proxy: &ProxyInfo) -> &str {
    [
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ]
    .iter()
    .find_map(|k| proxy.labels.get(*k))
    .map_or("unknown", String::as_str)
}

//! The outbound cluster of a service port, by the service's resolution, as istiod's
//! `convertResolution` and `buildCluster` shape it:
//!
//! - client-side load balancing: `EDS` ([`super::clusters::outbound`]);
//! - NONE (passthrough): `ORIGINAL_DST` with `CLUSTER_PROVIDED` (the port's `targetPort`
//!   override is not applied);
//! - DNS: `STRICT_DNS`, DNS_ROUND_ROBIN: `LOGICAL_DNS`; both with the endpoints inline
//!   (`load_assignment`, host names or IPs, resolved by the proxy), the lookup family of the
//!   proxy's addresses (`V4_ONLY` unless they are all IPv6), Istio's default refresh rate
//!   (60 s) and `respect_dns_ttl`.
//!
//! A MESH_EXTERNAL service's cluster carries Istio's metadata `istio.external: true`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{DiscoveryType, DnsLookupFamily, LbPolicy},
    Cluster,
};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::core::v3::{Locality as EnvoyLocality, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint,
    LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::{value::Kind, Value};

use super::build;
use super::cluster_policy;
use super::clusters::{base, outbound_with_policy};
use crate::config::istio::destination_rule::TrafficPolicy;
use crate::registry::{Locality, MeshSnapshot, ProxyInfo, Resolution, Service, ServicePort};

/// Istio's mesh default `dnsRefreshRate`.
pub const DNS_REFRESH_RATE_S: i64 = 60;

/// `filter_metadata[filter][key] = value`.
pub fn metadata_field(metadata: &mut Option<Metadata>, filter: &str, key: &str, value: Kind) {
    let m = metadata.get_or_insert_with(Metadata::default);
    m.filter_metadata
        .entry(filter.to_string())
        .or_default()
        .fields
        .insert(key.to_string(), Value { kind: Some(value) });
}

/// The outbound cluster `name` of `svc`'s `port` (or of one of its subsets: the endpoints
/// whose labels include `subset`'s), for `proxy`.
pub fn outbound_cluster(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    svc: &Service,
    port: &ServicePort,
    name: &str,
    subset: Option<&BTreeMap<String, String>>,
    policy: Option<&TrafficPolicy>,
) -> Cluster {
    let mut cluster = match svc.resolution {
        Resolution::ClientSideLb => {
            mark_external(outbound_with_policy(name, port.protocol, policy), svc)
        }
        Resolution::Passthrough => {
            base(name, DiscoveryType::OriginalDst, LbPolicy::ClusterProvided)
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            dns_cluster(mesh, proxy, svc, port, name, subset)
        }
    };
    let applied = cluster_policy::apply(&mut cluster, port.protocol, policy);
    cluster_policy::finish(&mut cluster, applied);
    mark_external(cluster, svc)
}

/// Adds Istio's `istio.external` metadata to the cluster of a MESH_EXTERNAL service.
fn mark_external(mut cluster: Cluster, svc: &Service) -> Cluster {
    if svc.mesh_external {
        metadata_field(
            &mut cluster.metadata,
            "istio",
            "external",
            Kind::BoolValue(true),
        );
    }
    cluster
}

#[allow(deprecated)] // dns_refresh_rate, respect_dns_ttl: what istiod sends
fn dns_cluster(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    svc: &Service,
    port: &ServicePort,
    name: &str,
    subset: Option<&BTreeMap<String, String>>,
) -> Cluster {
    let selected = |labels: &BTreeMap<String, String>| {
        subset.is_none_or(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    let logical = svc.resolution == Resolution::DnsRoundRobin;
    let discovery = if logical {
        DiscoveryType::LogicalDns
    } else {
        DiscoveryType::StrictDns
    };
    let mut c = base(name, discovery, LbPolicy::RoundRobin);
    let family = if !proxy.ips.is_empty() && proxy.ips.iter().all(|ip| ip.is_ipv6()) {
        DnsLookupFamily::V6Only
    } else {
        DnsLookupFamily::V4Only
    };
    c.dns_lookup_family = family as i32;
    c.dns_refresh_rate = Some(build::seconds(DNS_REFRESH_RATE_S));
    c.respect_dns_ttl = true;
    let key = svc.key();
    // (locality, host, port, weight): IPs of selected workloads, then host names.
    let mut targets: Vec<(Locality, String, u16, u32)> = mesh
        .endpoints_of(&key, port.port)
        .iter()
        .filter(|e| e.healthy && selected(&e.labels))
        .map(|e| (e.locality.clone(), e.ip.to_string(), e.port, e.weight))
        .chain(
            mesh.dns_endpoints_of(&key, port.port)
                .iter()
                .filter(|e| selected(&e.labels))
                .map(|e| (e.locality.clone(), e.host.clone(), e.port, e.weight)),
        )
        .collect();
    if logical {
        // Envoy wants exactly one endpoint; validation allows one at most.
        targets.truncate(1);
    }
    c.load_assignment = Some(dns_load_assignment(name, targets));
    c
}

fn dns_load_assignment(
    name: &str,
    targets: Vec<(Locality, String, u16, u32)>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<Locality, Vec<LbEndpoint>> = BTreeMap::new();
    for (locality, host, port, weight) in targets {
        let address = Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: host,
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port.into())),
                ..Default::default()
            })),
        };
        by_locality.entry(locality).or_default().push(LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                address: Some(address),
                ..Default::default()
            })),
            load_balancing_weight: build::u32_value(weight.max(1)),
            ..Default::default()
        });
    }
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: by_locality
            .into_iter()
            .map(|(l, lb_endpoints)| LocalityLbEndpoints {
                load_balancing_weight: build::u32_value(
                    lb_endpoints
                        .iter()
                        .filter_map(|e| e.load_balancing_weight.map(|w| w.value))
                        .sum(),
                ),
                locality: Some(EnvoyLocality {
                    region: l.region,
                    zone: l.zone,
                    sub_zone: l.subzone,
                }),
                lb_endpoints,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

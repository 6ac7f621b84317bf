//! EDS: one `ClusterLoadAssignment` per requested outbound cluster (Service port, or subset
//! of it).

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality as EnvoyLocality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint,
    LocalityLbEndpoints,
};

use super::{build, outbound_ports, parse_outbound_cluster_name};
use crate::registry::{Endpoint, Locality, MeshSnapshot, ProxyInfo, Service, ServiceKey};

/// The load assignment of one cluster: endpoints grouped by locality (always set, possibly
/// empty strings, since gRPC rejects an unset one), in locality order.
pub fn load_assignment(cluster: &str, endpoints: &[Endpoint]) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&Locality, Vec<LbEndpoint>> = BTreeMap::new();
    for ep in endpoints {
        let health = if ep.healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        by_locality
            .entry(&ep.locality)
            .or_default()
            .push(LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                    address: Some(build::address(ep.ip, ep.port)),
                    ..Default::default()
                })),
                health_status: health as i32,
                load_balancing_weight: build::u32_value(1),
                ..Default::default()
            });
    }
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: by_locality
            .into_iter()
            .map(|(l, lb_endpoints)| LocalityLbEndpoints {
                // As Istio: the locality weighs as many endpoints as it holds (gRPC ignores
                // localities of weight 0).
                load_balancing_weight: build::u32_value(
                    u32::try_from(lb_endpoints.len()).unwrap_or(u32::MAX),
                ),
                locality: Some(EnvoyLocality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    sub_zone: l.subzone.clone(),
                }),
                lb_endpoints,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The load assignments of the requested clusters that exist, in name order: for
/// `outbound|PORT||HOST` every endpoint of the Service port, for `outbound|PORT|SUBSET|HOST`
/// those whose labels include the subset's (from the DestinationRule that applies to the
/// proxy).
pub fn endpoints(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    names: &BTreeSet<String>,
) -> Vec<ClusterLoadAssignment> {
    let by_host: BTreeMap<&str, &Service> = mesh
        .services
        .values()
        .map(|s| (s.hostname.as_str(), &**s))
        .collect();
    let mut out = Vec::new();
    for name in names {
        let Some((port, subset, host)) = parse_outbound_cluster_name(name) else {
            continue;
        };
        let Some(svc) = by_host.get(host) else {
            continue;
        };
        if !outbound_ports(mesh).any(|(s, p)| s.hostname == svc.hostname && p.port == port) {
            continue;
        }
        let key = ServiceKey {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
        };
        let all = mesh.endpoints_of(&key, port);
        if subset.is_empty() {
            out.push(load_assignment(name, all));
            continue;
        }
        let Some(labels) = mesh
            .networking
            .destination_rule(proxy, host, &svc.namespace)
            .and_then(|r| r.subset(subset).map(|s| s.labels.clone()))
        else {
            continue;
        };
        let selected: Vec<Endpoint> = all
            .iter()
            .filter(|e| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
            .cloned()
            .collect();
        out.push(load_assignment(name, &selected));
    }
    out
}

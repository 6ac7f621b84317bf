//! EDS: one `ClusterLoadAssignment` per requested outbound cluster.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality as EnvoyLocality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint,
    LocalityLbEndpoints,
};

use super::{build, outbound_cluster_name, outbound_ports};
use crate::registry::{Endpoint, Locality, MeshSnapshot};

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

/// The load assignments of the requested clusters that exist, in name order.
pub fn endpoints(mesh: &MeshSnapshot, names: &BTreeSet<String>) -> Vec<ClusterLoadAssignment> {
    let mut out = BTreeMap::new();
    for (svc, port) in outbound_ports(mesh) {
        let name = outbound_cluster_name(port.port, &svc.hostname);
        if names.contains(&name) && !out.contains_key(&name) {
            let key = crate::registry::ServiceKey {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
            };
            let cla = load_assignment(&name, mesh.endpoints_of(&key, port.port));
            out.insert(name, cla);
        }
    }
    out.into_values().collect()
}

//! Cluster load assignments (EDS, or inline in a `STATIC` cluster), localities flattened.
//!
//! Ignored fields: `ClusterLoadAssignment.policy.{overprovisioning_factor,
//! endpoint_stale_after, weighted_priority_health}`, `LocalityLbEndpoints.{metadata,
//! load_balancing_weight, proximity}` (locality weights only matter with locality-weighted load
//! balancing, which the proxy does not do), `LbEndpoint.metadata` other than
//! `envoy.transport_socket_match` and the telemetry keys of `istio` (`workload`, `app`,
//! `version`), `Endpoint.{hostname, health_check_config, observability_name}`.
//!
//! Telemetry metadata is read as Istio's sidecars read it: a `workload` value that is not a
//! string of at least five `;`-separated fields is ignored (the peer stays unknown), never
//! rejected, since it only labels metrics.

use envoy_types::pb::envoy::config::core::v3::{HealthStatus as PbHealth, Locality, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{self as pb, lb_endpoint};
use envoy_types::pb::google::protobuf::value::Kind;

use super::{address, reject_set, ConvertError, Within};
use crate::model::{ClusterLoadAssignment, Endpoint, EndpointWorkload, HealthStatus, ResourceType};

/// An EDS resource.
impl TryFrom<pb::ClusterLoadAssignment> for ClusterLoadAssignment {
    type Error = ConvertError;

    fn try_from(proto: pb::ClusterLoadAssignment) -> Result<Self, ConvertError> {
        let name = proto.cluster_name.clone();
        convert_cla(proto).map_err(|e| e.in_resource(ResourceType::Endpoint, &name))
    }
}

/// A load assignment, EDS or inline.
pub(super) fn convert_cla(
    proto: pb::ClusterLoadAssignment,
) -> Result<ClusterLoadAssignment, ConvertError> {
    if proto.cluster_name.is_empty() {
        return Err(ConvertError::missing("cluster_name"));
    }
    reject_set!(proto, named_endpoints);
    if let Some(policy) = &proto.policy {
        reject_set!(policy, drop_overloads);
    }
    let mut endpoints = Vec::new();
    for (i, group) in proto.endpoints.into_iter().enumerate() {
        locality_endpoints(group, &mut endpoints).at_index("endpoints", i)?;
    }
    Ok(ClusterLoadAssignment {
        cluster_name: proto.cluster_name,
        endpoints,
    })
}

fn locality_endpoints(
    group: pb::LocalityLbEndpoints,
    out: &mut Vec<Endpoint>,
) -> Result<(), ConvertError> {
    reject_set!(group, lb_config);
    let locality = locality(group.locality.as_ref());
    for (i, lb) in group.lb_endpoints.into_iter().enumerate() {
        let mut endpoint = lb_endpoint(lb, &locality).at_index("lb_endpoints", i)?;
        endpoint.priority = group.priority;
        out.push(endpoint);
    }
    Ok(())
}

/// `region/zone/subzone`, or empty when no part is set.
fn locality(locality: Option<&Locality>) -> String {
    match locality {
        Some(l) if !(l.region.is_empty() && l.zone.is_empty() && l.sub_zone.is_empty()) => {
            format!("{}/{}/{}", l.region, l.zone, l.sub_zone)
        }
        _ => String::new(),
    }
}

fn lb_endpoint(lb: pb::LbEndpoint, locality: &str) -> Result<Endpoint, ConvertError> {
    let endpoint = match &lb.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(e)) => e,
        Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
            return Err(ConvertError::unsupported("endpoint_name"))
        }
        None => return Err(ConvertError::missing("endpoint")),
    };
    reject_set!(endpoint, additional_addresses);
    let address = address(endpoint.address.as_ref())
        .at("address")
        .at("endpoint")?;
    if address.port() == 0 {
        return Err(ConvertError::invalid("port", "0")
            .at("port_value")
            .at("socket_address")
            .at("address")
            .at("endpoint"));
    }
    let weight = match &lb.load_balancing_weight {
        None => 1,
        Some(w) if w.value >= 1 => w.value,
        Some(w) => {
            return Err(
                ConvertError::invalid("weight", w.value.to_string()).at("load_balancing_weight")
            )
        }
    };
    let health = match PbHealth::try_from(lb.health_status) {
        Ok(PbHealth::Unknown | PbHealth::Healthy) => HealthStatus::Healthy,
        Ok(PbHealth::Unhealthy | PbHealth::Draining | PbHealth::Timeout) => HealthStatus::Unhealthy,
        Ok(PbHealth::Degraded) => {
            return Err(ConvertError::unsupported_value("health_status", "DEGRADED"))
        }
        Err(_) => {
            return Err(ConvertError::unsupported_value(
                "health_status",
                lb.health_status.to_string(),
            ))
        }
    };
    Ok(Endpoint {
        address,
        weight,
        health,
        locality: locality.to_string(),
        priority: 0,
        transport_metadata: super::tls::endpoint_metadata(lb.metadata.as_ref()),
        workload: workload(lb.metadata.as_ref()),
    })
}

/// The endpoint's workload from `filter_metadata.istio` (see the module's notes).
fn workload(metadata: Option<&Metadata>) -> Option<EndpointWorkload> {
    let istio = metadata?.filter_metadata.get("istio")?;
    let string = |key: &str| match istio.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    };
    let mut parts = string("workload")?.split(';');
    let mut next = || parts.next().map(str::to_string);
    let (name, namespace, canonical_service, canonical_revision, cluster) =
        (next()?, next()?, next()?, next()?, next()?);
    Some(EndpointWorkload {
        name,
        namespace,
        canonical_service,
        canonical_revision,
        cluster,
        app: string("app").map(str::to_string),
        version: string("version").map(str::to_string),
    })
}

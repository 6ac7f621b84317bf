//! Rendering of load assignments (EDS).

use std::mem::take;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use serde_json::{Map, Value};

use super::{address_json, enum_name, wrapped_u32, Obj, R};

/// Renders a load assignment.
pub fn load_assignment(mut m: ClusterLoadAssignment) -> R {
    fn locality(mut l: Locality) -> R {
        // Always rendered in full: an empty locality is still a set one.
        let mut map = Map::new();
        map.insert("region".into(), Value::String(take(&mut l.region)));
        map.insert("zone".into(), Value::String(take(&mut l.zone)));
        map.insert("sub_zone".into(), Value::String(take(&mut l.sub_zone)));
        Obj::default().done(l, "Locality")?;
        Ok(Value::Object(map))
    }
    fn lb_endpoint(mut e: LbEndpoint) -> R {
        let mut o = Obj::default();
        match e.host_identifier.take() {
            Some(HostIdentifier::Endpoint(mut ep)) => {
                let mut inner = Obj::default();
                inner.msg("address", ep.address.take(), address_json)?;
                o.val("endpoint", Some(inner.done::<Endpoint>(ep, "Endpoint")?));
            }
            other => e.host_identifier = other,
        }
        o.val(
            "health_status",
            enum_name(
                "HealthStatus",
                take(&mut e.health_status),
                HealthStatus::as_str_name,
            )?,
        );
        o.msg(
            "load_balancing_weight",
            e.load_balancing_weight.take(),
            wrapped_u32,
        )?;
        o.msg("metadata", e.metadata.take(), super::route::metadata)?;
        o.done(e, "LbEndpoint")
    }
    fn locality_endpoints(mut l: LocalityLbEndpoints) -> R {
        let mut o = Obj::default();
        o.msg("locality", l.locality.take(), locality)?;
        o.list("lb_endpoints", take(&mut l.lb_endpoints), lb_endpoint)?;
        o.msg(
            "load_balancing_weight",
            l.load_balancing_weight.take(),
            wrapped_u32,
        )?;
        o.done(l, "LocalityLbEndpoints")
    }
    let mut o = Obj::default();
    o.str("cluster_name", take(&mut m.cluster_name));
    o.list("endpoints", take(&mut m.endpoints), locality_endpoints)?;
    o.done(m, "ClusterLoadAssignment")
}

//! Cluster load assignment conversions.

use envoy_types::pb::envoy::config::core::v3::{HealthStatus as PbHealth, Locality};
use envoy_types::pb::envoy::config::endpoint::v3 as ep;

use super::*;
use crate::model::{ClusterLoadAssignment, Endpoint, HealthStatus};

const NAME: &str = "outbound|9080||reviews.default.svc.cluster.local";

fn cla(groups: Vec<ep::LocalityLbEndpoints>) -> ep::ClusterLoadAssignment {
    ep::ClusterLoadAssignment {
        cluster_name: NAME.into(),
        endpoints: groups,
        ..Default::default()
    }
}

fn group(locality: Option<Locality>, endpoints: Vec<ep::LbEndpoint>) -> ep::LocalityLbEndpoints {
    ep::LocalityLbEndpoints {
        locality,
        lb_endpoints: endpoints,
        ..Default::default()
    }
}

fn with_endpoint(f: impl FnOnce(&mut ep::LbEndpoint)) -> ep::ClusterLoadAssignment {
    let mut e = lb_endpoint("10.1.0.1", 9080);
    f(&mut e);
    cla(vec![group(None, vec![e])])
}

#[test]
fn localities_are_flattened() {
    let mut weighted = lb_endpoint("10.1.0.2", 9080);
    weighted.load_balancing_weight = u32v(3);
    weighted.health_status = PbHealth::Healthy as i32;
    let mut draining = lb_endpoint("10.1.0.3", 9080);
    draining.health_status = PbHealth::Draining as i32;
    let mut unhealthy = lb_endpoint("fd00::4", 9080);
    unhealthy.health_status = PbHealth::Unhealthy as i32;
    let zone = Locality {
        region: "eu".into(),
        zone: "eu-1".into(),
        sub_zone: String::new(),
    };
    let converted = ClusterLoadAssignment::try_from(cla(vec![
        group(
            Some(Locality::default()),
            vec![lb_endpoint("10.1.0.1", 9080)],
        ),
        group(Some(zone), vec![weighted, draining, unhealthy]),
    ]))
    .unwrap();
    assert_eq!(converted.cluster_name, NAME);
    let endpoint = |addr: &str, weight, health, locality: &str| Endpoint {
        address: addr.parse().unwrap(),
        weight,
        health,
        locality: locality.into(),
        priority: 0,
        transport_metadata: Default::default(),
        workload: None,
    };
    assert_eq!(
        converted.endpoints,
        vec![
            endpoint("10.1.0.1:9080", 1, HealthStatus::Healthy, ""),
            endpoint("10.1.0.2:9080", 3, HealthStatus::Healthy, "eu/eu-1/"),
            endpoint("10.1.0.3:9080", 1, HealthStatus::Unhealthy, "eu/eu-1/"),
            endpoint("[fd00::4]:9080", 1, HealthStatus::Unhealthy, "eu/eu-1/"),
        ]
    );
}

#[test]
fn empty_assignment_is_valid() {
    let converted = ClusterLoadAssignment::try_from(cla(vec![])).unwrap();
    assert!(converted.endpoints.is_empty());
}

#[test]
fn endpoint_errors() {
    let p = format!("cluster_load_assignment {NAME:?}: endpoints[0]");
    let cases: Vec<(ep::ClusterLoadAssignment, String)> = vec![
        (
            ep::ClusterLoadAssignment::default(),
            "cluster_load_assignment \"\": cluster_name: required field is missing or empty".into(),
        ),
        (
            with_endpoint(|e| {
                e.host_identifier = Some(ep::lb_endpoint::HostIdentifier::Endpoint(ep::Endpoint {
                    address: Some(sock("10.1.0.1", 0)),
                    ..Default::default()
                }))
            }),
            format!(
                "{p}.lb_endpoints[0].endpoint.address.socket_address.port_value: \
                 invalid port \"0\""
            ),
        ),
        (
            with_endpoint(|e| {
                e.host_identifier = Some(ep::lb_endpoint::HostIdentifier::Endpoint(ep::Endpoint {
                    address: Some(sock("reviews.default", 9080)),
                    ..Default::default()
                }))
            }),
            format!(
                "{p}.lb_endpoints[0].endpoint.address.socket_address.address: \
                 invalid IP address \"reviews.default\""
            ),
        ),
        (
            with_endpoint(|e| e.host_identifier = None),
            format!("{p}.lb_endpoints[0].endpoint: required field is missing or empty"),
        ),
        (
            with_endpoint(|e| {
                e.host_identifier = Some(ep::lb_endpoint::HostIdentifier::EndpointName("a".into()))
            }),
            format!("{p}.lb_endpoints[0].endpoint_name: not supported by this proxy"),
        ),
        (
            with_endpoint(|e| e.load_balancing_weight = u32v(0)),
            format!("{p}.lb_endpoints[0].load_balancing_weight: invalid weight \"0\""),
        ),
        (
            with_endpoint(|e| e.health_status = PbHealth::Degraded as i32),
            format!("{p}.lb_endpoints[0].health_status: unsupported value \"DEGRADED\""),
        ),
        (
            cla(vec![ep::LocalityLbEndpoints {
                lb_config: Some(
                    ep::locality_lb_endpoints::LbConfig::LedsClusterLocalityConfig(
                        Default::default(),
                    ),
                ),
                ..Default::default()
            }]),
            format!("{p}.lb_config: not supported by this proxy"),
        ),
    ];
    for (proto, expected) in cases {
        assert_eq!(message(ClusterLoadAssignment::try_from(proto)), expected);
    }
}

#[test]
fn telemetry_metadata_names_the_workload() {
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
    let istio = |fields: &[(&str, &str)]| {
        with_endpoint(|e| {
            e.metadata = Some(Metadata {
                filter_metadata: [(
                    "istio".to_string(),
                    Struct {
                        fields: fields
                            .iter()
                            .map(|(k, v)| {
                                let kind = Some(Kind::StringValue(v.to_string()));
                                (k.to_string(), Value { kind })
                            })
                            .collect(),
                    },
                )]
                .into(),
                ..Default::default()
            })
        })
    };
    let workload = |fields: &[(&str, &str)]| {
        ClusterLoadAssignment::try_from(istio(fields))
            .unwrap()
            .endpoints[0]
            .workload
            .clone()
    };
    let w = workload(&[
        ("workload", "reviews-v1;default;reviews;;Kubernetes"),
        ("app", "reviews"),
        ("version", "v1"),
    ])
    .expect("workload");
    assert_eq!(
        (
            w.name.as_str(),
            w.namespace.as_str(),
            w.canonical_service.as_str()
        ),
        ("reviews-v1", "default", "reviews")
    );
    assert_eq!(
        (w.canonical_revision.as_str(), w.cluster.as_str()),
        ("", "Kubernetes")
    );
    assert_eq!(
        (w.app.as_deref(), w.version.as_deref()),
        (Some("reviews"), Some("v1"))
    );
    // Istio's sidecars ignore what they cannot read; so does the proxy (never a NACK).
    assert_eq!(workload(&[("workload", "reviews-v1;default")]), None);
    assert_eq!(workload(&[("app", "reviews")]), None);
    assert_eq!(workload(&[]), None);
}

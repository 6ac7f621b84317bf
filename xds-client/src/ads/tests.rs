//! The protocol state machine without sockets: what is requested, ACKed, NACKed, kept.

use envoy_types::pb::envoy::config::cluster::v3::{self as cl, cluster};
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

use super::{AdsState, Outcome};
use crate::convert::tests::{ads, hcm_rds, http_chain, lb_endpoint, route_to, sock, vhost};
use crate::model::ResourceType;

fn eds_cluster(name: &str) -> Any {
    pack_any(cl::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        ..Default::default()
    })
}

fn cla(name: &str) -> Any {
    pack_any(ep::ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![ep::LocalityLbEndpoints {
            lb_endpoints: vec![lb_endpoint("10.1.0.1", 9080)],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn rds_listener(port: u32) -> Any {
    pack_any(lis::Listener {
        name: format!("0.0.0.0_{port}"),
        address: Some(sock("0.0.0.0", port)),
        filter_chains: vec![http_chain(hcm_rds(&port.to_string()))],
        ..Default::default()
    })
}

fn route(name: &str) -> Any {
    pack_any(rt::RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![vhost("v", &["*"], vec![route_to("c", None)])],
        ..Default::default()
    })
}

fn response(t: ResourceType, version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: t.type_url().into(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

fn state() -> AdsState {
    AdsState::new(envoy_types::pb::envoy::config::core::v3::Node {
        id: "sidecar~10.1.0.9~a.default~default.svc.cluster.local".into(),
        ..Default::default()
    })
}

fn applied(outcome: Outcome) -> (crate::model::ProxyConfig, Vec<DiscoveryRequest>) {
    match outcome {
        Outcome::Applied {
            snapshot, requests, ..
        } => (snapshot, requests),
        other => panic!("expected Applied, got {other:?}"),
    }
}

/// (type, version, nonce, names, nack) of a request.
fn summary(r: &DiscoveryRequest) -> (ResourceType, &str, &str, Vec<&str>, bool) {
    (
        ResourceType::from_type_url(&r.type_url).expect("known type"),
        r.version_info.as_str(),
        r.response_nonce.as_str(),
        r.resource_names.iter().map(String::as_str).collect(),
        r.error_detail.is_some(),
    )
}

#[test]
fn first_stream_subscribes_cds_and_lds_wildcard_with_node_once() {
    let mut s = state();
    let requests = s.start_stream();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        summary(&requests[0]),
        (ResourceType::Cluster, "", "", vec![], false)
    );
    assert_eq!(
        summary(&requests[1]),
        (ResourceType::Listener, "", "", vec![], false)
    );
    assert!(requests[0].node.is_some());
    assert!(requests[1].node.is_none());
}

#[test]
fn dependent_subscriptions_follow_clusters_and_listeners() {
    let mut s = state();
    s.start_stream();
    let (snap, requests) = applied(s.handle(response(
        ResourceType::Cluster,
        "c1",
        "n1",
        vec![eds_cluster("a"), eds_cluster("b")],
    )));
    assert!(!snap.synced);
    assert_eq!(
        requests.iter().map(summary).collect::<Vec<_>>(),
        vec![
            (ResourceType::Endpoint, "", "", vec!["a", "b"], false),
            (ResourceType::Cluster, "c1", "n1", vec![], false),
        ]
    );
    let (snap, requests) = applied(s.handle(response(
        ResourceType::Endpoint,
        "e1",
        "n2",
        vec![cla("a"), cla("b"), cla("unrequested")],
    )));
    assert_eq!(snap.endpoints.keys().collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(
        summary(&requests[0]),
        (ResourceType::Endpoint, "e1", "n2", vec!["a", "b"], false)
    );
    let (snap, requests) = applied(s.handle(response(
        ResourceType::Listener,
        "l1",
        "n3",
        vec![rds_listener(9080)],
    )));
    assert!(!snap.synced, "route 9080 not received yet");
    assert_eq!(
        summary(&requests[0]),
        (ResourceType::Route, "", "", vec!["9080"], false)
    );
    let (snap, _) = applied(s.handle(response(
        ResourceType::Route,
        "r1",
        "n4",
        vec![route("9080")],
    )));
    assert!(snap.synced);
    assert_eq!(snap.versions[&ResourceType::Route], "r1");

    // Cluster b goes away: EDS narrows, its endpoints leave the snapshot.
    let (snap, requests) = applied(s.handle(response(
        ResourceType::Cluster,
        "c2",
        "n5",
        vec![eds_cluster("a")],
    )));
    assert!(snap.synced);
    assert_eq!(snap.endpoints.keys().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(
        summary(&requests[0]),
        (ResourceType::Endpoint, "e1", "n2", vec!["a"], false)
    );
    // No clusters at all: EDS unsubscribes with an empty list (not a wildcard any more).
    let (_, requests) = applied(s.handle(response(ResourceType::Cluster, "c3", "n6", vec![])));
    assert_eq!(
        summary(&requests[0]),
        (ResourceType::Endpoint, "e1", "n2", vec![], false)
    );
    // A new cluster that is not yet served makes the snapshot unsynced again.
    let (snap, _) = applied(s.handle(response(
        ResourceType::Cluster,
        "c4",
        "n7",
        vec![eds_cluster("z")],
    )));
    assert!(!snap.synced);
}

#[test]
fn invalid_response_is_nacked_and_previous_resources_kept() {
    let mut s = state();
    s.start_stream();
    applied(s.handle(response(
        ResourceType::Cluster,
        "c1",
        "n1",
        vec![eds_cluster("a")],
    )));
    let bad = pack_any(cl::Cluster {
        name: "bad".into(),
        lb_policy: cluster::LbPolicy::LoadBalancingPolicyConfig as i32,
        ..Default::default()
    });
    let outcome = s.handle(response(
        ResourceType::Cluster,
        "c2",
        "n2",
        vec![eds_cluster("b"), bad, eds_cluster("b")],
    ));
    let Outcome::Rejected {
        message, request, ..
    } = outcome
    else {
        panic!("expected a NACK, got {outcome:?}");
    };
    assert_eq!(
        message,
        "cluster \"bad\": lb_policy: unsupported value \"LOAD_BALANCING_POLICY_CONFIG\"; \
         cluster \"b\": duplicate resource name \"b\""
    );
    assert_eq!(
        summary(&request),
        (ResourceType::Cluster, "c1", "n2", vec![], true)
    );
    let detail = request.error_detail.unwrap();
    assert_eq!((detail.code, detail.message), (3, message));
    let snap = s.snapshot();
    assert_eq!(snap.clusters.keys().collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(snap.versions[&ResourceType::Cluster], "c1");
}

#[test]
fn duplicate_listener_addresses_are_rejected() {
    let mut s = state();
    s.start_stream();
    let mut other = lis::Listener {
        name: "other".into(),
        address: Some(sock("0.0.0.0", 9080)),
        filter_chains: vec![http_chain(hcm_rds("9080"))],
        ..Default::default()
    };
    other.bind_to_port = Some(Default::default());
    let outcome = s.handle(response(
        ResourceType::Listener,
        "l1",
        "n1",
        vec![rds_listener(9080), pack_any(other)],
    ));
    let Outcome::Rejected { message, .. } = outcome else {
        panic!("expected a NACK, got {outcome:?}");
    };
    assert_eq!(
        message,
        "listener \"other\": address: duplicate address \"0.0.0.0:9080\""
    );
}

#[test]
fn unknown_or_unrequested_types_are_ignored() {
    let mut s = state();
    s.start_stream();
    let secret = DiscoveryResponse {
        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
        nonce: "x".into(),
        ..Default::default()
    };
    assert!(matches!(s.handle(secret), Outcome::Ignored { .. }));
    let eds = response(ResourceType::Endpoint, "e1", "n1", vec![cla("a")]);
    assert!(matches!(s.handle(eds), Outcome::Ignored { .. }));
}

#[test]
fn new_stream_resends_versions_and_names_without_nonces() {
    let mut s = state();
    s.start_stream();
    applied(s.handle(response(
        ResourceType::Cluster,
        "c1",
        "n1",
        vec![eds_cluster("a")],
    )));
    applied(s.handle(response(ResourceType::Endpoint, "e1", "n2", vec![cla("a")])));
    applied(s.handle(response(
        ResourceType::Listener,
        "l1",
        "n3",
        vec![rds_listener(80)],
    )));
    let requests = s.start_stream();
    assert_eq!(
        requests.iter().map(summary).collect::<Vec<_>>(),
        vec![
            (ResourceType::Cluster, "c1", "", vec![], false),
            (ResourceType::Endpoint, "e1", "", vec!["a"], false),
            (ResourceType::Listener, "l1", "", vec![], false),
            (ResourceType::Route, "", "", vec!["80"], false),
        ]
    );
    assert!(requests[0].node.is_some());
    assert!(requests[1..].iter().all(|r| r.node.is_none()));
}

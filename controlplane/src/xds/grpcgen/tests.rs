use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use prost::Message;

use super::*;
use crate::config::objects::TargetPort;
use crate::registry::{Endpoint, EndpointSource, Locality, Protocol, ServiceKey};
use crate::xds::status::{ProxyStatus, SyncStatus};
use crate::xds::stream::{RequestKind, StreamState};

const FQDN: &str = "reviews.default.svc.cluster.local";

fn port(name: &str, number: u16, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: TargetPort::Number(number),
        protocol,
    }
}

fn service(ns: &str, name: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        name: name.into(),
        namespace: ns.into(),
        hostname: format!("{name}.{ns}.svc.cluster.local"),
        cluster_ip: Some("10.96.0.20".parse().unwrap()),
        ports,
        ..Service::default()
    }
}

fn mesh() -> MeshSnapshot {
    let mut m = MeshSnapshot {
        cluster_domain: "cluster.local".into(),
        ..Default::default()
    };
    for s in [
        service(
            "default",
            "reviews",
            vec![
                port("http", 9080, Protocol::Http),
                port("grpc", 7070, Protocol::Grpc),
                port("tcp", 9000, Protocol::Tcp),
            ],
        ),
        service("shop", "cart", vec![port("grpc", 7070, Protocol::Grpc)]),
    ] {
        let key = ServiceKey {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
        };
        m.services.insert(key, Arc::new(s));
    }
    let key = ServiceKey {
        namespace: "default".into(),
        name: "reviews".into(),
    };
    let ep = |ip: &str| Endpoint {
        locality: Locality::default(),
        ip: ip.parse().unwrap(),
        port: 7070,
        healthy: true,
        source: EndpointSource::Config,
        labels: Default::default(),
        weight: 1,
        tls_mode: Default::default(),
        service_account: None,
        workload: None,
    };
    m.endpoints
        .insert((key, 7070), vec![ep("10.211.0.2"), ep("10.211.0.3")]);
    m
}

fn grpc_client() -> ProxyInfo {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let node = Node {
        id: "sidecar~10.211.0.9~client.default~default.svc.cluster.local".into(),
        metadata: Some(Struct {
            fields: [
                ("GENERATOR".to_string(), string("grpc")),
                ("NAMESPACE".to_string(), string("default")),
            ]
            .into(),
        }),
        ..Default::default()
    };
    let proxy = ProxyInfo::from_node(Some(&node));
    assert!(proxy.is_proxyless_grpc());
    proxy
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn hcm(l: &Listener) -> HttpConnectionManager {
    let any = l
        .api_listener
        .as_ref()
        .unwrap()
        .api_listener
        .as_ref()
        .unwrap();
    HttpConnectionManager::decode(any.value.as_slice()).unwrap()
}

#[test]
fn listeners_are_api_listeners_named_as_requested() {
    let m = mesh();
    let asked = names(&[
        "reviews.default.svc.cluster.local:7070",
        "reviews:7070",
        "reviews.default:7070",
        "reviews.default.svc:9080",
        "cart.shop:7070",
        "cart.shop",
        "reviews",
        "reviews:1234",
        "nothing.default:7070",
        "cart:7070",
    ]);
    let ls = listeners(&m, &grpc_client(), &asked);
    let got: Vec<&str> = ls.iter().map(|l| l.name.as_str()).collect();
    // `cart` has one port, so its bare name is served; `reviews` has three. `cart:7070` is
    // not in the client's namespace.
    assert_eq!(
        got,
        [
            "cart.shop",
            "cart.shop:7070",
            "reviews.default.svc.cluster.local:7070",
            "reviews.default.svc:9080",
            "reviews.default:7070",
            "reviews:7070",
        ]
    );
    for l in &ls {
        assert!(l.filter_chains.is_empty() && l.listener_filters.is_empty());
        let h = hcm(l);
        let filters: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            filters,
            ["envoy.filters.http.fault", "envoy.filters.http.router"]
        );
        let Some(RouteSpecifier::Rds(rds)) = h.route_specifier else {
            panic!("{}: RDS expected", l.name);
        };
        assert!(rds.config_source.is_some());
        assert!(rds.route_config_name.starts_with("outbound|"), "{rds:?}");
    }
    let reviews = ls.iter().find(|l| l.name == "reviews:7070").unwrap();
    let Some(RouteSpecifier::Rds(rds)) = hcm(reviews).route_specifier else {
        unreachable!()
    };
    assert_eq!(rds.route_config_name, format!("outbound|7070||{FQDN}"));
}

fn cluster_of(rc: &RouteConfiguration) -> Vec<String> {
    rc.virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .filter_map(|r| match &r.action {
            Some(Action::Route(a)) => match &a.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => Some(c.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn routes_hold_only_the_services_virtual_host() {
    let m = mesh();
    let rcs = route_configs(
        &m,
        &grpc_client(),
        &names(&[
            &format!("outbound|7070||{FQDN}"),
            &format!("outbound|9000||{FQDN}"),
            "outbound|7070||unknown.default.svc.cluster.local",
            "7070",
        ]),
    );
    let got: Vec<&str> = rcs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        got,
        [
            format!("outbound|7070||{FQDN}"),
            format!("outbound|9000||{FQDN}")
        ]
    );
    for (rc, port) in rcs.iter().zip([7070, 9000]) {
        assert_eq!(rc.virtual_hosts.len(), 1, "{rc:?}");
        let vh = &rc.virtual_hosts[0];
        assert!(vh.domains.contains(&format!("{FQDN}:{port}")), "{vh:?}");
        assert!(vh.domains.contains(&format!("reviews:{port}")), "{vh:?}");
        assert!(!vh.domains.iter().any(|d| d == "*"), "no allow_any: {vh:?}");
        assert_eq!(cluster_of(rc), [format!("outbound|{port}||{FQDN}")]);
    }
}

#[test]
fn clusters_are_eds_by_requested_name() {
    let m = mesh();
    let cs = clusters(
        &m,
        &names(&[
            &format!("outbound|7070||{FQDN}"),
            &format!("outbound|7070|v1|{FQDN}"),
            &format!("outbound|1|v1|{FQDN}"),
            "inbound|7070||",
            "PassthroughCluster",
        ]),
    );
    let got: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        got,
        [
            format!("outbound|7070|v1|{FQDN}"),
            format!("outbound|7070||{FQDN}")
        ]
    );
    for c in &cs {
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
        let eds = c.eds_cluster_config.as_ref().unwrap();
        assert_eq!(eds.service_name, c.name);
        assert!(eds.eds_config.is_some());
        assert!(c.transport_socket.is_none() && c.typed_extension_protocol_options.is_empty());
    }
}

#[test]
fn sidecars_are_not_served_by_grpcgen() {
    let m = mesh();
    let sidecar = ProxyInfo {
        namespace: Some("default".into()),
        ..Default::default()
    };
    let all = crate::xds::resources(ResourceType::Listener, &m, &sidecar, &BTreeSet::new());
    assert!(all.iter().any(|(n, _)| n == "virtualOutbound"));
    let grpc = crate::xds::resources(
        ResourceType::Listener,
        &m,
        &grpc_client(),
        &names(&["reviews:7070"]),
    );
    assert_eq!(grpc.len(), 1);
    assert_eq!(grpc[0].0, "reviews:7070");
}

fn request(kind: ResourceType, names: &[&str], nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: kind.type_url().into(),
        response_nonce: nonce.into(),
        node: Some(Node {
            id: "sidecar~10.211.0.9~client.default~default.svc.cluster.local".into(),
            metadata: Some(Struct {
                fields: [(
                    "GENERATOR".to_string(),
                    Value {
                        kind: Some(Kind::StringValue("grpc".into())),
                    },
                )]
                .into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// gRPC subscribes to listeners and clusters by name: a new name is answered at once, as
/// for RDS and EDS, and only the names asked for are sent.
#[test]
fn a_grpc_stream_subscribes_to_every_type_by_name() {
    let m = mesh();
    let status = Arc::new(SyncStatus::default());
    let entry = status.register(ProxyStatus::new(3, None));
    let mut s = StreamState::new(
        3,
        entry.writer.clone(),
        crate::metrics::Metrics::unregistered(),
        Arc::new(m.clone()),
    );
    let first = request(ResourceType::Listener, &["reviews:7070"], "");
    assert!(s.identify(&first));
    let (kind, out) = s.on_request(first, &m);
    assert_eq!(kind, RequestKind::Initial);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].resources.len(), 1);
    let nonce = out[0].nonce.clone();
    let (kind, out) = s.on_request(
        request(
            ResourceType::Listener,
            &["reviews:7070", "cart.shop:7070"],
            &nonce,
        ),
        &m,
    );
    assert_eq!(kind, RequestKind::Ack);
    assert_eq!(out.len(), 1, "a new listener name is answered");
    assert_eq!(out[0].resources.len(), 2);

    let cluster = format!("outbound|7070||{FQDN}");
    let (_, out) = s.on_request(request(ResourceType::Cluster, &[&cluster], ""), &m);
    assert_eq!(out[0].resources.len(), 1);
    let (_, out) = s.on_request(request(ResourceType::Endpoint, &[&cluster], ""), &m);
    let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
        out[0].resources[0].any().value.as_slice(),
    )
    .unwrap();
    assert_eq!(cla.endpoints.len(), 1);
    assert!(cla.endpoints[0].locality.is_some(), "gRPC needs a locality");
    assert_eq!(cla.endpoints[0].lb_endpoints.len(), 2);
    drop(entry);
}

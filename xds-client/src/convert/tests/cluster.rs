//! Cluster conversions.

// The legacy cluster protocol fields are deprecated in Envoy but still honoured; tested here.
#![allow(deprecated)]

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{self as cl, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    socket_address, BindConfig, Http1ProtocolOptions, Http2ProtocolOptions, SocketAddress,
    TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        self, explicit_http_config, ExplicitHttpConfig, UseDownstreamHttpConfig,
    },
    HttpProtocolOptions,
};
use envoy_types::util::pack_any;

use super::*;
use crate::model::{Cluster, Discovery, LbPolicy, UpstreamProtocol};

const OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

fn eds(name: &str) -> cl::Cluster {
    cl::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.into(),
        }),
        connect_timeout: Some(secs(10)),
        ..Default::default()
    }
}

fn original_dst(name: &str) -> cl::Cluster {
    cl::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        ..Default::default()
    }
}

fn with_options(options: http_protocol_options::UpstreamProtocolOptions) -> cl::Cluster {
    let mut c = eds("outbound|9080||reviews.default.svc.cluster.local");
    c.typed_extension_protocol_options.insert(
        OPTIONS.into(),
        pack_any(HttpProtocolOptions {
            upstream_protocol_options: Some(options),
            ..Default::default()
        }),
    );
    c
}

fn explicit(config: explicit_http_config::ProtocolConfig) -> cl::Cluster {
    with_options(
        http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(config),
        }),
    )
}

fn protocol(c: cl::Cluster) -> UpstreamProtocol {
    Cluster::try_from(c).unwrap().upstream_protocol
}

#[test]
fn outbound_eds_cluster() {
    let c = Cluster::try_from(explicit(
        explicit_http_config::ProtocolConfig::Http2ProtocolOptions(Default::default()),
    ))
    .unwrap();
    assert_eq!(c.name, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(
        c.discovery,
        Discovery::Eds {
            service_name: "outbound|9080||reviews.default.svc.cluster.local".into()
        }
    );
    assert_eq!(c.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(c.upstream_protocol, UpstreamProtocol::Http2);
    assert_eq!(c.bind_address, None);

    let mut unnamed = eds("outbound|80||a.b.svc.cluster.local");
    unnamed
        .eds_cluster_config
        .as_mut()
        .unwrap()
        .service_name
        .clear();
    unnamed.connect_timeout = None;
    unnamed.lb_policy = cluster::LbPolicy::LeastRequest as i32;
    let c = Cluster::try_from(unnamed).unwrap();
    assert_eq!(
        c.discovery,
        Discovery::Eds {
            service_name: "outbound|80||a.b.svc.cluster.local".into()
        },
        "an empty service_name means the cluster's name"
    );
    assert_eq!(c.connect_timeout, Duration::from_secs(5), "Envoy's default");
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest);
    assert_eq!(c.upstream_protocol, UpstreamProtocol::Http1);
}

#[test]
fn upstream_protocols() {
    assert_eq!(
        protocol(explicit(
            explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default()
            )
        )),
        UpstreamProtocol::Http1
    );
    assert_eq!(
        protocol(with_options(
            http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                UseDownstreamHttpConfig {
                    http2_protocol_options: Some(Http2ProtocolOptions::default()),
                    ..Default::default()
                }
            )
        )),
        UpstreamProtocol::UseDownstream
    );
    let mut legacy = eds("c");
    legacy.http2_protocol_options = Some(Http2ProtocolOptions::default());
    assert_eq!(protocol(legacy.clone()), UpstreamProtocol::Http2);
    legacy.protocol_selection = cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32;
    assert_eq!(protocol(legacy), UpstreamProtocol::UseDownstream);
}

#[test]
fn inbound_and_special_clusters() {
    let mut inbound = original_dst("inbound|9080||");
    inbound.upstream_bind_config = Some(BindConfig {
        source_address: Some(SocketAddress {
            address: "127.0.0.6".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = Cluster::try_from(inbound).unwrap();
    assert_eq!(c.discovery, Discovery::OriginalDst);
    assert_eq!(c.lb_policy, LbPolicy::ClusterProvided);
    assert_eq!(c.bind_address, Some("127.0.0.6".parse().unwrap()));

    let blackhole = Cluster::try_from(cl::Cluster {
        name: "BlackHoleCluster".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        ..Default::default()
    })
    .unwrap();
    let Discovery::Static(cla) = blackhole.discovery else {
        panic!("expected STATIC");
    };
    assert_eq!(cla.cluster_name, "BlackHoleCluster");
    assert!(cla.endpoints.is_empty());

    let with_endpoints = Cluster::try_from(cl::Cluster {
        name: "static".into(),
        load_assignment: Some(ep::ClusterLoadAssignment {
            cluster_name: "static".into(),
            endpoints: vec![ep::LocalityLbEndpoints {
                lb_endpoints: vec![lb_endpoint("10.0.0.1", 80)],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    let Discovery::Static(cla) = with_endpoints.discovery else {
        panic!("an unset type is STATIC");
    };
    assert_eq!(cla.endpoints[0].address, "10.0.0.1:80".parse().unwrap());
}

#[test]
fn circuit_breakers_default_priority_thresholds() {
    let thresholds = |value| cl::CircuitBreakers {
        thresholds: vec![cl::circuit_breakers::Thresholds {
            max_connections: u32v(value),
            max_requests: u32v(value),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut limited = eds("c");
    limited.circuit_breakers = Some(thresholds(7));
    let c = Cluster::try_from(limited).unwrap();
    assert_eq!(c.circuit_breakers.max_connections, 7);
    assert_eq!(c.circuit_breakers.max_requests, 7);
    // Unset thresholds keep Envoy's defaults.
    assert_eq!(c.circuit_breakers.max_pending_requests, 1024);
    assert_eq!(c.circuit_breakers.max_retries, 3);
    let mut per_host = eds("c");
    per_host.circuit_breakers = Some(cl::CircuitBreakers {
        per_host_thresholds: vec![cl::circuit_breakers::Thresholds {
            max_connections: u32v(10),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(
        message(Cluster::try_from(per_host)),
        "cluster \"c\": circuit_breakers.per_host_thresholds[0].max_connections: \
         unsupported value \"10\""
    );
}

#[test]
fn cluster_errors() {
    let typed_key = format!("typed_extension_protocol_options[{OPTIONS:?}]");
    let mut round_robin_original_dst = original_dst("o");
    round_robin_original_dst.lb_policy = cluster::LbPolicy::RoundRobin as i32;
    let mut provided_eds = eds("c");
    provided_eds.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
    let mut policy_config = eds("c");
    policy_config.lb_policy = cluster::LbPolicy::LoadBalancingPolicyConfig as i32;
    let mut dns = eds("c");
    dns.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::StrictDns as i32,
    ));
    let mut no_eds_config = eds("c");
    no_eds_config.eds_cluster_config = None;
    let mut eds_not_ads = eds("c");
    eds_not_ads.eds_cluster_config.as_mut().unwrap().eds_config = None;
    let mut tls = eds("c");
    tls.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.alts".into(),
        ..Default::default()
    });
    let mut zero_timeout = eds("c");
    zero_timeout.connect_timeout = Some(secs(0));
    let mut both = explicit(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
        Default::default(),
    ));
    both.http2_protocol_options = Some(Default::default());
    let mut unknown_key = eds("c");
    unknown_key.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions".into(),
        pack_any(HttpProtocolOptions::default()),
    );
    let auto = with_options(http_protocol_options::UpstreamProtocolOptions::AutoConfig(
        Default::default(),
    ));
    let mut bound_port = original_dst("o");
    bound_port.upstream_bind_config = Some(BindConfig {
        source_address: Some(SocketAddress {
            address: "127.0.0.6".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(15000)),
            ..Default::default()
        }),
        ..Default::default()
    });
    let r = "outbound|9080||reviews.default.svc.cluster.local";
    let cases: Vec<(cl::Cluster, String)> = vec![
        (
            round_robin_original_dst,
            "cluster \"o\": lb_policy: lb_policy CLUSTER_PROVIDED goes with, and only with, \
             type ORIGINAL_DST"
                .into(),
        ),
        (
            provided_eds,
            "cluster \"c\": lb_policy: lb_policy CLUSTER_PROVIDED goes with, and only with, \
             type ORIGINAL_DST"
                .into(),
        ),
        (
            policy_config,
            "cluster \"c\": lb_policy: unsupported value \"LOAD_BALANCING_POLICY_CONFIG\"".into(),
        ),
        (
            dns,
            "cluster \"c\": load_assignment: required field is missing or empty".into(),
        ),
        (
            no_eds_config,
            "cluster \"c\": eds_cluster_config: required field is missing or empty".into(),
        ),
        (
            eds_not_ads,
            "cluster \"c\": eds_cluster_config.eds_config: required field is missing or empty"
                .into(),
        ),
        (
            tls,
            "cluster \"c\": transport_socket: unsupported filter \"envoy.transport_sockets.alts\""
                .into(),
        ),
        (
            zero_timeout,
            "cluster \"c\": connect_timeout: invalid duration \"0s\"".into(),
        ),
        (
            both,
            format!(
                "cluster \"{r}\": {typed_key}: HttpProtocolOptions and the legacy protocol \
                 options cannot both be set"
            ),
        ),
        (
            unknown_key,
            "cluster \"c\": typed_extension_protocol_options\
             [\"envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions\"]: \
             not supported by this proxy"
                .into(),
        ),
        (
            auto,
            format!("cluster \"{r}\": {typed_key}.auto_config: not supported by this proxy"),
        ),
        (
            bound_port,
            "cluster \"o\": upstream_bind_config.source_address.port_value: \
             unsupported value \"15000\""
                .into(),
        ),
        (
            cl::Cluster::default(),
            "cluster \"\": name: required field is missing or empty".into(),
        ),
    ];
    for (proto, expected) in cases {
        assert_eq!(message(Cluster::try_from(proto)), expected);
    }
}

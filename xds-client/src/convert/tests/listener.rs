//! Listener, filter chain, HTTP connection manager and tcp_proxy conversions.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    socket_address, Address, CidrRange, ConfigSource, PathConfigSource, TrafficDirection,
    TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

use super::*;
use crate::model::{
    Direction, FilterChainMatch, HttpFilter, Listener, NetworkFilter, PathMatch, RouteAction,
    RouteSource, TcpProxy,
};

fn listener(name: &str, addr: Address, chains: Vec<lis::FilterChain>) -> lis::Listener {
    lis::Listener {
        name: name.into(),
        address: Some(addr),
        filter_chains: chains,
        ..Default::default()
    }
}

fn port_range_predicate(port: i32) -> lis::ListenerFilterChainMatchPredicate {
    use lis::listener_filter_chain_match_predicate::Rule;
    lis::ListenerFilterChainMatchPredicate {
        rule: Some(Rule::DestinationPortRange(
            envoy_types::pb::envoy::r#type::v3::Int32Range {
                start: port,
                end: port + 1,
            },
        )),
    }
}

fn port_match(port: u32) -> Option<lis::FilterChainMatch> {
    Some(lis::FilterChainMatch {
        destination_port: u32v(port),
        ..Default::default()
    })
}

fn alpn_match(protocols: &[&str]) -> Option<lis::FilterChainMatch> {
    Some(lis::FilterChainMatch {
        application_protocols: protocols.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    })
}

fn convert(l: lis::Listener) -> Result<Listener, ConvertError> {
    Listener::try_from(l)
}

fn with_hcm(f: impl FnOnce(&mut hcm::HttpConnectionManager)) -> lis::Listener {
    let mut config = hcm_rds("9080");
    f(&mut config);
    let mut l = listener(
        "0.0.0.0_9080",
        sock("0.0.0.0", 9080),
        vec![http_chain(config)],
    );
    l.bind_to_port = no();
    l
}

fn with_tcp(f: impl FnOnce(&mut tcp::TcpProxy)) -> lis::Listener {
    let mut config = tcp_proxy("outbound|27017||mongo.default.svc.cluster.local");
    f(&mut config);
    let chain = lis::FilterChain {
        filters: vec![net_filter(
            "envoy.filters.network.tcp_proxy",
            pack_any(config),
        )],
        ..Default::default()
    };
    listener("10.96.0.9_27017", sock("10.96.0.9", 27017), vec![chain])
}

#[test]
fn virtual_outbound() {
    let mut blackhole = tcp_chain("BlackHoleCluster");
    blackhole.filter_chain_match = port_match(15001);
    let mut passthrough = tcp_chain("PassthroughCluster");
    passthrough.name = "PassthroughFilterChain".into();
    let mut l = listener("virtualOutbound", sock("0.0.0.0", 15001), vec![blackhole]);
    l.use_original_dst = yes();
    l.traffic_direction = TrafficDirection::Outbound as i32;
    l.default_filter_chain = Some(passthrough);
    let l = convert(l).unwrap();
    assert_eq!(l.name, "virtualOutbound");
    assert_eq!(l.address, "0.0.0.0:15001".parse().unwrap());
    assert!(l.bind_to_port && l.use_original_dst);
    assert_eq!(l.direction, Direction::Outbound);
    assert_eq!(l.filter_chains.len(), 1);
    assert_eq!(l.filter_chains[0].matcher.destination_port, Some(15001));
    assert_eq!(
        l.filter_chains[0].filter,
        NetworkFilter::Tcp(TcpProxy {
            stat_prefix: "BlackHoleCluster".into(),
            cluster: "BlackHoleCluster".into(),
            weighted_clusters: vec![],
            idle_timeout: Some(Duration::from_secs(3600)),
            access_log: vec![],
        })
    );
    let default = l.default_filter_chain.unwrap();
    assert_eq!(default.name, "PassthroughFilterChain");
    assert_eq!(default.matcher, FilterChainMatch::default());
}

#[test]
fn outbound_http_listener_uses_rds() {
    let l = convert(with_hcm(|_| {})).unwrap();
    assert!(!l.bind_to_port && !l.use_original_dst);
    assert_eq!(l.direction, Direction::Unspecified);
    let NetworkFilter::Http(http) = &l.filter_chains[0].filter else {
        panic!("expected HCM");
    };
    assert_eq!(http.routes, RouteSource::Rds("9080".into()));
    assert_eq!(http.http_filters, vec![HttpFilter::Router]);
    assert_eq!(http.stat_prefix, "outbound_0.0.0.0_9080");
}

#[test]
fn auto_port_listener_splits_by_application_protocol() {
    let mut http = http_chain(hcm_rds("9080"));
    http.filter_chain_match = alpn_match(&["http/1.1", "h2c"]);
    let tcp = tcp_chain("outbound|9080||reviews.default.svc.cluster.local");
    let l = convert(listener(
        "10.96.0.5_9080",
        sock("10.96.0.5", 9080),
        vec![http, tcp],
    ))
    .unwrap();
    assert_eq!(
        l.filter_chains[0].matcher.application_protocols,
        vec!["http/1.1", "h2c"]
    );
    assert_eq!(l.filter_chains[1].matcher, FilterChainMatch::default());
}

#[test]
fn virtual_inbound_with_inline_routes_and_listener_filters() {
    let routes = rt::RouteConfiguration {
        name: "inbound|9080||".into(),
        virtual_hosts: vec![vhost(
            "inbound|http|9080",
            &["*"],
            vec![route_to("inbound|9080||", Some(secs(0)))],
        )],
        ..Default::default()
    };
    let mut http = http_chain(hcm_inline(routes));
    http.filter_chain_match = Some(lis::FilterChainMatch {
        destination_port: u32v(9080),
        prefix_ranges: vec![CidrRange {
            address_prefix: "10.1.2.3".into(),
            prefix_len: u32v(24),
        }],
        transport_protocol: "raw_buffer".into(),
        server_names: vec!["Reviews.Default".into()],
        ..Default::default()
    });
    let mut l = listener("virtualInbound", sock("0.0.0.0", 15006), vec![http]);
    l.traffic_direction = TrafficDirection::Inbound as i32;
    l.listener_filters = vec![
        lis::ListenerFilter {
            name: "envoy.filters.listener.original_dst".into(),
            config_type: Some(lis::listener_filter::ConfigType::TypedConfig(pack_any(
                OriginalDst {},
            ))),
            ..Default::default()
        },
        lis::ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(lis::listener_filter::ConfigType::TypedConfig(pack_any(
                TlsInspector::default(),
            ))),
            ..Default::default()
        },
        lis::ListenerFilter {
            name: "envoy.filters.listener.http_inspector".into(),
            config_type: Some(lis::listener_filter::ConfigType::TypedConfig(pack_any(
                HttpInspector {},
            ))),
            // As istiod sends it: no sniffing on ports whose chains need no protocol.
            filter_disabled: Some(port_range_predicate(9080)),
        },
    ];
    let mut bad = l.clone();
    bad.listener_filters[0].filter_disabled = Some(port_range_predicate(9080));
    let err = convert(bad).unwrap_err().to_string();
    assert!(err.contains("filter_disabled"), "{err}");
    let l = convert(l).unwrap();
    assert_eq!(l.direction, Direction::Inbound);
    let chain = &l.filter_chains[0];
    assert_eq!(
        chain.matcher.prefix_ranges,
        vec!["10.1.2.0/24".parse().unwrap()]
    );
    assert_eq!(
        chain.matcher.transport_protocol.as_deref(),
        Some("raw_buffer")
    );
    assert_eq!(chain.matcher.server_names, vec!["reviews.default"]);
    let NetworkFilter::Http(http) = &chain.filter else {
        panic!("expected HCM");
    };
    let RouteSource::Inline(config) = &http.routes else {
        panic!("expected inline routes");
    };
    assert_eq!(config.name, "inbound|9080||");
    assert_eq!(config.virtual_hosts[0].domains, vec!["*"]);
    assert_eq!(
        config.virtual_hosts[0].routes[0].matcher.path,
        PathMatch::Prefix("/".into())
    );
    assert_eq!(
        config.virtual_hosts[0].routes[0].action,
        RouteAction::cluster("inbound|9080||")
    );
}

#[test]
fn listener_errors() {
    let mut redis = listener("l", sock("0.0.0.0", 1), vec![]);
    redis.filter_chains = vec![lis::FilterChain {
        filters: vec![net_filter(
            "envoy.filters.network.redis_proxy",
            Any {
                type_url: "type.googleapis.com/x.RedisProxy".into(),
                value: vec![],
            },
        )],
        ..Default::default()
    }];
    let cases: Vec<(lis::Listener, &str)> = vec![
        (
            lis::Listener {
                name: "noaddr".into(),
                filter_chains: vec![tcp_chain("c")],
                ..Default::default()
            },
            "listener \"noaddr\": address: required field is missing or empty",
        ),
        (
            listener("nochains", sock("0.0.0.0", 1), vec![]),
            "listener \"nochains\": filter_chains: required field is missing or empty",
        ),
        (
            listener("", sock("0.0.0.0", 1), vec![tcp_chain("c")]),
            "listener \"\": name: required field is missing or empty",
        ),
        (
            listener("badip", sock("not-an-ip", 1), vec![tcp_chain("c")]),
            "listener \"badip\": address.socket_address.address: invalid IP address \"not-an-ip\"",
        ),
        (
            listener("bigport", sock("0.0.0.0", 70000), vec![tcp_chain("c")]),
            "listener \"bigport\": address.socket_address.port_value: invalid port \"70000\"",
        ),
        (
            redis,
            "listener \"l\": filter_chains[0].filters[0]: unsupported filter \
             \"envoy.filters.network.redis_proxy\"",
        ),
    ];
    for (proto, expected) in cases {
        assert_eq!(message(convert(proto)), expected);
    }
}

#[test]
fn listener_rejects_unsupported_features() {
    let base = || listener("l", sock("0.0.0.0", 80), vec![tcp_chain("c")]);
    let mut udp = base();
    if let Some(Address {
        address: Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa)),
    }) = &mut udp.address
    {
        sa.protocol = socket_address::Protocol::Udp as i32;
    }
    let mut transparent = base();
    transparent.transparent = yes();
    let mut tls = base();
    tls.filter_chains[0].transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.alts".into(),
        ..Default::default()
    });
    let mut source = base();
    source.filter_chains[0].filter_chain_match = Some(lis::FilterChainMatch {
        source_ports: vec![1234],
        ..Default::default()
    });
    let mut proxy_protocol = base();
    proxy_protocol.listener_filters = vec![lis::ListenerFilter {
        name: "envoy.filters.listener.proxy_protocol".into(),
        ..Default::default()
    }];
    let mut duplicate = base();
    duplicate.filter_chains.push(tcp_chain("d"));
    let mut two_filters = base();
    let extra = two_filters.filter_chains[0].filters[0].clone();
    two_filters.filter_chains[0].filters.push(extra);
    let mut transport = base();
    transport.filter_chains[0].filter_chain_match = Some(lis::FilterChainMatch {
        transport_protocol: "quic".into(),
        ..Default::default()
    });
    let cases = [
        (
            udp,
            "listener \"l\": address.socket_address.protocol: unsupported value \"UDP\"",
        ),
        (
            transparent,
            "listener \"l\": transparent: not supported by this proxy",
        ),
        (
            tls,
            "listener \"l\": filter_chains[0].transport_socket: unsupported filter \"envoy.transport_sockets.alts\"",
        ),
        (
            source,
            "listener \"l\": filter_chains[0].filter_chain_match.source_ports: \
             not supported by this proxy",
        ),
        (
            proxy_protocol,
            "listener \"l\": listener_filters[0]: unsupported listener filter \
             \"envoy.filters.listener.proxy_protocol\"",
        ),
        (
            duplicate,
            "listener \"l\": filter_chains[1].filter_chain_match: duplicate filter_chain_match \
             \"FilterChainMatch { destination_port: None, prefix_ranges: [], \
             transport_protocol: None, application_protocols: [], server_names: [] }\"",
        ),
        (
            two_filters,
            "listener \"l\": filter_chains[0].filters[0]: a terminal filter \
             (http_connection_manager, tcp_proxy) must be the last filter",
        ),
        (
            transport,
            "listener \"l\": filter_chains[0].filter_chain_match.transport_protocol: \
             unsupported value \"quic\"",
        ),
    ];
    for (proto, expected) in cases {
        assert_eq!(message(convert(proto)), expected);
    }
}

#[test]
fn http_filters_optional_unknown_skipped_required_unknown_rejected() {
    let unknown = |optional: bool| hcm::HttpFilter {
        name: "istio.stats".into(),
        is_optional: optional,
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/stats.PluginConfig".into(),
            value: vec![],
        })),
        ..Default::default()
    };
    let l = convert(with_hcm(|h| h.http_filters.insert(0, unknown(true)))).unwrap();
    let NetworkFilter::Http(http) = &l.filter_chains[0].filter else {
        panic!("expected HCM");
    };
    assert_eq!(http.http_filters, vec![HttpFilter::Router]);

    let prefix = "listener \"0.0.0.0_9080\": filter_chains[0].filters[0].typed_config";
    let cases: Vec<(lis::Listener, String)> = vec![
        (
            with_hcm(|h| h.http_filters.insert(0, unknown(false))),
            format!("{prefix}.http_filters[0]: unsupported HTTP filter \"istio.stats\""),
        ),
        (
            with_hcm(|h| h.http_filters.push(unknown(false))),
            format!("{prefix}.http_filters[1]: unsupported HTTP filter \"istio.stats\""),
        ),
        (
            with_hcm(|h| h.http_filters.push(router())),
            format!("{prefix}.http_filters[1]: the router must be the last HTTP filter"),
        ),
        (
            with_hcm(|h| h.http_filters.clear()),
            format!(
                "{prefix}.http_filters: the last HTTP filter must be the router \
                 (envoy.filters.http.router)"
            ),
        ),
        (
            with_hcm(|h| h.codec_type = hcm::http_connection_manager::CodecType::Http2 as i32),
            format!("{prefix}.codec_type: unsupported value \"HTTP2\""),
        ),
        (
            with_hcm(|h| {
                h.upgrade_configs = vec![hcm::http_connection_manager::UpgradeConfig {
                    upgrade_type: "CONNECT".into(),
                    ..Default::default()
                }]
            }),
            format!("{prefix}.upgrade_configs[0].upgrade_type: unsupported value \"CONNECT\""),
        ),
        (
            with_hcm(|h| {
                h.route_specifier = Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                    hcm::Rds {
                        config_source: Some(ConfigSource {
                            config_source_specifier: Some(
                                envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::PathConfigSource(
                                    PathConfigSource::default(),
                                ),
                            ),
                            ..Default::default()
                        }),
                        route_config_name: "9080".into(),
                    },
                ))
            }),
            format!("{prefix}.rds.config_source.path_config_source: not supported by this proxy"),
        ),
        (
            with_hcm(|h| h.route_specifier = None),
            format!("{prefix}.route_specifier: required field is missing or empty"),
        ),
        (
            with_hcm(|h| h.strip_matching_host_port = true),
            format!("{prefix}.strip_matching_host_port: not supported by this proxy"),
        ),
    ];
    for (proto, expected) in cases {
        assert_eq!(message(convert(proto)), expected);
    }
    let websocket = with_hcm(|h| {
        h.upgrade_configs = vec![hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }]
    });
    assert!(convert(websocket).is_ok());
}

#[test]
fn tcp_proxy_timeouts_and_errors() {
    let idle = |l: Listener| match &l.filter_chains[0].filter {
        NetworkFilter::Tcp(t) => t.idle_timeout,
        NetworkFilter::Http(_) => panic!("expected tcp_proxy"),
    };
    assert_eq!(
        idle(convert(with_tcp(|_| {})).unwrap()),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        idle(convert(with_tcp(|t| t.idle_timeout = Some(secs(0)))).unwrap()),
        None
    );
    assert_eq!(
        idle(convert(with_tcp(|t| t.idle_timeout = Some(secs(30)))).unwrap()),
        Some(Duration::from_secs(30))
    );
    let prefix = "listener \"10.96.0.9_27017\": filter_chains[0].filters[0].typed_config";
    let cases = [
        (
            with_tcp(|t| {
                t.cluster_specifier = Some(tcp::tcp_proxy::ClusterSpecifier::WeightedClusters(
                    Default::default(),
                ))
            }),
            format!("{prefix}.weighted_clusters.clusters: the weights add up to zero"),
        ),
        (
            with_tcp(|t| t.cluster_specifier = None),
            format!("{prefix}.cluster: required field is missing or empty"),
        ),
        (
            with_tcp(|t| t.max_downstream_connection_duration = Some(secs(5))),
            format!("{prefix}.max_downstream_connection_duration: not supported by this proxy"),
        ),
        (
            with_tcp(|t| t.idle_timeout = Some(secs(-5))),
            format!("{prefix}.idle_timeout: invalid duration \"-5s 0ns\""),
        ),
    ];
    for (proto, expected) in cases {
        assert_eq!(message(convert(proto)), expected);
    }
}

#[test]
fn filter_without_typed_config_is_rejected() {
    let mut l = listener("l", sock("0.0.0.0", 80), vec![tcp_chain("c")]);
    l.filter_chains[0].filters[0].config_type = None;
    assert_eq!(
        message(convert(l)),
        "listener \"l\": filter_chains[0].filters[0].typed_config: \
         required field is missing or empty"
    );
}

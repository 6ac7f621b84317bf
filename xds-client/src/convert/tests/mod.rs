//! Unit tests of the conversions: builders for istiod-shaped protos, then one file per type.

mod cluster;
mod dns;
mod endpoint;
mod listener;
mod rbac;
mod route;
mod tls;
mod traffic;

use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ConfigSource,
    SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::service::discovery::v3::Resource as Wrapper;
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;

use super::{decode_resource, ConvertError, Resource};
use crate::model::ResourceType;

pub(crate) fn sock(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

pub(crate) fn secs(seconds: i64) -> PbDuration {
    PbDuration { seconds, nanos: 0 }
}

pub(crate) fn yes() -> Option<BoolValue> {
    Some(BoolValue { value: true })
}

pub(crate) fn no() -> Option<BoolValue> {
    Some(BoolValue { value: false })
}

pub(crate) fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub(crate) fn router() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    }
}

pub(crate) fn hcm_rds(route: &str) -> hcm::HttpConnectionManager {
    hcm::HttpConnectionManager {
        stat_prefix: format!("outbound_0.0.0.0_{route}"),
        http_filters: vec![router()],
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(ads()),
                route_config_name: route.into(),
            },
        )),
        ..Default::default()
    }
}

pub(crate) fn hcm_inline(config: rt::RouteConfiguration) -> hcm::HttpConnectionManager {
    hcm::HttpConnectionManager {
        stat_prefix: "inbound_0.0.0.0_9080".into(),
        http_filters: vec![router()],
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            config,
        )),
        ..Default::default()
    }
}

pub(crate) fn tcp_proxy(cluster: &str) -> tcp::TcpProxy {
    tcp::TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

pub(crate) fn net_filter(name: &str, config: Any) -> lis::Filter {
    lis::Filter {
        name: name.into(),
        config_type: Some(lis::filter::ConfigType::TypedConfig(config)),
    }
}

pub(crate) fn http_chain(config: hcm::HttpConnectionManager) -> lis::FilterChain {
    lis::FilterChain {
        filters: vec![net_filter(
            "envoy.filters.network.http_connection_manager",
            pack_any(config),
        )],
        ..Default::default()
    }
}

pub(crate) fn tcp_chain(cluster: &str) -> lis::FilterChain {
    lis::FilterChain {
        filters: vec![net_filter(
            "envoy.filters.network.tcp_proxy",
            pack_any(tcp_proxy(cluster)),
        )],
        ..Default::default()
    }
}

pub(crate) fn route_to(cluster: &str, timeout: Option<PbDuration>) -> rt::Route {
    rt::Route {
        r#match: Some(rt::RouteMatch {
            path_specifier: Some(rt::route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(rt::route::Action::Route(rt::RouteAction {
            cluster_specifier: Some(rt::route_action::ClusterSpecifier::Cluster(cluster.into())),
            timeout,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub(crate) fn vhost(name: &str, domains: &[&str], routes: Vec<rt::Route>) -> rt::VirtualHost {
    rt::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

pub(crate) fn lb_endpoint(ip: &str, port: u32) -> ep::LbEndpoint {
    ep::LbEndpoint {
        host_identifier: Some(ep::lb_endpoint::HostIdentifier::Endpoint(ep::Endpoint {
            address: Some(sock(ip, port)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The error's full message, as it would appear in a NACK.
pub(crate) fn message<T: std::fmt::Debug>(result: Result<T, ConvertError>) -> String {
    result.expect_err("conversion must fail").to_string()
}

#[test]
fn decode_resource_reads_plain_and_wrapped_resources() {
    let cla = ep::ClusterLoadAssignment {
        cluster_name: "outbound|9080||reviews.default.svc.cluster.local".into(),
        ..Default::default()
    };
    let plain = decode_resource(ResourceType::Endpoint, &pack_any(cla.clone()), 0).unwrap();
    assert_eq!(
        plain.name(),
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    let wrapped = pack_any(Wrapper {
        name: cla.cluster_name.clone(),
        resource: Some(pack_any(cla)),
        ..Default::default()
    });
    let unwrapped = decode_resource(ResourceType::Endpoint, &wrapped, 0).unwrap();
    assert_eq!(plain, unwrapped);
    assert!(matches!(unwrapped, Resource::Endpoints(_)));
}

#[test]
fn decode_resource_rejects_wrong_type_and_bad_bytes() {
    let cla = pack_any(ep::ClusterLoadAssignment::default());
    assert_eq!(
        message(decode_resource(ResourceType::Cluster, &cla, 3)),
        "resources[3]: unexpected type \
         \"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\", \
         expected \"envoy.config.cluster.v3.Cluster\""
    );
    let garbage = Any {
        type_url: ResourceType::Listener.type_url().into(),
        value: vec![0xff, 0xff, 0xff],
    };
    let err = decode_resource(ResourceType::Listener, &garbage, 1).unwrap_err();
    assert!(matches!(err, ConvertError::Decode { .. }), "{err}");
    assert!(
        err.to_string().starts_with("resources[1]: cannot decode"),
        "{err}"
    );
}

#[test]
fn errors_carry_resource_and_path() {
    let listener = lis::Listener {
        name: "0.0.0.0_9080".into(),
        address: Some(sock("0.0.0.0", 9080)),
        filter_chains: vec![lis::FilterChain {
            filters: vec![net_filter(
                "envoy.filters.network.redis_proxy",
                Any {
                    type_url: "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy".into(),
                    value: vec![],
                },
            )],
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = crate::model::Listener::try_from(listener).unwrap_err();
    assert_eq!(
        err.to_string(),
        "listener \"0.0.0.0_9080\": filter_chains[0].filters[0]: \
         unsupported filter \"envoy.filters.network.redis_proxy\""
    );
    assert_eq!(
        err.location().resource(),
        Some((ResourceType::Listener, "0.0.0.0_9080"))
    );
    assert_eq!(err.location().path(), "filter_chains[0].filters[0]");
}

#[test]
fn durations_follow_envoy_conventions() {
    use std::time::Duration;
    assert_eq!(super::duration(&secs(3)).unwrap(), Duration::from_secs(3));
    assert!(super::duration(&PbDuration {
        seconds: -1,
        nanos: 0
    })
    .is_err());
    assert!(super::duration(&PbDuration {
        seconds: 0,
        nanos: 1_000_000_000
    })
    .is_err());
    let default = Duration::from_secs(15);
    assert_eq!(super::timeout_or(None, default).unwrap(), Some(default));
    assert_eq!(super::timeout_or(Some(&secs(0)), default).unwrap(), None);
    assert_eq!(
        super::timeout_or(Some(&secs(2)), default).unwrap(),
        Some(Duration::from_secs(2))
    );
}

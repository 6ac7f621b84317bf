//! Small constructors for the Envoy messages the translation repeats: addresses, ADS config
//! sources, durations, network and HTTP filters, upstream protocol options.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{
    address, api_config_source, config_source, grpc_service, socket_address, Address,
    AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, GrpcService,
    Http1ProtocolOptions, Http2ProtocolOptions, SocketAddress,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, Filter, ListenerFilter,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
        UseDownstreamHttpConfig,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};
use envoy_types::util::pack_any;

use crate::registry::Protocol;

/// Key of `typed_extension_protocol_options` for HTTP upstream options.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The address inbound traffic is delivered from, so that capture lets it through.
pub const INBOUND_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 6));

/// A TCP socket address.
pub fn socket_address(ip: IpAddr, port: u16) -> SocketAddress {
    SocketAddress {
        address: ip.to_string(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(port.into())),
        ..Default::default()
    }
}

/// An `Address` for a TCP socket address.
pub fn address(ip: IpAddr, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(socket_address(ip, port))),
    }
}

/// `0.0.0.0`.
pub fn any_ip() -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
}

/// The ADS config source, v3.
pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// Istio's SDS cluster: the node agent next to the proxy (istio-agent; `mesh-proxy agent`
/// for an Envoy sidecar here) serves the workload's secrets over gRPC on a local socket. The
/// control plane never holds a workload key, so secrets are never served over ADS.
pub const SDS_CLUSTER: &str = "sds-grpc";

/// The config source of a secret, as istiod writes it: SDS over gRPC to [`SDS_CLUSTER`],
/// node on the first message only, no initial fetch timeout (listeners and clusters wait
/// for their certificate).
pub fn sds_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
            ApiConfigSource {
                api_type: api_config_source::ApiType::Grpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                set_node_on_first_message_only: true,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: SDS_CLUSTER.to_string(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        initial_fetch_timeout: Some(seconds(0)),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// A duration of whole seconds.
pub fn seconds(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}

/// A wrapped bool.
pub fn bool_value(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

/// A wrapped u32.
pub fn u32_value(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

/// A network filter with a typed config.
pub fn network_filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

/// `envoy.filters.network.tcp_proxy` to `cluster`, stat prefix the cluster name.
pub fn tcp_proxy(cluster: &str) -> Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        pack_any(TcpProxy {
            stat_prefix: cluster.to_string(),
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
            ..Default::default()
        }),
    )
}

/// Where an HTTP connection manager's routes come from.
pub enum Routes {
    /// RDS, by name.
    Rds(String),
    /// Inline.
    Inline(Box<RouteConfiguration>),
}

/// An HTTP filter with an empty typed config.
fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// `envoy.filters.network.http_connection_manager` with Istio's HTTP filters: fault and CORS
/// (configured per route, `typed_per_filter_config`), then the router.
pub fn http_connection_manager(stat_prefix: &str, routes: Routes) -> Filter {
    let route_specifier = match routes {
        Routes::Rds(name) => RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: name,
        }),
        Routes::Inline(config) => RouteSpecifier::RouteConfig(*config),
    };
    network_filter(
        "envoy.filters.network.http_connection_manager",
        pack_any(HttpConnectionManager {
            stat_prefix: stat_prefix.to_string(),
            route_specifier: Some(route_specifier),
            http_filters: vec![
                http_filter("envoy.filters.http.fault", pack_any(HttpFault::default())),
                http_filter("envoy.filters.http.cors", pack_any(Cors::default())),
                http_filter("envoy.filters.http.router", pack_any(Router::default())),
            ],
            ..Default::default()
        }),
    )
}

/// `envoy.filters.listener.http_inspector`: detects plaintext HTTP/1.x and h2c so filter
/// chains can match `application_protocols`.
pub fn http_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.http_inspector".to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            HttpInspector::default(),
        ))),
        ..Default::default()
    }
}

/// `envoy.filters.listener.tls_inspector`: reads the TLS ClientHello so that filter chains can
/// match `server_names`.
pub fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// `envoy.filters.listener.original_dst`: restores a redirected connection's destination.
pub fn original_dst() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            OriginalDst::default(),
        ))),
        ..Default::default()
    }
}

/// The upstream HTTP protocol options for a port's protocol: explicit HTTP/2 for HTTP/2 and
/// gRPC, the downstream's protocol for sniffed ports, none otherwise (HTTP/1.1 or TCP).
pub fn upstream_protocol_options(protocol: Protocol) -> Option<(String, Any)> {
    let options = if protocol.is_http2() {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )),
        })
    } else if protocol == Protocol::Auto {
        UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
            http_protocol_options: Some(Http1ProtocolOptions::default()),
            http2_protocol_options: Some(Http2ProtocolOptions::default()),
            ..Default::default()
        })
    } else {
        return None;
    };
    let any = pack_any(HttpProtocolOptions {
        upstream_protocol_options: Some(options),
        ..Default::default()
    });
    Some((HTTP_PROTOCOL_OPTIONS.to_string(), any))
}

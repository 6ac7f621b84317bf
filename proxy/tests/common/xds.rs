//! Envoy resources shaped as istiod shapes them, and an in-process ADS server (state of the
//! world) that serves a fixed set of them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, BindConfig, CidrRange,
    ConfigSource, Locality, SocketAddress, TrafficDirection,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, Filter, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options, http_protocol_options::explicit_http_config, HttpProtocolOptions,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn socket(addr: SocketAddr) -> SocketAddress {
    SocketAddress {
        address: addr.ip().to_string(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
            addr.port(),
        ))),
        ..Default::default()
    }
}

pub fn address(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(socket(addr))),
    }
}

/// A filter chain match on a destination port and (optionally) application protocols.
pub fn on_port(port: u16, apps: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: Some(UInt32Value {
            value: u32::from(port),
        }),
        application_protocols: apps.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A filter chain match on destination addresses.
pub fn on_prefix(prefix: &str, len: u32) -> FilterChainMatch {
    FilterChainMatch {
        prefix_ranges: vec![CidrRange {
            address_prefix: prefix.into(),
            prefix_len: Some(UInt32Value { value: len }),
        }],
        ..Default::default()
    }
}

pub fn chain(name: &str, m: Option<FilterChainMatch>, filter: Filter) -> FilterChain {
    FilterChain {
        name: name.into(),
        filter_chain_match: m,
        filters: vec![filter],
        ..Default::default()
    }
}

fn hcm(route_specifier: http_connection_manager::RouteSpecifier) -> Filter {
    let config = HttpConnectionManager {
        stat_prefix: "http".into(),
        route_specifier: Some(route_specifier),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(config))),
    }
}

/// An HTTP connection manager with RDS routes.
pub fn hcm_rds(route_name: &str) -> Filter {
    hcm(http_connection_manager::RouteSpecifier::Rds(Rds {
        config_source: Some(ads()),
        route_config_name: route_name.into(),
    }))
}

/// An HTTP connection manager with inline routes.
pub fn hcm_inline(routes: RouteConfiguration) -> Filter {
    hcm(http_connection_manager::RouteSpecifier::RouteConfig(routes))
}

/// A TCP proxy to `cluster`.
pub fn tcp(cluster: &str, idle: Option<Duration>) -> Filter {
    let config = TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        idle_timeout: idle.map(duration),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(config))),
    }
}

pub fn listener(
    name: &str,
    addr: &str,
    bind_to_port: bool,
    use_original_dst: bool,
    inbound: bool,
    chains: Vec<FilterChain>,
    default_chain: Option<FilterChain>,
) -> Listener {
    Listener {
        name: name.into(),
        address: Some(address(addr.parse().unwrap())),
        bind_to_port: Some(BoolValue {
            value: bind_to_port,
        }),
        use_original_dst: use_original_dst.then_some(BoolValue { value: true }),
        traffic_direction: if inbound {
            TrafficDirection::Inbound as i32
        } else {
            TrafficDirection::Outbound as i32
        },
        filter_chains: chains,
        default_filter_chain: default_chain,
        ..Default::default()
    }
}

/// Istio's `virtualOutbound` listener: 0.0.0.0:15001, bound, original destination, outbound.
pub fn virtual_outbound(chains: Vec<FilterChain>, default_chain: Option<FilterChain>) -> Listener {
    listener(
        "virtualOutbound",
        "0.0.0.0:15001",
        true,
        true,
        false,
        chains,
        default_chain,
    )
}

/// Istio's `virtualInbound` listener: 0.0.0.0:15006, bound, inbound.
pub fn virtual_inbound(chains: Vec<FilterChain>, default_chain: Option<FilterChain>) -> Listener {
    listener(
        "virtualInbound",
        "0.0.0.0:15006",
        true,
        false,
        true,
        chains,
        default_chain,
    )
}

/// A route to `cluster` for every path, with an optional timeout.
pub fn route_to(cluster: &str, timeout: Option<Duration>) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
            timeout: Some(duration(timeout.unwrap_or_default())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

pub fn route_config(name: &str, vhosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

/// The protocol a cluster speaks upstream.
#[derive(Clone, Copy)]
pub enum Proto {
    Http1,
    Http2,
    UseDownstream,
}

fn protocol_options(c: &mut Cluster, proto: Proto) {
    use http_protocol_options::UpstreamProtocolOptions as U;
    let options = match proto {
        Proto::Http1 => return,
        Proto::Http2 => U::ExplicitHttpConfig(http_protocol_options::ExplicitHttpConfig {
            protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )),
        }),
        Proto::UseDownstream => {
            U::UseDownstreamProtocolConfig(http_protocol_options::UseDownstreamHttpConfig {
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            })
        }
    };
    c.typed_extension_protocol_options = HashMap::from([(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        pack_any(HttpProtocolOptions {
            upstream_protocol_options: Some(options),
            ..Default::default()
        }),
    )]);
}

/// An EDS cluster (endpoints from a `ClusterLoadAssignment` of the same name).
pub fn eds_cluster(name: &str, proto: Proto) -> Cluster {
    let mut c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.into(),
        }),
        connect_timeout: Some(duration(Duration::from_secs(2))),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        ..Default::default()
    };
    protocol_options(&mut c, proto);
    c
}

/// A STATIC cluster.
pub fn static_cluster(name: &str, endpoints: &[SocketAddr], proto: Proto) -> Cluster {
    let mut c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(cla(name, endpoints)),
        connect_timeout: Some(duration(Duration::from_secs(2))),
        ..Default::default()
    };
    protocol_options(&mut c, proto);
    c
}

/// An ORIGINAL_DST cluster, optionally bound to a source address.
pub fn original_dst_cluster(name: &str, bind: Option<&str>) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(duration(Duration::from_secs(2))),
        upstream_bind_config: bind.map(|ip| BindConfig {
            source_address: Some(socket(format!("{ip}:0").parse().unwrap())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn cla(name: &str, endpoints: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality {
                region: "test".into(),
                ..Default::default()
            }),
            lb_endpoints: endpoints
                .iter()
                .map(|a| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(address(*a)),
                        ..Default::default()
                    })),
                    health_status: 1, // HEALTHY
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The resources an ADS server serves, by type URL, then by name.
#[derive(Clone, Default)]
pub struct Resources(pub BTreeMap<&'static str, BTreeMap<String, Any>>);

impl Resources {
    pub fn listener(mut self, l: Listener) -> Self {
        self.0
            .entry(LISTENER)
            .or_default()
            .insert(l.name.clone(), pack_any(l));
        self
    }
    pub fn cluster(mut self, c: Cluster) -> Self {
        self.0
            .entry(CLUSTER)
            .or_default()
            .insert(c.name.clone(), pack_any(c));
        self
    }
    pub fn route(mut self, r: RouteConfiguration) -> Self {
        self.0
            .entry(ROUTE)
            .or_default()
            .insert(r.name.clone(), pack_any(r));
        self
    }
    pub fn endpoints(mut self, e: ClusterLoadAssignment) -> Self {
        self.0
            .entry(ENDPOINT)
            .or_default()
            .insert(e.cluster_name.clone(), pack_any(e));
        self
    }
}

/// A state-of-the-world ADS server with a fixed set of resources (version `1`).
pub struct Ads {
    resources: Arc<Resources>,
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponses = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream = DeltaResponses;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let mut requests = request.into_inner();
        let resources = self.resources.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut sent: HashMap<String, Vec<String>> = HashMap::new();
            let mut nonce = 0u64;
            while let Ok(Some(req)) = requests.message().await {
                let mut names = req.resource_names.clone();
                names.sort();
                let is_ack = req.version_info == "1" && !req.response_nonce.is_empty();
                if is_ack && sent.get(&req.type_url) == Some(&names) {
                    continue;
                }
                let all = resources.0.get(req.type_url.as_str());
                let chosen: Vec<Any> = match all {
                    None => Vec::new(),
                    Some(all) if names.is_empty() => all.values().cloned().collect(),
                    Some(all) => names.iter().filter_map(|n| all.get(n).cloned()).collect(),
                };
                sent.insert(req.type_url.clone(), names);
                nonce += 1;
                let resp = DiscoveryResponse {
                    version_info: "1".into(),
                    resources: chosen,
                    type_url: req.type_url,
                    nonce: nonce.to_string(),
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponses>, Status> {
        Err(Status::unimplemented("state of the world only"))
    }
}

/// Start an ADS server for `resources` on a free loopback port; returns its address.
pub async fn serve_ads(resources: Resources) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = AggregatedDiscoveryServiceServer::new(Ads {
        resources: Arc::new(resources),
    });
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

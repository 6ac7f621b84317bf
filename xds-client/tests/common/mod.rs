//! An in-process ADS server with scripted responses, and builders for istiod-shaped resources.
//!
//! Each stream the client opens is handed to the test as an [`AdsStream`]: the test reads the
//! client's requests and sends responses; dropping the stream ends it (the client sees the
//! control plane close it), and [`FakeAds::stop`] shuts the whole server down.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{self as cl, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, BindConfig,
    ConfigSource, Http2ProtocolOptions, Locality, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions},
    HttpProtocolOptions,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration};
use envoy_types::util::pack_any;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use xds_client::model::{ProxyConfig, ResourceType};
use xds_client::{ClientOptions, NodeInfo, XdsClient, XdsHandle, XdsStatus};

/// How long any single expectation may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// One ADS stream, seen from the server.
pub struct AdsStream {
    requests: Streaming<DiscoveryRequest>,
    responses: mpsc::UnboundedSender<Result<DiscoveryResponse, Status>>,
}

impl AdsStream {
    /// The client's next request (panics after [`PATIENCE`] or if the stream ends).
    pub async fn recv(&mut self) -> DiscoveryRequest {
        match tokio::time::timeout(PATIENCE, self.requests.message()).await {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => panic!("the client closed the stream"),
            Ok(Err(status)) => panic!("stream error: {status}"),
            Err(_) => panic!("no request within {PATIENCE:?}"),
        }
    }

    /// Assert that the client sends nothing for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(message) = tokio::time::timeout(wait, self.requests.message()).await {
            panic!("unexpected request: {message:?}");
        }
    }

    /// Send a response.
    pub fn send(&self, response: DiscoveryResponse) {
        self.responses
            .send(Ok(response))
            .expect("the server side of the stream is gone");
    }

    /// End the stream with a gRPC error.
    pub fn fail(self, status: Status) {
        let _ = self.responses.send(Err(status));
    }
}

struct Service {
    streams: mpsc::UnboundedSender<AdsStream>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.streams
            .send(AdsStream {
                requests: request.into_inner(),
                responses: tx,
            })
            .map_err(|_| Status::unavailable("test is gone"))?;
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "delta xDS is not part of this test server",
        ))
    }
}

/// The fake control plane.
pub struct FakeAds {
    /// Where it listens.
    pub addr: SocketAddr,
    streams: mpsc::UnboundedReceiver<AdsStream>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl FakeAds {
    /// Listen on `addr` (port 0 for any).
    pub async fn start(addr: SocketAddr) -> FakeAds {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the fake ADS server");
        let addr = listener.local_addr().unwrap();
        let (streams_tx, streams) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let service = AggregatedDiscoveryServiceServer::new(Service {
            streams: streams_tx,
        });
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = shutdown_rx.await;
                })
                .await
                .expect("fake ADS server");
        });
        FakeAds {
            addr,
            streams,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// The next stream a client opens.
    pub async fn next_stream(&mut self) -> AdsStream {
        tokio::time::timeout(PATIENCE, self.streams.recv())
            .await
            .expect("no stream opened in time")
            .expect("server gone")
    }

    /// Shut the server down and wait until its port is free. Streams not yet taken by the
    /// test, and any opened from now on, are ended first, so that shutdown does not wait on them.
    pub async fn stop(self) {
        let FakeAds {
            streams,
            shutdown,
            task,
            ..
        } = self;
        drop(streams);
        if let Some(shutdown) = shutdown {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("server did not stop")
            .expect("server task failed");
    }
}

/// A running client and the handle the proxy would hold.
pub struct Client {
    /// The proxy's view.
    pub handle: XdsHandle,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Wait until the status satisfies `f`.
    pub async fn wait_status(&self, what: &str, f: impl Fn(&XdsStatus) -> bool) -> XdsStatus {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let status = self.handle.status();
            if f(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; status {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until the published snapshot satisfies `f`.
    pub async fn wait_config(
        &self,
        what: &str,
        f: impl Fn(&ProxyConfig) -> bool,
    ) -> Arc<ProxyConfig> {
        let mut rx = self.handle.subscribe();
        let result = tokio::time::timeout(PATIENCE, rx.wait_for(|c| f(c))).await;
        match result {
            Ok(Ok(config)) => config.clone(),
            _ => panic!(
                "timed out waiting for {what}; config {:?}",
                self.handle.current()
            ),
        }
    }
}

/// The node of the test pod.
pub fn node() -> NodeInfo {
    NodeInfo {
        pod_name: "productpage-v1-7d4b9".into(),
        namespace: "default".into(),
        ip: "10.1.0.9".parse().unwrap(),
        labels: BTreeMap::from([
            ("app".to_string(), "productpage".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]),
        service_account: "bookinfo-productpage".into(),
        cluster_domain: "cluster.local".into(),
    }
}

/// Start a client towards `address` with short backoffs.
pub fn start_client(address: String) -> Client {
    let (client, handle) = XdsClient::new(ClientOptions {
        address,
        node: node(),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    });
    Client {
        handle,
        task: tokio::spawn(client.run()),
    }
}

/// The resource type of a request.
pub fn type_of(request: &DiscoveryRequest) -> ResourceType {
    ResourceType::from_type_url(&request.type_url).expect("a known type")
}

/// A response.
pub fn response(
    t: ResourceType,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: t.type_url().into(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

fn sock(ip: &str, port: u32) -> SocketAddress {
    SocketAddress {
        address: ip.into(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
        ..Default::default()
    }
}

fn addr(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(sock(ip, port))),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn base_cluster(name: &str, t: cluster::DiscoveryType, lb: cluster::LbPolicy) -> cl::Cluster {
    cl::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(t as i32)),
        connect_timeout: Some(PbDuration {
            seconds: 10,
            nanos: 0,
        }),
        lb_policy: lb as i32,
        ..Default::default()
    }
}

/// `outbound|PORT||HOST`, EDS over ADS, HTTP/2 upstream.
pub fn outbound_cluster(name: &str) -> Any {
    let mut c = base_cluster(
        name,
        cluster::DiscoveryType::Eds,
        cluster::LbPolicy::RoundRobin,
    );
    c.eds_cluster_config = Some(cluster::EdsClusterConfig {
        eds_config: Some(ads()),
        service_name: name.into(),
    });
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        pack_any(HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(
                        explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            )),
            ..Default::default()
        }),
    );
    pack_any(c)
}

/// `inbound|PORT||`, ORIGINAL_DST bound to 127.0.0.6.
pub fn inbound_cluster(port: u16) -> Any {
    let mut c = base_cluster(
        &format!("inbound|{port}||"),
        cluster::DiscoveryType::OriginalDst,
        cluster::LbPolicy::ClusterProvided,
    );
    c.upstream_bind_config = Some(BindConfig {
        source_address: Some(sock("127.0.0.6", 0)),
        ..Default::default()
    });
    pack_any(c)
}

/// `PassthroughCluster` and `BlackHoleCluster`.
pub fn special_clusters() -> Vec<Any> {
    vec![
        pack_any(base_cluster(
            "PassthroughCluster",
            cluster::DiscoveryType::OriginalDst,
            cluster::LbPolicy::ClusterProvided,
        )),
        pack_any(base_cluster(
            "BlackHoleCluster",
            cluster::DiscoveryType::Static,
            cluster::LbPolicy::RoundRobin,
        )),
    ]
}

/// A cluster the proxy cannot apply (DNS discovery without a load assignment).
pub fn dns_cluster(name: &str) -> Any {
    pack_any(base_cluster(
        name,
        cluster::DiscoveryType::StrictDns,
        cluster::LbPolicy::RoundRobin,
    ))
}

/// A load assignment with the given endpoint IPs on `port`, under one locality.
pub fn load_assignment(name: &str, ips: &[&str], port: u32) -> Any {
    pack_any(ep::ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![ep::LocalityLbEndpoints {
            locality: Some(Locality {
                region: "local".into(),
                ..Default::default()
            }),
            lb_endpoints: ips
                .iter()
                .map(|ip| ep::LbEndpoint {
                    host_identifier: Some(ep::lb_endpoint::HostIdentifier::Endpoint(
                        ep::Endpoint {
                            address: Some(addr(ip, port)),
                            ..Default::default()
                        },
                    )),
                    health_status: envoy_types::pb::envoy::config::core::v3::HealthStatus::Healthy
                        as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn tcp_chain(name: &str, cluster: &str, port: Option<u32>) -> lis::FilterChain {
    lis::FilterChain {
        name: name.into(),
        filter_chain_match: port.map(|p| lis::FilterChainMatch {
            destination_port: Some(envoy_types::pb::google::protobuf::UInt32Value { value: p }),
            ..Default::default()
        }),
        filters: vec![network_filter(
            "envoy.filters.network.tcp_proxy",
            pack_any(tcp::TcpProxy {
                stat_prefix: cluster.into(),
                cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
                ..Default::default()
            }),
        )],
        ..Default::default()
    }
}

fn network_filter(name: &str, config: Any) -> lis::Filter {
    lis::Filter {
        name: name.into(),
        config_type: Some(lis::filter::ConfigType::TypedConfig(config)),
    }
}

/// `virtualOutbound` on 15001: BlackHole for 15001, passthrough by default.
pub fn virtual_outbound() -> Any {
    pack_any(lis::Listener {
        name: "virtualOutbound".into(),
        address: Some(addr("0.0.0.0", 15001)),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: envoy_types::pb::envoy::config::core::v3::TrafficDirection::Outbound
            as i32,
        filter_chains: vec![tcp_chain(
            "virtualOutbound-blackhole",
            "BlackHoleCluster",
            Some(15001),
        )],
        default_filter_chain: Some(tcp_chain(
            "PassthroughFilterChain",
            "PassthroughCluster",
            None,
        )),
        ..Default::default()
    })
}

/// `0.0.0.0_PORT`, not bound, HCM with RDS route `PORT` and the router.
pub fn http_listener(port: u32) -> Any {
    http_listener_with_filter(port, "envoy.filters.network.http_connection_manager", None)
}

/// Like [`http_listener`], but with the network filter replaced when `filter` is given.
pub fn http_listener_with_filter(port: u32, name: &str, filter: Option<Any>) -> Any {
    let manager = hcm::HttpConnectionManager {
        stat_prefix: format!("outbound_0.0.0.0_{port}"),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(ads()),
                route_config_name: port.to_string(),
            },
        )),
        ..Default::default()
    };
    pack_any(lis::Listener {
        name: format!("0.0.0.0_{port}"),
        address: Some(addr("0.0.0.0", port)),
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: envoy_types::pb::envoy::config::core::v3::TrafficDirection::Outbound
            as i32,
        filter_chains: vec![lis::FilterChain {
            filters: vec![network_filter(
                name,
                filter.unwrap_or_else(|| pack_any(manager)),
            )],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// Route `PORT`: a virtual host per (host, cluster) and `allow_any`.
pub fn route_config(port: u16, hosts: &[(&str, &str)]) -> Any {
    let route = |cluster: &str| rt::Route {
        r#match: Some(rt::RouteMatch {
            path_specifier: Some(rt::route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(rt::route::Action::Route(rt::RouteAction {
            cluster_specifier: Some(rt::route_action::ClusterSpecifier::Cluster(cluster.into())),
            timeout: Some(PbDuration::default()),
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut virtual_hosts: Vec<rt::VirtualHost> = hosts
        .iter()
        .map(|(host, cluster)| rt::VirtualHost {
            name: format!("{host}:{port}"),
            domains: vec![host.to_string(), format!("{host}:{port}")],
            routes: vec![route(cluster)],
            ..Default::default()
        })
        .collect();
    virtual_hosts.push(rt::VirtualHost {
        name: "allow_any".into(),
        domains: vec!["*".into()],
        routes: vec![route("PassthroughCluster")],
        ..Default::default()
    });
    pack_any(rt::RouteConfiguration {
        name: port.to_string(),
        virtual_hosts,
        ..Default::default()
    })
}

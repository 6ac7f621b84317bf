//! The real `mesh-proxy` on loopback: HTTP routing (RDS through original-destination hand-off
//! on the outbound listener, inline routes on the inbound listener), HTTP/2, gRPC streaming,
//! WebSocket, Envoy's local replies and the access log.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::upstreams::{grpc_echo, http_echo, ws_echo};
use common::xds::*;
use common::{free_port, get, Ports, Proxy};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use futures::{SinkExt, StreamExt};

struct Upstreams {
    echo1: SocketAddr,
    echo2: SocketAddr,
    inbound_echo: SocketAddr,
    ws: SocketAddr,
    grpc: SocketAddr,
    dead: SocketAddr,
}

async fn upstreams() -> Upstreams {
    Upstreams {
        echo1: http_echo("echo1").await,
        echo2: http_echo("echo2").await,
        inbound_echo: http_echo("app").await,
        ws: ws_echo().await,
        grpc: grpc_echo().await,
        dead: SocketAddr::from(([127, 0, 0, 1], free_port())),
    }
}

/// Istio-shaped config: `virtualOutbound` hands port OUT to `0.0.0.0_OUT` (RDS `OUT`);
/// `virtualInbound` has an HTTP chain (inline route, upstream bound to 127.0.0.6) for
/// destination port IN.
fn resources(ports: &Ports, u: &Upstreams) -> Resources {
    let out = ports.outbound.port();
    let inb = ports.inbound.port();
    let rds = out.to_string();
    let routes = route_config(
        &rds,
        vec![
            vhost(
                "echo",
                &["echo", "echo:80"],
                vec![route_to("outbound|80||echo", None)],
            ),
            vhost(
                "h1only",
                &["h1only"],
                vec![route_to("outbound|80||h1only", None)],
            ),
            vhost(
                "empty",
                &["empty"],
                vec![route_to("outbound|80||empty", None)],
            ),
            vhost(
                "nocluster",
                &["nocluster"],
                vec![route_to("outbound|80||missing", None)],
            ),
            vhost("dead", &["dead"], vec![route_to("outbound|80||dead", None)]),
            vhost(
                "slow",
                &["slow"],
                vec![route_to(
                    "outbound|80||echo",
                    Some(Duration::from_millis(300)),
                )],
            ),
            vhost("ws", &["ws"], vec![route_to("outbound|80||ws", None)]),
            vhost(
                "grpc",
                &["grpc", "grpc:80"],
                vec![route_to("outbound|80||grpc", None)],
            ),
        ],
    );
    let mut inbound_cluster =
        static_cluster("inbound|80||", &[u.inbound_echo], Proto::UseDownstream);
    inbound_cluster.upstream_bind_config =
        original_dst_cluster("x", Some("127.0.0.6")).upstream_bind_config;
    let inbound_routes = route_config(
        &format!("inbound|{inb}||"),
        vec![vhost(
            "inbound|http|80",
            &["*"],
            vec![route_to("inbound|80||", None)],
        )],
    );
    Resources::default()
        .listener(virtual_outbound(
            vec![chain(
                "blackhole",
                Some(on_port(15001, &[])),
                tcp("BlackHoleCluster", None),
            )],
            Some(chain(
                "PassthroughFilterChain",
                None,
                tcp("PassthroughCluster", None),
            )),
        ))
        .listener(listener(
            &format!("0.0.0.0_{out}"),
            &format!("0.0.0.0:{out}"),
            false,
            false,
            false,
            vec![chain("", None, hcm_rds(&rds))],
            None,
        ))
        .listener(virtual_inbound(
            vec![chain(
                &format!("0.0.0.0_{inb}"),
                Some(on_port(inb, &[])),
                hcm_inline(inbound_routes),
            )],
            None,
        ))
        .route(routes)
        .cluster(original_dst_cluster("PassthroughCluster", None))
        .cluster(static_cluster("BlackHoleCluster", &[], Proto::Http1))
        .cluster(eds_cluster("outbound|80||echo", Proto::UseDownstream))
        .cluster(static_cluster(
            "outbound|80||h1only",
            &[u.echo1],
            Proto::Http1,
        ))
        .cluster(eds_cluster("outbound|80||empty", Proto::Http1))
        .cluster(static_cluster("outbound|80||dead", &[u.dead], Proto::Http1))
        .cluster(static_cluster("outbound|80||ws", &[u.ws], Proto::Http1))
        .cluster(eds_cluster("outbound|80||grpc", Proto::Http2))
        .cluster(inbound_cluster)
        .endpoints(cla("outbound|80||echo", &[u.echo1, u.echo2]))
        .endpoints(cla("outbound|80||empty", &[]))
        .endpoints(cla("outbound|80||grpc", &[u.grpc]))
}

async fn start() -> (Proxy, Upstreams) {
    let u = upstreams().await;
    let ports = Ports::new();
    let ads = serve_ads(resources(&ports, &u)).await;
    let proxy = Proxy::start(ads, ports, &[]);
    proxy.wait_ready().await;
    (proxy, u)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_authority_with_round_robin() {
    let (proxy, _u) = start().await;
    let a = get(proxy.outbound, "echo", "/hello?x=1", false).await;
    let b = get(proxy.outbound, "echo:80", "/hello", false).await;
    assert_eq!((a.status, b.status), (200, 200), "{} / {}", a.body, b.body);
    let (a, b) = (a.json(), b.json());
    let mut names = [a["name"].as_str().unwrap(), b["name"].as_str().unwrap()];
    names.sort();
    assert_eq!(names, ["echo1", "echo2"], "round robin over both endpoints");
    assert_eq!(a["path"], "/hello?x=1");
    assert_eq!(a["host"], "echo");
    assert_eq!(a["version"], "HTTP/1.1");
    assert!(a["headers"]["x-request-id"]
        .as_str()
        .is_some_and(|id| id.len() == 36));

    let log = proxy.wait_log(|l| l["path"] == "/hello?x=1").await;
    assert_eq!(log["method"], "GET");
    assert_eq!(log["protocol"], "HTTP/1.1");
    assert_eq!(log["response_code"], 200);
    assert_eq!(log["response_flags"], "-");
    assert_eq!(log["authority"], "echo");
    assert_eq!(log["upstream_cluster"], "outbound|80||echo");
    assert_eq!(log["route_name"], "default");
    assert_eq!(log["downstream_local_address"], proxy.outbound.to_string());
    assert!(log["upstream_host"].as_str().is_some());
    assert!(log["downstream_remote_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(log["start_time"].as_str().unwrap().ends_with('Z'));
    assert!(log["bytes_sent"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_are_envoys() {
    let (proxy, _u) = start().await;
    let nr = get(proxy.outbound, "unknown.example", "/", false).await;
    assert_eq!(nr.status, 404);
    let uh = get(proxy.outbound, "empty", "/", false).await;
    assert_eq!((uh.status, uh.body.as_str()), (503, "no healthy upstream"));
    let nc = get(proxy.outbound, "nocluster", "/", false).await;
    assert_eq!(nc.status, 503);
    let uf = get(proxy.outbound, "dead", "/", false).await;
    assert_eq!(uf.status, 503);
    assert_eq!(
        uf.body,
        "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
    );
    let ut = get(proxy.outbound, "slow", "/?delay_ms=2000", false).await;
    assert_eq!(
        (ut.status, ut.body.as_str()),
        (504, "upstream request timeout")
    );
    let fast = get(proxy.outbound, "slow", "/?delay_ms=10", false).await;
    assert_eq!(fast.status, 200);
    // The route timeout bounds the whole response, not each read: a body still trickling
    // in (a chunk every 100 ms) when it expires is cut short.
    let trickle = get(proxy.outbound, "slow", "/?trickle=10", false).await;
    assert_eq!(trickle.status, 200, "headers were sent before the timeout");
    let chunks = trickle.body.matches("chunk").count();
    assert!((1..10).contains(&chunks), "{chunks} chunks");
    let log = proxy.wait_log(|l| l["path"] == "/?trickle=10").await;
    assert_eq!(log["response_flags"], "UT");

    for (authority, code, flag) in [
        ("unknown.example", 404, "NR"),
        ("empty", 503, "UH"),
        ("nocluster", 503, "NC"),
        ("dead", 503, "UF"),
        ("slow", 504, "UT"),
    ] {
        let log = proxy
            .wait_log(|l| l["authority"] == authority && l["response_code"] == code)
            .await;
        assert_eq!(log["response_flags"], flag, "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_downstream_uses_the_downstream_protocol_upstream() {
    let (proxy, _u) = start().await;
    let r = get(proxy.outbound, "echo", "/h2", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], "HTTP/2.0");
    // An HTTP/1.1 cluster gets HTTP/1.1 whatever the downstream speaks.
    let r = get(proxy.outbound, "h1only", "/h1", true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], "HTTP/1.1");
    assert_eq!(r.json()["host"], "h1only");
    let log = proxy.wait_log(|l| l["path"] == "/h2").await;
    assert_eq!(log["protocol"], "HTTP/2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bidirectional_streaming() {
    let (proxy, _u) = start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.outbound))
        .unwrap()
        .origin("http://grpc:80".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 1..=3 {
        tx.send(DiscoveryRequest {
            type_url: format!("message-{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
        // Each reply arrives while the stream stays open: real streaming, not buffering.
        let reply = responses.message().await.unwrap().unwrap();
        assert_eq!(reply.type_url, format!("message-{i}"));
        assert_eq!(reply.nonce, i.to_string());
    }
    drop(tx);
    assert!(responses.message().await.unwrap().is_none());
    let log = proxy
        .wait_log(|l| l["upstream_cluster"] == "outbound|80||grpc")
        .await;
    assert_eq!(log["response_code"], 200);
    assert_eq!(log["protocol"], "HTTP/2");

    // No healthy upstream, as a gRPC client sees it: UNAVAILABLE.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.outbound))
        .unwrap()
        .origin("http://empty".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let status = client
        .stream_aggregated_resources(futures::stream::empty())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "no healthy upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade() {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let (proxy, _u) = start().await;
    let stream = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    let request = "ws://ws/chat".into_client_request().unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["one", "two"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
    let log = proxy.wait_log(|l| l["path"] == "/chat").await;
    assert_eq!(log["response_code"], 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_inline_route_binds_to_127_0_0_6() {
    let (proxy, _u) = start().await;
    let r = get(proxy.inbound, "reviews:9080", "/inbound", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["name"], "app");
    assert!(
        seen["peer"].as_str().unwrap().starts_with("127.0.0.6:"),
        "{seen}"
    );
    let r = get(proxy.inbound, "anything", "/inbound-h2", true).await;
    assert_eq!(r.json()["version"], "HTTP/2.0");
    let log = proxy.wait_log(|l| l["path"] == "/inbound").await;
    assert_eq!(log["upstream_cluster"], "inbound|80||");
    assert_eq!(log["downstream_local_address"], proxy.inbound.to_string());
}

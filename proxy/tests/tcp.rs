//! The real `mesh-proxy` on loopback: protocol sniffing on an auto port (HTTP chain by
//! application protocol, TCP chain otherwise), server-first TCP, the TCP proxy's access log
//! and idle timeout, and the refusal to loop a passthrough connection back to itself.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::upstreams::{http_echo, tcp_banner};
use common::xds::*;
use common::{get, Ports, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BANNER: &[u8] = b"220 banner\r\n";

/// `virtualInbound`, Istio's auto port on IN: HTTP by sniffing, else TCP to a server-first
/// service (idle timeout 1 s). `virtualOutbound` has no listener for OUT: its passthrough
/// chain applies.
fn resources(ports: &Ports, http: SocketAddr, banner: SocketAddr) -> Resources {
    let inb = ports.inbound.port();
    let routes = route_config(
        "inbound|auto||",
        vec![vhost(
            "inbound|http|auto",
            &["*"],
            vec![route_to("inbound|http||", None)],
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
        .listener(virtual_inbound(
            vec![
                chain(
                    "http",
                    Some(on_port(inb, &["http/1.1", "h2c"])),
                    hcm_inline(routes),
                ),
                chain(
                    "tcp",
                    Some(on_port(inb, &[])),
                    tcp("inbound|tcp||", Some(Duration::from_secs(1))),
                ),
            ],
            None,
        ))
        .cluster(original_dst_cluster("PassthroughCluster", None))
        .cluster(static_cluster("BlackHoleCluster", &[], Proto::Http1))
        .cluster(static_cluster(
            "inbound|http||",
            &[http],
            Proto::UseDownstream,
        ))
        .cluster(static_cluster("inbound|tcp||", &[banner], Proto::Http1))
}

async fn start() -> Proxy {
    let http = http_echo("app").await;
    let banner = tcp_banner(BANNER).await;
    let ports = Ports::new();
    let ads = serve_ads(resources(&ports, http, banner)).await;
    let proxy = Proxy::start(ads, ports, &["--protocol-detection-timeout", "100ms"]);
    proxy.wait_ready().await;
    proxy
}

async fn read_at_least(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < n {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("data in time")
            .unwrap();
        if read == 0 {
            break;
        }
        got.extend_from_slice(&buf[..read]);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_port_sniffs_http_and_tcp() {
    let proxy = start().await;
    // HTTP/1.1 and h2c go to the HTTP chain.
    let r = get(proxy.inbound, "app", "/sniffed", false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(proxy.inbound, "app", "/sniffed-h2", true).await;
    assert_eq!(r.json()["version"], "HTTP/2.0");

    // A request line split over two segments is still HTTP.
    let mut s = TcpStream::connect(proxy.inbound).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"GET /split HT").await.unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    s.write_all(b"TP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"path\":\"/split\""), "{reply}");

    // Binary first bytes: TCP at once, to the banner service, which then echoes.
    let started = Instant::now();
    let mut s = TcpStream::connect(proxy.inbound).await.unwrap();
    s.write_all(b"\x00\x01ping").await.unwrap();
    let got = read_at_least(&mut s, BANNER.len() + 6).await;
    assert_eq!(got, [BANNER, b"\x00\x01ping"].concat());
    assert!(started.elapsed() < Duration::from_secs(2));
    s.shutdown().await.unwrap();
    drop(s);

    let log = proxy
        .wait_log(|l| l["upstream_cluster"] == "inbound|tcp||" && l["bytes_received"] == 6)
        .await;
    assert_eq!(log["response_code"], 0);
    assert!(log["protocol"].is_null());
    assert!(log["method"].is_null());
    assert_eq!(log["response_flags"], "-");
    assert_eq!(
        log["bytes_sent"].as_u64().unwrap(),
        (BANNER.len() + 6) as u64
    );
    assert_eq!(log["downstream_local_address"], proxy.inbound.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_protocol_does_not_stall() {
    let proxy = start().await;
    let started = Instant::now();
    let mut s = TcpStream::connect(proxy.inbound).await.unwrap();
    // The client says nothing: after the detection timeout the connection is TCP and the
    // server's banner comes through.
    let got = read_at_least(&mut s, BANNER.len()).await;
    assert_eq!(got, BANNER);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(90), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_idle_timeout_closes_quiet_connections() {
    let proxy = start().await;
    let mut s = TcpStream::connect(proxy.inbound).await.unwrap();
    s.write_all(b"\x00hi").await.unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    // The result (EOF or reset) does not matter, only that the proxy closed it.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("closed by the idle timeout");
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(800),
        "{closed_after:?}"
    );
    assert!(closed_after < Duration::from_secs(3), "{closed_after:?}");
    let log = proxy
        .wait_log(|l| l["upstream_cluster"] == "inbound|tcp||" && l["response_flags"] == "SI")
        .await;
    assert_eq!(log["bytes_received"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_to_the_listener_itself_is_refused() {
    let proxy = start().await;
    let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
        .await
        .expect("the proxy closes the connection instead of looping");
    assert!(
        read.is_err() || buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    let log = proxy
        .wait_log(|l| l["upstream_cluster"] == "PassthroughCluster")
        .await;
    assert_eq!(log["response_flags"], "UH");
    assert_eq!(log["downstream_local_address"], proxy.outbound.to_string());
    // Only one connection was made: no loop through the proxy.
    let passthrough = proxy
        .access_logs()
        .into_iter()
        .filter(|l| l["upstream_cluster"] == "PassthroughCluster")
        .count();
    assert_eq!(passthrough, 1);
}

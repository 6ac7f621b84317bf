//! The proxy's own health statistics after known traffic through the real `mesh-proxy` on
//! loopback, read as an operator reads them: `/stats/prometheus` parsed with a Prometheus text
//! parser, and the admin `/clusters` page in Envoy's `cluster::host::stat::value` form.
//!
//! The scene: the auto inbound port sniffs HTTP (routed by `Host` to a kept-alive echo, to a
//! server that closes every connection after its answer, and to a closed port) and TCP (to an
//! echo server). Checked: downstream and upstream connections (total and active, HTTP and
//! TCP, active going back to 0 when the connections close), per-cluster request counts,
//! Istio's `istio_request_bytes`, the xDS connection state and Envoy-named config versions,
//! and the per-host counters of `/clusters`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::upstreams::{http_echo, tcp_echo};
use common::xds::*;
use common::{curl, get, Ports, Proxy};
use prometheus_parse::{Sample, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEEP: &str = "inbound|keep||";
const CLOSE: &str = "inbound|close||";
const DEAD: &str = "inbound|dead||";
const TCP: &str = "inbound|tcp||";

/// An HTTP/1.1 server that answers `ok` with `Connection: close` and closes every connection.
async fn closing_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = stream.write_all(reply).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

fn resources(ports: &Ports, keep: SocketAddr, close: SocketAddr, tcp_app: SocketAddr) -> Resources {
    let inb = ports.inbound.port();
    let dead = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let routes = route_config(
        "inbound|auto||",
        vec![
            vhost("close", &["close"], vec![route_to(CLOSE, None)]),
            vhost("dead", &["dead"], vec![route_to(DEAD, None)]),
            vhost("keep", &["*"], vec![route_to(KEEP, None)]),
        ],
    );
    Resources::default()
        .listener(virtual_inbound(
            vec![
                chain(
                    "http",
                    Some(on_port(inb, &["http/1.1", "h2c"])),
                    hcm_inline(routes),
                ),
                chain("tcp", Some(on_port(inb, &[])), tcp(TCP, None)),
            ],
            None,
        ))
        .cluster(static_cluster(KEEP, &[keep], Proto::Http1))
        .cluster(static_cluster(CLOSE, &[close], Proto::Http1))
        .cluster(static_cluster(DEAD, &[dead], Proto::Http1))
        .cluster(static_cluster(TCP, &[tcp_app], Proto::Http1))
}

/// `/clusters` as `(cluster, host, stat) -> value` for the per-host lines.
async fn host_stats(proxy: &Proxy) -> HashMap<(String, String, String), String> {
    let text = curl(&["-s", &format!("http://{}/clusters", proxy.admin)]).await;
    text.lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split("::").collect();
            match parts[..] {
                [c, h, s, v] if h.parse::<SocketAddr>().is_ok() => {
                    Some(((c.into(), h.into(), s.into()), v.into()))
                }
                _ => None,
            }
        })
        .collect()
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let text = curl(&["-s", &format!("http://{addr}/stats/prometheus")]).await;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .expect("valid Prometheus text")
        .samples
}

fn find<'a>(samples: &'a [Sample], metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

fn counter(s: &Sample) -> f64 {
    match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{}: not a number: {other:?}", s.metric),
    }
}

/// The value of `metric{cluster_name=cluster}` (0 when absent).
fn of(samples: &[Sample], metric: &str, cluster: &str) -> f64 {
    find(samples, metric, &[("cluster_name", cluster)]).map_or(0.0, counter)
}

fn plain(samples: &[Sample], metric: &str) -> f64 {
    counter(find(samples, metric, &[]).unwrap_or_else(|| panic!("{metric} is exported")))
}

/// Scrape until `ok` holds for the samples, or panic with the last ones after 10 s.
async fn scrape_until(proxy: &Proxy, what: &str, ok: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(proxy.stats).await;
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_requests_and_versions_are_counted_as_envoy_names_them() {
    let keep = http_echo("keep").await;
    let close = closing_server().await;
    let tcp_app = tcp_echo().await;
    let ports = Ports::new();
    let ads = serve_ads(resources(&ports, keep, close, tcp_app)).await;
    let proxy = Proxy::start(ads, ports, &["--protocol-detection-timeout", "100ms"]);
    proxy.wait_ready().await;

    // Before any traffic: connected, every type applied once, versions under Envoy's names.
    let s = scrape(proxy.stats).await;
    assert_eq!(plain(&s, "envoy_control_plane_connected_state"), 1.0);
    for metric in [
        "envoy_cluster_manager_cds_version",
        "envoy_listener_manager_lds_version",
    ] {
        assert!(plain(&s, metric) > 0.0, "{metric}");
    }
    assert!(
        !s.iter().any(|x| x.metric == "envoy_control_plane_version"),
        "the old non-Envoy name is gone"
    );
    assert_eq!(plain(&s, "envoy_listener_downstream_cx_total"), 0.0);

    // Three GETs to the kept-alive echo, one POST with a 1000-byte body.
    for i in 0..3 {
        let r = get(proxy.inbound, "keep", &format!("/k{i}"), false).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let body = "x".repeat(1000);
    let url = format!("http://{}/post", proxy.inbound);
    let status = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Host: keep",
        "--data",
        &body,
        &url,
    ])
    .await;
    assert_eq!(status, "200");
    // Two to the server that closes its connections, one to a closed port (503 UF).
    for i in 0..2 {
        let r = get(proxy.inbound, "close", &format!("/c{i}"), false).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    assert_eq!(get(proxy.inbound, "dead", "/", false).await.status, 503);

    // A TCP connection, held open: binary first bytes go to the TCP chain.
    let mut held = TcpStream::connect(proxy.inbound).await.unwrap();
    held.write_all(b"\x00\x01ping").await.unwrap();
    let mut got = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), held.read_exact(&mut got))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&got, b"\x00\x01ping");

    // 7 HTTP connections (curl opens one per request) and the TCP one; only the TCP one open.
    let s = scrape_until(&proxy, "the HTTP connections close", |s| {
        of(s, "envoy_cluster_upstream_cx_active", CLOSE) == 0.0
            && plain(s, "envoy_listener_downstream_cx_active") == 1.0
    })
    .await;
    assert_eq!(plain(&s, "envoy_listener_downstream_cx_total"), 8.0);
    assert_eq!(plain(&s, "envoy_http_downstream_rq_total"), 7.0);
    // Per-cluster requests.
    assert_eq!(of(&s, "envoy_cluster_upstream_rq_total", KEEP), 4.0);
    assert_eq!(of(&s, "envoy_cluster_upstream_rq_total", CLOSE), 2.0);
    assert_eq!(of(&s, "envoy_cluster_upstream_cx_connect_fail", DEAD), 1.0);
    // The echo keeps its connections: all still open. The closing server's two are closed.
    let keep_total = of(&s, "envoy_cluster_upstream_cx_total", KEEP);
    assert!((1.0..=4.0).contains(&keep_total), "{keep_total}");
    assert_eq!(of(&s, "envoy_cluster_upstream_cx_active", KEEP), keep_total);
    assert_eq!(of(&s, "envoy_cluster_upstream_cx_total", CLOSE), 2.0);
    // TCP: one connection, open now.
    assert_eq!(of(&s, "envoy_cluster_upstream_cx_total", TCP), 1.0);
    assert_eq!(of(&s, "envoy_cluster_upstream_cx_active", TCP), 1.0);
    // Istio's request size: the POST's 1000 bytes; the 7 requests (the 503 included) counted.
    let total = |metric: &str| -> f64 {
        s.iter()
            .filter(|x| x.metric == metric && x.labels.get("reporter") == Some("destination"))
            .map(counter)
            .sum()
    };
    assert_eq!(total("istio_request_bytes_sum"), 1000.0);
    assert_eq!(total("istio_request_bytes_count"), 7.0);

    // `/clusters`: Envoy's per-host counters.
    let hosts = host_stats(&proxy).await;
    let host = |cluster: &str, addr: SocketAddr, stat: &str| -> u64 {
        let key = (cluster.to_string(), addr.to_string(), stat.to_string());
        hosts
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} in /clusters: {hosts:#?}"))
            .parse()
            .unwrap()
    };
    for (stat, value) in [
        ("cx_active", 0),
        ("cx_connect_fail", 0),
        ("cx_total", 2),
        ("rq_active", 0),
        ("rq_error", 0),
        ("rq_success", 2),
        ("rq_timeout", 0),
        ("rq_total", 2),
    ] {
        assert_eq!(host(CLOSE, close, stat), value, "{CLOSE} {stat}");
    }
    assert_eq!(host(KEEP, keep, "rq_total"), 4);
    assert_eq!(host(KEEP, keep, "rq_success"), 4);
    assert_eq!(host(KEEP, keep, "cx_total"), keep_total as u64);
    assert_eq!(host(KEEP, keep, "cx_active"), keep_total as u64);
    assert_eq!(host(TCP, tcp_app, "cx_total"), 1);
    assert_eq!(host(TCP, tcp_app, "cx_active"), 1);
    let dead = hosts
        .iter()
        .find(|((c, _, s), _)| c == DEAD && s == "cx_connect_fail")
        .map(|(_, v)| v.as_str());
    assert_eq!(dead, Some("1"), "{hosts:#?}");
    let dead_errors = hosts
        .iter()
        .find(|((c, _, s), _)| c == DEAD && s == "rq_error")
        .map(|(_, v)| v.as_str());
    assert_eq!(dead_errors, Some("1"));

    // The TCP connection closes: active goes back to 0, downstream and upstream.
    held.shutdown().await.unwrap();
    drop(held);
    scrape_until(&proxy, "the TCP connection closes", |s| {
        of(s, "envoy_cluster_upstream_cx_active", TCP) == 0.0
            && plain(s, "envoy_listener_downstream_cx_active") == 0.0
    })
    .await;
    let hosts = host_stats(&proxy).await;
    let key = (
        TCP.to_string(),
        tcp_app.to_string(),
        "cx_active".to_string(),
    );
    assert_eq!(hosts.get(&key).map(String::as_str), Some("0"));
}

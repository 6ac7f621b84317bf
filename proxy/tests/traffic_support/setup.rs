//! The scene of the traffic tests: mesh-echo and recording upstreams, the proxy fed by the
//! push ADS server, and a client that keeps its connections alive.
// Shared by several test binaries, each using a part.
#![allow(dead_code)]

use super::*;
use crate::common;
use bytes::Bytes;
use common::{Ports, Proxy};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_tests::echo::{BoundServer, ServerArgs};
use push_ads::PushAds;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use traffic_config::{resources, Backends};

/// A `mesh-echo` server named `reviews` at `version`, on a free HTTP (and gRPC) port.
pub async fn echo(version: &str) -> (SocketAddr, SocketAddr) {
    let server = BoundServer::bind(&ServerArgs {
        http_ports: vec![0],
        grpc_ports: vec![0],
        tcp_ports: vec![],
        tcp_banner_ports: vec![],
        name: "reviews".into(),
        version: version.into(),
        namespace: None,
    })
    .await
    .expect("mesh-echo binds");
    let ports = server.ports().clone();
    tokio::spawn(server.run());
    (
        SocketAddr::from(([127, 0, 0, 1], ports.http[0])),
        SocketAddr::from(([127, 0, 0, 1], ports.grpc[0])),
    )
}

/// The requests a [`recorder`] saw: each one's `Host` header and when it arrived.
pub type Hits = Arc<Mutex<Vec<(String, Instant)>>>;

/// An HTTP server that answers every request with `status` and records each request's
/// `Host` header and arrival time.
pub async fn recorder(status: u16) -> (SocketAddr, Hits) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let host = req
                                .headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            record.lock().unwrap().push((host, Instant::now()));
                            let _ = req.into_body().collect().await;
                            let mut resp = hyper::Response::new(Full::new(Bytes::from("recorded")));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

pub struct Setup {
    pub ads: PushAds,
    pub ports: Ports,
    pub backends: Backends,
    pub proxy: Proxy,
    pub mirrored: Hits,
    pub failed: Hits,
    pub failed2: Hits,
    pub v1: SocketAddr,
    pub client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

pub async fn start() -> Setup {
    let (v1, grpc) = echo("v1").await;
    let (v2, _) = echo("v2").await;
    let (v3, _) = echo("v3").await;
    let (failing, failed) = recorder(503).await;
    let (failing2, failed2) = recorder(503).await;
    let closed = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let (mirror, mirrored) = recorder(200).await;
    let ports = Ports::new();
    let backends = Backends {
        v1,
        v2,
        v3,
        grpc,
        failing,
        failing2,
        mirror,
        closed,
    };
    let ads = PushAds::start(resources(&ports, &backends)).await;
    let proxy = Proxy::start(ads.addr, ports, &[]);
    proxy.wait_ready().await;
    Setup {
        ads,
        ports,
        backends,
        proxy,
        mirrored,
        failed,
        failed2,
        v1,
        // Kept-alive connections, reused across requests and scenarios (local replies
        // included): a connection the proxy closed after a response saying keep-alive
        // would fail the next request on it.
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

/// A response as the test sees it.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub took: Duration,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn version(&self) -> String {
        self.json()["version"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Setup {
    pub async fn send(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.proxy.outbound))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = if method == "POST" {
            Full::new(Bytes::from_static(b"payload"))
        } else {
            Full::new(Bytes::new())
        };
        let started = Instant::now();
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            self.client.request(req.body(body).unwrap()),
        )
        .await
        .expect("answer in time")
        .expect("request succeeds");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            took: started.elapsed(),
        }
    }

    pub async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send("GET", host, path, headers).await
    }
}

/// The proxy's `/stats/prometheus`, parsed with a Prometheus text parser.
pub async fn scrape(proxy: &Proxy) -> Vec<prometheus_parse::Sample> {
    let url = format!("http://{}/stats/prometheus", proxy.stats);
    let text = common::curl(&["-s", &url]).await;
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text")
        .samples
}

/// The value of the first sample of `metric` with `labels` (`None`: no such sample).
pub fn sample(
    samples: &[prometheus_parse::Sample],
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{metric}: not a number: {other:?}"),
        })
}

/// `metric{cluster_name=cluster}`, 0 when absent.
pub fn cluster_stat(samples: &[prometheus_parse::Sample], metric: &str, cluster: &str) -> f64 {
    sample(samples, metric, &[("cluster_name", cluster)]).unwrap_or(0.0)
}

/// `/clusters`' per-host value of `stat` for the hosts of `cluster`, summed.
pub async fn host_stat(proxy: &Proxy, cluster: &str, stat: &str) -> u64 {
    let url = format!("http://{}/clusters", proxy.admin);
    let text = common::curl(&["-s", &url]).await;
    text.lines()
        .filter_map(|l| match l.split("::").collect::<Vec<_>>()[..] {
            [c, h, s, v] if c == cluster && s == stat && h.parse::<SocketAddr>().is_ok() => {
                v.parse::<u64>().ok()
            }
            _ => None,
        })
        .sum()
}

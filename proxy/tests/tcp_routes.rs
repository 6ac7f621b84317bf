//! VirtualService `tcp` and `tls` routes as istiod renders them, applied by the real
//! `mesh-proxy` on loopback with real sockets: a weighted TCP route on a port and destination
//! subnet splits raw TCP connections between two upstream versions in proportion, and a
//! `tls` route by `sniHosts` passes TLS connections through (not terminated) to the upstream
//! its SNI names, on one port; an unknown SNI reaches neither upstream.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use boring::ssl::{NameType, SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use common::xds::*;
use common::{Ports, Proxy};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChainMatch};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy, tcp_proxy::weighted_cluster::ClusterWeight, TcpProxy,
};
use envoy_types::util::pack_any;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V1: &str = "outbound|5432|v1|db.default.svc.cluster.local";
const V2: &str = "outbound|5432|v2|db.default.svc.cluster.local";
const ELSEWHERE: &str = "outbound|5432|other|db.default.svc.cluster.local";
const SECURE_A: &str = "outbound|443||a.example";
const SECURE_B: &str = "outbound|443||b.example";

/// A TCP proxy splitting connections between weighted clusters (Istio's weighted `tcp`
/// route).
fn tcp_weighted(stat: &str, clusters: &[(&str, u32)]) -> Filter {
    let config = TcpProxy {
        stat_prefix: stat.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
            tcp_proxy::WeightedCluster {
                clusters: clusters
                    .iter()
                    .map(|(name, weight)| ClusterWeight {
                        name: name.to_string(),
                        weight: *weight,
                        ..Default::default()
                    })
                    .collect(),
            },
        )),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(config))),
    }
}

/// A chain match on TLS with one of `names` as SNI (Istio's `tls` route `sniHosts`).
fn on_sni(names: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        server_names: names.iter().map(|s| s.to_string()).collect(),
        transport_protocol: "tls".into(),
        ..Default::default()
    }
}

/// The capture listener (`virtualOutbound`, passthrough by default) and the port's
/// non-bound listener `0.0.0.0_PORT` with `chains`, which the capture hands connections to.
fn outbound(
    ports: &Ports,
    chains: Vec<envoy_types::pb::envoy::config::listener::v3::FilterChain>,
) -> Resources {
    let port = ports.outbound.port();
    Resources::default()
        .listener(virtual_outbound(
            Vec::new(),
            Some(chain(
                "PassthroughFilterChain",
                None,
                tcp("PassthroughCluster", None),
            )),
        ))
        .listener(listener(
            &format!("0.0.0.0_{port}"),
            &format!("0.0.0.0:{port}"),
            false,
            false,
            false,
            chains,
            None,
        ))
        .cluster(original_dst_cluster("PassthroughCluster", None))
}

/// A TCP server that writes its name to every connection, then closes it.
async fn named(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = stream.write_all(name.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Open one raw TCP connection through the proxy; returns what the upstream wrote.
async fn name_through(proxy: SocketAddr) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the upstream's name in time")
        .expect("read the upstream's name");
    String::from_utf8(got).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_tcp_route_splits_connections_by_weight() {
    let (v1, v2, other) = (named("v1").await, named("v2").await, named("other").await);
    let ports = Ports::new();
    // Istio's `tcp` route with `destinationSubnets` becomes a chain on the destination
    // prefix: a route for another subnet exists on the same port and must not be chosen.
    let resources = outbound(
        &ports,
        vec![
            chain(
                "subnet-elsewhere",
                Some(on_prefix("10.96.4.10", 32)),
                tcp(ELSEWHERE, None),
            ),
            chain(
                "subnet-loopback",
                Some(on_prefix("127.0.0.1", 32)),
                tcp_weighted(V1, &[(V1, 80), (V2, 20)]),
            ),
        ],
    )
    .cluster(static_cluster(V1, &[v1], Proto::Http1))
    .cluster(static_cluster(V2, &[v2], Proto::Http1))
    .cluster(static_cluster(ELSEWHERE, &[other], Proto::Http1));
    let ads = serve_ads(resources).await;
    let proxy = Proxy::start(ads, ports, &[]);
    proxy.wait_ready().await;

    const N: usize = 400;
    let names: Vec<String> = futures::stream::iter(0..N)
        .map(|_| name_through(proxy.outbound))
        .buffer_unordered(16)
        .collect()
        .await;
    let count = |n: &str| names.iter().filter(|got| *got == n).count();
    let (n1, n2) = (count("v1"), count("v2"));
    assert_eq!(n1 + n2, N, "every connection reached v1 or v2: {names:?}");
    // 20% of 400 is 80 with sigma = sqrt(400 * 0.2 * 0.8) = 8: within 5 sigma.
    assert!((40..=120).contains(&n2), "v1 {n1}, v2 {n2}");

    // The access log names the chosen cluster of each connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let logged = proxy.access_logs();
        let by = |c: &str| logged.iter().filter(|l| l["upstream_cluster"] == c).count();
        if by(V1) + by(V2) == N {
            assert_eq!((by(V1), by(V2)), (n1, n2));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{logged:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A self-signed certificate for `host` (CN = `cn`), written to `dir`: (cert, key).
fn self_signed(dir: &Path, cn: &str, host: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
        .args(["-addext", &format!("subjectAltName=DNS:{host}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    (cert, key)
}

/// A TLS server with its own certificate: completes the handshake, writes its name and the
/// SNI it received, closes. Returns its address and its count of accepted connections.
fn tls_upstream(name: &'static str, cert: &Path, key: &Path) -> (SocketAddr, Arc<AtomicUsize>) {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    builder.set_certificate_chain_file(cert).unwrap();
    builder.set_private_key_file(key, SslFiletype::PEM).unwrap();
    let acceptor = builder.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let Ok(mut tls) = acceptor.accept(stream) else {
                    return;
                };
                let sni = tls.ssl().servername(NameType::HOST_NAME).unwrap_or("-");
                let line = format!("{name} sni={sni}");
                let _ = tls.write_all(line.as_bytes());
                let _ = tls.shutdown();
            });
        }
    });
    (addr, accepted)
}

/// A TLS connection through the proxy with SNI `sni`, trusting only `ca` (the upstream's own
/// certificate) and checking it names `sni`: the peer certificate's CN and what the upstream
/// wrote, or the handshake error.
fn tls_through(proxy: SocketAddr, sni: &str, ca: &Path) -> Result<(String, String), String> {
    use std::io::Read;
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_ca_file(ca).unwrap();
    builder.set_verify(SslVerifyMode::PEER);
    let connector = builder.build();
    let stream = std::net::TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut tls = connector
        .connect(sni, stream)
        .map_err(|e| format!("handshake: {e}"))?;
    let cn = tls
        .ssl()
        .peer_certificate()
        .expect("a peer certificate")
        .subject_name()
        .entries_by_nid(boring::nid::Nid::COMMONNAME)
        .next()
        .map(|e| e.data().as_utf8().unwrap().to_string())
        .unwrap_or_default();
    let mut body = String::new();
    let _ = tls.read_to_string(&mut body);
    Ok((cn, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_route_by_sni_passes_through_to_the_named_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = self_signed(dir.path(), "upstream-a", "a.example");
    let (cert_b, key_b) = self_signed(dir.path(), "upstream-b", "b.example");
    let (a, accepted_a) = tls_upstream("upstream-a", &cert_a, &key_a);
    let (b, accepted_b) = tls_upstream("upstream-b", &cert_b, &key_b);
    let ports = Ports::new();
    let resources = outbound(
        &ports,
        vec![
            chain("sni-a", Some(on_sni(&["a.example"])), tcp(SECURE_A, None)),
            chain("sni-b", Some(on_sni(&["b.example"])), tcp(SECURE_B, None)),
        ],
    )
    .cluster(static_cluster(SECURE_A, &[a], Proto::Http1))
    .cluster(static_cluster(SECURE_B, &[b], Proto::Http1));
    let ads = serve_ads(resources).await;
    let proxy = Proxy::start(ads, ports, &[]);
    proxy.wait_ready().await;
    let at = proxy.outbound;

    let through = |sni: &'static str, ca: PathBuf| {
        tokio::task::spawn_blocking(move || tls_through(at, sni, &ca))
    };
    // Each client trusts only its upstream's own certificate: the handshake completing
    // proves the proxy passed the ClientHello through rather than terminating TLS.
    for _ in 0..3 {
        let (cn, body) = through("a.example", cert_a.clone()).await.unwrap().unwrap();
        assert_eq!(cn, "upstream-a");
        assert_eq!(body, "upstream-a sni=a.example");
        let (cn, body) = through("b.example", cert_b.clone()).await.unwrap().unwrap();
        assert_eq!(cn, "upstream-b");
        assert_eq!(body, "upstream-b sni=b.example");
    }
    assert_eq!(accepted_a.load(Ordering::SeqCst), 3);
    assert_eq!(accepted_b.load(Ordering::SeqCst), 3);

    // An SNI no route names: no handshake, and neither upstream sees a connection.
    let unknown = through("c.example", cert_a.clone()).await.unwrap();
    assert!(unknown.is_err(), "{unknown:?}");
    assert_eq!(accepted_a.load(Ordering::SeqCst), 3);
    assert_eq!(accepted_b.load(Ordering::SeqCst), 3);

    let log = proxy.wait_log(|l| l["upstream_cluster"] == SECURE_A).await;
    assert_eq!(log["requested_server_name"], "a.example", "{log}");
}

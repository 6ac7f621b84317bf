use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use xds_client::model::FilterChainMatch;

use super::select::{self, ConnectionFacts, RAW_BUFFER};
use super::sniff::{self, classify, Detected, H2_PREFACE};

fn facts(dst: &str) -> ConnectionFacts<'static> {
    ConnectionFacts {
        destination: dst.parse::<SocketAddr>().unwrap(),
        server_name: None,
        transport_protocol: RAW_BUFFER,
    }
}

fn port(p: u16) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: Some(p),
        ..Default::default()
    }
}

fn apps(list: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        application_protocols: list.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn pick(chains: &[FilterChainMatch], dst: &str, app: Option<&str>) -> Option<usize> {
    let candidates = select::candidates(chains, &facts(dst));
    select::choose(chains, candidates, app)
}

#[test]
fn destination_port_beats_catch_all() {
    let chains = vec![FilterChainMatch::default(), port(9080), port(15001)];
    assert_eq!(pick(&chains, "10.0.0.1:9080", None), Some(1));
    assert_eq!(pick(&chains, "10.0.0.1:15001", None), Some(2));
    assert_eq!(pick(&chains, "10.0.0.1:1234", None), Some(0));
}

#[test]
fn longest_prefix_wins_and_mismatch_excludes() {
    let net = |s: &str| FilterChainMatch {
        prefix_ranges: vec![s.parse().unwrap()],
        ..Default::default()
    };
    let chains = vec![
        net("10.0.0.0/8"),
        net("10.1.0.0/16"),
        FilterChainMatch::default(),
    ];
    assert_eq!(pick(&chains, "10.1.2.3:80", None), Some(1));
    assert_eq!(pick(&chains, "10.2.2.3:80", None), Some(0));
    assert_eq!(pick(&chains, "192.168.0.1:80", None), Some(2));
    // Only specific chains and none contains the address: default chain.
    let chains = vec![net("10.0.0.0/8")];
    assert_eq!(pick(&chains, "192.168.0.1:80", None), None);
}

#[test]
fn application_protocol_level_and_sniff_decision() {
    // Istio's auto port: an HTTP chain by application protocol, a TCP chain without.
    let chains = vec![apps(&["http/1.1", "h2c"]), FilterChainMatch::default()];
    let c = select::candidates(&chains, &facts("10.0.0.1:9080"));
    assert!(select::needs_application_protocol(&chains, &c));
    assert_eq!(
        select::choose(&chains, c.clone(), Some("http/1.1")),
        Some(0)
    );
    assert_eq!(select::choose(&chains, c.clone(), Some("h2c")), Some(0));
    assert_eq!(select::choose(&chains, c, None), Some(1));
    // No candidate distinguishes protocols: no sniffing.
    let chains = vec![port(9080), FilterChainMatch::default()];
    let c = select::candidates(&chains, &facts("10.0.0.1:9080"));
    assert_eq!(c, vec![0]);
    assert!(!select::needs_application_protocol(&chains, &c));
}

#[test]
fn no_backtracking_to_a_less_specific_branch() {
    // The port branch wins, then fails on the application protocol: default chain, not the
    // catch-all chain 1.
    let mut http_on_port = port(9080);
    http_on_port.application_protocols = vec!["http/1.1".into()];
    let chains = vec![http_on_port, FilterChainMatch::default()];
    assert_eq!(pick(&chains, "10.0.0.1:9080", None), None);
    assert_eq!(pick(&chains, "10.0.0.1:9080", Some("http/1.1")), Some(0));
}

#[test]
fn transport_protocol_and_server_names() {
    let tls = FilterChainMatch {
        transport_protocol: Some("tls".into()),
        ..Default::default()
    };
    let raw = FilterChainMatch {
        transport_protocol: Some(RAW_BUFFER.into()),
        ..Default::default()
    };
    assert_eq!(pick(&[tls.clone(), raw], "10.0.0.1:80", None), Some(1));
    assert_eq!(pick(&[tls], "10.0.0.1:80", None), None);
    // A chain that needs an SNI never matches a plaintext connection.
    let sni = FilterChainMatch {
        server_names: vec!["a.example.com".into()],
        ..Default::default()
    };
    assert_eq!(
        pick(&[sni, FilterChainMatch::default()], "10.0.0.1:443", None),
        Some(1)
    );
}

#[test]
fn first_of_equal_chains_wins() {
    let chains = vec![port(80), port(80)];
    assert_eq!(pick(&chains, "10.0.0.1:80", None), Some(0));
}

#[test]
fn classify_request_lines_and_preface() {
    assert_eq!(classify(b""), None);
    assert_eq!(classify(b"GET"), None);
    assert_eq!(classify(b"GET /index.html HT"), None);
    assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
    assert_eq!(classify(b"POST /x HTTP/1.0\n"), Some(Detected::Http1));
    assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
    assert_eq!(classify(H2_PREFACE), Some(Detected::H2c));
    assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nXX"), Some(Detected::Tcp));
    // Redis inline command, TLS hello, binary, bad versions.
    assert_eq!(classify(b"SET k v\r\n"), Some(Detected::Tcp));
    assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Detected::Tcp));
    assert_eq!(classify(&[0, 1, 2]), Some(Detected::Tcp));
    assert_eq!(classify(b"GET / HTTP/2.0\r\n"), Some(Detected::Tcp));
    assert_eq!(classify(b"GET  / HTTP/1.1\r\n"), Some(Detected::Tcp));
    assert_eq!(classify(b"GET / HTTP/1.1 x"), Some(Detected::Tcp));
    assert_eq!(classify(&[b'A'; 40]), Some(Detected::Tcp));
    let long = [b"GET /".as_slice(), &vec![b'a'; sniff::MAX_INSPECTED]].concat();
    assert_eq!(classify(&long), Some(Detected::Tcp));
}

async fn socket_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[tokio::test]
async fn request_line_split_over_two_reads_is_http1() {
    let (mut client, mut server) = socket_pair().await;
    let writer = tokio::spawn(async move {
        client.write_all(b"GET /split HT").await.unwrap();
        client.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        client
            .write_all(b"TP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        client
    });
    let (detected, bytes) = sniff::detect(&mut server, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(detected, Detected::Http1);
    assert!(bytes.starts_with(b"GET /split HTTP/1.1\r\n"));
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn h2_preface_is_h2c() {
    let (mut client, mut server) = socket_pair().await;
    client.write_all(&H2_PREFACE[..10]).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.write_all(&H2_PREFACE[10..]).await.unwrap();
    let (detected, bytes) = sniff::detect(&mut server, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(detected, Detected::H2c);
    assert_eq!(bytes, H2_PREFACE);
}

#[tokio::test]
async fn silent_client_times_out_to_tcp() {
    let (_client, mut server) = socket_pair().await;
    let started = std::time::Instant::now();
    let (detected, bytes) = sniff::detect(&mut server, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(detected, Detected::Tcp);
    assert!(bytes.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(1));
}

#[tokio::test]
async fn stalled_partial_request_line_is_tcp_and_keeps_its_bytes() {
    let (mut client, mut server) = socket_pair().await;
    client.write_all(b"GET /slow").await.unwrap();
    let (detected, bytes) = sniff::detect(&mut server, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(detected, Detected::Tcp);
    assert_eq!(bytes, b"GET /slow");
}

#[tokio::test]
async fn binary_first_byte_decides_at_once() {
    let (mut client, mut server) = socket_pair().await;
    client.write_all(&[0x00, 0x01]).await.unwrap();
    let started = std::time::Instant::now();
    let (detected, _) = sniff::detect(&mut server, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(detected, Detected::Tcp);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A connection keeps its chain while the listener is unchanged (other resources may change);
/// once the listener is replaced, the chain that applies now is the new one.
#[test]
fn current_chain_follows_listener_updates() {
    use std::sync::Arc;

    use xds_client::model::rbac::{RbacAction, RbacRules};
    use xds_client::model::RouteSource;

    use super::conn::{ConnContext, Role};
    use crate::fixtures::{cla, config, http_chain, listener};
    use crate::snapshot::Snapshot;
    use crate::upstream::OriginalDestination;

    let inbound = |deny_all: bool| {
        let mut chain = http_chain("inbound-9080", port(9080), RouteSource::Rds("r".into()));
        if let xds_client::model::NetworkFilter::Http(hcm) = &mut chain.filter {
            if deny_all {
                hcm.http_filters.insert(
                    0,
                    xds_client::model::HttpFilter::Rbac(Box::new(xds_client::model::rbac::Rbac {
                        rules: Some(RbacRules {
                            action: RbacAction::Allow,
                            policies: Default::default(),
                        }),
                        ..Default::default()
                    })),
                );
            }
        }
        listener(
            "virtualInbound",
            "0.0.0.0:15006",
            true,
            false,
            vec![chain],
            None,
        )
    };
    let first = Snapshot::build(
        Arc::new(config(vec![inbound(false)], vec![], vec![], vec![])),
        None,
    );
    let capture: SocketAddr = "0.0.0.0:15006".parse().unwrap();
    let conn = ConnContext {
        role: Role::Inbound,
        capture,
        peer_addr: None,
        local_addr: None,
        destination: OriginalDestination {
            address: "10.0.0.2:9080".parse().unwrap(),
            redirected: true,
        },
        listener: "virtualInbound".into(),
        chain: first
            .capture_listener(capture, "virtualInbound")
            .unwrap()
            .chains[0]
            .clone(),
        application_protocol: None,
        tls: false,
        peer_principal: None,
        server_name: None,
        tls_session: None,
    };
    // Endpoints change, the listener does not: the same chain.
    let same = Snapshot::build(
        Arc::new(config(
            vec![inbound(false)],
            vec![],
            vec![],
            vec![cla("c", &["10.0.0.9:80"])],
        )),
        Some(&first),
    );
    let now = super::current_chain(&conn, &same).unwrap();
    assert!(Arc::ptr_eq(&now, &conn.chain));
    // An AuthorizationPolicy lands: the listener is replaced, the new chain applies.
    let denied = Snapshot::build(
        Arc::new(config(vec![inbound(true)], vec![], vec![], vec![])),
        Some(&same),
    );
    let now = super::current_chain(&conn, &denied).unwrap();
    assert!(!Arc::ptr_eq(&now, &conn.chain));
    let crate::snapshot::ChainKind::Http(http) = &now.kind else {
        panic!("not HTTP");
    };
    assert!(matches!(
        http.filters[0],
        crate::http::filters::Filter::Rbac(_)
    ));
    // The listener is gone: no chain applies.
    let gone = Snapshot::build(
        Arc::new(config(vec![], vec![], vec![], vec![])),
        Some(&denied),
    );
    assert!(super::current_chain(&conn, &gone).is_none());
}

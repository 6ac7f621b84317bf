use std::collections::BTreeMap;
use std::time::Duration;

use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xds_client::model::matcher::StringMatcher;
use xds_client::model::tls::{
    CommonTls, DownstreamTls, SanMatcher, SanType, SecretName, TransportSocketMatch, UpstreamTls,
    Validation,
};
use xds_client::model::{Cluster, ClusterLoadAssignment, Discovery, Endpoint, HealthStatus};

use super::client::{ClientTls, ClusterTls};
use super::hello::{self, ClientHello, Inspection};
use super::server::ServerTls;
use super::*;
use crate::identity::tests::TestCa;
use crate::identity::{csr, Identity};

const SERVER: &str = "spiffe://cluster.local/ns/default/sa/reviews";
const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/productpage";

fn identity(ca: &TestCa, id: &str) -> Identity {
    let identity = Identity::new(id.into());
    let key = csr::generate_key().unwrap();
    let pem = csr::build_csr(&key, id).unwrap();
    identity.install(csr::accept_chain(&ca.sign(&pem, id, -30, 3600), key, id, &[], 1).unwrap());
    identity
}

fn common(alpn: &[&str], sans: &[&str]) -> CommonTls {
    CommonTls {
        certificate: Some(SecretName::Workload),
        validation: Some(Validation {
            trusted_ca: SecretName::Root,
            san_matchers: sans
                .iter()
                .map(|s| SanMatcher {
                    san_type: SanType::Uri,
                    matcher: StringMatcher::exact(*s),
                })
                .collect(),
        }),
        alpn: alpn.iter().map(|s| s.to_string()).collect(),
        min_version: None,
        max_version: None,
    }
}

fn server_tls() -> ServerTls {
    ServerTls::new(DownstreamTls {
        common: common(&["h2", "http/1.1"], &[]),
        require_client_certificate: true,
    })
}

fn client_tls(sans: &[&str]) -> ClientTls {
    ClientTls::new(UpstreamTls {
        common: common(&["istio-peer-exchange", "istio"], sans),
        sni: Some("outbound_.9080_._.reviews.default.svc.cluster.local".into()),
    })
}

#[tokio::test]
async fn the_client_hello_gives_sni_and_alpn() {
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        b.set_alpn_protos(b"\x13istio-peer-exchange\x05istio")
            .unwrap();
        let ssl = b
            .build()
            .configure()
            .unwrap()
            .into_ssl("outbound_.9080_._.reviews")
            .unwrap();
        let mut s = pingora_boringssl::tokio_ssl::SslStream::new(ssl, client).unwrap();
        let _ = std::pin::Pin::new(&mut s).connect().await;
    });
    let (found, bytes) = hello::detect(&mut server, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        found,
        Some(ClientHello {
            server_name: Some("outbound_.9080_._.reviews".into()),
            alpn: vec!["istio-peer-exchange".into(), "istio".into()],
        })
    );
    assert!(!bytes.is_empty());
    assert_eq!(hello::inspect(&bytes[..3]), Inspection::NeedMore);
    assert_eq!(hello::inspect(b"GET / HTTP/1.1\r\n"), Inspection::Plain);
    assert_eq!(hello::inspect(&[22, 3, 1, 0, 0]), Inspection::Plain);
    assert_eq!(
        hello::inspect(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
        Inspection::Plain
    );
    // Nothing sent within the timeout: plaintext, server-first.
    let (_quiet, mut server) = tokio::io::duplex(1024);
    let (found, bytes) = hello::detect(&mut server, Duration::from_millis(20))
        .await
        .unwrap();
    assert!(found.is_none() && bytes.is_empty());
}

/// Runs one handshake between `client` (as `client_id`) and the server (as `SERVER`).
async fn handshake(
    client: &ClientTls,
    client_id: &Identity,
    server_id: &Identity,
) -> (
    Result<PeerCert, TlsError>,
    Result<server::Accepted, TlsError>,
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = server_tls();
    let (c, s) = tokio::join!(client.connect(a, client_id), server.accept(b, server_id));
    let c = match c {
        Ok((mut stream, peer)) => {
            let _ = stream.write_all(b"ping").await;
            Ok(peer)
        }
        Err(e) => Err(e),
    };
    let s = match s {
        Ok((mut stream, accepted)) => {
            let mut buf = [0u8; 4];
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut buf)).await;
            Ok(accepted)
        }
        Err(e) => Err(e),
    };
    (c, s)
}

#[tokio::test]
async fn mutual_tls_verifies_both_sides() {
    let ca = TestCa::new();
    let server_id = identity(&ca, SERVER);
    let client_id = identity(&ca, CLIENT);
    let (c, s) = handshake(&client_tls(&[SERVER]), &client_id, &server_id).await;
    let peer = c.unwrap();
    assert_eq!(peer.spiffe_id(), Some(SERVER));
    let accepted = s.unwrap();
    let client_cert = accepted.peer.unwrap();
    assert_eq!(client_cert.spiffe_id(), Some(CLIENT));
    assert_eq!(client_cert.hash.len(), 64);
    assert_eq!(client_cert.subject, "");
    assert_eq!(accepted.local_uri.as_deref(), Some(SERVER));
    assert_eq!(
        accepted.server_name.as_deref(),
        Some("outbound_.9080_._.reviews.default.svc.cluster.local")
    );
    // The server's ALPN list has neither of Istio's protocols: none is selected.
    assert_eq!(accepted.alpn, None);
}

#[tokio::test]
async fn a_server_of_another_identity_is_refused() {
    let ca = TestCa::new();
    let server_id = identity(&ca, SERVER);
    let client_id = identity(&ca, CLIENT);
    let (c, _) = handshake(
        &client_tls(&["spiffe://cluster.local/ns/default/sa/ratings"]),
        &client_id,
        &server_id,
    )
    .await;
    assert!(matches!(c, Err(TlsError::SanMismatch { presented }) if presented == [SERVER]));
}

#[tokio::test]
async fn a_client_of_another_ca_or_without_a_certificate_is_refused() {
    let ca = TestCa::new();
    let server_id = identity(&ca, SERVER);
    let foreign = identity(&TestCa::new(), CLIENT);
    // A client certificate from another CA, by a client that trusts ours (so that it
    // verifies the server and presents its certificate).
    let other = TestCa::new();
    let key = csr::generate_key().unwrap();
    let pem = csr::build_csr(&key, CLIENT).unwrap();
    let mut cert =
        csr::accept_chain(&other.sign(&pem, CLIENT, -30, 3600), key, CLIENT, &[], 1).unwrap();
    cert.roots = server_id.current().unwrap().roots.clone();
    cert.bundle_id = csr::bundle_id(&cert.roots);
    let mixed = Identity::new(CLIENT.into());
    mixed.install(cert);
    let (_, s) = handshake(&client_tls(&[SERVER]), &mixed, &server_id).await;
    assert!(matches!(s, Err(TlsError::Handshake(_))), "{s:?}");
    let (c, _) = handshake(&client_tls(&[SERVER]), &foreign, &server_id).await;
    assert!(
        c.is_err(),
        "a client trusting another CA verified our server"
    );

    // No client certificate at all.
    let anonymous = ClientTls::new(UpstreamTls {
        common: CommonTls {
            certificate: None,
            ..common(&[], &[SERVER])
        },
        sni: Some("x".into()),
    });
    let client_id = identity(&ca, CLIENT);
    let (_, s) = handshake(&anonymous, &client_id, &server_id).await;
    assert!(s.is_err(), "a client without a certificate was accepted");
}

#[tokio::test]
async fn without_a_valid_certificate_nothing_is_served() {
    let ca = TestCa::new();
    let client_id = identity(&ca, CLIENT);
    let pending = Identity::new(SERVER.into());
    let (a, b) = tokio::io::duplex(4096);
    drop(a);
    assert!(matches!(
        server_tls().accept(b, &pending).await,
        Err(TlsError::NoCertificate)
    ));
    let (a, _b) = tokio::io::duplex(4096);
    assert!(matches!(
        client_tls(&[]).connect(a, &pending).await,
        Err(TlsError::NoCertificate)
    ));
    let _ = client_id;
}

fn endpoint(addr: &str, tls_mode: Option<&str>) -> Endpoint {
    Endpoint {
        address: addr.parse().unwrap(),
        weight: 1,
        health: HealthStatus::Healthy,
        locality: String::new(),
        priority: 0,
        transport_metadata: tls_mode
            .map(|m| BTreeMap::from([("tlsMode".to_string(), m.to_string())]))
            .unwrap_or_default(),
        workload: None,
    }
}

#[test]
fn endpoints_with_a_sidecar_get_mutual_tls() {
    let mut cluster = Cluster::new(
        "outbound|9080||reviews",
        Discovery::Eds {
            service_name: "outbound|9080||reviews".into(),
        },
    );
    cluster.transport_socket_matches = vec![
        TransportSocketMatch {
            name: "tlsMode-istio".into(),
            criteria: BTreeMap::from([("tlsMode".to_string(), "istio".to_string())]),
            tls: Some(UpstreamTls {
                common: common(&["istio"], &[SERVER]),
                sni: Some("s".into()),
            }),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            criteria: BTreeMap::new(),
            tls: None,
        },
    ];
    let cla = ClusterLoadAssignment {
        cluster_name: cluster.name.clone(),
        endpoints: vec![
            endpoint("10.0.0.1:9080", Some("istio")),
            endpoint("10.0.0.2:9080", None),
            endpoint("10.0.0.3:9080", Some("disabled")),
        ],
    };
    let tls = ClusterTls::new(&cluster, Some(&cla));
    assert!(tls.for_endpoint("10.0.0.1:9080".parse().unwrap()).is_some());
    assert!(tls.for_endpoint("10.0.0.2:9080".parse().unwrap()).is_none());
    assert!(tls.for_endpoint("10.0.0.3:9080".parse().unwrap()).is_none());
    // A DestinationRule's ISTIO_MUTUAL: the cluster's transport socket, every endpoint.
    cluster.transport_socket = cluster.transport_socket_matches[0].tls.clone();
    cluster.transport_socket_matches.clear();
    let tls = ClusterTls::new(&cluster, Some(&cla));
    assert!(tls.for_endpoint("10.0.0.2:9080".parse().unwrap()).is_some());
}

#[test]
fn san_matchers() {
    let peer = PeerCert {
        uris: vec![SERVER.into()],
        dns: vec!["reviews.example.com".into()],
        ..Default::default()
    };
    let m = |san_type, value: &str| SanMatcher {
        san_type,
        matcher: StringMatcher::exact(value),
    };
    assert!(san_matches(&peer, &[]));
    assert!(san_matches(&peer, &[m(SanType::Uri, SERVER)]));
    assert!(!san_matches(&peer, &[m(SanType::Dns, SERVER)]));
    assert!(san_matches(
        &peer,
        &[m(SanType::Any, "reviews.example.com")]
    ));
    assert!(san_matches(
        &peer,
        &[
            m(SanType::Uri, CLIENT),
            m(SanType::Dns, "reviews.example.com")
        ]
    ));
    assert!(!san_matches(&peer, &[m(SanType::Uri, CLIENT)]));
}

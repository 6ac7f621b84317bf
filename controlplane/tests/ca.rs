//! The CA over real gRPC: a first certificate with a bootstrap token on the plaintext port,
//! a renewal with the current certificate over mutual TLS on the TLS port, and every refusal
//! (forged or expired token, a CSR for another identity, extra SANs, no credential, a client
//! certificate from another CA), each counted in the CA's metrics.

mod common;

use std::time::Duration;

use boring::pkey::{PKey, Private};
use boring::x509::X509;
use controlplane::app::ControlPlane;
use controlplane::ca::cert::{self, generate_ec_key};
use controlplane::ca::client::TlsConnector;
use controlplane::ca::csr::build_csr;
use controlplane::ca::metrics::Refusal;
use controlplane::ca::service::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use controlplane::ca::service::pb::IstioCertificateRequest;
use controlplane::ca::{store, token};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::transport::Channel;
use tonic::{Code, Request};

const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";

struct Ca {
    _dir: tempfile::TempDir,
    cp: ControlPlane,
}

async fn start() -> Ca {
    let dir = common::config_dir();
    let mut options = common::options(dir.path());
    options.xds_tls_addr = Some("127.0.0.1:0".parse().unwrap());
    let cp = ControlPlane::start(options).await.unwrap();
    Ca { _dir: dir, cp }
}

impl Ca {
    fn token(&self, ns: &str, sa: &str) -> String {
        // What `meshctl token create --ca-dir` does, from the same directory.
        let ca = controlplane::ca::Authority::load(self.cp.ca.dir(), "cluster.local").unwrap();
        token::create(
            ca.signing_key(),
            ca.public_key(),
            ns,
            sa,
            Duration::from_secs(600),
        )
        .unwrap()
    }

    async fn plain(&self) -> IstioCertificateServiceClient<Channel> {
        IstioCertificateServiceClient::connect(format!("http://{}", self.cp.xds_addr))
            .await
            .unwrap()
    }

    async fn tls_channel(
        &self,
        client: Option<(&PKey<Private>, &[X509])>,
    ) -> Result<Channel, tonic::transport::Error> {
        let addr = self.cp.xds_tls_addr.unwrap();
        TlsConnector::new(addr, self.cp.ca.roots(), client)
            .unwrap()
            .channel()
            .await
    }

    fn refused(&self, why: Refusal) -> u64 {
        self.cp.ca_metrics.refused_count(why)
    }
}

fn request(csr: String, token: Option<&str>) -> Request<IstioCertificateRequest> {
    let mut r = Request::new(IstioCertificateRequest {
        csr,
        validity_duration: 3600,
        ..Default::default()
    });
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn parse_chain(chain: &[String]) -> Vec<X509> {
    chain
        .iter()
        .map(|p| X509::from_pem(p.as_bytes()).unwrap())
        .collect()
}

#[tokio::test]
async fn token_then_renewal_over_mutual_tls() {
    let ca = start().await;
    let key = generate_ec_key().unwrap();
    let token = ca.token("default", "reviews");
    let first = ca
        .plain()
        .await
        .create_certificate(request(
            build_csr(&key, &[REVIEWS], &[]).unwrap(),
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    let chain = parse_chain(&first.cert_chain);
    assert_eq!(chain.len(), 2, "leaf and root");
    assert_eq!(cert::uri_sans(&chain[0]), [REVIEWS]);
    assert_eq!(
        chain[1].to_pem().unwrap(),
        ca.cp.ca.trust_bundle_pem().into_bytes(),
        "the root comes last"
    );
    let (nb, na) = cert::validity(&chain[0]).unwrap();
    assert!((na - nb - 3600 - cert::BACKDATE.as_secs() as i64).abs() <= 2);

    // Renewal: a new key, authenticated by the current certificate, no token.
    let channel = ca.tls_channel(Some((&key, &chain))).await.unwrap();
    let new_key = generate_ec_key().unwrap();
    let renewed = IstioCertificateServiceClient::new(channel.clone())
        .create_certificate(request(build_csr(&new_key, &[REVIEWS], &[]).unwrap(), None))
        .await
        .unwrap()
        .into_inner();
    let renewed = parse_chain(&renewed.cert_chain);
    assert_eq!(cert::uri_sans(&renewed[0]), [REVIEWS]);
    assert!(renewed[0].public_key().unwrap().public_eq(&new_key));
    assert_ne!(cert::serial_hex(&renewed[0]), cert::serial_hex(&chain[0]));

    // The current certificate proves only its own identity.
    let err = IstioCertificateServiceClient::new(channel.clone())
        .create_certificate(request(
            build_csr(
                &new_key,
                &["spiffe://cluster.local/ns/default/sa/ratings"],
                &[],
            )
            .unwrap(),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err
        .message()
        .contains("caller proved spiffe://cluster.local/ns/default/sa/reviews"));
    assert_eq!(ca.refused(Refusal::IdentityMismatch), 1);

    // ADS is served on the TLS port too.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(DiscoveryRequest {
        type_url: common::CDS.to_string(),
        node: Some(common::node("p", "10.1.0.9", &[])),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut ads = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let response = tokio::time::timeout(common::WAIT, ads.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.type_url, common::CDS);
    assert!(ca.cp.ca_metrics.issued.get() >= 2);
}

#[tokio::test]
async fn forged_expired_and_cross_identity_requests_are_refused() {
    let ca = start().await;
    let key = generate_ec_key().unwrap();
    let csr = build_csr(&key, &[REVIEWS], &[]).unwrap();
    let mut client = ca.plain().await;

    // No credential at all.
    let err = client
        .create_certificate(request(csr.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert_eq!(ca.refused(Refusal::Unauthenticated), 1);

    // A token signed by another CA (forged).
    let other_dir = tempfile::tempdir().unwrap();
    let other = store::generate(other_dir.path(), "cluster.local").unwrap();
    let other_public = other.cert.public_key().unwrap();
    let forged = token::create(
        &other.key,
        &other_public,
        "default",
        "reviews",
        Duration::from_secs(600),
    )
    .unwrap();
    let err = client
        .create_certificate(request(csr.clone(), Some(&forged)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("signature"), "{err}");
    assert_eq!(ca.refused(Refusal::BadToken), 1);

    // An expired token.
    let own = controlplane::ca::Authority::load(ca.cp.ca.dir(), "cluster.local").unwrap();
    let expired = token::create_at(
        own.signing_key(),
        own.public_key(),
        "default",
        "reviews",
        cert::now_unix() - 7200,
        Duration::from_secs(3600),
    )
    .unwrap();
    let err = client
        .create_certificate(request(csr.clone(), Some(&expired)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("expired"), "{err}");
    assert_eq!(ca.refused(Refusal::ExpiredToken), 1);

    // A valid token for reviews, a CSR for ratings.
    let token = ca.token("default", "reviews");
    let ratings = build_csr(&key, &["spiffe://cluster.local/ns/default/sa/ratings"], &[]).unwrap();
    let err = client
        .create_certificate(request(ratings, Some(&token)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert_eq!(ca.refused(Refusal::IdentityMismatch), 1);

    // The right identity plus a DNS name.
    let extra = build_csr(&key, &[REVIEWS], &["reviews.default.svc"]).unwrap();
    let err = client
        .create_certificate(request(extra, Some(&token)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("DNS:reviews.default.svc"), "{err}");
    assert_eq!(ca.refused(Refusal::ExtraSans), 1);

    // Garbage, and a validity beyond the maximum.
    let err = client
        .create_certificate(request("junk".into(), Some(&token)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let mut long = request(csr.clone(), Some(&token));
    long.get_mut().validity_duration = 365 * 24 * 3600;
    let err = client.create_certificate(long).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("max allowed TTL"), "{err}");

    // Nothing was issued; the right request still works.
    assert_eq!(ca.cp.ca_metrics.issued.get(), 0);
    client
        .create_certificate(request(csr, Some(&token)))
        .await
        .unwrap();
    assert_eq!(ca.cp.ca_metrics.issued.get(), 1);
    assert!(ca.cp.ca_metrics.authentication_failure.get() >= 3);
}

#[tokio::test]
async fn tls_port_refuses_a_client_certificate_from_another_ca() {
    let ca = start().await;
    // A workload certificate issued by a different CA.
    let other_dir = tempfile::tempdir().unwrap();
    store::generate(other_dir.path(), "cluster.local").unwrap();
    let other = controlplane::ca::Authority::load(other_dir.path(), "cluster.local").unwrap();
    let id = controlplane::ca::SpiffeId::new("cluster.local", "default", "reviews").unwrap();
    let foreign = other.issue_workload(&id, Duration::from_secs(600)).unwrap();
    let key = generate_ec_key().unwrap();
    let accepted = match ca.tls_channel(Some((&foreign.key, &foreign.chain))).await {
        Err(_) => false,
        Ok(channel) => IstioCertificateServiceClient::new(channel)
            .create_certificate(request(build_csr(&key, &[REVIEWS], &[]).unwrap(), None))
            .await
            .is_ok(),
    };
    assert!(!accepted, "a foreign client certificate was accepted");
    assert_eq!(ca.cp.ca_metrics.issued.get(), 0);

    // Without a client certificate the TLS port still serves token requests.
    let channel = ca.tls_channel(None).await.unwrap();
    let key = generate_ec_key().unwrap();
    let token = ca.token("default", "reviews");
    IstioCertificateServiceClient::new(channel)
        .create_certificate(request(
            build_csr(&key, &[REVIEWS], &[]).unwrap(),
            Some(&token),
        ))
        .await
        .unwrap();
}

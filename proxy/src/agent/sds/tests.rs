//! The SDS server over a real Unix socket, with tonic's client as Envoy's stand-in.

use std::time::Duration;

use boring::x509::X509;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use prost::Message;
use tonic::transport::{Endpoint, Uri};

use super::*;
use crate::identity::csr;
use crate::identity::tests::TestCa;

const ID: &str = "spiffe://cluster.local/ns/default/sa/client";

fn cert(ca: &TestCa, generation: u64) -> WorkloadCert {
    let key = csr::generate_key().unwrap();
    let pem = csr::build_csr(&key, ID).unwrap();
    csr::accept_chain(&ca.sign(&pem, ID, -30, 3600), key, ID, &[], generation).unwrap()
}

/// Connects tonic's client to the socket, as Envoy's `pipe` address does.
struct UdsConnector(std::path::PathBuf);

impl tower_service::Service<Uri> for UdsConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) })
    }
}

fn request(names: &[&str], nonce: &str, version: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: SECRET_TYPE.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn decode(resp: &DiscoveryResponse) -> Vec<Secret> {
    resp.resources
        .iter()
        .map(|a| Secret::decode(a.value.as_slice()).unwrap())
        .collect()
}

fn inline_bytes(d: &Option<DataSource>) -> Vec<u8> {
    match d.as_ref().and_then(|d| d.specifier.clone()) {
        Some(data_source::Specifier::InlineBytes(b)) => b,
        other => panic!("not inline bytes: {other:?}"),
    }
}

#[tokio::test]
async fn secrets_wait_for_the_certificate_then_follow_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sds").join("socket");
    let listener = super::super::bind(&path).unwrap();
    let identity = Arc::new(Identity::new(ID.to_string()));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server(identity.clone()))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let channel = Endpoint::from_static("http://sds")
        .connect_with_connector(UdsConnector(path.clone()))
        .await
        .unwrap();
    let mut client = SecretDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let mut responses = client
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(request(&["default", "ROOTCA"], "", ""))
        .await
        .unwrap();

    // Nothing before the first certificate.
    let early = tokio::time::timeout(Duration::from_millis(300), responses.message()).await;
    assert!(early.is_err(), "answered before a certificate: {early:?}");

    let ca = TestCa::new();
    identity.install(cert(&ca, 1));
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.type_url, SECRET_TYPE);
    assert_eq!(first.version_info, "1");
    let secrets = decode(&first);
    let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ROOTCA", "default"]);
    let Some(secret::Type::ValidationContext(v)) = &secrets[0].r#type else {
        panic!("ROOTCA is not a validation context: {:?}", secrets[0]);
    };
    let roots = X509::stack_from_pem(&inline_bytes(&v.trusted_ca)).unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].to_der().unwrap(), ca.root.to_der().unwrap());
    let Some(secret::Type::TlsCertificate(t)) = &secrets[1].r#type else {
        panic!("default is not a certificate: {:?}", secrets[1]);
    };
    let chain = X509::stack_from_pem(&inline_bytes(&t.certificate_chain)).unwrap();
    assert_eq!(csr::uri_sans(&chain[0]), vec![ID.to_string()]);
    let key = boring::pkey::PKey::private_key_from_pem(&inline_bytes(&t.private_key)).unwrap();
    assert!(chain[0].public_key().unwrap().public_eq(&key));

    // The ACK is absorbed; a new certificate is pushed with a new version.
    tx.send(request(&["default", "ROOTCA"], &first.nonce, "1"))
        .await
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), responses.message()).await;
    assert!(quiet.is_err(), "answered an ACK: {quiet:?}");
    identity.install(cert(&ca, 2));
    let rotated = responses.message().await.unwrap().unwrap();
    assert_eq!(rotated.version_info, "2");
    assert_ne!(rotated.nonce, first.nonce);
    let Some(secret::Type::TlsCertificate(t2)) = &decode(&rotated)[1].r#type else {
        panic!("no certificate after rotation");
    };
    assert_ne!(
        inline_bytes(&t2.certificate_chain),
        inline_bytes(&t.certificate_chain)
    );
    server.abort();
}

#[test]
fn file_secrets_and_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, ca.root.to_pem().unwrap()).unwrap();
    let name = format!("file-root:{}", root.display());
    let Some(secret::Type::ValidationContext(v)) = secret(&name, None).unwrap().r#type else {
        panic!("file-root is not a validation context");
    };
    assert_eq!(inline_bytes(&v.trusted_ca), ca.root.to_pem().unwrap());
    let missing = secret("file-cert:/nonexistent/c.pem~/nonexistent/k.pem", None).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/c.pem"),
        "{missing}"
    );
    assert!(matches!(
        secret("default", None),
        Err(SecretError::NoCertificate)
    ));
    assert!(matches!(
        secret("kubernetes://creds", None),
        Err(SecretError::Unknown(_))
    ));
}

use std::sync::Arc;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use xds_client::{ClientOptions, NodeInfo, XdsClient};

use super::*;
use crate::accesslog::AccessLog;
use crate::fixtures::config;
use crate::shared::Shared;

fn state() -> AdminState {
    state_with(crate::identity::Identity::disabled())
}

fn state_with(identity: crate::identity::Identity) -> AdminState {
    let node = NodeInfo {
        pod_name: "p".into(),
        namespace: "ns".into(),
        ip: "10.0.0.1".parse().unwrap(),
        labels: Default::default(),
        service_account: "sa".into(),
        cluster_domain: "cluster.local".into(),
    };
    let (_client, xds) = XdsClient::new(ClientOptions {
        address: "127.0.0.1:1".into(),
        node: node.clone(),
        initial_backoff: std::time::Duration::from_millis(10),
        max_backoff: std::time::Duration::from_millis(10),
    });
    let log = AccessLog::spawn(std::io::sink(), 4).unwrap();
    AdminState {
        shared: Arc::new(Shared::with_identity(log, Arc::new(identity))),
        xds,
        node,
        logging: None,
    }
}

async fn body(resp: Response<Full<Bytes>>) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn readiness_follows_the_snapshot_and_draining() {
    let s = state();
    let ready = |s: &AdminState| route(s, Port::Readiness, &Method::GET, "/healthz/ready").status();
    assert_eq!(ready(&s), StatusCode::SERVICE_UNAVAILABLE);
    let resp = route(&s, Port::Admin, &Method::GET, "/ready");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body(resp).await, "PRE_INITIALIZING\n");

    s.shared
        .snapshot
        .apply(Arc::new(config(vec![], vec![], vec![], vec![])));
    assert_eq!(ready(&s), StatusCode::OK);
    let resp = route(&s, Port::Admin, &Method::GET, "/ready");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body(resp).await, "LIVE\n");

    s.shared.lifecycle.start_draining();
    assert_eq!(ready(&s), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body(route(&s, Port::Admin, &Method::GET, "/ready")).await,
        "DRAINING\n"
    );
}

#[tokio::test]
async fn config_dump_shows_config_versions_and_status() {
    let s = state();
    s.shared
        .snapshot
        .apply(Arc::new(config(vec![], vec![], vec![], vec![])));
    let resp = route(&s, Port::Admin, &Method::GET, "/config_dump");
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body(resp).await).unwrap();
    assert_eq!(v["config"]["synced"], true);
    assert_eq!(v["config"]["versions"]["Listener"], "1");
    assert_eq!(v["xds_status"]["connected"], false);
    assert_eq!(v["node"]["pod_name"], "p");
    assert_eq!(v["state"], "LIVE");
}

#[tokio::test]
async fn quitquitquit_needs_post_and_requests_a_drain() {
    let s = state();
    let resp = route(&s, Port::Admin, &Method::GET, "/quitquitquit");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(!s.shared.lifecycle.is_draining());
    let resp = route(&s, Port::Admin, &Method::POST, "/quitquitquit");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(s.shared.lifecycle.is_draining());
    tokio::time::timeout(
        std::time::Duration::from_secs(1),
        s.shared.lifecycle.quit_requested(),
    )
    .await
    .unwrap();
    // Admin paths are not served on the readiness port and vice versa.
    assert_eq!(
        route(&s, Port::Readiness, &Method::GET, "/config_dump").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        route(&s, Port::Admin, &Method::GET, "/healthz/ready").status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn readiness_waits_for_a_valid_certificate_when_identity_is_on() {
    use crate::identity::{csr, Identity};
    const ID: &str = "spiffe://cluster.local/ns/ns/sa/sa";
    let s = state_with(Identity::new(ID.into()));
    let ready = |s: &AdminState| route(s, Port::Readiness, &Method::GET, "/healthz/ready").status();
    s.shared
        .snapshot
        .apply(Arc::new(config(vec![], vec![], vec![], vec![])));
    assert_eq!(
        ready(&s),
        StatusCode::SERVICE_UNAVAILABLE,
        "no certificate yet"
    );
    let ca = crate::identity::tests::TestCa::new();
    let key = csr::generate_key().unwrap();
    let pem = csr::build_csr(&key, ID).unwrap();
    let cert = csr::accept_chain(&ca.sign(&pem, ID, -30, 3600), key.clone(), ID, &[], 1).unwrap();
    s.shared.identity.install(cert);
    assert_eq!(ready(&s), StatusCode::OK);
    let dump = body(route(&s, Port::Admin, &Method::GET, "/config_dump")).await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["identity"]["spiffe_id"], ID);
    assert_eq!(dump["identity"]["state"], "VALID");
    assert!(dump["identity"]["certificate"]["serial"].as_str().is_some());
    assert!(!dump.to_string().contains("PRIVATE KEY"));
    // Expired: not ready any more.
    let mut expired = csr::accept_chain(&ca.sign(&pem, ID, -30, 3600), key, ID, &[], 2).unwrap();
    expired.not_after = crate::identity::now_unix() - 1;
    s.shared.identity.install(expired);
    assert_eq!(ready(&s), StatusCode::SERVICE_UNAVAILABLE);
}

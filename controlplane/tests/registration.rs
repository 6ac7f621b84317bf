//! Connected proxies as endpoints (Istio's workload auto-registration) over real sockets:
//! a proxy becomes an endpoint of the Services selecting it while connected, and a restarted
//! control plane with a state directory still knows the proxies that have not reconnected.

mod common;

use std::time::Duration;

use common::*;
use controlplane::app::{ControlPlane, Options};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use serde_json::Value;

#[tokio::test]
async fn connected_proxies_become_endpoints_until_they_disconnect() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut a = Proxy::connect(
        cp.xds_addr,
        node("productpage-1", "10.1.0.10", &[("app", "productpage")]),
    )
    .await;
    a.send(EDS, &[RATINGS, REVIEWS], "", "", None).await;
    let eds = a.recv().await;
    assert_eq!(endpoints(&eds, RATINGS), Vec::<String>::new());
    a.ack(&eds, &[RATINGS, REVIEWS]).await;

    let mut b = Proxy::connect(
        cp.xds_addr,
        node(
            "ratings-1",
            "10.1.0.30",
            &[("app", "ratings"), ("version", "v1")],
        ),
    )
    .await;
    b.send(CDS, &[], "", "", None).await;
    let b_cds = b.recv().await;
    assert!(names::<Cluster>(&b_cds, |c| c.name.clone()).contains(&"inbound|9080||".to_string()));

    // Only ratings' load assignment changed: only it is pushed.
    let pushed = a.recv().await;
    assert_eq!(pushed.type_url, EDS);
    assert_eq!(endpoints(&pushed, RATINGS), ["10.1.0.30:9080"]);
    assert_eq!(pushed.resources.len(), 1);
    a.ack(&pushed, &[RATINGS, REVIEWS]).await;

    // The registry shows where the endpoint came from.
    let (status, body) = http_get(cp.debug_addr, "/debug/registryz").await;
    assert_eq!(status, 200);
    let registryz: Value = serde_json::from_str(&body).unwrap();
    let ratings = registryz["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ratings")
        .unwrap();
    assert_eq!(ratings["ports"][0]["protocol"], "Http");
    assert_eq!(
        ratings["ports"][0]["endpoints"][0]["address"],
        "10.1.0.30:9080"
    );
    assert_eq!(
        ratings["ports"][0]["endpoints"][0]["source"]["Proxy"],
        "sidecar~10.1.0.30~ratings-1.default~default.svc.cluster.local"
    );
    // And what a proxy gets, by POD.NAMESPACE, with EDS for its subscribed names.
    let (status, body) = http_get(
        cp.debug_addr,
        "/debug/config_dump?proxyID=productpage-1.default",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let dump: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(dump["listeners"][0]["name"], "virtualOutbound");
    let (status, _) = http_get(cp.debug_addr, "/debug/config_dump?proxyID=nobody").await;
    assert_eq!(status, 404);

    drop(b);
    let pushed = a.recv().await;
    assert_eq!(endpoints(&pushed, RATINGS), Vec::<String>::new());
    // The disconnected proxy is gone from syncz.
    let deadline = tokio::time::Instant::now() + WAIT;
    while syncz(&cp).await.iter().any(|e| e["pod"] == "ratings-1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ratings-1 still in syncz"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cp.shutdown().await;
}

#[tokio::test]
async fn a_restarted_control_plane_keeps_endpoints_until_their_proxies_are_back() {
    let dir = config_dir();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("controlplane");
    let opts = || Options {
        workload_grace: Duration::from_secs(30),
        state_dir: Some(state_dir.clone()),
        ..options(dir.path())
    };
    let cp = ControlPlane::start(opts()).await.unwrap();
    let mut b = Proxy::connect(
        cp.xds_addr,
        node("ratings-1", "10.1.0.30", &[("app", "ratings")]),
    )
    .await;
    b.send(CDS, &[], "", "", None).await;
    b.recv().await;
    // The registration reaches the state file.
    let file = state_dir.join("workloads.json");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&file).is_ok_and(|s| s.contains("ratings-1")) {
        assert!(tokio::time::Instant::now() < deadline, "no state file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cp.shutdown().await;
    drop(b);

    // The next control plane serves ratings-1's endpoint before ratings-1 reconnects.
    let cp = ControlPlane::start(opts()).await.unwrap();
    let mut a = Proxy::connect(
        cp.xds_addr,
        node("productpage-1", "10.1.0.10", &[("app", "productpage")]),
    )
    .await;
    a.send(EDS, &[RATINGS], "", "", None).await;
    let eds = a.recv().await;
    assert_eq!(endpoints(&eds, RATINGS), ["10.1.0.30:9080"]);
    a.ack(&eds, &[RATINGS]).await;
    // When it is back, nothing changes for the others.
    let mut b = Proxy::connect(
        cp.xds_addr,
        node("ratings-1", "10.1.0.30", &[("app", "ratings")]),
    )
    .await;
    b.send(CDS, &[], "", "", None).await;
    b.recv().await;
    wait_syncz(&cp, "ratings-1", |_| true).await;
    a.expect_silence(Duration::from_millis(300)).await;
    cp.shutdown().await;
}

//! ADS end to end over real sockets: subscriptions, ACKs and NACKs tracked in
//! `/debug/syncz`, stale nonces, pushes on file changes in CDS, EDS, LDS, RDS order with
//! removed clusters last (make before break), anonymous nodes, and shutdown. Connected
//! proxies as endpoints: `registration.rs`.

mod common;

use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[tokio::test]
async fn initial_subscribe_then_ack_is_tracked_in_syncz() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut p = Proxy::connect(
        cp.xds_addr,
        node("reviews-1", "10.1.0.20", &[("app", "reviews")]),
    )
    .await;
    let [cds, eds, lds, rds] = p.sync(&[REVIEWS, RATINGS], &["9080"]).await;

    let clusters = names::<Cluster>(&cds, |c| c.name.clone());
    assert!(
        clusters.contains(&REVIEWS.to_string()) && clusters.contains(&"inbound|9080||".to_string()),
        "{clusters:?}"
    );
    assert_eq!(endpoints(&eds, REVIEWS), ["10.1.0.20:9080"]);
    let listeners = names::<Listener>(&lds, |l| l.name.clone());
    assert_eq!(
        listeners,
        ["virtualOutbound", "virtualInbound", "0.0.0.0_9080"]
    );
    assert_eq!(
        names::<RouteConfiguration>(&rds, |r| r.name.clone()),
        ["9080"]
    );
    assert!(cds.nonce != eds.nonce && !cds.version_info.is_empty());

    let entry = wait_syncz(&cp, "reviews-1", |e| {
        e["types"]["rds"]["acked_version"] == rds.version_info.as_str()
            && e["types"]["eds"]["acked_version"] == eds.version_info.as_str()
    })
    .await;
    assert_eq!(entry["namespace"], "default");
    assert_eq!(entry["ips"][0], "10.1.0.20");
    assert_eq!(
        entry["node_id"],
        "sidecar~10.1.0.20~reviews-1.default~default.svc.cluster.local"
    );
    for (t, resp) in [("cds", &cds), ("eds", &eds), ("lds", &lds), ("rds", &rds)] {
        assert_eq!(
            entry["types"][t]["sent_version"],
            resp.version_info.as_str(),
            "{t}"
        );
        assert_eq!(entry["types"][t]["sent_nonce"], resp.nonce.as_str(), "{t}");
        assert_eq!(
            entry["types"][t]["acked_version"],
            resp.version_info.as_str(),
            "{t}"
        );
        assert_eq!(entry["types"][t]["last_nack"], Value::Null, "{t}");
    }
    // ACKs with unchanged subscriptions are not answered.
    p.expect_silence(Duration::from_millis(300)).await;

    let (status, body) = http_get(cp.debug_addr, "/ready").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    cp.shutdown().await;
}

#[tokio::test]
async fn nack_is_tracked_and_stale_nonces_are_ignored() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut p = Proxy::connect(
        cp.xds_addr,
        node("reviews-1", "10.1.0.20", &[("app", "reviews")]),
    )
    .await;
    p.send(LDS, &[], "", "", None).await;
    let lds = p.recv().await;
    p.send(
        LDS,
        &[],
        "",
        &lds.nonce,
        Some("Listener 0.0.0.0_9080: unsupported field"),
    )
    .await;
    let entry = wait_syncz(&cp, "reviews-1", |e| {
        !e["types"]["lds"]["last_nack"].is_null()
    })
    .await;
    assert_eq!(
        entry["types"]["lds"]["last_nack"],
        "Listener 0.0.0.0_9080: unsupported field"
    );
    assert_eq!(entry["types"]["lds"]["acked_version"], Value::Null);
    assert_eq!(entry["types"]["lds"]["nacks"], 1);
    // A NACK is not answered by resending the same config.
    p.expect_silence(Duration::from_millis(300)).await;

    // EDS: a request with a stale nonce, even with new names, is ignored.
    p.send(EDS, &[REVIEWS], "", "", None).await;
    let eds = p.recv().await;
    p.ack(&eds, &[REVIEWS]).await;
    p.send(
        EDS,
        &[REVIEWS, RATINGS],
        &eds.version_info,
        "not-a-nonce-we-sent",
        None,
    )
    .await;
    p.expect_silence(Duration::from_millis(300)).await;
    let entry = syncz(&cp)
        .await
        .into_iter()
        .find(|e| e["pod"] == "reviews-1")
        .unwrap();
    assert_eq!(
        entry["types"]["eds"]["resource_names"],
        serde_json::json!([REVIEWS])
    );
    assert_eq!(entry["types"]["eds"]["acks"], 1);

    // With the current nonce, new names are answered (with the added ones only).
    p.send(
        EDS,
        &[REVIEWS, RATINGS],
        &eds.version_info,
        &eds.nonce,
        None,
    )
    .await;
    let eds2 = p.recv().await;
    assert_eq!(endpoints(&eds2, RATINGS).len(), 0);
    assert_eq!(eds2.resources.len(), 1);
    let entry = syncz(&cp)
        .await
        .into_iter()
        .find(|e| e["pod"] == "reviews-1")
        .unwrap();
    assert_eq!(entry["types"]["eds"]["expired_nonces"], 1);
    cp.shutdown().await;
}

#[tokio::test]
async fn a_file_change_is_pushed_in_cds_eds_lds_rds_order() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut p = Proxy::connect(
        cp.xds_addr,
        node("reviews-1", "10.1.0.20", &[("app", "reviews")]),
    )
    .await;
    let [cds, _eds, lds, rds] = p.sync(&[REVIEWS], &["9080"]).await;

    let details = "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n\
                   spec:\n  clusterIP: 10.96.0.50\n  ports: [{name: http, port: 9080}]\n";
    std::fs::write(dir.path().join("details.yaml"), details).unwrap();
    let mut pushed = Vec::new();
    // CDS (new cluster), LDS is unchanged (same 0.0.0.0_9080), RDS gains a virtual host,
    // EDS (REVIEWS only) is unchanged.
    for _ in 0..2 {
        pushed.push(p.recv().await);
    }
    let types: Vec<_> = pushed.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [CDS, RDS]);
    assert_ne!(pushed[0].version_info, cds.version_info);
    assert!(names::<Cluster>(&pushed[0], |c| c.name.clone())
        .contains(&"outbound|9080||details.default.svc.cluster.local".to_string()));
    assert_ne!(pushed[1].version_info, rds.version_info);
    let route = RouteConfiguration::decode(pushed[1].resources[0].value.as_slice()).unwrap();
    assert!(route
        .virtual_hosts
        .iter()
        .any(|v| v.name == "details.default.svc.cluster.local:9080"));
    p.ack(&pushed[0], &[]).await;
    p.ack(&pushed[1], &["9080"]).await;

    // A TCP port adds a listener: CDS and LDS are pushed, in that order.
    let tcp = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\n\
               spec:\n  clusterIP: 10.96.0.60\n  ports: [{name: tcp, port: 5432}]\n";
    std::fs::write(dir.path().join("db.yaml"), tcp).unwrap();
    let (a, b) = (p.recv().await, p.recv().await);
    assert_eq!((a.type_url.as_str(), b.type_url.as_str()), (CDS, LDS));
    assert_ne!(b.version_info, lds.version_info);
    assert!(names::<Listener>(&b, |l| l.name.clone()).contains(&"10.96.0.60_5432".to_string()));

    // An invalid edit keeps the last valid version: nothing is pushed, configz says why.
    std::fs::write(dir.path().join("db.yaml"), tcp.replace("5432", "0")).unwrap();
    p.expect_silence(Duration::from_millis(400)).await;
    let (_, body) = http_get(cp.debug_addr, "/debug/configz").await;
    let configz: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(configz["errors"][0]["object"], "Service default/db");
    assert_eq!(configz["errors"][0]["field"], "spec.ports[0].port");
    let db = configz["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"] == "Service default/db")
        .unwrap();
    assert_eq!(db["kept_last_valid_version"], true);
    cp.shutdown().await;
}

/// One write that changes every type: a new HTTP Service (a cluster and a virtual host), a new
/// TCP Service (a cluster and a listener) and endpoints for a subscribed cluster.
const EVERY_TYPE: &str = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: ratings, namespace: default}\n\
                          subsets:\n- addresses: [{ip: 10.1.0.30}]\n  ports: [{name: http, port: 9080}]\n\
                          ---\napiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n\
                          spec:\n  clusterIP: 10.96.0.50\n  ports: [{name: http, port: 9080}]\n\
                          ---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\n\
                          spec:\n  clusterIP: 10.96.0.60\n  ports: [{name: tcp, port: 5432}]\n";

#[tokio::test]
async fn make_before_break_pushes_cds_eds_lds_rds_then_removes_clusters_after_their_acks() {
    const DETAILS: &str = "outbound|9080||details.default.svc.cluster.local";
    const DB: &str = "outbound|5432||db.default.svc.cluster.local";
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut p = Proxy::synced_client(&cp).await;

    // Added: new clusters first, then the endpoints, then the listener and the route that
    // reference them.
    let file = dir.path().join("every-type.yaml");
    std::fs::write(&file, EVERY_TYPE).unwrap();
    let added = [
        p.recv().await,
        p.recv().await,
        p.recv().await,
        p.recv().await,
    ];
    let types: Vec<_> = added.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [CDS, EDS, LDS, RDS]);
    let [cds, eds, lds, rds] = added;
    let clusters = names::<Cluster>(&cds, |c| c.name.clone());
    assert!(clusters.contains(&DETAILS.to_string()) && clusters.contains(&DB.to_string()));
    assert_eq!(endpoints(&eds, RATINGS), ["10.1.0.30:9080"]);
    assert!(names::<Listener>(&lds, |l| l.name.clone()).contains(&"10.96.0.60_5432".to_string()));
    let route = RouteConfiguration::decode(rds.resources[0].value.as_slice()).unwrap();
    assert!(route
        .virtual_hosts
        .iter()
        .any(|v| v.name == "details.default.svc.cluster.local:9080"));
    p.ack(&cds, &[]).await;
    p.ack(&eds, &[REVIEWS, RATINGS]).await;
    p.ack(&lds, &[]).await;
    p.ack(&rds, &["9080"]).await;
    p.expect_silence(Duration::from_millis(300)).await;

    // Removed: endpoints, listener and route go first; the clusters stay until the proxy has
    // ACKed both the listeners and the routes that stop referencing them.
    std::fs::remove_file(&file).unwrap();
    let removed = [p.recv().await, p.recv().await, p.recv().await];
    let types: Vec<_> = removed.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [EDS, LDS, RDS]);
    let [eds, lds, rds] = removed;
    assert!(endpoints(&eds, RATINGS).is_empty());
    assert!(!names::<Listener>(&lds, |l| l.name.clone()).contains(&"10.96.0.60_5432".to_string()));
    let route = RouteConfiguration::decode(rds.resources[0].value.as_slice()).unwrap();
    assert!(!route
        .virtual_hosts
        .iter()
        .any(|v| v.name.starts_with("details.")));
    p.ack(&eds, &[REVIEWS, RATINGS]).await;
    p.ack(&lds, &[]).await;
    p.expect_silence(Duration::from_millis(300)).await;
    p.ack(&rds, &["9080"]).await;
    let cds = p.recv().await;
    assert_eq!(cds.type_url, CDS, "the removal comes last");
    let clusters = names::<Cluster>(&cds, |c| c.name.clone());
    assert!(!clusters.contains(&DETAILS.to_string()) && !clusters.contains(&DB.to_string()));
    assert!(clusters.contains(&REVIEWS.to_string()) && clusters.contains(&RATINGS.to_string()));
    p.ack(&cds, &[]).await;
    p.expect_silence(Duration::from_millis(300)).await;
    cp.shutdown().await;
}

#[tokio::test]
async fn anonymous_nodes_get_outbound_config_and_delta_is_refused() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut p = Proxy::connect(
        cp.xds_addr,
        Node {
            id: "envoy-1".into(),
            ..Default::default()
        },
    )
    .await;
    p.send(CDS, &[], "", "", None).await;
    let cds = p.recv().await;
    let clusters = names::<Cluster>(&cds, |c| c.name.clone());
    assert!(clusters.contains(&REVIEWS.to_string()));
    assert!(
        !clusters.iter().any(|c| c.starts_with("inbound|")),
        "{clusters:?}"
    );
    // Types the server does not serve are ignored without breaking the stream.
    p.send(
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        &["default"],
        "",
        "",
        None,
    )
    .await;
    p.send(LDS, &[], "", "", None).await;
    assert_eq!(p.recv().await.type_url, LDS);

    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", cp.xds_addr))
        .await
        .unwrap();
    let (_tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(1);
    let err = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    cp.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut p = Proxy::connect(cp.xds_addr, node("reviews-1", "10.1.0.20", &[])).await;
    p.send(CDS, &[], "", "", None).await;
    p.recv().await;
    tokio::time::timeout(WAIT, cp.shutdown())
        .await
        .expect("shutdown hangs");
    let end = tokio::time::timeout(WAIT, p.message())
        .await
        .expect("stream not ended");
    assert!(matches!(end, Ok(None) | Err(_)));
}

/// Responses are written from shared encodings in chunks (`xds::wire`): a mesh whose
/// responses are hundreds of KiB, far beyond one chunk and HTTP/2's default window, arrives
/// whole, each response one gRPC message that tonic's client decodes, every resource in it.
#[tokio::test]
async fn responses_bigger_than_a_chunk_and_the_window_arrive_whole() {
    let dir = config_dir();
    let mut yaml = String::new();
    for i in 0..400 {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: big}}\n\
             spec:\n  clusterIP: 10.97.{}.{}\n  ports: [{{name: http, port: 8080}}, {{name: grpc, port: 9090}}]\n\
             ---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: svc-{i}, namespace: big}}\n\
             subsets:\n- addresses: [{{ip: 10.2.{}.{}}}]\n  ports: [{{name: http, port: 8080}}, {{name: grpc, port: 9090}}]\n---\n",
            i / 250,
            i % 250 + 1,
            i / 250,
            i % 250 + 1,
        ));
    }
    std::fs::write(dir.path().join("big.yaml"), yaml).unwrap();
    let cp = start(dir.path()).await;
    let mut p = Proxy::connect(cp.xds_addr, node("reviews-1", "10.1.0.20", &[])).await;
    let wanted: Vec<String> = (0..400)
        .flat_map(|i| {
            [8080, 9090].map(|port| format!("outbound|{port}||svc-{i}.big.svc.cluster.local"))
        })
        .collect();
    let eds: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let [cds, eds_resp, lds, _] = p.sync(&eds, &["8080", "9090"]).await;

    assert!(
        cds.encoded_len() > 128 * 1024,
        "{} bytes",
        cds.encoded_len()
    );
    let clusters = names::<Cluster>(&cds, |c| c.name.clone());
    assert!(wanted.iter().all(|c| clusters.contains(c)));
    assert_eq!(eds_resp.resources.len(), 800);
    for (i, cluster) in wanted.iter().enumerate().step_by(97) {
        let ip = format!("10.2.{}.{}", i / 2 / 250, i / 2 % 250 + 1);
        let port = if cluster.starts_with("outbound|8080") {
            8080
        } else {
            9090
        };
        assert_eq!(endpoints(&eds_resp, cluster), [format!("{ip}:{port}")]);
    }
    assert!(!lds.resources.is_empty());
    let entry = wait_syncz(&cp, "reviews-1", |e| {
        e["types"]["cds"]["acked_version"] == cds.version_info.as_str()
    })
    .await;
    assert_eq!(
        entry["types"]["cds"]["bytes_sent"],
        cds.encoded_len() as u64,
        "the size counted is the size sent"
    );
    cp.shutdown().await;
}

//! ADS end to end over real sockets: the control plane on 127.0.0.1:0 with a temporary
//! config directory, proxies played by tonic's generated ADS client, state read back from
//! `/debug/syncz`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use controlplane::app::{ControlPlane, Options};
use controlplane::watch::Debounce;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Node};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
use envoy_types::pb::google::rpc;
use prost::Message;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const WAIT: Duration = Duration::from_secs(5);

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  clusterIP: 10.96.0.30
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: reviews, namespace: default}
subsets:
- addresses: [{ip: 10.1.0.20}]
  ports: [{name: http, port: 9080}]
"#;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";

async fn start(dir: &Path) -> ControlPlane {
    ControlPlane::start(Options {
        config_dir: dir.to_path_buf(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        debug_addr: "127.0.0.1:0".parse().unwrap(),
        cluster_domain: "cluster.local".to_string(),
        debounce: Debounce {
            quiet: Duration::from_millis(20),
            max: Duration::from_secs(1),
        },
    })
    .await
    .unwrap()
}

fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    dir
}

fn string(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

fn node(pod: &str, ip: &str, labels: &[(&str, &str)]) -> Node {
    let labels: HashMap<String, PbValue> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), string(v)))
        .collect();
    let fields = HashMap::from([
        ("NAME".to_string(), string(pod)),
        ("NAMESPACE".to_string(), string("default")),
        ("INSTANCE_IPS".to_string(), string(ip)),
        (
            "LABELS".to_string(),
            PbValue {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        ),
    ]);
    Node {
        id: format!("sidecar~{ip}~{pod}.default~default.svc.cluster.local"),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

/// A proxy's end of one ADS stream.
struct Proxy {
    node: Node,
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    first: bool,
}

impl Proxy {
    async fn connect(addr: SocketAddr, node: Node) -> Proxy {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Proxy {
            node,
            tx,
            rx: responses,
            first: true,
        }
    }

    async fn send(
        &mut self,
        type_url: &str,
        names: &[&str],
        version: &str,
        nonce: &str,
        nack: Option<&str>,
    ) {
        let req = DiscoveryRequest {
            version_info: version.to_string(),
            node: if self.first {
                Some(self.node.clone())
            } else {
                None
            },
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            error_detail: nack.map(|m| rpc::Status {
                code: 3,
                message: m.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.first = false;
        self.tx.send(req).await.unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("no response in time")
            .unwrap()
            .expect("stream ended")
    }

    async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(msg) = tokio::time::timeout(wait, self.rx.message()).await {
            panic!(
                "unexpected response: {:?}",
                msg.map(|m| m.map(|r| (r.type_url, r.nonce)))
            );
        }
    }

    /// ACKs a response.
    async fn ack(&mut self, resp: &DiscoveryResponse, names: &[&str]) {
        let (t, v, n) = (
            resp.type_url.clone(),
            resp.version_info.clone(),
            resp.nonce.clone(),
        );
        self.send(&t, names, &v, &n, None).await;
    }

    /// The Envoy-like initial exchange: CDS, EDS (for `eds`), LDS, RDS (for `rds`), each
    /// ACKed. Returns the four responses.
    async fn sync(&mut self, eds: &[&str], rds: &[&str]) -> [DiscoveryResponse; 4] {
        self.send(CDS, &[], "", "", None).await;
        let cds = self.recv().await;
        assert_eq!(cds.type_url, CDS);
        self.ack(&cds, &[]).await;
        self.send(EDS, eds, "", "", None).await;
        let eds_resp = self.recv().await;
        assert_eq!(eds_resp.type_url, EDS);
        self.ack(&eds_resp, eds).await;
        self.send(LDS, &[], "", "", None).await;
        let lds = self.recv().await;
        assert_eq!(lds.type_url, LDS);
        self.ack(&lds, &[]).await;
        self.send(RDS, rds, "", "", None).await;
        let rds_resp = self.recv().await;
        assert_eq!(rds_resp.type_url, RDS);
        self.ack(&rds_resp, rds).await;
        [cds, eds_resp, lds, rds_resp]
    }
}

fn names<T: Message + Default>(resp: &DiscoveryResponse, name: fn(&T) -> String) -> Vec<String> {
    resp.resources
        .iter()
        .map(|a| name(&T::decode(a.value.as_slice()).unwrap()))
        .collect()
}

fn endpoints(resp: &DiscoveryResponse, cluster: &str) -> Vec<String> {
    let cla = resp
        .resources
        .iter()
        .map(|a| ClusterLoadAssignment::decode(a.value.as_slice()).unwrap())
        .find(|c| c.cluster_name == cluster)
        .unwrap_or_else(|| panic!("no load assignment for {cluster}"));
    let mut out = Vec::new();
    for group in cla.endpoints {
        assert!(group.locality.is_some(), "locality must be set");
        for lb in group.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = lb.host_identifier else {
                continue;
            };
            let Some(address::Address::SocketAddress(sa)) = ep.address.and_then(|a| a.address)
            else {
                continue;
            };
            let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else {
                continue;
            };
            out.push(format!("{}:{port}", sa.address));
        }
    }
    out
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn syncz(cp: &ControlPlane) -> Vec<Value> {
    let (status, body) = http_get(cp.debug_addr, "/debug/syncz").await;
    assert_eq!(status, 200);
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Polls syncz until `check` holds for the entry of `pod`.
async fn wait_syncz(cp: &ControlPlane, pod: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let entries = syncz(cp).await;
        if let Some(e) = entries.iter().find(|e| e["pod"] == pod) {
            if check(e) {
                return e.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "syncz never matched: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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

    // With the current nonce, new names are answered.
    p.send(
        EDS,
        &[REVIEWS, RATINGS],
        &eds.version_info,
        &eds.nonce,
        None,
    )
    .await;
    let eds2 = p.recv().await;
    assert_eq!(eds2.resources.len(), 2);
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

    let pushed = a.recv().await;
    assert_eq!(pushed.type_url, EDS);
    assert_eq!(endpoints(&pushed, RATINGS), ["10.1.0.30:9080"]);
    assert_eq!(endpoints(&pushed, REVIEWS), ["10.1.0.20:9080"]);
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
    let end = tokio::time::timeout(WAIT, p.rx.message())
        .await
        .expect("stream not ended");
    assert!(matches!(end, Ok(None) | Err(_)));
}

//! Shared by the control plane's socket-level tests (`ads.rs`, `registration.rs`): the
//! control plane on 127.0.0.1:0 with a temporary config directory, proxies played by tonic's
//! generated ADS client, state read back from the debug endpoints.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use controlplane::app::{ControlPlane, Options};
use controlplane::watch::Debounce;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Node};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
use envoy_types::pb::google::rpc;
use prost::Message;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const WAIT: Duration = Duration::from_secs(5);

pub const SERVICES: &str = r#"
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

pub const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
pub const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";

/// The control plane's options for tests: config `dir`, ports chosen by the kernel, short
/// debounce, disconnected workloads dropped at once, no state kept, a CA generated in
/// `dir/.ca` (hidden: the config loader skips it).
pub fn options(dir: &Path) -> Options {
    let ca_dir = dir.join(".ca");
    if !controlplane::ca::store::exists(&ca_dir) {
        controlplane::ca::store::generate(&ca_dir, "cluster.local").expect("test CA");
    }
    Options {
        config_dir: dir.to_path_buf(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        debug_addr: "127.0.0.1:0".parse().unwrap(),
        monitoring_addr: "127.0.0.1:0".parse().unwrap(),
        cluster_domain: "cluster.local".to_string(),
        debounce: Debounce {
            quiet: Duration::from_millis(20),
            max: Duration::from_secs(1),
        },
        workload_grace: Duration::ZERO,
        state_dir: None,
        xds_tls_addr: None,
        ca_dir: Some(ca_dir),
        cert_policy: Default::default(),
        path_normalization: Default::default(),
    }
}

/// Starts a control plane with [`options`].
pub async fn start(dir: &Path) -> ControlPlane {
    ControlPlane::start(options(dir)).await.unwrap()
}

pub fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    dir
}

pub fn string(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

pub fn node(pod: &str, ip: &str, labels: &[(&str, &str)]) -> Node {
    node_in("default", pod, ip, labels)
}

/// The node of a sidecar in namespace `ns`.
pub fn node_in(ns: &str, pod: &str, ip: &str, labels: &[(&str, &str)]) -> Node {
    let labels: HashMap<String, PbValue> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), string(v)))
        .collect();
    let fields = HashMap::from([
        ("NAME".to_string(), string(pod)),
        ("NAMESPACE".to_string(), string(ns)),
        ("INSTANCE_IPS".to_string(), string(ip)),
        (
            "LABELS".to_string(),
            PbValue {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        ),
    ]);
    Node {
        id: format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

/// A proxy's end of one ADS stream.
pub struct Proxy {
    node: Node,
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    first: bool,
}

impl Proxy {
    /// `client-1` (10.1.0.50, `app: client`), connected to `cp`, synced on all four types
    /// (EDS reviews and ratings, RDS 9080), with nothing more pending.
    pub async fn synced_client(cp: &ControlPlane) -> Proxy {
        let mut p = Proxy::connect(
            cp.xds_addr,
            node("client-1", "10.1.0.50", &[("app", "client")]),
        )
        .await;
        p.sync(&[REVIEWS, RATINGS], &["9080"]).await;
        p.expect_silence(Duration::from_millis(300)).await;
        p
    }

    pub async fn connect(addr: SocketAddr, node: Node) -> Proxy {
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

    pub async fn send(
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

    pub async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("no response in time")
            .unwrap()
            .expect("stream ended")
    }

    /// The next message of the stream as it comes: `Ok(None)` once the stream has ended.
    pub async fn message(&mut self) -> Result<Option<DiscoveryResponse>, tonic::Status> {
        self.rx.message().await
    }

    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(msg) = tokio::time::timeout(wait, self.rx.message()).await {
            panic!(
                "unexpected response: {:?}",
                msg.map(|m| m.map(|r| (r.type_url, r.nonce)))
            );
        }
    }

    /// ACKs a response.
    pub async fn ack(&mut self, resp: &DiscoveryResponse, names: &[&str]) {
        let (t, v, n) = (
            resp.type_url.clone(),
            resp.version_info.clone(),
            resp.nonce.clone(),
        );
        self.send(&t, names, &v, &n, None).await;
    }

    /// The Envoy-like initial exchange: CDS, EDS (for `eds`), LDS, RDS (for `rds`), each
    /// ACKed. Returns the four responses, the EDS one as it stands once the control plane has
    /// registered this proxy (see [`Proxy::awaits_registration`]).
    pub async fn sync(&mut self, eds: &[&str], rds: &[&str]) -> [DiscoveryResponse; 4] {
        self.send(CDS, &[], "", "", None).await;
        let cds = self.recv().await;
        assert_eq!(cds.type_url, CDS);
        self.ack(&cds, &[]).await;
        self.send(EDS, eds, "", "", None).await;
        let mut eds_resp = self.recv().await;
        assert_eq!(eds_resp.type_url, EDS);
        self.ack(&eds_resp, eds).await;
        self.send(LDS, &[], "", "", None).await;
        let lds = self.recv_skipping_eds(LDS, eds, &mut eds_resp).await;
        self.ack(&lds, &[]).await;
        self.send(RDS, rds, "", "", None).await;
        let rds_resp = self.recv_skipping_eds(RDS, eds, &mut eds_resp).await;
        self.ack(&rds_resp, rds).await;
        if self.awaits_registration(&eds_resp) {
            eds_resp = self.recv().await;
            assert_eq!(eds_resp.type_url, EDS);
            assert!(!self.awaits_registration(&eds_resp), "no workload metadata");
            self.ack(&eds_resp, eds).await;
        }
        [cds, eds_resp, lds, rds_resp]
    }

    /// The next response of `type_url`; an EDS push that comes first is ACKed and kept in
    /// `latest_eds`.
    async fn recv_skipping_eds(
        &mut self,
        type_url: &str,
        eds: &[&str],
        latest_eds: &mut DiscoveryResponse,
    ) -> DiscoveryResponse {
        loop {
            let resp = self.recv().await;
            if resp.type_url == type_url {
                return resp;
            }
            assert_eq!(resp.type_url, EDS, "expected {type_url}");
            self.ack(&resp, eds).await;
            *latest_eds = resp;
        }
    }

    /// Whether `eds` holds an endpoint at this proxy's address, in a Service of its
    /// namespace, without the workload telemetry metadata: the control plane registers a
    /// connecting proxy after its first push (debounced), and then sends that endpoint again
    /// with the workload's metadata.
    fn awaits_registration(&self, eds: &DiscoveryResponse) -> bool {
        let meta = self.node.metadata.as_ref();
        let field = |k: &str| match meta.and_then(|m| m.fields.get(k)?.kind.as_ref()) {
            Some(Kind::StringValue(s)) => s.clone(),
            _ => String::new(),
        };
        let (ip, ns) = (field("INSTANCE_IPS"), field("NAMESPACE"));
        eds.resources
            .iter()
            .map(|a| ClusterLoadAssignment::decode(a.value.as_slice()).unwrap())
            .filter(|c| {
                c.cluster_name
                    .split('|')
                    .nth(3)
                    .and_then(|h| h.split('.').nth(1))
                    == Some(&ns)
            })
            .flat_map(|c| c.endpoints)
            .flat_map(|g| g.lb_endpoints)
            .any(|lb| {
                let at_ip = matches!(&lb.host_identifier,
                    Some(lb_endpoint::HostIdentifier::Endpoint(ep))
                        if matches!(ep.address.as_ref().and_then(|a| a.address.as_ref()),
                            Some(address::Address::SocketAddress(sa)) if sa.address == ip));
                let has_workload = lb
                    .metadata
                    .as_ref()
                    .and_then(|m| m.filter_metadata.get("istio"))
                    .is_some_and(|s| s.fields.contains_key("workload"));
                at_ip && !has_workload
            })
    }
}

pub fn names<T: Message + Default>(
    resp: &DiscoveryResponse,
    name: fn(&T) -> String,
) -> Vec<String> {
    resp.resources
        .iter()
        .map(|a| name(&T::decode(a.value.as_slice()).unwrap()))
        .collect()
}

pub fn endpoints(resp: &DiscoveryResponse, cluster: &str) -> Vec<String> {
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

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
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

pub async fn syncz(cp: &ControlPlane) -> Vec<Value> {
    let (status, body) = http_get(cp.debug_addr, "/debug/syncz").await;
    assert_eq!(status, 200);
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Polls syncz until `check` holds for the entry of `pod`.
pub async fn wait_syncz(cp: &ControlPlane, pod: &str, check: impl Fn(&Value) -> bool) -> Value {
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

/// The value of the series `name` whose labels include `labels` (summed over the others).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            continue;
        }
        let found: BTreeMap<&str, &str> = rest
            .trim_end_matches('}')
            .split("\",")
            .filter_map(|kv| kv.split_once("=\""))
            .map(|(k, v)| (k, v.trim_end_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| found.get(k) == Some(v)) {
            total += value.parse::<f64>().unwrap();
        }
    }
    total
}

/// The control plane's `/metrics` page on its monitoring port.
pub async fn metrics(cp: &ControlPlane) -> String {
    let (status, body) = http_get(cp.monitoring_addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

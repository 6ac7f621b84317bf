use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind as VK, Struct, Value};

use super::*;
use crate::config::ConfigStore;

const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 9081}
  - {name: grpc-api, port: 9090}
  - {name: metrics, port: 15014, appProtocol: TCP}
  - {name: dns, port: 53, protocol: UDP}
  - {name: web, port: 8000, targetPort: web-port}
---
apiVersion: v1
kind: Endpoints
metadata: {name: reviews, namespace: shop}
subsets:
- addresses: [{ip: 10.0.0.5}, {ip: 10.0.0.4}]
  notReadyAddresses: [{ip: 10.0.0.9}]
  ports: [{name: http, port: 9081}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: reviews-x, namespace: shop, labels: {kubernetes.io/service-name: reviews}}
addressType: IPv4
endpoints:
- addresses: [10.0.0.4]
  zone: z1
- addresses: [10.0.0.6]
  conditions: {ready: false}
ports: [{name: grpc-api, port: 9090}]
"#;

fn config() -> Arc<ConfigSnapshot> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), CONFIG).unwrap();
    let snap = ConfigStore::load(dir.path()).current();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    snap
}

fn s(v: &str) -> Value {
    Value {
        kind: Some(VK::StringValue(v.to_string())),
    }
}

fn node(id: &str, meta: &[(&str, Value)]) -> Node {
    Node {
        id: id.to_string(),
        metadata: Some(Struct {
            fields: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }),
        ..Default::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Value {
    let fields: HashMap<String, Value> = pairs.iter().map(|(k, v)| (k.to_string(), s(v))).collect();
    Value {
        kind: Some(VK::StructValue(Struct { fields })),
    }
}

#[test]
fn protocols_from_app_protocol_then_name_prefix() {
    let cfg = config();
    let mesh = MeshSnapshot::build(&cfg, [], "cluster.local");
    let svc = &mesh.services[&ServiceKey {
        namespace: "shop".into(),
        name: "reviews".into(),
    }];
    assert_eq!(svc.hostname, "reviews.shop.svc.cluster.local");
    let protocols: Vec<_> = svc.ports.iter().map(|p| p.protocol).collect();
    assert_eq!(
        protocols,
        [
            Protocol::Http,
            Protocol::Grpc,
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Auto
        ]
    );
    assert_eq!(Protocol::parse("HTTP2"), Some(Protocol::Http2));
    assert_eq!(Protocol::parse("kubernetes.io/h2c"), Some(Protocol::Http2));
    assert_eq!(Protocol::parse("foo"), None);
}

#[test]
fn endpoints_from_objects_and_proxies_deduplicated() {
    let cfg = config();
    let key = ServiceKey {
        namespace: "shop".into(),
        name: "reviews".into(),
    };
    let matching = ProxyInfo::from_node(Some(&node(
        "sidecar~10.0.0.7~reviews-1.shop~shop.svc.cluster.local",
        &[
            ("NAMESPACE", s("shop")),
            ("INSTANCE_IPS", s("10.0.0.7")),
            (
                "LABELS",
                labels(&[("app", "reviews"), ("topology.kubernetes.io/zone", "z2")]),
            ),
        ],
    )));
    let duplicate = ProxyInfo::from_node(Some(&node(
        "",
        &[
            ("NAMESPACE", s("shop")),
            ("INSTANCE_IPS", s("10.0.0.5")),
            ("LABELS", labels(&[("app", "reviews")])),
        ],
    )));
    let other_ns = ProxyInfo::from_node(Some(&node(
        "",
        &[
            ("NAMESPACE", s("default")),
            ("INSTANCE_IPS", s("10.0.0.8")),
            ("LABELS", labels(&[("app", "reviews")])),
        ],
    )));
    let mesh = MeshSnapshot::build(&cfg, [&matching, &duplicate, &other_ns], "cluster.local");
    let http: Vec<_> = mesh
        .endpoints_of(&key, 9080)
        .iter()
        .map(|e| (e.ip.to_string(), e.port, e.healthy, e.locality.zone.clone()))
        .collect();
    assert_eq!(
        http,
        [
            ("10.0.0.4".into(), 9081, true, "".into()),
            ("10.0.0.5".into(), 9081, true, "".into()),
            ("10.0.0.9".into(), 9081, false, "".into()),
            ("10.0.0.7".into(), 9081, true, "z2".into()),
        ]
    );
    let grpc: Vec<_> = mesh
        .endpoints_of(&key, 9090)
        .iter()
        .map(|e| (e.ip.to_string(), e.healthy))
        .collect();
    assert_eq!(
        grpc,
        [
            ("10.0.0.5".into(), true),
            ("10.0.0.6".into(), false),
            ("10.0.0.4".into(), true),
            ("10.0.0.7".into(), true),
        ]
    );
    assert!(mesh.endpoints_of(&key, 53).is_empty(), "UDP is not proxied");
    assert!(
        mesh.endpoints_of(&key, 8000).is_empty(),
        "named target port unresolvable"
    );
}

#[test]
fn proxy_info_from_metadata_from_id_or_nothing() {
    let full = ProxyInfo::from_node(Some(&node(
        "sidecar~10.1.0.2~productpage-v1-abc.default~default.svc.cluster.local",
        &[
            ("NAME", s("productpage-v1-abc")),
            ("NAMESPACE", s("default")),
            ("INSTANCE_IPS", s("10.1.0.2,fd00::2")),
            ("SERVICE_ACCOUNT", s("bookinfo-productpage")),
            ("LABELS", labels(&[("app", "productpage")])),
        ],
    )));
    assert_eq!(full.pod.as_deref(), Some("productpage-v1-abc"));
    assert_eq!(full.ips.len(), 2);
    assert_eq!(
        full.service_account.as_deref(),
        Some("bookinfo-productpage")
    );
    assert_eq!(full.labels["app"], "productpage");
    assert!(full.workload().is_some());

    let id_only = ProxyInfo::from_node(Some(&Node {
        id: "sidecar~10.1.0.3~ratings-1.shop~shop.svc.cluster.local".into(),
        ..Default::default()
    }));
    assert_eq!(id_only.pod.as_deref(), Some("ratings-1"));
    assert_eq!(id_only.namespace.as_deref(), Some("shop"));
    assert_eq!(
        id_only.ips,
        ["10.1.0.3".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(id_only.labels.is_empty());

    let anonymous = ProxyInfo::from_node(Some(&Node {
        id: "envoy-1".into(),
        ..Default::default()
    }));
    assert_eq!(anonymous.workload(), None);
    assert_eq!(ProxyInfo::from_node(None).workload(), None);
}

#[tokio::test]
async fn registry_publishes_proxy_changes_after_debounce() {
    let (_tx, rx) = watch::channel(config());
    let timing = Debounce {
        quiet: std::time::Duration::from_millis(20),
        max: std::time::Duration::from_secs(1),
    };
    let handle = spawn_registry(
        rx,
        "cluster.local".to_string(),
        timing,
        Workloads::in_memory(Duration::ZERO),
    );
    let mut snaps = handle.subscribe();
    let key = ServiceKey {
        namespace: "shop".into(),
        name: "reviews".into(),
    };
    assert_eq!(handle.current().endpoints_of(&key, 9080).len(), 3);
    let proxy = ProxyInfo::from_node(Some(&node(
        "",
        &[
            ("NAMESPACE", s("shop")),
            ("INSTANCE_IPS", s("10.0.0.7")),
            ("LABELS", labels(&[("app", "reviews")])),
        ],
    )));
    handle.connect(1, Arc::new(proxy));
    snaps.changed().await.unwrap();
    assert_eq!(snaps.borrow_and_update().endpoints_of(&key, 9080).len(), 4);
    handle.disconnect(1);
    snaps.changed().await.unwrap();
    let snap = snaps.borrow_and_update().clone();
    assert_eq!(snap.endpoints_of(&key, 9080).len(), 3);
    assert_eq!(snap.version, 2);
}

fn workload(pod: &str, ip: &str) -> Arc<ProxyInfo> {
    Arc::new(ProxyInfo::from_node(Some(&node(
        &format!("sidecar~{ip}~{pod}.shop~shop.svc.cluster.local"),
        &[
            ("NAMESPACE", s("shop")),
            ("INSTANCE_IPS", s(ip)),
            ("LABELS", labels(&[("app", "reviews")])),
        ],
    ))))
}

fn pods(w: &Workloads) -> Vec<String> {
    w.all().filter_map(|p| p.pod.clone()).collect()
}

#[test]
fn a_departed_workload_counts_until_its_grace_period_ends() {
    let grace = Duration::from_secs(10);
    let mut w = Workloads::in_memory(grace);
    let t0 = Instant::now();
    w.connect(1, workload("reviews-1", "10.0.0.7"));
    w.connect(2, workload("reviews-2", "10.0.0.8"));
    w.disconnect(1, t0);
    assert_eq!(pods(&w), ["reviews-2", "reviews-1"]);
    assert_eq!(w.next_expiry(), Some(t0 + grace));
    assert!(!w.expire(t0 + grace - Duration::from_millis(1)));
    assert!(w.expire(t0 + grace));
    assert_eq!(pods(&w), ["reviews-2"]);
    assert_eq!(w.next_expiry(), None);
    // Without a grace period a disconnect takes effect at once.
    let mut w = Workloads::in_memory(Duration::ZERO);
    w.connect(1, workload("reviews-1", "10.0.0.7"));
    w.disconnect(1, t0);
    assert!(pods(&w).is_empty());
}

#[test]
fn a_reconnecting_proxy_replaces_its_departed_registration() {
    let mut w = Workloads::in_memory(Duration::from_secs(10));
    w.connect(1, workload("reviews-1", "10.0.0.7"));
    w.disconnect(1, Instant::now());
    w.connect(2, workload("reviews-1", "10.0.0.7"));
    assert_eq!(pods(&w), ["reviews-1"]);
    assert_eq!(w.next_expiry(), None);
    // A stale stream of a node that is connected again does not make it depart.
    w.connect(3, workload("reviews-1", "10.0.0.7"));
    w.disconnect(2, Instant::now());
    assert_eq!(w.next_expiry(), None);
}

#[test]
fn registrations_survive_a_restart_through_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(workloads::STATE_FILE);
    let grace = Duration::from_secs(10);
    let mut w = Workloads::persistent(grace, file.clone()).unwrap();
    assert!(pods(&w).is_empty(), "no file yet");
    w.connect(1, workload("reviews-1", "10.0.0.7"));
    w.connect(2, workload("reviews-2", "10.0.0.8"));
    w.disconnect(2, Instant::now());
    w.save().unwrap();
    // The next control plane starts with both, as departed workloads.
    let started = Instant::now();
    let mut again = Workloads::persistent(grace, file.clone()).unwrap();
    assert_eq!(pods(&again), ["reviews-1", "reviews-2"]);
    assert!(again.next_expiry().is_some_and(|t| t >= started + grace));
    assert_eq!(
        again.all().next(),
        Some(&*workload("reviews-1", "10.0.0.7"))
    );
    again.connect(7, workload("reviews-1", "10.0.0.7"));
    assert_eq!(pods(&again), ["reviews-1", "reviews-2"]);
    assert!(again.expire(started + grace + Duration::from_secs(1)));
    assert_eq!(pods(&again), ["reviews-1"]);
    // A file that is not a list of workloads is an error naming it.
    std::fs::write(&file, "{not json").unwrap();
    let e = Workloads::persistent(grace, file.clone()).unwrap_err();
    assert!(e.to_string().contains("workloads.json"), "{e}");
}

#[tokio::test]
async fn a_disconnected_proxy_stays_an_endpoint_for_the_grace_period() {
    let (_tx, rx) = watch::channel(config());
    let timing = Debounce {
        quiet: Duration::from_millis(10),
        max: Duration::from_secs(1),
    };
    let grace = Duration::from_millis(300);
    let handle = spawn_registry(
        rx,
        "cluster.local".to_string(),
        timing,
        Workloads::in_memory(grace),
    );
    let mut snaps = handle.subscribe();
    let key = ServiceKey {
        namespace: "shop".into(),
        name: "reviews".into(),
    };
    handle.connect(1, workload("reviews-1", "10.0.0.7"));
    snaps.changed().await.unwrap();
    assert_eq!(snaps.borrow_and_update().endpoints_of(&key, 9080).len(), 4);
    let gone = Instant::now();
    handle.disconnect(1);
    snaps.changed().await.unwrap();
    assert!(
        gone.elapsed() >= grace,
        "removed after {:?}",
        gone.elapsed()
    );
    assert_eq!(snaps.borrow_and_update().endpoints_of(&key, 9080).len(), 3);
}

//! The incremental endpoint update gives what a full rebuild gives.

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind as VK, Struct, Value};

use super::*;
use crate::config::ConfigStore;
use crate::registry::MeshSettings;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 9081}
  - {name: grpc-api, port: 9090}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [ext.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.1.0.1}, {address: 10.0.0.4}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: shop}
spec:
  hosts: [dns.example]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: a.dns.example}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: shop}
spec: {address: 10.0.0.30, labels: {app: reviews}, serviceAccount: vm}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress: [{hosts: ["./*"]}]
"#;

/// The endpoint objects before the change.
const BEFORE: &str = r#"
apiVersion: v1
kind: Endpoints
metadata: {name: reviews, namespace: shop}
subsets:
- addresses: [{ip: 10.0.0.5}, {ip: 10.0.0.4}]
  ports: [{name: http, port: 9081}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ratings-a, namespace: shop, labels: {kubernetes.io/service-name: ratings}}
addressType: IPv4
endpoints:
- addresses: [10.0.0.20]
ports: [{name: http, port: 9080}]
"#;

/// One address of reviews moved (to a connected proxy's address, which labels it, and to one
/// a proxy registers itself), one not ready; ratings' slice replaced by another.
const AFTER: &str = r#"
apiVersion: v1
kind: Endpoints
metadata: {name: reviews, namespace: shop}
subsets:
- addresses: [{ip: 10.0.0.5}, {ip: 10.0.0.7}, {ip: 10.0.0.30}]
  notReadyAddresses: [{ip: 10.0.0.9}]
  ports: [{name: http, port: 9081}, {name: grpc-api, port: 9090}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ratings-b, namespace: shop, labels: {kubernetes.io/service-name: ratings}}
addressType: IPv4
endpoints:
- addresses: [10.0.0.21]
  zone: z1
ports: [{name: http, port: 9080}]
"#;

fn s(v: &str) -> Value {
    Value {
        kind: Some(VK::StringValue(v.to_string())),
    }
}

fn proxy(ip: &str, app: &str) -> ProxyInfo {
    let fields: HashMap<String, Value> = [("app".to_string(), s(app))].into();
    let meta: HashMap<String, Value> = [
        ("NAMESPACE".to_string(), s("shop")),
        ("INSTANCE_IPS".to_string(), s(ip)),
        (
            "LABELS".to_string(),
            Value {
                kind: Some(VK::StructValue(Struct { fields })),
            },
        ),
    ]
    .into();
    ProxyInfo::from_node(Some(&Node {
        id: format!("sidecar~{ip}~{app}.shop~shop.svc.cluster.local"),
        metadata: Some(Struct { fields: meta }),
        ..Default::default()
    }))
}

fn key(name: &str) -> ServiceKey {
    ServiceKey {
        namespace: "shop".into(),
        name: name.into(),
    }
}

/// The config of `services` and `endpoints`, then of `services_after` and `endpoints_after`.
fn configs(
    services: &str,
    endpoints: &str,
    services_after: &str,
    endpoints_after: &str,
) -> (Arc<ConfigSnapshot>, Arc<ConfigSnapshot>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), services).unwrap();
    std::fs::write(dir.path().join("endpoints.yaml"), endpoints).unwrap();
    let mut store = ConfigStore::load(dir.path());
    let before = store.current();
    assert!(before.errors.is_empty(), "{:?}", before.errors);
    std::fs::write(dir.path().join("services.yaml"), services_after).unwrap();
    std::fs::write(dir.path().join("endpoints.yaml"), endpoints_after).unwrap();
    let after = store.reload();
    assert!(after.errors.is_empty(), "{:?}", after.errors);
    (before, after)
}

fn assert_same(incremental: &MeshSnapshot, full: &MeshSnapshot) {
    assert_eq!(incremental.services, full.services);
    assert_eq!(incremental.endpoints, full.endpoints);
    assert_eq!(incremental.dns_endpoints, full.dns_endpoints);
    assert_eq!(incremental.sidecars, full.sidecars);
    assert!(incremental.same_content(full));
}

#[test]
fn endpoint_update_equals_full_rebuild() {
    let (before, after) = configs(SERVICES, BEFORE, SERVICES, AFTER);
    let settings = MeshSettings::from("cluster.local".to_string());
    let proxies = [proxy("10.0.0.7", "other"), proxy("10.0.0.8", "ratings")];
    let old = MeshSnapshot::build_with(&before, &proxies, &settings);
    let affected = endpoint_only_changes(&before, &after).expect("endpoints only");
    assert_eq!(affected, BTreeSet::from([key("ratings"), key("reviews")]));
    let incremental = old.with_endpoints_of(&after, &proxies, affected);
    let full = MeshSnapshot::build_with(&after, &proxies, &settings);
    assert_same(&incremental, &full);
    // The change is visible (labels of the connected proxy at a moved address, the slice's
    // zone, the proxy registered as an endpoint after the config's), and the rest shared.
    let reviews = incremental.endpoints_of(&key("reviews"), 9080);
    assert_eq!(reviews.len(), 4);
    assert!(reviews
        .iter()
        .any(|e| e.ip.to_string() == "10.0.0.7" && e.labels.contains_key("app")));
    assert_eq!(incremental.endpoints_of(&key("reviews"), 9090).len(), 4);
    let ratings = incremental.endpoints_of(&key("ratings"), 9080);
    assert_eq!(ratings.len(), 2);
    assert!(ratings.iter().any(|e| e.locality.zone == "z1"));
    assert!(Arc::ptr_eq(&incremental.networking, &old.networking));
    assert_ne!(old.endpoints, incremental.endpoints);
    // And back again.
    let back = incremental.with_endpoints_of(
        &before,
        &proxies,
        endpoint_only_changes(&after, &before).unwrap(),
    );
    assert_same(&back, &old);
}

#[test]
fn removed_endpoints_leave_no_entry() {
    let (before, after) = configs(SERVICES, BEFORE, SERVICES, "");
    let settings = MeshSettings::from("cluster.local".to_string());
    let proxies: [ProxyInfo; 0] = [];
    let old = MeshSnapshot::build_with(&before, &proxies, &settings);
    let affected = endpoint_only_changes(&before, &after).unwrap();
    let incremental = old.with_endpoints_of(&after, &proxies, affected);
    assert_same(
        &incremental,
        &MeshSnapshot::build_with(&after, &proxies, &settings),
    );
    assert!(incremental.endpoints_of(&key("ratings"), 9080).is_empty());
}

#[test]
fn other_changes_are_not_endpoint_only() {
    let changed_service = SERVICES.replace("port: 9090", "port: 9091");
    let (before, after) = configs(SERVICES, BEFORE, &changed_service, BEFORE);
    assert_eq!(endpoint_only_changes(&before, &after), None);
    let moved_vm = SERVICES.replace("10.0.0.30", "10.0.0.31");
    let (before, after) = configs(SERVICES, BEFORE, &moved_vm, AFTER);
    assert_eq!(endpoint_only_changes(&before, &after), None);
    let (before, after) = configs(SERVICES, BEFORE, SERVICES, BEFORE);
    assert_eq!(
        endpoint_only_changes(&before, &after),
        Some(BTreeSet::new())
    );
}

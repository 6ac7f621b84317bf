use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::time::Instant;

use super::*;
use crate::config::ConfigStore;
use crate::xds::push::{cluster_host, TriggerReason};
use crate::xds::ResourceType::{Cluster as C, Endpoint as E, Listener as L, Route as R};

const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {clusterIP: 10.96.0.20, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: reviews, namespace: default}
subsets: [{addresses: [{ip: 10.1.0.1}], ports: [{name: http, port: 9080}]}]
"#;

fn virtual_service(ns: &str, export: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: r, namespace: {ns}}}\n\
         spec: {{hosts: [reviews.default.svc.cluster.local], exportTo: {export},\n\
         http: [{{route: [{{destination: {{host: reviews.default.svc.cluster.local}}}}]}}]}}\n"
    )
}

fn authorization_policy(ns: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: deny, namespace: {ns}}}\nspec: {{action: DENY, rules: [{{}}]}}\n"
    )
}

const GATEWAY: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"#;

fn mesh(yaml: &str, proxies: &[&ProxyInfo]) -> Arc<MeshSnapshot> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let cfg = ConfigStore::load(dir.path()).current();
    assert!(cfg.errors.is_empty(), "{:?}", cfg.errors);
    Arc::new(MeshSnapshot::build(
        &cfg,
        proxies.iter().copied(),
        "cluster.local",
    ))
}

fn proxy(ns: &str, app: &str, ip: &str) -> ProxyInfo {
    ProxyInfo {
        id: format!("sidecar~{ip}~{app}-1.{ns}~{ns}.svc.cluster.local"),
        pod: Some(format!("{app}-1")),
        namespace: Some(ns.into()),
        ips: vec![ip.parse().unwrap()],
        labels: [("app".to_string(), app.to_string())].into(),
        ..Default::default()
    }
}

fn plan_for(old: &MeshSnapshot, new: &MeshSnapshot, p: &ProxyInfo) -> ProxyPush {
    plan(&PushRequest::between(old, new, Instant::now()), old, new, p)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn endpoint_changes_are_endpoint_only_pushes() {
    let old = mesh(BASE, &[]);
    // A proxy registering as an endpoint of reviews.
    let new = mesh(BASE, &[&proxy("default", "reviews", "10.1.0.8")]);
    let req = PushRequest::between(&old, &new, Instant::now());
    assert!(!req.full);
    assert!(req.configs_updated.is_empty());
    assert_eq!(
        req.endpoints_updated,
        set(&["reviews.default.svc.cluster.local"])
    );
    assert_eq!(req.reasons, [(TriggerReason::Endpoint, 1)].into());
    let p = plan(&req, &old, &new, &proxy("other", "client", "10.1.0.9"));
    assert_eq!(p.types, TypeSet::of(&[E]));
    assert_eq!(
        p.eds,
        EdsScope::Hosts(set(&["reviews.default.svc.cluster.local"]))
    );
    // An Endpoints object edit too.
    let edited = mesh(&BASE.replace("10.1.0.1", "10.1.0.2"), &[]);
    let req = PushRequest::between(&old, &edited, Instant::now());
    assert!(!req.full && req.configs_updated.is_empty(), "{req:?}");
}

#[test]
fn endpoints_running_as_a_new_identity_are_a_full_push() {
    // The service's clusters verify the identities its endpoints run as (SANs in CDS).
    let old = mesh(BASE, &[]);
    let mut reviews = proxy("default", "reviews", "10.1.0.8");
    reviews.service_account = Some("bookinfo-reviews".into());
    let new = mesh(BASE, &[&reviews]);
    let req = PushRequest::between(&old, &new, Instant::now());
    assert!(req.full, "{req:?}");
    let keys: Vec<String> = req
        .configs_updated
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, ["Service default/reviews"]);
    let p = plan(&req, &old, &new, &proxy("other", "client", "10.1.0.9"));
    assert!(p.types.contains(C), "{:?}", p.types);
    // Another endpoint with the same identity: endpoints only.
    let mut second = proxy("default", "reviews", "10.1.0.10");
    second.service_account = Some("bookinfo-reviews".into());
    let newer = mesh(BASE, &[&reviews, &second]);
    let req = PushRequest::between(&new, &newer, Instant::now());
    assert!(!req.full, "{req:?}");
}

#[test]
fn a_service_change_is_a_full_push_for_everyone() {
    let old = mesh(BASE, &[]);
    let new = mesh(&BASE.replace("10.96.0.20", "10.96.0.21"), &[]);
    let req = PushRequest::between(&old, &new, Instant::now());
    assert!(req.full);
    let keys: Vec<String> = req
        .configs_updated
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, ["Service default/reviews"]);
    assert!(req.reasons.contains_key(&TriggerReason::Config));
    assert!(req.reasons.contains_key(&TriggerReason::Service));
    let p = plan(&req, &old, &new, &proxy("elsewhere", "client", "10.1.0.9"));
    // Load assignments are recomputed for the changed Service's host only.
    let reviews = EdsScope::Hosts(set(&["reviews.default.svc.cluster.local"]));
    assert_eq!((p.types, &p.eds), (TypeSet::ALL, &reviews));
    // A new Service beside it: its host alone.
    let added = BASE.to_string()
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: default}\n\
           spec: {clusterIP: 10.96.0.30, ports: [{name: http, port: 9080}]}\n";
    let p = plan_for(
        &old,
        &mesh(&added, &[]),
        &proxy("elsewhere", "client", "10.1.0.9"),
    );
    let ratings = EdsScope::Hosts(set(&["ratings.default.svc.cluster.local"]));
    assert_eq!((p.types, &p.eds), (TypeSet::ALL, &ratings));
    // Other kinds that reach endpoints recompute them all.
    let sidecar = BASE.to_string()
        + "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\n\
           metadata: {name: default, namespace: elsewhere}\nspec: {egress: [{hosts: [\"./*\"]}]}\n";
    let p = plan_for(
        &old,
        &mesh(&sidecar, &[]),
        &proxy("elsewhere", "client", "10.1.0.9"),
    );
    assert_eq!((p.types, p.eds), (TypeSet::ALL, EdsScope::All));
}

#[test]
fn namespace_local_policy_reaches_only_its_namespace_or_all_from_the_root() {
    let old = mesh(BASE, &[]);
    let in_default = proxy("default", "reviews", "10.1.0.8");
    let in_shop = proxy("shop", "cart", "10.1.0.9");
    let new = mesh(&(BASE.to_string() + &authorization_policy("default")), &[]);
    assert_eq!(plan_for(&old, &new, &in_default).types, TypeSet::of(&[L]));
    assert!(plan_for(&old, &new, &in_shop).is_empty());
    let root = mesh(
        &(BASE.to_string() + &authorization_policy(ROOT_NAMESPACE)),
        &[],
    );
    assert_eq!(plan_for(&old, &root, &in_shop).types, TypeSet::of(&[L]));
    // Removing it reaches the same proxies.
    assert_eq!(plan_for(&new, &old, &in_default).types, TypeSet::of(&[L]));
    assert!(plan_for(&new, &old, &in_shop).is_empty());
}

#[test]
fn export_to_limits_who_a_virtual_service_change_reaches() {
    let old = mesh(BASE, &[]);
    let in_default = proxy("default", "reviews", "10.1.0.8");
    let in_shop = proxy("shop", "cart", "10.1.0.9");
    let local = mesh(
        &(BASE.to_string() + &virtual_service("shop", "[\".\"]")),
        &[],
    );
    assert_eq!(
        plan_for(&old, &local, &in_shop).types,
        TypeSet::of(&[C, L, R])
    );
    assert!(plan_for(&old, &local, &in_default).is_empty());
    let everywhere = mesh(
        &(BASE.to_string() + &virtual_service("shop", "[\"*\"]")),
        &[],
    );
    assert_eq!(
        plan_for(&old, &everywhere, &in_default).types,
        TypeSet::of(&[C, L, R])
    );
    let listed = mesh(
        &(BASE.to_string() + &virtual_service("shop", "[default]")),
        &[],
    );
    assert_eq!(
        plan_for(&old, &listed, &in_default).types,
        TypeSet::of(&[C, L, R])
    );
    // Narrowing the export still reaches those who saw the old one.
    assert_eq!(
        plan_for(&everywhere, &local, &in_default).types,
        TypeSet::of(&[C, L, R])
    );
}

#[test]
fn gateways_do_not_concern_sidecars() {
    let old = mesh(BASE, &[]);
    let new = mesh(&(BASE.to_string() + GATEWAY), &[]);
    let req = PushRequest::between(&old, &new, Instant::now());
    assert!(req.full);
    assert!(plan(&req, &old, &new, &proxy("default", "reviews", "10.1.0.8")).is_empty());
}

#[test]
fn merged_requests_cover_both() {
    let t0 = Instant::now();
    let mut a = PushRequest {
        full: false,
        configs_updated: BTreeSet::new(),
        endpoints_updated: set(&["a"]),
        reasons: [(TriggerReason::Endpoint, 1)].into(),
        start: t0 + std::time::Duration::from_millis(5),
    };
    let b = PushRequest {
        full: true,
        configs_updated: [crate::config::ObjectKey {
            kind: crate::config::Kind::VirtualService,
            namespace: "default".into(),
            name: "r".into(),
        }]
        .into(),
        endpoints_updated: set(&["b"]),
        reasons: [(TriggerReason::Config, 1), (TriggerReason::Endpoint, 2)].into(),
        start: t0,
    };
    a.merge(b);
    assert!(a.full);
    assert_eq!(a.configs_updated.len(), 1);
    assert_eq!(a.endpoints_updated, set(&["a", "b"]));
    assert_eq!(a.reasons[&TriggerReason::Endpoint], 3);
    assert_eq!(a.start, t0);
    // "Everything" absorbs scoped requests.
    a.merge(PushRequest::everything(t0));
    assert!(a.full && a.configs_updated.is_empty());
}

#[test]
fn cluster_names_give_their_host() {
    assert_eq!(
        cluster_host("outbound|9080||reviews.default.svc.cluster.local"),
        Some("reviews.default.svc.cluster.local")
    );
    assert_eq!(
        cluster_host("outbound|9080|v1|reviews.default.svc.cluster.local"),
        Some("reviews.default.svc.cluster.local")
    );
    assert_eq!(cluster_host("inbound|9080||"), None);
    assert_eq!(cluster_host("PassthroughCluster"), None);
}

use std::fs;
use std::path::Path;

use super::objects::{ClusterIp, TargetPort};
use super::*;

const GOOD: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: default
spec:
  clusterIP: 10.96.0.20
  selector:
    app: reviews
  ports:
  - name: http
    port: 9080
    targetPort: 9081
"#;

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn messages(s: &ConfigSnapshot) -> Vec<String> {
    s.errors.iter().map(|e| e.to_string()).collect()
}

fn key(kind: Kind, ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

#[test]
fn loads_a_service_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "svc.yaml", GOOD);
    let store = ConfigStore::load(dir.path());
    let snap = store.current();
    assert!(snap.errors.is_empty(), "{:?}", messages(&snap));
    let Object::Service(svc) = &snap.objects[&key(Kind::Service, "default", "reviews")].object
    else {
        panic!("not a service")
    };
    assert_eq!(svc.cluster_ip, ClusterIp::Ip("10.96.0.20".parse().unwrap()));
    assert_eq!(svc.ports[0].target_port, TargetPort::Number(9081));
    assert_eq!(svc.selector.as_ref().unwrap()["app"], "reviews");
}

#[test]
fn each_problem_names_file_object_and_field_while_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let bad = r#"
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  ports:
  - port: 0
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: shop}
spec: {clusterIP: 10.96.0.30}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-route, namespace: default}
spec: {}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef}
spec: {}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
---
apiVersion: v1
kind: Service
metadata: {name: typed}
spec:
  ports:
  - port: "eighty"
"#;
    write(dir.path(), "a-bad.yaml", bad);
    write(dir.path(), "b/good.yaml", GOOD);
    write(
        dir.path(),
        "c-broken.yaml",
        "apiVersion: v1\nkind: [unclosed\n",
    );
    let snap = ConfigStore::load(dir.path()).current();
    let f = |name: &str| dir.path().join(name).display().to_string();
    let msgs = messages(&snap);
    let expected = [
        format!(
            "{}: Service default/ratings: spec.ports[0].port: must be 1-65535 (got 0)",
            f("a-bad.yaml")
        ),
        format!(
            "{}: Service shop/details: spec.ports: must have at least one entry",
            f("a-bad.yaml")
        ),
        format!(
            "{}: VirtualService default/reviews-route: spec: http, tcp or tls must be provided in \
             virtual service",
            f("a-bad.yaml")
        ),
        format!(
            "{}: EnvoyFilter default/ef: networking.istio.io/v1alpha3 is not supported yet",
            f("a-bad.yaml")
        ),
        format!("{}: Pod p: v1 is not a supported kind", f("a-bad.yaml")),
    ];
    for e in &expected {
        assert!(msgs.contains(e), "missing {e:?} in {msgs:#?}");
    }
    let typed = msgs
        .iter()
        .find(|m| m.contains("Service default/typed"))
        .expect("typed error");
    assert!(
        typed.contains("spec.ports[0].port: invalid type: string \"eighty\""),
        "{typed}"
    );
    let broken = msgs
        .iter()
        .find(|m| m.contains("c-broken.yaml"))
        .expect("yaml error");
    assert!(broken.contains("document 1: invalid YAML"), "{broken}");
    assert_eq!(msgs.len(), 7, "{msgs:#?}");
    // The valid object of another file is in force.
    assert_eq!(snap.objects.len(), 1);
    assert!(snap
        .objects
        .contains_key(&key(Kind::Service, "default", "reviews")));
    // Structured accessors.
    let e = &snap
        .errors
        .iter()
        .find(|e| e.field() == Some("spec.ports[0].port"))
        .unwrap();
    assert_eq!(e.object().as_deref(), Some("Service default/ratings"));
    assert_eq!(e.file(), dir.path().join("a-bad.yaml"));
}

#[test]
fn header_problems_and_validation_rules() {
    let cases: &[(&str, &str)] = &[
        ("kind: Service\nmetadata: {name: x}\n", "document 1: apiVersion: required"),
        ("apiVersion: v1\nkind: Service\n", "document 1: metadata.name: required"),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {ports: [{port: 80}]}\n",
            "Service default/Bad_Name: metadata.name: \"Bad_Name\" is not a valid DNS-1035 label",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}, {port: 81}]}\n",
            "Service default/a: spec.ports[0].name: required when there is more than one port",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.0.0.300, ports: [{port: 80}]}\n",
            "Service default/a: spec.clusterIP: \"10.0.0.300\" is not an IP address",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, targetPort: 70000}]}\n",
            "Service default/a: spec.ports[0].targetPort: must be 1-65535 (got 70000)",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, protocol: QUIC}]}\n",
            "spec.ports[0].protocol: \"QUIC\" is not supported (supported: TCP, UDP, SCTP)",
        ),
        (
            "apiVersion: v1\nkind: Endpoints\nmetadata: {name: a}\nsubsets: [{addresses: [{ip: nope}], ports: [{port: 80}]}]\n",
            "Endpoints default/a: subsets[0].addresses[0].ip: \"nope\" is not an IP address",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1}\naddressType: IPv4\nendpoints: []\nports: []\n",
            "EndpointSlice default/a-1: metadata.labels[kubernetes.io/service-name]: required",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: ['fd00::1']}]\n",
            "EndpointSlice default/a-1: endpoints[0].addresses[0]: fd00::1 is not an IPv4 address",
        ),
    ];
    for (text, expected) in cases {
        let out = load::parse_text(Path::new("x.yaml"), text);
        let msgs: Vec<String> = out
            .docs
            .iter()
            .flat_map(|d| match d {
                DocOutcome::Rejected(_, errs) => errs.iter().map(|e| e.to_string()).collect(),
                DocOutcome::Valid(..) => Vec::new(),
            })
            .collect();
        assert!(
            msgs.iter().any(|m| m.contains(expected)),
            "for {text:?}: expected {expected:?} in {msgs:#?}"
        );
        assert!(msgs.iter().all(|m| m.starts_with("x.yaml: ")), "{msgs:?}");
    }
}

#[test]
fn invalid_object_keeps_its_last_valid_version_and_deleted_objects_go() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "svc.yaml", GOOD);
    write(
        dir.path(),
        "other.yaml",
        &GOOD.replace("reviews", "ratings"),
    );
    let mut store = ConfigStore::load(dir.path());
    assert_eq!(store.current().objects.len(), 2);

    // reviews becomes invalid: its previous version stays, marked kept.
    write(
        dir.path(),
        "svc.yaml",
        &GOOD.replace("port: 9080", "port: 99999"),
    );
    let snap = store.reload();
    let stored = &snap.objects[&key(Kind::Service, "default", "reviews")];
    assert!(stored.kept);
    assert_eq!(snap.errors.len(), 1);
    assert_eq!(snap.generation, 2);

    // A malformed file keeps everything it held.
    write(dir.path(), "other.yaml", "apiVersion: v1\n  kind: : :\n");
    let snap = store.reload();
    assert!(snap.objects[&key(Kind::Service, "default", "ratings")].kept);

    // Fixed again: in force, not kept; deleting a file removes its objects.
    write(dir.path(), "svc.yaml", GOOD);
    fs::remove_file(dir.path().join("other.yaml")).unwrap();
    let snap = store.reload();
    assert!(snap.errors.is_empty());
    assert_eq!(snap.objects.len(), 1);
    assert!(!snap.objects[&key(Kind::Service, "default", "reviews")].kept);
}

#[test]
fn duplicates_hidden_files_and_other_extensions() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", GOOD);
    write(dir.path(), "b.yml", GOOD);
    write(dir.path(), ".hidden/c.yaml", "not: [valid");
    write(dir.path(), "notes.txt", "not yaml at all: [");
    write(dir.path(), "empty.yaml", "---\n# nothing\n---\n");
    let snap = ConfigStore::load(dir.path()).current();
    let msgs = messages(&snap);
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert!(msgs[0].ends_with(&format!(
        "b.yml: Service default/reviews: already defined in {}",
        dir.path().join("a.yaml").display()
    )));
}

#[test]
fn missing_directory_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("conf");
    write(&root, "svc.yaml", GOOD);
    let mut store = ConfigStore::load(&root);
    fs::remove_dir_all(&root).unwrap();
    let snap = store.reload();
    assert_eq!(snap.objects.len(), 1);
    assert!(matches!(snap.errors[0], ConfigError::Directory { .. }));
}

const REVIEWS_DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec:\n  host: reviews\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n";

fn reviews_vs(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 50\n    - destination: {{host: reviews.default.svc.cluster.local, subset: {subset}}}\n      weight: 50\n"
    )
}

#[test]
fn a_route_to_an_undefined_subset_rejects_the_virtual_service() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "dr.yaml", REVIEWS_DR);
    write(dir.path(), "vs.yaml", &reviews_vs("v2"));
    let mut store = ConfigStore::load(dir.path());
    let vs_key = key(Kind::VirtualService, "default", "reviews");
    assert!(store.current().errors.is_empty());
    assert!(!store.current().objects[&vs_key].kept);

    // A subset no DestinationRule defines: rejected, named, and the previous version kept.
    write(dir.path(), "vs.yaml", &reviews_vs("v9"));
    let snap = store.reload();
    assert_eq!(snap.errors.len(), 1, "{:?}", snap.errors);
    let e = &snap.errors[0];
    assert_eq!(e.field(), Some("spec.http[0].route[1].destination.subset"));
    assert_eq!(
        e.object().as_deref(),
        Some("VirtualService default/reviews")
    );
    assert!(e.file().ends_with("vs.yaml"));
    assert!(e.to_string().contains("subset \"v9\""), "{e}");
    assert!(snap.objects[&vs_key].kept);
    assert_eq!(snap.unresolved.len(), 1);

    // Without the DestinationRule neither version passes: the VirtualService is gone.
    fs::remove_file(dir.path().join("dr.yaml")).unwrap();
    let snap = store.reload();
    assert!(!snap.objects.contains_key(&vs_key));
    assert_eq!(snap.errors.len(), 1);

    // Back to a consistent config.
    write(dir.path(), "dr.yaml", REVIEWS_DR);
    write(dir.path(), "vs.yaml", &reviews_vs("v2"));
    let snap = store.reload();
    assert!(snap.errors.is_empty());
    assert!(!snap.objects[&vs_key].kept);
    assert!(snap.unresolved.is_empty());
}

#[test]
fn subsets_of_destination_rules_in_other_namespaces_count_only_when_exported() {
    let dir = tempfile::tempdir().unwrap();
    let private = REVIEWS_DR
        .replace("namespace: default", "namespace: shop")
        .replace(
            "host: reviews",
            "host: reviews.default.svc.cluster.local\n  exportTo: ['.']",
        );
    write(dir.path(), "dr.yaml", &private);
    write(dir.path(), "vs.yaml", &reviews_vs("v2"));
    let snap = ConfigStore::load(dir.path()).current();
    assert_eq!(snap.errors.len(), 1, "{:?}", snap.errors);
    assert_eq!(
        snap.errors[0].field(),
        Some("spec.http[0].route[0].destination.subset")
    );
    write(
        dir.path(),
        "dr.yaml",
        &private.replace("exportTo: ['.']", "exportTo: ['*']"),
    );
    let snap = ConfigStore::load(dir.path()).current();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
}

/// Traffic rules Istio's validation refuses: a regex that does not compile, a negative weight,
/// weights adding up to 0, negative durations (VirtualService and DestinationRule).
const BAD_TRAFFIC_RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: regex, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {regex: "(unclosed"}}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: weights, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route:
    - {destination: {host: ratings}, weight: -10}
    - {destination: {host: ratings}, weight: 110}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: zero, namespace: default}
spec:
  hosts: [details]
  http:
  - route:
    - {destination: {host: details}, weight: 0}
    - {destination: {host: details}, weight: 0}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: timeout, namespace: default}
spec:
  hosts: [productpage]
  http:
  - route: [{destination: {host: productpage}}]
    timeout: -2s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: outlier, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {interval: -5s}
"#;

#[test]
fn bad_traffic_rules_are_rejected_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.yaml", GOOD);
    write(dir.path(), "traffic.yaml", BAD_TRAFFIC_RULES);
    let snap = ConfigStore::load(dir.path()).current();
    let file = dir.path().join("traffic.yaml");
    let want = [
        (
            "VirtualService default/regex",
            "spec.http[0].match[0].uri",
            "error parsing regexp: unclosed group: \"(unclosed\"",
        ),
        (
            "VirtualService default/weights",
            "spec.http[0].route[0].weight",
            "weight -10 < 0",
        ),
        (
            "VirtualService default/zero",
            "spec.http[0].route",
            "total destination weight = 0",
        ),
        (
            "VirtualService default/timeout",
            "spec.http[0].timeout",
            "duration must be greater than 1ms",
        ),
        (
            "DestinationRule default/outlier",
            "spec.trafficPolicy.outlierDetection.interval",
            "duration must be greater than 1ms",
        ),
    ];
    for (object, field, message) in want {
        let e = snap
            .errors
            .iter()
            .find(|e| e.object().as_deref() == Some(object))
            .unwrap_or_else(|| panic!("{object} not rejected: {:#?}", messages(&snap)));
        assert_eq!(e.field(), Some(field), "{e}");
        assert_eq!(e.file(), file);
        assert!(e.to_string().contains(message), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
    assert_eq!(snap.errors.len(), want.len(), "{:#?}", messages(&snap));
    // Only the Service is in force.
    assert_eq!(snap.objects.len(), 1);
}

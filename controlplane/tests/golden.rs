//! Golden translation tests: each `tests/golden/<case>/` holds a config directory
//! (`config/`), the node of the proxy under test (`proxy.json`: `id` and `metadata`, LABELS
//! as an object), the other connected proxies (`peers.json`), and the expected resources
//! (`expected.json`: clusters, endpoints, listeners, routes in Envoy's proto3 JSON form).
//! EDS and RDS are asked for every name the clusters and listeners reference, as Envoy does.
//! A proxyless gRPC node (metadata `GENERATOR: grpc`) asks as gRPC does instead: the listeners
//! named in `proxy.json`'s `listener_names`, then the routes they reference, the clusters the
//! routes reference, and the load assignments of those clusters.
//! `REFRESH_GOLDEN=1` rewrites the expected files.
//!
//! `bookinfo_samples` applies every file of Istio's `samples/bookinfo/networking/` (from
//! `../shared/conformance/istio` or `$MESH_CONFORMANCE_DIR`) over the demo's Bookinfo
//! services (`conf/demo/`), with `destination-rule-all.yaml` beside each file that defines no
//! DestinationRule of its own (as Istio's task pages apply them), and compares the resources
//! of productpage's sidecar with `tests/golden/bookinfo-samples/<file>.json`. Without the
//! samples it prints SKIPPED.

mod skip;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use controlplane::config::ConfigStore;
use controlplane::registry::{MeshSnapshot, ProxyInfo};
use controlplane::xds::{render, resources, ResourceType};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
use serde_json::{json, Value};

fn pb_value(v: &Value) -> PbValue {
    let kind = match v {
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Object(m) => Kind::StructValue(Struct {
            fields: m
                .iter()
                .map(|(k, v)| (k.clone(), pb_value(v)))
                .collect::<HashMap<_, _>>(),
        }),
        other => panic!("unsupported metadata value {other}"),
    };
    PbValue { kind: Some(kind) }
}

fn node(v: &Value) -> Node {
    Node {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        metadata: v.get("metadata").map(|m| match pb_value(m).kind {
            Some(Kind::StructValue(s)) => s,
            _ => panic!("metadata must be an object"),
        }),
        ..Default::default()
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Collects the string values under `key` anywhere in `v`.
fn collect(v: &Value, key: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                match child {
                    Value::String(s) if k == key => {
                        out.insert(s.clone());
                    }
                    _ => collect(child, key, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, key, out)),
        _ => {}
    }
}

fn render_type(
    kind: ResourceType,
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    names: &BTreeSet<String>,
) -> Vec<Value> {
    resources(kind, mesh, proxy, names)
        .into_iter()
        .map(|(name, any)| {
            assert_eq!(any.type_url, kind.type_url(), "{name}");
            render::any(any).unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect()
}

fn run_case(dir: &Path) {
    let text = translate(&dir.join("config"), dir, dir);
    compare(&dir.join("expected.json"), &dir.join("actual.json"), &text);
}

/// The resources of the proxy of `nodes/proxy.json` (with the peers of `nodes/peers.json`)
/// for the config directory `config`, as pretty JSON.
fn translate(config_dir: &Path, nodes: &Path, dir: &Path) -> String {
    let config = ConfigStore::load(config_dir).current();
    assert!(
        config.errors.is_empty(),
        "{}: {:?}",
        dir.display(),
        config.errors
    );
    let proxy_json = read_json(&nodes.join("proxy.json"));
    let proxy = ProxyInfo::from_node(Some(&node(&proxy_json)));
    let peers: Vec<ProxyInfo> = read_json(&nodes.join("peers.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ProxyInfo::from_node(Some(&node(p))))
        .collect();
    let mesh = MeshSnapshot::build(
        &config,
        std::iter::once(&proxy).chain(&peers),
        "cluster.local",
    );
    let none = BTreeSet::new();
    let (clusters, listeners) = if proxy.is_proxyless_grpc() {
        let asked: BTreeSet<String> = proxy_json["listener_names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let listeners = render_type(ResourceType::Listener, &mesh, &proxy, &asked);
        assert_eq!(
            listeners.len(),
            asked.len(),
            "every listener asked for exists"
        );
        let mut rds = BTreeSet::new();
        collect(
            &Value::Array(listeners.clone()),
            "route_config_name",
            &mut rds,
        );
        let routes = render_type(ResourceType::Route, &mesh, &proxy, &rds);
        let mut cds = BTreeSet::new();
        collect(&Value::Array(routes), "cluster", &mut cds);
        let clusters = render_type(ResourceType::Cluster, &mesh, &proxy, &cds);
        (clusters, listeners)
    } else {
        (
            render_type(ResourceType::Cluster, &mesh, &proxy, &none),
            render_type(ResourceType::Listener, &mesh, &proxy, &none),
        )
    };
    let mut eds_names = BTreeSet::new();
    collect(
        &Value::Array(clusters.clone()),
        "service_name",
        &mut eds_names,
    );
    let mut rds_names = BTreeSet::new();
    collect(
        &Value::Array(listeners.clone()),
        "route_config_name",
        &mut rds_names,
    );
    let endpoints = render_type(ResourceType::Endpoint, &mesh, &proxy, &eds_names);
    let routes = render_type(ResourceType::Route, &mesh, &proxy, &rds_names);
    assert_eq!(
        endpoints.len(),
        eds_names.len(),
        "every EDS cluster has a load assignment"
    );
    assert_eq!(
        routes.len(),
        rds_names.len(),
        "every RDS name has a route configuration"
    );

    // Every cluster referenced by a listener or route exists.
    let cluster_names: BTreeSet<String> = clusters
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let mut referenced = BTreeSet::new();
    collect(&Value::Array(listeners.clone()), "cluster", &mut referenced);
    collect(&Value::Array(routes.clone()), "cluster", &mut referenced);
    let missing: Vec<_> = referenced.difference(&cluster_names).collect();
    assert!(
        missing.is_empty(),
        "{}: referenced clusters missing: {missing:?}",
        dir.display()
    );

    let actual = json!({
        "clusters": clusters,
        "endpoints": endpoints,
        "listeners": listeners,
        "routes": routes,
    });
    serde_json::to_string_pretty(&actual).unwrap() + "\n"
}

/// Compares `text` with the file `expected_path` (rewritten under `REFRESH_GOLDEN=1`); on a
/// difference, writes `actual_path` and fails.
fn compare(expected_path: &Path, actual_path: &Path, text: &str) {
    if std::env::var_os("REFRESH_GOLDEN").is_some() {
        fs::write(expected_path, text).unwrap();
        let _ = fs::remove_file(actual_path);
        return;
    }
    let expected = fs::read_to_string(expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with REFRESH_GOLDEN=1 to create it)",
            expected_path.display()
        )
    });
    if expected != text {
        fs::write(actual_path, text).unwrap();
        panic!(
            "{} differs from the translation; actual output written to {} \
             (REFRESH_GOLDEN=1 accepts it)",
            expected_path.display(),
            actual_path.display()
        );
    }
}

#[test]
fn golden_translations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.retain(|p| p.join("config").is_dir());
    cases.sort();
    assert!(
        cases.len() >= 3,
        "golden cases missing in {}",
        root.display()
    );
    for case in cases {
        run_case(&case);
    }
}

#[test]
fn translation_is_deterministic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/bookinfo");
    let config = ConfigStore::load(dir.join("config")).current();
    let proxy = ProxyInfo::from_node(Some(&node(&read_json(&dir.join("proxy.json")))));
    let mesh = MeshSnapshot::build(&config, [&proxy], "cluster.local");
    for kind in ResourceType::ALL {
        let names: BTreeSet<String> = ["9080", "outbound|9080||reviews.default.svc.cluster.local"]
            .into_iter()
            .map(String::from)
            .collect();
        let a = resources(kind, &mesh, &proxy, &names);
        let b = resources(kind, &mesh, &proxy, &names);
        assert_eq!(a, b, "{kind:?}");
    }
}

fn samples_dir() -> Option<PathBuf> {
    const SAMPLES: &str = "samples/bookinfo/networking";
    let candidates: Vec<PathBuf> = match std::env::var_os("MESH_CONFORMANCE_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            vec![d.join(SAMPLES), d.join("istio").join(SAMPLES)]
        }
        None => vec![Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/conformance/istio")
            .join(SAMPLES)],
    };
    candidates.into_iter().find(|d| d.is_dir())
}

#[test]
fn bookinfo_samples() {
    let Some(samples) = samples_dir() else {
        skip::conformance_missing(
            "bookinfo_samples: Istio's samples/bookinfo/networking not found",
        );
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let golden = root.join("tests/golden/bookinfo-samples");
    let demo = root.join("../conf/demo");
    let mut files: Vec<PathBuf> = fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{}: samples missing", samples.display());
    let dr_all = samples.join("destination-rule-all.yaml");
    for file in files {
        let tmp = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(&demo).unwrap() {
            let p = entry.unwrap().path();
            fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
        }
        let text = fs::read_to_string(&file).unwrap();
        fs::write(tmp.path().join("sample.yaml"), &text).unwrap();
        if !text.contains("kind: DestinationRule") {
            fs::copy(&dr_all, tmp.path().join("destination-rule-all.yaml")).unwrap();
        }
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        let out = translate(tmp.path(), &golden, &golden.join(&stem));
        compare(
            &golden.join(format!("{stem}.json")),
            &golden.join(format!("{stem}.actual.json")),
            &out,
        );
    }
}

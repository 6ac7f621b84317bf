//! The contract between the two sides of xDS, without processes: everything the control plane
//! translates for the golden configurations (`controlplane/tests/golden/*/config`, and every
//! Bookinfo networking sample of Istio over `conf/demo`) converts without error into the
//! proxy's config model (`xds_client::convert::decode_resource`), so a proxy ACKs it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use controlplane::config::ConfigStore;
use controlplane::registry::{MeshSnapshot, ProxyInfo};
use controlplane::xds::{resources, ResourceType};
use envoy_types::pb::google::protobuf::Any;
use xds_client::convert::decode_resource;
use xds_client::model::ResourceType as ProxyType;

fn proxy_type(kind: ResourceType) -> ProxyType {
    match kind {
        ResourceType::Cluster => ProxyType::Cluster,
        ResourceType::Endpoint => ProxyType::Endpoint,
        ResourceType::Listener => ProxyType::Listener,
        ResourceType::Route => ProxyType::Route,
    }
}

/// The proxy of a golden case's `proxy.json` (namespace, first IP, labels).
fn proxy(path: &Path) -> ProxyInfo {
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let meta = &v["metadata"];
    ProxyInfo {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        namespace: meta["NAMESPACE"].as_str().map(str::to_string),
        ips: meta["INSTANCE_IPS"]
            .as_str()
            .into_iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        labels: meta["LABELS"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// Translates `config_dir` for `proxy` and converts every resource as the proxy would.
fn check(config_dir: &Path, proxy: &ProxyInfo) -> BTreeSet<ResourceType> {
    let config = ConfigStore::load(config_dir).current();
    assert!(
        config.errors.is_empty(),
        "{}: {:?}",
        config_dir.display(),
        config.errors
    );
    let mesh = MeshSnapshot::build(&config, [proxy], "cluster.local");
    let none = BTreeSet::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut all: Vec<(ResourceType, String, Any)> = Vec::new();
    for kind in [ResourceType::Cluster, ResourceType::Listener] {
        for (name, any) in resources(kind, &mesh, proxy, &none) {
            all.push((kind, name, any));
        }
    }
    // Ask EDS for every cluster and RDS for every port, as a proxy would.
    for (_, name, _) in &all {
        names.insert(name.clone());
        if let Some(port) = name.rsplit('_').next() {
            names.insert(port.to_string());
        }
    }
    for kind in [ResourceType::Endpoint, ResourceType::Route] {
        for (name, any) in resources(kind, &mesh, proxy, &names) {
            all.push((kind, name, any));
        }
    }
    for (i, (kind, name, any)) in all.iter().enumerate() {
        if let Err(e) = decode_resource(proxy_type(*kind), any, i) {
            panic!(
                "{}: {kind:?} {name}: the proxy rejects it: {e}",
                config_dir.display()
            );
        }
    }
    all.iter().map(|(k, _, _)| *k).collect()
}

#[test]
fn golden_configurations_convert_in_the_proxy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controlplane/tests/golden");
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config").is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 5,
        "golden cases missing in {}",
        root.display()
    );
    let mut kinds = BTreeSet::new();
    for case in cases {
        let node: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(case.join("proxy.json")).unwrap()).unwrap();
        if node["metadata"]["GENERATOR"].as_str() == Some("grpc") {
            // Proxyless gRPC clients are not mesh-proxy.
            continue;
        }
        kinds.extend(check(
            &case.join("config"),
            &proxy(&case.join("proxy.json")),
        ));
    }
    assert_eq!(kinds.len(), 4, "every type was checked: {kinds:?}");
}

#[test]
fn bookinfo_samples_convert_in_the_proxy() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let samples = match std::env::var_os("MESH_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d).join("samples/bookinfo/networking"),
        None => manifest.join("../../shared/conformance/istio/samples/bookinfo/networking"),
    };
    if !samples.is_dir() {
        mesh_tests::conformance::missing(&format!(
            "bookinfo_samples_convert_in_the_proxy: Istio's samples not found at {}",
            samples.display()
        ));
        return;
    }
    let golden = manifest.join("../controlplane/tests/golden/bookinfo-samples");
    let proxy = proxy(&golden.join("proxy.json"));
    let mut files: Vec<PathBuf> = fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let tmp = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(manifest.join("../conf/demo")).unwrap() {
            let p = entry.unwrap().path();
            fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
        }
        let text = fs::read_to_string(&file).unwrap();
        fs::write(tmp.path().join("sample.yaml"), &text).unwrap();
        if !text.contains("kind: DestinationRule") {
            fs::copy(
                samples.join("destination-rule-all.yaml"),
                tmp.path().join("destination-rule-all.yaml"),
            )
            .unwrap();
        }
        let kinds = check(tmp.path(), &proxy);
        assert_eq!(kinds.len(), 4, "{}: every type was checked", file.display());
    }
}

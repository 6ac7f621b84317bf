//! Reading the demo's config directory: the files to hand to the control plane, and the
//! Services (with the workloads their annotations ask for) the demo builds pods for.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::DemoError;
use crate::harness::{ServiceSpec, CLUSTER_IP_RANGE};

/// Annotation of a Service: the versions to run behind it, comma separated (default `v1`).
pub const ANNOTATION_VERSIONS: &str = "mesh-demo/versions";
/// Annotation of a Service: the service account its pods' sidecars run under (default
/// `default`).
pub const ANNOTATION_SA: &str = "mesh-demo/service-account";

/// The config directory as the demo uses it.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The directory.
    pub dir: PathBuf,
    /// Every config file (`.yaml`, `.yml`, `.json`, recursively, hidden entries skipped, as
    /// the control plane reads them): its path relative to [`DemoConfig::dir`] and content.
    pub files: Vec<(PathBuf, String)>,
    /// The Services, in file order.
    pub services: Vec<DemoService>,
}

/// A Service and what the demo runs behind it.
#[derive(Debug, Clone)]
pub struct DemoService {
    /// The Service as the config declares it; its ClusterIP is always set.
    pub spec: ServiceSpec,
    /// The versions to run, one pod each (from [`ANNOTATION_VERSIONS`]).
    pub versions: Vec<String>,
    /// The pods' service account (from [`ANNOTATION_SA`]).
    pub service_account: String,
}

/// One pod of the demo: a version of a Service's workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The pod name, `NAME-VERSION`.
    pub pod: String,
    /// The namespace.
    pub namespace: String,
    /// The Service's selector plus `version: VERSION`.
    pub labels: BTreeMap<String, String>,
    /// `mesh-echo --name` (the Service's name).
    pub app: String,
    /// `mesh-echo --version`.
    pub version: String,
    /// The sidecar's service account.
    pub service_account: String,
    /// The ports the app serves (the Service's target ports).
    pub ports: Vec<u16>,
}

impl DemoService {
    /// `NAMESPACE/NAME`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.spec.namespace, self.spec.name)
    }

    /// The ClusterIP.
    pub fn cluster_ip(&self) -> Ipv4Addr {
        self.spec.cluster_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// The first port: where the demo sends its requests.
    pub fn port(&self) -> u16 {
        self.spec.ports.first().map_or(0, |p| p.port)
    }

    /// The pods behind it, one per version.
    pub fn workloads(&self) -> Vec<Workload> {
        let mut ports: Vec<u16> = self.spec.ports.iter().map(|p| p.target_port).collect();
        ports.sort_unstable();
        ports.dedup();
        self.versions
            .iter()
            .map(|v| {
                let mut labels = self.spec.selector.clone();
                labels.insert("version".to_owned(), v.clone());
                Workload {
                    pod: format!("{}-{v}", self.spec.name),
                    namespace: self.spec.namespace.clone(),
                    labels,
                    app: self.spec.name.clone(),
                    version: v.clone(),
                    service_account: self.service_account.clone(),
                    ports: ports.clone(),
                }
            })
            .collect()
    }

    /// Whether a pod in `namespace` with `labels` is one of its endpoints.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        namespace == self.spec.namespace
            && !self.spec.selector.is_empty()
            && self
                .spec
                .selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl DemoConfig {
    /// Reads `dir`: every config file, and the `v1` Services in them.
    pub fn load(dir: &Path) -> Result<DemoConfig, DemoError> {
        let mut paths = Vec::new();
        walk(dir, dir, &mut paths)?;
        paths.sort();
        let mut files = Vec::new();
        let mut services = Vec::new();
        for rel in paths {
            let file = dir.join(&rel);
            let text = std::fs::read_to_string(&file).map_err(|source| DemoError::Read {
                path: file.clone(),
                source,
            })?;
            services.extend(parse_services(&file, &text)?);
            files.push((rel, text));
        }
        if services.is_empty() {
            return Err(DemoError::NoServices {
                dir: dir.to_path_buf(),
            });
        }
        Ok(DemoConfig {
            dir: dir.to_path_buf(),
            files,
            services,
        })
    }

    /// Every workload of every Service.
    pub fn workloads(&self) -> Vec<Workload> {
        self.services
            .iter()
            .flat_map(DemoService::workloads)
            .collect()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DemoError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Read { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(read_err(&path))?;
        let is_config = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() && is_config {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_path_buf());
            }
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawService {
    metadata: RawMeta,
    #[serde(default)]
    spec: RawSpec,
}

#[derive(Debug, Deserialize)]
struct RawMeta {
    name: String,
    namespace: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default)]
    ports: Vec<RawPort>,
    #[serde(default)]
    selector: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPort {
    name: Option<String>,
    port: u16,
    target_port: Option<IntOrString>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(u16),
    Str(String),
}

/// The `v1` Services of one file. Other kinds are the control plane's business.
fn parse_services(file: &Path, text: &str) -> Result<Vec<DemoService>, DemoError> {
    let yaml_err = |source| DemoError::Yaml {
        file: file.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for de in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(de).map_err(yaml_err)?;
        if value.is_null() {
            continue;
        }
        let header: Header = serde_norway::from_value(value.clone()).map_err(yaml_err)?;
        if header.api_version.as_deref() != Some("v1") || header.kind.as_deref() != Some("Service")
        {
            continue;
        }
        let raw: RawService = serde_norway::from_value(value).map_err(yaml_err)?;
        out.push(service(file, raw)?);
    }
    Ok(out)
}

fn service(file: &Path, raw: RawService) -> Result<DemoService, DemoError> {
    let namespace = raw
        .metadata
        .namespace
        .unwrap_or_else(|| "default".to_owned());
    let bad = |field: &str, reason: String| DemoError::Service {
        file: file.to_path_buf(),
        service: format!("{namespace}/{}", raw.metadata.name),
        field: field.to_owned(),
        reason,
    };
    // CLUSTER_IP_RANGE, 10.96.0.0/12: 10.96.0.0 to 10.111.255.255.
    let in_range = |ip: &Ipv4Addr| {
        let [a, b, _, _] = ip.octets();
        a == 10 && (96..=111).contains(&b)
    };
    let cluster_ip = match raw.spec.cluster_ip.as_deref() {
        None => {
            return Err(bad(
                "spec.clusterIP",
                "missing: the demo resolves Service names to their ClusterIPs".to_owned(),
            ))
        }
        Some(s) => s
            .parse::<Ipv4Addr>()
            .ok()
            .filter(in_range)
            .ok_or_else(|| {
                bad(
                    "spec.clusterIP",
                    format!("{s:?} is not an IPv4 address in {CLUSTER_IP_RANGE}, the range pods route to their sidecars"),
                )
            })?,
    };
    if raw.spec.ports.is_empty() {
        return Err(bad("spec.ports", "no port".to_owned()));
    }
    if raw.spec.selector.is_empty() {
        return Err(bad(
            "spec.selector",
            "empty: the demo's pods would not be its endpoints".to_owned(),
        ));
    }
    let mut spec = ServiceSpec::new(&raw.metadata.name, &namespace).cluster_ip(cluster_ip);
    for (i, p) in raw.spec.ports.iter().enumerate() {
        let target = match &p.target_port {
            None => p.port,
            Some(IntOrString::Int(t)) => *t,
            Some(IntOrString::Str(name)) => {
                return Err(bad(
                    &format!("spec.ports[{i}].targetPort"),
                    format!("{name:?}: named target ports are not supported by the demo"),
                ))
            }
        };
        spec = spec.port(p.name.as_deref().unwrap_or(""), p.port, target);
    }
    for (k, v) in &raw.spec.selector {
        spec = spec.selector(k, v);
    }
    let versions: Vec<String> = match raw.metadata.annotations.get(ANNOTATION_VERSIONS) {
        None => vec!["v1".to_owned()],
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    if versions.is_empty() {
        return Err(bad(
            &format!("metadata.annotations[{ANNOTATION_VERSIONS}]"),
            "lists no version".to_owned(),
        ));
    }
    let service_account = raw
        .metadata
        .annotations
        .get(ANNOTATION_SA)
        .cloned()
        .unwrap_or_else(|| "default".to_owned());
    Ok(DemoService {
        spec,
        versions,
        service_account,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: default
---
# a comment document
apiVersion: v1
kind: Service
metadata:
  name: reviews
  annotations:
    mesh-demo/versions: "v1, v2,v3"
    mesh-demo/service-account: bookinfo-reviews
spec:
  clusterIP: 10.96.0.22
  ports:
  - name: http
    port: 9080
  selector:
    app: reviews
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
"#;

    #[test]
    fn reads_services_and_their_workloads() {
        let services = parse_services(Path::new("x.yaml"), YAML).unwrap();
        assert_eq!(services.len(), 1);
        let s = &services[0];
        assert_eq!(s.key(), "default/reviews");
        assert_eq!(s.cluster_ip(), Ipv4Addr::new(10, 96, 0, 22));
        assert_eq!((s.port(), s.spec.ports[0].target_port), (9080, 9080));
        let w = s.workloads();
        let pods: Vec<&str> = w.iter().map(|w| w.pod.as_str()).collect();
        assert_eq!(pods, ["reviews-v1", "reviews-v2", "reviews-v3"]);
        assert_eq!(w[1].labels.get("app").map(String::as_str), Some("reviews"));
        assert_eq!(w[1].labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(w[1].service_account, "bookinfo-reviews");
        assert!(s.selects("default", &w[2].labels));
        assert!(!s.selects("other", &w[2].labels));
    }

    #[test]
    fn rejects_what_the_demo_cannot_run() {
        let no_ip = YAML.replace("  clusterIP: 10.96.0.22\n", "");
        let err = parse_services(Path::new("x.yaml"), &no_ip).unwrap_err();
        assert!(err.to_string().contains("spec.clusterIP: missing"), "{err}");
        let outside = YAML.replace("10.96.0.22", "192.168.1.1");
        let err = parse_services(Path::new("x.yaml"), &outside).unwrap_err();
        assert!(err.to_string().contains("not an IPv4 address in"), "{err}");
        let named = YAML.replace("    port: 9080\n", "    port: 9080\n    targetPort: web\n");
        let err = parse_services(Path::new("x.yaml"), &named).unwrap_err();
        assert!(err.to_string().contains("targetPort"), "{err}");
    }

    #[test]
    fn reads_the_shipped_demo_config() {
        let dir = crate::harness::workspace_dir().join("conf/demo");
        let config = DemoConfig::load(&dir).unwrap();
        let names: Vec<&str> = config
            .services
            .iter()
            .map(|s| s.spec.name.as_str())
            .collect();
        assert_eq!(names, ["productpage", "details", "reviews", "ratings"]);
        let pods: Vec<String> = config.workloads().into_iter().map(|w| w.pod).collect();
        assert_eq!(
            pods,
            [
                "productpage-v1",
                "details-v1",
                "reviews-v1",
                "reviews-v2",
                "reviews-v3",
                "ratings-v1"
            ]
        );
        assert!(config.services.iter().all(|s| s.port() == 9080));
    }
}

//! Workload metadata of the two ends of a request or connection, as Istio's metrics label them,
//! and its exchange between sidecars.
//!
//! - [`PeerInfo::local`] derives this proxy's own labels from its node info (what it tells
//!   the control plane): workload name from the pod name as Istio derives it (a Deployment's
//!   pod `NAME-HASH-SUFFIX`, e.g. `reviews-v1-5d8f7c9b4-2kq7x`, with label
//!   `pod-template-hash=HASH` is workload `NAME`, a StatefulSet's pod `NAME-N` is `NAME`,
//!   anything else keeps the pod name), `app` and
//!   `version` from the labels of those names (or `app.kubernetes.io/name`/`-version`), the
//!   canonical service and revision with Istio's defaults (`service.istio.io/canonical-name`,
//!   else `app.kubernetes.io/name`, else `app`, else the workload; `-revision`, else
//!   `app.kubernetes.io/version`, else `version`, else `latest`).
//! - HTTP peers exchange it as Istio's sidecars do: `x-envoy-peer-metadata-id` (the node id)
//!   and `x-envoy-peer-metadata` (base64 of a serialized `google.protobuf.Struct` with Istio's
//!   node metadata keys `NAME`, `NAMESPACE`, `CLUSTER_ID`, `LABELS`, `WORKLOAD_NAME`,
//!   `SERVICE_ACCOUNT`, `MESH_ID`), on the request (client sidecar to server sidecar) and on
//!   the response (back). Each sidecar removes the peer's headers before the application sees
//!   them.
//! - Peers without that exchange (TCP connections, a request whose answer carries no
//!   metadata, a caller without a sidecar) are labelled from the control plane's endpoint
//!   metadata ([`PeerCache::workload`]): the chosen endpoint's workload at the client's
//!   sidecar, the workload at the caller's address at the server's.
//! - Cardinality is bounded: a received header is decoded once and cached ([`PeerCache`], at
//!   most [`MAX_PEERS`] distinct values, then new ones count as unknown); every label value
//!   is cut at [`MAX_LABEL_LEN`] bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use prost::Message;
use prost_types::{value::Kind, Struct, Value};

/// The request (and response) header carrying the peer's metadata.
pub const METADATA_HEADER: &str = "x-envoy-peer-metadata";
/// The request (and response) header carrying the peer's node id.
pub const METADATA_ID_HEADER: &str = "x-envoy-peer-metadata-id";
/// Distinct peer headers remembered; beyond that, unseen peers are labelled unknown.
pub const MAX_PEERS: usize = 4096;
/// Longest label value kept (bytes, cut at a character boundary).
pub const MAX_LABEL_LEN: usize = 253;
/// Largest `x-envoy-peer-metadata` value decoded.
const MAX_HEADER_LEN: usize = 16 * 1024;
/// Istio's value for anything not known.
pub const UNKNOWN: &str = "unknown";

/// One end of a request or connection, as the metrics label it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// Workload name (`reviews-v2`).
    pub workload: Arc<str>,
    /// Workload namespace.
    pub namespace: Arc<str>,
    /// `app` label.
    pub app: Arc<str>,
    /// `version` label.
    pub version: Arc<str>,
    /// Canonical service.
    pub canonical_service: Arc<str>,
    /// Canonical revision.
    pub canonical_revision: Arc<str>,
    /// Cluster id (`Kubernetes`).
    pub cluster: Arc<str>,
}

fn bounded(s: &str) -> Arc<str> {
    if s.is_empty() {
        return UNKNOWN.into();
    }
    if s.len() <= MAX_LABEL_LEN {
        return s.into();
    }
    let mut end = MAX_LABEL_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

/// Istio's workload name for a pod: the Deployment's name for a pod with a
/// `pod-template-hash` label whose name is `NAME-HASH-SUFFIX`, the StatefulSet's name for a
/// pod with `statefulset.kubernetes.io/pod-name` named `NAME-ORDINAL`, else the pod name.
pub fn workload_name(pod_name: &str, labels: &BTreeMap<String, String>) -> String {
    if let Some(hash) = labels.get("pod-template-hash").filter(|h| !h.is_empty()) {
        if let Some(i) = pod_name.rfind(&format!("-{hash}-")) {
            if i > 0 {
                return pod_name[..i].to_string();
            }
        }
    }
    if labels.contains_key("statefulset.kubernetes.io/pod-name") {
        if let Some((name, ordinal)) = pod_name.rsplit_once('-') {
            if !name.is_empty()
                && !ordinal.is_empty()
                && ordinal.bytes().all(|b| b.is_ascii_digit())
            {
                return name.to_string();
            }
        }
    }
    pod_name.to_string()
}

fn first<'a>(labels: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| labels.get(*k).map(String::as_str).filter(|v| !v.is_empty()))
}

impl PeerInfo {
    /// The unknown peer: every label `unknown`, as Istio reports a peer it knows nothing of.
    pub fn unknown() -> PeerInfo {
        let u: Arc<str> = UNKNOWN.into();
        PeerInfo {
            workload: u.clone(),
            namespace: u.clone(),
            app: u.clone(),
            version: u.clone(),
            canonical_service: u.clone(),
            canonical_revision: u.clone(),
            cluster: u,
        }
    }

    /// The labels of a workload from its metadata: workload name (derived from the pod name
    /// when `workload` is `None`), namespace, labels and cluster id.
    pub fn from_metadata(
        pod_name: &str,
        workload: Option<&str>,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        cluster: &str,
    ) -> PeerInfo {
        let workload = match workload.filter(|w| !w.is_empty()) {
            Some(w) => w.to_string(),
            None if pod_name.is_empty() => UNKNOWN.to_string(),
            None => workload_name(pod_name, labels),
        };
        let app = first(labels, &["app", "app.kubernetes.io/name"]);
        let version = first(labels, &["version", "app.kubernetes.io/version"]);
        let canonical_service = first(
            labels,
            &[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ],
        )
        .unwrap_or(&workload);
        let canonical_revision = first(
            labels,
            &[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ],
        )
        .unwrap_or("latest");
        PeerInfo {
            workload: bounded(&workload),
            namespace: bounded(namespace),
            app: bounded(app.unwrap_or(UNKNOWN)),
            version: bounded(version.unwrap_or(UNKNOWN)),
            canonical_service: bounded(canonical_service),
            canonical_revision: bounded(canonical_revision),
            cluster: bounded(cluster),
        }
    }
}

impl From<&xds_client::model::EndpointWorkload> for PeerInfo {
    /// The labels of an endpoint's workload as the control plane described it (empty
    /// canonical revision: Istio's default `latest`; no `app`/`version`: unknown).
    fn from(w: &xds_client::model::EndpointWorkload) -> PeerInfo {
        let revision = match w.canonical_revision.as_str() {
            "" => "latest",
            r => r,
        };
        PeerInfo {
            workload: bounded(&w.name),
            namespace: bounded(&w.namespace),
            app: bounded(w.app.as_deref().unwrap_or(UNKNOWN)),
            version: bounded(w.version.as_deref().unwrap_or(UNKNOWN)),
            canonical_service: bounded(&w.canonical_service),
            canonical_revision: bounded(revision),
            cluster: bounded(&w.cluster),
        }
    }
}

/// This proxy's own metadata, as it sends it to its peers.
#[derive(Clone, Debug)]
pub struct LocalMetadata {
    /// The labels the metrics use for this side.
    pub info: Arc<PeerInfo>,
    /// `x-envoy-peer-metadata-id`: the node id.
    pub id_header: http::HeaderValue,
    /// `x-envoy-peer-metadata`: base64 of the serialized `Struct`.
    pub header: http::HeaderValue,
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

impl LocalMetadata {
    /// The metadata of the proxy described by `node` (cluster id `cluster_id`, mesh id
    /// `mesh_id`), with the workload name given or derived from the pod name.
    pub fn new(
        node: &xds_client::NodeInfo,
        workload: Option<&str>,
        cluster_id: &str,
        mesh_id: &str,
    ) -> LocalMetadata {
        let info = PeerInfo::from_metadata(
            &node.pod_name,
            workload,
            &node.namespace,
            &node.labels,
            cluster_id,
        );
        let labels = Struct {
            fields: node
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), string(v)))
                .collect(),
        };
        let mut fields: BTreeMap<String, Value> = [
            ("NAME", string(&node.pod_name)),
            ("NAMESPACE", string(&node.namespace)),
            ("CLUSTER_ID", string(cluster_id)),
            ("WORKLOAD_NAME", string(&info.workload)),
            ("SERVICE_ACCOUNT", string(&node.service_account)),
            ("MESH_ID", string(mesh_id)),
            ("INSTANCE_IPS", string(&node.ip.to_string())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        fields.insert(
            "LABELS".to_string(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(Struct { fields }.encode_to_vec());
        // Base64 and a node id built from validated flags are valid header values.
        let header = http::HeaderValue::from_str(&encoded)
            .unwrap_or_else(|_| http::HeaderValue::from_static(""));
        let id_header = http::HeaderValue::from_str(&node.node_id())
            .unwrap_or_else(|_| http::HeaderValue::from_static(""));
        LocalMetadata {
            info: Arc::new(info),
            id_header,
            header,
        }
    }
}

fn field_str<'a>(s: &'a Struct, key: &str) -> &'a str {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => v,
        _ => "",
    }
}

/// Decode an `x-envoy-peer-metadata` value; `None` when it is not base64 of a `Struct`.
pub fn decode(header: &[u8]) -> Option<PeerInfo> {
    if header.len() > MAX_HEADER_LEN {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header)
        .ok()?;
    let s = Struct::decode(bytes.as_slice()).ok()?;
    let labels: BTreeMap<String, String> =
        match s.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
            Some(Kind::StructValue(l)) => l
                .fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(Kind::StringValue(v)) => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        };
    Some(PeerInfo::from_metadata(
        field_str(&s, "NAME"),
        Some(field_str(&s, "WORKLOAD_NAME")),
        field_str(&s, "NAMESPACE"),
        &labels,
        field_str(&s, "CLUSTER_ID"),
    ))
}

/// Received peer headers, decoded once: at most [`MAX_PEERS`] distinct values, then every
/// new value is the unknown peer (so that a client sending random headers cannot grow the
/// metrics without bound).
/// Endpoint workloads (from the control plane's endpoint metadata) are interned the same
/// way, so that a workload is one `Arc` across config pushes.
#[derive(Debug)]
pub struct PeerCache {
    by_header: RwLock<HashMap<Box<[u8]>, Arc<PeerInfo>>>,
    by_workload: RwLock<HashMap<xds_client::model::EndpointWorkload, Arc<PeerInfo>>>,
    unknown: Arc<PeerInfo>,
}

impl Default for PeerCache {
    fn default() -> Self {
        PeerCache {
            by_header: RwLock::new(HashMap::new()),
            by_workload: RwLock::new(HashMap::new()),
            unknown: Arc::new(PeerInfo::unknown()),
        }
    }
}

impl PeerCache {
    /// The unknown peer (shared).
    pub fn unknown(&self) -> &Arc<PeerInfo> {
        &self.unknown
    }

    /// The peer an endpoint's workload metadata describes (`None`: the unknown peer).
    pub fn workload(&self, w: Option<&xds_client::model::EndpointWorkload>) -> Arc<PeerInfo> {
        let Some(w) = w else {
            return self.unknown.clone();
        };
        if let Ok(map) = self.by_workload.read() {
            if let Some(p) = map.get(w) {
                return p.clone();
            }
            if map.len() >= MAX_PEERS {
                return self.unknown.clone();
            }
        }
        let peer = Arc::new(PeerInfo::from(w));
        if let Ok(mut map) = self.by_workload.write() {
            if map.len() < MAX_PEERS {
                return map.entry(w.clone()).or_insert(peer).clone();
            }
        }
        peer
    }

    /// The peer of a received `x-envoy-peer-metadata` value (`None`: the unknown peer).
    pub fn peer(&self, header: Option<&[u8]>) -> Arc<PeerInfo> {
        let Some(header) = header else {
            return self.unknown.clone();
        };
        if let Ok(map) = self.by_header.read() {
            if let Some(p) = map.get(header) {
                return p.clone();
            }
            if map.len() >= MAX_PEERS {
                return self.unknown.clone();
            }
        }
        let peer = decode(header).map_or_else(|| self.unknown.clone(), Arc::new);
        if let Ok(mut map) = self.by_header.write() {
            if map.len() < MAX_PEERS {
                return map.entry(header.into()).or_insert(peer).clone();
            }
        }
        peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn workload_names_as_istio_derives_them() {
        let deploy = labels(&[("pod-template-hash", "5d8f8b4c9")]);
        assert_eq!(
            workload_name("reviews-v2-5d8f8b4c9-x7k2p", &deploy),
            "reviews-v2"
        );
        let sts = labels(&[("statefulset.kubernetes.io/pod-name", "db-3")]);
        assert_eq!(workload_name("db-3", &sts), "db");
        assert_eq!(workload_name("reviews-v2", &BTreeMap::new()), "reviews-v2");
        // A hash label that does not appear in the name changes nothing.
        assert_eq!(workload_name("web-1", &deploy), "web-1");
    }

    #[test]
    fn canonical_defaults() {
        let p = PeerInfo::from_metadata(
            "reviews-v2",
            None,
            "default",
            &labels(&[("app", "reviews"), ("version", "v2")]),
            "Kubernetes",
        );
        assert_eq!(&*p.canonical_service, "reviews");
        assert_eq!(&*p.canonical_revision, "v2");
        assert_eq!(&*p.app, "reviews");
        let bare = PeerInfo::from_metadata("solo", None, "ns", &BTreeMap::new(), "Kubernetes");
        assert_eq!(&*bare.canonical_service, "solo");
        assert_eq!(&*bare.canonical_revision, "latest");
        assert_eq!(&*bare.app, "unknown");
        assert_eq!(&*bare.version, "unknown");
        let explicit = PeerInfo::from_metadata(
            "x",
            None,
            "ns",
            &labels(&[
                ("app", "a"),
                ("service.istio.io/canonical-name", "canon"),
                ("service.istio.io/canonical-revision", "r1"),
            ]),
            "Kubernetes",
        );
        assert_eq!(&*explicit.canonical_service, "canon");
        assert_eq!(&*explicit.canonical_revision, "r1");
    }

    #[test]
    fn header_round_trip_and_bounds() {
        let node = xds_client::NodeInfo {
            pod_name: "ratings-v1-abc12-zzzzz".into(),
            namespace: "bookinfo".into(),
            ip: "10.0.0.7".parse().unwrap(),
            labels: labels(&[
                ("app", "ratings"),
                ("version", "v1"),
                ("pod-template-hash", "abc12"),
            ]),
            service_account: "ratings".into(),
            cluster_domain: "cluster.local".into(),
        };
        let local = LocalMetadata::new(&node, None, "Kubernetes", "cluster.local");
        assert_eq!(&*local.info.workload, "ratings-v1");
        assert_eq!(
            local.id_header.to_str().unwrap(),
            "sidecar~10.0.0.7~ratings-v1-abc12-zzzzz.bookinfo~bookinfo.svc.cluster.local"
        );
        let cache = PeerCache::default();
        let peer = cache.peer(Some(local.header.as_bytes()));
        assert_eq!(*peer, *local.info);
        // Decoded once: the same Arc comes back.
        assert!(Arc::ptr_eq(
            &peer,
            &cache.peer(Some(local.header.as_bytes()))
        ));
        assert_eq!(*cache.peer(Some(b"not base64!")), PeerInfo::unknown());
        assert_eq!(*cache.peer(None), PeerInfo::unknown());
        let long = "x".repeat(1000);
        let p = PeerInfo::from_metadata(&long, None, "ns", &BTreeMap::new(), "c");
        assert_eq!(p.workload.len(), MAX_LABEL_LEN);
    }

    #[test]
    fn endpoint_workloads_are_labelled_and_interned() {
        let w = xds_client::model::EndpointWorkload {
            name: "reviews-v1".into(),
            namespace: "default".into(),
            canonical_service: "reviews".into(),
            canonical_revision: String::new(),
            cluster: "Kubernetes".into(),
            app: Some("reviews".into()),
            version: None,
        };
        let cache = PeerCache::default();
        let p = cache.workload(Some(&w));
        assert_eq!(&*p.workload, "reviews-v1");
        assert_eq!(&*p.canonical_revision, "latest");
        assert_eq!(&*p.app, "reviews");
        assert_eq!(&*p.version, "unknown");
        assert!(Arc::ptr_eq(&p, &cache.workload(Some(&w.clone()))));
        assert_eq!(*cache.workload(None), PeerInfo::unknown());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = PeerCache::default();
        for i in 0..MAX_PEERS + 10 {
            cache.peer(Some(format!("junk{i}").as_bytes()));
        }
        assert!(cache.by_header.read().unwrap().len() <= MAX_PEERS);
    }
}

//! Who a connected proxy is, from its xDS `Node`.
//!
//! The node `id` is Istio's `sidecar~IP~POD.NS~NS.svc.DOMAIN`; `metadata` carries `NAME`,
//! `NAMESPACE`, `INSTANCE_IPS` (comma separated), `LABELS` (a struct), `SERVICE_ACCOUNT`,
//! `CLUSTER_ID`, `ISTIO_VERSION`. Metadata wins; what it lacks is taken from the id. A node
//! with neither is anonymous: it gets the mesh-wide outbound config, no inbound config, and
//! is never an endpoint.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind as ValueKind, Struct};
use serde::{Deserialize, Serialize};

use super::model::Locality;

/// A connected proxy's identity and placement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// The node id as sent (may be empty).
    pub id: String,
    /// Pod name.
    pub pod: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Instance IPs, first is primary.
    pub ips: Vec<IpAddr>,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
    /// Service account.
    pub service_account: Option<String>,
    /// `CLUSTER_ID`.
    pub cluster_id: Option<String>,
    /// `ISTIO_VERSION` (the proxy's version string).
    pub version: Option<String>,
    /// `GENERATOR`: the xDS generator the node asks for (`grpc` for proxyless gRPC clients);
    /// `None` for sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
}

/// The parts of an Istio node id.
struct IdParts {
    ip: Option<IpAddr>,
    pod: Option<String>,
    namespace: Option<String>,
}

fn parse_id(id: &str) -> Option<IdParts> {
    let parts: Vec<&str> = id.split('~').collect();
    let [_kind, ip, pod_ns, domain] = parts.as_slice() else {
        return None;
    };
    let namespace = domain
        .split('.')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let pod = match &namespace {
        Some(ns) => pod_ns.strip_suffix(&format!(".{ns}")).unwrap_or(pod_ns),
        None => pod_ns,
    };
    Some(IdParts {
        ip: ip.parse().ok(),
        pod: Some(pod.to_string()).filter(|p| !p.is_empty()),
        namespace,
    })
}

fn string_field(meta: Option<&Struct>, key: &str) -> Option<String> {
    match meta?.fields.get(key)?.kind.as_ref()? {
        ValueKind::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn labels_field(meta: Option<&Struct>) -> BTreeMap<String, String> {
    let Some(ValueKind::StructValue(s)) = meta
        .and_then(|m| m.fields.get("LABELS"))
        .and_then(|v| v.kind.as_ref())
    else {
        return BTreeMap::new();
    };
    s.fields
        .iter()
        .filter_map(|(k, v)| match v.kind.as_ref()? {
            ValueKind::StringValue(s) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

impl ProxyInfo {
    /// Reads a node leniently: metadata first, the id for what metadata lacks.
    pub fn from_node(node: Option<&Node>) -> ProxyInfo {
        let Some(node) = node else {
            return ProxyInfo::default();
        };
        let meta = node.metadata.as_ref();
        let id_parts = parse_id(&node.id);
        let mut ips: Vec<IpAddr> = string_field(meta, "INSTANCE_IPS")
            .map(|s| {
                s.split(',')
                    .filter_map(|ip| ip.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if ips.is_empty() {
            ips.extend(id_parts.as_ref().and_then(|p| p.ip));
        }
        ProxyInfo {
            id: node.id.clone(),
            pod: string_field(meta, "NAME").or_else(|| id_parts.as_ref()?.pod.clone()),
            namespace: string_field(meta, "NAMESPACE")
                .or_else(|| id_parts.as_ref()?.namespace.clone()),
            ips,
            labels: labels_field(meta),
            service_account: string_field(meta, "SERVICE_ACCOUNT"),
            cluster_id: string_field(meta, "CLUSTER_ID"),
            version: string_field(meta, "ISTIO_VERSION"),
            generator: string_field(meta, "GENERATOR"),
        }
    }

    /// The workload placement (namespace and primary IP) when both are known: only such a
    /// proxy gets inbound config and can become an endpoint.
    pub fn workload(&self) -> Option<(&str, IpAddr)> {
        Some((self.namespace.as_deref()?, *self.ips.first()?))
    }

    /// The workload this proxy runs for, as istiod names it for telemetry: a Deployment's
    /// pod `NAME-HASH-SUFFIX` labelled `pod-template-hash=HASH` is workload `NAME`, a
    /// StatefulSet's pod `NAME-N` is `NAME`, any other pod its own name. `None` without a pod
    /// name or namespace.
    pub fn endpoint_workload(&self) -> Option<super::EndpointWorkload> {
        let pod = self.pod.as_deref().filter(|p| !p.is_empty())?;
        let namespace = self.namespace.clone()?;
        Some(super::EndpointWorkload {
            name: workload_name(pod, &self.labels),
            namespace,
            cluster: self
                .cluster_id
                .clone()
                .unwrap_or_else(|| "Kubernetes".to_string()),
        })
    }

    /// A proxyless gRPC client (metadata `GENERATOR: grpc`, as istiod decides), which is
    /// served by [`crate::xds::grpcgen`] and asks for every type by name.
    pub fn is_proxyless_grpc(&self) -> bool {
        self.generator.as_deref() == Some("grpc")
    }

    /// Locality from the well-known topology labels.
    pub fn locality(&self) -> Locality {
        let get = |k: &str| self.labels.get(k).cloned().unwrap_or_default();
        Locality {
            region: get("topology.kubernetes.io/region"),
            zone: get("topology.kubernetes.io/zone"),
            subzone: get("topology.istio.io/subzone"),
        }
    }
}

/// Istio's workload name of a pod (see [`ProxyInfo::endpoint_workload`]).
pub fn workload_name(pod: &str, labels: &BTreeMap<String, String>) -> String {
    if let Some(hash) = labels.get("pod-template-hash").filter(|h| !h.is_empty()) {
        if let Some(i) = pod.rfind(&format!("-{hash}-")).filter(|i| *i > 0) {
            return pod[..i].to_string();
        }
    }
    if labels.contains_key("statefulset.kubernetes.io/pod-name") {
        if let Some((name, ordinal)) = pod.rsplit_once('-') {
            if !name.is_empty()
                && !ordinal.is_empty()
                && ordinal.bytes().all(|b| b.is_ascii_digit())
            {
                return name.to_string();
            }
        }
    }
    pod.to_string()
}

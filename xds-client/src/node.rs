//! The xDS `Node` this proxy presents, shaped as an Istio sidecar's.

use envoy_types::pb::envoy::config::core::v3::{node::UserAgentVersionType, Node};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use crate::client::NodeInfo;

/// The Istio release whose sidecar the proxy presents itself as (`ISTIO_VERSION` metadata):
/// control planes gate resource shapes on it.
pub const ISTIO_VERSION: &str = "1.27.0";

/// The `CLUSTER_ID` metadata value: the single-cluster Kubernetes registry.
pub const CLUSTER_ID: &str = "Kubernetes";

/// The user agent name sent in the `Node`.
pub const USER_AGENT: &str = "mesh-proxy";

impl NodeInfo {
    /// The xDS node id, Istio's sidecar form: `sidecar~IP~POD.NS~NS.svc.DOMAIN`.
    pub fn node_id(&self) -> String {
        format!(
            "sidecar~{}~{}.{}~{}.svc.{}",
            self.ip, self.pod_name, self.namespace, self.namespace, self.cluster_domain
        )
    }
}

fn string(value: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.into())),
    }
}

/// The `Node` sent on the first request of every stream: the id above and Istio's metadata
/// keys `NAME`, `NAMESPACE`, `INSTANCE_IPS`, `LABELS` (a struct), `SERVICE_ACCOUNT`,
/// `CLUSTER_ID` and `ISTIO_VERSION`.
pub(crate) fn build_node(info: &NodeInfo) -> Node {
    let labels = Struct {
        fields: info
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), string(v.clone())))
            .collect(),
    };
    let fields = [
        ("NAME", string(info.pod_name.clone())),
        ("NAMESPACE", string(info.namespace.clone())),
        ("INSTANCE_IPS", string(info.ip.to_string())),
        (
            "LABELS",
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        ),
        ("SERVICE_ACCOUNT", string(info.service_account.clone())),
        ("CLUSTER_ID", string(CLUSTER_ID)),
        ("ISTIO_VERSION", string(ISTIO_VERSION)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Node {
        id: info.node_id(),
        metadata: Some(Struct { fields }),
        user_agent_name: USER_AGENT.to_string(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").to_string(),
        )),
        ..Default::default()
    }
}

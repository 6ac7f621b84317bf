//! `/config_dump`'s Envoy-like sections: the same shapes as Envoy's `ConfigDump` (a
//! `configs` list of `BootstrapConfigDump`, `ListenersConfigDump`, `ClustersConfigDump`,
//! `RoutesConfigDump`, `EndpointsConfigDump`, `SecretsConfigDump`), each resource with the
//! version it arrived in; the resources themselves are the proxy's model (what it applied),
//! and secrets show certificates, never keys.

use serde_json::{json, Value};
use xds_client::model::{ProxyConfig, ResourceType};

use super::pages::BadRequest;
use super::AdminState;

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

/// The `?resource=` names, and the section holding each.
pub const RESOURCES: [&str; 5] = [
    "dynamic_listeners",
    "dynamic_route_configs",
    "dynamic_active_clusters",
    "dynamic_endpoint_configs",
    "dynamic_active_secrets",
];

fn version(config: &ProxyConfig, t: ResourceType) -> String {
    config.versions.get(&t).cloned().unwrap_or_default()
}

/// Every section.
pub fn sections(state: &AdminState, config: &ProxyConfig) -> Vec<Value> {
    let lds = version(config, ResourceType::Listener);
    let cds = version(config, ResourceType::Cluster);
    let rds = version(config, ResourceType::Route);
    let eds = version(config, ResourceType::Endpoint);
    let node = &state.node;
    let identity = state.shared.identity.dump();
    let secret_version = identity
        .certificate
        .as_ref()
        .map(|c| c.generation.to_string())
        .unwrap_or_default();
    let mut secrets = Vec::new();
    if let Some(cert) = &identity.certificate {
        secrets.push(json!({
            "name": "default",
            "version_info": secret_version,
            "secret": {
                "name": "default",
                "tls_certificate": {
                    "certificate_chain": cert.chain,
                    "serial_number": cert.serial,
                    "valid_from": cert.not_before,
                    "expiration_time": cert.not_after,
                    "private_key": {"inline_string": "[redacted]"},
                },
            },
        }));
    }
    if !identity.trust_bundle.is_empty() {
        secrets.push(json!({
            "name": "ROOTCA",
            "version_info": secret_version,
            "secret": {
                "name": "ROOTCA",
                "validation_context": {"trusted_ca": {"inline_string": identity.trust_bundle.join("")}},
            },
        }));
    }
    vec![
        json!({
            "@type": format!("{ADMIN}BootstrapConfigDump"),
            "bootstrap": {
                "node": {
                    "id": node.node_id(),
                    "cluster": format!("{}.{}", state.shared.metrics.local.info.canonical_service, node.namespace),
                    "metadata": {
                        "NAME": node.pod_name,
                        "NAMESPACE": node.namespace,
                        "INSTANCE_IPS": node.ip.to_string(),
                        "LABELS": node.labels,
                        "SERVICE_ACCOUNT": node.service_account,
                        "WORKLOAD_NAME": &*state.shared.metrics.local.info.workload,
                    },
                },
            },
        }),
        json!({
            "@type": format!("{ADMIN}ListenersConfigDump"),
            "version_info": lds,
            "dynamic_listeners": config.listeners.values().map(|l| json!({
                "name": l.name,
                "active_state": {"version_info": lds, "listener": l},
            })).collect::<Vec<_>>(),
        }),
        json!({
            "@type": format!("{ADMIN}ClustersConfigDump"),
            "version_info": cds,
            "dynamic_active_clusters": config.clusters.values().map(|c| json!({
                "version_info": cds,
                "cluster": c,
            })).collect::<Vec<_>>(),
        }),
        json!({
            "@type": format!("{ADMIN}RoutesConfigDump"),
            "dynamic_route_configs": config.routes.values().map(|r| json!({
                "version_info": rds,
                "route_config": r,
            })).collect::<Vec<_>>(),
        }),
        json!({
            "@type": format!("{ADMIN}EndpointsConfigDump"),
            "dynamic_endpoint_configs": config.endpoints.values().map(|e| json!({
                "version_info": eds,
                "endpoint_config": e,
            })).collect::<Vec<_>>(),
        }),
        json!({
            "@type": format!("{ADMIN}SecretsConfigDump"),
            "dynamic_active_secrets": secrets,
        }),
    ]
}

/// The resources of one kind (`?resource=NAME`), as Envoy answers: `{"configs": [...]}`.
pub fn resource(sections: Vec<Value>, name: &str) -> Result<Value, BadRequest> {
    if !RESOURCES.contains(&name) {
        return Err(BadRequest(format!(
            "unknown resource `{name}`; expected one of: {}\n",
            RESOURCES.join(", ")
        )));
    }
    let items = sections
        .into_iter()
        .find_map(|mut s| s.get_mut(name).map(Value::take))
        .unwrap_or_else(|| json!([]));
    Ok(json!({ "configs": items }))
}

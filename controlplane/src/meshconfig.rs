//! The mesh config, as istiod reads it: the `mesh` key of the ConfigMap `istio` in the root
//! namespace (`istio-system`), a YAML document of Istio's `MeshConfig`. This control plane
//! reads the telemetry part of it:
//!
//! - `extensionProviders`: named providers a Telemetry resource refers to. The `opentelemetry`
//!   type (`service`, `port`) is applied: spans go over OTLP/gRPC to that Service's endpoints
//!   (cluster `outbound|PORT||SERVICE`, as istiod names it). Providers of other types are
//!   accepted and not applied (a Telemetry naming one gets no tracer for it).
//! - `defaultProviders.tracing`: the provider used when a Telemetry's `tracing` names none.
//!
//! Other MeshConfig fields are accepted and ignored (the ConfigMap is usually shared with
//! settings for other components). Errors name the field under `data.mesh`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::validate::FieldProblem;
use crate::config::{ConfigSnapshot, Object};
use crate::networking::ROOT_NAMESPACE;

/// The ConfigMap that holds the mesh config.
pub const MESH_CONFIGMAP: &str = "istio";
/// Its key.
pub const MESH_KEY: &str = "mesh";

/// An OpenTelemetry (OTLP/gRPC) tracing provider.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenTelemetryProvider {
    /// The collector's Service host (`otel-collector.observability.svc.cluster.local`).
    #[serde(default)]
    pub service: String,
    /// Its OTLP/gRPC port.
    #[serde(default)]
    pub port: i64,
}

/// One entry of `extensionProviders`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    /// The name Telemetry resources use.
    #[serde(default)]
    pub name: String,
    /// An OpenTelemetry tracer.
    #[serde(default)]
    pub opentelemetry: Option<OpenTelemetryProvider>,
    /// Any other provider type (accepted, not applied).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `defaultProviders`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultProviders {
    /// Tracing providers used when a Telemetry's tracing names none.
    #[serde(default)]
    pub tracing: Vec<String>,
    /// Access-log providers used when a Telemetry's access logging names none.
    #[serde(default)]
    pub access_logging: Vec<String>,
}

/// The telemetry part of Istio's `MeshConfig`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// Named providers.
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    /// Default providers.
    #[serde(default)]
    pub default_providers: DefaultProviders,
}

impl MeshConfig {
    /// The mesh config of a config snapshot: the ConfigMap `istio-system/istio`, else the
    /// defaults. The ConfigMap was validated when loaded, so it parses.
    pub fn of(config: &ConfigSnapshot) -> MeshConfig {
        MeshConfig::from_objects(config.iter())
    }

    /// The mesh config among `objects`: the ConfigMap `istio-system/istio`, else the defaults.
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Object>) -> MeshConfig {
        objects
            .into_iter()
            .find_map(|o| match o {
                Object::ConfigMap(c)
                    if c.namespace == ROOT_NAMESPACE && c.name == MESH_CONFIGMAP =>
                {
                    c.data.get(MESH_KEY).and_then(|m| parse(m).ok())
                }
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The provider called `name`.
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }
}

/// Parses and checks the `mesh` key; each problem is named by its path under `data.mesh`.
pub fn parse(yaml: &str) -> Result<MeshConfig, Vec<(String, FieldProblem)>> {
    let root = format!("data.{MESH_KEY}");
    let value: serde_norway::Value = serde_norway::from_str(yaml)
        .map_err(|e| vec![(root.clone(), FieldProblem::Decode(e.to_string()))])?;
    let value = if value.is_null() {
        serde_norway::Value::Mapping(Default::default())
    } else {
        value
    };
    let mesh: MeshConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = match e.path().to_string().as_str() {
            "." => root.clone(),
            p => format!("{root}.{p}"),
        };
        vec![(field, FieldProblem::Decode(e.into_inner().to_string()))]
    })?;
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in mesh.extension_providers.iter().enumerate() {
        let at = format!("{root}.extensionProviders[{i}]");
        if p.name.is_empty() {
            problems.push((format!("{at}.name"), FieldProblem::Required));
        } else if !seen.insert(p.name.clone()) {
            problems.push((
                format!("{at}.name"),
                FieldProblem::Duplicate(p.name.clone()),
            ));
        }
        if let Some(o) = &p.opentelemetry {
            if o.service.is_empty() {
                problems.push((
                    format!("{at}.opentelemetry.service"),
                    FieldProblem::Required,
                ));
            }
            if !(1..=65535).contains(&o.port) {
                problems.push((
                    format!("{at}.opentelemetry.port"),
                    FieldProblem::PortRange(o.port),
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(mesh)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_parse_and_bad_ones_name_their_field() {
        let m = parse(
            "extensionProviders:\n- name: otel\n  opentelemetry: {service: otel.istio-system.svc.cluster.local, port: 4317}\n- name: zip\n  zipkin: {service: z, port: 9411}\nenableTracing: true\n",
        )
        .unwrap();
        assert_eq!(
            m.provider("otel").unwrap().opentelemetry,
            Some(OpenTelemetryProvider {
                service: "otel.istio-system.svc.cluster.local".into(),
                port: 4317
            })
        );
        assert!(m.provider("zip").unwrap().opentelemetry.is_none());
        let e = parse("extensionProviders:\n- name: otel\n  opentelemetry: {service: o, port: 0}\n- name: otel\n").unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "data.mesh.extensionProviders[0].opentelemetry.port",
                "data.mesh.extensionProviders[1].name"
            ]
        );
        let e = parse("extensionProviders: {}\n").unwrap_err();
        assert_eq!(e[0].0, "data.mesh.extensionProviders");
    }
}

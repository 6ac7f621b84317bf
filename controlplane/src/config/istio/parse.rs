//! From a YAML document of an Istio kind to an [`Object`]: the top-level fields, the metadata,
//! the typed `spec` (unknown fields rejected, each error at its field path) and the kind's
//! checks.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_norway::Value;

use super::{
    authorization_policy, destination_rule, gateway, names, peer_authentication, service_entry,
    sidecar, telemetry, virtual_service, Checker, IstioConfig, IstioProblem,
};
use crate::config::objects::{Kind, Object};
use crate::config::validate::{FieldProblem, NameRule, Problems};
use crate::config::ObjectRef;

/// The top-level fields of a Kubernetes object; `status` is accepted and ignored.
const TOP_LEVEL: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// `metadata`: only what the store keeps; other Kubernetes metadata is ignored.
#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// An Istio object and the warnings Istio would report about it.
pub(crate) type Parsed = (Object, Vec<(String, IstioProblem)>);

/// Parses and checks a document of an Istio `kind`.
pub(crate) fn parse(kind: Kind, object: &ObjectRef, value: Value) -> Result<Parsed, Problems> {
    let Value::Mapping(mut doc) = value else {
        return Err(Problems(vec![(
            "(document)".to_string(),
            FieldProblem::Decode("expected a mapping".to_string()),
        )]));
    };
    let mut problems = Vec::new();
    for k in doc.keys() {
        let name = k.as_str().unwrap_or_default();
        if !TOP_LEVEL.contains(&name) {
            problems.push((
                name.to_string(),
                FieldProblem::Decode(format!(
                    "unknown field `{name}`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"
                )),
            ));
        }
    }
    let meta: Meta = match doc.remove("metadata") {
        Some(m) => decode("metadata", m).unwrap_or_else(|mut p| {
            problems.append(&mut p.0);
            Meta::default()
        }),
        None => Meta::default(),
    };
    let namespace = object.namespace.clone().unwrap_or_default();
    let mut c = Checker::new(&namespace);
    c.errors.append(&mut problems);
    if !NameRule::Dns1123Subdomain.accepts(&object.name) {
        c.errors.push((
            "metadata.name".to_string(),
            FieldProblem::BadName {
                value: object.name.clone(),
                rule: NameRule::Dns1123Subdomain,
            },
        ));
    }
    super::names::validate_labels(&mut c, "metadata.labels", &meta.labels);
    let spec = doc.remove("spec").filter(|v| !v.is_null());
    let required = matches!(kind, Kind::ServiceEntry | Kind::WorkloadEntry);
    if spec.is_none() && required {
        c.required("spec");
        return Err(Problems(c.errors));
    }
    let header = IstioConfig {
        name: object.name.clone(),
        namespace: namespace.clone(),
        api_version: object.api_version.clone(),
        labels: meta.labels,
        annotations: meta.annotations,
        spec: (),
    };
    let built = match kind {
        Kind::VirtualService => typed(spec, &mut c, virtual_service::check::check)
            .map(|s| Object::VirtualService(Box::new(with_spec(&header, s)))),
        Kind::DestinationRule => typed(spec, &mut c, destination_rule::check::check)
            .map(|s| Object::DestinationRule(Box::new(with_spec(&header, s)))),
        Kind::Gateway => {
            let name = object.name.clone();
            typed(spec, &mut c, |c, g| gateway::check(c, &name, g))
                .map(|s| Object::Gateway(Box::new(with_spec(&header, s))))
        }
        Kind::ServiceEntry => typed(spec, &mut c, service_entry::check)
            .map(|s| Object::ServiceEntry(Box::new(with_spec(&header, s)))),
        Kind::WorkloadEntry => typed(spec, &mut c, service_entry::check_workload)
            .map(|s| Object::WorkloadEntry(Box::new(with_spec(&header, s)))),
        Kind::Sidecar => typed(spec, &mut c, sidecar::check)
            .map(|s| Object::Sidecar(Box::new(with_spec(&header, s)))),
        Kind::PeerAuthentication => typed(spec, &mut c, peer_authentication::check)
            .map(|s| Object::PeerAuthentication(Box::new(with_spec(&header, s)))),
        Kind::AuthorizationPolicy => typed(spec, &mut c, authorization_policy::check)
            .map(|s| Object::AuthorizationPolicy(Box::new(with_spec(&header, s)))),
        Kind::Telemetry => typed(spec, &mut c, telemetry::check)
            .map(|s| Object::Telemetry(Box::new(with_spec(&header, s)))),
        Kind::Namespace
        | Kind::Service
        | Kind::Endpoints
        | Kind::EndpointSlice
        | Kind::ConfigMap => None,
    };
    if let Some(o) = &built {
        check_annotations(&mut c, o, &header);
    }
    match built {
        Some(o) if c.is_clean() => Ok((o, c.warnings)),
        _ => Err(Problems(c.errors)),
    }
}

const DRY_RUN: &str = "istio.io/dry-run";
const ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";

/// Istio's `validateMetadata`: `istio.io/dry-run` only on ALLOW and DENY AuthorizationPolicies,
/// with a boolean; the always-reject test annotation.
fn check_annotations(c: &mut Checker, o: &Object, header: &IstioConfig<()>) {
    let object = format!("{}/{}", header.namespace, header.name);
    if let Some(value) = header.annotations.get(DRY_RUN) {
        let field = super::key("metadata.annotations", DRY_RUN);
        match o {
            Object::AuthorizationPolicy(ap) => {
                let action = ap.spec.action();
                match action {
                    authorization_policy::Action::Allow | authorization_policy::Action::Deny => {
                        if !names::is_go_bool(value) {
                            c.err(
                                field,
                                names::Problem::DryRunValue {
                                    object,
                                    value: value.clone(),
                                },
                            );
                        }
                    }
                    other => c.err(
                        field,
                        names::Problem::DryRunAction {
                            action: if other == authorization_policy::Action::Audit {
                                "AUDIT"
                            } else {
                                "CUSTOM"
                            },
                            object,
                        },
                    ),
                }
            }
            _ => c.err(field, names::Problem::DryRunUnsupported(object)),
        }
    }
    if header.annotations.contains_key(ALWAYS_REJECT) {
        c.err(
            super::key("metadata.annotations", ALWAYS_REJECT),
            names::Problem::AlwaysReject,
        );
    }
}

/// The object `header` with `spec`.
fn with_spec<S>(header: &IstioConfig<()>, spec: S) -> IstioConfig<S> {
    IstioConfig {
        name: header.name.clone(),
        namespace: header.namespace.clone(),
        api_version: header.api_version.clone(),
        labels: header.labels.clone(),
        annotations: header.annotations.clone(),
        spec,
    }
}

/// Decodes `spec` (an absent one is the empty spec) and runs `check` on it.
fn typed<S: DeserializeOwned + Default>(
    spec: Option<Value>,
    c: &mut Checker,
    check: impl FnOnce(&mut Checker, &S),
) -> Option<S> {
    let spec = match spec {
        None => S::default(),
        Some(v) => match decode("spec", v) {
            Ok(s) => s,
            Err(mut p) => {
                c.errors.append(&mut p.0);
                return None;
            }
        },
    };
    check(c, &spec);
    Some(spec)
}

/// Decodes `value`, naming the field that does not fit under `root`; an unknown field is
/// reported at its own path.
fn decode<T: DeserializeOwned>(root: &str, value: Value) -> Result<T, Problems> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        let mut field = match e.path().to_string().as_str() {
            "." => root.to_string(),
            p => format!("{root}.{p}"),
        };
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            if let Some((name, _)) = rest.split_once('`') {
                if !field.ends_with(&format!(".{name}")) {
                    field = format!("{field}.{name}");
                }
            }
        }
        Problems(vec![(field, FieldProblem::Decode(inner))])
    })
}

//! The Telemetry API: which access logging and tracing a workload gets, resolved as istiod
//! resolves it (`pilot/pkg/model/telemetry.go`), and its place in the workload's listeners.
//!
//! - Scope: a Telemetry without selector in the root namespace (`istio-system`) applies to
//!   the mesh, one without selector in a namespace to that namespace, one whose `selector`
//!   matches the workload's labels to that workload. Levels apply in that order, each
//!   overriding what the one above set (a field left out inherits). Where several compete at
//!   one level, the first by name wins (objects carry no creation time).
//! - `accessLogging` entries whose providers are empty (the mesh's default, `envoy`, the
//!   sidecar's standard output) or name `envoy` decide the sidecar's access log per side
//!   (`match.mode`): `disabled: true` turns it off, otherwise on, with `filter.expression`.
//! - `tracing` entries give `randomSamplingPercentage` and the provider, a mesh config
//!   extension provider of type `opentelemetry` ([`crate::meshconfig`]); a Telemetry that
//!   names none uses `defaultProviders.tracing`.
//!
//! In xDS, as istiod renders it: every HTTP connection manager and TCP proxy of the side gets
//! `access_log` (Envoy's file logger on `/dev/stdout` with Istio's JSON fields; a filter is a
//! CEL `ExpressionFilter`; "off" is the logger with the expression `false`, since a connection
//! manager without `access_log` leaves the proxy's own default in force), and each HTTP
//! connection manager `tracing` (`random_sampling`, and the OpenTelemetry tracer whose gRPC
//! service is the provider's cluster `outbound|PORT||SERVICE`). A workload no Telemetry
//! reaches gets neither: its proxy's flags decide.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter, extension_filter, AccessLog, AccessLogFilter, ExtensionFilter,
};
use envoy_types::pb::envoy::config::core::v3::{
    grpc_service, substitution_format_string, GrpcService, SubstitutionFormatString,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, Listener};
use envoy_types::pb::envoy::config::trace::v3::{tracing, OpenTelemetryConfig};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    file_access_log, FileAccessLog,
};
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{value, Any, Struct, Value as PbValue};
use prost::{Message, Name};
use serde::Serialize;

use crate::config::istio::telemetry::Telemetry;
use crate::config::{ConfigSnapshot, Object};
use crate::meshconfig::MeshConfig;
use crate::networking::ROOT_NAMESPACE;

/// The name of the built-in access-log provider (the sidecar's standard output).
pub const ENVOY_PROVIDER: &str = "envoy";
/// Istio's default sampling percentage, when a Telemetry enables a tracer without one.
pub const DEFAULT_SAMPLING: f64 = 1.0;
/// Envoy's file access logger.
pub const FILE_LOGGER: &str = "envoy.access_loggers.file";
/// Envoy's CEL access-log filter.
pub const CEL_FILTER: &str = "envoy.access_loggers.extension_filters.cel";
/// Envoy's OpenTelemetry tracer.
pub const OTEL_TRACER: &str = "envoy.tracers.opentelemetry";

/// Istio's JSON access-log fields and their Envoy command operators.
const JSON_FIELDS: [(&str, &str); 25] = [
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("downstream_peer_uri_san", "%DOWNSTREAM_PEER_URI_SAN%"),
];

/// A side's access log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum AccessLogPolicy {
    /// No line is written.
    Off,
    /// Lines are written, for the requests the filter (a CEL expression) passes.
    On {
        /// The expression, if any.
        filter: Option<String>,
    },
}

/// An OpenTelemetry collector a side's spans go to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OtelTarget {
    /// The provider's name.
    pub provider: String,
    /// The collector's Service host.
    pub service: String,
    /// Its port.
    pub port: u16,
}

impl OtelTarget {
    /// The outbound cluster of the collector, as istiod names it.
    pub fn cluster(&self) -> String {
        format!("outbound|{}||{}", self.port, self.service)
    }
}

/// A side's tracing.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TracingPolicy {
    /// Sampling percentage (0-100).
    pub sampling: Option<f64>,
    /// Where spans go.
    pub provider: Option<OtelTarget>,
}

/// What the Telemetry API sets for one side (client: outbound, server: inbound).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SidePolicy {
    /// Access log; `None`: nothing said.
    pub access_log: Option<AccessLogPolicy>,
    /// Tracing; `None`: nothing said.
    pub tracing: Option<TracingPolicy>,
}

/// A workload's resolved telemetry.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Resolved {
    /// Outbound.
    pub client: SidePolicy,
    /// Inbound.
    pub server: SidePolicy,
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    namespace: String,
    spec: Telemetry,
}

impl Entry {
    fn has_selector(&self) -> bool {
        self.spec
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty())
    }
}

/// Every Telemetry of a config snapshot and the mesh config.
#[derive(Clone, Debug, Default)]
pub struct Telemetries {
    entries: Vec<Entry>,
    mesh: MeshConfig,
}

impl Telemetries {
    /// The Telemetries of a config snapshot, sorted by namespace and name.
    pub fn build(config: &ConfigSnapshot) -> Telemetries {
        Telemetries::from_objects(&config.iter().collect::<Vec<_>>())
    }

    /// The Telemetries among `objects` (and the mesh config's providers among them).
    pub fn from_objects(objects: &[&Object]) -> Telemetries {
        let mut entries: Vec<Entry> = objects
            .iter()
            .filter_map(|o| match o {
                Object::Telemetry(t) => Some(Entry {
                    name: t.name.clone(),
                    namespace: t.namespace.clone(),
                    spec: t.spec.clone(),
                }),
                _ => None,
            })
            .collect();
        entries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Telemetries {
            entries,
            mesh: MeshConfig::from_objects(objects.iter().copied()),
        }
    }

    /// The Telemetries that apply to a workload, least specific first.
    fn levels(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<&Entry> {
        let wide = |ns: &str| {
            self.entries
                .iter()
                .find(|e| e.namespace == ns && !e.has_selector() && e.spec.target_refs.is_empty())
        };
        let workload = self.entries.iter().find(|e| {
            e.namespace == namespace
                && e.has_selector()
                && e.spec
                    .selector
                    .as_ref()
                    .is_some_and(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
        });
        let mut out: Vec<&Entry> = Vec::new();
        out.extend(wide(ROOT_NAMESPACE));
        if namespace != ROOT_NAMESPACE {
            out.extend(wide(namespace));
        }
        out.extend(workload);
        out
    }

    /// What applies to the workload (`namespace`, `labels`).
    pub fn resolve(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Resolved {
        let levels = self.levels(namespace, labels);
        Resolved {
            client: self.side(&levels, true),
            server: self.side(&levels, false),
        }
    }

    fn side(&self, levels: &[&Entry], client: bool) -> SidePolicy {
        let mut out = SidePolicy::default();
        let mut provider_name: Option<String> = None;
        let mut tracing_set = false;
        for level in levels {
            for al in &level.spec.access_logging {
                if !al.match_.unwrap_or_default().mode.covers(client) {
                    continue;
                }
                let default = &self.mesh.default_providers.access_logging;
                let envoy = if al.providers.is_empty() {
                    default.is_empty() || default.iter().any(|p| p == ENVOY_PROVIDER)
                } else {
                    al.providers.iter().any(|p| p.name == ENVOY_PROVIDER)
                };
                if !envoy {
                    continue;
                }
                out.access_log = Some(if al.disabled == Some(true) {
                    AccessLogPolicy::Off
                } else {
                    let inherited = match &out.access_log {
                        Some(AccessLogPolicy::On { filter }) => filter.clone(),
                        _ => None,
                    };
                    AccessLogPolicy::On {
                        filter: al
                            .filter
                            .as_ref()
                            .map(|f| f.expression.clone())
                            .or(inherited),
                    }
                });
            }
            for tr in &level.spec.tracing {
                if !tr.match_.unwrap_or_default().mode.covers(client) {
                    continue;
                }
                tracing_set = true;
                let t = out.tracing.get_or_insert_with(TracingPolicy::default);
                if let Some(p) = tr.random_sampling_percentage {
                    t.sampling = Some(p);
                }
                if let Some(p) = tr.providers.first() {
                    provider_name = Some(p.name.clone());
                }
            }
        }
        if tracing_set {
            let name =
                provider_name.or_else(|| self.mesh.default_providers.tracing.first().cloned());
            if let Some(t) = out.tracing.as_mut() {
                t.provider = name.and_then(|n| {
                    let p = self.mesh.provider(&n)?;
                    let o = p.opentelemetry.as_ref()?;
                    Some(OtelTarget {
                        provider: n.clone(),
                        service: o.service.clone(),
                        port: u16::try_from(o.port).ok()?,
                    })
                });
                if t.provider.is_some() && t.sampling.is_none() {
                    t.sampling = Some(DEFAULT_SAMPLING);
                }
            }
        }
        out
    }
}

fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn string(s: &str) -> PbValue {
    PbValue {
        kind: Some(value::Kind::StringValue(s.to_string())),
    }
}

/// The `access_log` entry for a policy.
pub fn access_log(policy: &AccessLogPolicy) -> AccessLog {
    let expression = match policy {
        AccessLogPolicy::Off => Some("false".to_string()),
        AccessLogPolicy::On { filter } => filter.clone(),
    };
    let format = Struct {
        fields: JSON_FIELDS
            .iter()
            .map(|(k, v)| (k.to_string(), string(v)))
            .collect(),
    };
    AccessLog {
        name: FILE_LOGGER.to_string(),
        filter: expression.map(|expression| AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
                ExtensionFilter {
                    name: CEL_FILTER.to_string(),
                    config_type: Some(extension_filter::ConfigType::TypedConfig(pack(
                        &ExpressionFilter {
                            expression,
                            ..Default::default()
                        },
                    ))),
                },
            )),
        }),
        config_type: Some(access_log::ConfigType::TypedConfig(pack(&FileAccessLog {
            path: "/dev/stdout".to_string(),
            access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
                SubstitutionFormatString {
                    format: Some(substitution_format_string::Format::JsonFormat(format)),
                    ..Default::default()
                },
            )),
        }))),
    }
}

/// The connection manager's `tracing` for a policy; `service_name` is the workload's
/// (`<canonical service>.<namespace>`).
pub fn tracing(policy: &TracingPolicy, service_name: &str) -> http_connection_manager::Tracing {
    http_connection_manager::Tracing {
        random_sampling: policy.sampling.map(|value| Percent { value }),
        provider: policy.provider.as_ref().map(|p| tracing::Http {
            name: OTEL_TRACER.to_string(),
            config_type: Some(tracing::http::ConfigType::TypedConfig(pack(
                &OpenTelemetryConfig {
                    grpc_service: Some(GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name: p.cluster(),
                                authority: p.service.clone(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }),
                    service_name: service_name.to_string(),
                    ..Default::default()
                },
            ))),
        }),
        ..Default::default()
    }
}

/// Adds the side's access log and tracing to every connection manager and TCP proxy of
/// `listener` (`client`: an outbound listener).
pub fn apply(listener: &mut Listener, policy: &SidePolicy, service_name: &str) {
    if policy.access_log.is_none() && policy.tracing.is_none() {
        return;
    }
    let chains = listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.iter_mut());
    for chain in chains {
        for f in &mut chain.filters {
            apply_filter(f, policy, service_name);
        }
    }
}

fn apply_filter(f: &mut Filter, policy: &SidePolicy, service_name: &str) {
    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
        return;
    };
    if any.type_url == HttpConnectionManager::type_url() {
        let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
            return;
        };
        if let Some(a) = &policy.access_log {
            hcm.access_log = vec![access_log(a)];
        }
        if let Some(t) = &policy.tracing {
            hcm.tracing = Some(tracing(t, service_name));
        }
        *any = pack(&hcm);
    } else if any.type_url == TcpProxy::type_url() {
        let Ok(mut tcp) = TcpProxy::decode(any.value.as_slice()) else {
            return;
        };
        if let Some(a) = &policy.access_log {
            tcp.access_log = vec![access_log(a)];
            *any = pack(&tcp);
        }
    }
}

#[cfg(test)]
mod tests;

//! `access_log` of connection managers and TCP proxies, and the connection manager's
//! `tracing`.
//!
//! Access loggers: Envoy's file logger (`envoy.extensions.access_loggers.file.v3.FileAccessLog`)
//! on `/dev/stdout`, the proxy's access-log sink; its `log_format` is ignored (the proxy writes
//! Istio's JSON fields, or Istio's text layout with `--access-log-format text`). A filter must
//! be a CEL `ExpressionFilter` of the subset [`crate::model::telemetry`] evaluates. Other
//! loggers, paths and filters are refused.
//!
//! Tracing: `random_sampling` and an `envoy.tracers.opentelemetry` provider whose
//! `grpc_service` is `envoy_grpc` (the collector's cluster). Ignored: `client_sampling`,
//! `overall_sampling` (Istio sets both to 100%), `verbose`, `max_path_tag_length`,
//! `custom_tags`, `spawn_upstream_span`, the tracer's `service_name` and resource detectors
//! (the proxy names its service as Istio does).

use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter, extension_filter, AccessLog,
};
use envoy_types::pb::envoy::config::core::v3::grpc_service;
use envoy_types::pb::envoy::config::trace::v3::{tracing, OpenTelemetryConfig};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use prost::Name;

use super::{decode_any, type_name, ConvertError, Within};
use crate::model::telemetry::{parse, AccessLogger, TracingConfig};

/// The only path the file logger may write to: the proxy's access-log sink.
const STDOUT: &str = "/dev/stdout";

/// `access_log` entries.
pub(super) fn access_logs(logs: Vec<AccessLog>) -> Result<Vec<AccessLogger>, ConvertError> {
    logs.into_iter()
        .enumerate()
        .map(|(i, l)| access_log(l).at_index("access_log", i))
        .collect()
}

fn access_log(log: AccessLog) -> Result<AccessLogger, ConvertError> {
    let any = match log.config_type {
        Some(access_log::ConfigType::TypedConfig(any)) => any,
        None => return Err(ConvertError::missing("typed_config")),
    };
    if type_name(&any.type_url) != FileAccessLog::full_name() {
        return Err(ConvertError::unsupported_value(
            "typed_config",
            any.type_url,
        ));
    }
    let file: FileAccessLog = decode_any(&any).at("typed_config")?;
    if file.path != STDOUT {
        return Err(ConvertError::unsupported_value("path", file.path).at("typed_config"));
    }
    let filter = match log.filter.and_then(|f| f.filter_specifier) {
        None => None,
        Some(access_log_filter::FilterSpecifier::ExtensionFilter(e)) => {
            let any = match e.config_type {
                Some(extension_filter::ConfigType::TypedConfig(any)) => any,
                None => {
                    return Err(ConvertError::missing("typed_config")
                        .at("extension_filter")
                        .at("filter"))
                }
            };
            if type_name(&any.type_url) != ExpressionFilter::full_name() {
                return Err(
                    ConvertError::unsupported_value("typed_config", any.type_url)
                        .at("extension_filter")
                        .at("filter"),
                );
            }
            let cel: ExpressionFilter = decode_any(&any)
                .at("typed_config")
                .at("extension_filter")
                .at("filter")?;
            Some(parse(&cel.expression).map_err(|e| {
                ConvertError::invalid("CEL expression", format!("{:?}: {e}", cel.expression))
                    .at("expression")
                    .at("typed_config")
                    .at("extension_filter")
                    .at("filter")
            })?)
        }
        Some(_) => return Err(ConvertError::unsupported("filter")),
    };
    Ok(AccessLogger { filter })
}

/// The connection manager's `tracing`.
pub(super) fn tracing_config(t: Tracing) -> Result<TracingConfig, ConvertError> {
    let sampling = match t.random_sampling {
        Some(p) if !(0.0..=100.0).contains(&p.value) => {
            return Err(
                ConvertError::invalid("percentage", p.value.to_string()).at("random_sampling")
            )
        }
        p => p.map(|p| p.value),
    };
    let collector = match t.provider {
        None => None,
        Some(p) => {
            let any = match p.config_type {
                Some(tracing::http::ConfigType::TypedConfig(any)) => any,
                None => return Err(ConvertError::missing("typed_config").at("provider")),
            };
            if type_name(&any.type_url) != OpenTelemetryConfig::full_name() {
                return Err(
                    ConvertError::unsupported_value("typed_config", any.type_url).at("provider"),
                );
            }
            let otel: OpenTelemetryConfig = decode_any(&any).at("typed_config").at("provider")?;
            if otel.http_service.is_some() || otel.exporter.is_some() || otel.sampler.is_some() {
                return Err(ConvertError::unsupported("http_service")
                    .at("typed_config")
                    .at("provider"));
            }
            match otel.grpc_service.and_then(|g| g.target_specifier) {
                Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) if !e.cluster_name.is_empty() => {
                    Some(e.cluster_name)
                }
                _ => {
                    return Err(ConvertError::missing("grpc_service")
                        .at("typed_config")
                        .at("provider"))
                }
            }
        }
    };
    Ok(TracingConfig {
        sampling,
        collector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::accesslog::v3::{AccessLogFilter, ExtensionFilter};
    use envoy_types::pb::envoy::config::core::v3::GrpcService;
    use envoy_types::pb::envoy::r#type::v3::Percent;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    fn pack<M: Message + Name>(m: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        }
    }

    fn logger(path: &str, expression: Option<&str>) -> AccessLog {
        AccessLog {
            name: "envoy.access_loggers.file".into(),
            filter: expression.map(|e| AccessLogFilter {
                filter_specifier: Some(access_log_filter::FilterSpecifier::ExtensionFilter(
                    ExtensionFilter {
                        name: "envoy.access_loggers.extension_filters.cel".into(),
                        config_type: Some(extension_filter::ConfigType::TypedConfig(pack(
                            &ExpressionFilter {
                                expression: e.into(),
                                ..Default::default()
                            },
                        ))),
                    },
                )),
            }),
            config_type: Some(access_log::ConfigType::TypedConfig(pack(&FileAccessLog {
                path: path.into(),
                access_log_format: None,
            }))),
        }
    }

    #[test]
    fn loggers_filters_and_tracing_convert_and_the_rest_is_refused() {
        let l = access_logs(vec![logger("/dev/stdout", Some("response.code >= 400"))]).unwrap();
        let f = l[0].filter.as_ref().unwrap();
        assert!(f.eval(403) && !f.eval(200));
        let e = access_logs(vec![logger("/tmp/x", None)]).unwrap_err();
        assert!(
            e.to_string().contains("access_log[0].typed_config.path"),
            "{e}"
        );
        let e = access_logs(vec![logger("/dev/stdout", Some("request.path == 1"))]).unwrap_err();
        assert!(
            e.to_string().contains("request.path") && e.to_string().contains("filter"),
            "{e}"
        );
        let t = tracing_config(Tracing {
            random_sampling: Some(Percent { value: 100.0 }),
            provider: Some(tracing::Http {
                name: "envoy.tracers.opentelemetry".into(),
                config_type: Some(tracing::http::ConfigType::TypedConfig(pack(
                    &OpenTelemetryConfig {
                        grpc_service: Some(GrpcService {
                            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                                grpc_service::EnvoyGrpc {
                                    cluster_name:
                                        "outbound|4317||otel.istio-system.svc.cluster.local".into(),
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ))),
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.sampling, Some(100.0));
        assert_eq!(
            t.collector.as_deref(),
            Some("outbound|4317||otel.istio-system.svc.cluster.local")
        );
        assert!(tracing_config(Tracing {
            random_sampling: Some(Percent { value: 101.0 }),
            ..Default::default()
        })
        .is_err());
    }
}

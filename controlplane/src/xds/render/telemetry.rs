//! Rendering of the Telemetry API's pieces: access logs (file logger, CEL filter) and the
//! connection manager's tracing (OpenTelemetry tracer).

use super::*;
use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter, extension_filter, AccessLog, AccessLogFilter, ExtensionFilter,
};
use envoy_types::pb::envoy::config::core::v3::{
    grpc_service, substitution_format_string, GrpcService, SubstitutionFormatString,
};
use envoy_types::pb::envoy::config::trace::v3::{tracing as trace, OpenTelemetryConfig};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    file_access_log, FileAccessLog,
};
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::v3::Percent;

/// An `access_log` entry.
pub(super) fn access_log_json(mut a: AccessLog) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut a.name));
    o.msg("filter", a.filter.take(), |mut f: AccessLogFilter| {
        let mut o = Obj::default();
        match f.filter_specifier.take() {
            Some(access_log_filter::FilterSpecifier::ExtensionFilter(e)) => {
                o.val("extension_filter", Some(extension(e)?));
            }
            other => f.filter_specifier = other,
        }
        o.done(f, "AccessLogFilter")
    })?;
    match a.config_type.take() {
        Some(access_log::ConfigType::TypedConfig(t)) => {
            o.val("typed_config", Some(any(t)?));
        }
        other => a.config_type = other,
    }
    o.done(a, "AccessLog")
}

fn extension(mut e: ExtensionFilter) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut e.name));
    match e.config_type.take() {
        Some(extension_filter::ConfigType::TypedConfig(t)) => {
            o.val("typed_config", Some(any(t)?));
        }
        other => e.config_type = other,
    }
    o.done(e, "ExtensionFilter")
}

/// Envoy's file access logger.
pub(super) fn file_access_log_json(mut f: FileAccessLog) -> R {
    let mut o = Obj::default();
    o.str("path", take(&mut f.path));
    match f.access_log_format.take() {
        Some(file_access_log::AccessLogFormat::LogFormat(mut s)) => {
            let mut inner = Obj::default();
            match s.format.take() {
                Some(substitution_format_string::Format::JsonFormat(j)) => {
                    inner.val("json_format", Some(route::pb_struct(j)));
                }
                other => s.format = other,
            }
            o.val(
                "log_format",
                Some(inner.done::<SubstitutionFormatString>(s, "SubstitutionFormatString")?),
            );
        }
        other => f.access_log_format = other,
    }
    o.done(f, "FileAccessLog")
}

/// The CEL access-log filter.
pub(super) fn expression_filter(mut e: ExpressionFilter) -> R {
    let mut o = Obj::default();
    o.str("expression", take(&mut e.expression));
    o.done(e, "ExpressionFilter")
}

/// The connection manager's `tracing`.
pub(super) fn tracing_json(mut t: Tracing) -> R {
    let mut o = Obj::default();
    o.msg("random_sampling", t.random_sampling.take(), |p: Percent| {
        Ok(Value::from(p.value))
            .map(|v| Value::Object([("value".to_string(), v)].into_iter().collect()))
    })?;
    o.msg("provider", t.provider.take(), |mut p: trace::Http| {
        let mut o = Obj::default();
        o.str("name", take(&mut p.name));
        match p.config_type.take() {
            Some(trace::http::ConfigType::TypedConfig(a)) => {
                o.val("typed_config", Some(any(a)?));
            }
            other => p.config_type = other,
        }
        o.done(p, "Tracing.Http")
    })?;
    o.done(t, "HttpConnectionManager.Tracing")
}

/// The OpenTelemetry tracer.
pub(super) fn open_telemetry(mut c: OpenTelemetryConfig) -> R {
    let mut o = Obj::default();
    o.msg(
        "grpc_service",
        c.grpc_service.take(),
        |mut g: GrpcService| {
            let mut o = Obj::default();
            match g.target_specifier.take() {
                Some(grpc_service::TargetSpecifier::EnvoyGrpc(mut e)) => {
                    let mut inner = Obj::default();
                    inner.str("cluster_name", take(&mut e.cluster_name));
                    inner.str("authority", take(&mut e.authority));
                    o.val("envoy_grpc", Some(inner.done(e, "GrpcService.EnvoyGrpc")?));
                }
                other => g.target_specifier = other,
            }
            o.done(g, "GrpcService")
        },
    )?;
    o.str("service_name", take(&mut c.service_name));
    o.done(c, "OpenTelemetryConfig")
}

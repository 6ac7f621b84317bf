//! Settings of the fault and CORS filters: filter-wide (`HttpFilter.typed_config`) and per
//! route (`typed_per_filter_config`, keyed by filter name).
//!
//! Ignored fields: `HTTPFault.{delay_percent_runtime, abort_percent_runtime,
//! delay_duration_runtime, abort_http_status_runtime, max_active_faults_runtime,
//! response_rate_limit_percent_runtime, abort_grpc_status_runtime,
//! disable_downstream_cluster_stats, filter_metadata}` (no runtime, own stats),
//! `CorsPolicy.shadow_enabled` (shadow mode only counts).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::route::v3::{CorsPolicy as RouteCors, FilterConfig};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as PbCors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{fault_abort, HttpFault};
use envoy_types::pb::google::protobuf::Any;
use prost::Name;

use super::matcher::{fraction, header_matchers, runtime_fraction};
use super::{decode_any, duration, reject_set, type_name, ConvertError, Location, Within};
use crate::model::filter::{CORS_FILTER, FAULT_FILTER};
use crate::model::{
    AbortStatus, CorsPolicy, FaultAbort, FaultConfig, FaultDelay, FilterConfigs, Fraction,
    StringMatcher,
};

/// Envoy's `HTTPFault`, filter-wide or per route.
pub(super) fn fault(proto: &HttpFault) -> Result<FaultConfig, ConvertError> {
    reject_set!(
        proto,
        upstream_cluster,
        downstream_nodes,
        response_rate_limit
    );
    let delay = match &proto.delay {
        None => None,
        Some(d) => {
            let duration = match &d.fault_delay_secifier {
                Some(fault_delay::FaultDelaySecifier::FixedDelay(fixed)) => {
                    duration(fixed).at("fixed_delay").at("delay")?
                }
                Some(fault_delay::FaultDelaySecifier::HeaderDelay(_)) => {
                    return Err(ConvertError::unsupported("header_delay").at("delay"))
                }
                None => return Err(ConvertError::missing("fixed_delay").at("delay")),
            };
            let fraction = match &d.percentage {
                Some(p) => fraction(p).at("percentage").at("delay")?,
                None => Fraction::ALL,
            };
            Some(FaultDelay { duration, fraction })
        }
    };
    let abort = match &proto.abort {
        None => None,
        Some(a) => {
            let status = match &a.error_type {
                Some(fault_abort::ErrorType::HttpStatus(code)) => {
                    match u16::try_from(*code).ok().filter(|c| (200..600).contains(c)) {
                        Some(code) => AbortStatus::Http(code),
                        None => {
                            return Err(ConvertError::invalid("HTTP status", code.to_string())
                                .at("http_status")
                                .at("abort"))
                        }
                    }
                }
                Some(fault_abort::ErrorType::GrpcStatus(code)) => {
                    if *code > 16 {
                        return Err(ConvertError::invalid("gRPC status", code.to_string())
                            .at("grpc_status")
                            .at("abort"));
                    }
                    AbortStatus::Grpc(*code)
                }
                Some(fault_abort::ErrorType::HeaderAbort(_)) => {
                    return Err(ConvertError::unsupported("header_abort").at("abort"))
                }
                None => return Err(ConvertError::missing("error_type").at("abort")),
            };
            let fraction = match &a.percentage {
                Some(p) => fraction(p).at("percentage").at("abort")?,
                None => Fraction::ALL,
            };
            Some(FaultAbort {
                status,
                fraction,
                body: (!a.response_body.is_empty()).then(|| a.response_body.clone()),
            })
        }
    };
    Ok(FaultConfig {
        delay,
        abort,
        headers: header_matchers(&proto.headers, "headers")?,
        max_active_faults: proto.max_active_faults.as_ref().map(|v| v.value),
    })
}

/// The CORS filter's per-route policy.
pub(super) fn cors(proto: &PbCors) -> Result<CorsPolicy, ConvertError> {
    let allow_origin = proto
        .allow_origin_string_match
        .iter()
        .enumerate()
        .map(|(i, m)| StringMatcher::try_from(m).at_index("allow_origin_string_match", i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsPolicy {
        allow_origin,
        allow_methods: proto.allow_methods.clone(),
        allow_headers: proto.allow_headers.clone(),
        expose_headers: proto.expose_headers.clone(),
        max_age: proto.max_age.clone(),
        allow_credentials: proto.allow_credentials.as_ref().is_some_and(|b| b.value),
        allow_private_network_access: proto
            .allow_private_network_access
            .as_ref()
            .is_some_and(|b| b.value),
        forward_not_matching_preflights: proto
            .forward_not_matching_preflights
            .as_ref()
            .is_none_or(|b| b.value),
        enabled: runtime_fraction(proto.filter_enabled.as_ref()).at("filter_enabled")?,
    })
}

/// The legacy route-level `cors` field (same meaning as the filter's policy).
pub(super) fn route_cors(proto: &RouteCors) -> Result<CorsPolicy, ConvertError> {
    use envoy_types::pb::envoy::config::route::v3::cors_policy::EnabledSpecifier;
    let enabled = match &proto.enabled_specifier {
        None => Fraction::ALL,
        Some(EnabledSpecifier::FilterEnabled(f)) => {
            runtime_fraction(Some(f)).at("filter_enabled")?
        }
    };
    let converted = PbCors {
        allow_origin_string_match: proto.allow_origin_string_match.clone(),
        allow_methods: proto.allow_methods.clone(),
        allow_headers: proto.allow_headers.clone(),
        expose_headers: proto.expose_headers.clone(),
        max_age: proto.max_age.clone(),
        allow_credentials: proto.allow_credentials,
        allow_private_network_access: proto.allow_private_network_access,
        forward_not_matching_preflights: proto.forward_not_matching_preflights,
        ..Default::default()
    };
    let mut policy = cors(&converted)?;
    policy.enabled = enabled;
    Ok(policy)
}

/// `typed_per_filter_config`: settings for the fault and CORS filters; anything else is
/// rejected unless wrapped in an optional `FilterConfig`.
pub(super) fn filter_configs(map: &HashMap<String, Any>) -> Result<FilterConfigs, ConvertError> {
    let mut out = FilterConfigs::default();
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        let any = &map[key];
        one_filter_config(key, any, &mut out)
            .map_err(|e| e.at_key("typed_per_filter_config", key))?;
    }
    Ok(out)
}

fn one_filter_config(key: &str, any: &Any, out: &mut FilterConfigs) -> Result<(), ConvertError> {
    let (any, optional) = if type_name(&any.type_url) == FilterConfig::full_name() {
        let wrapper: FilterConfig = decode_any(any)?;
        if wrapper.disabled {
            return Err(ConvertError::unsupported_value("disabled", "true"));
        }
        match wrapper.config {
            Some(config) => (config, wrapper.is_optional),
            None => return Err(ConvertError::missing("config")),
        }
    } else {
        (any.clone(), false)
    };
    let kind = type_name(&any.type_url);
    if kind == HttpFault::full_name() {
        out.fault = Some(fault(&decode_any(&any)?)?);
    } else if kind == PbCors::full_name() {
        out.cors = Some(cors(&decode_any(&any)?)?);
    } else if !optional {
        let name = if key == FAULT_FILTER || key == CORS_FILTER {
            any.type_url.clone()
        } else {
            key.to_string()
        };
        return Err(ConvertError::UnsupportedHttpFilter {
            at: Location::default(),
            name,
        });
    }
    Ok(())
}

//! Route policies as istiod writes them: retries (`retry.ConvertPolicy` and its default),
//! fault injection (`TranslateFault`), CORS (`TranslateCORSPolicy`), percentages, and header
//! operations (`TranslateHeadersOperations`).

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
    RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::route::v3::{
    retry_policy::{RetryBackOff, RetryHostPredicate, RetryPriority},
    RetryPolicy,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    fault_delay::FaultDelaySecifier, FaultDelay,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort::ErrorType, FaultAbort, HttpFault,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use envoy_types::util::pack_any;

use super::matching::string_matcher;
use crate::config::istio::types::Percent;
use crate::config::istio::values::is_known_http_status;
use crate::config::istio::virtual_service::check::GRPC_STATUS;
use crate::config::istio::virtual_service::{
    CorsPolicy as IstioCors, HeaderOperations, Headers, HttpFaultInjection, HttpRetry,
    UnmatchedPreflights,
};
use crate::config::istio::Duration as IstioDuration;
use crate::xds::build;

/// Istio's default `retryOn`.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// A protobuf duration of an Istio duration (validated: not negative).
pub fn duration(d: IstioDuration) -> envoy_types::pb::google::protobuf::Duration {
    let nanos = d.as_nanos().max(0);
    envoy_types::pb::google::protobuf::Duration {
        seconds: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: i32::try_from(nanos % 1_000_000_000).unwrap_or(0),
    }
}

/// `value`% as a fraction of a million (Istio's `translatePercentToFractionalPercent`).
pub fn percent_of_million(p: Percent) -> FractionalPercent {
    FractionalPercent {
        numerator: (p.value * 10_000.0) as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// `value`% as a fraction of a hundred (`translateIntegerToFractionalPercent`).
pub fn percent_of_hundred(p: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: p,
        denominator: DenominatorType::Hundred as i32,
    }
}

/// A runtime fraction with only its default value.
pub fn runtime_fraction(p: FractionalPercent) -> RuntimeFractionalPercent {
    RuntimeFractionalPercent {
        default_value: Some(p),
        ..Default::default()
    }
}

fn previous_hosts() -> RetryHostPredicate {
    RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".to_string(),
        config_type: Some(
            envoy_types::pb::envoy::config::route::v3::retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                pack_any(PreviousHostsPredicate::default()),
            ),
        ),
    }
}

/// Istio's default retry policy: 2 retries on connect failures, refused streams, gRPC
/// `unavailable`/`cancelled` and 503, to another host (not with consistent hashing, which
/// must keep its host), at most 5 host selections.
pub fn default_retry(consistent_hash: bool) -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.to_string(),
        num_retries: build::u32_value(2),
        host_selection_retry_max_attempts: 5,
        retriable_status_codes: vec![503],
        retry_host_predicate: if consistent_hash {
            Vec::new()
        } else {
            vec![previous_hosts()]
        },
        ..Default::default()
    }
}

/// Splits `retryOn` into Envoy conditions and bare status codes (Istio's `parseRetryOn`).
fn parse_retry_on(retry_on: &str) -> (String, Vec<u32>) {
    let mut codes = Vec::new();
    let mut conditions = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) if is_known_http_status(i64::from(code)) => codes.push(code),
            _ => conditions.push(part),
        }
    }
    (conditions.join(","), codes)
}

/// Istio's `ConvertPolicy`: the default when `retries` is absent, none when `attempts` is 0.
pub fn retry_policy(retries: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
    let mut out = default_retry(consistent_hash);
    let Some(r) = retries else {
        return Some(out);
    };
    if r.attempts <= 0 {
        return None;
    }
    out.num_retries = build::u32_value(u32::try_from(r.attempts).unwrap_or(0));
    if !r.retry_on.is_empty() {
        let (conditions, codes) = parse_retry_on(&r.retry_on);
        out.retry_on = conditions;
        out.retriable_status_codes = codes;
        if !out.retriable_status_codes.is_empty()
            && !out.retry_on.contains("retriable-status-codes")
        {
            out.retry_on.push_str(",retriable-status-codes");
        }
    }
    out.per_try_timeout = r.per_try_timeout.map(duration);
    if let Some(ignore) = r.retry_ignore_previous_hosts {
        out.retry_host_predicate = if ignore {
            vec![previous_hosts()]
        } else {
            Vec::new()
        };
    }
    if r.retry_remote_localities == Some(true) {
        out.retry_priority = Some(RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_string(),
            config_type: Some(
                envoy_types::pb::envoy::config::route::v3::retry_policy::retry_priority::ConfigType::TypedConfig(
                    pack_any(PreviousPrioritiesConfig { update_frequency: 2 }),
                ),
            ),
        });
    }
    if let Some(b) = r.backoff {
        out.retry_back_off = Some(RetryBackOff {
            base_interval: Some(duration(b)),
            ..Default::default()
        });
    }
    Some(out)
}

/// Istio's `TranslateFault`; `None` when neither a delay nor an abort is expressible.
pub fn fault(f: &HttpFaultInjection) -> Option<HttpFault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay?;
        let percentage = match d.percentage {
            Some(p) => percent_of_million(p),
            None => percent_of_hundred(u32::try_from(d.percent.unwrap_or(0)).unwrap_or(0)),
        };
        Some(FaultDelay {
            percentage: Some(percentage),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(duration(fixed))),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = if let Some(status) = a.http_status {
            ErrorType::HttpStatus(u32::try_from(status).unwrap_or(0))
        } else if let Some(name) = &a.grpc_status {
            let code = GRPC_STATUS.iter().position(|s| s == name)?;
            ErrorType::GrpcStatus(u32::try_from(code).unwrap_or(0))
        } else {
            return None;
        };
        Some(FaultAbort {
            percentage: a.percentage.map(percent_of_million),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(HttpFault {
        delay,
        abort,
        ..Default::default()
    })
}

/// Istio's `TranslateCORSPolicy`.
pub fn cors(c: &IstioCors) -> CorsPolicy {
    let allow_origin_string_match = if !c.allow_origins.is_empty() {
        c.allow_origins.iter().filter_map(string_matcher).collect()
    } else {
        c.allow_origin
            .iter()
            .map(|o| {
                string_matcher(&crate::config::istio::types::StringMatch {
                    exact: Some(o.clone()),
                    ..Default::default()
                })
                .unwrap_or_default()
            })
            .collect()
    };
    CorsPolicy {
        allow_origin_string_match,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .map(|d| (d.as_nanos() / 1_000_000_000).to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.and_then(build::bool_value),
        filter_enabled: Some(runtime_fraction(percent_of_hundred(100))),
        forward_not_matching_preflights: build::bool_value(
            c.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
        ),
        ..Default::default()
    }
}

/// Header operations of a route or destination (Istio's `TranslateHeadersOperations`).
#[derive(Debug, Default)]
pub struct HeaderOps {
    /// `request_headers_to_add`: set (overwrite) first, then add (append), each by name.
    pub request_add: Vec<HeaderValueOption>,
    /// `response_headers_to_add`.
    pub response_add: Vec<HeaderValueOption>,
    /// `request_headers_to_remove`.
    pub request_remove: Vec<String>,
    /// `response_headers_to_remove`.
    pub response_remove: Vec<String>,
    /// A request `:authority`/`Host` set or added: becomes `host_rewrite_literal`.
    pub authority: Option<String>,
}

fn is_internal(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn header_values(
    map: &std::collections::BTreeMap<String, String>,
    append: bool,
    authority: &mut Option<String>,
) -> Vec<HeaderValueOption> {
    let action = if append {
        HeaderAppendAction::AppendIfExistsOrAdd
    } else {
        HeaderAppendAction::OverwriteIfExistsOrAdd
    };
    let mut out = Vec::new();
    for (k, v) in map {
        if is_authority(k) {
            *authority = Some(v.clone());
        }
        if is_internal(k) {
            continue;
        }
        out.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        });
    }
    out
}

/// Translates `headers`.
pub fn header_ops(h: &Headers) -> HeaderOps {
    let empty = HeaderOperations::default();
    let req = h.request.as_ref().unwrap_or(&empty);
    let resp = h.response.as_ref().unwrap_or(&empty);
    let mut set_authority = None;
    let mut add_authority = None;
    let mut request_add = header_values(&req.set, false, &mut set_authority);
    request_add.extend(header_values(&req.add, true, &mut add_authority));
    let mut ignored = None;
    let mut response_add = header_values(&resp.set, false, &mut ignored);
    response_add.extend(header_values(&resp.add, true, &mut ignored));
    let keep = |names: &[String]| -> Vec<String> {
        names.iter().filter(|n| !is_internal(n)).cloned().collect()
    };
    HeaderOps {
        request_add,
        response_add,
        request_remove: keep(&req.remove),
        response_remove: keep(&resp.remove),
        authority: set_authority.or(add_authority),
    }
}

/// Whether a retry condition list carries a status code Go knows (for tests and analysis).
#[cfg(test)]
pub(crate) fn split_retry_on(retry_on: &str) -> (String, Vec<u32>) {
    parse_retry_on(retry_on)
}

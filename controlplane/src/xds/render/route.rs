//! Rendering of route configurations: virtual hosts, routes, matches, actions and the
//! per-route policies (retries, hashing, mirrors, header operations, fault, CORS).

use std::mem::take;

use envoy_types::pb::envoy::config::core::v3::{
    data_source, header_value_option::HeaderAppendAction, DataSource, HeaderValue,
    HeaderValueOption, Metadata, RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    retry_policy::{self, RetryBackOff, RetryHostPredicate, RetryPriority},
    route::Action,
    route_action::{
        hash_policy::PolicySpecifier, ClusterSpecifier, HashPolicy, HostRewriteSpecifier,
        RequestMirrorPolicy,
    },
    route_match::PathSpecifier,
    weighted_cluster::{cluster_weight, ClusterWeight},
    Decorator, DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction,
    RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    fault_delay::FaultDelaySecifier, FaultDelay,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort::ErrorType, FaultAbort, HttpFault,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
use serde_json::{Map, Value};

use super::{any, any_map, duration, enum_name, wrapped_bool, wrapped_u32, Obj, R};

fn regex_matcher(mut m: RegexMatcher) -> R {
    let mut o = Obj::default();
    o.str("regex", take(&mut m.regex));
    o.done(m, "RegexMatcher")
}

/// Renders a string matcher.
pub(super) fn string_matcher(mut m: StringMatcher) -> R {
    let mut o = Obj::default();
    match m.match_pattern.take() {
        Some(MatchPattern::Exact(v)) => {
            o.val("exact", Some(Value::String(v)));
        }
        Some(MatchPattern::Prefix(v)) => {
            o.val("prefix", Some(Value::String(v)));
        }
        Some(MatchPattern::Suffix(v)) => {
            o.val("suffix", Some(Value::String(v)));
        }
        Some(MatchPattern::Contains(v)) => {
            o.val("contains", Some(Value::String(v)));
        }
        Some(MatchPattern::SafeRegex(r)) => {
            o.msg("safe_regex", Some(r), regex_matcher)?;
        }
        other => m.match_pattern = other,
    }
    o.bool("ignore_case", take(&mut m.ignore_case));
    o.done(m, "StringMatcher")
}

/// Renders a header matcher.
pub(super) fn header_matcher(mut m: HeaderMatcher) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut m.name));
    match m.header_match_specifier.take() {
        Some(HeaderMatchSpecifier::StringMatch(s)) => {
            o.msg("string_match", Some(s), string_matcher)?;
        }
        Some(HeaderMatchSpecifier::PresentMatch(p)) => {
            o.val("present_match", Some(Value::Bool(p)));
        }
        other => m.header_match_specifier = other,
    }
    o.bool("invert_match", take(&mut m.invert_match));
    o.bool(
        "treat_missing_header_as_empty",
        take(&mut m.treat_missing_header_as_empty),
    );
    o.done(m, "HeaderMatcher")
}

fn query_matcher(mut m: QueryParameterMatcher) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut m.name));
    match m.query_parameter_match_specifier.take() {
        Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
            o.msg("string_match", Some(s), string_matcher)?;
        }
        Some(QueryParameterMatchSpecifier::PresentMatch(p)) => {
            o.val("present_match", Some(Value::Bool(p)));
        }
        other => m.query_parameter_match_specifier = other,
    }
    o.done(m, "QueryParameterMatcher")
}

fn route_match(mut m: RouteMatch) -> R {
    let mut o = Obj::default();
    match m.path_specifier.take() {
        Some(PathSpecifier::Prefix(p)) => {
            o.val("prefix", Some(Value::String(p)));
        }
        Some(PathSpecifier::Path(p)) => {
            o.val("path", Some(Value::String(p)));
        }
        Some(PathSpecifier::SafeRegex(r)) => {
            o.msg("safe_regex", Some(r), regex_matcher)?;
        }
        other => m.path_specifier = other,
    }
    o.msg("case_sensitive", m.case_sensitive.take(), wrapped_bool)?;
    o.list("headers", take(&mut m.headers), header_matcher)?;
    o.list(
        "query_parameters",
        take(&mut m.query_parameters),
        query_matcher,
    )?;
    o.done(m, "RouteMatch")
}

/// Renders a fractional percent.
pub(super) fn fractional_percent(mut p: FractionalPercent) -> R {
    let mut o = Obj::default();
    o.val("numerator", Some(Value::from(take(&mut p.numerator))));
    o.val(
        "denominator",
        enum_name(
            "DenominatorType",
            take(&mut p.denominator),
            DenominatorType::as_str_name,
        )?,
    );
    o.done(p, "FractionalPercent")
}

/// Renders a runtime fractional percent.
pub(super) fn runtime_fraction(mut p: RuntimeFractionalPercent) -> R {
    let mut o = Obj::default();
    o.msg("default_value", p.default_value.take(), fractional_percent)?;
    o.str("runtime_key", take(&mut p.runtime_key));
    o.done(p, "RuntimeFractionalPercent")
}

fn header_value_option(mut h: HeaderValueOption) -> R {
    let mut o = Obj::default();
    o.msg("header", h.header.take(), |mut v: HeaderValue| {
        let mut o = Obj::default();
        o.str("key", take(&mut v.key));
        o.str("value", take(&mut v.value));
        o.done(v, "HeaderValue")
    })?;
    o.val(
        "append_action",
        enum_name(
            "HeaderAppendAction",
            take(&mut h.append_action),
            HeaderAppendAction::as_str_name,
        )?,
    );
    o.done(h, "HeaderValueOption")
}

fn retry_policy_json(mut p: RetryPolicy) -> R {
    let mut o = Obj::default();
    o.str("retry_on", take(&mut p.retry_on));
    o.msg("num_retries", p.num_retries.take(), wrapped_u32)?;
    o.msg("per_try_timeout", p.per_try_timeout.take(), duration)?;
    o.msg(
        "retry_priority",
        p.retry_priority.take(),
        |mut r: RetryPriority| {
            let mut o = Obj::default();
            o.str("name", take(&mut r.name));
            match r.config_type.take() {
                Some(retry_policy::retry_priority::ConfigType::TypedConfig(a)) => {
                    o.val("typed_config", Some(any(a)?));
                }
                other => r.config_type = other,
            }
            o.done(r, "RetryPriority")
        },
    )?;
    o.list(
        "retry_host_predicate",
        take(&mut p.retry_host_predicate),
        |mut r: RetryHostPredicate| {
            let mut o = Obj::default();
            o.str("name", take(&mut r.name));
            match r.config_type.take() {
                Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(a)) => {
                    o.val("typed_config", Some(any(a)?));
                }
                other => r.config_type = other,
            }
            o.done(r, "RetryHostPredicate")
        },
    )?;
    let attempts = take(&mut p.host_selection_retry_max_attempts);
    if attempts != 0 {
        // int64 is a string in proto3 JSON.
        o.val(
            "host_selection_retry_max_attempts",
            Some(Value::String(attempts.to_string())),
        );
    }
    let codes = take(&mut p.retriable_status_codes);
    if !codes.is_empty() {
        o.val("retriable_status_codes", Some(codes.into()));
    }
    o.msg(
        "retry_back_off",
        p.retry_back_off.take(),
        |mut b: RetryBackOff| {
            let mut o = Obj::default();
            o.msg("base_interval", b.base_interval.take(), duration)?;
            o.msg("max_interval", b.max_interval.take(), duration)?;
            o.done(b, "RetryBackOff")
        },
    )?;
    o.done(p, "RetryPolicy")
}

fn hash_policy(mut h: HashPolicy) -> R {
    let mut o = Obj::default();
    match h.policy_specifier.take() {
        Some(PolicySpecifier::Header(mut v)) => {
            let mut inner = Obj::default();
            inner.str("header_name", take(&mut v.header_name));
            o.val("header", Some(inner.done(v, "HashPolicy.Header")?));
        }
        Some(PolicySpecifier::Cookie(mut v)) => {
            let mut inner = Obj::default();
            inner.str("name", take(&mut v.name));
            inner.msg("ttl", v.ttl.take(), duration)?;
            inner.str("path", take(&mut v.path));
            o.val("cookie", Some(inner.done(v, "HashPolicy.Cookie")?));
        }
        Some(PolicySpecifier::ConnectionProperties(mut v)) => {
            let mut inner = Obj::default();
            inner.bool("source_ip", take(&mut v.source_ip));
            o.val(
                "connection_properties",
                Some(inner.done(v, "HashPolicy.ConnectionProperties")?),
            );
        }
        Some(PolicySpecifier::QueryParameter(mut v)) => {
            let mut inner = Obj::default();
            inner.str("name", take(&mut v.name));
            o.val(
                "query_parameter",
                Some(inner.done(v, "HashPolicy.QueryParameter")?),
            );
        }
        other => h.policy_specifier = other,
    }
    o.bool("terminal", take(&mut h.terminal));
    o.done(h, "HashPolicy")
}

fn mirror_policy(mut m: RequestMirrorPolicy) -> R {
    let mut o = Obj::default();
    o.str("cluster", take(&mut m.cluster));
    o.msg(
        "runtime_fraction",
        m.runtime_fraction.take(),
        runtime_fraction,
    )?;
    o.msg("trace_sampled", m.trace_sampled.take(), wrapped_bool)?;
    o.done(m, "RequestMirrorPolicy")
}

fn header_ops(
    o: &mut Obj,
    request_add: Vec<HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<HeaderValueOption>,
    response_remove: Vec<String>,
) -> Result<(), super::RenderError> {
    o.list("request_headers_to_add", request_add, header_value_option)?;
    o.strs("request_headers_to_remove", request_remove);
    o.list("response_headers_to_add", response_add, header_value_option)?;
    o.strs("response_headers_to_remove", response_remove);
    Ok(())
}

fn cluster_weight_json(mut c: ClusterWeight) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut c.name));
    o.msg("weight", c.weight.take(), wrapped_u32)?;
    header_ops(
        &mut o,
        take(&mut c.request_headers_to_add),
        take(&mut c.request_headers_to_remove),
        take(&mut c.response_headers_to_add),
        take(&mut c.response_headers_to_remove),
    )?;
    match c.host_rewrite_specifier.take() {
        Some(cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h)) => {
            o.str("host_rewrite_literal", h);
        }
        other => c.host_rewrite_specifier = other,
    }
    o.done(c, "ClusterWeight")
}

#[allow(deprecated)]
fn route_action(mut a: RouteAction) -> R {
    let mut o = Obj::default();
    match a.cluster_specifier.take() {
        Some(ClusterSpecifier::Cluster(c)) => {
            o.str("cluster", c);
        }
        Some(ClusterSpecifier::WeightedClusters(mut w)) => {
            let mut inner = Obj::default();
            inner.list("clusters", take(&mut w.clusters), cluster_weight_json)?;
            o.val(
                "weighted_clusters",
                Some(inner.done::<WeightedCluster>(w, "WeightedCluster")?),
            );
        }
        other => a.cluster_specifier = other,
    }
    o.msg("timeout", a.timeout.take(), duration)?;
    o.msg("retry_policy", a.retry_policy.take(), retry_policy_json)?;
    o.list("hash_policy", take(&mut a.hash_policy), hash_policy)?;
    o.list(
        "request_mirror_policies",
        take(&mut a.request_mirror_policies),
        mirror_policy,
    )?;
    o.str("prefix_rewrite", take(&mut a.prefix_rewrite));
    o.msg(
        "regex_rewrite",
        a.regex_rewrite.take(),
        |mut r: RegexMatchAndSubstitute| {
            let mut o = Obj::default();
            o.msg("pattern", r.pattern.take(), regex_matcher)?;
            o.str("substitution", take(&mut r.substitution));
            o.done(r, "RegexMatchAndSubstitute")
        },
    )?;
    match a.host_rewrite_specifier.take() {
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => {
            o.str("host_rewrite_literal", h);
        }
        other => a.host_rewrite_specifier = other,
    }
    o.msg("max_grpc_timeout", a.max_grpc_timeout.take(), duration)?;
    o.done(a, "RouteAction")
}

fn redirect_action(mut r: RedirectAction) -> R {
    let mut o = Obj::default();
    o.str("host_redirect", take(&mut r.host_redirect));
    match r.path_rewrite_specifier.take() {
        Some(PathRewriteSpecifier::PathRedirect(p)) => {
            o.val("path_redirect", Some(Value::String(p)));
        }
        other => r.path_rewrite_specifier = other,
    }
    match r.scheme_rewrite_specifier.take() {
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => {
            o.val("scheme_redirect", Some(Value::String(s)));
        }
        other => r.scheme_rewrite_specifier = other,
    }
    let port = take(&mut r.port_redirect);
    if port != 0 {
        o.val("port_redirect", Some(Value::from(port)));
    }
    o.val(
        "response_code",
        enum_name(
            "RedirectResponseCode",
            take(&mut r.response_code),
            RedirectResponseCode::as_str_name,
        )?,
    );
    o.done(r, "RedirectAction")
}

fn data_source(mut d: DataSource) -> R {
    let mut o = Obj::default();
    match d.specifier.take() {
        Some(data_source::Specifier::InlineString(s)) => {
            o.val("inline_string", Some(Value::String(s)));
        }
        Some(data_source::Specifier::InlineBytes(b)) => {
            o.val("inline_bytes", Some(Value::String(base64(&b))));
        }
        other => d.specifier = other,
    }
    o.done(d, "DataSource")
}

/// Standard base64 with padding (proto3 JSON's form of `bytes`).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pb_value(v: PbValue) -> Value {
    match v.kind {
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => Value::from(n),
        Some(Kind::StructValue(s)) => pb_struct(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(pb_value).collect()),
        Some(Kind::NullValue(_)) | None => Value::Null,
    }
}

pub(super) fn pb_struct(s: Struct) -> Value {
    let mut fields: Vec<_> = s.fields.into_iter().collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(fields.into_iter().map(|(k, v)| (k, pb_value(v))).collect())
}

/// Renders `Metadata`: its `filter_metadata` structs, keys sorted.
pub(super) fn metadata(mut m: Metadata) -> R {
    let mut o = Obj::default();
    let mut filters: Vec<_> = take(&mut m.filter_metadata).into_iter().collect();
    filters.sort_by(|a, b| a.0.cmp(&b.0));
    if !filters.is_empty() {
        let map: Map<String, Value> = filters
            .into_iter()
            .map(|(k, v)| (k, pb_struct(v)))
            .collect();
        o.val("filter_metadata", Some(Value::Object(map)));
    }
    o.done(m, "Metadata")
}

fn route_json(mut r: Route) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut r.name));
    o.msg("match", r.r#match.take(), route_match)?;
    match r.action.take() {
        Some(Action::Route(a)) => {
            o.msg("route", Some(a), route_action)?;
        }
        Some(Action::Redirect(a)) => {
            o.msg("redirect", Some(a), redirect_action)?;
        }
        Some(Action::DirectResponse(mut d)) => {
            let mut inner = Obj::default();
            inner.val("status", Some(Value::from(take(&mut d.status))));
            inner.msg("body", d.body.take(), data_source)?;
            o.val(
                "direct_response",
                Some(inner.done::<DirectResponseAction>(d, "DirectResponseAction")?),
            );
        }
        other => r.action = other,
    }
    o.msg("metadata", r.metadata.take(), metadata)?;
    o.msg("decorator", r.decorator.take(), |mut d: Decorator| {
        let mut o = Obj::default();
        o.str("operation", take(&mut d.operation));
        o.done(d, "Decorator")
    })?;
    o.val(
        "typed_per_filter_config",
        any_map(take(&mut r.typed_per_filter_config))?,
    );
    header_ops(
        &mut o,
        take(&mut r.request_headers_to_add),
        take(&mut r.request_headers_to_remove),
        take(&mut r.response_headers_to_add),
        take(&mut r.response_headers_to_remove),
    )?;
    o.str("stat_prefix", take(&mut r.stat_prefix));
    o.done(r, "Route")
}

fn virtual_host(mut v: VirtualHost) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut v.name));
    o.strs("domains", take(&mut v.domains));
    o.list("routes", take(&mut v.routes), route_json)?;
    o.bool(
        "include_request_attempt_count",
        take(&mut v.include_request_attempt_count),
    );
    o.done(v, "VirtualHost")
}

/// Renders a route configuration.
pub fn route_configuration(mut m: RouteConfiguration) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut m.name));
    o.list("virtual_hosts", take(&mut m.virtual_hosts), virtual_host)?;
    o.msg(
        "validate_clusters",
        m.validate_clusters.take(),
        wrapped_bool,
    )?;
    o.msg(
        "max_direct_response_body_size_bytes",
        m.max_direct_response_body_size_bytes.take(),
        wrapped_u32,
    )?;
    o.done(m, "RouteConfiguration")
}

/// Renders Envoy's fault filter config (per route, or empty in the filter chain).
pub(super) fn http_fault(mut f: HttpFault) -> R {
    let mut o = Obj::default();
    o.msg("delay", f.delay.take(), |mut d: FaultDelay| {
        let mut o = Obj::default();
        match d.fault_delay_secifier.take() {
            Some(FaultDelaySecifier::FixedDelay(t)) => {
                o.msg("fixed_delay", Some(t), duration)?;
            }
            other => d.fault_delay_secifier = other,
        }
        o.msg("percentage", d.percentage.take(), fractional_percent)?;
        o.done(d, "FaultDelay")
    })?;
    o.msg("abort", f.abort.take(), |mut a: FaultAbort| {
        let mut o = Obj::default();
        match a.error_type.take() {
            Some(ErrorType::HttpStatus(s)) => {
                o.val("http_status", Some(Value::from(s)));
            }
            Some(ErrorType::GrpcStatus(s)) => {
                o.val("grpc_status", Some(Value::from(s)));
            }
            other => a.error_type = other,
        }
        o.msg("percentage", a.percentage.take(), fractional_percent)?;
        o.done(a, "FaultAbort")
    })?;
    o.done(f, "HTTPFault")
}

/// Renders a per-route CORS policy.
pub(super) fn cors_policy(mut c: CorsPolicy) -> R {
    let mut o = Obj::default();
    o.list(
        "allow_origin_string_match",
        take(&mut c.allow_origin_string_match),
        string_matcher,
    )?;
    o.str("allow_methods", take(&mut c.allow_methods));
    o.str("allow_headers", take(&mut c.allow_headers));
    o.str("expose_headers", take(&mut c.expose_headers));
    o.str("max_age", take(&mut c.max_age));
    o.msg(
        "allow_credentials",
        c.allow_credentials.take(),
        wrapped_bool,
    )?;
    o.msg("filter_enabled", c.filter_enabled.take(), runtime_fraction)?;
    o.msg(
        "forward_not_matching_preflights",
        c.forward_not_matching_preflights.take(),
        wrapped_bool,
    )?;
    o.done(c, "CorsPolicy")
}

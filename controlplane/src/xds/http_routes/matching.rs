//! `HTTPMatchRequest` → Envoy `RouteMatch`, as istiod's `TranslateRouteMatch`: the URI as
//! path/prefix/safe_regex (prefix `/` when absent), `case_sensitive` from `ignoreUriCase`,
//! headers and `withoutHeaders` sorted by name (`{}` or regex `*` is a presence match;
//! `withoutHeaders` inverted and treating a missing header as empty), then `:method`,
//! `:authority`, `:scheme`, then query parameters (by name).

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    route_match::PathSpecifier, HeaderMatcher, QueryParameterMatcher, Route, RouteMatch,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher,
};

use crate::config::istio::types::{Matcher, StringMatch};
use crate::config::istio::virtual_service::HttpMatchRequest;
use crate::xds::build;

/// An Envoy string matcher for an Istio one (`None` for an empty `{}`).
pub fn string_matcher(m: &StringMatch) -> Option<StringMatcher> {
    let pattern = match m.matcher()? {
        Matcher::Exact(v) => MatchPattern::Exact(v.to_string()),
        Matcher::Prefix(v) => MatchPattern::Prefix(v.to_string()),
        Matcher::Regex(v) => MatchPattern::SafeRegex(regex(v)),
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    })
}

/// A safe (RE2) regex matcher.
pub fn regex(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.to_string(),
        ..Default::default()
    }
}

/// Istio's `canBeConvertedToPresentMatch`: no match at all, or the regex `*`.
fn is_presence(m: &StringMatch) -> bool {
    match m.matcher() {
        None => true,
        Some(Matcher::Regex(r)) => r == "*",
        Some(_) => false,
    }
}

fn header(name: &str, m: &StringMatch) -> HeaderMatcher {
    let specifier = if is_presence(m) {
        Some(HeaderMatchSpecifier::PresentMatch(true))
    } else {
        string_matcher(m).map(HeaderMatchSpecifier::StringMatch)
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: specifier,
        ..Default::default()
    }
}

fn query(name: &str, m: &StringMatch) -> QueryParameterMatcher {
    let specifier = if is_presence(m) {
        Some(QueryParameterMatchSpecifier::PresentMatch(true))
    } else {
        string_matcher(m).map(QueryParameterMatchSpecifier::StringMatch)
    };
    QueryParameterMatcher {
        name: name.to_string(),
        query_parameter_match_specifier: specifier,
    }
}

/// The route match of an Istio match (`None`: every request, prefix `/`).
pub fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let mut out = RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
        ..Default::default()
    };
    let Some(m) = m else {
        return out;
    };
    // JWT claims (`@request.auth.claims...`) are gateway-only; validation keeps them out of
    // sidecar VirtualServices.
    for (name, sm) in &m.headers {
        out.headers.push(header(name, sm));
    }
    for (name, sm) in &m.without_headers {
        let mut h = header(name, sm);
        h.invert_match = true;
        h.treat_missing_header_as_empty = !is_presence(sm);
        out.headers.push(h);
    }
    out.headers.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(uri) = m.uri.as_ref().and_then(StringMatch::matcher) {
        out.path_specifier = Some(match uri {
            Matcher::Exact(p) => PathSpecifier::Path(p.to_string()),
            Matcher::Prefix(p) => PathSpecifier::Prefix(p.to_string()),
            Matcher::Regex(r) => PathSpecifier::SafeRegex(regex(r)),
        });
    }
    out.case_sensitive = build::bool_value(!m.ignore_uri_case);
    for (name, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            out.headers.push(header(name, sm));
        }
    }
    for (name, sm) in &m.query_params {
        out.query_parameters.push(query(name, sm));
    }
    out
}

/// Istio's `IsCatchAllRoute`: prefix `/` or regex `.*` with no header or query match.
pub fn is_catch_all(r: &Route) -> bool {
    let Some(m) = &r.r#match else {
        return false;
    };
    let all_paths = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => p == "/",
        Some(PathSpecifier::PathSeparatedPrefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(re)) => re.regex == ".*",
        _ => false,
    };
    all_paths
        && m.headers.is_empty()
        && m.query_parameters.is_empty()
        && m.dynamic_metadata.is_empty()
}

/// The path part of a route's trace operation (Istio's `GetRouteOperation`).
pub fn operation_path(m: Option<&RouteMatch>) -> String {
    match m.and_then(|m| m.path_specifier.as_ref()) {
        Some(PathSpecifier::Prefix(p)) => format!("{p}*"),
        Some(PathSpecifier::Path(p)) => p.clone(),
        Some(PathSpecifier::SafeRegex(r)) => r.regex.clone(),
        _ => "/*".to_string(),
    }
}

//! Route actions as istiod writes them: forwarding to one cluster or weighted clusters
//! (`applyHTTPRouteDestination`), redirects (`ApplyRedirect`), direct responses
//! (`ApplyDirectResponse`), mirrors, rewrites and consistent-hash policies.

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
use envoy_types::pb::envoy::config::route::v3::{
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    route::Action,
    route_action::{
        hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter},
        ClusterSpecifier, HashPolicy, HostRewriteSpecifier, RequestMirrorPolicy,
    },
    weighted_cluster::{cluster_weight, ClusterWeight},
    DirectResponseAction, RedirectAction, Route, RouteAction, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;

use super::matching::regex;
use super::policy::{
    duration, header_ops, percent_of_hundred, percent_of_million, retry_policy, runtime_fraction,
};
use super::RouteCtx;
use crate::config::istio::destination_rule::ConsistentHashLb;
use crate::config::istio::types::Destination;
use crate::config::istio::virtual_service::{
    HttpDirectResponse, HttpMirrorPolicy, HttpRedirect, HttpRoute, HttpRouteDestination,
    RedirectPortSelection,
};
use crate::xds::build;

/// Istio's `MirrorPercent`: `mirrorPercentage` (0: no mirror), the deprecated integer
/// `mirrorPercent`, else 100%.
fn mirror_percent(r: &HttpRoute) -> Option<envoy_types::pb::envoy::r#type::v3::FractionalPercent> {
    if let Some(p) = r.mirror_percentage {
        return (p.value > 0.0).then(|| percent_of_million(p));
    }
    if let Some(p) = r.mirror_percent {
        return (p > 0).then(|| percent_of_hundred(p));
    }
    Some(percent_of_hundred(100))
}

fn mirror_policy_percent(
    m: &HttpMirrorPolicy,
) -> Option<envoy_types::pb::envoy::r#type::v3::FractionalPercent> {
    match m.percentage {
        Some(p) => (p.value > 0.0).then(|| percent_of_million(p)),
        None => Some(percent_of_hundred(100)),
    }
}

fn mirror(
    ctx: &RouteCtx<'_>,
    d: &Destination,
    p: envoy_types::pb::envoy::r#type::v3::FractionalPercent,
) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster: ctx.destination_cluster(d),
        runtime_fraction: Some(runtime_fraction(p)),
        trace_sampled: build::bool_value(false),
        ..Default::default()
    }
}

/// An Envoy hash policy for a DestinationRule's consistent hash (Istio's
/// `consistentHashToHashPolicy`).
pub fn hash_policy(h: &ConsistentHashLb) -> Option<HashPolicy> {
    let specifier = if let Some(name) = &h.http_header_name {
        PolicySpecifier::Header(Header {
            header_name: name.clone(),
            ..Default::default()
        })
    } else if let Some(c) = &h.http_cookie {
        PolicySpecifier::Cookie(Cookie {
            name: c.name.clone(),
            ttl: c.ttl.map(duration),
            path: c.path.clone(),
            ..Default::default()
        })
    } else if let Some(ip) = h.use_source_ip {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: ip })
    } else if let Some(q) = &h.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter { name: q.clone() })
    } else {
        return None;
    };
    Some(HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    })
}

/// `applyHTTPRouteDestination`: forwards to the route's destinations. The timeout (none by
/// default) is also the gRPC timeout cap (`max_grpc_timeout`, the field istiod still sets).
#[allow(deprecated)]
pub fn forward(ctx: &RouteCtx<'_>, out: &mut Route, r: &HttpRoute, authority: Option<String>) {
    let mut action = RouteAction::default();
    let timeout = r.timeout.map(duration).unwrap_or_default();
    action.max_grpc_timeout = Some(timeout);
    action.timeout = Some(timeout);
    let mut authority = authority;
    if let Some(rw) = &r.rewrite {
        if let Some(re) = &rw.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(&re.pattern)),
                substitution: re.rewrite.clone(),
            });
        } else if !rw.uri.is_empty() {
            action.prefix_rewrite = rw.uri.clone();
        }
        if !rw.authority.is_empty() {
            authority = Some(rw.authority.clone());
        }
    }
    if let Some(a) = authority {
        action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(a));
    }
    if let Some(m) = &r.mirror {
        if let Some(p) = mirror_percent(r) {
            action.request_mirror_policies.push(mirror(ctx, m, p));
        }
    }
    for m in &r.mirrors {
        if let (Some(p), Some(d)) = (mirror_policy_percent(m), &m.destination) {
            action.request_mirror_policies.push(mirror(ctx, d, p));
        }
    }
    let dests = r.route.as_deref().unwrap_or_default();
    let mut consistent_hash = false;
    if let [only] = dests {
        let hash = ctx.consistent_hash(only);
        consistent_hash = hash.is_some();
        single(ctx, out, &mut action, only, hash);
    } else {
        let clusters = dests
            .iter()
            .filter(|d| d.weight != 0)
            .map(|d| weighted(ctx, &mut action, d))
            .collect();
        action.cluster_specifier = Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters,
            ..Default::default()
        }));
    }
    action.retry_policy = retry_policy(r.retries.as_ref(), consistent_hash);
    out.action = Some(Action::Route(action));
}

fn single(
    ctx: &RouteCtx<'_>,
    out: &mut Route,
    action: &mut RouteAction,
    d: &HttpRouteDestination,
    hash: Option<ConsistentHashLb>,
) {
    let cluster = d
        .destination
        .as_ref()
        .map(|dst| ctx.destination_cluster(dst))
        .unwrap_or_default();
    action.cluster_specifier = Some(ClusterSpecifier::Cluster(cluster));
    if let Some(h) = &d.headers {
        let ops = header_ops(h);
        out.request_headers_to_add.extend(ops.request_add);
        out.request_headers_to_remove.extend(ops.request_remove);
        out.response_headers_to_add.extend(ops.response_add);
        out.response_headers_to_remove.extend(ops.response_remove);
        if let Some(a) = ops.authority {
            if action.host_rewrite_specifier.is_none() {
                action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(a));
            }
        }
    }
    action
        .hash_policy
        .extend(hash.as_ref().and_then(hash_policy));
}

fn weighted(
    ctx: &RouteCtx<'_>,
    action: &mut RouteAction,
    d: &HttpRouteDestination,
) -> ClusterWeight {
    let mut cw = ClusterWeight {
        name: d
            .destination
            .as_ref()
            .map(|dst| ctx.destination_cluster(dst))
            .unwrap_or_default(),
        weight: build::u32_value(u32::try_from(d.weight).unwrap_or(0)),
        ..Default::default()
    };
    if let Some(h) = &d.headers {
        let ops = header_ops(h);
        cw.request_headers_to_add = ops.request_add;
        cw.request_headers_to_remove = ops.request_remove;
        cw.response_headers_to_add = ops.response_add;
        cw.response_headers_to_remove = ops.response_remove;
        cw.host_rewrite_specifier = ops
            .authority
            .map(cluster_weight::HostRewriteSpecifier::HostRewriteLiteral);
    }
    action
        .hash_policy
        .extend(ctx.consistent_hash(d).as_ref().and_then(hash_policy));
    cw
}

/// `ApplyRedirect`; `false` for a redirect code Envoy cannot send (the route is then left out).
pub fn redirect(out: &mut Route, r: &HttpRedirect, port: u16) -> bool {
    let code = match r.redirect_code.unwrap_or(0) {
        0 | 301 => RedirectResponseCode::MovedPermanently,
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => return false,
    };
    let mut action = RedirectAction {
        host_redirect: r.authority.clone(),
        response_code: code as i32,
        ..Default::default()
    };
    if !r.uri.is_empty() {
        action.path_rewrite_specifier = Some(PathRewriteSpecifier::PathRedirect(r.uri.clone()));
    }
    if !r.scheme.is_empty() {
        action.scheme_rewrite_specifier =
            Some(SchemeRewriteSpecifier::SchemeRedirect(r.scheme.clone()));
    }
    let port_redirect = match (r.port, r.derive_port) {
        (Some(p), _) => Some(p),
        (None, Some(RedirectPortSelection::FromRequestPort)) => Some(u32::from(port)),
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => Some(0),
        (None, None) => None,
    };
    if let Some(mut p) = port_redirect {
        let scheme = if r.scheme.is_empty() {
            "http"
        } else {
            &r.scheme
        };
        if (p == 80 && scheme == "http") || (p == 443 && scheme == "https") {
            p = 0;
        }
        action.port_redirect = p;
    }
    out.action = Some(Action::Redirect(action));
    true
}

/// `ApplyDirectResponse`.
pub fn direct_response(out: &mut Route, d: &HttpDirectResponse) {
    let body = d.body.as_ref().and_then(|b| {
        let specifier = if let Some(s) = &b.string {
            Specifier::InlineString(s.clone())
        } else {
            Specifier::InlineBytes(base64_decode(b.bytes.as_deref()?)?)
        };
        Some(DataSource {
            specifier: Some(specifier),
            ..Default::default()
        })
    });
    out.action = Some(Action::DirectResponse(DirectResponseAction {
        status: d.status.unwrap_or(0),
        body,
        ..Default::default()
    }));
}

/// Decodes base64 as protobuf's JSON form accepts it (standard or URL-safe alphabet, padding
/// optional); `None` when it is not base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in text.trim_end_matches('=').bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

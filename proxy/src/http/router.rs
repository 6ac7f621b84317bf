//! `envoy.filters.http.router`: acts on the matched route. A redirect or a direct response is
//! answered locally; a forward resolves the (weighted) cluster, the timeouts, the retry
//! policy and the consistent-hash key, and checks that the cluster can take the request
//! (`NC`, `UH`). Path and authority rewrites are computed here and applied to each attempt's
//! upstream request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use xds_client::model::{
    DirectResponse, ForwardAction, GrpcTimeout, HashPolicy, HashSource, PathMatch, PathRedirect,
    RedirectAction, RouteAction,
};

use super::ctx::{Forward, MatchedRoute};
use super::reply::{DirectReply, LocalReply};
use super::retry::RetryState;
use super::route::RequestInfo;
use crate::snapshot::Snapshot;
use crate::upstream::lb::hash64;

/// The router's decision.
#[derive(Debug)]
pub enum Decision {
    /// Forward with these settings and retry state.
    Forward(Box<(Forward, RetryState)>),
    /// Answer locally.
    Reply(LocalReply),
}

/// Decide for a request that matched `route`.
pub fn decide(
    route: &MatchedRoute,
    info: &RequestInfo<'_>,
    snapshot: &Snapshot,
    peer: Option<SocketAddr>,
) -> Decision {
    match &route.entry.route.action {
        RouteAction::Redirect(r) => {
            Decision::Reply(redirect(r, &route.entry.route.matcher.path, info))
        }
        RouteAction::DirectResponse(d) => Decision::Reply(direct(d)),
        RouteAction::Forward(action) => forward(route, action, info, snapshot, peer),
    }
}

fn forward(
    route: &MatchedRoute,
    action: &ForwardAction,
    info: &RequestInfo<'_>,
    snapshot: &Snapshot,
    peer: Option<SocketAddr>,
) -> Decision {
    let target = route.target();
    let cluster_name = target.cluster.clone().unwrap_or_default();
    let Some(cluster) = snapshot.cluster(&cluster_name).cloned() else {
        return Decision::Reply(LocalReply::NoCluster(action.cluster_not_found_status));
    };
    if !cluster.has_healthy_endpoint() {
        return Decision::Reply(LocalReply::NoHealthyUpstream);
    }
    let policy = route.entry.retry_policy.clone();
    let request_allowed = policy.as_ref().is_none_or(|p| {
        p.retriable_request_headers.is_empty()
            || p.retriable_request_headers
                .iter()
                .any(|m| m.matches(info.header(&m.name).as_deref()))
    });
    let per_try_timeout = policy.as_ref().and_then(|p| p.per_try_timeout);
    let (hash, set_cookie) = request_hash(&action.hash_policy, info, peer);
    let timeout = match (action.grpc_timeout, info.is_grpc) {
        (Some(g), true) => grpc_timeout(g, info).or(action.timeout),
        _ => action.timeout,
    };
    let rewritten_path = rewrite_path(action, &route.entry.route.matcher.path, info);
    let forward = Forward {
        cluster_name,
        cluster,
        timeout,
        per_try_timeout,
        idle_timeout: action.idle_timeout,
        hash,
        set_cookie,
        request_permit: None,
        connection_permit: None,
        host: None,
        active: None,
        close_connection: false,
        rewritten_path,
    };
    Decision::Forward(Box::new((
        forward,
        RetryState::new(policy, request_allowed),
    )))
}

/// The timeout a gRPC request asks for (`grpc-timeout`), bounded and offset.
fn grpc_timeout(g: GrpcTimeout, info: &RequestInfo<'_>) -> Option<Duration> {
    let value = info.header("grpc-timeout")?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let asked = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    let asked = match g.max {
        Some(max) => asked.min(max),
        None => asked,
    };
    let asked = asked.saturating_sub(g.offset);
    // A zero timeout means none, as for the route timeout.
    (!asked.is_zero()).then_some(asked)
}

/// The request's consistent-hash key from the route's hash policies (Envoy combines several
/// by rotate-and-xor; a terminal policy that produced a key stops). A cookie policy with a
/// TTL whose cookie is absent makes one up, to be set on the response.
fn request_hash(
    policies: &[HashPolicy],
    info: &RequestInfo<'_>,
    peer: Option<SocketAddr>,
) -> (Option<u64>, Option<String>) {
    let mut hash: Option<u64> = None;
    let mut set_cookie = None;
    for policy in policies {
        let value: Option<String> = match &policy.source {
            HashSource::Header(name) => info.header(name).map(|v| v.into_owned()),
            HashSource::SourceIp => peer.map(|p| p.ip().to_string()),
            HashSource::QueryParameter(name) => info.query().and_then(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.to_string())
            }),
            HashSource::Cookie { name, ttl, path } => match cookie(info, name) {
                Some(v) => Some(v),
                None => ttl.map(|ttl| {
                    let value = format!(
                        "{:016x}",
                        hash64(format!("{peer:?}/{}", info.path_and_query).as_bytes())
                    );
                    let mut header = format!("{name}=\"{value}\"; Max-Age={}", ttl.as_secs());
                    if !path.is_empty() {
                        header.push_str(&format!("; Path={path}"));
                    }
                    header.push_str("; HttpOnly");
                    set_cookie = Some(header);
                    value
                }),
            },
        };
        if let Some(value) = value {
            let h = hash64(value.as_bytes());
            hash = Some(match hash {
                None => h,
                Some(prev) => prev.rotate_left(1) ^ h,
            });
            if policy.terminal {
                break;
            }
        }
    }
    (hash, set_cookie)
}

/// A cookie's value from the request's `cookie` headers.
fn cookie(info: &RequestInfo<'_>, name: &str) -> Option<String> {
    info.req
        .headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// The rewritten `:path` (query kept), if the route rewrites it.
fn rewrite_path(
    action: &ForwardAction,
    matched: &PathMatch,
    info: &RequestInfo<'_>,
) -> Option<String> {
    if let Some(prefix) = &action.prefix_rewrite {
        return Some(replace_prefix(matched, info, prefix));
    }
    let rewrite = action.regex_rewrite.as_ref()?;
    let path = info.path();
    let replaced = rewrite
        .pattern
        .compiled()
        .replace_all(path, rewrite.substitution.as_str());
    Some(match info.query() {
        Some(q) => format!("{replaced}?{q}"),
        None => replaced.into_owned(),
    })
}

/// Replace the matched prefix (or the whole exact path) with `with`.
fn replace_prefix(matched: &PathMatch, info: &RequestInfo<'_>, with: &str) -> String {
    let pq = info.path_and_query;
    match matched {
        PathMatch::Prefix(p) | PathMatch::PathSeparatedPrefix(p) => {
            let rest = pq.get(p.len()..).unwrap_or("");
            if matches!(matched, PathMatch::PathSeparatedPrefix(_))
                && with.ends_with('/')
                && rest.starts_with('/')
            {
                format!("{with}{}", &rest[1..])
            } else {
                format!("{with}{rest}")
            }
        }
        PathMatch::Exact(_) | PathMatch::Regex(_) => match info.query() {
            Some(q) => format!("{with}?{q}"),
            None => with.to_string(),
        },
    }
}

/// The `Location` of a redirect.
fn redirect(r: &RedirectAction, matched: &PathMatch, info: &RequestInfo<'_>) -> LocalReply {
    let scheme = r.scheme.as_deref().unwrap_or(info.scheme);
    let (req_host, req_port) = split_host_port(info.authority);
    let host = r.host.as_deref().unwrap_or(req_host);
    let port = match r.port {
        Some(p) => Some(p.to_string()),
        None if r.host.is_some() => None,
        None => req_port.map(str::to_string),
    };
    // Default ports are left out, as Envoy does.
    let port =
        port.filter(|p| !((scheme == "http" && p == "80") || (scheme == "https" && p == "443")));
    let mut path_and_query = match &r.path {
        PathRedirect::Keep => info.path_and_query.to_string(),
        PathRedirect::Path(p) if p.contains('?') => p.clone(),
        PathRedirect::Path(p) => match info.query() {
            Some(q) => format!("{p}?{q}"),
            None => p.clone(),
        },
        PathRedirect::Prefix(p) => replace_prefix(matched, info, p),
        PathRedirect::Regex(rw) => {
            let replaced = rw
                .pattern
                .compiled()
                .replace_all(info.path(), rw.substitution.as_str())
                .into_owned();
            match info.query() {
                Some(q) => format!("{replaced}?{q}"),
                None => replaced,
            }
        }
    };
    if r.strip_query {
        if let Some((p, _)) = path_and_query.split_once('?') {
            path_and_query = p.to_string();
        }
    }
    let location = match port {
        Some(port) => format!("{scheme}://{host}:{port}{path_and_query}"),
        None => format!("{scheme}://{host}{path_and_query}"),
    };
    LocalReply::Direct(Arc::new(DirectReply {
        status: r.status,
        headers: vec![("location".into(), location)],
        body: Bytes::new(),
        details: "direct_response",
    }))
}

/// Host and port of an authority (IPv6 literals in brackets kept whole).
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.rsplit_once("]:") {
            Some((h, p)) => (&authority[..h.len() + 1], Some(p)),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

fn direct(d: &DirectResponse) -> LocalReply {
    LocalReply::Direct(Arc::new(DirectReply {
        status: d.status,
        headers: Vec::new(),
        body: d.body.clone().map(Bytes::from).unwrap_or_default(),
        details: "direct_response",
    }))
}

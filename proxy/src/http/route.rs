//! Route selection: the virtual host for an authority (Envoy's domain rules) and the first
//! route whose conditions all hold (path, headers, query parameters, gRPC).
//!
//! A [`RouteTable`] is built once per route configuration and snapshot: domains indexed,
//! each route wrapped in an [`RouteEntry`] that resolves, once, what the filters need per
//! target (per weighted cluster): the effective fault and CORS settings (most specific level
//! wins), the retry policy (the route's or its virtual host's) and the header operations of
//! every level. A request then costs a hash lookup for the domain and a walk of the routes
//! comparing precomputed, pre-lowercased values.

use std::collections::HashMap;
use std::sync::Arc;

use pingora_http::RequestHeader;
use xds_client::model::{
    CorsPolicy, Destination, FaultConfig, HeaderMatcher, HeaderOps, PathMatch,
    QueryParameterMatcher, RetryPolicy, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost,
};

/// What the data path needs of a request to match it against routes.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The request's headers (method, URI, header map).
    pub req: &'a RequestHeader,
    /// `:path` with its query string.
    pub path_and_query: &'a str,
    /// The authority (`Host` or `:authority`).
    pub authority: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `content-type: application/grpc...`.
    pub is_grpc: bool,
}

impl<'a> RequestInfo<'a> {
    /// The path without its query string.
    pub fn path(&self) -> &'a str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query, |(p, _)| p)
    }

    /// The query string (without `?`), if any.
    pub fn query(&self) -> Option<&'a str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }

    /// A header's value as matchers see it: pseudo-headers from the request's fields, other
    /// headers with multiple values joined by `,`. `None` when absent.
    pub fn header(&self, name: &str) -> Option<std::borrow::Cow<'a, str>> {
        use std::borrow::Cow;
        match name {
            ":authority" | "host" if !self.authority.is_empty() => {
                return Some(Cow::Borrowed(self.authority))
            }
            ":method" => return Some(Cow::Borrowed(self.req.method.as_str())),
            ":path" => return Some(Cow::Borrowed(self.path_and_query)),
            ":scheme" => return Some(Cow::Borrowed(self.scheme)),
            _ => {}
        }
        let mut values = self.req.headers.get_all(name).iter();
        let first = values.next()?.to_str().ok()?;
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = format!("{first},{}", second.to_str().unwrap_or(""));
                for v in values {
                    joined.push(',');
                    joined.push_str(v.to_str().unwrap_or(""));
                }
                Some(Cow::Owned(joined))
            }
        }
    }

    /// Whether every header matcher holds.
    pub fn headers_match(&self, matchers: &[HeaderMatcher]) -> bool {
        matchers
            .iter()
            .all(|m| m.matches(self.header(&m.name).as_deref()))
    }
}

/// What a route resolves to for one of its targets (its cluster, or one weighted cluster).
#[derive(Debug)]
pub struct Target {
    /// The cluster (`None` for redirects and direct responses).
    pub cluster: Option<String>,
    /// Upper bound (exclusive) of this target's share of the cumulative weights.
    pub cumulative_weight: u64,
    /// Fault injection settings (weighted cluster, route or virtual host).
    pub fault: Option<Arc<FaultConfig>>,
    /// CORS policy (weighted cluster, route or virtual host).
    pub cors: Option<Arc<CorsPolicy>>,
    /// Authority rewrite (weighted cluster's, else the route's).
    pub host_rewrite: Option<String>,
    /// Header operations, most specific first: weighted cluster, route, virtual host, route
    /// configuration.
    pub headers: Vec<Arc<HeaderOps>>,
}

/// A route with everything the filters need resolved.
#[derive(Debug)]
pub struct RouteEntry {
    /// The route.
    pub route: Route,
    /// The virtual host's name.
    pub vhost_name: String,
    /// Retry policy (the route's, else the virtual host's).
    pub retry_policy: Option<Arc<RetryPolicy>>,
    /// Send `x-envoy-attempt-count` upstream.
    pub include_attempt_count: bool,
    /// Send `x-envoy-attempt-count` downstream.
    pub include_attempt_count_in_response: bool,
    /// One target, or one per weighted cluster.
    pub targets: Vec<Target>,
}

impl RouteEntry {
    fn new(
        route: &Route,
        vh: &VirtualHost,
        vh_headers: &Arc<HeaderOps>,
        rc_headers: &Arc<HeaderOps>,
    ) -> RouteEntry {
        let route_headers = Arc::new(route.headers.clone());
        let pick = |own: Option<&FaultConfig>| {
            own.or(route.filter_configs.fault.as_ref())
                .or(vh.filter_configs.fault.as_ref())
                .map(|f| Arc::new(f.clone()))
        };
        let pick_cors = |own: Option<&CorsPolicy>| {
            own.or(route.filter_configs.cors.as_ref())
                .or(vh.filter_configs.cors.as_ref())
                .map(|c| Arc::new(c.clone()))
        };
        let mut levels = vec![route_headers, vh_headers.clone(), rc_headers.clone()];
        levels.retain(|h| !h.is_empty());
        let (targets, retry_policy) = match &route.action {
            RouteAction::Forward(action) => {
                let targets = match &action.destination {
                    Destination::Cluster(name) => vec![Target {
                        cluster: Some(name.clone()),
                        cumulative_weight: 1,
                        fault: pick(None),
                        cors: pick_cors(None),
                        host_rewrite: action.host_rewrite.clone(),
                        headers: levels.clone(),
                    }],
                    Destination::Weighted(list) => {
                        let mut sum = 0u64;
                        list.iter()
                            .map(|w| {
                                sum += u64::from(w.weight);
                                let mut headers = levels.clone();
                                if !w.headers.is_empty() {
                                    headers.insert(0, Arc::new(w.headers.clone()));
                                }
                                Target {
                                    cluster: Some(w.name.clone()),
                                    cumulative_weight: sum,
                                    fault: pick(w.filter_configs.fault.as_ref()),
                                    cors: pick_cors(w.filter_configs.cors.as_ref()),
                                    host_rewrite: w
                                        .host_rewrite
                                        .clone()
                                        .or_else(|| action.host_rewrite.clone()),
                                    headers,
                                }
                            })
                            .collect()
                    }
                };
                let retry = action
                    .retry_policy
                    .as_ref()
                    .or(vh.retry_policy.as_ref())
                    .map(|p| Arc::new(p.clone()));
                (targets, retry)
            }
            RouteAction::Redirect(_) | RouteAction::DirectResponse(_) => (
                vec![Target {
                    cluster: None,
                    cumulative_weight: 1,
                    fault: pick(None),
                    cors: pick_cors(None),
                    host_rewrite: None,
                    headers: levels,
                }],
                None,
            ),
        };
        RouteEntry {
            route: route.clone(),
            vhost_name: vh.name.clone(),
            retry_policy,
            include_attempt_count: vh.include_attempt_count,
            include_attempt_count_in_response: vh.include_attempt_count_in_response,
            targets,
        }
    }

    /// The target for a uniform random `draw` (weighted choice; 0 for a single target).
    pub fn target_index(&self, draw: u64) -> usize {
        let total = self
            .targets
            .last()
            .map_or(1, |t| t.cumulative_weight)
            .max(1);
        let point = draw % total;
        self.targets
            .iter()
            .position(|t| point < t.cumulative_weight)
            .unwrap_or(0)
    }

    /// Whether the route's conditions hold for `req`.
    pub fn matches(&self, req: &RequestInfo<'_>) -> bool {
        route_matches(&self.route.matcher, req)
    }
}

fn path_matches(m: &RouteMatch, req: &RequestInfo<'_>) -> bool {
    let starts = |s: &str, p: &str| {
        if m.case_sensitive {
            s.starts_with(p)
        } else {
            s.len() >= p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        }
    };
    let equals = |s: &str, p: &str| {
        if m.case_sensitive {
            s == p
        } else {
            s.eq_ignore_ascii_case(p)
        }
    };
    match &m.path {
        PathMatch::Prefix(p) => starts(req.path_and_query, p),
        PathMatch::Exact(p) => equals(req.path(), p),
        PathMatch::Regex(r) => r.is_match(req.path()),
        PathMatch::PathSeparatedPrefix(p) => {
            let path = req.path();
            if p == "/" {
                return true;
            }
            starts(path, p) && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
        }
    }
}

fn route_matches(m: &RouteMatch, req: &RequestInfo<'_>) -> bool {
    path_matches(m, req)
        && (!m.grpc || req.is_grpc)
        && req.headers_match(&m.headers)
        && (m.query_parameters.is_empty() || query_matches(&m.query_parameters, req.query()))
}

/// Percent-decode a query component (`%XX`; anything malformed is kept as is).
fn decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn query_matches(matchers: &[QueryParameterMatcher], query: Option<&str>) -> bool {
    let params: Vec<(&str, &str)> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect();
    matchers.iter().all(|m| {
        // Envoy looks at the first occurrence of a parameter.
        match params.iter().find(|(k, _)| decode(k) == m.name.as_str()) {
            None => false,
            Some((_, v)) => m.value.as_ref().is_none_or(|sm| sm.matches(&decode(v))),
        }
    })
}

/// A route configuration with its domains indexed and routes prepared.
#[derive(Debug)]
pub struct RouteTable {
    config: RouteConfig,
    /// Prepared routes, per virtual host.
    routes: Vec<Vec<Arc<RouteEntry>>>,
    /// Exact domains → virtual host index (the first virtual host listing a domain wins).
    exact: HashMap<String, usize>,
    /// `*SUFFIX` domains, longest suffix first.
    suffixes: Vec<(String, usize)>,
    /// `PREFIX*` domains, longest prefix first.
    prefixes: Vec<(String, usize)>,
    /// The `*` virtual host.
    any: Option<usize>,
}

impl RouteTable {
    /// Index `config`'s domains and prepare its routes.
    pub fn new(config: RouteConfig) -> RouteTable {
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut prefixes = Vec::new();
        let mut any = None;
        let rc_headers = Arc::new(config.headers.clone());
        let mut routes = Vec::with_capacity(config.virtual_hosts.len());
        for (i, vh) in config.virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                let domain = domain.to_ascii_lowercase();
                if domain == "*" {
                    any.get_or_insert(i);
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    suffixes.push((suffix.to_string(), i));
                } else if let Some(prefix) = domain.strip_suffix('*') {
                    prefixes.push((prefix.to_string(), i));
                } else {
                    exact.entry(domain).or_insert(i);
                }
            }
            let vh_headers = Arc::new(vh.headers.clone());
            routes.push(
                vh.routes
                    .iter()
                    .map(|r| Arc::new(RouteEntry::new(r, vh, &vh_headers, &rc_headers)))
                    .collect(),
            );
        }
        // Stable sorts: among equally long wildcards, config order decides.
        suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        RouteTable {
            config,
            routes,
            exact,
            suffixes,
            prefixes,
            any,
        }
    }

    /// The route configuration's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The route configuration.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    fn vhost_index(&self, authority: &str) -> Option<usize> {
        let lowered;
        let host = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            authority
        };
        self.exact
            .get(host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.any)
    }

    /// The virtual host for a request's authority (`Host` or `:authority`, port included as
    /// sent), in Envoy's order: exact domain, then the longest `*suffix`, then the longest
    /// `prefix*`, then `*`. Wildcards match at least one character; case is ignored. Istio
    /// lists both `name` and `name:port` domains, which is how a port in the authority matches.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        self.config.virtual_hosts.get(self.vhost_index(authority)?)
    }

    /// The first route of the request's virtual host whose conditions hold.
    pub fn route(&self, req: &RequestInfo<'_>) -> Option<&Arc<RouteEntry>> {
        let index = self.vhost_index(req.authority)?;
        self.routes[index].iter().find(|r| r.matches(req))
    }
}

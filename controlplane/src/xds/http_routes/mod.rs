//! A VirtualService's HTTP rules → Envoy routes for one listener port, as istiod's
//! `BuildHTTPRoutesForVirtualService` and `translateRoute` write them.
//!
//! - One route per match block of a rule (one for a rule without matches), in order; a match
//!   for another `port`, or for other source labels/namespace (or only for gateways), is left
//!   out; the first catch-all route ends the list.
//! - Route name: the rule's `name`, `.`, the match's `name` (when given).
//! - Action: a redirect, a direct response, or forwarding (one cluster, or weighted clusters
//!   without the zero weights) with the timeout (none by default), Istio's retry policy (its
//!   default when `retries` is absent), mirrors, rewrites and header operations.
//! - `fault` and `corsPolicy` go to `typed_per_filter_config` (`envoy.filters.http.fault`,
//!   `envoy.filters.http.cors`); the metadata names the VirtualService, the decorator the
//!   trace operation.

pub mod action;
pub mod matching;
pub mod policy;

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::route::v3::{route::Action, Decorator, Route};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::util::pack_any;

use crate::config::istio::destination_rule::ConsistentHashLb;
use crate::config::istio::types::Destination;
use crate::config::istio::virtual_service::{HttpMatchRequest, HttpRoute, HttpRouteDestination};
use crate::networking::{VirtualServiceRule, MESH_GATEWAY};
use crate::registry::{MeshSnapshot, ProxyInfo, Service};
use crate::xds::subset_cluster_name;

/// Name of Envoy's fault filter (and of its per-route config).
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// Name of Envoy's CORS filter (and of its per-route config).
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// What translating routes for one proxy and listener port needs.
pub struct RouteCtx<'a> {
    /// The mesh.
    pub mesh: &'a MeshSnapshot,
    /// The proxy the routes are for.
    pub proxy: &'a ProxyInfo,
    /// The listener port (the route configuration's name).
    pub port: u16,
    /// Services by host name.
    pub services: BTreeMap<&'a str, &'a Service>,
}

impl<'a> RouteCtx<'a> {
    /// A context for `proxy` on `port`.
    pub fn new(mesh: &'a MeshSnapshot, proxy: &'a ProxyInfo, port: u16) -> RouteCtx<'a> {
        RouteCtx {
            mesh,
            proxy,
            port,
            services: mesh
                .services
                .values()
                .map(|s| (s.hostname.as_str(), &**s))
                .collect(),
        }
    }

    /// Istio's `GetDestinationCluster`: the destination's port, else the service's only port,
    /// else the listener port.
    pub fn destination_cluster(&self, d: &Destination) -> String {
        let port = match (&d.port, self.services.get(d.host.as_str())) {
            (Some(p), _) => u16::try_from(p.number).unwrap_or(0),
            (None, Some(svc)) if svc.ports.len() == 1 => svc.ports[0].port,
            _ => self.port,
        };
        subset_cluster_name(port, d.subset.as_deref().unwrap_or_default(), &d.host)
    }

    /// The consistent hash the DestinationRule of a destination asks for (Istio's
    /// `hashForHTTPDestination`): of the subset's port settings, the subset, the rule's port
    /// settings, or the rule.
    pub fn consistent_hash(&self, d: &HttpRouteDestination) -> Option<ConsistentHashLb> {
        let dst = d.destination.as_ref()?;
        let ns = self
            .services
            .get(dst.host.as_str())
            .map(|s| s.namespace.as_str())
            .unwrap_or_default();
        let rule = self
            .mesh
            .networking
            .destination_rule(self.proxy, &dst.host, ns)?;
        let policy = rule.traffic_policy.as_ref();
        let port = dst.port.map(|p| p.number);
        let port_hash = |p: Option<&crate::config::istio::destination_rule::TrafficPolicy>| {
            let port = port?;
            p?.port_level_settings
                .iter()
                .flatten()
                .find(|s| s.port.map(|x| x.number) == Some(port))?
                .load_balancer
                .as_ref()?
                .consistent_hash
                .clone()
        };
        let hash = |p: Option<&crate::config::istio::destination_rule::TrafficPolicy>| {
            p?.load_balancer.as_ref()?.consistent_hash.clone()
        };
        let subset_policy = dst
            .subset
            .as_deref()
            .and_then(|s| rule.subset(s))
            .and_then(|s| s.traffic_policy.as_ref());
        port_hash(subset_policy)
            .or_else(|| hash(subset_policy))
            .or_else(|| port_hash(policy))
            .or_else(|| hash(policy))
    }
}

/// Istio's `sourceMatchHTTP`: a match naming gateways applies to sidecars only with `mesh`;
/// otherwise its source labels and namespace must be the proxy's.
fn source_matches(m: &HttpMatchRequest, proxy: &ProxyInfo) -> bool {
    if !m.gateways.is_empty() {
        return m.gateways.iter().any(|g| g == MESH_GATEWAY);
    }
    m.source_labels
        .iter()
        .all(|(k, v)| proxy.labels.get(k) == Some(v))
        && (m.source_namespace.is_empty()
            || proxy.namespace.as_deref() == Some(m.source_namespace.as_str()))
}

fn string_value(s: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(s)),
    }
}

/// `filter_metadata.istio.config`: the VirtualService a route comes from.
fn config_metadata(vs: &VirtualServiceRule) -> Metadata {
    let fields = HashMap::from([("config".to_string(), string_value(vs.config_path()))]);
    Metadata {
        filter_metadata: HashMap::from([("istio".to_string(), Struct { fields })]),
        ..Default::default()
    }
}

/// Istio's `translateRoute`; `None` when the match does not apply to this proxy and port.
fn translate(
    ctx: &RouteCtx<'_>,
    vs: &VirtualServiceRule,
    r: &HttpRoute,
    m: Option<&HttpMatchRequest>,
) -> Option<Route> {
    if let Some(m) = m {
        if m.port.is_some_and(|p| p != 0 && p != u32::from(ctx.port)) {
            return None;
        }
        if !source_matches(m, ctx.proxy) {
            return None;
        }
    }
    let mut name = r.name.clone();
    if let Some(mname) = m.map(|m| &m.name).filter(|n| !n.is_empty()) {
        name = format!("{name}.{mname}");
    }
    let mut out = Route {
        name,
        r#match: Some(matching::route_match(m)),
        metadata: Some(config_metadata(vs)),
        stat_prefix: m.map(|m| m.stat_prefix.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let mut authority = None;
    if let Some(h) = &r.headers {
        let ops = policy::header_ops(h);
        out.request_headers_to_add = ops.request_add;
        out.response_headers_to_add = ops.response_add;
        out.request_headers_to_remove = ops.request_remove;
        out.response_headers_to_remove = ops.response_remove;
        authority = ops.authority;
    }
    if let Some(redirect) = &r.redirect {
        if !action::redirect(&mut out, redirect, ctx.port) {
            return None;
        }
    } else if let Some(d) = &r.direct_response {
        action::direct_response(&mut out, d);
    } else {
        action::forward(ctx, &mut out, r, authority);
    }
    out.decorator = Some(Decorator {
        operation: operation(&out, &vs.name, ctx.port),
        ..Default::default()
    });
    if let Some(f) = r.fault.as_ref().and_then(policy::fault) {
        out.typed_per_filter_config
            .insert(FAULT_FILTER.to_string(), pack_any(f));
    }
    if let Some(c) = &r.cors_policy {
        out.typed_per_filter_config
            .insert(CORS_FILTER.to_string(), pack_any(policy::cors(c)));
    }
    Some(out)
}

/// Istio's `GetRouteOperation`: `HOST:PORT/path` for one cluster, else `VS:PORT/path`.
fn operation(r: &Route, vs_name: &str, port: u16) -> String {
    let path = matching::operation_path(r.r#match.as_ref());
    if let Some(Action::Route(a)) = &r.action {
        if let Some(
            envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier::Cluster(c),
        ) = &a.cluster_specifier
        {
            let parts: Vec<&str> = c.split('|').collect();
            if let [_, p, _, host] = parts.as_slice() {
                return format!("{host}:{p}{path}");
            }
        }
    }
    format!("{vs_name}:{port}{path}")
}

/// The routes of a VirtualService for `ctx`'s proxy and port (empty when none applies).
pub fn virtual_service_routes(ctx: &RouteCtx<'_>, vs: &VirtualServiceRule) -> Vec<Route> {
    let mut out = Vec::new();
    for r in &vs.spec.http {
        let mut catch_all = false;
        if r.matches.is_empty() {
            out.extend(translate(ctx, vs, r, None));
            catch_all = true;
        } else {
            for m in &r.matches {
                if let Some(route) = translate(ctx, vs, r, Some(m)) {
                    let all = matching::is_catch_all(&route);
                    out.push(route);
                    if all {
                        catch_all = true;
                        break;
                    }
                }
            }
        }
        if catch_all {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests;

//! The HTTP filters of a connection manager, called in order on every request.
//!
//! Each filter is built once per snapshot from its validated config (the connection manager's
//! `http_filters`) and shared by every request on the chain; a request's own state lives in
//! its [`RequestCtx`].

use std::sync::Arc;

use pingora_http::RequestHeader;
use xds_client::model::{self, RouteAction};

use super::reply::LocalReply;
use super::route::find_route;
use super::{RequestCtx, RouteDecision};
use crate::authz::{self, Attributes, RbacFilter, RequestAttributes};
use crate::snapshot::{HttpRoutes, Snapshot};
use crate::stats::Counters;

/// What a filter decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the next filter.
    Continue,
    /// Stop and answer with this local reply.
    Reply(LocalReply),
}

/// One HTTP filter.
#[derive(Debug)]
pub enum Filter {
    /// `envoy.filters.http.rbac`: authorization (Istio's AuthorizationPolicy).
    Rbac(Box<RbacFilter>),
    /// `envoy.filters.http.router`: chooses the route and its cluster.
    Router(Router),
}

impl Filter {
    /// Build the filter for one entry of a connection manager's filter list; counters are
    /// named under `http.STAT_PREFIX.`.
    pub fn build(config: &model::HttpFilter, counters: &Counters, stat_prefix: &str) -> Filter {
        match config {
            model::HttpFilter::Rbac(rbac) => Filter::Rbac(Box::new(RbacFilter::new(
                rbac,
                counters,
                &format!("http.{stat_prefix}."),
            ))),
            model::HttpFilter::Router => Filter::Router(Router),
        }
    }

    /// The filter's Envoy name.
    pub fn name(&self) -> &'static str {
        match self {
            Filter::Rbac(_) => "envoy.filters.http.rbac",
            Filter::Router(_) => "envoy.filters.http.router",
        }
    }

    /// Run the filter on a request's headers.
    pub fn on_request(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        routes: &HttpRoutes,
    ) -> Verdict {
        match self {
            Filter::Rbac(rbac) => authorize(rbac, req, ctx),
            Filter::Router(router) => router.on_request(req, ctx, snapshot, routes),
        }
    }
}

/// The RBAC filter on one request: denied requests get 403 `RBAC: access denied`; the
/// shadow and audit results are kept for the access log.
fn authorize(rbac: &RbacFilter, req: &RequestHeader, ctx: &mut RequestCtx) -> Verdict {
    let Some(conn) = ctx.conn.as_deref() else {
        return Verdict::Reply(LocalReply::Internal);
    };
    let source = conn
        .peer_addr
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    let path = req
        .uri
        .path_and_query()
        .map_or_else(|| req.uri.path(), |p| p.as_str());
    let request = RequestAttributes {
        method: req.method.as_str(),
        path,
        authority: ctx.authority.as_deref().unwrap_or(""),
        scheme: conn.scheme(),
        headers: &req.headers,
        remote_ip: authz::remote_ip(&req.headers, source.ip()),
    };
    let attrs = Attributes {
        source,
        destination: conn.destination.address,
        principal: conn.peer_principal(),
        server_name: conn.server_name(),
        request: Some(&request),
    };
    let outcome = rbac.check(&attrs);
    if outcome.log {
        ctx.audit = Some(true);
    } else if ctx.audit.is_none() && rbac.has_log_rules() {
        ctx.audit = Some(false);
    }
    if outcome.shadow.is_some() {
        ctx.shadow = outcome.shadow;
    }
    match outcome.denied_details {
        Some(details) if !outcome.allowed => {
            ctx.details = Some(details.into());
            Verdict::Reply(LocalReply::RbacDenied)
        }
        _ => Verdict::Continue,
    }
}

/// The router: authority → virtual host → first matching route → cluster. It has no settings
/// of its own.
#[derive(Debug)]
pub struct Router;

impl Router {
    fn on_request(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        routes: &HttpRoutes,
    ) -> Verdict {
        let table = match routes {
            HttpRoutes::Inline(table) => Some(table),
            HttpRoutes::Rds(name) => snapshot.route_table(name),
        };
        let Some(table) = table else {
            return Verdict::Reply(LocalReply::NoRoute);
        };
        let authority = ctx.authority.as_deref().unwrap_or("");
        let Some(vh) = table.virtual_host(authority) else {
            return Verdict::Reply(LocalReply::NoRoute);
        };
        let path = req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path(), |p| p.as_str());
        let Some(route) = find_route(vh, path) else {
            return Verdict::Reply(LocalReply::NoRoute);
        };
        let RouteAction::Cluster { cluster, timeout } = &route.action;
        let runtime = snapshot.cluster(cluster).map(Arc::clone);
        ctx.route = Some(RouteDecision {
            route_name: route.name.clone(),
            cluster_name: cluster.clone(),
            cluster: runtime.clone(),
            timeout: *timeout,
        });
        match runtime {
            None => Verdict::Reply(LocalReply::NoCluster),
            Some(c) if !c.has_healthy_endpoint() => Verdict::Reply(LocalReply::NoHealthyUpstream),
            Some(_) => Verdict::Continue,
        }
    }
}

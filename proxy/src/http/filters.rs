//! The HTTP filters of a connection manager, called in their configured order on every
//! request (istiod: RBAC, fault, CORS, router).
//!
//! Each filter is built once per snapshot from its validated config (the connection manager's
//! `http_filters`) and shared by every request on the chain; per-route settings come from the
//! route matched before the filters run (Envoy resolves the route on first use, the same
//! route); a request's own state lives in its [`RequestCtx`].

use std::net::SocketAddr;
use std::time::Duration;

use xds_client::model;

use super::ctx::RequestCtx;
use super::fault::{self, FaultFilter};
use super::reply::LocalReply;
use super::route::RequestInfo;
use super::{cors, router};
use crate::accesslog::ResponseFlag;
use crate::authz::{self, Attributes, RbacFilter, RequestAttributes};
use crate::snapshot::Snapshot;
use crate::stats::Counters;

/// What a filter decided about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the next filter.
    Continue,
    /// Wait, then answer with the reply if any, else go on.
    Delay(Duration, Option<LocalReply>),
    /// Stop and answer with this local reply.
    Reply(LocalReply),
}

/// One HTTP filter.
#[derive(Debug)]
pub enum Filter {
    /// `envoy.filters.http.rbac`: authorization (Istio's AuthorizationPolicy).
    Rbac(Box<RbacFilter>),
    /// `envoy.filters.http.fault`.
    Fault(FaultFilter),
    /// `envoy.filters.http.cors`.
    Cors,
    /// `envoy.filters.http.router`: acts on the route (forward, redirect, direct response).
    Router,
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
            model::HttpFilter::Fault(settings) => Filter::Fault(FaultFilter::new(settings)),
            model::HttpFilter::Cors => Filter::Cors,
            model::HttpFilter::Router => Filter::Router,
        }
    }

    /// The filter's Envoy name.
    pub fn name(&self) -> &'static str {
        match self {
            Filter::Rbac(_) => "envoy.filters.http.rbac",
            Filter::Fault(_) => "envoy.filters.http.fault",
            Filter::Cors => "envoy.filters.http.cors",
            Filter::Router => "envoy.filters.http.router",
        }
    }

    /// Run the filter on a request.
    pub fn on_request(
        &self,
        info: &RequestInfo<'_>,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        peer: Option<SocketAddr>,
    ) -> Verdict {
        match self {
            Filter::Rbac(rbac) => authorize(rbac, info.req, ctx),
            Filter::Fault(filter) => {
                let (decision, guard) = filter.decide(info, ctx.route.as_ref(), fault::draws());
                if guard.is_some() {
                    ctx.fault = guard;
                }
                if decision.delay.is_some() {
                    ctx.flag(ResponseFlag::DelayInjected);
                }
                match (decision.delay, decision.abort) {
                    (Some(delay), abort) => Verdict::Delay(delay, abort),
                    (None, Some(abort)) => Verdict::Reply(abort),
                    (None, None) => Verdict::Continue,
                }
            }
            Filter::Cors => {
                let policy = cors::policy(ctx.route.as_ref());
                match cors::decide(policy, info, fault::draws().0) {
                    cors::Decision::Pass => Verdict::Continue,
                    cors::Decision::Annotate(origin) => {
                        ctx.cors_origin = Some(origin);
                        Verdict::Continue
                    }
                    cors::Decision::Reply(reply) => Verdict::Reply(reply),
                }
            }
            Filter::Router => {
                let Some(route) = ctx.route.clone() else {
                    return Verdict::Reply(LocalReply::NoRoute);
                };
                match router::decide(&route, info, snapshot, peer) {
                    router::Decision::Reply(reply) => Verdict::Reply(reply),
                    router::Decision::Forward(decision) => {
                        let (forward, retry) = *decision;
                        ctx.forward = Some(forward);
                        ctx.retry = retry;
                        Verdict::Continue
                    }
                }
            }
        }
    }
}

/// The RBAC filter on one request: denied requests get 403 `RBAC: access denied`; the
/// shadow and audit results are kept for the access log.
fn authorize(
    rbac: &RbacFilter,
    req: &pingora_http::RequestHeader,
    ctx: &mut RequestCtx,
) -> Verdict {
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

//! The HTTP proxy: one `impl ProxyHttp` whose phases call the chain's filters in order.
//!
//! Phase by phase, in the order Pingora runs them:
//! 1. `early_request_filter` — attach the connection's [`ConnContext`] (listener, chain,
//!    original destination), carried on the stream's digest by the capture listener.
//! 2. `request_filter` — take the current snapshot and run the chain's filters in code order
//!    (today: the router, which chooses route and cluster); a filter may answer locally
//!    (404 `NR`, 503 `NC`/`UH`).
//! 3. `upstream_peer` — pick the endpoint (round robin over healthy endpoints, or the original
//!    destination), bind address, HTTP version, pool group and timeouts.
//! 4. `upstream_request_filter` — add the generated `x-request-id`, and `x-forwarded-proto`
//!    (the downstream scheme) when the request has none, as Envoy's connection manager does.
//! 5. `upstream_response_body_filter` — end a response still streaming when the route's
//!    timeout expires (`UT`).
//! 6. `fail_to_connect` / `fail_to_proxy` — Envoy's local replies (503 `UF`, 504 `UT`, ...).
//! 7. `logging` — one access-log line.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod filters;
pub mod normalize;
pub mod reply;
pub mod route;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::Version;
use pingora_core::connectors::l4::BindTo;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use xds_client::model::UpstreamProtocol;

use self::filters::Verdict;
use self::reply::{LocalReply, Outcome};
use crate::accesslog::{AccessLogEntry, Detail, ResponseFlag};
use crate::authz::ShadowOutcome;
use crate::listener::conn::ConnContext;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::stats::Stats;
use crate::upstream::ClusterRuntime;

/// Concurrent streams allowed on one upstream HTTP/2 connection.
const MAX_H2_STREAMS: usize = 100;

/// The route and cluster chosen for a request.
#[derive(Debug, Clone)]
pub struct RouteDecision {
    /// Name of the matched route (may be empty).
    pub route_name: String,
    /// Name of the route's cluster.
    pub cluster_name: String,
    /// The cluster, if it exists in the snapshot.
    pub cluster: Option<Arc<ClusterRuntime>>,
    /// The route's timeout.
    pub timeout: Option<Duration>,
}

/// Per-request state, shared by the phases and filters.
#[derive(Debug)]
pub struct RequestCtx {
    start_time: SystemTime,
    started: Instant,
    /// The connection's context.
    pub conn: Option<Arc<ConnContext>>,
    /// The snapshot the request was routed under.
    pub snapshot: Option<Arc<Snapshot>>,
    /// The request's authority.
    pub authority: Option<String>,
    /// `x-request-id` (received or generated).
    pub request_id: Option<String>,
    generated_request_id: bool,
    /// `x-forwarded-proto` to add (`http` or `https`, the downstream's scheme) when the
    /// request came without one.
    forwarded_proto: Option<&'static str>,
    /// The router's decision.
    pub route: Option<RouteDecision>,
    /// The upstream endpoint chosen.
    pub upstream: Option<SocketAddr>,
    /// When the route's timeout expires (set when the first upstream attempt starts).
    pub deadline: Option<Instant>,
    /// A local reply decided by a phase, for `fail_to_proxy` to write.
    pub failure: Option<LocalReply>,
    /// Response flag for the access log.
    pub flag: ResponseFlag,
    /// Response code details for the access log.
    pub details: Option<Detail>,
    /// What the dry-run authorization rules decided, if any applied.
    pub shadow: Option<ShadowOutcome>,
    /// Whether an AUDIT rule matched, if any applied.
    pub audit: Option<bool>,
}

impl RequestCtx {
    fn new() -> RequestCtx {
        RequestCtx {
            start_time: SystemTime::now(),
            started: Instant::now(),
            conn: None,
            snapshot: None,
            authority: None,
            request_id: None,
            generated_request_id: false,
            forwarded_proto: None,
            route: None,
            upstream: None,
            deadline: None,
            failure: None,
            flag: ResponseFlag::None,
            details: None,
            shadow: None,
            audit: None,
        }
    }

    fn record(&mut self, reply: LocalReply) {
        self.flag = reply.flag();
        // An RBAC denial names its policy (set by the filter); keep that.
        if !(reply == LocalReply::RbacDenied && self.details.is_some()) {
            self.details = Some(reply.details().into());
        }
    }
}

/// The `ProxyHttp` of the sidecar (one instance per capture listener).
#[derive(Debug)]
pub struct MeshHttp {
    shared: Arc<Shared>,
}

impl MeshHttp {
    /// The proxy logic over the shared state.
    pub fn new(shared: Arc<Shared>) -> MeshHttp {
        MeshHttp { shared }
    }

    async fn local_reply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reply: LocalReply,
    ) -> Result<bool> {
        ctx.record(reply);
        Stats::incr(&self.shared.stats.downstream_rq_local_reply);
        reply::send(session, reply).await?;
        Ok(true)
    }
}

/// The request's authority: `:authority` (HTTP/2, absolute-form) or the `Host` header.
pub fn authority(req: &RequestHeader) -> Option<String> {
    if let Some(a) = req.uri.authority() {
        return Some(a.as_str().to_string());
    }
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// Normalizes the request's path as the chain says (the same path is then checked, routed
/// and forwarded), and joins repeated values of the headers the chain's authorization rules
/// read into one (so that the application sees the value that was checked).
fn normalize_request(
    req: &mut RequestHeader,
    chain: &crate::snapshot::HttpChain,
    normalization: xds_client::model::PathNormalization,
) -> std::result::Result<(), normalize::PathError> {
    let current = req
        .uri
        .path_and_query()
        .map_or_else(|| req.uri.path(), |p| p.as_str());
    match normalize::normalize(current, normalization)? {
        std::borrow::Cow::Owned(path) => {
            let mut parts = req.uri.clone().into_parts();
            let pq = path
                .parse::<http::uri::PathAndQuery>()
                .map_err(|_| normalize::PathError::Unparsable)?;
            parts.path_and_query = Some(pq);
            let uri = http::Uri::from_parts(parts).map_err(|_| normalize::PathError::Unparsable)?;
            req.set_uri(uri);
        }
        std::borrow::Cow::Borrowed(_) => {
            // A target kept as raw bytes (not valid UTF-8) would be forwarded as those bytes
            // while the rules checked its lossy rendering: forward the rendering instead.
            if req.raw_path() != current.as_bytes() {
                let uri = req.uri.clone();
                req.set_uri(uri);
            }
        }
    }
    for filter in &chain.filters {
        if let filters::Filter::Rbac(rbac) = filter {
            for name in rbac.header_names() {
                if let Some(value) = crate::authz::joined_value(&req.headers, name) {
                    // Cannot fail: the name and value are valid.
                    let _ = req.insert_header(name.clone(), value);
                }
            }
        }
    }
    Ok(())
}

/// A random version-4 UUID, Envoy's `x-request-id` format.
pub fn new_request_id() -> String {
    let v: u128 = rand::random();
    let v = (v & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let s = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn header(req: &RequestHeader, name: &str) -> Option<String> {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[async_trait]
impl ProxyHttp for MeshHttp {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.conn = ConnContext::from_digest(session.as_downstream().digest());
        if ctx.conn.is_none() {
            ctx.failure = Some(LocalReply::Internal);
            return Error::e_explain(ErrorType::InternalError, "connection context missing");
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        Stats::incr(&self.shared.stats.downstream_rq_total);
        let snapshot = self.shared.snapshot.load();
        let req = session.req_header();
        ctx.authority = authority(req);
        ctx.request_id = header(req, "x-request-id");
        if ctx.request_id.is_none() {
            ctx.request_id = Some(new_request_id());
            ctx.generated_request_id = true;
        }
        if req.headers.get("x-forwarded-proto").is_none() {
            let tls = session
                .as_downstream()
                .digest()
                .is_some_and(|d| d.ssl_digest.is_some());
            ctx.forwarded_proto = Some(if tls { "https" } else { "http" });
        }
        let Some(conn) = ctx.conn.clone() else {
            return self.local_reply(session, ctx, LocalReply::Internal).await;
        };
        let Some(chain) = conn.http_chain() else {
            return self.local_reply(session, ctx, LocalReply::Internal).await;
        };
        let normalization = self
            .shared
            .path_normalization
            .unwrap_or(chain.path_normalization);
        if let Err(e) = normalize_request(session.req_header_mut(), chain, normalization) {
            tracing::debug!(error = %e, "path refused");
            return self.local_reply(session, ctx, LocalReply::BadPath).await;
        }
        for filter in &chain.filters {
            let verdict = filter.on_request(session.req_header(), ctx, &snapshot, &chain.routes);
            if let Verdict::Reply(reply) = verdict {
                tracing::debug!(filter = filter.name(), ?reply, "local reply");
                return self.local_reply(session, ctx, reply).await;
            }
        }
        if ctx.route.is_none() {
            return self.local_reply(session, ctx, LocalReply::NoRoute).await;
        }
        ctx.snapshot = Some(snapshot);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(conn), Some(decision)) = (ctx.conn.as_ref(), ctx.route.as_ref()) else {
            ctx.failure = Some(LocalReply::Internal);
            return Error::e_explain(ErrorType::InternalError, "no route decision");
        };
        let Some(cluster) = decision.cluster.clone() else {
            ctx.failure = Some(LocalReply::NoCluster);
            return Error::e_explain(ErrorType::HTTPStatus(503), "cluster not found");
        };
        let address = match cluster.pick(&conn.destination) {
            Ok(address) => address,
            Err(e) => {
                ctx.failure = Some(LocalReply::NoHealthyUpstream);
                return Error::e_explain(ErrorType::HTTPStatus(503), e.to_string());
            }
        };
        let mut peer = HttpPeer::new(address, false, String::new());
        peer.group_key = cluster.group_key();
        let options = &mut peer.options;
        options.connection_timeout = Some(cluster.connect_timeout());
        if let Some(ip) = cluster.bind_address() {
            let mut bind = BindTo::default();
            bind.addr = Some(SocketAddr::new(ip, 0));
            options.bind_to = Some(bind);
        }
        let h2 = match cluster.protocol() {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::UseDownstream => session.is_http2(),
        };
        if h2 {
            options.alpn = ALPN::H2;
            options.max_h2_streams = MAX_H2_STREAMS;
        }
        if let Some(timeout) = decision.timeout {
            // The route timeout bounds the whole exchange: every read and write gets what is
            // left of it, and the body filter ends a response still streaming past it.
            let deadline = *ctx.deadline.get_or_insert_with(|| Instant::now() + timeout);
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            options.read_timeout = Some(left);
            options.write_timeout = Some(left);
        }
        ctx.upstream = Some(address);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.generated_request_id {
            if let Some(id) = &ctx.request_id {
                upstream_request.insert_header("x-request-id", id.as_str())?;
            }
        }
        if let Some(proto) = ctx.forwarded_proto {
            upstream_request.insert_header("x-forwarded-proto", proto)?;
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let expired = ctx.deadline.is_some_and(|d| Instant::now() >= d);
        if expired && !end_of_stream && !session.was_upgraded() {
            ctx.failure = Some(LocalReply::Timeout);
            return Err(Error::new_up(ErrorType::ReadTimedout));
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // No retry policy in the model: like Envoy without one, a failed connect is final.
        e.set_retry(false);
        ctx.failure = Some(LocalReply::ConnectFailure);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let outcome = match ctx.failure.take() {
            Some(reply) => Outcome::Reply(reply),
            None => reply::classify(e),
        };
        let reply = match outcome {
            Outcome::DownstreamGone => {
                ctx.flag = ResponseFlag::DownstreamConnectionTermination;
                ctx.details = Some("downstream_remote_disconnect".into());
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            Outcome::Reply(reply) => reply,
        };
        ctx.record(reply);
        if session.response_written().is_some() {
            // Headers already went out: all that is left is to close the stream.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        Stats::incr(&self.shared.stats.downstream_rq_local_reply);
        match reply::send(session, reply).await {
            Ok(code) => FailToProxy {
                error_code: code,
                can_reuse_downstream: true,
            },
            Err(_) => FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            },
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        // Failures the access log explains (with a response flag) are not errors of the proxy.
        ctx.flag != ResponseFlag::None
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.flag == ResponseFlag::None {
            if let Some(e) = e {
                ctx.flag = match reply::classify(e) {
                    Outcome::DownstreamGone => ResponseFlag::DownstreamConnectionTermination,
                    Outcome::Reply(r) => r.flag(),
                };
            }
        }
        let req = session.req_header();
        let mut entry = AccessLogEntry::new(ctx.start_time);
        entry.method = Some(req.method.as_str().to_string());
        entry.path = Some(
            req.uri
                .path_and_query()
                .map_or_else(|| req.uri.path().to_string(), |p| p.as_str().to_string()),
        );
        entry.protocol = Some(protocol_name(req.version));
        entry.user_agent = header(req, "user-agent");
        entry.x_forwarded_for = header(req, "x-forwarded-for");
        entry.response_code = session.response_written().map_or(0, |r| r.status.as_u16());
        entry.response_flags = ctx.flag;
        entry.response_code_details = ctx.details.take().or_else(|| {
            (entry.response_code != 0 && ctx.flag == ResponseFlag::None)
                .then_some(Detail::Static("via_upstream"))
        });
        if let Some(shadow) = ctx.shadow.take() {
            entry.shadow_engine_result = Some(if shadow.allowed { "allowed" } else { "denied" });
            entry.shadow_effective_policy_id = shadow.policy.map(Detail::Shared);
        }
        entry.access_log_hint = ctx.audit;
        entry.authority = ctx.authority.take();
        entry.request_id = ctx.request_id.take();
        entry.duration = ctx.started.elapsed().as_millis() as u64;
        entry.bytes_received = session.body_bytes_read() as u64;
        entry.bytes_sent = session.body_bytes_sent() as u64;
        entry.upstream_host = ctx.upstream;
        if let Some(route) = ctx.route.take() {
            entry.upstream_cluster = Some(route.cluster_name);
            entry.route_name = Some(route.route_name).filter(|n| !n.is_empty());
        }
        if let Some(conn) = &ctx.conn {
            entry.downstream_remote_address = conn.peer_addr;
            entry.downstream_local_address = Some(conn.destination.address);
        }
        self.shared.access_log.log(entry);
    }
}

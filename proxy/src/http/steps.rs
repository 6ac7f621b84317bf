//! The steps [`MeshHttp`]'s phases (in `phases.rs`) call: the filter list, mirrors, what a
//! failed attempt means for the retry policy, the finished response header and the access
//! log entry, the upstream connection options.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pingora_core::connectors::l4::BindTo;
use pingora_core::protocols::l4::ext::TcpKeepalive;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::PeerOptions;
use pingora_error::Error;
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, Session};
use xds_client::model::UpstreamProtocol;

use super::ctx::{MatchedRoute, RequestCtx};
use super::filters::Verdict;
use super::headers::{apply_response, ValueContext};
use super::reply::{self, LocalReply, Outcome};
use super::retry::{Failure, RetryState};
use super::route::RequestInfo;
use super::{cors, header, protocol_name, telemetry, MeshHttp};
use crate::accesslog::{AccessLogEntry, Detail, ResponseFlag};
use crate::listener::conn::ConnContext;
use crate::snapshot::{ChainKind, HttpRoutes};
use crate::stats::Stats;
use crate::upstream::host::{AttemptResult, RequestEnd};

/// Finish a response header for the downstream: route header operations, CORS, the
/// hash-policy cookie, the attempt count.
pub(super) fn finalize_response(ctx: &RequestCtx, protocol: &str, resp: &mut ResponseHeader) {
    let Some(route) = &ctx.route else {
        return;
    };
    let target = route.target();
    let cx = ValueContext {
        downstream_remote: ctx.conn.as_ref().and_then(|c| c.peer_addr),
        downstream_local: ctx.conn.as_ref().map(|c| c.destination.address),
        protocol,
        request: None,
    };
    apply_response(&target.headers, resp, &cx);
    if let (Some(origin), Some(policy)) = (&ctx.cors_origin, target.cors.as_deref()) {
        cors::annotate(policy, origin, resp);
    }
    if let Some(cookie) = ctx.forward.as_ref().and_then(|f| f.set_cookie.as_deref()) {
        let _ = resp.append_header("set-cookie", cookie);
    }
    if route.entry.include_attempt_count_in_response && ctx.retry.attempts > 0 {
        let _ = resp.insert_header("x-envoy-attempt-count", ctx.retry.attempts.to_string());
    }
}

pub(super) fn replayable(session: &Session) -> bool {
    session.req_header().method.is_idempotent() && !session.as_ref().retry_buffer_truncated()
}

/// Whether a request whose bytes reached the upstream may be sent again after `resp`: an
/// idempotent one, or a gRPC call the upstream answered with a status the route retries.
pub(super) fn replayable_after(
    session: &Session,
    retry: &RetryState,
    resp: &ResponseHeader,
) -> bool {
    replayable(session)
        || (!session.as_ref().retry_buffer_truncated() && retry.retriable_grpc_status(resp))
}

pub(super) fn uses_h2(session: &Session, protocol: UpstreamProtocol) -> bool {
    match protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::UseDownstream => session.is_http2(),
    }
}

impl MeshHttp {
    /// Match the route and run the filters; `Some(reply)` ends the request locally.
    pub(super) async fn run_filters(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        conn: &ConnContext,
    ) -> Option<LocalReply> {
        let snapshot = self.shared.snapshot.load();
        let runtime = ctx.chain.clone()?;
        let ChainKind::Http(chain) = &runtime.kind else {
            return None;
        };
        let authority = ctx.authority.clone().unwrap_or_default();
        let info = |req| RequestInfo {
            req,
            path_and_query: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            authority: &authority,
            scheme: "http",
            is_grpc: reply::is_grpc(req),
        };
        let table = match &chain.routes {
            HttpRoutes::Inline(table) => Some(table),
            HttpRoutes::Rds(name) => snapshot.route_table(name),
        };
        ctx.route = table
            .and_then(|t| t.route(&info(session.req_header())))
            .map(|entry| MatchedRoute {
                target: entry.target_index(rand::random()),
                entry: entry.clone(),
            });
        for filter in &chain.filters {
            let verdict =
                filter.on_request(&info(session.req_header()), ctx, &snapshot, conn.peer_addr);
            match verdict {
                Verdict::Continue => {}
                Verdict::Reply(reply) => return Some(reply),
                Verdict::Delay(delay, abort) => {
                    tokio::time::sleep(delay).await;
                    if let Some(reply) = abort {
                        return Some(reply);
                    }
                }
            }
        }
        if ctx.forward.is_none() {
            return Some(LocalReply::NoRoute);
        }
        self.start_mirrors(session, ctx, conn, &snapshot);
        ctx.snapshot = Some(snapshot);
        None
    }

    pub(super) fn start_mirrors(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        conn: &ConnContext,
        snapshot: &crate::snapshot::Snapshot,
    ) {
        let Some(route) = &ctx.route else { return };
        let xds_client::model::RouteAction::Forward(action) = &route.entry.route.action else {
            return;
        };
        if action.mirrors.is_empty() {
            return;
        }
        let has_body = !session.as_mut().is_body_empty();
        let timeout = ctx.forward.as_ref().and_then(|f| f.timeout);
        for policy in &action.mirrors {
            if !policy.fraction.hit(rand::random::<u32>() % 1_000_000) {
                continue;
            }
            let Some(cluster) = snapshot.cluster(&policy.cluster) else {
                continue;
            };
            let sender = self.mirrors.start(
                cluster,
                &conn.destination,
                session.req_header(),
                ctx.authority.as_deref().unwrap_or(""),
                policy.shadow_suffix,
                has_body,
                timeout,
                session.is_http2(),
            );
            ctx.mirrors.extend(sender);
        }
    }

    /// A failed attempt: tell outlier detection, then retry it or settle the reply.
    pub(super) fn attempt_failed(
        &self,
        ctx: &mut RequestCtx,
        failure: Option<Failure>,
        replayable: bool,
        reply: LocalReply,
    ) -> bool {
        if let Some(fwd) = &ctx.forward {
            let stats =
                telemetry::cluster_stats(&self.shared, &mut ctx.telemetry, fwd.cluster.name());
            if let Some(host) = fwd.host.as_ref().and_then(|h| h.state.as_ref()) {
                host.request_ended(match reply {
                    LocalReply::Timeout | LocalReply::PerTryTimeout => RequestEnd::TimedOut,
                    _ => RequestEnd::Failed,
                });
                if matches!(failure, Some(Failure::ConnectFailure)) {
                    host.connect_failed();
                }
                if fwd.cluster.report(host, AttemptResult::LocalFailure) {
                    stats.outlier_detection_ejections_enforced_total.inc();
                }
            }
            match &failure {
                Some(Failure::ConnectFailure) => stats.upstream_cx_connect_fail.inc(),
                Some(Failure::PerTryTimeout) => stats.upstream_rq_per_try_timeout.inc(),
                _ => {}
            }
        }
        let retry = match (failure, &ctx.forward) {
            (Some(f), Some(fwd)) if ctx.retry.retriable_failure(f) => {
                let max = fwd.cluster.cluster().circuit_breakers.max_retries;
                let limits = fwd.cluster.limits().clone();
                ctx.retry.take_retry(replayable, &limits, max)
            }
            _ => false,
        };
        if retry {
            if let Some(stats) = &ctx.telemetry.cluster {
                stats.upstream_rq_retry.inc();
            }
            ctx.failure = None;
        } else {
            if ctx.retry.exhausted {
                ctx.flag(ResponseFlag::UpstreamRetryLimitExceeded);
            }
            ctx.failure = Some(reply);
        }
        retry
    }
}

/// The access log entry of a finished request: what the session saw and what the phases
/// recorded in `ctx` (taken out of it).
pub(super) fn access_log_entry(session: &Session, ctx: &mut RequestCtx) -> AccessLogEntry {
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
    entry.response_flags = ctx.flags;
    entry.response_code_details = ctx.details.take().or_else(|| {
        (entry.response_code != 0 && ctx.upstream_status.is_some())
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
    entry.upstream_local_address = ctx.telemetry.upstream_local;
    if let Some(route) = &ctx.route {
        entry.upstream_cluster = route.target().cluster.clone();
        entry.route_name = Some(route.entry.route.name.clone()).filter(|n| !n.is_empty());
    }
    if let Some(reason) = ctx.upstream_transport_failure.take() {
        entry.upstream_transport_failure_reason = Some(reason);
    }
    if let Some(conn) = &ctx.conn {
        entry.downstream_remote_address = conn.peer_addr;
        entry.downstream_local_address = Some(conn.destination.address);
        entry.requested_server_name = conn.server_name().map(str::to_string);
        entry.downstream_peer_uri_san = conn.peer_principal().map(str::to_string);
    }
    entry.upstream_service_time = ctx.telemetry.upstream_service_time.map(|ms| ms.to_string());
    entry
}

/// Concurrent streams allowed on one upstream HTTP/2 connection unless the cluster says.
const MAX_H2_STREAMS: usize = 100;

/// The upstream connection options of `cluster`'s settings: connect and idle timeouts, TCP
/// keepalive, the bind address (the 127.0.0.6 trick of inbound clusters) and, for HTTP/2,
/// ALPN, stream limit and windows.
pub(super) fn connection_options(
    options: &mut PeerOptions,
    cluster: &crate::upstream::ClusterRuntime,
    h2: bool,
) {
    let settings = &cluster.cluster().connection;
    options.connection_timeout = Some(cluster.connect_timeout());
    options.idle_timeout = settings.idle_timeout;
    if let Some(ka) = settings.tcp_keepalive {
        options.tcp_keepalive = Some(TcpKeepalive {
            idle: ka.time.unwrap_or(Duration::from_secs(7200)),
            interval: ka.interval.unwrap_or(Duration::from_secs(75)),
            count: ka.probes.unwrap_or(9) as usize,
            user_timeout: Duration::ZERO,
        });
    }
    if let Some(ip) = cluster.bind_address() {
        let mut bind = BindTo::default();
        bind.addr = Some(SocketAddr::new(ip, 0));
        options.bind_to = Some(bind);
    }
    if h2 {
        options.alpn = ALPN::H2;
        options.max_h2_streams = settings
            .h2_max_concurrent_streams
            .map_or(MAX_H2_STREAMS, |n| n.max(1) as usize);
        options.h2_stream_window_size = settings.h2_initial_stream_window;
        options.h2_connection_window_size = settings.h2_initial_connection_window;
    }
}

/// True when the upstream connection (`fd`, new or `reused`) must close after this request:
/// it has served the cluster's `maxRequestsPerConnection`, or is older than its
/// `maxConnectionDuration`.
pub(super) fn connection_spent(
    cluster: &crate::upstream::ClusterRuntime,
    fd: std::os::unix::io::RawFd,
    reused: bool,
    digest: Option<&pingora_core::protocols::Digest>,
) -> bool {
    let settings = &cluster.cluster().connection;
    let mut close = false;
    if let Some(max) = settings.max_requests_per_connection {
        close |= cluster.connection_uses().count(fd, reused) >= max;
    }
    if let Some(max_age) = settings.max_connection_duration {
        let established = digest
            .and_then(|d| d.timing_digest.first().cloned().flatten())
            .map(|t| t.established_ts);
        close |= established
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= max_age);
    }
    close
}

/// The deadline of one attempt (the earlier of its per-try timeout and the route's deadline)
/// and the wait each read and write of it gets: what is left of that deadline, at most the
/// idle timeout.
pub(super) fn attempt_deadline(
    now: Instant,
    per_try_timeout: Option<Duration>,
    route_deadline: Option<Instant>,
    idle_timeout: Option<Duration>,
) -> (Option<Instant>, Option<Duration>) {
    let deadline = match (per_try_timeout, route_deadline) {
        (Some(t), Some(d)) => Some((now + t).min(d)),
        (Some(t), None) => Some(now + t),
        (None, d) => d,
    };
    let left = deadline.map(|d| {
        d.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    });
    let wait = match (left, idle_timeout) {
        (Some(l), Some(i)) => Some(l.min(i)),
        (l, i) => l.or(i),
    };
    (deadline, wait)
}

impl MeshHttp {
    /// The downstream answer to a request that failed (`fail_to_proxy`): the local reply the
    /// phases decided or the error's classification, with its flag recorded; nothing when the
    /// client went away or the response headers already went out.
    pub(super) async fn reply_to_failure(
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
                ctx.flag(ResponseFlag::DownstreamConnectionTermination);
                ctx.details = Some("downstream_remote_disconnect".into());
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            Outcome::Reply(reply) => reply,
        };
        ctx.record(&reply);
        if session.response_written().is_some() {
            // Headers already went out: all that is left is to close the stream.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        Stats::incr(&self.shared.stats.downstream_rq_local_reply);
        let protocol = protocol_name(session.req_header().version);
        let retried = ctx.retry.attempts > 1;
        let finalize = |resp: &mut ResponseHeader| finalize_response(ctx, protocol, resp);
        match reply::send(session, &reply, retried, &finalize).await {
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
}

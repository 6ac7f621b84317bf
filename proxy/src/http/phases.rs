//! The phases of [`MeshHttp`]'s `impl ProxyHttp` (see the module docs of [`crate::http`]); the
//! longer steps they take live in `steps.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result, RetryType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use super::ctx::RequestCtx;
use super::headers::{apply_request, ValueContext};
use super::reply::{self, ConnectCause, LocalReply, Outcome};
use super::retry::Failure;
pub(super) use super::steps::finalize_response;
use super::steps::{
    access_log_entry, attempt_deadline, connection_options, connection_spent, replayable,
    replayable_after, uses_h2,
};
use super::{
    authority, header, new_request_id, normalize_request, protocol_name, telemetry, MeshHttp,
};
use crate::accesslog::ResponseFlag;
use crate::listener::conn::ConnContext;
use crate::snapshot::ChainKind;
use crate::stats::Stats;
use crate::upstream::host::{AttemptResult, RequestEnd};
use crate::upstream::lb::PickRequest;
use crate::upstream::limits::Refused;

/// Transparent retries of a request that met a closed pooled connection.
const MAX_STALE_RETRIES: u32 = 2;

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
        let req = session.req_header();
        ctx.authority = authority(req);
        ctx.request_id = header(req, "x-request-id");
        if ctx.request_id.is_none() {
            ctx.request_id = Some(new_request_id());
            ctx.generated_request_id = true;
        }
        if req.headers.get("x-forwarded-proto").is_none() {
            let tls = ctx.conn.as_ref().is_some_and(|c| c.tls)
                || session
                    .as_downstream()
                    .digest()
                    .is_some_and(|d| d.ssl_digest.is_some());
            ctx.forwarded_proto = Some(if tls { "https" } else { "http" });
        }
        let Some(conn) = ctx.conn.clone() else {
            return self.local_reply(session, ctx, LocalReply::Internal).await;
        };
        telemetry::on_request(
            &self.shared,
            &conn,
            session.req_header_mut(),
            &mut ctx.telemetry,
        );
        // A listener update since the connection was accepted: the request is handled (and
        // authorized) by the chain that applies now, and the connection closes after the
        // response (Envoy drains connections of replaced filter chains), so that an
        // AuthorizationPolicy change reaches pooled connections at once.
        let chain_now = {
            let snapshot = self.shared.snapshot.load();
            crate::listener::current_chain(&conn, &snapshot)
        };
        let runtime = match chain_now {
            Some(now) if Arc::ptr_eq(&now, &conn.chain) => now,
            now => {
                session.set_keepalive(None);
                now.filter(|c| matches!(c.kind, ChainKind::Http(_)))
                    .unwrap_or_else(|| conn.chain.clone())
            }
        };
        // Draining (`/drain_listeners`, SIGTERM): HTTP/1 clients are told to close.
        if self.shared.lifecycle.is_draining() {
            session.set_keepalive(None);
        }
        ctx.chain = Some(runtime.clone());
        let ChainKind::Http(chain) = &runtime.kind else {
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
        super::xfcc::apply(session.req_header_mut(), &conn, chain.xfcc);
        match self.run_filters(session, ctx, &conn).await {
            Some(reply) => self.local_reply(session, ctx, reply).await,
            None => Ok(false),
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !ctx.mirrors.is_empty() {
            if let Some(chunk) = body {
                // Never wait for a mirror: one that cannot keep up loses its copy.
                ctx.mirrors.retain(|m| m.try_send(chunk.clone()).is_ok());
            }
            if end_of_stream {
                ctx.mirrors.clear();
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if let Some(backoff) = ctx.retry.backoff.take() {
            tokio::time::sleep(backoff).await;
        }
        let now = Instant::now();
        let Some(fwd) = ctx.forward.as_mut() else {
            ctx.failure = Some(LocalReply::Internal);
            return Error::e_explain(ErrorType::InternalError, "no route decision");
        };
        if ctx.deadline.is_none() {
            ctx.deadline = fwd.timeout.map(|t| now + t);
        }
        if ctx.deadline.is_some_and(|d| now >= d) {
            ctx.failure = Some(LocalReply::Timeout);
            return Error::e_explain(ErrorType::ReadTimedout, "route timeout");
        }
        let cluster = fwd.cluster.clone();
        let breakers = cluster.cluster().circuit_breakers;
        if fwd.request_permit.is_none() {
            match cluster.limits().request(breakers.max_requests) {
                Ok(permit) => fwd.request_permit = Some(permit),
                Err(_) => {
                    ctx.failure = Some(LocalReply::Overflow);
                    let stats =
                        telemetry::cluster_stats(&self.shared, &mut ctx.telemetry, cluster.name());
                    stats.upstream_rq_pending_overflow.inc();
                    return Error::e_explain(ErrorType::HTTPStatus(503), "max_requests overflow");
                }
            }
        }
        let h2 = uses_h2(session, cluster.protocol());
        if !h2 && fwd.connection_permit.is_none() {
            let deadline = ctx.deadline;
            let limits = cluster.limits().clone();
            match limits
                .connection(
                    breakers.max_connections,
                    breakers.max_pending_requests,
                    deadline,
                )
                .await
            {
                Ok(permit) => {
                    if let Some(fwd) = ctx.forward.as_mut() {
                        fwd.connection_permit = Some(permit);
                    }
                }
                Err(Refused::Overflow(_)) => {
                    ctx.failure = Some(LocalReply::Overflow);
                    let stats =
                        telemetry::cluster_stats(&self.shared, &mut ctx.telemetry, cluster.name());
                    stats.upstream_rq_pending_overflow.inc();
                    stats.upstream_cx_overflow.inc();
                    return Error::e_explain(ErrorType::HTTPStatus(503), "connection overflow");
                }
                Err(Refused::Timeout) => {
                    ctx.failure = Some(LocalReply::Timeout);
                    return Error::e_explain(ErrorType::ReadTimedout, "route timeout");
                }
            }
        }
        let Some(conn) = ctx.conn.clone() else {
            ctx.failure = Some(LocalReply::Internal);
            return Error::e_explain(ErrorType::InternalError, "no connection context");
        };
        let policy = ctx.retry.policy.clone();
        let empty: &[SocketAddr] = &[];
        let Some(fwd) = ctx.forward.as_mut() else {
            return Error::e_explain(ErrorType::InternalError, "no route decision");
        };
        let pick = PickRequest {
            hash: fwd.hash,
            avoid: match &policy {
                Some(p) if p.previous_hosts => &ctx.retry.tried_hosts,
                _ => empty,
            },
            attempts: policy.as_ref().map_or(1, |p| p.host_selection_max_attempts),
            avoid_priorities: match &policy {
                Some(p) if p.previous_priorities => &ctx.retry.tried_priorities,
                _ => &[],
            },
        };
        let picked = match cluster.pick_host(&conn.destination, &pick) {
            Ok(picked) => picked,
            Err(e) => {
                ctx.failure = Some(LocalReply::NoHealthyUpstream);
                return Error::e_explain(ErrorType::HTTPStatus(503), e.to_string());
            }
        };
        let address = picked.address;
        fwd.active = picked.state.as_ref().map(|s| s.start_http_request());
        ctx.retry.attempts += 1;
        ctx.retry.tried_hosts.push(address);
        ctx.retry.tried_priorities.push(picked.priority);
        fwd.host = Some(picked);
        fwd.close_connection = false;

        let mut peer = match cluster.tls_for(address) {
            None => {
                let mut peer = HttpPeer::new(address, false, String::new());
                peer.group_key = cluster.group_key();
                peer
            }
            Some(tls) => match tls.http_peer(address, &self.shared.identity, cluster.group_key()) {
                Ok(peer) => peer,
                Err(e) => {
                    crate::tcp::upstream_tls_failed(&self.shared, &e);
                    ctx.upstream = Some(address);
                    ctx.upstream_transport_failure = Some(e.to_string());
                    ctx.failure = Some(LocalReply::ConnectFailure(ConnectCause::Other));
                    return Error::e_explain(ErrorType::TLSHandshakeFailure, e.to_string());
                }
            },
        };
        connection_options(&mut peer.options, &cluster, h2);
        let options = &mut peer.options;
        // Every read and write gets what is left of the attempt (per-try timeout) and of the
        // route timeout, and at most the idle timeout; the body filter ends a response still
        // streaming past the deadlines.
        let (attempt_deadline, wait) =
            attempt_deadline(now, fwd.per_try_timeout, ctx.deadline, fwd.idle_timeout);
        ctx.attempt_deadline = attempt_deadline;
        options.read_timeout = wait;
        options.write_timeout = wait;
        ctx.upstream = Some(address);
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The server's certificate must name one of the identities the destination may run
        // as; the connection is refused (and never pooled) otherwise.
        if let Err(e) = crate::tls::client::verify_upstream(peer, digest) {
            crate::tcp::upstream_tls_failed(&self.shared, &e);
            ctx.upstream_transport_failure = Some(e.to_string());
            ctx.failure = Some(LocalReply::ConnectFailure(ConnectCause::Other));
            return Error::e_explain(ErrorType::TLSHandshakeFailure, e.to_string());
        }
        if peer.is_tls() && !reused {
            Stats::incr(&self.shared.stats.upstream_ssl_handshake);
        }
        telemetry::on_upstream_connected(&self.shared, peer, digest, &mut ctx.telemetry);
        let Some(fwd) = ctx.forward.as_mut() else {
            return Ok(());
        };
        if !reused {
            let stats =
                telemetry::cluster_stats(&self.shared, &mut ctx.telemetry, fwd.cluster.name());
            let host = fwd.host.as_ref().and_then(|h| h.state.clone());
            self.shared
                .metrics
                .envoy
                .upstream_connection_opened(fd, stats, host);
        }
        fwd.close_connection = connection_spent(&fwd.cluster, fd, reused, digest);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
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
        let (Some(route), Some(fwd)) = (&ctx.route, &ctx.forward) else {
            return Ok(());
        };
        let target = route.target();
        if let Some(path) = &fwd.rewritten_path {
            let original = upstream_request
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            if let Ok(uri) = path.parse::<http::Uri>() {
                let _ = upstream_request.insert_header("x-envoy-original-path", original);
                upstream_request.set_uri(uri);
            }
        }
        if let Some(host) = &target.host_rewrite {
            upstream_request.insert_header(http::header::HOST, host.as_str())?;
            if upstream_request.uri.authority().is_some() {
                let pq = upstream_request
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                if let Ok(uri) = format!("http://{host}{pq}").parse::<http::Uri>() {
                    upstream_request.set_uri(uri);
                }
            }
        }
        if !target.headers.is_empty() {
            let downstream = session.req_header();
            let cx = ValueContext {
                downstream_remote: ctx.conn.as_ref().and_then(|c| c.peer_addr),
                downstream_local: ctx.conn.as_ref().map(|c| c.destination.address),
                protocol: protocol_name(downstream.version),
                request: Some(&downstream.headers),
            };
            apply_request(&target.headers, upstream_request, &cx);
        }
        if route.entry.include_attempt_count {
            upstream_request
                .insert_header("x-envoy-attempt-count", ctx.retry.attempts.to_string())?;
        }
        if fwd.close_connection && upstream_request.version != http::Version::HTTP_2 {
            upstream_request.insert_header(http::header::CONNECTION, "close")?;
        }
        if let Some(conn) = &ctx.conn {
            let cluster = fwd.cluster.name();
            telemetry::on_upstream_request(
                &self.shared,
                conn,
                Some(cluster),
                upstream_request,
                &mut ctx.telemetry,
            )?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if upstream_response.status.is_informational() {
            return Ok(());
        }
        let status = upstream_response.status.as_u16();
        ctx.upstream_status = Some(status);
        if let Some(fwd) = &ctx.forward {
            if let Some(host) = fwd.host.as_ref().and_then(|h| h.state.as_ref()) {
                host.request_ended(RequestEnd::Response(status));
                if fwd.cluster.report(host, AttemptResult::Status(status)) {
                    telemetry::cluster_stats(&self.shared, &mut ctx.telemetry, fwd.cluster.name())
                        .outlier_detection_ejections_enforced_total
                        .inc();
                }
            }
            if ctx.retry.retriable_response(upstream_response) {
                let max = fwd.cluster.cluster().circuit_breakers.max_retries;
                let limits = fwd.cluster.limits().clone();
                let replayable = replayable_after(session, &ctx.retry, upstream_response);
                if ctx.retry.take_retry(replayable, &limits, max) {
                    telemetry::cluster_stats(&self.shared, &mut ctx.telemetry, fwd.cluster.name())
                        .upstream_rq_retry
                        .inc();
                    let mut e = Error::new_up(ErrorType::HTTPStatus(status));
                    e.set_retry(true);
                    return Err(e);
                }
                if ctx.retry.exhausted {
                    ctx.flag(ResponseFlag::UpstreamRetryLimitExceeded);
                }
            }
        }
        if let Some(conn) = ctx.conn.clone() {
            telemetry::on_upstream_response(
                &self.shared,
                &conn,
                upstream_response,
                &mut ctx.telemetry,
            )?;
        }
        let protocol = protocol_name(session.req_header().version);
        finalize_response(ctx, protocol, upstream_response);
        Ok(())
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        upstream_trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(s) = upstream_trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse().ok())
        {
            ctx.telemetry.grpc_status = Some(s);
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
        let now = Instant::now();
        let expired = ctx.deadline.is_some_and(|d| now >= d)
            || ctx.attempt_deadline.is_some_and(|d| now >= d);
        if expired && !end_of_stream && !session.was_upgraded() {
            ctx.failure = Some(LocalReply::Timeout);
            return Err(Error::new_up(ErrorType::ReadTimedout));
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let cause = ConnectCause::of(&e);
        if peer.is_tls() && ctx.upstream_transport_failure.is_none() {
            Stats::incr(&self.shared.stats.upstream_ssl_connection_error);
            ctx.upstream_transport_failure = Some(e.to_string());
        } else if let Some(reason) = cause.transport_failure_reason() {
            ctx.upstream_transport_failure = Some(reason.to_string());
        }
        // Nothing reached the upstream: any method may be retried.
        let replayable = !session.as_ref().retry_buffer_truncated();
        let retry = self.attempt_failed(
            ctx,
            Some(Failure::ConnectFailure),
            replayable,
            LocalReply::ConnectFailure(cause),
        );
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if matches!(e.etype(), ErrorType::HTTPStatus(_)) && e.retry() {
            // A retry decided on the response.
            return e;
        }
        if *e.esource() == ErrorSource::Downstream {
            e.set_retry(false);
            return e;
        }
        let replayable = replayable(session);
        let stale = matches!(e.retry, RetryType::ReusedOnly) && client_reused;
        if stale && replayable && ctx.retry.stale_retries < MAX_STALE_RETRIES {
            // The pooled connection was closed under us: try again, not counted as a retry.
            ctx.retry.stale_retries += 1;
            ctx.retry.attempts = ctx.retry.attempts.saturating_sub(1);
            e.set_retry(true);
            return e;
        }
        let now = Instant::now();
        let (failure, reply) = match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                if ctx.deadline.is_some_and(|d| now >= d) {
                    (None, LocalReply::Timeout)
                } else if ctx.attempt_deadline.is_some_and(|d| now >= d) {
                    (Some(Failure::PerTryTimeout), LocalReply::PerTryTimeout)
                } else {
                    (None, LocalReply::StreamIdleTimeout)
                }
            }
            // The upstream's certificate refused after the handshake (`connected_to_upstream`):
            // the connection failed, nothing was sent (Envoy's `UF`, TLS error).
            ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert => (
                Some(Failure::ConnectFailure),
                LocalReply::ConnectFailure(ConnectCause::Other),
            ),
            _ => (
                Some(Failure::Reset {
                    before_request: stale,
                }),
                LocalReply::UpstreamReset,
            ),
        };
        let retry = self.attempt_failed(ctx, failure, replayable, reply);
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.reply_to_failure(session, e, ctx).await
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        // Failures the access log explains (with a response flag) are not errors of the proxy.
        !ctx.flags.is_empty()
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        _context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        // Retries are the route's policy at work, not warnings.
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.flags.is_empty() {
            if let Some(e) = e {
                match reply::classify(e) {
                    Outcome::DownstreamGone => {
                        ctx.flag(ResponseFlag::DownstreamConnectionTermination)
                    }
                    Outcome::Reply(r) => ctx.flag(r.flag()),
                }
            }
        }
        let entry = access_log_entry(session, ctx);
        let mut write = true;
        if let Some(conn) = ctx.conn.clone() {
            telemetry::on_logging(&self.shared, &conn, ctx, &entry);
            // The Telemetry API's loggers of the chain (none: the proxy's default).
            if let crate::snapshot::ChainKind::Http(chain) = &conn.chain.kind {
                write = xds_client::model::telemetry::should_log(
                    &chain.access_log,
                    entry.response_code,
                );
            }
        }
        if write {
            self.shared.access_log.log(entry);
        }
    }
}

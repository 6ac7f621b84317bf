//! Replies the proxy writes itself, as Envoy writes them: status, body, response flag and
//! details; for gRPC requests a trailers-only gRPC error (HTTP 200 with `grpc-status`).

use std::sync::Arc;

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use xds_client::model::AbortStatus;

use crate::accesslog::ResponseFlag;

/// A fixed answer: a redirect, a direct response, a CORS preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectReply {
    /// HTTP status.
    pub status: u16,
    /// Headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
    /// Envoy's response code details.
    pub details: &'static str,
}

/// A reply the proxy sends instead of (or in place of) an upstream response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalReply {
    /// No virtual host or route matched: 404 `NR`.
    NoRoute,
    /// The route's cluster does not exist: `NC` with the route's status (503 by default).
    NoCluster(u16),
    /// The cluster has no healthy endpoint: 503 `UH`.
    NoHealthyUpstream,
    /// Connecting to the upstream failed: 503 `UF`.
    ConnectFailure(ConnectCause),
    /// The route's timeout elapsed: 504 `UT`.
    Timeout,
    /// The last attempt's own timeout (`per_try_timeout`) elapsed: 504 `UT`.
    PerTryTimeout,
    /// The route's idle timeout elapsed: 408 `SI`.
    StreamIdleTimeout,
    /// The upstream closed or reset before answering: 503 `UC`.
    UpstreamReset,
    /// A circuit breaker refused the request: 503 `UO`.
    Overflow,
    /// The fault filter aborted the request: `FI`.
    FaultAbort {
        /// HTTP or gRPC status.
        status: AbortStatus,
        /// Body (default `fault filter abort`).
        body: Option<Arc<str>>,
    },
    /// A fixed answer (no flag).
    Direct(Arc<DirectReply>),
    /// An RBAC filter denied the request: 403 `RBAC: access denied` (no response flag, as
    /// in Envoy; the details name the policy).
    RbacDenied,
    /// The path cannot be normalized (`%00`, refused escaped slashes): 400.
    BadPath,
    /// A proxy bug: 500.
    Internal,
}

/// Why a connection to the upstream failed, as Envoy 1.40 reports it (reset reason and
/// transport failure reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCause {
    /// The upstream refused the connection (`ECONNREFUSED`).
    Refused,
    /// No route to the upstream's host or network.
    NoRoute,
    /// The connect timeout elapsed.
    Timeout,
    /// Another failure (socket, bind, TLS handshake or peer verification).
    Other,
}

impl ConnectCause {
    /// The cause of a Pingora connect error.
    pub fn of(e: &Error) -> ConnectCause {
        match e.etype() {
            ErrorType::ConnectRefused => ConnectCause::Refused,
            ErrorType::ConnectNoRoute => ConnectCause::NoRoute,
            ErrorType::ConnectTimedout => ConnectCause::Timeout,
            _ => ConnectCause::Other,
        }
    }

    /// Envoy's upstream transport failure reason, as its access log writes it.
    pub fn transport_failure_reason(self) -> Option<&'static str> {
        match self {
            ConnectCause::Refused => Some("delayed_connect_error:_Connection_refused"),
            ConnectCause::NoRoute => Some("delayed_connect_error:_No_route_to_host"),
            ConnectCause::Timeout | ConnectCause::Other => None,
        }
    }
}

/// What an error means for the downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answer with this reply (if nothing was sent yet).
    Reply(LocalReply),
    /// The downstream went away: nothing to send (`DC`).
    DownstreamGone,
}

const RESET_PREFIX: &str = "upstream connect error or disconnect/reset before headers. ";

impl LocalReply {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            LocalReply::NoRoute => 404,
            LocalReply::NoCluster(status) => *status,
            LocalReply::NoHealthyUpstream
            | LocalReply::ConnectFailure(_)
            | LocalReply::UpstreamReset
            | LocalReply::Overflow => 503,
            LocalReply::Timeout | LocalReply::PerTryTimeout => 504,
            LocalReply::StreamIdleTimeout => 408,
            LocalReply::FaultAbort { status, .. } => match status {
                AbortStatus::Http(code) => *code,
                AbortStatus::Grpc(_) => 200,
            },
            LocalReply::Direct(d) => d.status,
            LocalReply::RbacDenied => 403,
            LocalReply::BadPath => 400,
            LocalReply::Internal => 500,
        }
    }

    /// Envoy's response flag.
    pub fn flag(&self) -> ResponseFlag {
        match self {
            LocalReply::NoRoute => ResponseFlag::NoRoute,
            LocalReply::NoCluster(_) => ResponseFlag::NoClusterFound,
            LocalReply::NoHealthyUpstream => ResponseFlag::NoHealthyUpstream,
            LocalReply::ConnectFailure(_) => ResponseFlag::UpstreamConnectionFailure,
            LocalReply::Timeout | LocalReply::PerTryTimeout => ResponseFlag::UpstreamRequestTimeout,
            LocalReply::StreamIdleTimeout => ResponseFlag::StreamIdleTimeout,
            LocalReply::UpstreamReset => ResponseFlag::UpstreamConnectionTermination,
            LocalReply::Overflow => ResponseFlag::UpstreamOverflow,
            LocalReply::FaultAbort { .. } => ResponseFlag::FaultInjected,
            LocalReply::Direct(_)
            | LocalReply::RbacDenied
            | LocalReply::BadPath
            | LocalReply::Internal => ResponseFlag::None,
        }
    }

    /// Envoy's body text.
    pub fn body(&self) -> String {
        self.body_after(false)
    }

    /// Envoy's body text when the request was `retried` (the reset replies then say
    /// `retried and the latest reset reason: ...`).
    pub fn body_after(&self, retried: bool) -> String {
        let reset = |reason: &str| {
            let retried = if retried {
                "retried and the latest "
            } else {
                ""
            };
            format!("{RESET_PREFIX}{retried}reset reason: {reason}")
        };
        match self {
            LocalReply::NoRoute
            | LocalReply::NoCluster(_)
            | LocalReply::BadPath
            | LocalReply::Internal => String::new(),
            LocalReply::RbacDenied => "RBAC: access denied".into(),
            LocalReply::NoHealthyUpstream => "no healthy upstream".into(),
            LocalReply::ConnectFailure(ConnectCause::Timeout) => reset("connection timeout"),
            LocalReply::ConnectFailure(_) => reset("remote connection failure"),
            LocalReply::Timeout | LocalReply::PerTryTimeout => "upstream request timeout".into(),
            LocalReply::StreamIdleTimeout => "stream timeout".into(),
            LocalReply::UpstreamReset => reset("connection termination"),
            LocalReply::Overflow => reset("overflow"),
            LocalReply::FaultAbort { body, .. } => {
                body.as_deref().unwrap_or("fault filter abort").to_string()
            }
            LocalReply::Direct(d) => String::from_utf8_lossy(&d.body).into_owned(),
        }
    }

    /// Envoy's response code details.
    pub fn details(&self) -> &'static str {
        match self {
            LocalReply::NoRoute => "route_not_found",
            LocalReply::NoCluster(_) => "cluster_not_found",
            LocalReply::NoHealthyUpstream => "no_healthy_upstream",
            LocalReply::ConnectFailure(cause) => match cause {
                ConnectCause::Refused => {
                    "upstream_reset_before_response_started{remote_connection_failure|\
                     delayed_connect_error:_Connection_refused}"
                }
                ConnectCause::NoRoute => {
                    "upstream_reset_before_response_started{remote_connection_failure|\
                     delayed_connect_error:_No_route_to_host}"
                }
                ConnectCause::Timeout => {
                    "upstream_reset_before_response_started{connection_timeout}"
                }
                ConnectCause::Other => {
                    "upstream_reset_before_response_started{remote_connection_failure}"
                }
            },
            LocalReply::Timeout => "response_timeout",
            LocalReply::PerTryTimeout => "upstream_per_try_timeout",
            LocalReply::StreamIdleTimeout => "stream_idle_timeout",
            LocalReply::UpstreamReset => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            LocalReply::Overflow => "upstream_reset_before_response_started{overflow}",
            LocalReply::FaultAbort { .. } => "fault_filter_abort",
            LocalReply::Direct(d) => d.details,
            LocalReply::RbacDenied => "rbac_access_denied_matched_policy[none]",
            LocalReply::BadPath => "path_normalization_failed",
            LocalReply::Internal => "internal_error",
        }
    }

    /// The gRPC status for this reply (Envoy's HTTP-to-gRPC mapping).
    pub fn grpc_status(&self) -> u32 {
        if let LocalReply::FaultAbort {
            status: AbortStatus::Grpc(code),
            ..
        } = self
        {
            return *code;
        }
        http_to_grpc(self.status())
    }
}

/// Envoy's mapping of an HTTP status to a gRPC status.
pub fn http_to_grpc(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// What a Pingora error means: connect errors are `UF`, upstream timeouts `UT`, other
/// upstream errors `UC`; downstream I/O errors mean the client is gone.
pub fn classify(e: &Error) -> Outcome {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(503)) => Outcome::Reply(LocalReply::NoHealthyUpstream),
        (
            _,
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | BindError
            | SocketError | ConnectProxyFailure | TLSHandshakeFailure | TLSHandshakeTimedout
            | InvalidCert | HandshakeError,
        ) => Outcome::Reply(LocalReply::ConnectFailure(ConnectCause::of(e))),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => {
            Outcome::Reply(LocalReply::Timeout)
        }
        (ErrorSource::Downstream, _) => Outcome::DownstreamGone,
        (ErrorSource::Upstream, _) => Outcome::Reply(LocalReply::UpstreamReset),
        _ => Outcome::Reply(LocalReply::Internal),
    }
}

/// Whether the request is gRPC (`content-type: application/grpc...`).
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Write `reply` to the downstream (its body as after a retry when `retried`), letting
/// `finalize` change the response header (the route's response header operations). Returns
/// the HTTP status written.
pub async fn send(
    session: &mut Session,
    reply: &LocalReply,
    retried: bool,
    finalize: &(dyn Fn(&mut ResponseHeader) + Send + Sync),
) -> pingora_error::Result<u16> {
    let body = reply.body_after(retried);
    let direct = matches!(reply, LocalReply::Direct(_));
    if !direct && is_grpc(session.req_header()) {
        let mut resp = ResponseHeader::build(200, Some(3))?;
        resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
        resp.insert_header("grpc-status", reply.grpc_status().to_string())?;
        if !body.is_empty() {
            resp.insert_header("grpc-message", body.as_str())?;
        }
        finalize(&mut resp);
        session.write_response_header(Box::new(resp), true).await?;
        return Ok(200);
    }
    let status = reply.status();
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    if let LocalReply::Direct(d) = reply {
        for (name, value) in &d.headers {
            resp.append_header(name.clone(), value.as_str())?;
        }
    }
    if !body.is_empty() && resp.headers.get(http::header::CONTENT_TYPE).is_none() {
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
    }
    finalize(&mut resp);
    let head_only = session.req_header().method == http::Method::HEAD;
    if body.is_empty() || head_only {
        session.write_response_header(Box::new(resp), true).await?;
    } else {
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body.into_bytes())), true)
            .await?;
    }
    Ok(status)
}

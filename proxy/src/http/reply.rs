//! Replies the proxy writes itself, as Envoy writes them: status, body, response flag and
//! details; for gRPC requests a trailers-only gRPC error (HTTP 200 with `grpc-status`).

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::accesslog::ResponseFlag;

/// A reply the proxy sends instead of (or in place of) an upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReply {
    /// No virtual host or route matched: 404 `NR`.
    NoRoute,
    /// The route's cluster does not exist: 503 `NC`.
    NoCluster,
    /// The cluster has no healthy endpoint: 503 `UH`.
    NoHealthyUpstream,
    /// Connecting to the upstream failed: 503 `UF`.
    ConnectFailure,
    /// The route's timeout elapsed: 504 `UT`.
    Timeout,
    /// The upstream closed or reset before answering: 503 `UC`.
    UpstreamReset,
    /// An RBAC filter denied the request: 403 `RBAC: access denied` (no response flag, as
    /// in Envoy; the details name the policy).
    RbacDenied,
    /// The path cannot be normalized (`%00`, refused escaped slashes): 400.
    BadPath,
    /// A proxy bug: 500.
    Internal,
}

/// What an error means for the downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answer with this reply (if nothing was sent yet).
    Reply(LocalReply),
    /// The downstream went away: nothing to send (`DC`).
    DownstreamGone,
}

impl LocalReply {
    /// HTTP status.
    pub fn status(self) -> u16 {
        match self {
            LocalReply::NoRoute => 404,
            LocalReply::NoCluster
            | LocalReply::NoHealthyUpstream
            | LocalReply::ConnectFailure
            | LocalReply::UpstreamReset => 503,
            LocalReply::Timeout => 504,
            LocalReply::RbacDenied => 403,
            LocalReply::BadPath => 400,
            LocalReply::Internal => 500,
        }
    }

    /// Envoy's response flag.
    pub fn flag(self) -> ResponseFlag {
        match self {
            LocalReply::NoRoute => ResponseFlag::NoRoute,
            LocalReply::NoCluster => ResponseFlag::NoClusterFound,
            LocalReply::NoHealthyUpstream => ResponseFlag::NoHealthyUpstream,
            LocalReply::ConnectFailure => ResponseFlag::UpstreamConnectionFailure,
            LocalReply::Timeout => ResponseFlag::UpstreamRequestTimeout,
            LocalReply::UpstreamReset => ResponseFlag::UpstreamConnectionTermination,
            LocalReply::RbacDenied | LocalReply::BadPath | LocalReply::Internal => {
                ResponseFlag::None
            }
        }
    }

    /// Envoy's body text.
    pub fn body(self) -> &'static str {
        match self {
            LocalReply::NoRoute
            | LocalReply::NoCluster
            | LocalReply::BadPath
            | LocalReply::Internal => "",
            LocalReply::RbacDenied => "RBAC: access denied",
            LocalReply::NoHealthyUpstream => "no healthy upstream",
            LocalReply::ConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            LocalReply::Timeout => "upstream request timeout",
            LocalReply::UpstreamReset => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
        }
    }

    /// Envoy's response code details.
    pub fn details(self) -> &'static str {
        match self {
            LocalReply::NoRoute => "route_not_found",
            LocalReply::NoCluster => "cluster_not_found",
            LocalReply::NoHealthyUpstream => "no_healthy_upstream",
            LocalReply::ConnectFailure => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            LocalReply::Timeout => "response_timeout",
            LocalReply::UpstreamReset => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            LocalReply::RbacDenied => "rbac_access_denied_matched_policy[none]",
            LocalReply::BadPath => "path_normalization_failed",
            LocalReply::Internal => "internal_error",
        }
    }

    /// The gRPC status for this reply (Envoy's HTTP-to-gRPC mapping).
    pub fn grpc_status(self) -> u32 {
        match self.status() {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502 | 503 | 504 => 14,
            _ => 2,
        }
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
        ) => Outcome::Reply(LocalReply::ConnectFailure),
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

/// Write `reply` to the downstream. Returns the HTTP status written.
pub async fn send(session: &mut Session, reply: LocalReply) -> pingora_error::Result<u16> {
    let body = reply.body();
    if is_grpc(session.req_header()) {
        let mut resp = ResponseHeader::build(200, Some(3))?;
        resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
        resp.insert_header("grpc-status", reply.grpc_status().to_string())?;
        if !body.is_empty() {
            resp.insert_header("grpc-message", body)?;
        }
        session.write_response_header(Box::new(resp), true).await?;
        return Ok(200);
    }
    let status = reply.status();
    let mut resp = ResponseHeader::build(status, Some(2))?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    if body.is_empty() {
        session.write_response_header(Box::new(resp), true).await?;
    } else {
        resp.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
            .await?;
    }
    Ok(status)
}

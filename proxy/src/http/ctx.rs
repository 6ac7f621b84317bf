//! Per-request state, shared by the phases of the proxy and its filters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::fault::FaultGuard;
use super::reply::LocalReply;
use super::retry::RetryState;
use super::route::{RouteEntry, Target};
use crate::accesslog::{Detail, ResponseFlag, ResponseFlags};
use crate::authz::ShadowOutcome;
use crate::listener::conn::ConnContext;
use crate::snapshot::{ChainRuntime, Snapshot};
use crate::upstream::host::ActiveRequest;
use crate::upstream::limits::Permit;
use crate::upstream::{ClusterRuntime, Picked};

/// The route a request matched and the target chosen among its weighted clusters.
#[derive(Debug, Clone)]
pub struct MatchedRoute {
    /// The route.
    pub entry: Arc<RouteEntry>,
    /// Index into the route's targets.
    pub target: usize,
}

impl MatchedRoute {
    /// The chosen target.
    pub fn target(&self) -> &Target {
        &self.entry.targets[self.target]
    }
}

/// The router's decision to forward, and the state of the attempts.
#[derive(Debug)]
pub struct Forward {
    /// The cluster's name.
    pub cluster_name: String,
    /// The cluster.
    pub cluster: Arc<ClusterRuntime>,
    /// Overall timeout.
    pub timeout: Option<Duration>,
    /// Per-attempt timeout.
    pub per_try_timeout: Option<Duration>,
    /// Idle timeout.
    pub idle_timeout: Option<Duration>,
    /// The consistent-hash key.
    pub hash: Option<u64>,
    /// A cookie to set on the response (hash policy cookie with a TTL).
    pub set_cookie: Option<String>,
    /// `max_requests` slot.
    pub request_permit: Option<Permit>,
    /// `max_connections` slot (HTTP/1.1 upstreams).
    pub connection_permit: Option<Permit>,
    /// The host of the current attempt.
    pub host: Option<Picked>,
    /// The current attempt counted on its host.
    pub active: Option<ActiveRequest>,
    /// The current attempt's upstream connection must not be reused.
    pub close_connection: bool,
    /// The path was rewritten: the original, for `x-envoy-original-path`.
    pub rewritten_path: Option<String>,
}

/// Per-request state, shared by the phases and filters.
#[derive(Debug)]
pub struct RequestCtx {
    pub(crate) start_time: SystemTime,
    pub(crate) started: Instant,
    /// The connection's context.
    pub conn: Option<Arc<ConnContext>>,
    /// The snapshot the request was routed under.
    pub snapshot: Option<Arc<Snapshot>>,
    /// The filter chain that handles the request: the connection's, or the one that replaced
    /// it since the connection was accepted (see [`crate::listener::current_chain`]).
    pub chain: Option<Arc<ChainRuntime>>,
    /// The request's authority.
    pub authority: Option<String>,
    /// `x-request-id` (received or generated).
    pub request_id: Option<String>,
    pub(crate) generated_request_id: bool,
    /// `x-forwarded-proto` to add (`http` or `https`, the downstream's scheme) when the
    /// request came without one.
    pub(crate) forwarded_proto: Option<&'static str>,
    /// The matched route.
    pub route: Option<MatchedRoute>,
    /// The router's forwarding decision.
    pub forward: Option<Forward>,
    /// Retry bookkeeping.
    pub retry: RetryState,
    /// The upstream endpoint chosen (last attempt).
    pub upstream: Option<SocketAddr>,
    /// When the route's timeout expires (set when the first upstream attempt starts).
    pub deadline: Option<Instant>,
    /// When the current attempt's timeout expires.
    pub attempt_deadline: Option<Instant>,
    /// A local reply decided by a phase, for `fail_to_proxy` to write.
    pub failure: Option<LocalReply>,
    /// Response flags for the access log.
    pub flags: ResponseFlags,
    /// Response code details for the access log.
    pub details: Option<Detail>,
    /// What the dry-run authorization rules decided, if any applied.
    pub shadow: Option<ShadowOutcome>,
    /// Whether an AUDIT rule matched, if any applied.
    pub audit: Option<bool>,
    /// Why the TLS connection to the upstream failed, for the access log.
    pub upstream_transport_failure: Option<String>,
    /// The fault filter's active-fault slot.
    pub fault: Option<FaultGuard>,
    /// CORS headers to add to the response: the allowed origin.
    pub cors_origin: Option<String>,
    /// Mirrors receiving the request body.
    pub mirrors: Vec<mpsc::Sender<Bytes>>,
    /// The upstream response status (last attempt).
    pub upstream_status: Option<u16>,
    /// Peer metadata, span, upstream timing: metrics, tracing and the access log.
    pub telemetry: super::telemetry::RequestTelemetry,
}

impl RequestCtx {
    /// A fresh context.
    pub fn new() -> RequestCtx {
        RequestCtx {
            start_time: SystemTime::now(),
            started: Instant::now(),
            conn: None,
            snapshot: None,
            chain: None,
            authority: None,
            request_id: None,
            generated_request_id: false,
            forwarded_proto: None,
            route: None,
            forward: None,
            retry: RetryState::default(),
            upstream: None,
            deadline: None,
            attempt_deadline: None,
            failure: None,
            flags: ResponseFlags::default(),
            details: None,
            shadow: None,
            audit: None,
            upstream_transport_failure: None,
            fault: None,
            cors_origin: None,
            mirrors: Vec::new(),
            upstream_status: None,
            telemetry: super::telemetry::RequestTelemetry::default(),
        }
    }

    /// Record a local reply's flag and details.
    pub fn record(&mut self, reply: &LocalReply) {
        self.flags.insert(reply.flag());
        // An RBAC denial names its policy (set by the filter); keep that.
        if !(*reply == LocalReply::RbacDenied && self.details.is_some()) {
            self.details = Some(reply.details().into());
        }
        // A gRPC caller gets the reply as a gRPC status (`reply::send`): the metrics say which.
        if self.telemetry.grpc && !matches!(reply, LocalReply::Direct(_)) {
            self.telemetry.grpc_status = u16::try_from(reply.grpc_status()).ok();
        }
    }

    /// Add a flag.
    pub fn flag(&mut self, flag: ResponseFlag) {
        self.flags.insert(flag);
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx::new()
    }
}

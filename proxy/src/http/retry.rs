//! Retries, as Envoy's router decides them: which failures a policy retries (`retry_on`), how
//! many times, with which back-off, and never when the request cannot be replayed: a body
//! larger than Pingora's 64 KiB replay buffer, or a non-idempotent request whose bytes reached
//! the upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora_http::ResponseHeader;
use rand::Rng;
use xds_client::model::{RetryOn, RetryPolicy};

use crate::upstream::limits::{ClusterLimits, Permit};

/// How an attempt failed before a response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made.
    ConnectFailure,
    /// The upstream closed or reset; `before_request` when nothing was sent (a stale pooled
    /// connection).
    Reset {
        /// The request had not been sent.
        before_request: bool,
    },
    /// HTTP/2 `REFUSED_STREAM`.
    RefusedStream,
    /// The attempt's own timeout (`per_try_timeout`).
    PerTryTimeout,
}

/// A request's retry bookkeeping.
#[derive(Debug, Default)]
pub struct RetryState {
    /// The route's policy (`None`: no retries).
    pub policy: Option<Arc<RetryPolicy>>,
    /// Whether the request's headers allow retries (`retriable_request_headers`).
    pub request_allowed: bool,
    /// Attempts started so far.
    pub attempts: u32,
    /// Hosts tried so far.
    pub tried_hosts: Vec<SocketAddr>,
    /// Priorities tried so far.
    pub tried_priorities: Vec<u32>,
    /// The retry circuit-breaker slot of the retry in flight.
    pub permit: Option<Permit>,
    /// Wait this long before the next attempt.
    pub backoff: Option<Duration>,
    /// A retry was wanted but none was left (`URX`).
    pub exhausted: bool,
    /// Transparent retries of requests that met a stale pooled connection.
    pub stale_retries: u32,
}

impl RetryState {
    /// The state for a request under `policy`.
    pub fn new(policy: Option<Arc<RetryPolicy>>, request_allowed: bool) -> RetryState {
        RetryState {
            policy,
            request_allowed,
            ..RetryState::default()
        }
    }

    fn retry_on(&self) -> RetryOn {
        self.policy
            .as_ref()
            .map_or(RetryOn::empty(), |p| p.retry_on)
    }

    /// Whether the policy retries this response (status, gRPC status, headers).
    pub fn retriable_response(&self, resp: &ResponseHeader) -> bool {
        let Some(policy) = &self.policy else {
            return false;
        };
        let on = policy.retry_on;
        let status = resp.status.as_u16();
        let header = |name: &str| resp.headers.get(name);
        if header("x-envoy-overloaded").is_some() {
            return false;
        }
        if header("x-envoy-ratelimited").is_some() {
            return on.intersects(RetryOn::ENVOY_RATELIMITED);
        }
        if on.intersects(RetryOn::FIVE_XX) && (500..600).contains(&status) {
            return true;
        }
        if on.intersects(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504) {
            return true;
        }
        if on.intersects(RetryOn::RETRIABLE_4XX) && status == 409 {
            return true;
        }
        if on.intersects(RetryOn::RETRIABLE_STATUS_CODES)
            && policy.retriable_status_codes.contains(&status)
        {
            return true;
        }
        if on.intersects(RetryOn::RETRIABLE_HEADERS)
            && policy.retriable_headers.iter().any(|m| {
                m.matches(
                    resp.headers
                        .get(m.name.as_str())
                        .and_then(|v| v.to_str().ok()),
                )
            })
        {
            return true;
        }
        self.retriable_grpc_status(resp)
    }

    /// Whether the response carries a gRPC status (a trailers-only answer) the policy's
    /// gRPC `retry_on` values name (`cancelled`, `deadline-exceeded`, `internal`,
    /// `resource-exhausted`, `unavailable`). The route asked for exactly these retries of
    /// gRPC calls, which are all POSTs, so they apply to non-idempotent requests too.
    pub fn retriable_grpc_status(&self, resp: &ResponseHeader) -> bool {
        let Some(policy) = &self.policy else {
            return false;
        };
        let Some(code) = resp
            .headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
        else {
            return false;
        };
        let wanted = match code {
            1 => RetryOn::GRPC_CANCELLED,
            4 => RetryOn::GRPC_DEADLINE_EXCEEDED,
            8 => RetryOn::GRPC_RESOURCE_EXHAUSTED,
            13 => RetryOn::GRPC_INTERNAL,
            14 => RetryOn::GRPC_UNAVAILABLE,
            _ => RetryOn::empty(),
        };
        policy.retry_on.intersects(wanted)
    }

    /// Whether the policy retries this failure.
    pub fn retriable_failure(&self, failure: Failure) -> bool {
        let on = self.retry_on();
        let any_reset = on.intersects(
            RetryOn::FIVE_XX
                .union(RetryOn::GATEWAY_ERROR)
                .union(RetryOn::RESET),
        );
        match failure {
            Failure::ConnectFailure => any_reset || on.intersects(RetryOn::CONNECT_FAILURE),
            Failure::Reset { before_request } => {
                any_reset || (before_request && on.intersects(RetryOn::RESET_BEFORE_REQUEST))
            }
            Failure::RefusedStream => any_reset || on.intersects(RetryOn::REFUSED_STREAM),
            Failure::PerTryTimeout => on.intersects(
                RetryOn::FIVE_XX
                    .union(RetryOn::GATEWAY_ERROR)
                    .union(RetryOn::RESET),
            ),
        }
    }

    /// Decide a retry of a retriable failure: a retry must be left, the request replayable
    /// and the cluster's `max_retries` not reached. Sets the back-off on success; records
    /// `exhausted` when no retry was left.
    pub fn take_retry(
        &mut self,
        replayable: bool,
        limits: &Arc<ClusterLimits>,
        max_retries: u32,
    ) -> bool {
        let Some(policy) = self.policy.clone() else {
            return false;
        };
        if !self.request_allowed || !replayable {
            return false;
        }
        if self.attempts > policy.num_retries {
            self.exhausted = true;
            return false;
        }
        let Some(permit) = limits.retry(max_retries) else {
            return false;
        };
        self.permit = Some(permit);
        self.backoff = Some(backoff(&policy, self.attempts));
        true
    }
}

/// Envoy's fully jittered exponential back-off before retry number `retry` (1-based):
/// uniform in `[0, base * 2^(retry-1))`, capped at `max`.
pub fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let base = policy.back_off.base.as_millis().max(1) as u64;
    let max = policy.back_off.max.as_millis().max(1) as u64;
    let exp = retry.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1u64 << exp).min(max);
    Duration::from_millis(rand::rng().random_range(0..ceiling.max(1)))
}

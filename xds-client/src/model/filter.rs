//! Settings of the HTTP filters besides the router: fault injection
//! (`envoy.filters.http.fault`) and CORS (`envoy.filters.http.cors`), as filter-wide settings
//! and as per-route settings (`typed_per_filter_config`).

use std::time::Duration;

use serde::Serialize;

use super::matcher::{Fraction, HeaderMatcher, StringMatcher};

/// Envoy's name of the fault filter (the `typed_per_filter_config` key).
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// Envoy's name of the CORS filter (the `typed_per_filter_config` key).
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Per-filter settings of a route, virtual host or weighted cluster. The most specific level
/// that sets a filter's settings wins (weighted cluster, route, virtual host).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FilterConfigs {
    /// Fault injection for the route.
    pub fault: Option<FaultConfig>,
    /// CORS policy for the route.
    pub cors: Option<CorsPolicy>,
}

impl FilterConfigs {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.fault.is_none() && self.cors.is_none()
    }
}

/// Envoy's `HTTPFault`: delay and/or abort a share of the requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FaultConfig {
    /// Delay before forwarding.
    pub delay: Option<FaultDelay>,
    /// Answer locally instead of forwarding.
    pub abort: Option<FaultAbort>,
    /// The fault applies only to requests matching all of these.
    pub headers: Vec<HeaderMatcher>,
    /// At most this many requests faulted at once; `None`: unlimited.
    pub max_active_faults: Option<u32>,
}

/// A fixed delay applied to a share of the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FaultDelay {
    /// How long.
    pub duration: Duration,
    /// Share of requests delayed.
    pub fraction: Fraction,
}

/// A local answer for a share of the requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultAbort {
    /// HTTP status or gRPC status.
    pub status: AbortStatus,
    /// Share of requests aborted.
    pub fraction: Fraction,
    /// Body of the answer (Envoy's default `fault filter abort`).
    pub body: Option<String>,
}

/// The status of an aborted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AbortStatus {
    /// An HTTP status (200-599).
    Http(u16),
    /// A gRPC status (HTTP 200, `grpc-status`).
    Grpc(u32),
}

/// Envoy's `CorsPolicy` (`envoy.extensions.filters.http.cors.v3`, or the route's legacy
/// `cors` field).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CorsPolicy {
    /// Origins allowed; a request whose `origin` matches none gets no CORS headers.
    pub allow_origin: Vec<StringMatcher>,
    /// `access-control-allow-methods`.
    pub allow_methods: String,
    /// `access-control-allow-headers`.
    pub allow_headers: String,
    /// `access-control-expose-headers`.
    pub expose_headers: String,
    /// `access-control-max-age`.
    pub max_age: String,
    /// `access-control-allow-credentials: true`.
    pub allow_credentials: bool,
    /// `access-control-allow-private-network: true` on preflights that ask for it.
    pub allow_private_network_access: bool,
    /// Forward preflights whose origin is not allowed (else answer them locally, without CORS
    /// headers).
    pub forward_not_matching_preflights: bool,
    /// Share of requests the policy applies to.
    pub enabled: Fraction,
}

//! A cluster's traffic policy (what istiod derives from a DestinationRule): load-balancer
//! settings, circuit breakers, outlier detection and connection options.

use std::time::Duration;

use serde::Serialize;

/// Settings of the load balancers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LbSettings {
    /// `RING_HASH`: the ring has between `min` and `max` entries.
    pub ring_size: (u64, u64),
    /// `MAGLEV`: the lookup table's size (a prime).
    pub maglev_table_size: u64,
    /// `LEAST_REQUEST`: hosts compared per pick.
    pub least_request_choices: u32,
    /// Below this percentage of available hosts, balance over all hosts ignoring outlier
    /// ejections (Envoy's panic mode; Istio's `minHealthPercent`). 0 disables it.
    pub healthy_panic_threshold: f64,
}

impl Default for LbSettings {
    /// Envoy's defaults.
    fn default() -> Self {
        LbSettings {
            ring_size: (1024, 8 * 1024 * 1024),
            maglev_table_size: 65537,
            least_request_choices: 2,
            healthy_panic_threshold: 50.0,
        }
    }
}

/// Envoy's circuit breaker thresholds for the default priority: limits across the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CircuitBreakers {
    /// Upstream connections (for HTTP/1.1, requests in flight: one per connection).
    pub max_connections: u32,
    /// Requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Requests in flight.
    pub max_requests: u32,
    /// Retries in flight.
    pub max_retries: u32,
}

impl Default for CircuitBreakers {
    /// Envoy's defaults when a cluster sets no thresholds.
    fn default() -> Self {
        CircuitBreakers {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// Envoy's outlier detection, the consecutive-error detectors (success-rate and
/// failure-percentage detection are not enforced; istiod disables them).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutlierDetection {
    /// Consecutive 5xx (and, unless split, local-origin failures) that eject a host.
    pub consecutive_5xx: u32,
    /// Chance (percent) that reaching `consecutive_5xx` ejects.
    pub enforcing_consecutive_5xx: u32,
    /// Consecutive 502/503/504 (and, unless split, local-origin failures) that eject a host.
    pub consecutive_gateway_failure: u32,
    /// Chance (percent) that reaching `consecutive_gateway_failure` ejects.
    pub enforcing_consecutive_gateway_failure: u32,
    /// Count connect failures, timeouts and resets apart from HTTP statuses.
    pub split_external_local_origin_errors: bool,
    /// Consecutive local-origin failures that eject a host (when split).
    pub consecutive_local_origin_failure: u32,
    /// Chance (percent) that reaching `consecutive_local_origin_failure` ejects.
    pub enforcing_consecutive_local_origin_failure: u32,
    /// How often ejection multipliers decay.
    pub interval: Duration,
    /// Ejection time, multiplied by the number of times the host was ejected.
    pub base_ejection_time: Duration,
    /// Upper bound of an ejection.
    pub max_ejection_time: Duration,
    /// At most this percentage of hosts ejected at once (one host may always be).
    pub max_ejection_percent: u32,
    /// Eject one host even when `max_ejection_percent` would allow none.
    pub always_eject_one_host: bool,
}

/// Connection settings towards the upstream.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConnectionOptions {
    /// Close an upstream connection idle this long (Envoy's default 1 hour).
    pub idle_timeout: Option<Duration>,
    /// Requests per upstream connection, then it is closed.
    pub max_requests_per_connection: Option<u32>,
    /// Upstream connections are closed after this long.
    pub max_connection_duration: Option<Duration>,
    /// TCP keepalive on upstream sockets.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// HTTP/2: concurrent streams per upstream connection.
    pub h2_max_concurrent_streams: Option<u32>,
    /// HTTP/2: initial stream window.
    pub h2_initial_stream_window: Option<u32>,
    /// HTTP/2: initial connection window.
    pub h2_initial_connection_window: Option<u32>,
}

/// TCP keepalive settings; unset values are the system's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    pub probes: Option<u32>,
    /// Idle time before the first probe.
    pub time: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
}

//! `envoy.filters.http.fault`: delay and/or abort a share of the requests, with the route's
//! settings (`typed_per_filter_config`) or else the filter's own. The delay comes first; an
//! abort answers locally with the configured HTTP status (or gRPC status) and Envoy's body
//! `fault filter abort`. Response flags `DI` and `FI`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use xds_client::model::FaultConfig;

use super::ctx::MatchedRoute;
use super::reply::LocalReply;
use super::route::RequestInfo;

/// What the fault filter decided for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Wait this long first.
    pub delay: Option<Duration>,
    /// Then answer with this.
    pub abort: Option<LocalReply>,
}

/// The filter, built once per snapshot from the connection manager's settings.
#[derive(Debug)]
pub struct FaultFilter {
    defaults: Arc<FaultConfig>,
    active: Arc<AtomicU32>,
    /// Requests delayed so far.
    pub delays_injected: AtomicU64,
    /// Requests aborted so far.
    pub aborts_injected: AtomicU64,
}

/// One active fault, released when the request ends.
#[derive(Debug)]
pub struct FaultGuard {
    active: Arc<AtomicU32>,
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FaultFilter {
    /// The filter with its filter-wide settings.
    pub fn new(defaults: &FaultConfig) -> FaultFilter {
        FaultFilter {
            defaults: Arc::new(defaults.clone()),
            active: Arc::new(AtomicU32::new(0)),
            delays_injected: AtomicU64::new(0),
            aborts_injected: AtomicU64::new(0),
        }
    }

    /// Decide for a request; `draws` are two uniform values in `[0, 1_000_000)` (delay,
    /// abort). Returns the decision and, when a fault applies, its active-fault slot.
    pub fn decide(
        &self,
        info: &RequestInfo<'_>,
        route: Option<&MatchedRoute>,
        draws: (u32, u32),
    ) -> (Decision, Option<FaultGuard>) {
        let config = route
            .and_then(|r| r.target().fault.as_deref())
            .unwrap_or(&self.defaults);
        if config.delay.is_none() && config.abort.is_none() {
            return (Decision::default(), None);
        }
        if !info.headers_match(&config.headers) {
            return (Decision::default(), None);
        }
        let delay = config
            .delay
            .filter(|d| d.fraction.hit(draws.0))
            .map(|d| d.duration);
        let abort = config
            .abort
            .as_ref()
            .filter(|a| a.fraction.hit(draws.1))
            .map(|a| LocalReply::FaultAbort {
                status: a.status,
                body: a.body.as_deref().map(Arc::from),
            });
        if delay.is_none() && abort.is_none() {
            return (Decision::default(), None);
        }
        let max = config.max_active_faults.unwrap_or(u32::MAX);
        let admitted = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return (Decision::default(), None);
        }
        if delay.is_some() {
            self.delays_injected.fetch_add(1, Ordering::Relaxed);
        }
        if abort.is_some() {
            self.aborts_injected.fetch_add(1, Ordering::Relaxed);
        }
        let guard = FaultGuard {
            active: self.active.clone(),
        };
        (Decision { delay, abort }, Some(guard))
    }
}

/// Two uniform draws in `[0, 1_000_000)`.
pub fn draws() -> (u32, u32) {
    let mut rng = rand::rng();
    (
        rng.random_range(0..1_000_000),
        rng.random_range(0..1_000_000),
    )
}

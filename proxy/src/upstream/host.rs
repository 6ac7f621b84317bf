//! The live state of one upstream endpoint: requests in flight (for `LEAST_REQUEST`) and its
//! outlier-detection record (consecutive errors, ejection). It is shared by every snapshot in
//! which the endpoint's address appears in the same cluster, so that a config push neither
//! forgets an ejection nor resets the counts.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xds_client::model::OutlierDetection;

/// What one attempt against a host came to, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// A response with this status.
    Status(u16),
    /// Connect failure, timeout or reset (a "local origin" error).
    LocalFailure,
}

/// One endpoint's live state.
#[derive(Debug)]
pub struct HostState {
    active: AtomicU32,
    counters: HostCounters,
    /// Milliseconds since `epoch` until which the host is ejected (0: not ejected).
    ejected_until: AtomicU64,
    record: Mutex<OutlierRecord>,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct OutlierRecord {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    /// Times ejected, decayed by one per detection interval spent healthy.
    ejections: u32,
    /// When the multiplier was last updated (ejection or decay).
    last_change: Option<Instant>,
}

/// Whether a result should count towards ejection, by detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// Keep going.
    None,
    /// A detector reached its threshold and decided to eject.
    Eject,
}

impl HostState {
    /// A fresh state: no request in flight, never ejected.
    pub fn new(epoch: Instant) -> Arc<HostState> {
        Arc::new(HostState {
            active: AtomicU32::new(0),
            counters: HostCounters::default(),
            ejected_until: AtomicU64::new(0),
            record: Mutex::new(OutlierRecord::default()),
            epoch,
        })
    }

    /// Requests in flight to this host.
    pub fn active_requests(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Count a request in flight until the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest { host: self.clone() }
    }

    /// An HTTP request sent to this host (one attempt), in flight until the guard is dropped.
    pub fn start_http_request(self: &Arc<Self>) -> ActiveRequest {
        self.counters.rq_total.fetch_add(1, Ordering::Relaxed);
        self.start_request()
    }

    /// How an HTTP attempt against this host ended (`/clusters`' per-host counters).
    pub fn request_ended(&self, end: RequestEnd) {
        let c = &self.counters;
        let counter = match end {
            RequestEnd::Response(status) if status < 500 => &c.rq_success,
            RequestEnd::Response(_) | RequestEnd::Failed => &c.rq_error,
            RequestEnd::TimedOut => {
                c.rq_timeout.fetch_add(1, Ordering::Relaxed);
                &c.rq_error
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection to this host opened.
    pub fn connection_opened(&self) {
        self.counters.cx_total.fetch_add(1, Ordering::Relaxed);
        self.counters.cx_active.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection counted by [`HostState::connection_opened`] closed.
    pub fn connection_closed(&self) {
        let _ = self
            .counters
            .cx_active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A connection to this host could not be made.
    pub fn connect_failed(&self) {
        self.counters
            .cx_connect_fail
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Envoy's per-host counters, in `/clusters`' order.
    pub fn counts(&self) -> HostCounts {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HostCounts {
            cx_active: get(&c.cx_active),
            cx_connect_fail: get(&c.cx_connect_fail),
            cx_total: get(&c.cx_total),
            rq_active: u64::from(self.active_requests()),
            rq_error: get(&c.rq_error),
            rq_success: get(&c.rq_success),
            rq_timeout: get(&c.rq_timeout),
            rq_total: get(&c.rq_total),
        }
    }

    /// [`HostState::millis`] rounded up: an ejection never ends before its time.
    fn millis_ceil(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch)
            .as_nanos()
            .div_ceil(1_000_000) as u64
            + 1
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// Whether the host is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > self.millis(now)
    }

    /// Record one attempt's result; returns whether a detector asks for an ejection. The
    /// caller checks the cluster-wide cap and then calls [`HostState::eject`].
    pub fn record(&self, result: AttemptResult, od: &OutlierDetection, draw: u32) -> Trip {
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        let (is_5xx, is_gateway, is_local) = match result {
            AttemptResult::Status(s) => (s >= 500, matches!(s, 502..=504), false),
            AttemptResult::LocalFailure => {
                let counted = !od.split_external_local_origin_errors;
                (counted, counted, true)
            }
        };
        if !is_local {
            // The upstream answered: the connection side is fine.
            r.consecutive_local = 0;
        }
        if !is_5xx && !is_local {
            r.consecutive_5xx = 0;
            r.consecutive_gateway = 0;
            return Trip::None;
        }
        let enforce = |percent: u32| draw % 100 < percent;
        let mut trip = false;
        if is_local && od.split_external_local_origin_errors {
            r.consecutive_local += 1;
            if r.consecutive_local >= od.consecutive_local_origin_failure
                && enforce(od.enforcing_consecutive_local_origin_failure)
            {
                trip = true;
            }
        }
        if is_5xx {
            r.consecutive_5xx += 1;
            if r.consecutive_5xx >= od.consecutive_5xx && enforce(od.enforcing_consecutive_5xx) {
                trip = true;
            }
        }
        if is_gateway {
            r.consecutive_gateway += 1;
            if r.consecutive_gateway >= od.consecutive_gateway_failure
                && enforce(od.enforcing_consecutive_gateway_failure)
            {
                trip = true;
            }
        } else if is_5xx {
            r.consecutive_gateway = 0;
        }
        if trip {
            Trip::Eject
        } else {
            Trip::None
        }
    }

    /// Eject the host now: for the base ejection time times the number of ejections
    /// (decayed by one per interval since the last change), capped at the maximum.
    /// Returns how long.
    pub fn eject(&self, od: &OutlierDetection, now: Instant) -> Duration {
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = r.last_change {
            let intervals =
                now.saturating_duration_since(last).as_millis() / od.interval.as_millis().max(1);
            r.ejections = r
                .ejections
                .saturating_sub(intervals.min(u32::MAX as u128) as u32);
        }
        r.ejections = r.ejections.saturating_add(1);
        r.consecutive_5xx = 0;
        r.consecutive_gateway = 0;
        r.consecutive_local = 0;
        let time = od
            .base_ejection_time
            .saturating_mul(r.ejections)
            .min(od.max_ejection_time);
        // The decay starts once the ejection ends.
        r.last_change = Some(now + time);
        self.ejected_until
            .store(self.millis_ceil(now + time), Ordering::Relaxed);
        time
    }
}

/// How one HTTP attempt against a host ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestEnd {
    /// The host answered with this status (5xx counts as an error).
    Response(u16),
    /// Connect failure, reset or refused stream.
    Failed,
    /// The route or per-try timeout fired.
    TimedOut,
}

#[derive(Debug, Default)]
struct HostCounters {
    cx_active: AtomicU64,
    cx_connect_fail: AtomicU64,
    cx_total: AtomicU64,
    rq_error: AtomicU64,
    rq_success: AtomicU64,
    rq_timeout: AtomicU64,
    rq_total: AtomicU64,
}

/// A copy of one host's counters (Envoy's per-host statistics in `/clusters`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCounts {
    /// Connections open now.
    pub cx_active: u64,
    /// Connections that could not be made.
    pub cx_connect_fail: u64,
    /// Connections opened.
    pub cx_total: u64,
    /// Requests in flight.
    pub rq_active: u64,
    /// Attempts that failed or got a 5xx.
    pub rq_error: u64,
    /// Attempts answered below 500.
    pub rq_success: u64,
    /// Attempts that timed out.
    pub rq_timeout: u64,
    /// Attempts sent.
    pub rq_total: u64,
}

impl HostCounts {
    /// `(name, value)` pairs in Envoy's `/clusters` order.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("cx_active", self.cx_active),
            ("cx_connect_fail", self.cx_connect_fail),
            ("cx_total", self.cx_total),
            ("rq_active", self.rq_active),
            ("rq_error", self.rq_error),
            ("rq_success", self.rq_success),
            ("rq_timeout", self.rq_timeout),
            ("rq_total", self.rq_total),
        ]
    }
}

/// A request in flight to a host; decrements the count when dropped.
#[derive(Debug)]
pub struct ActiveRequest {
    host: Arc<HostState>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.host.active.fetch_sub(1, Ordering::Relaxed);
    }
}

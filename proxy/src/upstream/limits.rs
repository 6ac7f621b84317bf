//! Circuit breaking: a cluster's counts of requests, connections, pending requests and
//! retries in flight, checked against its thresholds (Istio's `connectionPool`). Overflow is
//! answered at once (503 `UO`); requests wait for a connection only while fewer than
//! `max_pending_requests` already do.
//!
//! The counts live in a [`ClusterLimits`] shared by every snapshot that has the cluster, so
//! that requests admitted under an old snapshot still count; the thresholds are read from
//! the current config at each check.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

/// The counts of one cluster.
#[derive(Debug, Default)]
pub struct ClusterLimits {
    requests: AtomicU32,
    connections: AtomicU32,
    pending: AtomicU32,
    retries: AtomicU32,
    freed: Notify,
    /// Requests or connections refused by a threshold.
    pub overflows: AtomicU64,
}

/// Which count a [`Permit`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Connection,
    Retry,
}

/// One unit of a count, released when dropped.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<ClusterLimits>,
    kind: Kind,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let counter = self.limits.counter(self.kind);
        counter.fetch_sub(1, Ordering::AcqRel);
        if self.kind == Kind::Connection {
            self.limits.freed.notify_one();
        }
    }
}

/// A threshold refused the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker overflow")]
pub struct Overflow;

/// Why no connection slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Too many requests already wait.
    #[error(transparent)]
    Overflow(#[from] Overflow),
    /// The deadline passed while waiting.
    #[error("timed out waiting for a connection")]
    Timeout,
}

impl ClusterLimits {
    fn counter(&self, kind: Kind) -> &AtomicU32 {
        match kind {
            Kind::Request => &self.requests,
            Kind::Connection => &self.connections,
            Kind::Retry => &self.retries,
        }
    }

    fn try_take(self: &Arc<Self>, kind: Kind, max: u32) -> Option<Permit> {
        let counter = self.counter(kind);
        let mut current = counter.load(Ordering::Acquire);
        loop {
            if current >= max {
                return None;
            }
            match counter.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Permit {
                        limits: self.clone(),
                        kind,
                    })
                }
                Err(now) => current = now,
            }
        }
    }

    fn overflow(&self) -> Overflow {
        self.overflows.fetch_add(1, Ordering::Relaxed);
        Overflow
    }

    /// Admit a request (`max_requests`).
    pub fn request(self: &Arc<Self>, max: u32) -> Result<Permit, Overflow> {
        self.try_take(Kind::Request, max)
            .ok_or_else(|| self.overflow())
    }

    /// A connection slot (`max_connections`) without waiting (TCP proxying).
    pub fn try_connection(self: &Arc<Self>, max: u32) -> Result<Permit, Overflow> {
        self.try_take(Kind::Connection, max)
            .ok_or_else(|| self.overflow())
    }

    /// Admit a retry (`max_retries`); `None` means the retry must not happen.
    pub fn retry(self: &Arc<Self>, max: u32) -> Option<Permit> {
        let permit = self.try_take(Kind::Retry, max);
        if permit.is_none() {
            self.overflows.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    /// A connection slot (`max_connections`), waiting as one of at most `max_pending`
    /// pending requests until one frees up or `deadline` passes.
    pub async fn connection(
        self: &Arc<Self>,
        max_connections: u32,
        max_pending: u32,
        deadline: Option<Instant>,
    ) -> Result<Permit, Refused> {
        if let Some(permit) = self.try_take(Kind::Connection, max_connections) {
            return Ok(permit);
        }
        let Some(_pending) = self.try_take_pending(max_pending) else {
            return Err(Refused::Overflow(self.overflow()));
        };
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(permit) = self.try_take(Kind::Connection, max_connections) {
                return Ok(permit);
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline.into(), freed)
                        .await
                        .is_err()
                    {
                        return Err(Refused::Timeout);
                    }
                }
                None => freed.await,
            }
        }
    }

    fn try_take_pending(self: &Arc<Self>, max: u32) -> Option<PendingGuard> {
        let mut current = self.pending.load(Ordering::Acquire);
        loop {
            if current >= max {
                return None;
            }
            match self.pending.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(PendingGuard {
                        limits: self.clone(),
                    })
                }
                Err(now) => current = now,
            }
        }
    }

    /// Requests in flight.
    pub fn active_requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Connection slots in use.
    pub fn active_connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// One pending request, uncounted when dropped.
#[derive(Debug)]
struct PendingGuard {
    limits: Arc<ClusterLimits>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.limits.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

//! Upstream selection shared by the HTTP and TCP proxies: a cluster's live state (its healthy
//! endpoints in load-balancing order and the round-robin cursor) and the choice of the address
//! to connect to.
//!
//! A [`ClusterRuntime`] is built beside the config for every snapshot (see
//! [`crate::snapshot`]); the cursor is carried over from the previous snapshot so that a config
//! push does not restart every cluster at its first endpoint.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use xds_client::model::{
    Cluster, ClusterLoadAssignment, Discovery, HealthStatus, LbPolicy, UpstreamProtocol,
};

#[cfg(test)]
mod tests;

/// Longest weighted round-robin sequence precomputed per cluster; beyond it, weights are
/// ignored and endpoints are taken in turn.
const MAX_WRR_SEQUENCE: u64 = 4096;

/// Why no upstream address could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// The cluster has no healthy endpoint (Envoy's `UH`; also the black hole).
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// An `ORIGINAL_DST` cluster was asked to connect to a connection that was not redirected:
    /// its original destination is the proxy's own listener, and connecting there would loop.
    #[error("original destination is the proxy's own listener")]
    NotRedirected,
}

/// The downstream connection's destination, as an `ORIGINAL_DST` cluster needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalDestination {
    /// The original destination (`SO_ORIGINAL_DST`, or the listener address when the
    /// connection was not redirected).
    pub address: SocketAddr,
    /// False when the connection was addressed to the listener itself.
    pub redirected: bool,
}

/// A cluster as the data path uses it: the config plus its load-balancing state.
#[derive(Debug)]
pub struct ClusterRuntime {
    cluster: Cluster,
    /// Healthy endpoints in the order they are handed out (weighted round robin, smoothed).
    sequence: Arc<[SocketAddr]>,
    cursor: AtomicUsize,
    group_key: u64,
}

impl ClusterRuntime {
    /// Build the runtime of `cluster` with its EDS endpoints (`eds`, ignored for other
    /// discovery types), continuing the round-robin cursor of `previous`.
    pub fn new(
        cluster: &Cluster,
        eds: Option<&ClusterLoadAssignment>,
        previous: Option<&ClusterRuntime>,
    ) -> ClusterRuntime {
        let assignment = match &cluster.discovery {
            Discovery::Eds { .. } => eds,
            Discovery::Static(cla) => Some(cla),
            Discovery::OriginalDst => None,
        };
        let healthy: Vec<(SocketAddr, u32)> = assignment
            .map(|cla| {
                cla.endpoints
                    .iter()
                    .filter(|e| e.health == HealthStatus::Healthy)
                    .map(|e| (e.address, e.weight.max(1)))
                    .collect()
            })
            .unwrap_or_default();
        let mut hasher = DefaultHasher::new();
        cluster.name.hash(&mut hasher);
        ClusterRuntime {
            cluster: cluster.clone(),
            sequence: wrr_sequence(&healthy).into(),
            cursor: AtomicUsize::new(previous.map_or(0, |p| p.cursor.load(Ordering::Relaxed))),
            group_key: hasher.finish(),
        }
    }

    /// The cluster's config.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.cluster.name
    }

    /// Whether a request could be sent now: an `ORIGINAL_DST` cluster always can, others need
    /// a healthy endpoint.
    pub fn has_healthy_endpoint(&self) -> bool {
        matches!(self.cluster.discovery, Discovery::OriginalDst) || !self.sequence.is_empty()
    }

    /// The connection-pool key: connections are never shared between clusters (they may
    /// differ in bind address, protocol or, later, identity).
    pub fn group_key(&self) -> u64 {
        self.group_key
    }

    /// Local address to bind upstream sockets to.
    pub fn bind_address(&self) -> Option<IpAddr> {
        self.cluster.bind_address
    }

    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.cluster.connect_timeout
    }

    /// Protocol spoken to the upstream.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.cluster.upstream_protocol
    }

    /// Choose the address for the next request or connection. `ORIGINAL_DST` clusters return
    /// the connection's original destination (refusing one that was not redirected);
    /// others balance over healthy endpoints (`ROUND_ROBIN`, `RANDOM`; `LEAST_REQUEST` is
    /// served round robin).
    pub fn pick(&self, dst: &OriginalDestination) -> Result<SocketAddr, PickError> {
        if matches!(self.cluster.discovery, Discovery::OriginalDst) {
            return if dst.redirected {
                Ok(dst.address)
            } else {
                Err(PickError::NotRedirected)
            };
        }
        let n = self.sequence.len();
        if n == 0 {
            return Err(PickError::NoHealthyUpstream);
        }
        let index = match self.cluster.lb_policy {
            LbPolicy::Random => rand::rng().random_range(0..n),
            LbPolicy::RoundRobin | LbPolicy::LeastRequest | LbPolicy::ClusterProvided => {
                self.cursor.fetch_add(1, Ordering::Relaxed) % n
            }
        };
        Ok(self.sequence[index])
    }
}

/// The order in which weighted endpoints are handed out: nginx's smooth weighted round robin,
/// one full cycle. Equal weights give the endpoints in order; a cycle longer than
/// [`MAX_WRR_SEQUENCE`] falls back to equal weights.
pub fn wrr_sequence(endpoints: &[(SocketAddr, u32)]) -> Vec<SocketAddr> {
    let plain = || endpoints.iter().map(|(a, _)| *a).collect::<Vec<_>>();
    let Some(first) = endpoints.first() else {
        return Vec::new();
    };
    if endpoints.iter().all(|(_, w)| *w == first.1) {
        return plain();
    }
    let divisor = endpoints
        .iter()
        .fold(0u64, |g, (_, w)| gcd(g, u64::from(*w)));
    let weights: Vec<u64> = endpoints
        .iter()
        .map(|(_, w)| u64::from(*w) / divisor.max(1))
        .collect();
    let total: u64 = weights.iter().sum();
    if total > MAX_WRR_SEQUENCE {
        return plain();
    }
    let mut current = vec![0i64; endpoints.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(endpoints[best].0);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

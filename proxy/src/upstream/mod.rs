//! Upstream selection shared by the HTTP and TCP proxies: a cluster's live state (its hosts,
//! their load-balancing structures, circuit-breaker counts, outlier-detection records) and the
//! choice of the address to connect to.
//!
//! A [`ClusterRuntime`] is built beside the config for every snapshot (see
//! [`crate::snapshot`]); the round-robin cursor, the circuit-breaker counts and every host's
//! state are carried over from the previous snapshot, so that a config push neither restarts
//! the balancing nor forgets an ejection or the requests in flight.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conn;
pub mod host;
pub mod lb;
pub mod limits;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::dns::DnsState;
use xds_client::model::{
    Cluster, ClusterLoadAssignment, Discovery, HealthStatus, UpstreamProtocol,
};

use self::conn::ConnectionUses;
use self::host::{AttemptResult, HostState, Trip};
use self::lb::{Balancer, Host, PickRequest};
use self::limits::ClusterLimits;
use crate::tls::client::{ClientTls, ClusterTls};

#[cfg(test)]
mod tests;

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

/// What a cluster keeps across snapshots.
#[derive(Debug)]
struct Carried {
    cursor: Arc<AtomicUsize>,
    limits: Arc<ClusterLimits>,
    connections: Arc<ConnectionUses>,
    epoch: Instant,
}

/// The host chosen for an attempt.
#[derive(Debug, Clone)]
pub struct Picked {
    /// Where to connect.
    pub address: SocketAddr,
    /// The host's live state (`None` for original-destination clusters).
    pub state: Option<Arc<HostState>>,
    /// The host's priority.
    pub priority: u32,
}

/// Where a cluster's hosts come from.
#[derive(Debug)]
enum Hosts {
    /// Fixed for this snapshot (EDS, STATIC).
    Fixed(Balancer),
    /// Resolved in the background, changing under the snapshot (STRICT_DNS, LOGICAL_DNS):
    /// the balancer is rebuilt when the resolver publishes a new answer.
    Dns {
        state: Arc<DnsState>,
        current: ArcSwap<DnsBalancer>,
    },
}

/// The balancer built from one DNS answer.
#[derive(Debug)]
struct DnsBalancer {
    /// The answer it was built from (compared by pointer).
    addresses: Arc<Vec<(SocketAddr, u32)>>,
    balancer: Balancer,
}

/// A cluster as the data path uses it: the config plus its load-balancing state.
#[derive(Debug)]
pub struct ClusterRuntime {
    cluster: Cluster,
    hosts: Hosts,
    carried: Carried,
    group_key: u64,
    tls: ClusterTls,
}

impl ClusterRuntime {
    /// Build the runtime of `cluster` with its EDS endpoints (`eds`, ignored for other
    /// discovery types), continuing the state of `previous`.
    pub fn new(
        cluster: &Cluster,
        eds: Option<&ClusterLoadAssignment>,
        previous: Option<&ClusterRuntime>,
    ) -> ClusterRuntime {
        let assignment = match &cluster.discovery {
            Discovery::Eds { .. } => eds,
            Discovery::Static(cla) => Some(cla),
            Discovery::OriginalDst | Discovery::Dns(_) => None,
        };
        let carried = match previous {
            Some(p) => Carried {
                cursor: p.carried.cursor.clone(),
                limits: p.carried.limits.clone(),
                connections: p.carried.connections.clone(),
                epoch: p.carried.epoch,
            },
            None => Carried {
                cursor: Arc::new(AtomicUsize::new(0)),
                limits: Arc::new(ClusterLimits::default()),
                connections: Arc::new(ConnectionUses::default()),
                epoch: Instant::now(),
            },
        };
        let known: HashMap<SocketAddr, Arc<HostState>> = previous
            .map(|p| p.with_balancer(host_states))
            .unwrap_or_default();
        let hosts: Vec<Host> = assignment
            .map(|cla| {
                cla.endpoints
                    .iter()
                    .filter(|e| e.health == HealthStatus::Healthy)
                    .map(|e| Host {
                        address: e.address,
                        weight: e.weight.max(1),
                        priority: e.priority,
                        state: known
                            .get(&e.address)
                            .cloned()
                            .unwrap_or_else(|| HostState::new(carried.epoch)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let balancer = Balancer::new(
            cluster.lb_policy,
            &cluster.lb_settings,
            hosts,
            carried.cursor.clone(),
        );
        let mut hasher = DefaultHasher::new();
        cluster.name.hash(&mut hasher);
        ClusterRuntime {
            cluster: cluster.clone(),
            hosts: Hosts::Fixed(balancer),
            carried,
            group_key: hasher.finish(),
            tls: ClusterTls::new(cluster, assignment),
        }
    }

    /// Build the runtime of a DNS-resolved `cluster` whose answers `dns` holds (see
    /// [`crate::dns`]), continuing the state of `previous` (cursor, limits, and the live
    /// state of hosts whose address is still in the answer).
    pub fn with_dns(
        cluster: &Cluster,
        dns: Arc<DnsState>,
        previous: Option<&ClusterRuntime>,
    ) -> ClusterRuntime {
        let mut runtime = ClusterRuntime::new(cluster, None, previous);
        let known = previous
            .map(|p| p.with_balancer(host_states))
            .unwrap_or_default();
        let addresses = dns.addresses();
        let balancer = runtime.dns_balancer(&addresses, &known);
        runtime.hosts = Hosts::Dns {
            state: dns,
            current: ArcSwap::from_pointee(DnsBalancer {
                addresses,
                balancer,
            }),
        };
        runtime
    }

    /// A balancer over a DNS answer, every address a healthy host of priority 0.
    fn dns_balancer(
        &self,
        addresses: &[(SocketAddr, u32)],
        known: &HashMap<SocketAddr, Arc<HostState>>,
    ) -> Balancer {
        let hosts = addresses
            .iter()
            .map(|(address, weight)| Host {
                address: *address,
                weight: (*weight).max(1),
                priority: 0,
                state: known
                    .get(address)
                    .cloned()
                    .unwrap_or_else(|| HostState::new(self.carried.epoch)),
            })
            .collect();
        Balancer::new(
            self.cluster.lb_policy,
            &self.cluster.lb_settings,
            hosts,
            self.carried.cursor.clone(),
        )
    }

    /// Run `f` on the current balancer; for a DNS cluster whose resolver published a new
    /// answer, the balancer is rebuilt first (keeping the state of hosts still present).
    fn with_balancer<R>(&self, f: impl FnOnce(&Balancer) -> R) -> R {
        match &self.hosts {
            Hosts::Fixed(b) => f(b),
            Hosts::Dns { state, current } => {
                let addresses = state.addresses();
                let loaded = current.load();
                if Arc::ptr_eq(&loaded.addresses, &addresses) {
                    return f(&loaded.balancer);
                }
                let known = host_states(&loaded.balancer);
                let next = Arc::new(DnsBalancer {
                    balancer: self.dns_balancer(&addresses, &known),
                    addresses,
                });
                current.store(next.clone());
                f(&next.balancer)
            }
        }
    }

    /// The transport to `address`: TLS (auto mTLS from endpoint metadata, or the cluster's
    /// transport socket), or `None` for plaintext.
    pub fn tls_for(&self, address: SocketAddr) -> Option<&Arc<ClientTls>> {
        self.tls.for_endpoint(address)
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
    /// a healthy endpoint (ejected ones count: an ejection is not a health status).
    pub fn has_healthy_endpoint(&self) -> bool {
        matches!(self.cluster.discovery, Discovery::OriginalDst)
            || self.with_balancer(|b| !b.is_empty())
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

    /// The circuit-breaker counts.
    pub fn limits(&self) -> &Arc<ClusterLimits> {
        &self.carried.limits
    }

    /// Request counts per upstream connection (for `max_requests_per_connection`).
    pub fn connection_uses(&self) -> &ConnectionUses {
        &self.carried.connections
    }

    /// Choose the address for the next request or connection. `ORIGINAL_DST` clusters return
    /// the connection's original destination (refusing one that was not redirected); others
    /// balance over their hosts by the cluster's policy.
    pub fn pick(&self, dst: &OriginalDestination) -> Result<SocketAddr, PickError> {
        self.pick_host(dst, &PickRequest::default())
            .map(|p| p.address)
    }

    /// Choose a host for an attempt of `req`.
    pub fn pick_host(
        &self,
        dst: &OriginalDestination,
        req: &PickRequest<'_>,
    ) -> Result<Picked, PickError> {
        if matches!(self.cluster.discovery, Discovery::OriginalDst) {
            return if dst.redirected {
                Ok(Picked {
                    address: dst.address,
                    state: None,
                    priority: 0,
                })
            } else {
                Err(PickError::NotRedirected)
            };
        }
        self.with_balancer(|b| {
            b.pick(req).map(|host| Picked {
                address: host.address,
                state: Some(host.state.clone()),
                priority: host.priority,
            })
        })
        .ok_or(PickError::NoHealthyUpstream)
    }

    /// Each endpoint's address, whether outlier detection has ejected it now, and its
    /// requests in flight (admin `/clusters`, metrics).
    pub fn host_states(&self) -> Vec<(SocketAddr, bool, u32)> {
        self.host_counts()
            .into_iter()
            .map(|(a, ejected, c)| (a, ejected, c.rq_active as u32))
            .collect()
    }

    /// Each endpoint's address, whether it is ejected now, and its counters (`/clusters`).
    pub fn host_counts(&self) -> Vec<(SocketAddr, bool, host::HostCounts)> {
        let now = Instant::now();
        self.with_balancer(|b| {
            b.hosts()
                .iter()
                .map(|h| (h.address, h.state.is_ejected(now), h.state.counts()))
                .collect()
        })
    }

    /// Tell outlier detection how an attempt against `host` went; ejects the host when a
    /// detector trips and the cluster's ejection cap allows it. Returns whether it did.
    pub fn report(&self, host: &HostState, result: AttemptResult) -> bool {
        let Some(od) = &self.cluster.outlier_detection else {
            return false;
        };
        if host.record(result, od, rand::random::<u32>()) != Trip::Eject {
            return false;
        }
        let now = Instant::now();
        let (ejected, total) = self.with_balancer(|b| {
            let hosts = b.hosts();
            let ejected = hosts.iter().filter(|h| h.state.is_ejected(now)).count();
            (ejected, hosts.len())
        });
        // Envoy's rule: the ejection may not take the ejected share past
        // `max_ejection_percent`, unless `always_eject_one_host` lets a first one through.
        let allowed = (ejected + 1) * 100 <= od.max_ejection_percent as usize * total
            || (ejected == 0 && od.always_eject_one_host);
        if !allowed || host.is_ejected(now) {
            return false;
        }
        let time = host.eject(od, now);
        tracing::debug!(cluster = %self.cluster.name, ?time, "outlier ejected");
        true
    }
}

/// The live state of a balancer's hosts, by address.
fn host_states(balancer: &Balancer) -> HashMap<SocketAddr, Arc<HostState>> {
    balancer
        .hosts()
        .iter()
        .map(|h| (h.address, h.state.clone()))
        .collect()
}

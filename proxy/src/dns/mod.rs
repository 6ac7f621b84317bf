//! Resolution of DNS clusters (`STRICT_DNS`, `LOGICAL_DNS`): one background task per cluster
//! resolves its targets with the system resolver (Tokio's `lookup_host`, so `/etc/hosts`
//! applies), again every refresh interval, and publishes the endpoints the data path balances
//! over (round robin, weighted by target, as EDS endpoints).
//!
//! - A failed or empty lookup keeps the target's last good answer; the next attempt comes
//!   after the failure interval, doubling up to its maximum, then the refresh rate again once
//!   a lookup succeeds.
//! - `STRICT_DNS`: every address of every target; `LOGICAL_DNS`: the first address of its
//!   only target.
//! - The lookup family filters the answers (`V4_ONLY`, `V6_ONLY`, `ALL`; `AUTO` prefers IPv6,
//!   `V4_PREFERRED` IPv4, each falling back to the other).
//!
//! [`DnsResolvers`] keeps one resolver per cluster across config updates: a cluster whose DNS
//! settings are unchanged keeps its resolver and its answers; a changed or removed cluster's
//! resolver stops.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use xds_client::model::{
    Discovery, DnsDiscovery, DnsLookupFamily, DnsMode, Endpoint, HealthStatus, ProxyConfig,
};

#[cfg(test)]
mod tests;

/// How long one lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A lookup of `host:port`.
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// The function that resolves names: the system resolver in the proxy, a table in tests.
pub type Lookup = Arc<dyn Fn(String, u16) -> LookupFuture + Send + Sync>;

/// The system resolver (`getaddrinfo` on Tokio's blocking pool).
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String, port: u16| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

/// The current endpoints of one DNS cluster. The cluster's runtime (see
/// [`crate::upstream::ClusterRuntime::with_dns`]) rebuilds its balancer when a new answer is
/// published.
#[derive(Debug, Default)]
pub struct DnsState {
    /// Resolved addresses with their weights, in target order (empty until a first lookup
    /// succeeds).
    addresses: ArcSwap<Vec<(SocketAddr, u32)>>,
}

impl DnsState {
    /// The resolved addresses and their weights.
    pub fn addresses(&self) -> Arc<Vec<(SocketAddr, u32)>> {
        self.addresses.load_full()
    }

    fn publish(&self, addresses: Vec<(SocketAddr, u32)>) {
        self.addresses.store(Arc::new(addresses));
    }
}

/// Keeps the answers of `family` (with its fallbacks).
pub fn filter_family(addrs: Vec<SocketAddr>, family: DnsLookupFamily) -> Vec<SocketAddr> {
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.into_iter().partition(|a| a.is_ipv4());
    match family {
        DnsLookupFamily::V4Only => v4,
        DnsLookupFamily::V6Only => v6,
        DnsLookupFamily::All => v4.into_iter().chain(v6).collect(),
        DnsLookupFamily::Auto => {
            if v6.is_empty() {
                v4
            } else {
                v6
            }
        }
        DnsLookupFamily::V4Preferred => {
            if v4.is_empty() {
                v6
            } else {
                v4
            }
        }
    }
}

/// The endpoints of a cluster from each target's last good answer.
fn endpoints(d: &DnsDiscovery, answers: &[Option<Vec<SocketAddr>>]) -> Vec<(SocketAddr, u32)> {
    let mut out: Vec<(SocketAddr, u32)> = Vec::new();
    for (target, answer) in d.targets.iter().zip(answers) {
        for addr in answer.iter().flatten() {
            if !out.iter().any(|(a, _)| a == addr) {
                out.push((*addr, target.weight.max(1)));
            }
            if d.mode == DnsMode::Logical {
                return out;
            }
        }
    }
    out
}

/// Resolves `d`'s targets into `state` until the task is aborted.
pub async fn resolve_forever(
    d: DnsDiscovery,
    state: Arc<DnsState>,
    lookup: Lookup,
    cluster: String,
) {
    let mut answers: Vec<Option<Vec<SocketAddr>>> = vec![None; d.targets.len()];
    let mut failure_delay = d.failure_refresh.0;
    loop {
        let mut failed = false;
        for (i, target) in d.targets.iter().enumerate() {
            let lookup = lookup(target.host.clone(), target.port);
            let result = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await;
            match result {
                Ok(Ok(addrs)) => {
                    let kept = filter_family(addrs, d.lookup_family);
                    if kept.is_empty() {
                        failed = true;
                        tracing::warn!(%cluster, host = %target.host, "DNS answer has no address of the lookup family; keeping the last answer");
                    } else {
                        answers[i] = Some(kept);
                    }
                }
                Ok(Err(e)) => {
                    failed = true;
                    tracing::warn!(%cluster, host = %target.host, error = %e, "DNS lookup failed; keeping the last answer");
                }
                Err(_) => {
                    failed = true;
                    tracing::warn!(%cluster, host = %target.host, "DNS lookup timed out; keeping the last answer");
                }
            }
        }
        let next = endpoints(&d, &answers);
        if *state.addresses() != next {
            tracing::debug!(%cluster, endpoints = ?next, "DNS cluster resolved");
            state.publish(next);
        }
        let delay = if failed {
            let delay = failure_delay;
            failure_delay = (failure_delay * 2).min(d.failure_refresh.1);
            delay
        } else {
            failure_delay = d.failure_refresh.0;
            d.refresh_rate
        };
        tokio::time::sleep(delay).await;
    }
}

/// A running resolver.
#[derive(Debug)]
struct Running {
    discovery: DnsDiscovery,
    state: Arc<DnsState>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The resolvers of the DNS clusters of the applied config.
pub struct DnsResolvers {
    lookup: Lookup,
    running: Mutex<HashMap<String, Running>>,
}

impl std::fmt::Debug for DnsResolvers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self.running.lock().map(|r| r.len()).unwrap_or_default();
        f.debug_struct("DnsResolvers")
            .field("running", &running)
            .finish()
    }
}

impl Default for DnsResolvers {
    fn default() -> Self {
        DnsResolvers::new(system_lookup())
    }
}

impl DnsResolvers {
    /// No resolvers yet; names are resolved with `lookup`.
    pub fn new(lookup: Lookup) -> DnsResolvers {
        DnsResolvers {
            lookup,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts, keeps or stops resolvers so that each DNS cluster of `config` has one, and
    /// returns their states by cluster name. Resolvers are spawned on the current Tokio
    /// runtime; without one (unit tests of the snapshot), the states stay empty.
    pub fn sync(&self, config: &ProxyConfig) -> HashMap<String, Arc<DnsState>> {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: HashMap<&str, &DnsDiscovery> = config
            .clusters
            .values()
            .filter_map(|c| match &c.discovery {
                Discovery::Dns(d) => Some((c.name.as_str(), d)),
                _ => None,
            })
            .collect();
        running.retain(|name, r| wanted.get(name.as_str()) == Some(&&r.discovery));
        for (name, d) in &wanted {
            if running.contains_key(*name) {
                continue;
            }
            let state = Arc::new(DnsState::default());
            let task = runtime.as_ref().map(|rt| {
                rt.spawn(resolve_forever(
                    (*d).clone(),
                    state.clone(),
                    self.lookup.clone(),
                    name.to_string(),
                ))
            });
            running.insert(
                name.to_string(),
                Running {
                    discovery: (*d).clone(),
                    state,
                    task,
                },
            );
        }
        running
            .iter()
            .map(|(name, r)| (name.clone(), r.state.clone()))
            .collect()
    }

    /// The resolved endpoints of the DNS cluster `cluster` as EDS would give them (healthy,
    /// priority 0, the target's weight); empty for an unknown cluster.
    pub fn endpoints(&self, cluster: &str) -> Vec<Endpoint> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(cluster).map_or_else(Vec::new, |r| {
            r.state
                .addresses()
                .iter()
                .map(|(address, weight)| Endpoint {
                    address: *address,
                    weight: *weight,
                    health: HealthStatus::Healthy,
                    locality: String::new(),
                    priority: 0,
                    transport_metadata: Default::default(),
                    workload: None,
                })
                .collect()
        })
    }

    /// The resolved addresses of every DNS cluster, by name (for the admin port).
    pub fn resolved(&self) -> std::collections::BTreeMap<String, Vec<SocketAddr>> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .iter()
            .map(|(name, r)| {
                (
                    name.clone(),
                    r.state.addresses().iter().map(|(a, _)| *a).collect(),
                )
            })
            .collect()
    }
}

//! The data path's view of the configuration: the applied [`ProxyConfig`] plus what the data
//! path builds from it once per update — listener and route indexes, the HTTP filter lists of
//! each filter chain, each cluster's load-balancing state.
//!
//! The config stays plain data; the handles live beside it in the [`Snapshot`]. One writer
//! (the task following the xDS client's watch channel) replaces the snapshot in a
//! [`SnapshotCell`]; readers load it with one atomic operation per connection and per request.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use xds_client::model::{
    Direction, FilterChain, FilterChainMatch, Listener, NetworkFilter, PathNormalization,
    ProxyConfig, RouteSource, TcpProxy, Xfcc,
};

use crate::authz::RbacFilter;
use crate::dns::{DnsResolvers, DnsState};
use crate::http::filters::Filter;
use crate::http::route::RouteTable;
use crate::stats::Counters;
use crate::tls::server::ServerTls;
use crate::upstream::ClusterRuntime;

#[cfg(test)]
mod tests;

/// A listener with its chains prepared for the data path.
#[derive(Debug)]
pub struct ListenerRuntime {
    /// Listener name.
    pub name: String,
    /// The address it stands for.
    pub address: SocketAddr,
    /// Whether it is a real socket (as opposed to a target of original-destination hand-off).
    pub bind_to_port: bool,
    /// Whether connections accepted on it are handed to the listener of their original
    /// destination.
    pub use_original_dst: bool,
    /// Traffic direction.
    pub direction: Direction,
    /// Filter chains, in config order.
    pub chains: Vec<Arc<ChainRuntime>>,
    /// The chain used when no other matches.
    pub default_chain: Option<Arc<ChainRuntime>>,
}

/// A filter chain prepared for the data path.
#[derive(Debug)]
pub struct ChainRuntime {
    /// Chain name (may be empty).
    pub name: String,
    /// When the chain applies.
    pub matcher: FilterChainMatch,
    /// Network RBAC filters, checked in order when the connection is set up.
    pub rbac: Vec<RbacFilter>,
    /// TLS terminated on the chain, if any.
    pub tls: Option<Arc<ServerTls>>,
    /// What it does with the connection.
    pub kind: ChainKind,
}

/// The terminal network filter of a chain.
#[derive(Debug)]
pub enum ChainKind {
    /// HTTP connection manager.
    Http(HttpChain),
    /// TCP proxy.
    Tcp(TcpProxy),
}

/// An HTTP connection manager, with its filters built once.
#[derive(Debug)]
pub struct HttpChain {
    /// Statistics prefix.
    pub stat_prefix: String,
    /// Where the routes come from.
    pub routes: HttpRoutes,
    /// The HTTP filters, called in this order on every request.
    pub filters: Vec<Filter>,
    /// How request paths are normalized before the filters see them.
    pub path_normalization: PathNormalization,
    /// `x-forwarded-client-cert` handling.
    pub xfcc: Xfcc,
    /// The access loggers (Telemetry API); empty: the proxy's default.
    pub access_log: Vec<xds_client::model::AccessLogger>,
    /// Tracing settings (Telemetry API); `None`: the proxy's flags.
    pub tracing: Option<xds_client::model::TracingConfig>,
}

/// Where an HTTP chain's routes come from.
#[derive(Debug)]
pub enum HttpRoutes {
    /// An RDS route configuration, looked up in the current snapshot at request time.
    Rds(String),
    /// An inline route configuration, indexed with the chain.
    Inline(Arc<RouteTable>),
}

impl ChainRuntime {
    fn new(chain: &FilterChain, counters: &Counters) -> ChainRuntime {
        let kind = match &chain.filter {
            NetworkFilter::Tcp(tcp) => ChainKind::Tcp(tcp.clone()),
            NetworkFilter::Http(hcm) => ChainKind::Http(HttpChain {
                stat_prefix: hcm.stat_prefix.clone(),
                routes: match &hcm.routes {
                    RouteSource::Rds(name) => HttpRoutes::Rds(name.clone()),
                    RouteSource::Inline(rc) => {
                        HttpRoutes::Inline(Arc::new(RouteTable::new(rc.clone())))
                    }
                },
                filters: hcm
                    .http_filters
                    .iter()
                    .map(|f| Filter::build(f, counters, &hcm.stat_prefix))
                    .collect(),
                path_normalization: hcm.path_normalization,
                xfcc: hcm.xfcc,
                access_log: hcm.access_log.clone(),
                tracing: hcm.tracing.clone(),
            }),
        };
        ChainRuntime {
            name: chain.name.clone(),
            matcher: chain.matcher.clone(),
            rbac: chain
                .rbac
                .iter()
                .map(|r| RbacFilter::new(r, counters, &r.stat_prefix))
                .collect(),
            tls: chain.tls.clone().map(|t| Arc::new(ServerTls::new(t))),
            kind,
        }
    }
}

impl ListenerRuntime {
    fn new(listener: &Listener, counters: &Counters) -> ListenerRuntime {
        ListenerRuntime {
            name: listener.name.clone(),
            address: listener.address,
            bind_to_port: listener.bind_to_port,
            use_original_dst: listener.use_original_dst,
            direction: listener.direction,
            chains: listener
                .filter_chains
                .iter()
                .map(|c| Arc::new(ChainRuntime::new(c, counters)))
                .collect(),
            default_chain: listener
                .default_filter_chain
                .as_ref()
                .map(|c| Arc::new(ChainRuntime::new(c, counters))),
        }
    }
}

/// One applied configuration and everything built from it.
#[derive(Debug)]
pub struct Snapshot {
    config: Arc<ProxyConfig>,
    listeners: HashMap<String, Arc<ListenerRuntime>>,
    /// Listeners that are not bound (`bind_to_port: false`), by address: targets of
    /// original-destination hand-off.
    handoff: HashMap<SocketAddr, Arc<ListenerRuntime>>,
    routes: HashMap<String, Arc<RouteTable>>,
    clusters: HashMap<String, Arc<ClusterRuntime>>,
    counters: Arc<Counters>,
    /// Endpoint address → the outbound clusters without subset holding it, sorted by name:
    /// which Services an inbound connection's original destination belongs to (metrics).
    endpoint_clusters: HashMap<SocketAddr, Vec<String>>,
    /// Endpoint IP → the workload the control plane says runs there (metrics peers).
    workloads: HashMap<IpAddr, xds_client::model::EndpointWorkload>,
}

impl Snapshot {
    /// The snapshot before any configuration: not ready, nothing in it.
    pub fn empty() -> Snapshot {
        Snapshot::empty_with(Arc::new(Counters::default()))
    }

    /// [`Snapshot::empty`], with the registry the filters of later snapshots take their
    /// counters from.
    pub fn empty_with(counters: Arc<Counters>) -> Snapshot {
        Snapshot::build_with(
            Arc::new(ProxyConfig::default()),
            None,
            counters,
            &HashMap::new(),
        )
    }

    /// Build the snapshot of `config`, carrying load-balancing state over from `previous`
    /// and reusing its prepared listeners and route tables where their config is unchanged.
    /// Filters take their counters from `previous`'s registry (a new one without `previous`).
    /// DNS clusters get no endpoints: see [`Snapshot::build_with_dns`].
    pub fn build(config: Arc<ProxyConfig>, previous: Option<&Snapshot>) -> Snapshot {
        Snapshot::build_with_dns(config, previous, &HashMap::new())
    }

    /// [`Snapshot::build`], with the endpoints of DNS clusters in `dns` (by cluster name).
    pub fn build_with_dns(
        config: Arc<ProxyConfig>,
        previous: Option<&Snapshot>,
        dns: &HashMap<String, Arc<DnsState>>,
    ) -> Snapshot {
        let counters = previous.map_or_else(Arc::default, |p| p.counters.clone());
        Snapshot::build_with(config, previous, counters, dns)
    }

    fn build_with(
        config: Arc<ProxyConfig>,
        previous: Option<&Snapshot>,
        counters: Arc<Counters>,
        dns: &HashMap<String, Arc<DnsState>>,
    ) -> Snapshot {
        let listeners: HashMap<String, Arc<ListenerRuntime>> = config
            .listeners
            .values()
            .map(|l| {
                let unchanged = previous.and_then(|p| {
                    (p.config.listeners.get(&l.name) == Some(l))
                        .then(|| p.listeners.get(&l.name).cloned())
                        .flatten()
                });
                let runtime =
                    unchanged.unwrap_or_else(|| Arc::new(ListenerRuntime::new(l, &counters)));
                (l.name.clone(), runtime)
            })
            .collect();
        let handoff = listeners
            .values()
            .filter(|l| !l.bind_to_port)
            .map(|l| (l.address, l.clone()))
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|(name, rc)| {
                let unchanged = previous.and_then(|p| {
                    (p.config.routes.get(name) == Some(rc))
                        .then(|| p.routes.get(name).cloned())
                        .flatten()
                });
                let table = unchanged.unwrap_or_else(|| Arc::new(RouteTable::new(rc.clone())));
                (name.clone(), table)
            })
            .collect();
        let clusters = config
            .clusters
            .values()
            .map(|c| {
                let eds = match &c.discovery {
                    xds_client::model::Discovery::Eds { service_name } => {
                        config.endpoints.get(service_name)
                    }
                    _ => None,
                };
                let prev = previous.and_then(|p| p.clusters.get(&c.name));
                let runtime = match dns.get(&c.name) {
                    Some(state) => {
                        ClusterRuntime::with_dns(c, state.clone(), prev.map(|p| p.as_ref()))
                    }
                    None => ClusterRuntime::new(c, eds, prev.map(|p| p.as_ref())),
                };
                (c.name.clone(), Arc::new(runtime))
            })
            .collect();
        let mut endpoint_clusters = HashMap::new();
        let mut workloads = HashMap::new();
        for cla in config.endpoints.values() {
            for e in &cla.endpoints {
                if let Some(w) = &e.workload {
                    workloads.entry(e.address.ip()).or_insert_with(|| w.clone());
                }
            }
        }
        for (name, cla) in &config.endpoints {
            let plain = matches!(
                name.split('|').collect::<Vec<_>>().as_slice(),
                ["outbound", _, "", _]
            );
            if !plain {
                continue;
            }
            for e in &cla.endpoints {
                endpoint_clusters
                    .entry(e.address)
                    .or_insert_with(Vec::new)
                    .push(name.clone());
            }
        }
        for names in endpoint_clusters.values_mut() {
            names.sort();
            names.dedup();
        }
        Snapshot {
            config,
            listeners,
            handoff,
            routes,
            clusters,
            counters,
            endpoint_clusters,
            workloads,
        }
    }

    /// The workload at `ip` according to the endpoints' telemetry metadata, if any endpoint
    /// of any cluster has that address and carries it.
    pub fn workload_at(&self, ip: IpAddr) -> Option<&xds_client::model::EndpointWorkload> {
        self.workloads.get(&ip)
    }

    /// The outbound clusters (`outbound|PORT||HOST`) whose endpoints include `addr`, sorted
    /// by name: the Services an inbound connection to `addr` may be for.
    pub fn clusters_of_endpoint(&self, addr: SocketAddr) -> &[String] {
        self.endpoint_clusters.get(&addr).map_or(&[], Vec::as_slice)
    }

    /// The registry of configuration-named counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The applied configuration.
    pub fn config(&self) -> &Arc<ProxyConfig> {
        &self.config
    }

    /// Whether a first full configuration has been applied: until then the capture listeners
    /// close new connections.
    pub fn is_ready(&self) -> bool {
        self.config.synced
    }

    /// A listener by name.
    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerRuntime>> {
        self.listeners.get(name)
    }

    /// The configured listener a capture socket bound at `bound` stands for: the bound
    /// listener on the same port (and address, unless either is a wildcard), else the
    /// listener named `fallback` (`virtualOutbound`, `virtualInbound`) so that ports can be
    /// moved by flags.
    pub fn capture_listener(
        &self,
        bound: SocketAddr,
        fallback: &str,
    ) -> Option<&Arc<ListenerRuntime>> {
        // The config's listeners are sorted by name: the choice is deterministic.
        self.config
            .listeners
            .values()
            .filter(|l| {
                l.bind_to_port
                    && l.address.port() == bound.port()
                    && (l.address.ip().is_unspecified()
                        || bound.ip().is_unspecified()
                        || l.address.ip() == bound.ip())
            })
            .find_map(|l| self.listeners.get(&l.name))
            .or_else(|| self.listeners.get(fallback))
    }

    /// The non-bound listener for an original destination: the exact `IP:PORT` first, then the
    /// wildcard `0.0.0.0:PORT` (or `[::]:PORT`).
    pub fn handoff_listener(&self, dst: SocketAddr) -> Option<&Arc<ListenerRuntime>> {
        self.handoff.get(&dst).or_else(|| {
            let any: IpAddr = match dst.ip() {
                IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
            };
            self.handoff.get(&SocketAddr::new(any, dst.port()))
        })
    }

    /// An RDS route configuration by name.
    pub fn route_table(&self, name: &str) -> Option<&Arc<RouteTable>> {
        self.routes.get(name)
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterRuntime>> {
        self.clusters.get(name)
    }
}

/// The current snapshot: one writer, many cheap readers.
#[derive(Debug)]
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    dns: DnsResolvers,
    /// Counts published snapshots; long-lived connections wait on it to re-check their chain.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for SnapshotCell {
    fn default() -> Self {
        SnapshotCell::new()
    }
}

impl SnapshotCell {
    /// A cell holding [`Snapshot::empty`].
    pub fn new() -> SnapshotCell {
        SnapshotCell::with_resolvers(DnsResolvers::default())
    }

    /// A cell holding [`Snapshot::empty`] whose DNS clusters are resolved by `dns`.
    pub fn with_resolvers(dns: DnsResolvers) -> SnapshotCell {
        SnapshotCell {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            dns,
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A cell whose snapshots' filters take their counters from `counters`.
    pub fn with_counters(counters: Arc<Counters>) -> SnapshotCell {
        SnapshotCell {
            current: ArcSwap::from_pointee(Snapshot::empty_with(counters)),
            dns: DnsResolvers::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The resolvers of the DNS clusters.
    pub fn dns(&self) -> &DnsResolvers {
        &self.dns
    }

    /// The current snapshot. Holders keep it alive (and consistent) as long as they need.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Build and publish the snapshot of `config` (the single writer's operation), starting
    /// and stopping the resolvers of its DNS clusters.
    pub fn apply(&self, config: Arc<ProxyConfig>) {
        let previous = self.current.load();
        let dns = self.dns.sync(&config);
        let next = Snapshot::build_with_dns(config, Some(&previous), &dns);
        self.current.store(Arc::new(next));
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver told of every snapshot published after this call.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

//! Builders of config-model values for unit tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use xds_client::model::*;

/// A socket address.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A TCP proxy chain to `cluster`.
pub fn tcp_chain(name: &str, matcher: FilterChainMatch, cluster: &str) -> FilterChain {
    FilterChain {
        name: name.into(),
        matcher,
        rbac: Vec::new(),
        tls: None,
        filter: NetworkFilter::Tcp(TcpProxy {
            stat_prefix: cluster.into(),
            cluster: cluster.into(),
            weighted_clusters: Vec::new(),
            idle_timeout: None,
            access_log: Vec::new(),
        }),
    }
}

/// An HTTP chain with RDS routes `rds`.
pub fn http_chain(name: &str, matcher: FilterChainMatch, routes: RouteSource) -> FilterChain {
    FilterChain {
        name: name.into(),
        matcher,
        rbac: Vec::new(),
        tls: None,
        filter: NetworkFilter::Http(HttpConnectionManager {
            stat_prefix: name.into(),
            routes,
            http_filters: vec![HttpFilter::Router],
            path_normalization: PathNormalization::default(),
            xfcc: Default::default(),
            access_log: Vec::new(),
            tracing: None,
        }),
    }
}

/// A listener.
pub fn listener(
    name: &str,
    address: &str,
    bind_to_port: bool,
    use_original_dst: bool,
    chains: Vec<FilterChain>,
    default_chain: Option<FilterChain>,
) -> Listener {
    Listener {
        name: name.into(),
        address: addr(address),
        bind_to_port,
        use_original_dst,
        direction: Direction::Outbound,
        filter_chains: chains,
        default_filter_chain: default_chain,
    }
}

/// A virtual host routing every path to `cluster`.
pub fn vhost(name: &str, domains: &[&str], cluster: &str) -> VirtualHost {
    VirtualHost::new(
        name,
        domains,
        vec![Route::new(
            "default",
            RouteMatch::path(PathMatch::Prefix("/".into())),
            RouteAction::cluster(cluster),
        )],
    )
}

/// A cluster.
pub fn cluster(name: &str, discovery: Discovery) -> Cluster {
    let mut c = Cluster::new(name, discovery);
    c.connect_timeout = Duration::from_secs(1);
    c
}

/// Healthy endpoints for `cluster`.
pub fn cla(cluster: &str, endpoints: &[&str]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: endpoints
            .iter()
            .map(|a| Endpoint {
                address: addr(a),
                weight: 1,
                health: HealthStatus::Healthy,
                locality: String::new(),
                priority: 0,
                transport_metadata: Default::default(),
                workload: None,
            })
            .collect(),
    }
}

/// A synced config made of these parts.
pub fn config(
    listeners: Vec<Listener>,
    routes: Vec<RouteConfig>,
    clusters: Vec<Cluster>,
    endpoints: Vec<ClusterLoadAssignment>,
) -> ProxyConfig {
    ProxyConfig {
        listeners: listeners.into_iter().map(|l| (l.name.clone(), l)).collect(),
        routes: routes.into_iter().map(|r| (r.name.clone(), r)).collect(),
        clusters: clusters.into_iter().map(|c| (c.name.clone(), c)).collect(),
        endpoints: endpoints
            .into_iter()
            .map(|e| (e.cluster_name.clone(), e))
            .collect(),
        versions: BTreeMap::from([(ResourceType::Listener, "1".to_string())]),
        synced: true,
    }
}

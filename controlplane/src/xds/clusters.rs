//! CDS: the full set of clusters for a proxy: per Service port `outbound|PORT||HOST` and one
//! `outbound|PORT|SUBSET|HOST` per subset of the DestinationRule that applies to the proxy,
//! each with the rule's traffic policy for it ([`cluster_policy`]).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
    Cluster,
};
use envoy_types::pb::envoy::config::core::v3::BindConfig;

use envoy_types::util::pack_any;

use super::build::{self, INBOUND_SOURCE};
use super::cache::{ClusterKey, Rendered, Shared};
use super::cluster_policy;
use super::service_clusters;
use super::tls;
use super::{inbound_cluster_name, inbound_ports, outbound_cluster_name, subset_cluster_name};
use crate::config::istio::destination_rule::{Subset, TrafficPolicy};
use crate::registry::{MeshSnapshot, Protocol, ProxyInfo, ProxyScope, Resolution, ServiceKey};

/// `PassthroughCluster`: the original destination, for traffic to unknown destinations.
pub const PASSTHROUGH: &str = "PassthroughCluster";
/// `InboundPassthroughCluster`: the original destination, from 127.0.0.6.
pub const INBOUND_PASSTHROUGH: &str = "InboundPassthroughCluster";
/// `BlackHoleCluster`: no endpoints.
pub const BLACKHOLE: &str = "BlackHoleCluster";

/// Connect timeout of every cluster.
const CONNECT_TIMEOUT_S: i64 = 10;

/// A cluster with the settings every cluster shares.
pub(super) fn base(name: &str, discovery: DiscoveryType, lb: LbPolicy) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(discovery as i32)),
        connect_timeout: Some(build::seconds(CONNECT_TIMEOUT_S)),
        lb_policy: lb as i32,
        ..Default::default()
    }
}

/// Adds the upstream protocol options of a port's protocol.
pub(super) fn with_protocol(mut cluster: Cluster, protocol: Protocol) -> Cluster {
    cluster
        .typed_extension_protocol_options
        .extend(build::upstream_protocol_options(protocol));
    cluster
}

fn bound_to_inbound_source(mut cluster: Cluster) -> Cluster {
    cluster.upstream_bind_config = Some(BindConfig {
        source_address: Some(build::socket_address(INBOUND_SOURCE, 0)),
        ..Default::default()
    });
    cluster
}

/// `outbound|PORT||HOST` (or a subset's cluster): EDS under its own name, round robin,
/// unlimited circuit breakers.
pub fn outbound(name: &str, protocol: Protocol) -> Cluster {
    outbound_with_policy(name, protocol, None)
}

/// An outbound cluster with a DestinationRule's traffic policy for it (see
/// [`cluster_policy`]).
pub fn outbound_with_policy(
    name: &str,
    protocol: Protocol,
    policy: Option<&TrafficPolicy>,
) -> Cluster {
    let mut c = base(name, DiscoveryType::Eds, LbPolicy::RoundRobin);
    c.eds_cluster_config = Some(EdsClusterConfig {
        eds_config: Some(build::ads()),
        service_name: name.to_string(),
    });
    let applied = cluster_policy::apply(&mut c, protocol, policy);
    cluster_policy::finish(&mut c, applied);
    c
}

/// `inbound|PORT||`: the original destination, bound to 127.0.0.6, unlimited circuit
/// breakers.
pub fn inbound(port: u16, protocol: Protocol) -> Cluster {
    let mut c = base(
        &inbound_cluster_name(port),
        DiscoveryType::OriginalDst,
        LbPolicy::ClusterProvided,
    );
    cluster_policy::default_circuit_breakers(&mut c);
    with_protocol(bound_to_inbound_source(c), protocol)
}

/// Every cluster of a proxy (the outbound ones of its scope, see
/// [`service_clusters::outbound_cluster`]), sorted by name, packed. The outbound clusters of
/// client-side load balancing come from the snapshot's [`super::cache::RenderCache`]: each is
/// rendered once for every proxy it is equal for.
pub fn clusters(mesh: &MeshSnapshot, proxy: &ProxyInfo) -> Vec<Shared> {
    let scope = ProxyScope::new(mesh, proxy);
    let mut out: BTreeMap<String, Shared> = BTreeMap::new();
    let auto = tls::proxy_has_identity(proxy);
    for (svc, port) in scope.outbound_ports() {
        let rule = mesh
            .networking
            .destination_rule(proxy, &svc.hostname, &svc.namespace);
        let top = rule.as_ref().and_then(|r| r.traffic_policy.as_ref());
        let key = ServiceKey {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
        };
        let sans = tls::service_identities(
            svc.ports
                .iter()
                .flat_map(|p| mesh.endpoints_of(&key, p.port)),
            &svc.namespace,
            &mesh.cluster_domain,
        );
        let h2 = port.protocol.is_http2();
        let build = |name: &str, subset: Option<&Subset>| {
            let policy = cluster_policy::cluster_policy(top, subset, port.port);
            let labels = subset.map(|s| &s.labels);
            let mut c = service_clusters::outbound_cluster(
                mesh,
                proxy,
                svc,
                port,
                name,
                labels,
                policy.as_ref(),
            );
            let sni = tls::mesh_sni(port.port, subset.map(|s| s.name.as_str()), &svc.hostname);
            let settings = policy.as_ref().and_then(|p| p.tls.as_ref());
            let t = tls::from_destination_rule(settings, &sni, &sans, &svc.hostname, h2);
            tls::apply(&mut c, t, auto, &sni, &sans, h2);
            Rendered::new(name.to_string(), pack_any(c))
        };
        // DNS and passthrough clusters depend on more (the proxy's address family, the
        // endpoints inline): rendered per proxy.
        let cached = |name: &str, subset: Option<&Subset>| {
            if svc.resolution != Resolution::ClientSideLb {
                return build(name, subset);
            }
            let key = ClusterKey {
                name: name.to_string(),
                service: svc.clone(),
                port: port.port,
                rule: rule.clone(),
                subset: subset.map(|s| s.name.clone()),
                sans: sans.clone(),
                auto,
            };
            mesh.render_cache
                .cluster(key, mesh.version, || build(name, subset))
        };
        let name = outbound_cluster_name(port.port, &svc.hostname);
        if let Entry::Vacant(e) = out.entry(name) {
            let c = cached(e.key(), None);
            e.insert(c);
        }
        for subset in rule.iter().flat_map(|r| &r.subsets) {
            let name = subset_cluster_name(port.port, &subset.name, &svc.hostname);
            if let Entry::Vacant(e) = out.entry(name) {
                let c = cached(e.key(), Some(subset));
                e.insert(c);
            }
        }
    }
    let mut fixed = Vec::new();
    for port in inbound_ports(mesh, proxy) {
        fixed.push(inbound(port.port, port.protocol));
    }
    let mut passthrough = base(
        PASSTHROUGH,
        DiscoveryType::OriginalDst,
        LbPolicy::ClusterProvided,
    );
    cluster_policy::default_circuit_breakers(&mut passthrough);
    fixed.push(passthrough);
    let mut inbound_passthrough = bound_to_inbound_source(base(
        INBOUND_PASSTHROUGH,
        DiscoveryType::OriginalDst,
        LbPolicy::ClusterProvided,
    ));
    cluster_policy::default_circuit_breakers(&mut inbound_passthrough);
    fixed.push(inbound_passthrough);
    fixed.push(base(BLACKHOLE, DiscoveryType::Static, LbPolicy::RoundRobin));
    for c in fixed {
        out.insert(c.name.clone(), Rendered::new(c.name.clone(), pack_any(c)));
    }
    out.into_values().collect()
}

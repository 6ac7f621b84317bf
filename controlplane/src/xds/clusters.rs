//! CDS: the full set of clusters for a proxy: per Service port `outbound|PORT||HOST` and one
//! `outbound|PORT|SUBSET|HOST` per subset of the DestinationRule that applies to the proxy,
//! each with the rule's traffic policy for it ([`cluster_policy`]).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
    Cluster,
};
use envoy_types::pb::envoy::config::core::v3::BindConfig;

use super::build::{self, INBOUND_SOURCE};
use super::cluster_policy;
use super::service_clusters;
use super::tls;
use super::{inbound_cluster_name, inbound_ports, outbound_cluster_name, subset_cluster_name};
use crate::config::istio::destination_rule::{Subset, TrafficPolicy};
use crate::registry::{MeshSnapshot, Protocol, ProxyInfo, ProxyScope, ServiceKey};

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
/// [`service_clusters::outbound_cluster`]), sorted by name.
pub fn clusters(mesh: &MeshSnapshot, proxy: &ProxyInfo) -> Vec<Cluster> {
    let scope = ProxyScope::new(mesh, proxy);
    let mut out = BTreeMap::new();
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
            c
        };
        let name = outbound_cluster_name(port.port, &svc.hostname);
        out.entry(name.clone())
            .or_insert_with(|| build(&name, None));
        for subset in rule.iter().flat_map(|r| &r.subsets) {
            let name = subset_cluster_name(port.port, &subset.name, &svc.hostname);
            out.entry(name.clone())
                .or_insert_with(|| build(&name, Some(subset)));
        }
    }
    for port in inbound_ports(mesh, proxy) {
        out.insert(
            inbound_cluster_name(port.port),
            inbound(port.port, port.protocol),
        );
    }
    let mut passthrough = base(
        PASSTHROUGH,
        DiscoveryType::OriginalDst,
        LbPolicy::ClusterProvided,
    );
    cluster_policy::default_circuit_breakers(&mut passthrough);
    out.insert(PASSTHROUGH.to_string(), passthrough);
    let mut inbound_passthrough = bound_to_inbound_source(base(
        INBOUND_PASSTHROUGH,
        DiscoveryType::OriginalDst,
        LbPolicy::ClusterProvided,
    ));
    cluster_policy::default_circuit_breakers(&mut inbound_passthrough);
    out.insert(INBOUND_PASSTHROUGH.to_string(), inbound_passthrough);
    out.insert(
        BLACKHOLE.to_string(),
        base(BLACKHOLE, DiscoveryType::Static, LbPolicy::RoundRobin),
    );
    out.into_values().collect()
}

//! EDS: one `ClusterLoadAssignment` per requested outbound cluster (Service port, or subset
//! of it).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality as EnvoyLocality, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint,
    LocalityLbEndpoints,
};

use envoy_types::pb::google::protobuf::value::Kind;

use envoy_types::util::pack_any;

use super::cache::{Rendered, Shared};
use super::service_clusters::metadata_field;
use super::{build, parse_outbound_cluster_name};
use crate::mtls::Mode;
use crate::registry::{
    Endpoint, Locality, MeshSnapshot, Protocol, ProxyInfo, ProxyScope, Resolution, Service, TlsMode,
};

/// The load assignment of one cluster: endpoints grouped by locality (always set, possibly
/// empty strings, since gRPC rejects an unset one), in locality order; an endpoint that
/// accepts Istio mTLS carries Istio's metadata `envoy.transport_socket_match.tlsMode: istio`,
/// one whose workload is known its telemetry metadata (see [`telemetry_metadata`]).
pub fn load_assignment(cluster: &str, endpoints: &[Endpoint]) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&Locality, Vec<LbEndpoint>> = BTreeMap::new();
    for ep in endpoints {
        let health = if ep.healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        let mut metadata = None;
        if ep.tls_mode == TlsMode::Istio {
            metadata_field(
                &mut metadata,
                "envoy.transport_socket_match",
                "tlsMode",
                Kind::StringValue(ep.tls_mode.as_str().to_string()),
            );
        }
        telemetry_metadata(&mut metadata, ep);
        by_locality
            .entry(&ep.locality)
            .or_default()
            .push(LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                    address: Some(build::address(ep.ip, ep.port)),
                    ..Default::default()
                })),
                health_status: health as i32,
                load_balancing_weight: build::u32_value(ep.weight.max(1)),
                metadata,
            });
    }
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: by_locality
            .into_iter()
            .map(|(l, lb_endpoints)| LocalityLbEndpoints {
                // As Istio: the locality weighs the sum of its endpoints' weights (gRPC ignores
                // localities of weight 0).
                load_balancing_weight: build::u32_value(
                    lb_endpoints
                        .iter()
                        .filter_map(|e| e.load_balancing_weight.map(|w| w.value))
                        .fold(0u32, u32::saturating_add),
                ),
                locality: Some(EnvoyLocality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    sub_zone: l.subzone.clone(),
                }),
                lb_endpoints,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The first non-empty value of `keys` in `labels`.
fn first_label<'a>(labels: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| labels.get(*k).map(String::as_str).filter(|v| !v.is_empty()))
}

/// istiod's endpoint telemetry metadata, for the proxies' metrics to label a peer they learn
/// nothing about otherwise (a TCP connection, a request that never reached a sidecar):
/// `filter_metadata.istio.workload` =
/// `WORKLOAD;NAMESPACE;CANONICAL_SERVICE;CANONICAL_REVISION;CLUSTER`, the canonical service and
/// revision defaulted from the labels as Istio does (`service.istio.io/canonical-name`, else
/// `app.kubernetes.io/name`, else `app`, else the workload; `-revision`, else
/// `app.kubernetes.io/version`, else `version`, else `latest`, which is sent empty). This
/// project adds `istio.app` and `istio.version` (the `app`/`version` labels, when set), which
/// Istio's sidecars learn by exchanging metadata instead; Envoy ignores both.
pub fn telemetry_metadata(metadata: &mut Option<Metadata>, ep: &Endpoint) {
    let Some(w) = &ep.workload else {
        return;
    };
    let canonical_service = first_label(
        &ep.labels,
        &[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ],
    )
    .unwrap_or(&w.name);
    let canonical_revision = first_label(
        &ep.labels,
        &[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ],
    )
    .filter(|r| *r != "latest")
    .unwrap_or("");
    let value = format!(
        "{};{};{canonical_service};{canonical_revision};{}",
        w.name, w.namespace, w.cluster
    );
    metadata_field(metadata, "istio", "workload", Kind::StringValue(value));
    for (key, labels) in [
        ("app", &["app", "app.kubernetes.io/name"]),
        ("version", &["version", "app.kubernetes.io/version"]),
    ] {
        if let Some(v) = first_label(&ep.labels, labels) {
            metadata_field(metadata, "istio", key, Kind::StringValue(v.to_string()));
        }
    }
}

/// The load assignments of the requested clusters that exist for `proxy` (EDS clusters of
/// its scope), in name order: for `outbound|PORT||HOST` every endpoint of the Service port,
/// for `outbound|PORT|SUBSET|HOST` those whose labels include the subset's (from the
/// DestinationRule that applies to the proxy).
pub fn endpoints(
    mesh: &MeshSnapshot,
    proxy: &ProxyInfo,
    names: &BTreeSet<String>,
) -> Vec<ClusterLoadAssignment> {
    selected(mesh, proxy, names)
        .into_iter()
        .map(|(name, endpoints)| load_assignment(name, &endpoints))
        .collect()
}

/// [`endpoints`], packed: each assignment is rendered once for every proxy that is sent the
/// same endpoints under the same name (see [`super::cache`]).
pub fn rendered(mesh: &MeshSnapshot, proxy: &ProxyInfo, names: &BTreeSet<String>) -> Vec<Shared> {
    selected(mesh, proxy, names)
        .into_iter()
        .map(|(name, endpoints)| {
            mesh.render_cache
                .assignment(name, &endpoints, mesh.version, || {
                    Rendered::new(name.clone(), pack_any(load_assignment(name, &endpoints)))
                })
        })
        .collect()
}

/// The endpoints of each requested cluster that exists for `proxy`, in name order.
fn selected<'a, 'n>(
    mesh: &'a MeshSnapshot,
    proxy: &ProxyInfo,
    names: &'n BTreeSet<String>,
) -> Vec<(&'n String, Cow<'a, [Endpoint]>)> {
    // Only the requested hosts' part of the proxy's scope: a push of one host's endpoints
    // does not compute the scope of the whole mesh.
    let hosts: BTreeSet<&str> = names
        .iter()
        .filter_map(|n| parse_outbound_cluster_name(n).map(|(_, _, host)| host))
        .collect();
    let scope = ProxyScope::for_hosts(mesh, proxy, &hosts);
    let by_host: BTreeMap<&str, &Service> = scope
        .services
        .iter()
        .filter(|s| s.resolution == Resolution::ClientSideLb)
        .map(|s| (s.hostname.as_str(), &**s))
        .collect();
    let mut out = Vec::new();
    for name in names {
        let Some((port, subset, host)) = parse_outbound_cluster_name(name) else {
            continue;
        };
        let Some(svc) = by_host.get(host) else {
            continue;
        };
        if !svc
            .ports
            .iter()
            .any(|p| p.port == port && p.protocol != Protocol::Udp)
        {
            continue;
        }
        let all = mtls_checked(mesh, &svc.namespace, mesh.endpoints_of(&svc.key(), port));
        if subset.is_empty() {
            out.push((name, all));
            continue;
        }
        let Some(labels) = mesh
            .networking
            .destination_rule(proxy, host, &svc.namespace)
            .and_then(|r| r.subset(subset).map(|s| s.labels.clone()))
        else {
            continue;
        };
        let selected: Vec<Endpoint> = all
            .iter()
            .filter(|e| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
            .cloned()
            .collect();
        out.push((name, Cow::Owned(selected)));
    }
    out
}

/// Istio's `mtlsChecker`: an endpoint whose workload (of the Service's namespace, by its
/// labels) has PeerAuthentication `DISABLE` on the endpoint's port does not take mutual TLS
/// there, so clients are told to send plaintext (its `tlsMode` metadata is left out).
/// Borrowed unchanged when no endpoint is affected (the common case).
fn mtls_checked<'a>(
    mesh: &MeshSnapshot,
    namespace: &str,
    endpoints: &'a [Endpoint],
) -> Cow<'a, [Endpoint]> {
    let disabled = |e: &Endpoint| {
        e.tls_mode == TlsMode::Istio
            && mesh
                .peer_authentications
                .mode(namespace, &e.labels, Some(e.port))
                == Mode::Disable
    };
    if !endpoints.iter().any(disabled) {
        return Cow::Borrowed(endpoints);
    }
    Cow::Owned(
        endpoints
            .iter()
            .map(|e| {
                let mut out = e.clone();
                if disabled(e) {
                    out.tls_mode = TlsMode::Disabled;
                }
                out
            })
            .collect(),
    )
}

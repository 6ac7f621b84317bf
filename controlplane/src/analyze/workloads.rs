//! Selectors and the workloads they select: selectors matching no known workload (IST0127),
//! Sidecars selecting the same workload or several without selector (IST0110, IST0111),
//! Gateways of one selector serving one port and host (IST0145), and Istio annotations on
//! the wrong kind (IST0107).

use std::collections::BTreeMap;

use super::index::{Entry, Index, Workload};
use super::{
    Message, CONFLICTING_GATEWAYS, CONFLICTING_SIDECAR_SELECTORS, MISPLACED_ANNOTATION,
    MULTIPLE_SIDECARS_WITHOUT_SELECTOR, NO_MATCHING_WORKLOADS,
};
use crate::config::istio::names::hosts_match;
use crate::config::istio::{Gateway, IstioConfig, Sidecar};

/// Runs the workload checks.
pub(super) fn check(idx: &Index<'_>, out: &mut Vec<Message>) {
    let workloads = idx.workloads();
    let none = Vec::new();
    let in_ns = |ns: &str| workloads.get(ns).unwrap_or(&none);
    for e in &idx.authorization_policies {
        if let Some(sel) = &e.obj.spec.selector {
            no_match(
                e,
                "AuthorizationPolicy",
                &sel.match_labels,
                in_ns(&e.obj.namespace),
                out,
            );
        }
    }
    for e in &idx.peer_authentications {
        if let Some(sel) = &e.obj.spec.selector {
            no_match(
                e,
                "PeerAuthentication",
                &sel.match_labels,
                in_ns(&e.obj.namespace),
                out,
            );
        }
    }
    for e in &idx.destination_rules {
        if let Some(sel) = &e.obj.spec.workload_selector {
            no_match(
                e,
                "DestinationRule",
                &sel.match_labels,
                in_ns(&e.obj.namespace),
                out,
            );
        }
    }
    for e in &idx.sidecars {
        if let Some(sel) = &e.obj.spec.workload_selector {
            no_match(e, "Sidecar", &sel.labels, in_ns(&e.obj.namespace), out);
        }
    }
    for e in &idx.service_entries {
        if let Some(sel) = &e.obj.spec.workload_selector {
            no_match(e, "ServiceEntry", &sel.labels, in_ns(&e.obj.namespace), out);
        }
    }
    sidecar_conflicts(idx, out);
    gateway_conflicts(idx, out);
    misplaced_annotations(idx, out);
}

fn label_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// IST0127: a non-empty selector no known workload of the namespace can match.
fn no_match<S>(
    e: &Entry<'_, S>,
    kind: &str,
    selector: &BTreeMap<String, String>,
    workloads: &[Workload<'_>],
    out: &mut Vec<Message>,
) {
    if selector.is_empty() || workloads.iter().any(|w| w.may_match(selector)) {
        return;
    }
    out.push(e.message(
        kind,
        NO_MATCHING_WORKLOADS,
        format!(
            "No matching workloads for this resource with the following labels: {}",
            label_text(selector)
        ),
    ));
}

/// IST0111 and IST0110.
fn sidecar_conflicts(idx: &Index<'_>, out: &mut Vec<Message>) {
    let mut by_ns: BTreeMap<&str, Vec<&Entry<'_, Sidecar>>> = BTreeMap::new();
    for s in &idx.sidecars {
        by_ns.entry(s.obj.namespace.as_str()).or_default().push(s);
    }
    for (ns, sidecars) in by_ns {
        let unselective: Vec<_> = sidecars
            .iter()
            .filter(|s| s.obj.spec.workload_selector.is_none())
            .collect();
        if unselective.len() > 1 {
            let names: Vec<&str> = unselective.iter().map(|s| s.obj.name.as_str()).collect();
            for s in &unselective {
                out.push(s.message(
                    "Sidecar",
                    MULTIPLE_SIDECARS_WITHOUT_SELECTOR,
                    format!(
                        "The Sidecars [{}] in namespace {ns:?} have no workload selector, which \
                         can lead to undefined behavior.",
                        names.join(" ")
                    ),
                ));
            }
        }
        for we in idx
            .workload_entries
            .iter()
            .filter(|w| w.obj.namespace == ns)
        {
            let selecting: Vec<_> = sidecars
                .iter()
                .filter(|s| {
                    s.obj.spec.workload_selector.as_ref().is_some_and(|sel| {
                        !sel.labels.is_empty()
                            && sel
                                .labels
                                .iter()
                                .all(|(k, v)| we.obj.spec.labels.get(k) == Some(v))
                    })
                })
                .collect();
            if selecting.len() < 2 {
                continue;
            }
            let names: Vec<&str> = selecting.iter().map(|s| s.obj.name.as_str()).collect();
            for s in &selecting {
                out.push(s.message(
                    "Sidecar",
                    CONFLICTING_SIDECAR_SELECTORS,
                    format!(
                        "The Sidecars [{}] in namespace {ns:?} select the same workload pod {:?}, \
                         which can lead to undefined behavior.",
                        names.join(" "),
                        we.obj.name
                    ),
                ));
            }
        }
    }
}

/// The server hosts of a gateway without their namespace part.
fn server_hosts(g: &IstioConfig<Gateway>, port: u32) -> Vec<&str> {
    g.spec
        .servers
        .iter()
        .filter(|s| s.port.as_ref().is_some_and(|p| p.number == port))
        .flat_map(|s| &s.hosts)
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, host)| host))
        .collect()
}

/// IST0145: two Gateways with the same selector serving overlapping hosts on one port.
fn gateway_conflicts(idx: &Index<'_>, out: &mut Vec<Message>) {
    for (i, later) in idx.gateways.iter().enumerate() {
        for earlier in &idx.gateways[..i] {
            if earlier.obj.spec.selector != later.obj.spec.selector {
                continue;
            }
            let mut ports: Vec<u32> = later
                .obj
                .spec
                .servers
                .iter()
                .filter_map(|s| s.port.as_ref().map(|p| p.number))
                .collect();
            ports.sort_unstable();
            ports.dedup();
            for port in ports {
                let ours = server_hosts(later.obj, port);
                let theirs = server_hosts(earlier.obj, port);
                let shared: Vec<&str> = ours
                    .iter()
                    .copied()
                    .filter(|h| theirs.iter().any(|t| hosts_match(t, h)))
                    .collect();
                if shared.is_empty() {
                    continue;
                }
                out.push(later.message(
                    "Gateway",
                    CONFLICTING_GATEWAYS,
                    format!(
                        "Conflict with gateways {}/{} (workload selector {}, port {port}, hosts {}).",
                        earlier.obj.namespace,
                        earlier.obj.name,
                        label_text(&later.obj.spec.selector),
                        shared.join(",")
                    ),
                ));
            }
        }
    }
}

/// Annotation prefixes Istio reads on Pods only.
const POD_ANNOTATIONS: [&str; 6] = [
    "sidecar.istio.io/",
    "proxy.istio.io/",
    "traffic.sidecar.istio.io/",
    "status.sidecar.istio.io/",
    "readiness.status.sidecar.istio.io/",
    "prometheus.istio.io/",
];

/// IST0107: Istio annotations for Pods or Services on a configuration object.
fn misplaced<S>(e: &Entry<'_, S>, kind: &str, out: &mut Vec<Message>) {
    for k in e.obj.annotations.keys() {
        let target = if POD_ANNOTATIONS.iter().any(|p| k.starts_with(p)) {
            "Pod"
        } else if k == "networking.istio.io/exportTo" {
            "Service"
        } else {
            continue;
        };
        out.push(e.message(
            kind,
            MISPLACED_ANNOTATION,
            format!("Misplaced annotation: {k} can only be applied to {target}"),
        ));
    }
}

fn misplaced_annotations(idx: &Index<'_>, out: &mut Vec<Message>) {
    idx.virtual_services
        .iter()
        .for_each(|e| misplaced(e, "VirtualService", out));
    idx.destination_rules
        .iter()
        .for_each(|e| misplaced(e, "DestinationRule", out));
    idx.gateways
        .iter()
        .for_each(|e| misplaced(e, "Gateway", out));
    idx.service_entries
        .iter()
        .for_each(|e| misplaced(e, "ServiceEntry", out));
    idx.workload_entries
        .iter()
        .for_each(|e| misplaced(e, "WorkloadEntry", out));
    idx.sidecars
        .iter()
        .for_each(|e| misplaced(e, "Sidecar", out));
    idx.peer_authentications
        .iter()
        .for_each(|e| misplaced(e, "PeerAuthentication", out));
    idx.authorization_policies
        .iter()
        .for_each(|e| misplaced(e, "AuthorizationPolicy", out));
}

//! References between objects by host and name: VirtualService destinations, subsets,
//! gateways and delegates (IST0101), ports (IST0112), hosts shared by VirtualServices of the
//! mesh (IST0109), hosts a gateway does not expose (IST0132), VirtualService hosts without a
//! service, and DestinationRules of one host that conflict.

use std::collections::BTreeMap;

use super::index::{visible, Entry, Index};
use super::{
    Message, CONFLICTING_DESTINATION_RULES, CONFLICTING_MESH_GATEWAY_VS_HOSTS,
    DESTINATION_PORT_REQUIRED, REFERENCED_RESOURCE_NOT_FOUND, SHADOWED_DESTINATION_RULE_POLICY,
    VS_HOST_NOT_IN_GATEWAY, VS_HOST_WITHOUT_SERVICE,
};
use crate::config::istio::names::hosts_match;
use crate::config::istio::types::Destination;
use crate::config::istio::{Gateway, IstioConfig, VirtualService};

const VS: &str = "VirtualService";
const DR: &str = "DestinationRule";

/// Runs the host checks.
pub(super) fn check(idx: &Index<'_>, out: &mut Vec<Message>) {
    for vs in &idx.virtual_services {
        check_references(idx, vs, out);
    }
    mesh_host_conflicts(idx, out);
    destination_rule_conflicts(idx, out);
}

/// Whether a VirtualService applies to the mesh's sidecars.
fn is_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// A gateway reference (`ns/name`, `name`, or legacy `name.ns...`) as (namespace, name).
fn gateway_ref<'a>(reference: &'a str, namespace: &'a str) -> (&'a str, &'a str) {
    if let Some((ns, name)) = reference.split_once('/') {
        return (ns, name);
    }
    let mut parts = reference.split('.');
    let name = parts.next().unwrap_or_default();
    (parts.next().unwrap_or(namespace), name)
}

fn destinations(vs: &VirtualService) -> Vec<&Destination> {
    let mut out = Vec::new();
    for r in &vs.http {
        out.extend(
            r.route
                .iter()
                .flatten()
                .filter_map(|d| d.destination.as_ref()),
        );
        out.extend(r.mirror.as_ref());
        out.extend(r.mirrors.iter().filter_map(|m| m.destination.as_ref()));
    }
    for r in vs
        .tcp
        .iter()
        .map(|r| &r.route)
        .chain(vs.tls.iter().map(|r| &r.route))
    {
        out.extend(r.iter().filter_map(|d| d.destination.as_ref()));
    }
    out
}

fn check_references(idx: &Index<'_>, vs: &Entry<'_, VirtualService>, out: &mut Vec<Message>) {
    let ns = vs.obj.namespace.as_str();
    let spec = &vs.obj.spec;
    let not_found = |what: &str, value: String| {
        vs.message(
            VS,
            REFERENCED_RESOURCE_NOT_FOUND,
            format!("Referenced {what} not found: {value:?}"),
        )
    };
    let mut refs: Vec<&String> = spec.gateways.iter().collect();
    for r in &spec.http {
        refs.extend(r.matches.iter().flat_map(|m| &m.gateways));
    }
    for r in &spec.tcp {
        refs.extend(r.matches.iter().flat_map(|m| &m.gateways));
    }
    for r in &spec.tls {
        refs.extend(r.matches.iter().flat_map(|m| &m.gateways));
    }
    refs.sort();
    refs.dedup();
    for reference in refs.into_iter().filter(|g| *g != "mesh") {
        let (gns, gname) = gateway_ref(reference, ns);
        let gateway = idx
            .gateways
            .iter()
            .find(|g| g.obj.namespace == gns && g.obj.name == gname);
        match gateway {
            None => out.push(not_found("gateway", format!("{gns}/{gname}"))),
            Some(g) => hosts_in_gateway(vs, g.obj, out),
        }
    }
    for r in &spec.http {
        if let Some(d) = &r.delegate {
            let dns = if d.namespace.is_empty() {
                ns
            } else {
                d.namespace.as_str()
            };
            let exists = idx
                .virtual_services
                .iter()
                .any(|v| v.obj.namespace == dns && v.obj.name == d.name);
            if !exists {
                out.push(not_found("virtualservice", format!("{dns}/{}", d.name)));
            }
        }
    }
    let gateway_only = !is_mesh(spec);
    for d in destinations(spec) {
        let fqdn = idx.resolve(&d.host, ns);
        if !idx.host_known(&fqdn, ns) {
            out.push(not_found("host", d.host.clone()));
            continue;
        }
        if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
            let defined = idx.destination_rules.iter().any(|dr| {
                visible(&dr.obj.spec.export_to, &dr.obj.namespace, ns)
                    && hosts_match(&idx.resolve(&dr.obj.spec.host, &dr.obj.namespace), &fqdn)
                    && dr.obj.spec.subsets.iter().any(|s| s.name == subset)
            });
            if !defined {
                out.push(not_found(
                    "host+subset in destinationrule",
                    format!("{}+{subset}", d.host),
                ));
            }
        }
        if gateway_only && d.port.is_none() {
            if let Some(svc) = idx.service(&fqdn).filter(|s| s.ports.len() > 1) {
                let ports: Vec<String> = svc.ports.iter().map(|p| p.port.to_string()).collect();
                out.push(vs.message(
                    VS,
                    DESTINATION_PORT_REQUIRED,
                    format!(
                        "This VirtualService routes to a service {:?} that exposes multiple ports \
                         [{}]. Specifying a port in the destination is required to disambiguate.",
                        d.host,
                        ports.join(" ")
                    ),
                ));
            }
        }
    }
    if is_mesh(spec) {
        for host in spec.hosts.iter().filter(|h| !h.contains('*')) {
            let fqdn = idx.resolve(host, ns);
            if !idx.host_known(&fqdn, ns) {
                out.push(vs.message(
                    VS,
                    VS_HOST_WITHOUT_SERVICE,
                    format!(
                        "host {host:?} ({fqdn}) is neither a Service nor a ServiceEntry host: \
                         its routes apply to no sidecar traffic"
                    ),
                ));
            }
        }
    }
}

/// IST0132: hosts of a VirtualService that its gateway exposes to no server.
fn hosts_in_gateway(
    vs: &Entry<'_, VirtualService>,
    g: &IstioConfig<Gateway>,
    out: &mut Vec<Message>,
) {
    let ns = vs.obj.namespace.as_str();
    let exposed: Vec<&str> = g
        .spec
        .servers
        .iter()
        .flat_map(|s| &s.hosts)
        .filter_map(|h| match h.split_once('/') {
            Some(("*", host)) => Some(host),
            Some((".", host)) if g.namespace == ns => Some(host),
            Some((hns, host)) if hns == ns => Some(host),
            Some(_) => None,
            None => Some(h.as_str()),
        })
        .collect();
    let missing: Vec<&str> = vs
        .obj
        .spec
        .hosts
        .iter()
        .map(String::as_str)
        .filter(|h| !exposed.iter().any(|e| hosts_match(e, h)))
        .collect();
    if !missing.is_empty() {
        out.push(vs.message(
            VS,
            VS_HOST_NOT_IN_GATEWAY,
            format!(
                "one or more host [{}] defined in VirtualService {}/{} not found in Gateway {}/{}.",
                missing.join(" "),
                ns,
                vs.obj.name,
                g.namespace,
                g.name
            ),
        ));
    }
}

/// IST0109: VirtualServices of the mesh that define the same host.
fn mesh_host_conflicts(idx: &Index<'_>, out: &mut Vec<Message>) {
    let mut by_host: BTreeMap<String, Vec<&Entry<'_, VirtualService>>> = BTreeMap::new();
    for vs in idx.virtual_services.iter().filter(|v| is_mesh(&v.obj.spec)) {
        let mut hosts: Vec<String> = vs
            .obj
            .spec
            .hosts
            .iter()
            .map(|h| idx.resolve(h, &vs.obj.namespace))
            .collect();
        hosts.dedup();
        for h in hosts {
            by_host.entry(h).or_default().push(vs);
        }
    }
    for (host, list) in by_host.iter().filter(|(_, l)| l.len() > 1) {
        let names: Vec<String> = list
            .iter()
            .map(|v| format!("{}/{}", v.obj.namespace, v.obj.name))
            .collect();
        for vs in list {
            out.push(vs.message(
                VS,
                CONFLICTING_MESH_GATEWAY_VS_HOSTS,
                format!(
                    "The VirtualServices {} associated with mesh gateway define the same host {} \
                     which can lead to undefined behavior. This can be fixed by merging the \
                     conflicting VirtualServices into a single resource.",
                    names.join(","),
                    host
                ),
            ));
        }
    }
}

/// DestinationRules of one namespace for one host (without workload selector) are merged by
/// Istio: the same subset twice is ambiguous (an error), two traffic policies leave one unused
/// (a warning).
fn destination_rule_conflicts(idx: &Index<'_>, out: &mut Vec<Message>) {
    let mut groups: BTreeMap<(String, String), Vec<&Entry<'_, _>>> = BTreeMap::new();
    for dr in idx
        .destination_rules
        .iter()
        .filter(|d| d.obj.spec.workload_selector.is_none())
    {
        let host = idx.resolve(&dr.obj.spec.host, &dr.obj.namespace);
        groups
            .entry((dr.obj.namespace.clone(), host))
            .or_default()
            .push(dr);
    }
    for ((_, host), list) in groups.iter().filter(|(_, l)| l.len() > 1) {
        for (i, later) in list.iter().enumerate().skip(1) {
            for earlier in &list[..i] {
                for subset in &later.obj.spec.subsets {
                    if earlier
                        .obj
                        .spec
                        .subsets
                        .iter()
                        .any(|s| s.name == subset.name)
                    {
                        out.push(later.message(
                            DR,
                            CONFLICTING_DESTINATION_RULES,
                            format!(
                                "subset {:?} of host {host} is also defined by DestinationRule \
                                 {}/{}",
                                subset.name, earlier.obj.namespace, earlier.obj.name
                            ),
                        ));
                    }
                }
                if earlier.obj.spec.traffic_policy.is_some()
                    && later.obj.spec.traffic_policy.is_some()
                {
                    out.push(later.message(
                        DR,
                        SHADOWED_DESTINATION_RULE_POLICY,
                        format!(
                            "DestinationRule {}/{} also sets a trafficPolicy for host {host}; \
                             Istio merges the rules and applies one policy only",
                            earlier.obj.namespace, earlier.obj.name
                        ),
                    ));
                }
            }
        }
    }
}

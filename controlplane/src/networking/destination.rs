//! DestinationRule lookup as istiod does it for a sidecar: the rules of the proxy's own
//! namespace first, then those of the service's namespace exported to the proxy, then those of
//! the root namespace; within a namespace the most specific host wins (exact, then the longest
//! wildcard), and several rules for that host are consolidated: subsets concatenated (the
//! first definition of a name wins), the first traffic policy kept.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{resolve_host, visible, Rules, ROOT_NAMESPACE};
use crate::config::istio::destination_rule::{Subset, TrafficPolicy};
use crate::config::istio::names::hosts_match;
use crate::config::istio::{DestinationRule, IstioConfig};
use crate::registry::ProxyInfo;

/// A DestinationRule with its host resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DestinationRuleEntry {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The host, fully qualified (or a wildcard).
    pub host: String,
    /// The spec.
    pub spec: DestinationRule,
}

impl DestinationRuleEntry {
    /// The entry of a stored DestinationRule.
    pub fn new(dr: &IstioConfig<DestinationRule>, domain: &str) -> DestinationRuleEntry {
        DestinationRuleEntry {
            name: dr.name.clone(),
            namespace: dr.namespace.clone(),
            host: resolve_host(&dr.spec.host, &dr.namespace, domain),
            spec: dr.spec.clone(),
        }
    }

    fn selects(&self, proxy: &ProxyInfo) -> bool {
        match &self.spec.workload_selector {
            None => true,
            Some(sel) => {
                proxy.namespace.as_deref() == Some(self.namespace.as_str())
                    && sel
                        .match_labels
                        .iter()
                        .all(|(k, v)| proxy.labels.get(k) == Some(v))
            }
        }
    }
}

/// The consolidated DestinationRule that applies to a host for a proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MergedRule {
    /// `NAMESPACE/NAME` of the rules merged, first first.
    pub sources: Vec<String>,
    /// The traffic policy (of the first rule that has one).
    pub traffic_policy: Option<TrafficPolicy>,
    /// Subsets, unique by name, in order.
    pub subsets: Vec<Subset>,
}

impl MergedRule {
    /// A subset by name.
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }
}

/// Istio's `MostSpecificHostMatch` over the rule hosts of one namespace.
fn most_specific<'a>(
    host: &str,
    rules: impl Iterator<Item = &'a DestinationRuleEntry>,
) -> Vec<&'a DestinationRuleEntry> {
    let candidates: Vec<&DestinationRuleEntry> =
        rules.filter(|r| hosts_match(&r.host, host)).collect();
    if candidates.iter().any(|r| r.host == host) {
        return candidates.into_iter().filter(|r| r.host == host).collect();
    }
    let Some(best) = candidates
        .iter()
        .filter(|r| r.host.starts_with('*') || r.host == "*")
        .map(|r| r.host.len())
        .max()
    else {
        return Vec::new();
    };
    let best_host = candidates
        .iter()
        .find(|r| r.host.len() == best)
        .map(|r| r.host.clone())
        .unwrap_or_default();
    candidates
        .into_iter()
        .filter(|r| r.host == best_host)
        .collect()
}

fn consolidate(rules: &[&DestinationRuleEntry]) -> Option<MergedRule> {
    if rules.is_empty() {
        return None;
    }
    let mut out = MergedRule::default();
    for r in rules {
        out.sources.push(format!("{}/{}", r.namespace, r.name));
        if out.traffic_policy.is_none() {
            out.traffic_policy = r.spec.traffic_policy.clone();
        }
        for s in &r.spec.subsets {
            if out.subset(&s.name).is_none() {
                out.subsets.push(s.clone());
            }
        }
    }
    Some(out)
}

impl Rules {
    /// The DestinationRule for traffic from `proxy` to `host`, a service of `service_ns`.
    pub fn destination_rule(
        &self,
        proxy: &ProxyInfo,
        host: &str,
        service_ns: &str,
    ) -> Option<MergedRule> {
        if self.destination_rules.is_empty() {
            return None;
        }
        let proxy_ns = proxy.namespace.as_deref().unwrap_or_default();
        let mut by_ns: BTreeMap<&str, Vec<&DestinationRuleEntry>> = BTreeMap::new();
        for r in &self.destination_rules {
            by_ns.entry(r.namespace.as_str()).or_default().push(r);
        }
        let in_ns = |ns: &str, exported: bool| -> Vec<&DestinationRuleEntry> {
            let rules = by_ns.get(ns).map(Vec::as_slice).unwrap_or_default();
            let usable = rules.iter().copied().filter(|r| {
                if exported {
                    r.spec.workload_selector.is_none()
                        && visible(&r.spec.export_to, &r.namespace, proxy_ns)
                } else {
                    r.selects(proxy)
                }
            });
            most_specific(host, usable)
        };
        // Workload-specific rules of the proxy's namespace come before the others.
        let local = in_ns(proxy_ns, false);
        let (selected, general): (Vec<_>, Vec<_>) = local
            .into_iter()
            .partition(|r| r.spec.workload_selector.is_some());
        if let Some(first) = selected.first() {
            return consolidate(&[first]);
        }
        if let Some(m) = consolidate(&general) {
            return Some(m);
        }
        if service_ns != proxy_ns {
            if let Some(m) = consolidate(&in_ns(service_ns, true)) {
                return Some(m);
            }
        }
        if service_ns != ROOT_NAMESPACE && proxy_ns != ROOT_NAMESPACE {
            return consolidate(&in_ns(ROOT_NAMESPACE, true));
        }
        None
    }

    /// Whether some DestinationRule visible from `namespace` defines `subset` for `host`
    /// (the store's and `meshctl analyze`'s check, independent of any proxy).
    pub fn subset_defined(&self, host: &str, subset: &str, namespace: &str) -> bool {
        self.destination_rules.iter().any(|r| {
            (r.namespace == namespace || visible(&r.spec.export_to, &r.namespace, namespace))
                && hosts_match(&r.host, host)
                && r.spec.subsets.iter().any(|s| s.name == subset)
        })
    }
}

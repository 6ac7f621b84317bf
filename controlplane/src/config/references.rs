//! Checks across objects that make an object unusable: a VirtualService route to a subset that
//! no DestinationRule visible from its namespace defines (the subset's cluster would not
//! exist). Such a VirtualService is rejected like an invalid one: an error naming the file, the
//! object and the field (`spec.http[0].route[1].destination.subset`), and its previous valid
//! version stays in force if it still passes the check.

use std::collections::BTreeMap;

use super::istio::types::Destination;
use super::istio::{IstioConfig, VirtualService};
use super::{ConfigError, ConfigSnapshot, FieldProblem, Object, ObjectKey, ObjectRef};
use crate::networking::{resolve_host, visible, DestinationRuleEntry};

/// Every destination of a VirtualService with a subset, with its field path.
fn subset_destinations<'a>(vs: &'a VirtualService) -> Vec<(String, &'a Destination)> {
    let mut out = Vec::new();
    let mut push = |path: String, d: Option<&'a Destination>| {
        if let Some(d) = d.filter(|d| d.subset.as_deref().is_some_and(|s| !s.is_empty())) {
            out.push((format!("{path}.subset"), d));
        }
    };
    for (i, r) in vs.http.iter().enumerate() {
        for (j, d) in r.route.iter().flatten().enumerate() {
            push(
                format!("spec.http[{i}].route[{j}].destination"),
                d.destination.as_ref(),
            );
        }
        push(format!("spec.http[{i}].mirror"), r.mirror.as_ref());
        for (j, m) in r.mirrors.iter().enumerate() {
            push(
                format!("spec.http[{i}].mirrors[{j}].destination"),
                m.destination.as_ref(),
            );
        }
    }
    for (kind, routes) in [
        ("tcp", vs.tcp.iter().map(|r| &r.route).collect::<Vec<_>>()),
        ("tls", vs.tls.iter().map(|r| &r.route).collect()),
    ] {
        for (i, route) in routes.into_iter().enumerate() {
            for (j, d) in route.iter().enumerate() {
                push(
                    format!("spec.{kind}[{i}].route[{j}].destination"),
                    d.destination.as_ref(),
                );
            }
        }
    }
    out
}

/// The first destination of `vs` whose subset no visible DestinationRule defines.
fn missing_subset(
    vs: &IstioConfig<VirtualService>,
    rules: &[DestinationRuleEntry],
    domain: &str,
) -> Option<(String, FieldProblem)> {
    for (field, d) in subset_destinations(&vs.spec) {
        let host = resolve_host(&d.host, &vs.namespace, domain);
        let subset = d.subset.clone().unwrap_or_default();
        let defined = rules.iter().any(|r| {
            (r.namespace == vs.namespace || visible(&r.spec.export_to, &r.namespace, &vs.namespace))
                && crate::config::istio::names::hosts_match(&r.host, &host)
                && r.spec.subsets.iter().any(|s| s.name == subset)
        });
        if !defined {
            return Some((
                field,
                FieldProblem::SubsetNotDefined {
                    host: d.host.clone(),
                    subset,
                },
            ));
        }
    }
    None
}

fn object_ref(vs: &IstioConfig<VirtualService>) -> ObjectRef {
    ObjectRef {
        api_version: vs.api_version.clone(),
        kind: "VirtualService".to_string(),
        namespace: Some(vs.namespace.clone()),
        name: vs.name.clone(),
    }
}

/// Rejects the VirtualServices of `next` that route to undefined subsets (restoring their
/// previous version from `previous` when it passes).
pub(super) fn check(next: &mut ConfigSnapshot, previous: &ConfigSnapshot, domain: &str) {
    let rules: Vec<DestinationRuleEntry> = next
        .objects
        .values()
        .filter_map(|s| match &s.object {
            Object::DestinationRule(dr) => Some(DestinationRuleEntry::new(dr, domain)),
            _ => None,
        })
        .collect();
    let mut rejected: BTreeMap<ObjectKey, ConfigError> = BTreeMap::new();
    for (key, stored) in &next.objects {
        let Object::VirtualService(vs) = &stored.object else {
            continue;
        };
        if let Some((field, problem)) = missing_subset(vs, &rules, domain) {
            rejected.insert(
                key.clone(),
                ConfigError::Invalid {
                    file: stored.file.clone(),
                    object: Box::new(object_ref(vs)),
                    field,
                    problem,
                },
            );
        }
    }
    for (key, error) in rejected {
        let current = next.objects.remove(&key);
        next.warnings
            .retain(|w| w.object.to_string() != key.to_string());
        // The error is about the file's content; a kept version is already known to be bad.
        if let Some(current) = current.filter(|c| !c.kept) {
            next.errors.push(error);
            next.unresolved.push(current);
        }
        if let Some(prev) = previous.objects.get(&key) {
            if let Object::VirtualService(vs) = &prev.object {
                if missing_subset(vs, &rules, domain).is_none() {
                    let mut kept = prev.clone();
                    kept.kept = true;
                    next.objects.insert(key, kept);
                }
            }
        }
    }
}

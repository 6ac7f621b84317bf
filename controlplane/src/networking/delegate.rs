//! VirtualService delegation, as istiod merges it (`mergeVirtualServicesIfNeeded`): a root
//! route with `delegate` is replaced by the delegate's routes, each merged with the root
//! route (matches combined, unset fields inherited); a delegate route whose matches conflict
//! with the root's is dropped, and so is a delegate that is missing or not exported to the
//! root's namespace. Delegates themselves are not applied.

use std::collections::BTreeMap;

use super::{visible, VirtualServiceRule};
use crate::config::istio::types::StringMatch;
use crate::config::istio::virtual_service::{HttpMatchRequest, HttpRoute};

/// The VirtualServices with hosts, delegates merged into their roots, order kept.
pub fn merge(all: Vec<VirtualServiceRule>) -> Vec<VirtualServiceRule> {
    let delegates: BTreeMap<(String, String), VirtualServiceRule> = all
        .iter()
        .filter(|vs| vs.spec.hosts.is_empty())
        .map(|vs| ((vs.namespace.clone(), vs.name.clone()), vs.clone()))
        .collect();
    all.into_iter()
        .filter(|vs| !vs.spec.hosts.is_empty())
        .map(|mut vs| {
            if vs.spec.http.iter().any(|r| r.delegate.is_some()) {
                let routes = std::mem::take(&mut vs.spec.http);
                vs.spec.http = routes
                    .into_iter()
                    .flat_map(|r| expand(r, &vs.namespace, &delegates))
                    .collect();
            }
            vs
        })
        .collect()
}

fn expand(
    root: HttpRoute,
    root_ns: &str,
    delegates: &BTreeMap<(String, String), VirtualServiceRule>,
) -> Vec<HttpRoute> {
    let Some(d) = &root.delegate else {
        return vec![root];
    };
    let ns = if d.namespace.is_empty() {
        root_ns.to_string()
    } else {
        d.namespace.clone()
    };
    let Some(delegate) = delegates.get(&(ns, d.name.clone())) else {
        return Vec::new();
    };
    if !visible(&delegate.spec.export_to, &delegate.namespace, root_ns) {
        return Vec::new();
    }
    let mut root = root.clone();
    root.delegate = None;
    delegate
        .spec
        .http
        .iter()
        .filter_map(|sub| merge_route(&root, sub.clone()))
        .collect()
}

/// Istio's `mergeHTTPRoute`: `None` when the matches conflict.
fn merge_route(root: &HttpRoute, mut sub: HttpRoute) -> Option<HttpRoute> {
    sub.matches = merge_matches(&root.matches, &sub.matches)?;
    sub.name = match (root.name.is_empty(), sub.name.is_empty()) {
        (_, true) => root.name.clone(),
        (false, false) => format!("{}-{}", root.name, sub.name),
        (true, false) => sub.name,
    };
    macro_rules! inherit {
        ($($f:ident),*) => { $( if sub.$f.is_none() { sub.$f = root.$f.clone(); } )* };
    }
    inherit!(
        rewrite,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percent,
        mirror_percentage,
        cors_policy,
        headers
    );
    Some(sub)
}

fn merge_matches(
    root: &[HttpMatchRequest],
    sub: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(sub.to_vec());
    }
    if sub.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for leaf in sub {
        let mut found = false;
        for r in root {
            if conflict(r, leaf) {
                continue;
            }
            out.push(merge_match(r, leaf));
            found = true;
        }
        if !found {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = match (root.name.is_empty(), leaf.name.is_empty()) {
        (_, true) => root.name.clone(),
        (false, false) => format!("{}-{}", root.name, leaf.name),
        (true, false) => leaf.name.clone(),
    };
    macro_rules! inherit {
        ($($f:ident),*) => { $( if out.$f.is_none() { out.$f = root.$f.clone(); } )* };
    }
    inherit!(uri, scheme, method, authority, port);
    for (map, root_map) in [
        (&mut out.headers, &root.headers),
        (&mut out.without_headers, &root.without_headers),
        (&mut out.query_params, &root.query_params),
    ] {
        for (k, v) in root_map {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    out
}

fn conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    if leaf
        .headers
        .iter()
        .any(|(k, v)| string_conflict(root.headers.get(k), Some(v)))
        || leaf
            .without_headers
            .iter()
            .any(|(k, v)| string_conflict(root.headers.get(k), Some(v)))
        || leaf
            .query_params
            .iter()
            .any(|(k, v)| string_conflict(root.query_params.get(k), Some(v)))
    {
        return true;
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    matches!((root.port, leaf.port), (Some(a), Some(b)) if a > 0 && b > 0 && a != b)
}

/// Istio's `stringMatchConflict`: a leaf must be a subset of its root.
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let non_empty = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
    if non_empty(&root.regex).is_some() || non_empty(&leaf.regex).is_some() {
        return true;
    }
    if let Some(exact) = non_empty(&root.exact) {
        return non_empty(&leaf.prefix).is_some() || leaf.exact.as_deref() != Some(exact.as_str());
    }
    if let Some(prefix) = non_empty(&root.prefix) {
        if let Some(p) = non_empty(&leaf.prefix) {
            return !p.starts_with(&prefix);
        }
        if let Some(e) = non_empty(&leaf.exact) {
            return !e.starts_with(&prefix);
        }
    }
    true
}

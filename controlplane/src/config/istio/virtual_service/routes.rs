//! Route destinations and weights, TLS and TCP routes, and Istio's analysis of rules a
//! VirtualService can never reach (warnings, as Istio's VirtualServiceUnreachableRule and
//! VirtualServiceIneffectiveMatch).

use std::collections::BTreeMap;

use super::check::{check_destination, check_headers, is_gateway};
use super::{
    HttpMatchRequest, HttpRouteDestination, L4MatchAttributes, Problem, RouteDestination, TcpRoute,
    TlsMatchAttributes, TlsRoute, VirtualService,
};
use crate::config::istio::names::{self, validate_gateway_names, validate_labels};
use crate::config::istio::types::{Destination, Matcher};
use crate::config::istio::values;
use crate::config::istio::{at, idx, Checker};

/// One weighted destination, HTTP or not.
fn check_weighted(c: &mut Checker, path: &str, dest: Option<&Destination>, weight: i32) {
    match dest {
        None => c.err(at(path, "destination"), Problem::DestinationRequired),
        Some(d) => check_destination(c, &at(path, "destination"), d),
    }
    if weight < 0 {
        c.err(at(path, "weight"), Problem::NegativeWeight(weight));
    }
}

/// Weights are relative: none may be negative, and several destinations may not add up to 0
/// (one destination alone takes all the traffic whatever its weight).
fn check_total(c: &mut Checker, path: &str, weights: impl Iterator<Item = i32>, count: usize) {
    let total: i64 = weights.map(i64::from).sum();
    if count > 1 && total == 0 {
        c.err(path, Problem::TotalWeightZero);
    }
}

/// `route` of an HTTP route.
pub(super) fn check_http_destinations(c: &mut Checker, path: &str, dests: &[HttpRouteDestination]) {
    for (i, d) in dests.iter().enumerate() {
        let dp = idx(path, i);
        if let Some(h) = &d.headers {
            check_headers(c, &at(&dp, "headers"), h);
        }
        check_weighted(c, &dp, d.destination.as_ref(), d.weight);
    }
    check_total(c, path, dests.iter().map(|d| d.weight), dests.len());
}

fn check_destinations(c: &mut Checker, path: &str, dests: &[RouteDestination]) {
    for (i, d) in dests.iter().enumerate() {
        check_weighted(c, &idx(path, i), d.destination.as_ref(), d.weight);
    }
    check_total(c, path, dests.iter().map(|d| d.weight), dests.len());
}

fn check_l4_common(
    c: &mut Checker,
    path: &str,
    subnets: &[String],
    port: Option<u32>,
    labels: &BTreeMap<String, String>,
    gateways: &[String],
) {
    for (i, s) in subnets.iter().enumerate() {
        c.check(
            idx(&at(path, "destinationSubnets"), i),
            values::validate_ip_subnet(s),
        );
    }
    if let Some(port) = port.filter(|p| *p != 0) {
        c.check(at(path, "port"), values::validate_port(i64::from(port)));
    }
    validate_labels(c, &at(path, "sourceLabels"), labels);
    validate_gateway_names(c, &at(path, "gateways"), gateways);
}

/// A TLS route: SNI matches within the VirtualService's hosts, and destinations.
pub(super) fn check_tls_route(c: &mut Checker, path: &str, r: &TlsRoute, vs: &VirtualService) {
    if r.matches.is_empty() {
        c.err(at(path, "match"), Problem::TlsNoMatch);
    }
    for (i, m) in r.matches.iter().enumerate() {
        check_tls_match(c, &idx(&at(path, "match"), i), m, vs);
    }
    if r.route.is_empty() {
        c.err(at(path, "route"), Problem::TlsNoRoute);
    }
    check_destinations(c, &at(path, "route"), &r.route);
}

fn check_tls_match(c: &mut Checker, path: &str, m: &TlsMatchAttributes, vs: &VirtualService) {
    if m.sni_hosts.is_empty() {
        c.err(at(path, "sniHosts"), Problem::TlsNoSni);
    }
    for (i, sni) in m.sni_hosts.iter().enumerate() {
        check_sni_host(c, &idx(&at(path, "sniHosts"), i), sni, vs);
    }
    check_l4_common(
        c,
        path,
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
    );
}

fn check_sni_host(c: &mut Checker, path: &str, sni: &str, vs: &VirtualService) {
    let result = if is_gateway(vs) {
        names::validate_wildcard_domain_for_gateway_vs(true, sni)
    } else {
        names::validate_wildcard_domain(sni)
    };
    if let Err(e) = result {
        if values::validate_ip(sni).is_ok() {
            c.warn(path, Problem::SniIp(sni.to_string()));
        } else {
            c.err(path, e);
        }
        return;
    }
    if vs.hosts.iter().any(|h| names::host_subset_of(sni, h)) {
        return;
    }
    c.err(
        path,
        Problem::SniNotSubset {
            sni: sni.to_string(),
            hosts: vs.hosts.join(", "),
        },
    );
}

/// A TCP route: matches and destinations.
pub(super) fn check_tcp_route(c: &mut Checker, path: &str, r: &TcpRoute) {
    for (i, m) in r.matches.iter().enumerate() {
        check_l4_match(c, &idx(&at(path, "match"), i), m);
    }
    if r.route.is_empty() {
        c.err(at(path, "route"), Problem::TcpNoRoute);
    }
    check_destinations(c, &at(path, "route"), &r.route);
}

fn check_l4_match(c: &mut Checker, path: &str, m: &L4MatchAttributes) {
    check_l4_common(
        c,
        path,
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
    );
}

fn rule_name(name: &str, i: usize) -> String {
    if name.is_empty() {
        format!("#{i}")
    } else {
        format!("{name:?}")
    }
}

/// A prefix match's comparable fields, for Istio's overlap analysis.
struct PrefixMatch {
    rule: String,
    matched: String,
    prefix: String,
    port: Option<u32>,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    without: BTreeMap<String, String>,
}

fn exact_or_prefix(sm: Option<&crate::config::istio::types::StringMatch>) -> String {
    match sm.and_then(|s| s.matcher()) {
        Some(Matcher::Exact(v)) if !v.is_empty() => format!("exact:{v}"),
        Some(Matcher::Prefix(v)) if !v.is_empty() => format!("prefix:{v}"),
        _ => String::new(),
    }
}

fn prefix_match(rule: &str, j: usize, m: &HttpMatchRequest) -> Option<PrefixMatch> {
    let prefix = m.uri.as_ref()?.prefix.clone().filter(|p| !p.is_empty())?;
    let mut method = exact_or_prefix(m.method.as_ref());
    if method.is_empty() {
        method = "exact:GET".to_string();
    }
    let map = |m: &BTreeMap<String, crate::config::istio::types::StringMatch>| {
        m.iter()
            .map(|(k, v)| (k.clone(), exact_or_prefix(Some(v))))
            .collect()
    };
    Some(PrefixMatch {
        rule: rule.to_string(),
        matched: rule_name(&m.name, j),
        prefix,
        port: m.port,
        method,
        authority: exact_or_prefix(m.authority.as_ref()),
        headers: map(&m.headers),
        query: map(&m.query_params),
        without: map(&m.without_headers),
    })
}

fn covered_map(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, va)| b.get(k).is_some_and(|vb| va == vb || va.starts_with(vb)))
}

/// Whether the earlier prefix match `a` covers every request of the later `b`.
fn covered(a: &PrefixMatch, b: &PrefixMatch) -> bool {
    b.prefix.starts_with(&a.prefix)
        && a.port == b.port
        && (a.method == b.method || a.method.starts_with(&b.method))
        && (a.authority == b.authority || a.authority.starts_with(&b.authority))
        && covered_map(&a.headers, &b.headers)
        && covered_map(&a.query, &b.query)
        && covered_map(&a.without, &b.without)
}

/// Rules after a match-all rule, rules whose matches all repeat earlier ones, and matches
/// covered by an earlier prefix match: warnings, as Istio reports them.
pub(super) fn unreachable(c: &mut Checker, vs: &VirtualService) {
    let mut seen: Vec<(HttpMatchRequest, usize)> = Vec::new();
    let mut empty_seen = false;
    let mut prefixes = Vec::new();
    for (i, route) in vs.http.iter().enumerate() {
        let rule = rule_name(&route.name, i);
        let path = idx("spec.http", i);
        if route.matches.is_empty() {
            if empty_seen {
                unreachable_rule(c, &path, &rule, "only the last rule can have no matches");
            }
            empty_seen = true;
            continue;
        }
        let mut duplicates = 0;
        for (j, m) in route.matches.iter().enumerate() {
            if empty_seen {
                unreachable_rule(c, &path, &rule, "route without matches defined before");
                continue;
            }
            let mut anonymous = m.clone();
            anonymous.name.clear();
            if let Some((_, dup)) = seen.iter().find(|(s, _)| *s == anonymous) {
                let dup_rule = rule_name(&vs.http[*dup].name, *dup);
                ineffective(c, &path, &rule, &rule_name(&m.name, j), &dup_rule);
                duplicates += 1;
                continue;
            }
            seen.push((anonymous, i));
            prefixes.extend(prefix_match(&rule, j, m).map(|p| (p, i)));
        }
        if duplicates == route.matches.len() {
            unreachable_rule(c, &path, &rule, "all matches used by prior rules");
        }
    }
    for (a_i, (a, _)) in prefixes.iter().enumerate() {
        for (b, b_route) in prefixes.iter().skip(a_i + 1) {
            if a.prefix == b.prefix || !covered(a, b) {
                continue;
            }
            let matched = format!("{} of prefix {}", b.matched, b.prefix);
            let dup = format!("{} of prefix {} on {}", a.matched, a.prefix, a.rule);
            ineffective(c, &idx("spec.http", *b_route), &b.rule, &matched, &dup);
        }
    }
    l4_unreachable(c, "spec.tcp", vs.tcp.iter().map(|r| r.matches.as_slice()));
    l4_unreachable(c, "spec.tls", vs.tls.iter().map(|r| r.matches.as_slice()));
}

fn l4_unreachable<'a, M: PartialEq + 'a>(
    c: &mut Checker,
    base: &str,
    routes: impl Iterator<Item = &'a [M]>,
) {
    let mut seen: Vec<(&M, usize)> = Vec::new();
    let mut empty_seen = false;
    for (i, matches) in routes.enumerate() {
        let rule = format!("#{i}");
        let path = idx(base, i);
        if matches.is_empty() {
            if empty_seen {
                unreachable_rule(c, &path, &rule, "only the last rule can have no matches");
            }
            empty_seen = true;
            continue;
        }
        let mut duplicates = 0;
        for (j, m) in matches.iter().enumerate() {
            if empty_seen {
                unreachable_rule(c, &path, &rule, "route without matches defined before");
                continue;
            }
            if let Some((_, dup)) = seen.iter().find(|(s, _)| *s == m) {
                ineffective(c, &path, &rule, &format!("#{j}"), &format!("#{dup}"));
                duplicates += 1;
            } else {
                seen.push((m, i));
            }
        }
        if duplicates == matches.len() {
            unreachable_rule(c, &path, &rule, "all matches used by prior rules");
        }
    }
}

fn unreachable_rule(c: &mut Checker, path: &str, rule: &str, reason: &'static str) {
    c.warn(
        path,
        Problem::UnreachableRule {
            rule: rule.to_string(),
            reason,
        },
    );
}

fn ineffective(c: &mut Checker, path: &str, rule: &str, matched: &str, dup: &str) {
    c.warn(
        path,
        Problem::IneffectiveMatch {
            rule: rule.to_string(),
            matched: matched.to_string(),
            dup: dup.to_string(),
        },
    );
}

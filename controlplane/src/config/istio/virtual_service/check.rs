//! Istio's VirtualService rules (`ValidateVirtualService`, `validateHTTPRoute` and helpers).

use super::action_checks::{
    check_authority_rewrite, check_direct_response, check_redirect, check_retries, check_rewrite,
};
use super::routes::{check_http_destinations, check_tcp_route, check_tls_route, unreachable};
use super::{
    CorsPolicy, FaultAbort, FaultDelay, HeaderOperations, Headers, HttpMatchRequest, HttpRoute,
    Problem, VirtualService,
};
use crate::config::istio::names::{self, validate_gateway_names, validate_labels};
use crate::config::istio::types::Destination;
use crate::config::istio::values::{self, validate_duration, validate_percentage};
use crate::config::istio::{at, idx, key, Checker};

/// Methods Go's `net/http` names, and `*`.
const CORS_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// gRPC status names.
pub(crate) const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Whether the VirtualService applies to gateways only (its gateways do not include `mesh`).
/// As in Istio, a VirtualService without gateways counts as bound to gateways here; the mesh
/// default is decided by the caller.
pub(super) fn is_gateway(vs: &VirtualService) -> bool {
    !vs.gateways.iter().any(|g| g == "mesh")
}

/// Whether any TLS match names SNI hosts.
pub(super) fn is_sni_host(vs: &VirtualService) -> bool {
    vs.tls
        .iter()
        .any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()))
}

/// Checks a VirtualService's spec.
pub(crate) fn check(c: &mut Checker, vs: &VirtualService) {
    if vs.hosts.is_empty() {
        if !vs.gateways.is_empty() {
            c.err("spec.gateways", Problem::DelegateGateways);
        }
        if !vs.tls.is_empty() {
            c.err("spec.tls", Problem::DelegateTls);
        }
        if !vs.tcp.is_empty() {
            c.err("spec.tcp", Problem::DelegateTcp);
        }
    }
    let (applies_to_mesh, applies_to_gateway) = if vs.gateways.is_empty() {
        (true, false)
    } else {
        validate_gateway_names(c, "spec.gateways", &vs.gateways);
        let gw = is_gateway(vs);
        (!gw, gw)
    };
    if !applies_to_gateway {
        check_jwt_claims(c, vs);
    }
    let mut all_hosts_valid = true;
    for (i, host) in vs.hosts.iter().enumerate() {
        let field = idx("spec.hosts", i);
        let result = if applies_to_gateway {
            names::validate_wildcard_domain_for_gateway_vs(is_sni_host(vs), host)
        } else {
            names::validate_wildcard_domain(host)
        };
        match result {
            Err(e) => {
                if values::validate_ip(host).is_err() {
                    c.err(field, e);
                    all_hosts_valid = false;
                }
            }
            Ok(()) if applies_to_mesh && host == "*" => {
                c.err(field, Problem::MeshWildcardHost);
                all_hosts_valid = false;
            }
            Ok(()) => {}
        }
    }
    if all_hosts_valid {
        for (i, a) in vs.hosts.iter().enumerate() {
            for (j, b) in vs.hosts.iter().enumerate().skip(i + 1) {
                if names::hosts_match(a, b) {
                    c.err(
                        idx("spec.hosts", j),
                        Problem::DuplicateHosts(a.clone(), b.clone()),
                    );
                }
            }
        }
    }
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        c.err("spec", Problem::NoRoutes);
    }
    let delegate = vs.hosts.is_empty();
    for (i, route) in vs.http.iter().enumerate() {
        check_http_route(c, &idx("spec.http", i), route, delegate);
    }
    for (i, route) in vs.tls.iter().enumerate() {
        check_tls_route(c, &idx("spec.tls", i), route, vs);
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        check_tcp_route(c, &idx("spec.tcp", i), route);
    }
    names::validate_export_to(c, "spec.exportTo", &vs.export_to, false, false);
    unreachable(c, vs);
}

fn check_jwt_claims(c: &mut Checker, vs: &VirtualService) {
    let gateways = vs.gateways.join(" ");
    for (i, route) in vs.http.iter().enumerate() {
        for (j, m) in route.matches.iter().enumerate() {
            let base = idx(&at(&idx("spec.http", i), "match"), j);
            for (leaf, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                for name in map.keys() {
                    if values::is_jwt_claim_route(name) {
                        c.err(
                            key(&at(&base, leaf), name),
                            Problem::JwtClaimWithoutGateway {
                                key: name.clone(),
                                gateways: gateways.clone(),
                            },
                        );
                    }
                }
            }
        }
    }
}

/// How an HTTP route relates to delegation.
#[derive(PartialEq)]
enum RouteType {
    Independent,
    Root,
    Delegate,
}

fn check_http_route(c: &mut Checker, path: &str, r: &HttpRoute, delegate: bool) {
    let route_type = if delegate {
        RouteType::Delegate
    } else if r.delegate.is_some() {
        RouteType::Root
    } else {
        RouteType::Independent
    };
    check_conflicts(c, path, r, &route_type);
    for (j, m) in r.matches.iter().enumerate() {
        check_match(c, &idx(&at(path, "match"), j), m);
    }
    if let Some(h) = &r.headers {
        check_headers(c, &at(path, "headers"), h);
    }
    if let Some(cors) = &r.cors_policy {
        check_cors(c, &at(path, "corsPolicy"), cors);
    }
    if let Some(fault) = &r.fault {
        let fp = at(path, "fault");
        if fault.abort.is_none() && fault.delay.is_none() {
            c.err(fp.clone(), Problem::FaultEmpty);
        }
        if let Some(abort) = &fault.abort {
            check_abort(c, &at(&fp, "abort"), abort);
        }
        if let Some(delay) = &fault.delay {
            check_delay(c, &at(&fp, "delay"), delay);
        }
    }
    if let Some(p) = r.mirror_percent {
        let field = at(path, "mirrorPercent");
        if p > 100 {
            c.err(field.clone(), Problem::MirrorPercent(p));
        }
        c.warn(field, Problem::MirrorPercentDeprecated);
    }
    if let Some(p) = &r.mirror_percentage {
        let field = at(path, "mirrorPercentage");
        if p.value > 100.0 {
            c.err(
                field.clone(),
                Problem::MirrorPercentage {
                    bound: "max",
                    limit: 100,
                    value: p.value,
                },
            );
        }
        if p.value < 0.0 {
            c.err(
                field,
                Problem::MirrorPercentage {
                    bound: "min",
                    limit: 0,
                    value: p.value,
                },
            );
        }
    }
    if let Some(m) = &r.mirror {
        check_destination(c, &at(path, "mirror"), m);
    }
    for (j, m) in r.mirrors.iter().enumerate() {
        let mp = idx(&at(path, "mirrors"), j);
        let Some(dest) = &m.destination else {
            c.err(at(&mp, "destination"), Problem::MirrorDestination);
            continue;
        };
        check_destination(c, &at(&mp, "destination"), dest);
        if let Some(p) = &m.percentage {
            let field = at(&mp, "percentage");
            if p.value > 100.0 {
                c.err(
                    field.clone(),
                    Problem::MirrorsPercentage {
                        bound: "max",
                        limit: 100,
                        value: p.value,
                    },
                );
            }
            if p.value < 0.0 {
                c.err(
                    field,
                    Problem::MirrorsPercentage {
                        bound: "min",
                        limit: 0,
                        value: p.value,
                    },
                );
            }
        }
    }
    if let Some(redirect) = &r.redirect {
        check_redirect(c, &at(path, "redirect"), redirect);
    }
    if let Some(dr) = &r.direct_response {
        check_direct_response(c, &at(path, "directResponse"), dr);
    }
    if let Some(retries) = &r.retries {
        check_retries(c, &at(path, "retries"), retries);
    }
    if let Some(rw) = &r.rewrite {
        check_rewrite(c, &at(path, "rewrite"), rw);
    }
    check_authority_rewrite(c, path, r);
    if let Some(dests) = &r.route {
        check_http_destinations(c, &at(path, "route"), dests);
    }
    if let Some(t) = r.timeout {
        c.check(at(path, "timeout"), validate_duration(t));
    }
}

fn check_conflicts(c: &mut Checker, path: &str, r: &HttpRoute, route_type: &RouteType) {
    let has_route = r.route.as_ref().is_some_and(|v| !v.is_empty());
    if *route_type == RouteType::Root {
        if r.redirect.is_some() {
            c.err(at(path, "redirect"), Problem::RootRedirect(r.name.clone()));
        }
        // `route: []` counts as specified, as `http.Route != nil` does in Istio.
        if r.route.is_some() {
            c.err(at(path, "route"), Problem::RootRoute(r.name.clone()));
        }
        return;
    }
    if *route_type == RouteType::Delegate && r.delegate.is_some() {
        c.err(at(path, "delegate"), Problem::DelegateDelegate);
    }
    let conflict = |what, first, second| Problem::Conflict {
        what,
        first,
        second,
    };
    if r.redirect.is_some() {
        let field = at(path, "redirect");
        if has_route {
            c.err(field.clone(), conflict("HTTP route", "route", "redirect"));
        }
        if r.fault.is_some() {
            c.err(field.clone(), conflict("HTTP route", "fault", "redirect"));
        }
        if r.rewrite.is_some() {
            c.err(
                field.clone(),
                conflict("HTTP route rule", "rewrite", "redirect"),
            );
        }
        if r.direct_response.is_some() {
            c.err(
                field,
                conflict("HTTP route rule", "direct_response", "redirect"),
            );
        }
    } else if r.direct_response.is_some() {
        let field = at(path, "directResponse");
        if has_route {
            c.err(
                field.clone(),
                conflict("HTTP route", "route", "direct_response"),
            );
        }
        if r.fault.is_some() {
            c.err(
                field.clone(),
                conflict("HTTP route", "fault", "direct_response"),
            );
        }
        if r.rewrite.is_some() {
            c.err(
                field,
                conflict("HTTP route rule", "rewrite", "direct_response"),
            );
        }
    } else if !has_route {
        c.err(at(path, "route"), Problem::NoAction);
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        c.err(
            at(path, "mirrors"),
            conflict("HTTP route", "mirror", "mirrors"),
        );
    }
}

fn check_match(c: &mut Checker, path: &str, m: &HttpMatchRequest) {
    for (name, sm) in &m.headers {
        let field = key(&at(path, "headers"), name);
        c.check(field.clone(), values::validate_header_name_or_claim(name));
        c.check(field, values::validate_string_match(sm, "headers"));
    }
    for (name, sm) in &m.without_headers {
        let field = key(&at(path, "withoutHeaders"), name);
        c.check(field.clone(), values::validate_header_name_or_claim(name));
        // `regex: "*"` is not RE2: it means "present".
        if sm.regex.as_deref() != Some("*") {
            c.check(field, values::validate_string_match(sm, "withoutHeaders"));
        }
    }
    if let Some(uri) = &m.uri {
        c.check(
            at(path, "uri"),
            values::validate_string_match_regex(uri, "uri"),
        );
    }
    for (leaf, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            c.check(at(path, leaf), values::validate_string_match(sm, leaf));
        }
    }
    for (name, sm) in &m.query_params {
        c.check(
            key(&at(path, "queryParams"), name),
            values::validate_string_match(sm, "queryParams"),
        );
    }
    if let Some(port) = m.port.filter(|p| *p != 0) {
        c.check(at(path, "port"), values::validate_port(i64::from(port)));
    }
    validate_labels(c, &at(path, "sourceLabels"), &m.source_labels);
    validate_gateway_names(c, &at(path, "gateways"), &m.gateways);
    if !m.source_namespace.is_empty() && !names::is_dns1123_label(&m.source_namespace) {
        c.err(
            at(path, "sourceNamespace"),
            Problem::SourceNamespace(m.source_namespace.clone()),
        );
    }
}

/// Header operations of a route or a destination.
pub(super) fn check_headers(c: &mut Checker, path: &str, h: &Headers) {
    if let Some(req) = &h.request {
        check_header_ops(c, &at(path, "request"), req, true);
    }
    if let Some(resp) = &h.response {
        check_header_ops(c, &at(path, "response"), resp, false);
    }
}

fn check_header_ops(c: &mut Checker, path: &str, ops: &HeaderOperations, request: bool) {
    for (leaf, map) in [("add", &ops.add), ("set", &ops.set)] {
        for (name, value) in map {
            let field = key(&at(path, leaf), name);
            let name_ok = if request {
                values::validate_header_op_with_authority(name)
            } else {
                values::validate_header_op(name)
            };
            c.check(field.clone(), name_ok);
            c.check(field, values::validate_header_value(value));
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        c.check(
            idx(&at(path, "remove"), i),
            values::validate_header_op(name),
        );
    }
}

fn check_cors(c: &mut Checker, path: &str, cors: &CorsPolicy) {
    for (i, origin) in cors.allow_origins.iter().enumerate() {
        let field = idx(&at(path, "allowOrigins"), i);
        if origin.matcher().is_none_or(|m| m.value().is_empty()) {
            c.err(field, Problem::CorsOrigin);
            continue;
        }
        c.check(
            field,
            values::validate_string_match_regex(origin, "corsPolicy.allowOrigins"),
        );
    }
    for (i, method) in cors.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&method.as_str()) {
            c.err(
                idx(&at(path, "allowMethods"), i),
                Problem::CorsMethod(method.clone()),
            );
        }
    }
    for (leaf, list) in [
        ("allowHeaders", &cors.allow_headers),
        ("exposeHeaders", &cors.expose_headers),
    ] {
        for (i, name) in list.iter().enumerate() {
            c.check(
                idx(&at(path, leaf), i),
                values::validate_cors_header_name(name),
            );
        }
    }
    if let Some(max_age) = cors.max_age {
        let field = at(path, "maxAge");
        c.check(field.clone(), validate_duration(max_age));
        if !max_age.is_whole_seconds() && max_age.as_nanos() > 0 {
            c.err(field, Problem::CorsMaxAge);
        }
    }
}

fn check_abort(c: &mut Checker, path: &str, abort: &FaultAbort) {
    if let Some(p) = &abort.percentage {
        c.check(at(path, "percentage"), validate_percentage(p));
    }
    let set = [
        abort.http_status.is_some(),
        abort.grpc_status.is_some(),
        abort.http2_error.is_some(),
    ]
    .into_iter()
    .filter(|b| *b)
    .count();
    if set > 1 {
        c.err(path, Problem::AbortOneOf);
    }
    if let Some(status) = &abort.grpc_status {
        if !GRPC_STATUS.contains(&status.as_str()) {
            c.err(at(path, "grpcStatus"), Problem::GrpcStatus(status.clone()));
        }
    } else if abort.http2_error.is_some() {
        c.err(at(path, "http2Error"), Problem::AbortHttp2);
    } else if let Some(status) = abort.http_status {
        c.check(
            at(path, "httpStatus"),
            values::validate_http_status(i64::from(status)),
        );
    } else {
        c.warn(path, Problem::AbortNoType);
    }
}

fn check_delay(c: &mut Checker, path: &str, delay: &FaultDelay) {
    if let Some(p) = &delay.percentage {
        c.check(at(path, "percentage"), validate_percentage(p));
    }
    if delay.fixed_delay.is_some() && delay.exponential_delay.is_some() {
        c.err(path, Problem::DelayOneOf);
    }
    if let Some(d) = delay.fixed_delay {
        c.check(at(path, "fixedDelay"), validate_duration(d));
    } else if let Some(d) = delay.exponential_delay {
        let field = at(path, "exponentialDelay");
        c.check(field.clone(), validate_duration(d));
        c.err(field, Problem::ExponentialDelay);
    }
}

/// Istio's `validateDestination`.
pub(super) fn check_destination(c: &mut Checker, path: &str, d: &Destination) {
    let host = at(path, "host");
    if d.host == "*" {
        c.err(host, Problem::DestinationHost(d.host.clone()));
    } else {
        c.check(host, names::validate_wildcard_domain(&d.host));
    }
    if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
        if !names::is_dns1123_label(subset) {
            c.err(at(path, "subset"), Problem::SubsetName(subset.to_string()));
        }
    }
    if let Some(port) = &d.port {
        c.check(
            at(&at(path, "port"), "number"),
            values::validate_port(i64::from(port.number)),
        );
    }
}

//! The engine's rules, one table per kind of matcher.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use xds_client::model::matcher::{HeaderMatch, HeaderMatcher, Regex, StringMatcher};
use xds_client::model::rbac::{
    Permission, Policy, Principal, Rbac, RbacAction, RbacRules, UriTemplate,
};

use super::*;
use crate::stats::Counters;

fn rules(action: RbacAction, policies: Vec<(&str, Policy)>) -> RbacRules {
    RbacRules {
        action,
        policies: policies
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn perm(p: Permission) -> Policy {
    Policy {
        permissions: vec![p],
        principals: vec![Principal::Any],
    }
}

fn prin(p: Principal) -> Policy {
    Policy {
        permissions: vec![Permission::Any],
        principals: vec![p],
    }
}

fn header(name: &str, rule: HeaderMatch) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        rule,
        invert: false,
        treat_missing_as_empty: false,
    }
}

fn exact(v: &str) -> StringMatcher {
    StringMatcher::exact(v)
}

/// A request, built field by field.
struct Req {
    method: &'static str,
    path: &'static str,
    authority: &'static str,
    headers: http::HeaderMap,
    source: SocketAddr,
    destination: SocketAddr,
    principal: Option<&'static str>,
    sni: Option<&'static str>,
}

impl Req {
    fn new() -> Req {
        Req {
            method: "GET",
            path: "/",
            authority: "svc.ns",
            headers: http::HeaderMap::new(),
            source: "10.0.0.1:40000".parse().unwrap(),
            destination: "10.0.0.2:8080".parse().unwrap(),
            principal: None,
            sni: None,
        }
    }

    fn header(mut self, k: &'static str, v: &'static str) -> Req {
        self.headers.append(k, v.parse().unwrap());
        self
    }

    fn allowed(&self, engine: &Engine) -> bool {
        self.decide(engine, true).0
    }

    fn decide(&self, engine: &Engine, http: bool) -> (bool, Option<String>) {
        let request = RequestAttributes {
            method: self.method,
            path: self.path,
            authority: self.authority,
            scheme: "http",
            headers: &self.headers,
            remote_ip: remote_ip(&self.headers, self.source.ip()),
        };
        let attrs = Attributes {
            source: self.source,
            destination: self.destination,
            principal: self.principal,
            server_name: self.sni,
            request: http.then_some(&request),
        };
        let d = engine.evaluate(&attrs);
        (d.allowed, d.policy.map(str::to_string))
    }
}

fn allow(p: Policy) -> Engine {
    Engine::new(&rules(RbacAction::Allow, vec![("p", p)]))
}

#[test]
fn actions_and_policy_order() {
    let deny = Engine::new(&rules(
        RbacAction::Deny,
        vec![
            ("b-port", perm(Permission::DestinationPort(8080))),
            ("a-path", perm(Permission::UrlPath(exact("/x")))),
        ],
    ));
    let mut r = Req::new();
    assert_eq!(r.decide(&deny, true), (false, Some("b-port".into())));
    r.path = "/x";
    assert_eq!(
        r.decide(&deny, true),
        (false, Some("a-path".into())),
        "name order"
    );
    r.destination = "10.0.0.2:9090".parse().unwrap();
    r.path = "/y";
    assert_eq!(r.decide(&deny, true), (true, None));
    let empty_allow = Engine::new(&rules(RbacAction::Allow, vec![]));
    assert!(!r.allowed(&empty_allow), "ALLOW without policies denies");
    let log = Engine::new(&rules(
        RbacAction::Log,
        vec![("all", perm(Permission::Any))],
    ));
    assert_eq!(r.decide(&log, true), (true, Some("all".into())));
}

#[test]
fn policy_needs_a_permission_and_a_principal() {
    let e = allow(Policy {
        permissions: vec![
            Permission::UrlPath(exact("/a")),
            Permission::UrlPath(exact("/b")),
        ],
        principals: vec![Principal::DirectRemoteIp("10.0.0.0/24".parse().unwrap())],
    });
    let mut r = Req::new();
    r.path = "/b?q=1";
    assert!(r.allowed(&e));
    r.source = "10.0.1.1:1".parse().unwrap();
    assert!(!r.allowed(&e));
}

#[test]
fn trees() {
    let e = allow(perm(Permission::And(vec![
        Permission::Or(vec![
            Permission::Header(header(":method", HeaderMatch::String(exact("GET")))),
            Permission::Header(header(":method", HeaderMatch::String(exact("HEAD")))),
        ]),
        Permission::Not(Box::new(Permission::UrlPath(StringMatcher::Prefix {
            value: "/admin".into(),
            ignore_case: false,
        }))),
    ])));
    let mut r = Req::new();
    assert!(r.allowed(&e));
    r.method = "POST";
    assert!(!r.allowed(&e));
    r.method = "HEAD";
    r.path = "/admin/x";
    assert!(!r.allowed(&e));
}

#[test]
fn authenticated_principals() {
    let e = allow(prin(Principal::Authenticated(Some(StringMatcher::Regex(
        Regex::new(".*/ns/payments/.*").unwrap(),
    )))));
    let mut r = Req::new();
    assert!(!r.allowed(&e), "plaintext never authenticated");
    r.principal = Some("spiffe://cluster.local/ns/payments/sa/api");
    assert!(r.allowed(&e));
    r.principal = Some("spiffe://cluster.local/ns/orders/sa/api");
    assert!(!r.allowed(&e));
    let any = allow(prin(Principal::Authenticated(None)));
    assert!(r.allowed(&any));
    r.principal = None;
    assert!(!r.allowed(&any));
    // A spoofed header is not an identity.
    let r = Req::new().header(
        "x-forwarded-client-cert",
        "By=x;URI=spiffe://cluster.local/ns/payments/sa/api",
    );
    assert!(!r.allowed(&e));
}

#[test]
fn headers_case_repeats_and_absence() {
    let e = allow(prin(Principal::Header(header(
        "x-token",
        HeaderMatch::String(exact("secret")),
    ))));
    assert!(
        Req::new().header("X-Token", "secret").allowed(&e),
        "name case"
    );
    assert!(
        !Req::new().header("x-token", "SECRET").allowed(&e),
        "value case"
    );
    assert!(!Req::new()
        .header("x-token", "wrong")
        .header("x-token", "secret")
        .allowed(&e));
    assert!(!Req::new().allowed(&e));
    let deny = Engine::new(&rules(
        RbacAction::Deny,
        vec![(
            "d",
            prin(Principal::Header(header(
                "x-user",
                HeaderMatch::String(StringMatcher::Prefix {
                    value: "admin".into(),
                    ignore_case: false,
                }),
            ))),
        )],
    ));
    assert!(!Req::new()
        .header("x-user", "admin")
        .header("x-user", "bob")
        .allowed(&deny));
    // On TCP every header is absent.
    let present = allow(prin(Principal::Header(header(
        "x-a",
        HeaderMatch::Present(false),
    ))));
    assert!(Req::new().decide(&present, false).0);
}

#[test]
fn authority_case_port_and_trailing_dot() {
    let host = |m: StringMatcher| {
        allow(perm(Permission::Header(header(
            ":authority",
            HeaderMatch::String(m),
        ))))
    };
    let e = host(StringMatcher::Exact {
        value: "example.com".into(),
        ignore_case: true,
    });
    for authority in [
        "example.com",
        "EXAMPLE.com",
        "example.com:8080",
        "example.com.",
        "Example.COM.:80",
    ] {
        let mut r = Req::new();
        r.authority = authority;
        assert!(r.allowed(&e), "{authority}");
    }
    let mut r = Req::new();
    r.authority = "example.com.evil";
    assert!(!r.allowed(&e));
    let with_port = host(StringMatcher::Exact {
        value: "example.com:8080".into(),
        ignore_case: true,
    });
    r.authority = "example.com.:8080";
    assert!(r.allowed(&with_port));
    r.authority = "example.com:9090";
    assert!(!r.allowed(&with_port));
    r.authority = "example.com";
    assert!(!r.allowed(&with_port));
    let suffix = host(StringMatcher::Suffix {
        value: ".example.com".into(),
        ignore_case: true,
    });
    r.authority = "api.Example.com:443";
    assert!(r.allowed(&suffix));
}

#[test]
fn paths_templates_ports_ips_sni() {
    let template = allow(perm(Permission::UriTemplate(UriTemplate {
        template: "/v1/*/items".into(),
        regex: Regex::new(r"/v1/[a-zA-Z0-9\-._~%!$&'()+,;:@]+/items").unwrap(),
    })));
    let mut r = Req::new();
    r.path = "/v1/7/items?x";
    assert!(r.allowed(&template));
    r.path = "/v1/7/8/items";
    assert!(!r.allowed(&template));
    let range = allow(perm(Permission::DestinationPortRange {
        start: 8000,
        end: 8081,
    }));
    assert!(Req::new().allowed(&range));
    let ip = allow(perm(Permission::DestinationIp(
        "10.0.0.0/30".parse().unwrap(),
    )));
    assert!(Req::new().decide(&ip, false).0);
    let sni = allow(perm(Permission::RequestedServerName(StringMatcher::Regex(
        Regex::new(".+").unwrap(),
    ))));
    let mut r = Req::new();
    assert!(!r.allowed(&sni), "no TLS: the server name is empty");
    r.sni = Some("outbound_.8080_._.svc.ns.svc.cluster.local");
    assert!(r.allowed(&sni));
}

#[test]
fn remote_ip_is_the_last_forwarded_address() {
    let e = allow(prin(Principal::RemoteIp("192.168.0.0/16".parse().unwrap())));
    assert!(!Req::new().allowed(&e));
    assert!(Req::new()
        .header("x-forwarded-for", "1.2.3.4, 192.168.1.1")
        .allowed(&e));
    assert!(!Req::new()
        .header("x-forwarded-for", "192.168.1.1, 1.2.3.4")
        .allowed(&e));
    let direct = allow(prin(Principal::DirectRemoteIp(
        "192.168.0.0/16".parse().unwrap(),
    )));
    assert!(!Req::new()
        .header("x-forwarded-for", "192.168.1.1")
        .allowed(&direct));
}

#[test]
fn filter_counts_shadows_and_names_the_policy() {
    let counters = Counters::default();
    let rbac = Rbac {
        rules: Some(rules(
            RbacAction::Deny,
            vec![(
                "ns[foo]-policy[d]-rule[0]",
                perm(Permission::DestinationPort(8080)),
            )],
        )),
        shadow_rules: Some(rules(
            RbacAction::Allow,
            vec![(
                "ns[foo]-policy[s]-rule[0]",
                perm(Permission::DestinationPort(1)),
            )],
        )),
        shadow_rules_stat_prefix: "istio_dry_run_allow_".into(),
        ..Rbac::default()
    };
    let f = RbacFilter::new(&rbac, &counters, "http.inbound_0.0.0.0_8080.");
    let r = Req::new();
    let request = RequestAttributes {
        method: "GET",
        path: "/",
        authority: "a",
        scheme: "http",
        headers: &r.headers,
        remote_ip: r.source.ip(),
    };
    let attrs = Attributes {
        source: r.source,
        destination: r.destination,
        principal: None,
        server_name: None,
        request: Some(&request),
    };
    let out = f.check(&attrs);
    assert!(!out.allowed);
    assert_eq!(
        out.denied_details.as_deref(),
        Some("rbac_access_denied_matched_policy[ns[foo]-policy[d]-rule[0]]")
    );
    assert_eq!(out.shadow.as_ref().map(|s| s.allowed), Some(false));
    let values: BTreeMap<_, _> = counters.snapshot().into_iter().collect();
    assert_eq!(values["http.inbound_0.0.0.0_8080.rbac.denied"], 1);
    assert_eq!(
        values["http.inbound_0.0.0.0_8080.rbac.istio_dry_run_allow_shadow_denied"],
        1
    );
    assert_eq!(f.stats().allowed.load(Ordering::Relaxed), 0);
    // Shadow-only filter: everything passes.
    let shadow_only = RbacFilter::new(
        &Rbac {
            rules: None,
            ..rbac.clone()
        },
        &counters,
        "tcp.",
    );
    assert!(shadow_only.check(&attrs).allowed);
    assert_eq!(
        counters
            .counter("tcp.rbac.istio_dry_run_allow_shadow_denied")
            .load(Ordering::Relaxed),
        1
    );
    // Several filters: the first denial stops.
    let allow_all = RbacFilter::new(
        &Rbac {
            rules: Some(rules(RbacAction::Allow, vec![("a", perm(Permission::Any))])),
            ..Rbac::default()
        },
        &counters,
        "x.",
    );
    assert!(check_all([&allow_all, &shadow_only], &attrs).allowed);
    let both = check_all([&f, &allow_all], &attrs);
    assert!(!both.allowed);
    assert_eq!(allow_all.stats().allowed.load(Ordering::Relaxed), 1);
}

#[test]
fn metadata_never_present() {
    use xds_client::model::matcher::{MetadataMatcher, ValueMatcher};
    let jwt = |invert| MetadataMatcher {
        filter: "envoy.filters.http.jwt_authn".into(),
        path: vec!["payload".into(), "iss".into()],
        value: ValueMatcher::Present(false),
        invert,
    };
    assert!(!Req::new().allowed(&allow(prin(Principal::Metadata(jwt(false))))));
    assert!(Req::new().allowed(&allow(prin(Principal::Metadata(jwt(true))))));
}

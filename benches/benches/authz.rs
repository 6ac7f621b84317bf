//! criterion micro-benchmarks of authorization evaluation (`proxy::authz::Engine`, the RBAC
//! filter's rules) with hundreds to thousands of policies shaped as istiod translates
//! AuthorizationPolicies: per policy, a method and a path prefix, from one SPIFFE identity.
//!
//! Run: `cargo bench -p mesh-benches --bench authz`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use proxy::authz::{Attributes, Engine, RequestAttributes};
use xds_client::model::matcher::StringMatcher;
use xds_client::model::rbac::{Permission, Policy, Principal, RbacAction, RbacRules};

/// Policies per rule set.
const SIZES: [usize; 3] = [10, 1_000, 5_000];

fn prefix(value: String) -> StringMatcher {
    StringMatcher::Prefix {
        value,
        ignore_case: false,
    }
}

/// ALLOW rules with `n` policies: `ns[i]/svc-i` may call `/api/svc-i/...`.
fn rules(n: usize) -> RbacRules {
    let policies = (0..n)
        .map(|i| {
            let policy = Policy {
                permissions: vec![Permission::And(vec![
                    Permission::UrlPath(prefix(format!("/api/svc-{i}/"))),
                    Permission::DestinationPort(8080),
                ])],
                principals: vec![Principal::Authenticated(Some(StringMatcher::exact(
                    format!("spiffe://cluster.local/ns/ns-{}/sa/svc-{i}", i / 10),
                )))],
            };
            (format!("ns-{}.policy-{i:05}", i / 10), policy)
        })
        .collect::<BTreeMap<_, _>>();
    RbacRules {
        action: RbacAction::Allow,
        policies,
    }
}

fn bench_evaluate(c: &mut Criterion) {
    let mut g = c.benchmark_group("authz/evaluate");
    let source: SocketAddr = "10.211.1.2:40000".parse().expect("address");
    let destination: SocketAddr = "10.211.1.3:8080".parse().expect("address");
    let headers = http::HeaderMap::new();
    for n in SIZES {
        let engine = Engine::new(&rules(n));
        let last = n - 1;
        let path = format!("/api/svc-{last}/items?page=2");
        let principal = format!("spiffe://cluster.local/ns/ns-{}/sa/svc-{last}", last / 10);
        let request = RequestAttributes {
            method: "GET",
            path: &path,
            authority: "reviews:8080",
            scheme: "http",
            headers: &headers,
            remote_ip: source.ip(),
        };
        let allowed = Attributes {
            source,
            destination,
            principal: Some(&principal),
            server_name: None,
            request: Some(&request),
        };
        assert!(engine.evaluate(&allowed).allowed);
        g.bench_with_input(
            BenchmarkId::new("last_policy_allows", n),
            &allowed,
            |b, a| b.iter(|| engine.evaluate(black_box(a))),
        );
        let stranger = Attributes {
            principal: Some("spiffe://cluster.local/ns/other/sa/stranger"),
            ..allowed
        };
        assert!(!engine.evaluate(&stranger).allowed);
        g.bench_with_input(
            BenchmarkId::new("no_policy_denies", n),
            &stranger,
            |b, a| b.iter(|| engine.evaluate(black_box(a))),
        );
    }
    g.finish();
}

fn bench_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("authz/compile");
    g.sample_size(20);
    for n in SIZES {
        let r = rules(n);
        g.bench_with_input(BenchmarkId::new("engine_new", n), &r, |b, r| {
            b.iter(|| Engine::new(black_box(r)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_evaluate, bench_compile);
criterion_main!(benches);

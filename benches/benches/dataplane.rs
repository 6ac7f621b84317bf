//! criterion micro-benchmarks of the sidecar's per-request work, through the `proxy` crate's
//! public API: route matching (virtual host by authority, then route by path and headers) on
//! Istio-shaped
//! tables of hundreds to thousands of services, indexing such a table when a config is applied,
//! and the header operations of every request (authority, `x-request-id`).
//!
//! Authorization evaluation has its own bench, `authz.rs`.
//!
//! Run: `cargo bench -p mesh-benches --bench dataplane`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pingora_http::RequestHeader;
use proxy::http::route::{RequestInfo, RouteTable};
use proxy::snapshot::Snapshot;
use xds_client::model::{
    Destination, FilterConfigs, ForwardAction, HeaderMatch, HeaderMatcher, HeaderOps, PathMatch,
    ProxyConfig, Route, RouteAction, RouteConfig, RouteMatch, StringMatcher, VirtualHost,
};

/// Mesh sizes (services on one port).
const SIZES: [usize; 3] = [100, 1_000, 5_000];

fn route(name: &str, path: PathMatch, cluster: &str) -> Route {
    Route {
        name: name.to_owned(),
        matcher: RouteMatch {
            path,
            case_sensitive: true,
            headers: Vec::new(),
            query_parameters: Vec::new(),
            grpc: false,
        },
        action: RouteAction::Forward(Box::new(ForwardAction {
            destination: Destination::Cluster(cluster.to_owned()),
            timeout: None,
            idle_timeout: None,
            grpc_timeout: None,
            prefix_rewrite: None,
            regex_rewrite: None,
            host_rewrite: None,
            retry_policy: None,
            mirrors: Vec::new(),
            hash_policy: Vec::new(),
            cluster_not_found_status: 503,
        })),
        headers: HeaderOps::default(),
        filter_configs: FilterConfigs::default(),
    }
}

fn vhost(name: String, domains: Vec<String>, routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name,
        domains,
        routes,
        headers: HeaderOps::default(),
        filter_configs: FilterConfigs::default(),
        retry_policy: None,
        include_attempt_count: false,
        include_attempt_count_in_response: false,
    }
}

/// The route configuration `8080` as the control plane shapes it for `n` services, ten to a
/// namespace: per service a virtual host with its FQDN, short names and ClusterIP, with and
/// without the port; then `allow_any` for `*`.
fn istio_routes(n: usize) -> RouteConfig {
    let mut virtual_hosts: Vec<VirtualHost> = (0..n)
        .map(|i| {
            let (name, ns) = (format!("svc-{i}"), format!("ns-{}", i / 10));
            let fqdn = format!("{name}.{ns}.svc.cluster.local");
            let ip = format!("10.100.{}.{}", i / 250, i % 250 + 1);
            let mut domains = Vec::new();
            for d in [
                fqdn.clone(),
                name.clone(),
                format!("{name}.{ns}"),
                format!("{name}.{ns}.svc"),
                ip,
            ] {
                domains.push(format!("{d}:8080"));
                domains.push(d);
            }
            vhost(
                format!("{fqdn}:8080"),
                domains,
                vec![route(
                    "default",
                    PathMatch::Prefix("/".to_owned()),
                    &format!("outbound|8080||{fqdn}"),
                )],
            )
        })
        .collect();
    virtual_hosts.push(vhost(
        "allow_any".to_owned(),
        vec!["*".to_owned()],
        vec![route(
            "allow_any",
            PathMatch::Prefix("/".to_owned()),
            "PassthroughCluster",
        )],
    ));
    RouteConfig {
        name: "8080".to_owned(),
        virtual_hosts,
        headers: HeaderOps::default(),
    }
}

/// The same size of table, but every service reached through `*.NAME.example.com` wildcards,
/// the slow path (a scan of the suffixes, longest first).
fn wildcard_routes(n: usize) -> RouteConfig {
    let virtual_hosts = (0..n)
        .map(|i| {
            vhost(
                format!("wild-{i}"),
                vec![format!("*.svc-{i}.example.com")],
                vec![route("w", PathMatch::Prefix("/".to_owned()), "c")],
            )
        })
        .collect();
    RouteConfig {
        name: "wild".to_owned(),
        virtual_hosts,
        headers: HeaderOps::default(),
    }
}

fn bench_virtual_host(c: &mut Criterion) {
    let mut g = c.benchmark_group("route/virtual_host");
    for n in SIZES {
        let table = RouteTable::new(istio_routes(n));
        let hit = format!("svc-{}.ns-{}:8080", n / 2, n / 20);
        g.bench_with_input(BenchmarkId::new("exact_hit", n), &hit, |b, h| {
            b.iter(|| table.virtual_host(black_box(h)))
        });
        g.bench_with_input(
            BenchmarkId::new("miss_to_allow_any", n),
            &"example.org",
            |b, h| b.iter(|| table.virtual_host(black_box(h))),
        );
        let upper = hit.to_ascii_uppercase();
        g.bench_with_input(
            BenchmarkId::new("exact_hit_uppercase", n),
            &upper,
            |b, h| b.iter(|| table.virtual_host(black_box(h))),
        );
        let wild = RouteTable::new(wildcard_routes(n));
        let last = format!("api.svc-{}.example.com", n - 1);
        g.bench_with_input(BenchmarkId::new("wildcard_scan_worst", n), &last, |b, h| {
            b.iter(|| wild.virtual_host(black_box(h)))
        });
    }
    g.finish();
}

fn info<'a>(req: &'a RequestHeader, path: &'a str) -> RequestInfo<'a> {
    RequestInfo {
        req,
        path_and_query: path,
        authority: "reviews",
        scheme: "http",
        is_grpc: false,
    }
}

fn bench_find_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route/find_route");
    let req = request();
    for n in [10usize, 100, 1_000] {
        let mut routes: Vec<Route> = (0..n)
            .map(|i| route("r", PathMatch::Prefix(format!("/api/v{i}/")), "c"))
            .collect();
        routes.push(route("exact", PathMatch::Exact("/health".to_owned()), "c"));
        let table = RouteTable::new(RouteConfig {
            name: "t".to_owned(),
            virtual_hosts: vec![vhost("vh".to_owned(), vec!["*".to_owned()], routes)],
            headers: HeaderOps::default(),
        });
        let last = format!("/api/v{}/items?page=2", n - 1);
        g.bench_with_input(BenchmarkId::new("prefix_last", n), &last, |b, p| {
            b.iter(|| table.route(&info(&req, black_box(p))).is_some())
        });
        g.bench_with_input(
            BenchmarkId::new("exact_after_all", n),
            &"/health?x=1",
            |b, p| b.iter(|| table.route(&info(&req, black_box(p))).is_some()),
        );
    }
    // Bookinfo's `end-user: jason` route: a header match before the catch-all.
    let mut jason = route("jason", PathMatch::Prefix("/".to_owned()), "v2");
    jason.matcher.headers.push(HeaderMatcher {
        name: "end-user".to_owned(),
        rule: HeaderMatch::String(StringMatcher::exact("jason")),
        invert: false,
        treat_missing_as_empty: false,
    });
    let table = RouteTable::new(RouteConfig {
        name: "t".to_owned(),
        virtual_hosts: vec![vhost(
            "vh".to_owned(),
            vec!["*".to_owned()],
            vec![
                jason,
                route("default", PathMatch::Prefix("/".to_owned()), "v1"),
            ],
        )],
        headers: HeaderOps::default(),
    });
    g.bench_function("header_miss_then_catch_all", |b| {
        b.iter(|| table.route(&info(&req, black_box("/reviews/0"))).is_some())
    });
    g.finish();
}

fn bench_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("config/apply_routes");
    g.sample_size(20);
    for n in SIZES {
        let config = Arc::new(ProxyConfig {
            routes: BTreeMap::from([("8080".to_owned(), istio_routes(n))]),
            ..ProxyConfig::default()
        });
        g.bench_with_input(BenchmarkId::new("snapshot_build", n), &config, |b, cfg| {
            b.iter(|| Snapshot::build(Arc::clone(cfg), None))
        });
    }
    g.finish();
}

fn request() -> RequestHeader {
    let mut req = RequestHeader::build("POST", b"/api/v1/items?page=2", None).expect("request");
    for (k, v) in [
        ("host", "reviews.default.svc.cluster.local:9080"),
        ("user-agent", "mesh-bench"),
        ("content-type", "application/json"),
        ("accept", "*/*"),
        ("content-length", "1024"),
    ] {
        req.insert_header(k, v).expect("header");
    }
    req
}

fn bench_headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("headers");
    let req = request();
    g.bench_function("authority_from_host", |b| {
        b.iter(|| proxy::http::authority(black_box(&req)))
    });
    g.bench_function("new_request_id", |b| b.iter(proxy::http::new_request_id));
    g.bench_function("insert_x_request_id", |b| {
        b.iter_batched_ref(
            request,
            |r| {
                r.insert_header("x-request-id", proxy::http::new_request_id())
                    .expect("insert")
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_virtual_host,
    bench_find_route,
    bench_apply,
    bench_headers
);
criterion_main!(benches);

use std::sync::Arc;

use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::RequestHeader;
use xds_client::model::{
    Discovery, PathMatch, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost,
};

use super::filters::{Filter, Verdict};
use super::reply::{classify, is_grpc, LocalReply, Outcome};
use super::route::{find_route, RouteTable};
use super::*;
use crate::accesslog::ResponseFlag;
use crate::fixtures::*;
use crate::snapshot::{HttpRoutes, Snapshot};

fn table(vhosts: Vec<VirtualHost>) -> RouteTable {
    RouteTable::new(RouteConfig {
        name: "9080".into(),
        virtual_hosts: vhosts,
    })
}

fn vh_name<'a>(t: &'a RouteTable, authority: &str) -> Option<&'a str> {
    t.virtual_host(authority).map(|v| v.name.as_str())
}

#[test]
fn exact_domains_with_and_without_port() {
    let t = table(vec![
        vhost(
            "reviews.default.svc.cluster.local:9080",
            &[
                "reviews.default.svc.cluster.local",
                "reviews.default.svc.cluster.local:9080",
                "reviews",
                "reviews:9080",
                "10.96.0.5",
                "10.96.0.5:9080",
            ],
            "outbound|9080||reviews.default.svc.cluster.local",
        ),
        vhost("allow_any", &["*"], "PassthroughCluster"),
    ]);
    for a in [
        "reviews",
        "reviews:9080",
        "10.96.0.5:9080",
        "REVIEWS.default.svc.cluster.local",
    ] {
        assert_eq!(
            vh_name(&t, a),
            Some("reviews.default.svc.cluster.local:9080"),
            "{a}"
        );
    }
    // A port that is not listed is not the same domain: Envoy falls through to `*`.
    assert_eq!(vh_name(&t, "reviews:9081"), Some("allow_any"));
    assert_eq!(vh_name(&t, "other"), Some("allow_any"));
}

#[test]
fn wildcard_order_suffix_then_prefix_then_any() {
    let t = table(vec![
        vhost("short-suffix", &["*.com"], "a"),
        vhost("long-suffix", &["*.example.com"], "b"),
        vhost("prefix", &["api.*"], "c"),
        vhost("longer-prefix", &["api.v2.*"], "d"),
        vhost("exact", &["api.example.com"], "e"),
    ]);
    assert_eq!(vh_name(&t, "api.example.com"), Some("exact"));
    assert_eq!(vh_name(&t, "www.example.com"), Some("long-suffix"));
    assert_eq!(vh_name(&t, "www.other.com"), Some("short-suffix"));
    // Suffix beats prefix.
    assert_eq!(vh_name(&t, "api.other.com"), Some("short-suffix"));
    assert_eq!(vh_name(&t, "api.v2.internal"), Some("longer-prefix"));
    assert_eq!(vh_name(&t, "api.internal"), Some("prefix"));
    // A wildcard matches at least one character.
    assert_eq!(vh_name(&t, ".example.com"), Some("short-suffix"));
    assert_eq!(vh_name(&t, "nothing"), None);
}

#[test]
fn routes_in_order_prefix_and_exact() {
    let vh = VirtualHost {
        name: "v".into(),
        domains: vec!["*".into()],
        routes: vec![
            Route {
                name: "exact".into(),
                matcher: RouteMatch {
                    path: PathMatch::Exact("/health".into()),
                },
                action: RouteAction::Cluster {
                    cluster: "a".into(),
                    timeout: None,
                },
            },
            Route {
                name: "api".into(),
                matcher: RouteMatch {
                    path: PathMatch::Prefix("/api".into()),
                },
                action: RouteAction::Cluster {
                    cluster: "b".into(),
                    timeout: None,
                },
            },
        ],
    };
    assert_eq!(find_route(&vh, "/health?x=1").unwrap().name, "exact");
    assert_eq!(
        find_route(&vh, "/health/more").map(|r| r.name.as_str()),
        None
    );
    assert_eq!(find_route(&vh, "/api/v1").unwrap().name, "api");
    assert!(find_route(&vh, "/").is_none());
}

fn snapshot() -> Snapshot {
    let cfg = config(
        vec![],
        vec![RouteConfig {
            name: "80".into(),
            virtual_hosts: vec![
                vhost("ok", &["ok"], "ok"),
                vhost("empty", &["empty"], "empty"),
                vhost("missing", &["missing"], "missing"),
            ],
        }],
        vec![
            cluster("ok", Discovery::Static(cla("ok", &["10.0.0.1:80"]))),
            cluster(
                "empty",
                Discovery::Eds {
                    service_name: "empty".into(),
                },
            ),
        ],
        vec![],
    );
    Snapshot::build(Arc::new(cfg), None)
}

fn run_router(s: &Snapshot, routes: &HttpRoutes, host: &str) -> (Verdict, RequestCtx) {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header("host", host).unwrap();
    let mut ctx = RequestCtx::new();
    ctx.authority = authority(&req);
    let counters = crate::stats::Counters::default();
    let verdict = Filter::build(&xds_client::model::HttpFilter::Router, &counters, "test")
        .on_request(&req, &mut ctx, s, routes);
    (verdict, ctx)
}

#[test]
fn router_decisions() {
    let s = snapshot();
    let rds = HttpRoutes::Rds("80".into());
    let (v, ctx) = run_router(&s, &rds, "ok");
    assert_eq!(v, Verdict::Continue);
    let decision = ctx.route.unwrap();
    assert_eq!(decision.cluster_name, "ok");
    assert_eq!(decision.route_name, "default");
    assert_eq!(
        run_router(&s, &rds, "nope").0,
        Verdict::Reply(LocalReply::NoRoute)
    );
    assert_eq!(
        run_router(&s, &rds, "empty").0,
        Verdict::Reply(LocalReply::NoHealthyUpstream)
    );
    assert_eq!(
        run_router(&s, &rds, "missing").0,
        Verdict::Reply(LocalReply::NoCluster)
    );
    // RDS not (yet) delivered: no route.
    let unknown = HttpRoutes::Rds("81".into());
    assert_eq!(
        run_router(&s, &unknown, "ok").0,
        Verdict::Reply(LocalReply::NoRoute)
    );
    // Inline routes.
    let inline = HttpRoutes::Inline(Arc::new(RouteTable::new(RouteConfig {
        name: "inbound|80||".into(),
        virtual_hosts: vec![vhost("inbound|http|80", &["*"], "ok")],
    })));
    assert_eq!(run_router(&s, &inline, "anything").0, Verdict::Continue);
}

#[test]
fn local_replies_match_envoy() {
    assert_eq!(LocalReply::NoRoute.status(), 404);
    assert_eq!(LocalReply::NoRoute.flag(), ResponseFlag::NoRoute);
    assert_eq!(LocalReply::NoHealthyUpstream.status(), 503);
    assert_eq!(LocalReply::NoHealthyUpstream.body(), "no healthy upstream");
    assert_eq!(LocalReply::NoHealthyUpstream.flag().as_str(), "UH");
    assert_eq!(LocalReply::ConnectFailure.status(), 503);
    assert_eq!(
        LocalReply::ConnectFailure.body(),
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    );
    assert_eq!(LocalReply::ConnectFailure.flag().as_str(), "UF");
    assert_eq!(LocalReply::Timeout.status(), 504);
    assert_eq!(LocalReply::Timeout.flag().as_str(), "UT");
    assert_eq!(LocalReply::NoHealthyUpstream.grpc_status(), 14);
    assert_eq!(LocalReply::NoRoute.grpc_status(), 12);
}

#[test]
fn errors_are_classified_like_envoy() {
    let up = |t: ErrorType| {
        let mut e = Error::new(t);
        e.esource = ErrorSource::Upstream;
        e
    };
    let down = |t: ErrorType| {
        let mut e = Error::new(t);
        e.esource = ErrorSource::Downstream;
        e
    };
    assert_eq!(
        classify(&up(ErrorType::ConnectRefused)),
        Outcome::Reply(LocalReply::ConnectFailure)
    );
    assert_eq!(
        classify(&up(ErrorType::ConnectTimedout)),
        Outcome::Reply(LocalReply::ConnectFailure)
    );
    assert_eq!(
        classify(&up(ErrorType::ReadTimedout)),
        Outcome::Reply(LocalReply::Timeout)
    );
    assert_eq!(
        classify(&up(ErrorType::ConnectionClosed)),
        Outcome::Reply(LocalReply::UpstreamReset)
    );
    assert_eq!(
        classify(&down(ErrorType::ConnectionClosed)),
        Outcome::DownstreamGone
    );
    assert_eq!(
        classify(&Error::new(ErrorType::InternalError)),
        Outcome::Reply(LocalReply::Internal)
    );
}

#[test]
fn request_helpers() {
    let id = new_request_id();
    assert_eq!(id.len(), 36);
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        vec![8, 4, 4, 4, 12]
    );
    assert!(parts[2].starts_with('4'));
    assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
    assert_ne!(new_request_id(), id);

    let mut req = RequestHeader::build("POST", b"/pkg.Svc/Call", None).unwrap();
    req.insert_header("host", "svc:50051").unwrap();
    assert_eq!(authority(&req).as_deref(), Some("svc:50051"));
    assert!(!is_grpc(&req));
    req.insert_header("content-type", "application/grpc+proto")
        .unwrap();
    assert!(is_grpc(&req));
    let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
    req.set_uri("http://h2.example:8080/x".parse().unwrap());
    assert_eq!(authority(&req).as_deref(), Some("h2.example:8080"));
}

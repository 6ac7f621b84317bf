use std::sync::Arc;

use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::RequestHeader;
use xds_client::model::{
    Discovery, PathMatch, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost,
};

use super::ctx::MatchedRoute;
use super::filters::{Filter, Verdict};
use super::reply::{classify, is_grpc, ConnectCause, LocalReply, Outcome};
use super::route::{RequestInfo, RouteTable};
use super::*;
use crate::accesslog::ResponseFlag;
use crate::fixtures::*;
use crate::snapshot::{HttpRoutes, Snapshot};

fn table(vhosts: Vec<VirtualHost>) -> RouteTable {
    RouteTable::new(RouteConfig::new("9080", vhosts))
}

/// The name of the route `t` chooses for a GET of `path` with `headers`.
fn route_for<'t>(t: &'t RouteTable, path: &str, headers: &[(&str, &str)]) -> Option<&'t str> {
    let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
    for (k, v) in headers {
        req.append_header(k.to_string(), *v).unwrap();
    }
    let info = RequestInfo {
        req: &req,
        path_and_query: path,
        authority: "any",
        scheme: "http",
        is_grpc: is_grpc(&req),
    };
    t.route(&info).map(|r| r.route.name.as_str())
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
    let vh = VirtualHost::new(
        "v",
        &["*"],
        vec![
            Route::new(
                "exact",
                RouteMatch::path(PathMatch::Exact("/health".into())),
                RouteAction::cluster("a"),
            ),
            Route::new(
                "api",
                RouteMatch::path(PathMatch::Prefix("/api".into())),
                RouteAction::cluster("b"),
            ),
        ],
    );
    let t = table(vec![vh]);
    assert_eq!(route_for(&t, "/health?x=1", &[]), Some("exact"));
    assert_eq!(route_for(&t, "/health/more", &[]), None);
    assert_eq!(route_for(&t, "/api/v1", &[]), Some("api"));
    assert_eq!(route_for(&t, "/", &[]), None);
}

fn snapshot() -> Snapshot {
    let cfg = config(
        vec![],
        vec![RouteConfig::new(
            "80",
            vec![
                vhost("ok", &["ok"], "ok"),
                vhost("empty", &["empty"], "empty"),
                vhost("missing", &["missing"], "missing"),
            ],
        )],
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
    let info = RequestInfo {
        req: &req,
        path_and_query: "/",
        authority: host,
        scheme: "http",
        is_grpc: false,
    };
    let table = match routes {
        HttpRoutes::Inline(t) => Some(t),
        HttpRoutes::Rds(name) => s.route_table(name),
    };
    ctx.route = table
        .and_then(|t| t.route(&info))
        .map(|entry| MatchedRoute {
            entry: entry.clone(),
            target: 0,
        });
    let counters = crate::stats::Counters::default();
    let verdict = Filter::build(&xds_client::model::HttpFilter::Router, &counters, "test")
        .on_request(&info, &mut ctx, s, None);
    (verdict, ctx)
}

#[test]
fn router_decisions() {
    let s = snapshot();
    let rds = HttpRoutes::Rds("80".into());
    let (v, ctx) = run_router(&s, &rds, "ok");
    assert_eq!(v, Verdict::Continue);
    assert_eq!(ctx.forward.unwrap().cluster_name, "ok");
    assert_eq!(ctx.route.unwrap().entry.route.name, "default");
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
        Verdict::Reply(LocalReply::NoCluster(503))
    );
    // RDS not (yet) delivered: no route.
    let unknown = HttpRoutes::Rds("81".into());
    assert_eq!(
        run_router(&s, &unknown, "ok").0,
        Verdict::Reply(LocalReply::NoRoute)
    );
    // Inline routes.
    let inline = HttpRoutes::Inline(Arc::new(RouteTable::new(RouteConfig::new(
        "inbound|80||",
        vec![vhost("inbound|http|80", &["*"], "ok")],
    ))));
    assert_eq!(run_router(&s, &inline, "anything").0, Verdict::Continue);
}

#[test]
fn local_replies_match_envoy() {
    assert_eq!(LocalReply::NoRoute.status(), 404);
    assert_eq!(LocalReply::NoRoute.flag(), ResponseFlag::NoRoute);
    assert_eq!(LocalReply::NoHealthyUpstream.status(), 503);
    assert_eq!(LocalReply::NoHealthyUpstream.body(), "no healthy upstream");
    assert_eq!(LocalReply::NoHealthyUpstream.flag().as_str(), "UH");
    // Envoy 1.40's words for a refused connection, a timed out one, and after retries.
    let refused = LocalReply::ConnectFailure(ConnectCause::Refused);
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.body(),
        "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
    );
    assert_eq!(
        refused.body_after(true),
        "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure"
    );
    assert_eq!(
        refused.details(),
        "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}"
    );
    assert_eq!(
        ConnectCause::Refused.transport_failure_reason(),
        Some("delayed_connect_error:_Connection_refused")
    );
    assert_eq!(
        LocalReply::ConnectFailure(ConnectCause::Timeout).body(),
        "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
    );
    assert_eq!(refused.flag().as_str(), "UF");
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
        Outcome::Reply(LocalReply::ConnectFailure(ConnectCause::Refused))
    );
    assert_eq!(
        classify(&up(ErrorType::ConnectTimedout)),
        Outcome::Reply(LocalReply::ConnectFailure(ConnectCause::Timeout))
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

fn info_for<'a>(req: &'a RequestHeader, path: &'a str) -> RequestInfo<'a> {
    RequestInfo {
        req,
        path_and_query: path,
        authority: "reviews",
        scheme: "http",
        is_grpc: is_grpc(req),
    }
}

#[test]
fn fault_filter_delays_and_aborts_by_share_and_headers() {
    use super::fault::FaultFilter;
    use xds_client::model::{
        AbortStatus, FaultAbort, FaultConfig, FaultDelay, Fraction, HeaderMatch, HeaderMatcher,
        StringMatcher,
    };
    let config = FaultConfig {
        delay: Some(FaultDelay {
            duration: std::time::Duration::from_secs(7),
            fraction: Fraction {
                per_million: 500_000,
            },
        }),
        abort: Some(FaultAbort {
            status: AbortStatus::Http(500),
            fraction: Fraction::ALL,
            body: None,
        }),
        headers: vec![HeaderMatcher {
            name: "end-user".into(),
            rule: HeaderMatch::String(StringMatcher::exact("jason")),
            invert: false,
            treat_missing_as_empty: false,
        }],
        max_active_faults: Some(1),
    };
    let filter = FaultFilter::new(&config);
    let mut jason = RequestHeader::build("GET", b"/ratings/0", None).unwrap();
    jason.insert_header("end-user", "jason").unwrap();
    let other = RequestHeader::build("GET", b"/ratings/0", None).unwrap();
    let (d, guard) = filter.decide(&info_for(&jason, "/ratings/0"), None, (499_999, 0));
    assert_eq!(d.delay, Some(std::time::Duration::from_secs(7)));
    let abort = d.abort.unwrap();
    assert_eq!(
        (abort.status(), abort.body().as_str()),
        (500, "fault filter abort")
    );
    assert_eq!(abort.flag().as_str(), "FI");
    // At most one active fault: a second request passes while the first is held.
    let (d2, _) = filter.decide(&info_for(&jason, "/ratings/0"), None, (0, 0));
    assert_eq!(d2, super::fault::Decision::default());
    drop(guard);
    let (d3, _) = filter.decide(&info_for(&jason, "/ratings/0"), None, (500_000, 0));
    assert_eq!(d3.delay, None, "outside the delay share");
    let (d4, _) = filter.decide(&info_for(&other, "/ratings/0"), None, (0, 0));
    assert_eq!(d4, super::fault::Decision::default(), "header condition");
    let grpc = LocalReply::FaultAbort {
        status: AbortStatus::Grpc(14),
        body: None,
    };
    assert_eq!((grpc.status(), grpc.grpc_status()), (200, 14));
}

#[test]
fn cors_preflight_and_annotation() {
    use super::cors::{decide, Decision};
    use xds_client::model::{CorsPolicy, Fraction, StringMatcher};
    let policy = CorsPolicy {
        allow_origin: vec![StringMatcher::exact("https://example.com")],
        allow_methods: "GET,POST".into(),
        allow_headers: "x-token".into(),
        expose_headers: "x-trace".into(),
        max_age: "600".into(),
        allow_credentials: true,
        allow_private_network_access: false,
        forward_not_matching_preflights: true,
        enabled: Fraction::ALL,
    };
    let mut pre = RequestHeader::build("OPTIONS", b"/", None).unwrap();
    pre.insert_header("origin", "https://example.com").unwrap();
    pre.insert_header("access-control-request-method", "POST")
        .unwrap();
    let Decision::Reply(LocalReply::Direct(reply)) = decide(Some(&policy), &info_for(&pre, "/"), 0)
    else {
        panic!("preflight answered locally");
    };
    assert_eq!(reply.status, 200);
    let get = |n: &str| {
        reply
            .headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        get("access-control-allow-origin"),
        Some("https://example.com")
    );
    assert_eq!(get("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(get("access-control-max-age"), Some("600"));
    assert_eq!(get("access-control-allow-credentials"), Some("true"));
    let mut other = pre.clone();
    other
        .insert_header("origin", "https://evil.example")
        .unwrap();
    assert_eq!(
        decide(Some(&policy), &info_for(&other, "/"), 0),
        Decision::Pass
    );
    let mut simple = RequestHeader::build("GET", b"/", None).unwrap();
    simple
        .insert_header("origin", "https://example.com")
        .unwrap();
    assert_eq!(
        decide(Some(&policy), &info_for(&simple, "/"), 0),
        Decision::Annotate("https://example.com".into())
    );
    assert_eq!(decide(None, &info_for(&simple, "/"), 0), Decision::Pass);
}

#[test]
fn retry_conditions_follow_envoy() {
    use super::retry::{Failure, RetryState};
    use pingora_http::ResponseHeader;
    use xds_client::model::{RetryBackOff, RetryOn, RetryPolicy};
    let policy = |on: RetryOn, codes: Vec<u16>| RetryPolicy {
        retry_on: on,
        num_retries: 2,
        per_try_timeout: None,
        previous_hosts: true,
        previous_priorities: false,
        host_selection_max_attempts: 5,
        retriable_status_codes: codes,
        back_off: RetryBackOff {
            base: std::time::Duration::from_millis(25),
            max: std::time::Duration::from_millis(250),
        },
        retriable_headers: vec![],
        retriable_request_headers: vec![],
    };
    let resp = |status: u16, grpc: Option<&str>| {
        let mut r = ResponseHeader::build(status, None).unwrap();
        if let Some(g) = grpc {
            r.insert_header("grpc-status", g).unwrap();
        }
        r
    };
    let istio = RetryOn::CONNECT_FAILURE
        .union(RetryOn::REFUSED_STREAM)
        .union(RetryOn::GRPC_UNAVAILABLE)
        .union(RetryOn::GRPC_CANCELLED)
        .union(RetryOn::RETRIABLE_STATUS_CODES);
    let s = RetryState::new(Some(Arc::new(policy(istio, vec![503]))), true);
    assert!(s.retriable_response(&resp(503, None)));
    assert!(!s.retriable_response(&resp(500, None)));
    assert!(s.retriable_response(&resp(200, Some("14"))));
    assert!(!s.retriable_response(&resp(200, Some("13"))));
    assert!(s.retriable_failure(Failure::ConnectFailure));
    assert!(!s.retriable_failure(Failure::Reset {
        before_request: false
    }));
    assert!(!s.retriable_failure(Failure::PerTryTimeout));
    let five = RetryState::new(Some(Arc::new(policy(RetryOn::FIVE_XX, vec![]))), true);
    assert!(five.retriable_response(&resp(500, None)));
    assert!(five.retriable_failure(Failure::PerTryTimeout));
    assert!(five.retriable_failure(Failure::Reset {
        before_request: false
    }));
    let gw = RetryState::new(Some(Arc::new(policy(RetryOn::GATEWAY_ERROR, vec![]))), true);
    assert!(gw.retriable_response(&resp(504, None)));
    assert!(!gw.retriable_response(&resp(500, None)));
    // Attempts: the first plus num_retries; then URX.
    let limits = Arc::new(crate::upstream::limits::ClusterLimits::default());
    let mut s = RetryState::new(Some(Arc::new(policy(RetryOn::FIVE_XX, vec![]))), true);
    s.attempts = 1;
    assert!(s.take_retry(true, &limits, 10));
    assert!(s.backoff.unwrap() < std::time::Duration::from_millis(25));
    s.attempts = 3;
    assert!(!s.take_retry(true, &limits, 10));
    assert!(s.exhausted);
    let mut not_replayable =
        RetryState::new(Some(Arc::new(policy(RetryOn::FIVE_XX, vec![]))), true);
    not_replayable.attempts = 1;
    assert!(!not_replayable.take_retry(false, &limits, 10));
    assert!(!not_replayable.exhausted);
}

#[test]
fn routes_match_headers_query_and_weights() {
    use xds_client::model::{
        Destination, ForwardAction, HeaderMatch, HeaderMatcher, HeaderOps, QueryParameterMatcher,
        StringMatcher, WeightedCluster,
    };
    let mut jason = Route::new(
        "jason",
        RouteMatch::path(PathMatch::Prefix("/".into())),
        RouteAction::cluster("v2"),
    );
    jason.matcher.headers.push(HeaderMatcher {
        name: "end-user".into(),
        rule: HeaderMatch::String(StringMatcher::exact("jason")),
        invert: false,
        treat_missing_as_empty: false,
    });
    let mut debug = Route::new(
        "debug",
        RouteMatch::path(PathMatch::PathSeparatedPrefix("/api".into())),
        RouteAction::cluster("debug"),
    );
    debug.matcher.query_parameters.push(QueryParameterMatcher {
        name: "debug".into(),
        value: Some(StringMatcher::Exact {
            value: "on".into(),
            ignore_case: true,
        }),
    });
    let weighted = Route::new(
        "split",
        RouteMatch::path(PathMatch::Prefix("/".into())),
        RouteAction::Forward(Box::new(ForwardAction {
            destination: Destination::Weighted(vec![
                WeightedCluster {
                    name: "v1".into(),
                    weight: 80,
                    headers: HeaderOps::default(),
                    host_rewrite: None,
                    filter_configs: Default::default(),
                },
                WeightedCluster {
                    name: "v3".into(),
                    weight: 20,
                    headers: HeaderOps::default(),
                    host_rewrite: None,
                    filter_configs: Default::default(),
                },
            ]),
            ..ForwardAction::to_cluster("unused")
        })),
    );
    let t = table(vec![VirtualHost::new(
        "v",
        &["*"],
        vec![jason, debug, weighted],
    )]);
    assert_eq!(
        route_for(&t, "/reviews/1", &[("end-user", "jason")]),
        Some("jason")
    );
    assert_eq!(
        route_for(&t, "/reviews/1", &[("end-user", "json")]),
        Some("split")
    );
    assert_eq!(route_for(&t, "/api?debug=ON", &[]), Some("debug"));
    assert_eq!(route_for(&t, "/api/x?a=1&debug=%6Fn", &[]), Some("debug"));
    assert_eq!(route_for(&t, "/apix?debug=on", &[]), Some("split"));
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header("host", "x").unwrap();
    let entry = t.route(&info_for(&req, "/")).unwrap();
    let mut counts = [0usize; 2];
    for draw in 0..100u64 {
        counts[entry.target_index(draw)] += 1;
    }
    assert_eq!(counts, [80, 20]);
}

//! The Istio-shaped resources of the traffic tests: an outbound HTTP listener whose connection
//! manager has istiod's filters (fault, CORS, router) and one virtual host per scenario.
// Shared by several test binaries, each using a part.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers, cluster, CircuitBreakers, OutlierDetection,
};
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, DataSource, HeaderValue, HeaderValueOption,
    RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, redirect_action, retry_policy, route, route_action, weighted_cluster,
    DirectResponseAction, HeaderMatcher, RedirectAction, RetryPolicy, Route, RouteAction,
    RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{fault_delay, FaultDelay};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort, FaultAbort, HttpFault,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent, FractionalPercent, Percent};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;

use crate::common::xds::*;
use crate::common::Ports;

/// The upstreams of the scenarios.
pub struct Backends {
    /// `mesh-echo` v1 (HTTP).
    pub v1: SocketAddr,
    /// `mesh-echo` v2 (HTTP).
    pub v2: SocketAddr,
    /// `mesh-echo` v3 (HTTP).
    pub v3: SocketAddr,
    /// `mesh-echo` v1 (gRPC).
    pub grpc: SocketAddr,
    /// Always 503.
    pub failing: SocketAddr,
    /// Always 503 too (a second failing endpoint).
    pub failing2: SocketAddr,
    /// Records the mirrored requests.
    pub mirror: SocketAddr,
    /// A loopback port nothing listens on.
    pub closed: SocketAddr,
}

fn d(ms: u64) -> PbDuration {
    let d = Duration::from_millis(ms);
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

fn all() -> Option<FractionalPercent> {
    Some(FractionalPercent {
        numerator: 100,
        denominator: fractional_percent::DenominatorType::Hundred as i32,
    })
}

fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// A connection manager with istiod's filters and RDS routes.
fn hcm(route_name: &str) -> Filter {
    let config = HttpConnectionManager {
        stat_prefix: "outbound".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(envoy_types::pb::envoy::config::core::v3::ConfigSource {
                config_source_specifier: Some(
                    envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Ads(
                        Default::default(),
                    ),
                ),
                ..Default::default()
            }),
            route_config_name: route_name.into(),
        })),
        http_filters: vec![
            http_filter("envoy.filters.http.fault", pack_any(HttpFault::default())),
            http_filter("envoy.filters.http.cors", pack_any(Cors::default())),
            http_filter("envoy.filters.http.router", pack_any(Router::default())),
        ],
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(config))),
    }
}

fn forward(cluster: &str, f: impl FnOnce(&mut RouteAction)) -> Route {
    let mut action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        timeout: Some(d(0)),
        ..Default::default()
    };
    f(&mut action);
    Route {
        name: "default".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

fn retry(on: &str, retries: u32, per_try_ms: Option<u64>) -> Option<RetryPolicy> {
    Some(RetryPolicy {
        retry_on: on.into(),
        num_retries: u32v(retries),
        per_try_timeout: per_try_ms.map(d),
        retry_host_predicate: vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            ..Default::default()
        }],
        host_selection_retry_max_attempts: 5,
        retriable_status_codes: vec![503],
        ..Default::default()
    })
}

fn with_fault(mut r: Route, fault: HttpFault) -> Route {
    r.typed_per_filter_config =
        HashMap::from([("envoy.filters.http.fault".to_string(), pack_any(fault))]);
    r
}

fn header_add(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn routes() -> Vec<(&'static str, Vec<Route>)> {
    let abort = HttpFault {
        abort: Some(FaultAbort {
            percentage: all(),
            error_type: Some(fault_abort::ErrorType::HttpStatus(500)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let delay = HttpFault {
        delay: Some(FaultDelay {
            percentage: all(),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(d(300))),
        }),
        ..Default::default()
    };
    let grpc_abort = HttpFault {
        abort: Some(FaultAbort {
            percentage: all(),
            error_type: Some(fault_abort::ErrorType::GrpcStatus(14)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let weighted = |clusters: &[(&str, u32)]| {
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: clusters
                .iter()
                .map(|(name, w)| weighted_cluster::ClusterWeight {
                    name: name.to_string(),
                    weight: u32v(*w),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    };
    let mut jason = forward("v2", |_| {});
    jason.name = "jason".into();
    jason.r#match.as_mut().unwrap().headers = vec![HeaderMatcher {
        name: "end-user".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact("jason".into())),
                ..Default::default()
            },
        )),
        ..Default::default()
    }];
    let mut redirect = forward("v1", |_| {});
    redirect.action = Some(route::Action::Redirect(RedirectAction {
        host_redirect: "new.example".into(),
        response_code: redirect_action::RedirectResponseCode::Found as i32,
        path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            "/login".into(),
        )),
        ..Default::default()
    }));
    let mut direct = forward("v1", |_| {});
    direct.action = Some(route::Action::DirectResponse(DirectResponseAction {
        status: 418,
        body: Some(DataSource {
            specifier: Some(
                envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                    "short and stout".into(),
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let mut rewrite = forward("v1", |a| {
        a.prefix_rewrite = "/new".into();
        a.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            "rewritten.local".into(),
        ));
    });
    rewrite.r#match.as_mut().unwrap().path_specifier = Some(PathSpecifier::Prefix("/old".into()));
    rewrite.request_headers_to_add = vec![header_add("x-route", "rewrite")];
    rewrite.response_headers_to_add = vec![header_add("x-served-by", "mesh")];
    let mut cors = forward("v1", |_| {});
    cors.typed_per_filter_config = HashMap::from([(
        "envoy.filters.http.cors".to_string(),
        pack_any(CorsPolicy {
            allow_origin_string_match: vec![StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(
                    "https://ok.example".into(),
                )),
                ..Default::default()
            }],
            allow_methods: "GET,PUT".into(),
            max_age: "3600".into(),
            ..Default::default()
        }),
    )]);
    let mirror = forward("v1", |a| {
        a.request_mirror_policies = vec![route_action::RequestMirrorPolicy {
            cluster: "mirror".into(),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: all(),
                ..Default::default()
            }),
            ..Default::default()
        }];
    });
    let by_user = || {
        vec![route_action::HashPolicy {
            policy_specifier: Some(route_action::hash_policy::PolicySpecifier::Header(
                route_action::hash_policy::Header {
                    header_name: "x-user".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }]
    };
    let hash = forward("ring", |a| a.hash_policy = by_user());
    // Sticky hashing would send every try of a user to the same host; previous_hosts moves
    // the retry to the other one.
    let other_host = forward("stickyfail", |a| {
        a.hash_policy = by_user();
        a.retry_policy = retry("5xx", 2, None);
    });
    vec![
        (
            "retry",
            vec![forward("v1", |a| a.retry_policy = retry("5xx", 3, None))],
        ),
        (
            "noretry",
            vec![forward("v1", |a| {
                a.retry_policy = retry("connect-failure", 3, None)
            })],
        ),
        (
            "pertry",
            vec![forward("v1", |a| {
                a.timeout = Some(d(5000));
                a.retry_policy = retry("5xx", 1, Some(300));
            })],
        ),
        ("timeout", vec![forward("v1", |a| a.timeout = Some(d(300)))]),
        ("abort", vec![with_fault(forward("v1", |_| {}), abort)]),
        ("delay", vec![with_fault(forward("v1", |_| {}), delay)]),
        (
            "grpcabort",
            vec![with_fault(forward("grpc", |_| {}), grpc_abort)],
        ),
        (
            "grpc",
            vec![forward("grpc", |a| {
                a.retry_policy = retry("unavailable", 3, None)
            })],
        ),
        (
            "split",
            vec![forward("v1", |a| {
                a.cluster_specifier = Some(weighted(&[("v1", 80), ("v2", 20)]))
            })],
        ),
        ("header", vec![jason, forward("v1", |_| {})]),
        ("redirect", vec![redirect]),
        ("direct", vec![direct]),
        ("rewrite", vec![rewrite]),
        ("cors", vec![cors]),
        ("mirror", vec![mirror]),
        ("hash", vec![hash]),
        ("otherhost", vec![other_host]),
        ("empty", vec![forward("empty", |_| {})]),
        ("closed", vec![forward("closed", |_| {})]),
        (
            "closedretry",
            vec![forward("closed", |a| {
                a.retry_policy = retry("connect-failure", 2, None)
            })],
        ),
        ("outlier", vec![forward("outlier", |_| {})]),
        ("pool", vec![forward("pool", |a| a.timeout = Some(d(5000)))]),
        ("overflow", vec![forward("overflow", |_| {})]),
        ("backoff", vec![forward("backoff", |_| {})]),
        ("maxeject", vec![forward("maxeject", |_| {})]),
        ("minhealth", vec![forward("minhealth", |_| {})]),
    ]
}

/// A route to `cluster` for every path.
pub fn route_to_cluster(cluster: &str) -> Route {
    forward(cluster, |_| {})
}

/// A route whose path regex does not compile (what no proxy can apply).
pub fn route_with_bad_regex() -> Route {
    let mut r = forward("v1", |_| {});
    r.r#match.as_mut().unwrap().path_specifier = Some(PathSpecifier::SafeRegex(
        envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
            regex: "/(unclosed".into(),
            ..Default::default()
        },
    ));
    r
}

/// Every resource of the traffic tests.
pub fn resources(ports: &Ports, b: &Backends) -> Resources {
    resources_with(ports, b, vec![])
}

/// [`resources`] with more virtual hosts (`(domain, routes)`).
pub fn resources_with(
    ports: &Ports,
    b: &Backends,
    extra: Vec<(&'static str, Vec<Route>)>,
) -> Resources {
    let out = ports.outbound.port();
    let rds = out.to_string();
    let vhosts = routes()
        .into_iter()
        .chain(extra)
        .map(|(name, routes)| vhost(name, &[name], routes))
        .collect();
    let mut ring = static_cluster("ring", &[b.v1, b.v2, b.v3], Proto::Http1);
    ring.lb_policy = cluster::LbPolicy::RingHash as i32;
    let mut sticky = static_cluster("stickyfail", &[b.failing, b.v1], Proto::Http1);
    sticky.lb_policy = cluster::LbPolicy::RingHash as i32;
    // Two consecutive 5xx eject a host for `base_ms` times its ejections, at most
    // `max_percent` of the hosts, unless fewer than `panic` percent would stay healthy.
    let ejecting = |name: &str, hosts: &[SocketAddr], base_ms, interval_ms, max_percent, panic| {
        let mut c = static_cluster(name, hosts, Proto::Http1);
        c.outlier_detection = Some(OutlierDetection {
            consecutive_5xx: u32v(2),
            enforcing_consecutive_5xx: u32v(100),
            enforcing_success_rate: u32v(0),
            interval: Some(d(interval_ms)),
            base_ejection_time: Some(d(base_ms)),
            max_ejection_percent: u32v(max_percent),
            ..Default::default()
        });
        c.common_lb_config = Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: panic }),
            ..Default::default()
        });
        c
    };
    let outlier = ejecting("outlier", &[b.v1, b.failing], 2000, 1000, 100, 0.0);
    // No decay of the ejection count within the test (interval 10 s).
    let backoff = ejecting("backoff", &[b.v1, b.failing], 1000, 10_000, 100, 0.0);
    let max_eject = ejecting(
        "maxeject",
        &[b.v1, b.failing, b.failing2],
        10_000,
        10_000,
        50,
        0.0,
    );
    let min_health = ejecting("minhealth", &[b.v1, b.failing], 10_000, 10_000, 100, 60.0);
    let mut pool = static_cluster("pool", &[b.v1], Proto::Http1);
    pool.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: u32v(1),
            max_pending_requests: u32v(1),
            max_requests: u32v(u32::MAX),
            max_retries: u32v(u32::MAX),
            ..Default::default()
        }],
        ..Default::default()
    });
    // Admits no request at all: every request overflows (`UO`) without any concurrency.
    let mut overflow = static_cluster("overflow", &[b.v1], Proto::Http1);
    overflow.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_requests: u32v(0),
            ..Default::default()
        }],
        ..Default::default()
    });
    Resources::default()
        .listener(virtual_outbound(
            vec![],
            Some(chain(
                "PassthroughFilterChain",
                None,
                tcp("PassthroughCluster", None),
            )),
        ))
        .listener(listener(
            &format!("0.0.0.0_{out}"),
            &format!("0.0.0.0:{out}"),
            false,
            false,
            false,
            vec![chain("", None, hcm(&rds))],
            None,
        ))
        .route(route_config(&rds, vhosts))
        .cluster(original_dst_cluster("PassthroughCluster", None))
        .cluster(static_cluster("v1", &[b.v1], Proto::Http1))
        .cluster(static_cluster("v2", &[b.v2], Proto::Http1))
        .cluster(static_cluster("v3", &[b.v3], Proto::Http1))
        .cluster(static_cluster("grpc", &[b.grpc], Proto::Http2))
        .cluster(static_cluster("mirror", &[b.mirror], Proto::Http1))
        .cluster(ring)
        .cluster(sticky)
        .cluster(static_cluster("empty", &[], Proto::Http1))
        .cluster(static_cluster("closed", &[b.closed], Proto::Http1))
        .cluster(outlier)
        .cluster(pool)
        .cluster(overflow)
        .cluster(backoff)
        .cluster(max_eject)
        .cluster(min_health)
}

//! Traffic management conversions: route matches, actions (weighted clusters, redirects,
//! direct responses, rewrites, retries, mirrors, hash policies), header operations, the
//! fault and CORS filters and their per-route settings, valid and invalid.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue as PbHeaderValue, HeaderValueOption,
    RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent, FractionalPercent};
use envoy_types::util::pack_any;

use super::*;
use crate::model::{
    AbortStatus, AppendAction, Destination, Fraction, HashSource, HeaderMatch, PathMatch,
    PathRedirect, RetryOn, RouteAction, RouteConfig, StringMatcher as Sm, ValuePart,
};

fn config_with(route: rt::Route) -> rt::RouteConfiguration {
    rt::RouteConfiguration {
        name: "9080".into(),
        virtual_hosts: vec![vhost("reviews", &["reviews"], vec![route])],
        ..Default::default()
    }
}

fn convert_route(route: rt::Route) -> Result<crate::model::Route, ConvertError> {
    RouteConfig::try_from(config_with(route))
        .map(|mut rc| rc.virtual_hosts.remove(0).routes.remove(0))
}

fn action(f: impl FnOnce(&mut rt::RouteAction)) -> rt::Route {
    let mut r = route_to("outbound|9080|v1|reviews", Some(secs(0)));
    if let Some(rt::route::Action::Route(a)) = &mut r.action {
        f(a);
    }
    r
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())),
        ..Default::default()
    }
}

fn million(n: u32) -> Option<FractionalPercent> {
    Some(FractionalPercent {
        numerator: n,
        denominator: fractional_percent::DenominatorType::Million as i32,
    })
}

#[test]
fn istio_header_route_and_case_insensitive_paths() {
    let mut r = route_to("outbound|9080|v2|reviews", Some(secs(0)));
    r.r#match = Some(rt::RouteMatch {
        path_specifier: Some(rt::route_match::PathSpecifier::Prefix("/API".into())),
        case_sensitive: no(),
        headers: vec![rt::HeaderMatcher {
            name: "End-User".into(),
            header_match_specifier: Some(rt::header_matcher::HeaderMatchSpecifier::StringMatch(
                exact("jason"),
            )),
            ..Default::default()
        }],
        query_parameters: vec![rt::QueryParameterMatcher {
            name: "debug".into(),
            query_parameter_match_specifier: Some(
                rt::query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
            ),
        }],
        ..Default::default()
    });
    let route = convert_route(r).unwrap();
    assert_eq!(route.matcher.path, PathMatch::Prefix("/api".into()));
    assert!(!route.matcher.case_sensitive);
    assert_eq!(route.matcher.headers[0].name, "end-user");
    assert!(matches!(&route.matcher.headers[0].rule,
        HeaderMatch::String(m) if *m == Sm::exact("jason")));
    assert!(route.matcher.headers[0].matches(Some("jason")));
    assert!(!route.matcher.headers[0].matches(Some("json")));
    assert!(route.matcher.query_parameters[0].value.is_none());
}

#[test]
fn regexes_are_anchored_and_validated() {
    let mut r = route_to("c", None);
    r.r#match = Some(rt::RouteMatch {
        path_specifier: Some(rt::route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: "/reviews/[0-9]+".into(),
            ..Default::default()
        })),
        ..Default::default()
    });
    let route = convert_route(r.clone()).unwrap();
    let PathMatch::Regex(re) = &route.matcher.path else {
        panic!("regex expected");
    };
    assert!(re.is_match("/reviews/12"));
    assert!(!re.is_match("/reviews/12/x"), "the whole path must match");
    r.r#match = Some(rt::RouteMatch {
        path_specifier: Some(rt::route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: "/(unclosed".into(),
            ..Default::default()
        })),
        ..Default::default()
    });
    let err = message(convert_route(r));
    assert!(
        err.starts_with(
            "route_configuration \"9080\": virtual_hosts[0].routes[0].match.safe_regex.regex: \
             invalid regular expression \"/(unclosed:"
        ),
        "{err}"
    );
}

#[test]
fn weighted_clusters_with_header_operations() {
    let weight = |name: &str, w: u32| rt::weighted_cluster::ClusterWeight {
        name: name.into(),
        weight: u32v(w),
        request_headers_to_add: vec![HeaderValueOption {
            header: Some(PbHeaderValue {
                key: "X-Version".into(),
                value: name.into(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = action(|a| {
        a.cluster_specifier = Some(rt::route_action::ClusterSpecifier::WeightedClusters(
            rt::WeightedCluster {
                clusters: vec![weight("v1", 80), weight("v2", 20)],
                ..Default::default()
            },
        ))
    });
    let RouteAction::Forward(f) = convert_route(r).unwrap().action else {
        panic!("forward expected");
    };
    let Destination::Weighted(list) = &f.destination else {
        panic!("weighted expected");
    };
    assert_eq!((list[0].weight, list[1].weight), (80, 20));
    assert_eq!(list[1].headers.request_add[0].name, "x-version");
    assert_eq!(
        list[1].headers.request_add[0].action,
        AppendAction::OverwriteIfExistsOrAdd
    );
    let zero = action(|a| {
        a.cluster_specifier = Some(rt::route_action::ClusterSpecifier::WeightedClusters(
            rt::WeightedCluster {
                clusters: vec![weight("v1", 0)],
                ..Default::default()
            },
        ))
    });
    assert_eq!(
        message(convert_route(zero)),
        "route_configuration \"9080\": virtual_hosts[0].routes[0].route.weighted_clusters.\
         clusters: the weights add up to zero"
    );
}

#[test]
fn istio_default_retry_policy() {
    let r = action(|a| {
        a.retry_policy = Some(rt::RetryPolicy {
            retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                .into(),
            num_retries: u32v(2),
            retry_host_predicate: vec![rt::retry_policy::RetryHostPredicate {
                name: "envoy.retry_host_predicates.previous_hosts".into(),
                config_type: Some(rt::retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                    pack_any(envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate {}),
                )),
            }],
            host_selection_retry_max_attempts: 5,
            retriable_status_codes: vec![503],
            per_try_timeout: Some(secs(2)),
            ..Default::default()
        })
    });
    let RouteAction::Forward(f) = convert_route(r).unwrap().action else {
        panic!("forward expected");
    };
    let p = f.retry_policy.unwrap();
    assert!(p.retry_on.intersects(RetryOn::CONNECT_FAILURE));
    assert!(p.retry_on.intersects(RetryOn::GRPC_UNAVAILABLE));
    assert!(!p.retry_on.intersects(RetryOn::FIVE_XX));
    assert_eq!(p.num_retries, 2);
    assert!(p.previous_hosts);
    assert_eq!(p.host_selection_max_attempts, 5);
    assert_eq!(p.retriable_status_codes, vec![503]);
    assert_eq!(p.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(p.back_off.base, Duration::from_millis(25));
    let bad = action(|a| {
        a.retry_policy = Some(rt::RetryPolicy {
            retry_on: "5xx,sometimes".into(),
            ..Default::default()
        })
    });
    assert_eq!(
        message(convert_route(bad)),
        "route_configuration \"9080\": virtual_hosts[0].routes[0].route.retry_policy.retry_on: \
         unsupported value \"sometimes\""
    );
}

#[test]
fn rewrites_mirrors_and_hash_policies() {
    let r = action(|a| {
        a.prefix_rewrite = "/v2".into();
        a.host_rewrite_specifier = Some(
            rt::route_action::HostRewriteSpecifier::HostRewriteLiteral("reviews.prod".into()),
        );
        a.request_mirror_policies = vec![rt::route_action::RequestMirrorPolicy {
            cluster: "outbound|9080|v2|reviews".into(),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: million(250_000),
                ..Default::default()
            }),
            ..Default::default()
        }];
        a.hash_policy = vec![rt::route_action::HashPolicy {
            policy_specifier: Some(rt::route_action::hash_policy::PolicySpecifier::Cookie(
                rt::route_action::hash_policy::Cookie {
                    name: "user".into(),
                    ttl: Some(secs(60)),
                    path: "/".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }];
    });
    let RouteAction::Forward(f) = convert_route(r).unwrap().action else {
        panic!("forward expected");
    };
    assert_eq!(f.prefix_rewrite.as_deref(), Some("/v2"));
    assert_eq!(f.host_rewrite.as_deref(), Some("reviews.prod"));
    assert_eq!(
        f.mirrors[0].fraction,
        Fraction {
            per_million: 250_000
        }
    );
    assert!(f.mirrors[0].shadow_suffix);
    assert!(matches!(&f.hash_policy[0].source,
        HashSource::Cookie { name, ttl: Some(t), .. } if name == "user" && *t == Duration::from_secs(60)));
    let both = action(|a| {
        a.prefix_rewrite = "/v2".into();
        a.regex_rewrite = Some(
            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher {
                    regex: "^/a".into(),
                    ..Default::default()
                }),
                substitution: "/b".into(),
            },
        );
    });
    assert!(message(convert_route(both))
        .ends_with("prefix_rewrite and regex_rewrite cannot both be set"));
}

#[test]
fn redirects_and_direct_responses() {
    let mut r = route_to("c", None);
    r.action = Some(rt::route::Action::Redirect(rt::RedirectAction {
        host_redirect: "new.example".into(),
        response_code: rt::redirect_action::RedirectResponseCode::TemporaryRedirect as i32,
        path_rewrite_specifier: Some(rt::redirect_action::PathRewriteSpecifier::PathRedirect(
            "/v2/login".into(),
        )),
        ..Default::default()
    }));
    let RouteAction::Redirect(redirect) = convert_route(r.clone()).unwrap().action else {
        panic!("redirect expected");
    };
    assert_eq!(redirect.status, 307);
    assert_eq!(redirect.host.as_deref(), Some("new.example"));
    assert_eq!(redirect.path, PathRedirect::Path("/v2/login".into()));
    r.action = Some(rt::route::Action::DirectResponse(
        rt::DirectResponseAction {
            status: 418,
            body: Some(envoy_types::pb::envoy::config::core::v3::DataSource {
                specifier: Some(
                    envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                        "teapot".into(),
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        },
    ));
    let RouteAction::DirectResponse(d) = convert_route(r.clone()).unwrap().action else {
        panic!("direct response expected");
    };
    assert_eq!((d.status, d.body.as_deref()), (418, Some(&b"teapot"[..])));
    r.action = Some(rt::route::Action::DirectResponse(
        rt::DirectResponseAction {
            status: 99,
            ..Default::default()
        },
    ));
    assert_eq!(
        message(convert_route(r)),
        "route_configuration \"9080\": virtual_hosts[0].routes[0].direct_response.status: \
         invalid HTTP status \"99\""
    );
}

#[test]
fn header_values_with_variables() {
    let r = rt::Route {
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(PbHeaderValue {
                key: "x-peer".into(),
                value: "peer=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% 100%%".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..route_to("c", None)
    };
    let route = convert_route(r).unwrap();
    assert_eq!(
        route.headers.response_add[0].value.0,
        vec![
            ValuePart::Literal("peer=".into()),
            ValuePart::DownstreamRemoteAddressWithoutPort,
            ValuePart::Literal(" 100%".into()),
        ]
    );
    let bad = rt::Route {
        request_headers_to_add: vec![HeaderValueOption {
            header: Some(PbHeaderValue {
                key: ":path".into(),
                value: "/x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..route_to("c", None)
    };
    assert_eq!(
        message(convert_route(bad)),
        "route_configuration \"9080\": virtual_hosts[0].routes[0].request_headers_to_add[0].\
         header.key: invalid header name \":path\""
    );
}

fn fault_config(http_status: u32, percent: u32) -> fault::HttpFault {
    fault::HttpFault {
        delay: Some(common_fault::FaultDelay {
            percentage: million(percent),
            fault_delay_secifier: Some(common_fault::fault_delay::FaultDelaySecifier::FixedDelay(
                secs(7),
            )),
        }),
        abort: Some(fault::FaultAbort {
            percentage: million(percent),
            error_type: Some(fault::fault_abort::ErrorType::HttpStatus(http_status)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn per_route_fault_and_cors() {
    let mut r = route_to("c", None);
    r.typed_per_filter_config = HashMap::from([
        (
            "envoy.filters.http.fault".to_string(),
            pack_any(fault_config(500, 1_000_000)),
        ),
        (
            "envoy.filters.http.cors".to_string(),
            pack_any(cors::CorsPolicy {
                allow_origin_string_match: vec![exact("https://example.com")],
                allow_methods: "GET,POST".into(),
                ..Default::default()
            }),
        ),
    ]);
    let route = convert_route(r.clone()).unwrap();
    let f = route.filter_configs.fault.unwrap();
    assert_eq!(f.delay.unwrap().duration, Duration::from_secs(7));
    assert_eq!(f.abort.unwrap().status, AbortStatus::Http(500));
    let c = route.filter_configs.cors.unwrap();
    assert_eq!(c.allow_methods, "GET,POST");
    assert!(c.forward_not_matching_preflights, "Envoy's default");
    r.typed_per_filter_config = HashMap::from([(
        "envoy.filters.http.fault".to_string(),
        pack_any(fault_config(700, 1)),
    )]);
    assert_eq!(
        message(convert_route(r.clone())),
        "route_configuration \"9080\": virtual_hosts[0].routes[0].\
         typed_per_filter_config[\"envoy.filters.http.fault\"].abort.http_status: \
         invalid HTTP status \"700\""
    );
    r.typed_per_filter_config = HashMap::from([(
        "envoy.filters.http.lua".to_string(),
        pack_any(cors::Cors {}),
    )]);
    assert_eq!(
        message(convert_route(r)),
        "route_configuration \"9080\": virtual_hosts[0].routes[0].\
         typed_per_filter_config[\"envoy.filters.http.lua\"]: unsupported HTTP filter \
         \"envoy.filters.http.lua\""
    );
}

//! Route configuration, virtual host and route conversions.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3 as rt;

use super::*;
use crate::model::{ForwardAction, PathMatch, RouteAction, RouteConfig};

fn config(virtual_hosts: Vec<rt::VirtualHost>) -> rt::RouteConfiguration {
    rt::RouteConfiguration {
        name: "9080".into(),
        virtual_hosts,
        ..Default::default()
    }
}

fn reviews() -> rt::VirtualHost {
    vhost(
        "reviews.default.svc.cluster.local:9080",
        &[
            "reviews.default.svc.cluster.local",
            "Reviews",
            "reviews:9080",
            "10.96.0.5",
        ],
        vec![route_to(
            "outbound|9080||reviews.default.svc.cluster.local",
            Some(secs(0)),
        )],
    )
}

fn with_route(f: impl FnOnce(&mut rt::Route)) -> rt::RouteConfiguration {
    let mut vh = reviews();
    f(&mut vh.routes[0]);
    config(vec![vh])
}

fn with_action(f: impl FnOnce(&mut rt::RouteAction)) -> rt::RouteConfiguration {
    with_route(|r| match &mut r.action {
        Some(rt::route::Action::Route(action)) => f(action),
        _ => unreachable!("builder makes route actions"),
    })
}

fn with_match(f: impl FnOnce(&mut rt::RouteMatch)) -> rt::RouteConfiguration {
    with_route(|r| f(r.r#match.as_mut().expect("builder sets a match")))
}

#[test]
fn outbound_route_config() {
    let allow_any = vhost(
        "allow_any",
        &["*"],
        vec![route_to("PassthroughCluster", None)],
    );
    let mut exact = route_to(
        "outbound|9080||reviews.default.svc.cluster.local",
        Some(secs(2)),
    );
    exact.r#match = Some(rt::RouteMatch {
        path_specifier: Some(rt::route_match::PathSpecifier::Path("/health".into())),
        ..Default::default()
    });
    let mut reviews = reviews();
    reviews.routes.insert(0, exact);
    let rc = RouteConfig::try_from(config(vec![reviews, allow_any])).unwrap();
    assert_eq!(rc.name, "9080");
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.name, "reviews.default.svc.cluster.local:9080");
    assert_eq!(
        vh.domains,
        vec![
            "reviews.default.svc.cluster.local",
            "reviews",
            "reviews:9080",
            "10.96.0.5"
        ]
    );
    assert_eq!(
        vh.routes[0].matcher.path,
        PathMatch::Exact("/health".into())
    );
    assert_eq!(
        vh.routes[0].action,
        RouteAction::Forward(Box::new(ForwardAction {
            timeout: Some(Duration::from_secs(2)),
            ..ForwardAction::to_cluster("outbound|9080||reviews.default.svc.cluster.local")
        }))
    );
    assert_eq!(vh.routes[1].matcher.path, PathMatch::Prefix("/".into()));
    assert_eq!(
        vh.routes[1].action,
        RouteAction::cluster("outbound|9080||reviews.default.svc.cluster.local")
    );
    assert_eq!(
        rc.virtual_hosts[1].routes[0].action,
        RouteAction::Forward(Box::new(ForwardAction {
            timeout: Some(Duration::from_secs(15)),
            ..ForwardAction::to_cluster("PassthroughCluster")
        })),
        "an absent timeout is Envoy's 15 s default"
    );
}

#[test]
fn wildcard_domains() {
    for ok in [
        "*",
        "*.example.com",
        "*-suffix.example.com",
        "api.*",
        "a.b:80",
    ] {
        let rc = config(vec![vhost("v", &[ok], vec![])]);
        assert!(RouteConfig::try_from(rc).is_ok(), "{ok}");
    }
    for bad in ["", "a.*.com", "*.a.*", "a b"] {
        let rc = config(vec![vhost("v", &[bad], vec![])]);
        assert_eq!(
            message(RouteConfig::try_from(rc)),
            format!(
                "route_configuration \"9080\": virtual_hosts[0].domains[0]: invalid domain {bad:?}"
            )
        );
    }
}

#[test]
fn route_config_errors() {
    let p = "route_configuration \"9080\": virtual_hosts[0]";
    let cases: Vec<(rt::RouteConfiguration, String)> = vec![
        (
            rt::RouteConfiguration::default(),
            "route_configuration \"\": name: required field is missing or empty".into(),
        ),
        (
            config(vec![reviews(), vhost("dup", &["REVIEWS"], vec![])]),
            "route_configuration \"9080\": virtual_hosts[1].domains[0]: duplicate domain \
             \"reviews\""
                .into(),
        ),
        (
            config(vec![vhost("", &["a"], vec![])]),
            format!("{p}.name: required field is missing or empty"),
        ),
        (
            config(vec![vhost("v", &[], vec![])]),
            format!("{p}.domains: required field is missing or empty"),
        ),
        (
            with_match(|m| m.path_specifier = None),
            format!("{p}.routes[0].match.path_specifier: required field is missing or empty"),
        ),
        (
            with_route(|r| r.r#match = None),
            format!("{p}.routes[0].match: required field is missing or empty"),
        ),
        (
            with_action(|a| a.cluster_specifier = None),
            format!("{p}.routes[0].route.cluster: required field is missing or empty"),
        ),
    ];
    for (proto, expected) in cases {
        assert_eq!(message(RouteConfig::try_from(proto)), expected);
    }
}

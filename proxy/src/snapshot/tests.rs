use std::sync::Arc;

use xds_client::model::{Discovery, FilterChainMatch, RouteSource};

use super::*;
use crate::fixtures::*;
use crate::listener::select;
use crate::upstream::OriginalDestination;

fn sample() -> ProxyConfig {
    let virtual_outbound = listener(
        "virtualOutbound",
        "0.0.0.0:15001",
        true,
        true,
        vec![tcp_chain(
            "blackhole",
            FilterChainMatch {
                destination_port: Some(15001),
                ..Default::default()
            },
            "BlackHoleCluster",
        )],
        Some(tcp_chain(
            "PassthroughFilterChain",
            Default::default(),
            "PassthroughCluster",
        )),
    );
    let http_9080 = listener(
        "0.0.0.0_9080",
        "0.0.0.0:9080",
        false,
        false,
        vec![http_chain(
            "",
            Default::default(),
            RouteSource::Rds("9080".into()),
        )],
        None,
    );
    let tcp_exact = listener(
        "10.96.0.5_9080",
        "10.96.0.5:9080",
        false,
        false,
        vec![tcp_chain("", Default::default(), "outbound|9080||db")],
        None,
    );
    config(
        vec![virtual_outbound, http_9080, tcp_exact],
        vec![xds_client::model::RouteConfig::new(
            "9080",
            vec![vhost("reviews", &["reviews"], "outbound|9080||reviews")],
        )],
        vec![
            cluster("PassthroughCluster", Discovery::OriginalDst),
            cluster("BlackHoleCluster", Discovery::Static(Default::default())),
            cluster(
                "outbound|9080||reviews",
                Discovery::Eds {
                    service_name: "outbound|9080||reviews".into(),
                },
            ),
        ],
        vec![cla(
            "outbound|9080||reviews",
            &["10.1.0.1:9080", "10.1.0.2:9080"],
        )],
    )
}

#[test]
fn empty_snapshot_is_not_ready() {
    let s = Snapshot::empty();
    assert!(!s.is_ready());
    assert!(s
        .capture_listener(addr("0.0.0.0:15001"), "virtualOutbound")
        .is_none());
}

#[test]
fn capture_listener_by_port_then_by_name() {
    let s = Snapshot::build(Arc::new(sample()), None);
    assert!(s.is_ready());
    let by_port = s
        .capture_listener(addr("0.0.0.0:15001"), "virtualInbound")
        .unwrap();
    assert_eq!(by_port.name, "virtualOutbound");
    // Moved by a flag: found by its Istio name.
    let by_name = s
        .capture_listener(addr("127.0.0.1:25001"), "virtualOutbound")
        .unwrap();
    assert_eq!(by_name.name, "virtualOutbound");
}

#[test]
fn virtual_listener_exact_then_wildcard_then_capture() {
    let s = Snapshot::build(Arc::new(sample()), None);
    let capture = s.listener("virtualOutbound").unwrap().clone();
    let pick = |dst: &str| {
        select::virtual_listener(&s, &capture, addr(dst))
            .name
            .clone()
    };
    assert_eq!(pick("10.96.0.5:9080"), "10.96.0.5_9080");
    assert_eq!(pick("10.96.0.7:9080"), "0.0.0.0_9080");
    assert_eq!(pick("10.96.0.7:5432"), "virtualOutbound");
    // A listener without use_original_dst keeps its connections.
    let mut cfg = sample();
    cfg.listeners
        .get_mut("virtualOutbound")
        .unwrap()
        .use_original_dst = false;
    let s = Snapshot::build(Arc::new(cfg), None);
    let capture = s.listener("virtualOutbound").unwrap().clone();
    assert_eq!(
        select::virtual_listener(&s, &capture, addr("10.96.0.7:9080")).name,
        "virtualOutbound"
    );
}

#[test]
fn clusters_get_their_endpoints_and_keep_their_cursor() {
    let cfg = Arc::new(sample());
    let cell = SnapshotCell::new();
    cell.apply(cfg.clone());
    let dst = OriginalDestination {
        address: addr("10.96.0.9:9080"),
        redirected: true,
    };
    let first = cell.load();
    let reviews = first.cluster("outbound|9080||reviews").unwrap();
    assert_eq!(reviews.pick(&dst).unwrap(), addr("10.1.0.1:9080"));
    cell.apply(cfg);
    let second = cell.load();
    let reviews = second.cluster("outbound|9080||reviews").unwrap();
    assert_eq!(reviews.pick(&dst).unwrap(), addr("10.1.0.2:9080"));
    // A reader keeps the snapshot it loaded; the cell moved on.
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(second.route_table("9080").is_some());
    assert!(!second
        .cluster("BlackHoleCluster")
        .unwrap()
        .has_healthy_endpoint());
}

#[test]
fn chains_are_prepared_once() {
    let s = Snapshot::build(Arc::new(sample()), None);
    let l = s.listener("0.0.0.0_9080").unwrap();
    match &l.chains[0].kind {
        ChainKind::Http(http) => {
            assert!(matches!(&http.routes, HttpRoutes::Rds(n) if n == "9080"));
            assert_eq!(http.filters.len(), 1);
            assert_eq!(http.filters[0].name(), "envoy.filters.http.router");
        }
        ChainKind::Tcp(_) => panic!("expected an HTTP chain"),
    }
}

#[test]
fn unchanged_listeners_and_routes_are_reused() {
    let first = Snapshot::build(Arc::new(sample()), None);
    let mut changed = sample();
    changed
        .listeners
        .get_mut("0.0.0.0_9080")
        .unwrap()
        .filter_chains[0]
        .name = "renamed".into();
    let second = Snapshot::build(Arc::new(changed), Some(&first));
    assert!(Arc::ptr_eq(
        first.listener("virtualOutbound").unwrap(),
        second.listener("virtualOutbound").unwrap()
    ));
    assert!(!Arc::ptr_eq(
        first.listener("0.0.0.0_9080").unwrap(),
        second.listener("0.0.0.0_9080").unwrap()
    ));
    assert_eq!(
        second.listener("0.0.0.0_9080").unwrap().chains[0].name,
        "renamed"
    );
    assert!(Arc::ptr_eq(
        first.route_table("9080").unwrap(),
        second.route_table("9080").unwrap()
    ));
}

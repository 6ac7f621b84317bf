use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use xds_client::model::{
    Cluster, ClusterLoadAssignment, Discovery, Endpoint, HealthStatus, LbPolicy, UpstreamProtocol,
};

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn endpoint(a: &str, weight: u32, health: HealthStatus) -> Endpoint {
    Endpoint {
        address: addr(a),
        weight,
        health,
        locality: String::new(),
    }
}

fn cluster(name: &str, discovery: Discovery) -> Cluster {
    Cluster {
        name: name.into(),
        discovery,
        connect_timeout: Duration::from_secs(1),
        lb_policy: LbPolicy::RoundRobin,
        upstream_protocol: UpstreamProtocol::Http1,
        bind_address: None,
    }
}

const REDIRECTED: OriginalDestination = OriginalDestination {
    address: SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)),
        80,
    ),
    redirected: true,
};

#[test]
fn round_robin_skips_unhealthy_endpoints() {
    let cla = ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints: vec![
            endpoint("10.0.0.1:80", 1, HealthStatus::Healthy),
            endpoint("10.0.0.2:80", 1, HealthStatus::Unhealthy),
            endpoint("10.0.0.3:80", 1, HealthStatus::Healthy),
        ],
    };
    let c = cluster(
        "c",
        Discovery::Eds {
            service_name: "c".into(),
        },
    );
    let rt = ClusterRuntime::new(&c, Some(&cla), None);
    let picks: Vec<SocketAddr> = (0..4).map(|_| rt.pick(&REDIRECTED).unwrap()).collect();
    assert_eq!(
        picks,
        vec![
            addr("10.0.0.1:80"),
            addr("10.0.0.3:80"),
            addr("10.0.0.1:80"),
            addr("10.0.0.3:80")
        ]
    );
    // The cursor carries over to the next snapshot.
    let next = ClusterRuntime::new(&c, Some(&cla), Some(&rt));
    assert_eq!(next.pick(&REDIRECTED).unwrap(), addr("10.0.0.1:80"));
}

#[test]
fn no_healthy_endpoint_is_uh() {
    let c = cluster(
        "c",
        Discovery::Eds {
            service_name: "c".into(),
        },
    );
    let rt = ClusterRuntime::new(&c, None, None);
    assert!(!rt.has_healthy_endpoint());
    assert_eq!(rt.pick(&REDIRECTED), Err(PickError::NoHealthyUpstream));
    let black_hole = cluster("BlackHoleCluster", Discovery::Static(Default::default()));
    let rt = ClusterRuntime::new(&black_hole, None, None);
    assert_eq!(rt.pick(&REDIRECTED), Err(PickError::NoHealthyUpstream));
}

#[test]
fn original_dst_uses_the_destination_and_refuses_a_loop() {
    let c = cluster("PassthroughCluster", Discovery::OriginalDst);
    let rt = ClusterRuntime::new(&c, None, None);
    assert!(rt.has_healthy_endpoint());
    assert_eq!(rt.pick(&REDIRECTED).unwrap(), REDIRECTED.address);
    let own = OriginalDestination {
        address: addr("127.0.0.1:15001"),
        redirected: false,
    };
    assert_eq!(rt.pick(&own), Err(PickError::NotRedirected));
}

#[test]
fn weighted_sequence_is_smooth_and_proportional() {
    let a = addr("10.0.0.1:80");
    let b = addr("10.0.0.2:80");
    let seq = wrr_sequence(&[(a, 20), (b, 10)]);
    assert_eq!(seq, vec![a, b, a]);
    let seq = wrr_sequence(&[(a, 5), (b, 1)]);
    let count: HashMap<SocketAddr, usize> = seq.iter().fold(HashMap::new(), |mut m, x| {
        *m.entry(*x).or_default() += 1;
        m
    });
    assert_eq!(count[&a], 5);
    assert_eq!(count[&b], 1);
    // Equal weights keep config order; empty stays empty.
    assert_eq!(wrr_sequence(&[(a, 3), (b, 3)]), vec![a, b]);
    assert!(wrr_sequence(&[]).is_empty());
}

#[test]
fn group_keys_differ_per_cluster() {
    let a = ClusterRuntime::new(&cluster("a", Discovery::OriginalDst), None, None);
    let b = ClusterRuntime::new(&cluster("b", Discovery::OriginalDst), None, None);
    assert_ne!(a.group_key(), b.group_key());
}

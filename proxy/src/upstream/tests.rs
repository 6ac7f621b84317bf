use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use xds_client::model::{
    Cluster, ClusterLoadAssignment, Discovery, Endpoint, HealthStatus, LbPolicy,
};

use super::lb::PickRequest;
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
        priority: 0,
        transport_metadata: Default::default(),
        workload: None,
    }
}

fn cluster(name: &str, discovery: Discovery) -> Cluster {
    let mut c = Cluster::new(name, discovery);
    c.connect_timeout = Duration::from_secs(1);
    c
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
    use super::lb::wrr_sequence;
    assert_eq!(wrr_sequence(&[20, 10]), vec![0, 1, 0]);
    let seq = wrr_sequence(&[5, 1]);
    let count: HashMap<usize, usize> = seq.iter().fold(HashMap::new(), |mut m, x| {
        *m.entry(*x).or_default() += 1;
        m
    });
    assert_eq!(count[&0], 5);
    assert_eq!(count[&1], 1);
    // Equal weights keep config order; empty stays empty.
    assert_eq!(wrr_sequence(&[3, 3]), vec![0, 1]);
    assert!(wrr_sequence(&[]).is_empty());
}

#[test]
fn group_keys_differ_per_cluster() {
    let a = ClusterRuntime::new(&cluster("a", Discovery::OriginalDst), None, None);
    let b = ClusterRuntime::new(&cluster("b", Discovery::OriginalDst), None, None);
    assert_ne!(a.group_key(), b.group_key());
}

fn hosts_cluster(policy: LbPolicy, n: usize) -> (Cluster, ClusterLoadAssignment) {
    let mut c = cluster(
        "c",
        Discovery::Eds {
            service_name: "c".into(),
        },
    );
    c.lb_policy = policy;
    let cla = ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints: (1..=n)
            .map(|i| endpoint(&format!("10.0.0.{i}:80"), 1, HealthStatus::Healthy))
            .collect(),
    };
    (c, cla)
}

#[test]
fn consistent_hashing_is_sticky_and_survives_snapshots() {
    for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
        let (c, cla) = hosts_cluster(policy, 5);
        let rt = ClusterRuntime::new(&c, Some(&cla), None);
        let pick = |rt: &ClusterRuntime, key: u64| {
            rt.pick_host(
                &REDIRECTED,
                &PickRequest {
                    hash: Some(key),
                    ..Default::default()
                },
            )
            .unwrap()
            .address
        };
        let keys: Vec<u64> = (0..200)
            .map(|i| lb::hash64(format!("user-{i}").as_bytes()))
            .collect();
        let first: Vec<SocketAddr> = keys.iter().map(|k| pick(&rt, *k)).collect();
        assert!(
            keys.iter().zip(&first).all(|(k, a)| pick(&rt, *k) == *a),
            "{policy:?}"
        );
        // Every host gets some keys.
        let distinct: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(distinct.len(), 5, "{policy:?}");
        // A new snapshot with the same endpoints maps every key the same way.
        let next = ClusterRuntime::new(&c, Some(&cla), Some(&rt));
        assert!(
            keys.iter().zip(&first).all(|(k, a)| pick(&next, *k) == *a),
            "{policy:?}"
        );
        // Removing one host moves its own keys and few others.
        let mut fewer = cla.clone();
        let gone = fewer.endpoints.remove(0).address;
        let after = ClusterRuntime::new(&c, Some(&fewer), Some(&rt));
        let (mut kept, mut others) = (0, 0);
        for (k, a) in keys.iter().zip(&first) {
            if *a != gone {
                others += 1;
                kept += usize::from(pick(&after, *k) == *a);
            }
        }
        assert!(kept * 100 >= others * 80, "{policy:?}: {kept}/{others}");
    }
}

#[test]
fn a_retry_avoids_the_hosts_already_tried_whenever_another_exists() {
    for policy in [
        LbPolicy::RingHash,
        LbPolicy::Maglev,
        LbPolicy::RoundRobin,
        LbPolicy::LeastRequest,
        LbPolicy::Random,
    ] {
        let (c, cla) = hosts_cluster(policy, 2);
        let rt = ClusterRuntime::new(&c, Some(&cla), None);
        for i in 0..200 {
            let hash = Some(lb::hash64(format!("user-{i}").as_bytes()));
            let pick = |avoid: &[SocketAddr], attempts: u32| {
                rt.pick_host(
                    &REDIRECTED,
                    &PickRequest {
                        hash,
                        avoid,
                        attempts,
                        ..Default::default()
                    },
                )
                .unwrap()
                .address
            };
            let first = pick(&[], 1);
            for attempts in [1, 5] {
                assert_ne!(pick(&[first], attempts), first, "{policy:?} user-{i}");
            }
            // Every host tried: one of them is still chosen.
            let other = pick(&[first], 1);
            pick(&[first, other], 5);
        }
    }
}

#[test]
fn least_request_prefers_idle_hosts() {
    let (c, cla) = hosts_cluster(LbPolicy::LeastRequest, 2);
    let rt = ClusterRuntime::new(&c, Some(&cla), None);
    let busy = rt.pick_host(&REDIRECTED, &PickRequest::default()).unwrap();
    let _guards: Vec<_> = (0..10)
        .map(|_| busy.state.as_ref().unwrap().start_request())
        .collect();
    let mut idle_picks = 0;
    for _ in 0..100 {
        if rt.pick(&REDIRECTED).unwrap() != busy.address {
            idle_picks += 1;
        }
    }
    // Two choices among two hosts: the idle one wins whenever it is drawn (3 in 4).
    assert!(idle_picks > 60, "{idle_picks}");
}

#[test]
fn outlier_detection_ejects_then_readmits() {
    use host::AttemptResult;
    use xds_client::model::OutlierDetection;
    let (mut c, cla) = hosts_cluster(LbPolicy::RoundRobin, 2);
    c.lb_settings.healthy_panic_threshold = 0.0;
    c.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: 3,
        enforcing_consecutive_5xx: 100,
        consecutive_gateway_failure: 5,
        enforcing_consecutive_gateway_failure: 0,
        split_external_local_origin_errors: false,
        consecutive_local_origin_failure: 5,
        enforcing_consecutive_local_origin_failure: 100,
        interval: Duration::from_secs(10),
        base_ejection_time: Duration::from_millis(200),
        max_ejection_time: Duration::from_secs(300),
        max_ejection_percent: 100,
        always_eject_one_host: false,
    });
    let rt = ClusterRuntime::new(&c, Some(&cla), None);
    let bad = rt.pick_host(&REDIRECTED, &PickRequest::default()).unwrap();
    let state = bad.state.clone().unwrap();
    assert!(!rt.report(&state, AttemptResult::Status(503)));
    assert!(
        !rt.report(&state, AttemptResult::Status(200)),
        "a success resets the count"
    );
    assert!(!rt.report(&state, AttemptResult::Status(500)));
    assert!(!rt.report(&state, AttemptResult::LocalFailure));
    assert!(
        rt.report(&state, AttemptResult::Status(502)),
        "third consecutive error ejects"
    );
    for _ in 0..20 {
        assert_ne!(rt.pick(&REDIRECTED).unwrap(), bad.address);
    }
    // The ejection survives a config push.
    let next = ClusterRuntime::new(&c, Some(&cla), Some(&rt));
    assert!((0..20).all(|_| next.pick(&REDIRECTED).unwrap() != bad.address));
    std::thread::sleep(Duration::from_millis(250));
    assert!((0..4).any(|_| next.pick(&REDIRECTED).unwrap() == bad.address));
}

#[tokio::test]
async fn circuit_breakers_overflow_at_once() {
    use limits::{ClusterLimits, Refused};
    let limits = std::sync::Arc::new(ClusterLimits::default());
    let held = limits.connection(1, 1, None).await.unwrap();
    // One may wait: it gets the slot when the first is released.
    let waiter = {
        let limits = limits.clone();
        tokio::spawn(async move { limits.connection(1, 1, None).await.is_ok() })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A third finds the pending queue full: overflow, without waiting.
    let started = std::time::Instant::now();
    assert!(matches!(
        limits.connection(1, 1, None).await,
        Err(Refused::Overflow(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(50));
    drop(held);
    assert!(waiter.await.unwrap());
    let r1 = limits.request(1).unwrap();
    assert!(limits.request(1).is_err());
    drop(r1);
    assert!(limits.request(1).is_ok());
    assert!(limits.retry(0).is_none());
}

//! Outlier detection through the real `mesh-proxy` on loopback (the scene of `traffic.rs`):
//! always-503 upstreams record when each request reached them, so "no traffic for the
//! ejection time" is read off the upstream's own clock, not inferred from statuses. Covered:
//! the ejection time, its growth with each ejection (`base_ejection_time` × ejections),
//! `max_ejection_percent`, and the panic threshold (`minHealthPercent`).

mod common;
#[path = "traffic_support/ads.rs"]
mod push_ads;
#[path = "traffic_support/config.rs"]
mod traffic_config;
#[path = "traffic_support/setup.rs"]
mod traffic_setup;
use traffic_setup::*;

use std::time::{Duration, Instant};

/// When each request recorded in `hits` arrived.
fn times(hits: &Hits) -> Vec<Instant> {
    hits.lock().unwrap().iter().map(|(_, at)| *at).collect()
}

fn count(hits: &Hits) -> usize {
    hits.lock().unwrap().len()
}

/// Requests for `host`, one after the other, until `done` holds; panics after `limit`.
/// Returns how many were sent. A recorder notes a request before answering it, so a hit is
/// visible here as soon as its response arrived.
async fn send_until(s: &Setup, host: &str, limit: Duration, done: impl Fn() -> bool) -> usize {
    let started = Instant::now();
    let mut sent = 0;
    while !done() {
        assert!(
            started.elapsed() < limit,
            "{host}: not done after {sent} requests in {limit:?}"
        );
        s.get(host, &format!("/{host}/{sent}"), &[]).await;
        sent += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_for_the_ejection_time() {
    let s = start().await;
    // Round robin over a good and a failing endpoint; two consecutive 5xx eject the failing
    // one for 2 s.
    let limit = Duration::from_secs(10);
    send_until(&s, "outlier", limit, || count(&s.failed) >= 2).await;
    let ejecting = times(&s.failed)[1];
    // Admin `/clusters` shows the ejection as Envoy does, per host.
    let clusters = common::curl(&["-s", &format!("http://{}/clusters", s.proxy.admin)]).await;
    let failing = s.backends.failing;
    let good = s.backends.v1;
    assert!(
        clusters
            .lines()
            .any(|l| l == format!("outlier::{failing}::health_flags::/failed_outlier_check")),
        "{clusters}"
    );
    assert!(
        clusters
            .lines()
            .any(|l| l == format!("outlier::{good}::health_flags::healthy")),
        "{clusters}"
    );
    assert!(
        clusters.contains("outlier::outlier::ejections_active::1"),
        "{clusters}"
    );
    let dump: serde_json::Value = serde_json::from_str(
        &common::curl(&[
            "-s",
            &format!("http://{}/clusters?format=json", s.proxy.admin),
        ])
        .await,
    )
    .unwrap();
    let hosts = dump["cluster_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "outlier")
        .unwrap()["host_statuses"]
        .clone();
    let flag_of = |addr: std::net::SocketAddr| {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["address"]["socket_address"]["port_value"] == addr.port())
            .unwrap()["health_status"]["failed_outlier_check"]
            .clone()
    };
    assert_eq!(flag_of(failing), true, "{hosts}");
    assert_eq!(flag_of(good), false, "{hosts}");
    // The ejection happened after the second failure reached the endpoint: for 1.5 s from
    // then every request goes to the good endpoint.
    let mut served = 0;
    while ejecting.elapsed() < Duration::from_millis(1500) {
        let r = s.get("outlier", "/during", &[]).await;
        assert_eq!(r.status, 200, "an ejected endpoint gets no traffic");
        served += 1;
    }
    assert!(served >= 5, "{served}");
    assert_eq!(count(&s.failed), 2, "the ejected endpoint got traffic");
    // Then it is back.
    send_until(&s, "outlier", limit, || count(&s.failed) >= 3).await;
    let gap = times(&s.failed)[2] - ejecting;
    assert!(gap >= Duration::from_secs(2), "readmitted after {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_ejection_time_grows_with_each_ejection() {
    let s = start().await;
    // Base ejection time 1 s: the first ejection lasts 1 s, the second 2 s (no interval
    // passes between them to decay the count).
    let limit = Duration::from_secs(10);
    send_until(&s, "backoff", limit, || count(&s.failed) >= 3).await;
    // Hits 3 and 4 are the next two consecutive failures: the second ejection.
    send_until(&s, "backoff", limit, || count(&s.failed) >= 5).await;
    let t = times(&s.failed);
    let first = t[2] - t[1];
    let second = t[4] - t[3];
    assert!(
        first >= Duration::from_secs(1) && first < Duration::from_secs(2),
        "first ejection: no traffic for {first:?}"
    );
    assert!(
        second >= Duration::from_secs(2),
        "second ejection: no traffic for {second:?} (first {first:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejection_percent_caps_the_ejected_hosts() {
    let s = start().await;
    // Three hosts, two always failing, at most 50% ejected: ejecting the second failing
    // host would make it 2 of 3, so it keeps its traffic while the first stays out (10 s).
    let limit = Duration::from_secs(10);
    send_until(&s, "maxeject", limit, || {
        count(&s.failed) >= 2 && count(&s.failed2) >= 2
    })
    .await;
    let before = (count(&s.failed), count(&s.failed2));
    for i in 0..20 {
        s.get("maxeject", &format!("/capped/{i}"), &[]).await;
    }
    let after = (count(&s.failed), count(&s.failed2));
    let grew = (after.0 - before.0, after.1 - before.1);
    assert!(
        grew == (0, grew.1) && grew.1 >= 5 || grew == (grew.0, 0) && grew.0 >= 5,
        "exactly one failing host is ejected: new requests {grew:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_min_health_percent_an_ejected_host_still_gets_traffic() {
    let s = start().await;
    // Two hosts, panic threshold 60%: ejecting the failing one leaves 50% healthy, below
    // the threshold, so the balancer uses every host (ejection is in force but ignored), as
    // Istio's minHealthPercent says.
    let limit = Duration::from_secs(10);
    send_until(&s, "minhealth", limit, || count(&s.failed) >= 2).await;
    let metrics =
        common::curl(&["-s", &format!("http://{}/stats/prometheus", s.proxy.stats)]).await;
    let enforced = metrics
        .lines()
        .find(|l| {
            l.starts_with("envoy_cluster_outlier_detection_ejections_enforced_total")
                && l.contains("\"minhealth\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(enforced, Some(1.0), "the failing host was ejected");
    let before = count(&s.failed);
    for i in 0..10 {
        s.get("minhealth", &format!("/panic/{i}"), &[]).await;
    }
    assert!(
        count(&s.failed) - before >= 3,
        "in panic the ejected host gets its share: {} of 10",
        count(&s.failed) - before
    );
}

//! Traffic management through the real `mesh-proxy` on loopback, fed Istio-shaped routes and
//! clusters by an in-process ADS server, in front of `mesh-echo` servers (in process, from
//! the `mesh-tests` crate): retries on failing calls (`x-echo-fail-first`), per-try and route
//! timeouts, fault abort and delay, weighted splits, header routes, redirects, direct
//! responses, rewrites, CORS, mirrors, consistent hashing, connection-pool overflow, gRPC retry
//! and abort, and kept-alive connections across local replies (outlier detection:
//! `traffic_outlier.rs`).

mod common;
#[path = "traffic_support/ads.rs"]
mod push_ads;
#[path = "traffic_support/config.rs"]
mod traffic_config;
#[path = "traffic_support/setup.rs"]
mod traffic_setup;
use traffic_setup::*;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::keepalive::Connection;
use mesh_tests::echo::proto::echo::echo_service_client::EchoServiceClient;
use mesh_tests::echo::proto::echo::EchoRequest;
use traffic_config::{resources_with, route_to_cluster, route_with_bad_regex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_the_upstream_answers_and_flags_exhaustion() {
    let s = start().await;
    // Two failures, then success: the retry policy (5xx, 3 retries) hides them.
    let r = s
        .get(
            "retry",
            "/r1",
            &[("x-echo-fail-first", "2"), ("x-echo-fail-key", "r1")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let log = s.proxy.wait_log(|l| l["path"] == "/r1").await;
    assert_eq!(log["response_flags"], "-");
    // More failures than retries: the last 503 goes through, flagged URX.
    let r = s
        .get(
            "retry",
            "/r2",
            &[("x-echo-fail-first", "9"), ("x-echo-fail-key", "r2")],
        )
        .await;
    assert_eq!(r.status, 503);
    let log = s.proxy.wait_log(|l| l["path"] == "/r2").await;
    assert_eq!(log["response_flags"], "URX");
    assert_eq!(log["response_code_details"], "via_upstream");
    // A POST reached the upstream: it is not retried.
    let r = s
        .send(
            "POST",
            "retry",
            "/r3",
            &[("x-echo-fail-first", "1"), ("x-echo-fail-key", "r3")],
        )
        .await;
    assert_eq!(r.status, 503, "non-idempotent requests are not retried");
    // Without 5xx in retry_on, a 503 is final.
    let r = s
        .get(
            "noretry",
            "/r4",
            &[("x-echo-fail-first", "1"), ("x-echo-fail-key", "r4")],
        )
        .await;
    assert_eq!(r.status, 503);
    // Envoy's cluster stats: 9 attempts (3 + 4 + 1 + 1), 5 retries, 1 successful retry.
    let m = scrape(&s.proxy).await;
    for (metric, value) in [
        ("envoy_cluster_upstream_rq_total", 9.0),
        ("envoy_cluster_upstream_rq_retry", 5.0),
        ("envoy_cluster_upstream_rq_retry_success", 1.0),
    ] {
        assert_eq!(cluster_stat(&m, metric, "v1"), value, "{metric}");
    }
    assert_eq!(host_stat(&s.proxy, "v1", "rq_total").await, 9);
    assert_eq!(host_stat(&s.proxy, "v1", "rq_error").await, 8);
    assert_eq!(host_stat(&s.proxy, "v1", "rq_success").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_another_endpoint() {
    let s = start().await;
    // Ring hash over [always-503, mesh-echo] by `x-user`: a user hashed to the failing host
    // would meet it on every try; previous_hosts sends the retry to the other endpoint.
    for i in 0..12 {
        let user = format!("user{i}");
        let path = format!("/other/{i}");
        let r = s.get("otherhost", &path, &[("x-user", &user)]).await;
        assert_eq!(r.status, 200, "{user}: {}", r.body);
        let log = s.proxy.wait_log(|l| l["path"] == path.as_str()).await;
        assert_eq!(log["upstream_host"], s.v1.to_string());
    }
    let first_tries_on_failing = s.failed.lock().unwrap().len();
    assert!(
        (1..12).contains(&first_tries_on_failing),
        "some users hash to the failing host and got retried elsewhere: {first_tries_on_failing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_upstream_and_connect_failure_as_envoy_writes_them() {
    let s = start().await;
    let r = s.get("empty", "/uh", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    let log = s.proxy.wait_log(|l| l["path"] == "/uh").await;
    assert_eq!(log["response_flags"], "UH");
    assert_eq!(log["response_code_details"], "no_healthy_upstream");
    // What Envoy 1.40 answers and logs for a refused connection (checked against it).
    let r = s.get("closed", "/uf", &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
        )
    );
    let log = s.proxy.wait_log(|l| l["path"] == "/uf").await;
    assert_eq!(log["response_flags"], "UF");
    assert_eq!(
        log["response_code_details"],
        "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}"
    );
    assert_eq!(
        log["upstream_transport_failure_reason"],
        "delayed_connect_error:_Connection_refused"
    );
    // After retries, as Envoy 1.40: the body says so, and the retry limit is flagged first.
    let r = s.get("closedretry", "/ufretried", &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            503,
            "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure"
        )
    );
    let log = s.proxy.wait_log(|l| l["path"] == "/ufretried").await;
    assert_eq!(log["response_flags"], "URX,UF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_keep_the_http1_connection_alive() {
    let s = start().await;
    let mut conn = Connection::open(s.proxy.outbound).await;
    // (host, path, headers, status, response flag): every kind of local reply, each
    // followed by a proxied request, all on one connection.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: &[Case] = &[
        ("noretry", "/ka/ok0", &[], 200, "-"),
        ("empty", "/ka/uh", &[], 503, "UH"),
        ("noretry", "/ka/ok1", &[], 200, "-"),
        ("closed", "/ka/uf", &[], 503, "UF"),
        ("noretry", "/ka/ok2", &[], 200, "-"),
        ("nosuch.example", "/ka/nr", &[], 404, "NR"),
        ("abort", "/ka/fi", &[], 500, "FI"),
        ("overflow", "/ka/uo", &[], 503, "UO"),
        ("timeout", "/ka/ut", &[("x-echo-delay", "2s")], 504, "UT"),
        ("direct", "/ka/direct", &[], 418, "-"),
        ("noretry", "/ka/ok3", &[], 200, "-"),
    ];
    for (host, path, headers, status, flag) in cases {
        let r = conn.send("GET", host, path, headers).await;
        assert_eq!(r.status, *status, "{host}{path}: {r:?}");
        assert_eq!(
            r.header("connection"),
            Some("keep-alive"),
            "{host}{path}: {r:?}"
        );
        let log = s.proxy.wait_log(|l| l["path"] == *path).await;
        assert_eq!(log["response_flags"], *flag, "{path}: {log}");
        // The proxy saw one client connection throughout.
        assert_eq!(
            log["downstream_remote_address"],
            conn.local.to_string(),
            "{path}"
        );
    }
    assert!(
        !conn.closed_within(Duration::from_millis(300)).await,
        "the connection stays open after the last response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_and_route_timeouts_answer_504_ut() {
    let s = start().await;
    // Each try gets 300 ms: two tries, then 504, well before the upstream's 3 s.
    let r = s.get("pertry", "/slow", &[("x-echo-delay", "3s")]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "upstream request timeout")
    );
    assert!(r.took < Duration::from_millis(2500), "{:?}", r.took);
    assert!(
        r.took >= Duration::from_millis(550),
        "two tries: {:?}",
        r.took
    );
    // Envoy 1.40 flags the exhausted retry (URX), then the timeout (UT): the order set.
    let log = s.proxy.wait_log(|l| l["path"] == "/slow").await;
    assert_eq!(log["response_flags"], "URX,UT");
    assert_eq!(log["response_code_details"], "upstream_per_try_timeout");
    // The route timeout (300 ms) bounds the whole request.
    let r = s.get("timeout", "/t", &[("x-echo-delay", "2s")]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "upstream request timeout")
    );
    assert!(r.took < Duration::from_millis(1500), "{:?}", r.took);
    let log = s.proxy.wait_log(|l| l["path"] == "/t").await;
    assert_eq!(log["response_flags"], "UT");
    assert_eq!(log["response_code_details"], "response_timeout");
    // Two requests timed out (UT); the first after two per-try timeouts and one retry.
    let m = scrape(&s.proxy).await;
    for (metric, value) in [
        ("envoy_cluster_upstream_rq_timeout", 2.0),
        ("envoy_cluster_upstream_rq_per_try_timeout", 2.0),
        ("envoy_cluster_upstream_rq_retry", 1.0),
    ] {
        assert_eq!(cluster_stat(&m, metric, "v1"), value, "{metric}");
    }
    // Per host, every timed-out attempt: two tries and the route timeout.
    assert_eq!(host_stat(&s.proxy, "v1", "rq_timeout").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_and_delay() {
    let s = start().await;
    let r = s.get("abort", "/a", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (500, "fault filter abort"));
    let log = s.proxy.wait_log(|l| l["path"] == "/a").await;
    assert_eq!(log["response_flags"], "FI");
    assert_eq!(log["response_code_details"], "fault_filter_abort");
    let r = s.get("delay", "/d", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.took >= Duration::from_millis(300), "{:?}", r.took);
    let log = s.proxy.wait_log(|l| l["path"] == "/d").await;
    assert_eq!(log["response_flags"], "DI");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_and_header_route() {
    let s = Arc::new(start().await);
    let mut tasks = Vec::new();
    for worker in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for i in 0..50 {
                let r = s.get("split", &format!("/s/{worker}/{i}"), &[]).await;
                assert_eq!(r.status, 200);
                *counts.entry(r.version()).or_default() += 1;
            }
            counts
        }));
    }
    let mut total: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    let v1 = total.get("v1").copied().unwrap_or(0);
    let v2 = total.get("v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 1000, "{total:?}");
    // 80/20 over 1,000 requests: the standard deviation is about 13.
    assert!((740..=860).contains(&v1), "{total:?}");
    for _ in 0..5 {
        let jason = s.get("header", "/h", &[("end-user", "jason")]).await;
        assert_eq!(jason.version(), "v2");
        let other = s.get("header", "/h", &[("end-user", "someone")]).await;
        assert_eq!(other.version(), "v1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_direct_response_and_rewrites() {
    let s = start().await;
    let r = s.get("redirect", "/old?q=1", &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "http://new.example/login?q=1"
    );
    let r = s.get("direct", "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (418, "short and stout"));
    let r = s.get("rewrite", "/old/page?x=1", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["path"], "/new/page?x=1");
    assert_eq!(seen["host"], "rewritten.local");
    assert_eq!(seen["headers"]["x-envoy-original-path"][0], "/old/page?x=1");
    assert_eq!(seen["headers"]["x-route"][0], "rewrite");
    assert_eq!(r.headers.get("x-served-by").unwrap(), "mesh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_response_headers() {
    let s = start().await;
    let pre = s
        .send(
            "OPTIONS",
            "cors",
            "/",
            &[
                ("origin", "https://ok.example"),
                ("access-control-request-method", "PUT"),
            ],
        )
        .await;
    assert_eq!(pre.status, 200);
    assert_eq!(
        pre.headers.get("access-control-allow-origin").unwrap(),
        "https://ok.example"
    );
    assert_eq!(
        pre.headers.get("access-control-allow-methods").unwrap(),
        "GET,PUT"
    );
    assert_eq!(pre.headers.get("access-control-max-age").unwrap(), "3600");
    let simple = s
        .get("cors", "/", &[("origin", "https://ok.example")])
        .await;
    assert_eq!(simple.status, 200);
    assert_eq!(
        simple.headers.get("access-control-allow-origin").unwrap(),
        "https://ok.example"
    );
    let other = s
        .get("cors", "/", &[("origin", "https://no.example")])
        .await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_gets_a_shadow_copy() {
    let s = start().await;
    let r = s.send("POST", "mirror", "/m", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version(), "v1", "the original goes to its own cluster");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if s.mirrored
            .lock()
            .unwrap()
            .iter()
            .any(|(h, _)| h == "mirror-shadow")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            s.mirrored.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_is_sticky() {
    let s = start().await;
    for user in ["alice", "bob", "carol"] {
        let first = s.get("hash", "/", &[("x-user", user)]).await.version();
        for _ in 0..10 {
            assert_eq!(
                s.get("hash", "/", &[("x-user", user)]).await.version(),
                first
            );
        }
    }
    let mut versions = std::collections::HashSet::new();
    for i in 0..30 {
        versions.insert(
            s.get("hash", "/", &[("x-user", &format!("u{i}"))])
                .await
                .version(),
        );
    }
    assert!(versions.len() >= 2, "{versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_overflow_answers_503_uo_at_once() {
    let s = Arc::new(start().await);
    let mut tasks = Vec::new();
    for i in 0..5 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.get("pool", &format!("/p/{i}"), &[("x-echo-delay", "800ms")])
                .await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ok = 0;
    let mut overflow = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(
                    r.body,
                    "upstream connect error or disconnect/reset before headers. reset reason: overflow"
                );
                assert!(
                    r.took < Duration::from_millis(500),
                    "no queueing: {:?}",
                    r.took
                );
                overflow += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    // One connection and one pending request: two served, three refused.
    assert_eq!((ok, overflow), (2, 3));
    let log = s
        .proxy
        .wait_log(|l| l["authority"] == "pool" && l["response_code"] == 503)
        .await;
    assert_eq!(log["response_flags"], "UO");
    let m = scrape(&s.proxy).await;
    for (metric, value) in [
        ("envoy_cluster_upstream_rq_pending_overflow", 3.0),
        ("envoy_cluster_upstream_cx_overflow", 3.0),
        ("envoy_cluster_upstream_rq_total", 2.0),
    ] {
        assert_eq!(cluster_stat(&m, metric, "pool"), value, "{metric}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retry_on_unavailable_and_abort_with_grpc_status() {
    let s = start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.proxy.outbound))
        .unwrap()
        .origin("http://grpc".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut client = EchoServiceClient::new(channel);
    let mut req = tonic::Request::new(EchoRequest {
        message: "hi".into(),
    });
    req.metadata_mut()
        .insert("x-echo-fail-first", "2".parse().unwrap());
    req.metadata_mut()
        .insert("x-echo-fail-key", "g1".parse().unwrap());
    let reply = client.echo(req).await.expect("retried on unavailable");
    assert_eq!(reply.get_ref().message, "hi");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.proxy.outbound))
        .unwrap()
        .origin("http://grpcabort".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut client = EchoServiceClient::new(channel);
    let status = client
        .echo(EchoRequest {
            message: "hi".into(),
        })
        .await
        .expect_err("aborted");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "fault filter abort");
    let log = s.proxy.wait_log(|l| l["authority"] == "grpcabort").await;
    assert_eq!(log["response_flags"], "FI");
    assert_eq!(log["response_code"], 200);
    // Istio's metrics carry the gRPC protocol and status: the retried call ends OK (0), the
    // aborted one UNAVAILABLE (14), both with HTTP 200.
    let m = scrape(&s.proxy).await;
    for status in ["0", "14"] {
        let labels = [
            ("reporter", "source"),
            ("request_protocol", "grpc"),
            ("response_code", "200"),
            ("grpc_response_status", status),
        ];
        assert_eq!(
            sample(&m, "istio_requests_total", &labels),
            Some(1.0),
            "grpc-status {status}: {m:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_the_proxy_cannot_apply_is_nacked_and_the_old_one_kept() {
    let s = start().await;
    assert_eq!(s.get("retry", "/before", &[]).await.status, 200);
    // Version 2 adds a virtual host whose route regex does not compile.
    s.ads.push(resources_with(
        &s.ports,
        &s.backends,
        vec![("broken", vec![route_with_bad_regex()])],
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    let nack = loop {
        if let Some(n) = s
            .ads
            .nacks()
            .into_iter()
            .find(|n| n.type_url.ends_with("RouteConfiguration"))
        {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "no RDS NACK: {:?}",
            s.ads.nacks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(nack.kept_version, "1");
    // Counted as Envoy counts it; the route configuration keeps version 1's hash.
    let rds = s.ports.outbound.port().to_string();
    let version = |m: &[prometheus_parse::Sample]| {
        sample(
            m,
            "envoy_http_rds_version",
            &[("envoy_rds_route_config", &rds)],
        )
        .expect("the route configuration's version")
    };
    let m = scrape(&s.proxy).await;
    assert_eq!(sample(&m, "envoy_http_rds_update_rejected", &[]), Some(1.0));
    assert_eq!(
        sample(&m, "envoy_cluster_manager_cds_update_rejected", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "envoy_control_plane_connected_state", &[]),
        Some(1.0)
    );
    let kept = version(&m);
    assert_eq!(kept, version_hash("1"));
    assert!(sample(&m, "envoy_cluster_manager_cds_version", &[]).is_some_and(|v| v > 0.0));
    assert!(sample(&m, "envoy_listener_manager_lds_version", &[]).is_some_and(|v| v > 0.0));
    assert!(
        nack.message
            .contains(&format!("\"{}\"", s.ports.outbound.port()))
            && nack.message.contains("safe_regex"),
        "names the route configuration and the field: {}",
        nack.message
    );
    // The old routes keep serving; the refused virtual host does not exist.
    assert_eq!(s.get("retry", "/after", &[]).await.status, 200);
    let r = s.get("broken", "/", &[]).await;
    assert_eq!(r.status, 404);
    // Version 3 is valid: applied.
    s.ads.push(resources_with(
        &s.ports,
        &s.backends,
        vec![("fixed", vec![route_to_cluster("v1")])],
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.get("fixed", "/", &[]).await.status != 200 {
        assert!(Instant::now() < deadline, "version 3 never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = scrape(&s.proxy).await;
    assert_eq!(version(&m), version_hash("3"));
    assert_eq!(sample(&m, "envoy_http_rds_update_rejected", &[]), Some(1.0));
}

/// The proxy's version gauges: FNV-1a of the version string, kept to 53 bits (exact in a
/// Prometheus float).
fn version_hash(v: &str) -> f64 {
    let h = v.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    (h & ((1 << 53) - 1)) as f64
}

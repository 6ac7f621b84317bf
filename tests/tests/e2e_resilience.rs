//! Resilience end to end: VirtualService retries and timeouts and DestinationRule connection
//! pools, written as YAML into the control plane's config directory, translated by it, and
//! applied by the client pod's captured sidecar in front of `mesh-echo` pods (whose `x-echo-*`
//! controls fail the first N calls or delay the answer). Each outcome is checked in the reply
//! and in the client sidecar's JSON access log (flags and details as Envoy writes them).

mod common;

use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Result};
use common::{
    config_dump, curl, echo_client, s, seen_header, wait_for, wait_log, Mesh, Reply, GRPC_PORT,
    HTTP_PORT, REVIEWS_HOST,
};
use mesh_tests::harness::Pod;
use serde_json::Value;

/// How long a config change gets to reach the client's sidecar.
const PUSH_TIMEOUT: Duration = Duration::from_secs(15);

/// Envoy's body for a request refused by a circuit breaker.
const OVERFLOW_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

/// `GET http://reviews:9080PATH` from `pod` with `headers` (`name: value`).
fn get<S: AsRef<str>>(pod: &Pod, path: &str, headers: &[S]) -> Result<Reply> {
    send(pod, path, headers, &[])
}

/// A request to `http://reviews:9080PATH` from `pod` with `headers` and more curl `args`.
fn send<S: AsRef<str>>(pod: &Pod, path: &str, headers: &[S], args: &[&str]) -> Result<Reply> {
    let url = format!("http://reviews:{HTTP_PORT}{path}");
    let mut argv: Vec<&str> = vec!["--max-time", "10"];
    for h in headers {
        argv.extend(["-H", h.as_ref()]);
    }
    argv.extend_from_slice(args);
    argv.push(&url);
    curl(pod, &argv)
}

/// The controls failing the first `n` calls counted on `key` with a 500.
fn fail(n: u32, key: &str) -> [String; 3] {
    [
        format!("x-echo-fail-first: {n}"),
        "x-echo-fail-status: 500".to_owned(),
        format!("x-echo-fail-key: {key}"),
    ]
}

/// The client sidecar's access-log line for the outbound request to `path`.
fn outbound_log(client: &Pod, path: &str) -> Result<Value> {
    wait_log(client, path, |e| {
        e["path"] == path && s(e, "upstream_cluster").starts_with("outbound|")
    })
}

const RETRIES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    retries: {attempts: 3, retryOn: 5xx}
";

#[test]
fn virtual_service_retries_hide_failing_first_calls() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "virtual_service_retries_hide_failing_first_calls";
    let (mesh, client, _servers) = Mesh::standard(test, &["v1"])?;
    mesh.check(|| {
        // Istio's default policy retries 503 and gRPC codes, not a 500.
        let before = get(&client, "/before", &fail(1, "before"))?;
        ensure!(before.status == 500, "{before:?}");

        mesh.topo.write_config("vs-reviews.yaml", RETRIES)?;
        let mut probe = 0;
        wait_for("the VirtualService's retries", PUSH_TIMEOUT, || {
            probe += 1;
            let controls = fail(1, &format!("probe{probe}"));
            Ok(get(&client, &format!("/probe/{probe}"), &controls)?.status == 200)
        })?;

        // Two failures, then success: the caller sees 200 from the third attempt.
        let two = get(&client, "/two", &fail(2, "two"))?;
        ensure!(two.status == 200, "{two:?}");
        ensure!(
            seen_header(&two.json()?, "x-envoy-attempt-count") == Some("3"),
            "{}",
            two.body
        );
        let log = outbound_log(&client, "/two")?;
        ensure!(log["response_flags"] == "-", "{log}");

        // More failures than retries: the fourth 500 goes through, flagged URX.
        let nine = get(&client, "/nine", &fail(9, "nine"))?;
        ensure!(nine.status == 500, "{nine:?}");
        let log = outbound_log(&client, "/nine")?;
        ensure!(
            log["response_flags"] == "URX" && log["response_code_details"] == "via_upstream",
            "{log}"
        );

        // A POST whose bytes reached the upstream is not retried.
        let post = send(
            &client,
            "/post",
            &fail(1, "post"),
            &["-X", "POST", "--data", "payload"],
        )?;
        ensure!(
            post.status == 500,
            "non-idempotent request retried: {post:?}"
        );
        Ok(())
    })
}

const STICKY: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
";

#[test]
fn a_retry_goes_to_another_endpoint() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("a_retry_goes_to_another_endpoint")?;
    mesh.topo.start_control_plane()?;
    let live = mesh.reviews_pod("v1")?;
    // A pod whose app is down: its sidecar answers 503 (UF) for it.
    let down = mesh.topo.injected_pod(
        "reviews-v2",
        common::NS,
        &[("app", "reviews"), ("version", "v2")],
    )?;
    let client = mesh.client_pod()?;
    mesh.check(|| {
        mesh.wait_converged(&client, &[live.clone(), down.clone()])?;
        mesh.topo.write_config("dr-reviews.yaml", STICKY)?;
        let cluster = format!("outbound|{HTTP_PORT}||{REVIEWS_HOST}");
        wait_for("the ring-hash cluster", PUSH_TIMEOUT, || {
            let c = config_dump(&client)?["config"]["clusters"][&cluster].to_string();
            Ok(c.to_ascii_lowercase().contains("ring"))
        })?;
        // Every user's calls stick to one pod; users hashed to the pod that is down get its
        // 503, and Istio's default retry (503, previous hosts) takes them to the other pod.
        let mut retried = 0;
        for i in 0..16 {
            let path = format!("/user/{i}");
            let user = format!("x-user: user{i}");
            let reply = get(&client, &path, &[&user])?;
            ensure!(reply.status == 200, "{path}: {reply:?}");
            ensure!(reply.json()?["version"] == "v1", "{}", reply.body);
            let log = outbound_log(&client, &path)?;
            ensure!(
                s(&log, "upstream_host").starts_with(&format!("{}:", live.ip())),
                "{log}"
            );
            let id = s(&log, "request_id").to_owned();
            if common::access_log(&down)
                .iter()
                .any(|e| e["request_id"] == id.as_str())
            {
                let first = wait_log(&down, &id, |e| e["request_id"] == id.as_str())?;
                ensure!(
                    first["response_code"] == 503 && first["response_flags"] == "UF",
                    "{first}"
                );
                retried += 1;
            }
        }
        ensure!(
            (1..16).contains(&retried),
            "some users hash to the pod that is down and are retried elsewhere: {retried}"
        );
        Ok(())
    })
}

const TIMEOUTS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /pertry}}]
    route:
    - destination: {host: reviews}
    timeout: 5s
    retries: {attempts: 2, perTryTimeout: 200ms, retryOn: 5xx}
  - route:
    - destination: {host: reviews}
    timeout: 300ms
";

#[test]
fn virtual_service_timeouts_answer_504_ut() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "virtual_service_timeouts_answer_504_ut";
    let (mesh, client, _servers) = Mesh::standard(test, &["v1"])?;
    mesh.check(|| {
        mesh.topo.write_config("vs-reviews.yaml", TIMEOUTS)?;
        let mut probe = 0;
        wait_for("the VirtualService's timeout", PUSH_TIMEOUT, || {
            probe += 1;
            let reply = get(&client, &format!("/probe/{probe}"), &["x-echo-delay: 1s"])?;
            Ok(reply.status == 504)
        })?;

        // The route timeout bounds the request.
        let started = Instant::now();
        let reply = get(&client, "/route", &["x-echo-delay: 3s"])?;
        let took = started.elapsed();
        ensure!(
            (reply.status, reply.body.as_str()) == (504, "upstream request timeout"),
            "{reply:?}"
        );
        ensure!(took < Duration::from_millis(2000), "{took:?}");
        let log = outbound_log(&client, "/route")?;
        ensure!(
            log["response_flags"] == "UT" && log["response_code_details"] == "response_timeout",
            "{log}"
        );

        // Three tries of 200 ms each, then 504, long before the route's 5 s.
        let started = Instant::now();
        let reply = get(&client, "/pertry", &["x-echo-delay: 4s"])?;
        let took = started.elapsed();
        ensure!(
            (reply.status, reply.body.as_str()) == (504, "upstream request timeout"),
            "{reply:?}"
        );
        ensure!(took < Duration::from_millis(2500), "{took:?}");
        let log = outbound_log(&client, "/pertry")?;
        ensure!(
            log["response_flags"] == "URX,UT"
                && log["response_code_details"] == "upstream_per_try_timeout",
            "{log}"
        );
        ensure!(
            log["duration"].as_u64().is_some_and(|d| d >= 550),
            "three tries: {log}"
        );
        Ok(())
    })
}

const POOL: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 2}
";

#[test]
fn destination_rule_pool_overflow_answers_503_uo_at_once() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "destination_rule_pool_overflow_answers_503_uo_at_once";
    let (mesh, client, _servers) = Mesh::standard(test, &["v1"])?;
    mesh.check(|| {
        mesh.topo.write_config("dr-reviews.yaml", POOL)?;
        let cluster = format!("outbound|{HTTP_PORT}||{REVIEWS_HOST}");
        wait_for("the connection pool limits", PUSH_TIMEOUT, || {
            let c = &config_dump(&client)?["config"]["clusters"][&cluster];
            Ok(c.to_string().contains("\"max_pending_requests\":1"))
        })?;
        // Five concurrent calls against a slow endpoint: one on the connection, one waiting,
        // three refused at once.
        let calls: Vec<_> = (0..5)
            .map(|i| {
                let client = client.clone();
                let handle = std::thread::spawn(move || {
                    get(&client, &format!("/pool/{i}"), &["x-echo-delay: 1500ms"])
                });
                std::thread::sleep(Duration::from_millis(60));
                handle
            })
            .collect();
        let mut ok = 0;
        let mut overflow = 0;
        for (i, call) in calls.into_iter().enumerate() {
            let reply = call
                .join()
                .map_err(|_| anyhow::anyhow!("call {i} panicked"))??;
            match reply.status {
                200 => ok += 1,
                503 => {
                    ensure!(reply.body == OVERFLOW_BODY, "{reply:?}");
                    let log = outbound_log(&client, &format!("/pool/{i}"))?;
                    ensure!(
                        log["response_flags"] == "UO"
                            && log["duration"].as_u64().is_some_and(|d| d < 300),
                        "refused at once: {log}"
                    );
                    overflow += 1;
                }
                _ => anyhow::bail!("call {i}: {reply:?}"),
            }
        }
        ensure!((ok, overflow) == (2, 3), "{ok} served, {overflow} refused");
        Ok(())
    })
}

const OUTLIER: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 1s
      baseEjectionTime: 3s
      maxEjectionPercent: 100
";

/// When the sidecar that wrote access-log `entry` received the request.
fn start_time(entry: &Value) -> Result<SystemTime> {
    Ok(humantime::parse_rfc3339(s(entry, "start_time"))?)
}

#[test]
fn outlier_detection_gives_a_failing_endpoint_no_traffic_for_the_ejection_time() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("outlier_detection_gives_a_failing_endpoint_no_traffic")?;
    mesh.topo.start_control_plane()?;
    let live = mesh.reviews_pod("v1")?;
    // A pod whose app is down: its sidecar answers 503 (UF) for it.
    let down = mesh.topo.injected_pod(
        "reviews-v2",
        common::NS,
        &[("app", "reviews"), ("version", "v2")],
    )?;
    let client = mesh.client_pod()?;
    mesh.check(|| {
        mesh.wait_converged(&client, &[live.clone(), down.clone()])?;
        mesh.topo.write_config("dr-reviews.yaml", OUTLIER)?;
        let cluster = format!("outbound|{HTTP_PORT}||{REVIEWS_HOST}");
        // The dump shows the snapshot the data path uses; before the push its
        // `outlier_detection` is null, so wait for the value itself.
        wait_for("the outlier detection settings", PUSH_TIMEOUT, || {
            let dump = config_dump(&client)?;
            Ok(dump["config"]["clusters"][&cluster]["outlier_detection"]["consecutive_5xx"] == 2)
        })?;
        // Every request that reached the failing pod, in order (its sidecar logs each).
        let attempts = || -> Vec<Value> {
            common::access_log(&down)
                .into_iter()
                .filter(|e| s(e, "upstream_cluster").starts_with("inbound|"))
                .collect()
        };
        ensure!(
            attempts().is_empty(),
            "traffic before the test: {:?}",
            attempts()
        );
        // Round robin reaches the failing pod; its second consecutive 503 ejects it (the
        // default retry hides the 503s from the caller).
        let mut i = 0;
        while attempts().len() < 2 {
            let reply = get(&client, &format!("/o/{i}"), &[] as &[&str])?;
            ensure!(reply.status == 200, "{reply:?}");
            i += 1;
            ensure!(i < 20, "the failing pod is never reached");
        }
        // The ejection happened after the second attempt reached the pod, and lasts 3 s:
        // until 2.5 s after that attempt (the pod's own clock), nothing reaches it.
        let ejecting = start_time(&attempts()[1])?;
        let mut served = 0;
        while SystemTime::now() < ejecting + Duration::from_millis(2500) {
            let reply = get(&client, &format!("/during/{served}"), &[] as &[&str])?;
            ensure!(reply.status == 200, "{reply:?}");
            served += 1;
        }
        ensure!(served >= 5, "only {served} requests");
        // After its ejection time it gets traffic again, and not before (a request that
        // slipped through during the ejection would be the third attempt, logged early).
        wait_for("the pod to be readmitted", Duration::from_secs(8), || {
            get(&client, "/back", &[] as &[&str])?;
            Ok(attempts().len() > 2)
        })?;
        let back = start_time(&attempts()[2])?;
        let gap = back.duration_since(ejecting)?;
        ensure!(
            gap >= Duration::from_secs(3),
            "the ejected pod got traffic {gap:?} after its ejecting failure: {:?}",
            attempts()
        );
        Ok(())
    })
}

const GRPC_ABORT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - fault:
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}
    route:
    - destination: {host: reviews}
";

#[test]
fn grpc_calls_retried_on_unavailable_and_aborted_with_a_grpc_status() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "grpc_calls_retried_on_unavailable_and_aborted_with_a_grpc_status";
    let (mesh, client, servers) = Mesh::standard(test, &["v1"])?;
    mesh.check(|| {
        let target = format!("reviews:{GRPC_PORT}");
        let cluster = format!("outbound|{GRPC_PORT}||{REVIEWS_HOST}");
        // Istio's default retry policy retries `unavailable`: the first two calls fail with
        // UNAVAILABLE at the server, the third attempt answers, the caller sees OK.
        let ok = echo_client(
            &client,
            &[
                "grpc",
                &target,
                "--message",
                "retried",
                "-H",
                "x-echo-fail-first: 2",
                "-H",
                "x-echo-fail-key: grpc-retry",
            ],
        )?;
        ensure!(
            ok.len() == 1 && ok[0]["code"] == 0 && ok[0]["reply"]["message"] == "retried",
            "{ok:?}"
        );
        let id = ok[0]["reply"]["metadata"]["x-request-id"][0]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // Three attempts reached the server's sidecar, one request left the client's.
        let at_server = |id: &str| {
            common::access_log(&servers[0])
                .iter()
                .filter(|e| e["request_id"] == id)
                .count()
        };
        wait_for(
            "three attempts at the server",
            Duration::from_secs(5),
            || Ok(at_server(&id) == 3),
        )?;
        let out = wait_log(&client, "the retried call", |e| {
            e["request_id"] == id.as_str() && s(e, "upstream_cluster") == cluster
        })?;
        ensure!(
            out["response_code"] == 200 && out["response_flags"] == "-",
            "{out}"
        );

        // A fault abort with a gRPC status: the caller gets UNAVAILABLE from the client's
        // sidecar (flag FI) and the server sees nothing.
        mesh.topo.write_config("vs-reviews.yaml", GRPC_ABORT)?;
        wait_for("the gRPC abort", PUSH_TIMEOUT, || {
            let out = client.echo_client(&["grpc", &target, "--expect-code", "14"])?;
            Ok(out.success())
        })?;
        let aborted = client.echo_client(&[
            "grpc",
            &target,
            "-H",
            "x-request-id: grpc-abort",
            "--expect-code",
            "14",
        ])?;
        ensure!(aborted.success(), "{aborted:?}");
        let out = wait_log(&client, "the aborted call", |e| {
            e["request_id"] == "grpc-abort" && s(e, "upstream_cluster") == cluster
        })?;
        ensure!(
            out["response_flags"] == "FI" && out["response_code_details"] == "fault_filter_abort",
            "{out}"
        );
        ensure!(
            at_server("grpc-abort") == 0,
            "the aborted call reached the server"
        );
        Ok(())
    })
}

//! Telemetry through two real `mesh-proxy` sidecars on loopback: a client sidecar (pod
//! `productpage-v1-abc12-x7k2p` of a Deployment) whose outbound route sends
//! `reviews.default.svc.cluster.local` to the server sidecar's inbound listener, and a server
//! sidecar (pod `reviews-v2`) delivering to an echo app.
//!
//! Checked: Istio's standard metrics at both sidecars, scraped from `/stats/prometheus` on
//! the Prometheus port and parsed with a Prometheus text parser, label by label and value by
//! value (both reporters for a 200; the client's 503 `UH`); the peer metadata headers never
//! reach the app; access-log lines field by field; both spans of the call received by an
//! OTLP collector built on the published protos, with the trace id of the request's
//! `traceparent`, the client span a child of the caller's span and the server span a child
//! of the client span; the admin endpoints and their 400s.

mod common;
mod telemetry_support;
use telemetry_support::*;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::upstreams::http_echo;
use common::xds::*;
use common::{curl, get, Ports, Proxy};
use opentelemetry_proto::tonic::trace::v1::Span;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

#[tokio::test]
async fn metrics_logs_and_spans_through_two_sidecars() {
    let app = http_echo("reviews").await;
    let (otlp, spans) = collector().await;
    let endpoint = format!("http://{otlp}");
    let tracing = [
        "--tracing-otlp-endpoint",
        endpoint.as_str(),
        "--tracing-sampling",
        "0",
    ];
    let server_ports = Ports::new();
    let client_ports = Ports::new();
    let server = Proxy::start_as(
        serve_ads(server_resources(&server_ports, app)).await,
        server_ports,
        "reviews-v2",
        "app=reviews,version=v2",
        &tracing,
    );
    let client = Proxy::start_as(
        serve_ads(client_resources(&client_ports, server_ports.inbound)).await,
        client_ports,
        "productpage-v1-abc12-x7k2p",
        "app=productpage,version=v1,pod-template-hash=abc12",
        &tracing,
    );
    server.wait_ready().await;
    client.wait_ready().await;

    // A sampled call carrying the caller's context (trace id T, span P).
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let url = format!("http://{}/reviews/1", client.outbound);
    let out = curl(&[
        "-s",
        "-H",
        "Host: reviews:9080",
        "-H",
        &format!("traceparent: 00-{trace}-{caller_span}-01"),
        "-H",
        "x-envoy-peer-metadata: forged",
        "-D",
        "-",
        &url,
    ])
    .await;
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{out}");
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    let seen = echo["headers"].as_object().unwrap();
    assert!(
        !seen.keys().any(|k| k.starts_with("x-envoy-peer-metadata")),
        "the app saw peer metadata: {seen:?}"
    );
    let upstream_traceparent = seen["traceparent"].to_string();
    assert!(
        upstream_traceparent.contains(trace),
        "{upstream_traceparent}"
    );
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("x-envoy-peer-metadata"), "{head}");
    assert!(head.contains("x-envoy-upstream-service-time"), "{head}");
    // An unsampled call and a local reply.
    assert_eq!(
        get(client.outbound, "reviews", "/reviews/2", false)
            .await
            .status,
        200
    );
    assert_eq!(
        get(client.outbound, "nowhere", "/", false).await.status,
        503
    );

    // Metrics, client side (reporter=source).
    let c = scrape(client.stats).await;
    let ok = find(
        &c,
        "istio_requests_total",
        &[("reporter", "source"), ("response_code", "200")],
    )
    .expect("source 200");
    for (label, value) in [
        ("source_workload", "productpage-v1"),
        ("source_workload_namespace", "default"),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_canonical_service", "productpage"),
        ("source_canonical_revision", "v1"),
        ("source_principal", "unknown"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "reviews-v2"),
        ("destination_workload_namespace", "default"),
        ("destination_app", "reviews"),
        ("destination_version", "v2"),
        ("destination_canonical_service", "reviews"),
        ("destination_canonical_revision", "v2"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "default"),
        ("destination_principal", "unknown"),
        ("request_protocol", "http"),
        ("grpc_response_status", ""),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
    ] {
        assert_eq!(ok.labels.get(label), Some(value), "source 200: {label}");
    }
    assert_eq!(counter(ok), 2.0);
    let uh = find(
        &c,
        "istio_requests_total",
        &[("reporter", "source"), ("response_code", "503")],
    )
    .expect("source 503");
    assert_eq!(uh.labels.get("response_flags"), Some("UH"));
    assert_eq!(uh.labels.get("destination_service_name"), Some("nowhere"));
    assert_eq!(uh.labels.get("destination_workload"), Some("unknown"));
    assert_eq!(counter(uh), 1.0);
    let duration = find(
        &c,
        "istio_request_duration_milliseconds",
        &[("reporter", "source"), ("response_code", "200")],
    )
    .expect("duration histogram");
    let prometheus_parse::Value::Histogram(buckets) = &duration.value else {
        panic!("{:?}", duration.value)
    };
    assert_eq!(buckets.last().unwrap().count, 2.0);
    assert!(buckets.iter().any(|b| b.less_than == 0.5));
    let rq = find(
        &c,
        "envoy_cluster_upstream_rq_total",
        &[("cluster_name", REVIEWS)],
    )
    .expect("per-cluster requests");
    assert_eq!(counter(rq), 2.0);
    let xx = find(
        &c,
        "envoy_cluster_upstream_rq_xx",
        &[
            ("cluster_name", REVIEWS),
            ("envoy_response_code_class", "2"),
        ],
    )
    .unwrap();
    assert_eq!(counter(xx), 2.0);
    assert_eq!(counter(find(&c, "envoy_server_live", &[]).unwrap()), 1.0);
    assert_eq!(
        counter(find(&c, "envoy_control_plane_connected_state", &[]).unwrap()),
        1.0
    );
    assert!(counter(find(&c, "envoy_cluster_manager_cds_update_success", &[]).unwrap()) >= 1.0);
    assert_eq!(
        counter(find(&c, "envoy_cluster_manager_cds_update_rejected", &[]).unwrap()),
        0.0
    );
    let healthy = find(
        &c,
        "envoy_cluster_membership_healthy",
        &[("cluster_name", REVIEWS)],
    )
    .unwrap();
    assert_eq!(counter(healthy), 1.0);

    // Metrics, server side (reporter=destination), on both stats ports.
    for port in [server.stats, server.status] {
        let s = scrape(port).await;
        let ok = find(
            &s,
            "istio_requests_total",
            &[("reporter", "destination"), ("response_code", "200")],
        )
        .expect("destination 200");
        for (label, value) in [
            ("source_workload", "productpage-v1"),
            ("source_app", "productpage"),
            ("source_canonical_service", "productpage"),
            ("destination_workload", "reviews-v2"),
            ("destination_app", "reviews"),
            ("destination_service", "reviews.default.svc.cluster.local"),
            ("destination_service_name", "reviews"),
            ("connection_security_policy", "none"),
            ("response_flags", "-"),
        ] {
            assert_eq!(
                ok.labels.get(label),
                Some(value),
                "destination 200: {label}"
            );
        }
        assert_eq!(counter(ok), 2.0);
        assert!(find(&s, "istio_requests_total", &[("reporter", "source")]).is_none());
    }

    // Access log, client side: the 200 and the 503.
    let line = client
        .wait_log(|v| v["path"] == "/reviews/1" && v["response_code"] == 200)
        .await;
    assert_eq!(line["method"], "GET");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["response_flags"], "-");
    assert_eq!(line["response_code_details"], "via_upstream");
    assert_eq!(line["authority"], "reviews:9080");
    assert_eq!(line["upstream_cluster"], REVIEWS);
    assert_eq!(line["upstream_host"], server_ports.inbound.to_string());
    assert!(line["upstream_service_time"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert!(line["request_id"].as_str().unwrap().len() == 36);
    for field in [
        "start_time",
        "route_name",
        "connection_termination_details",
        "bytes_received",
        "bytes_sent",
        "duration",
        "x_forwarded_for",
        "user_agent",
        "upstream_local_address",
        "downstream_local_address",
        "downstream_remote_address",
        "requested_server_name",
        "upstream_transport_failure_reason",
    ] {
        assert!(line.get(field).is_some(), "missing {field}: {line}");
    }
    let uh_line = client.wait_log(|v| v["response_code"] == 503).await;
    assert_eq!(uh_line["response_flags"], "UH");
    assert_eq!(uh_line["response_code_details"], "no_healthy_upstream");

    // Spans: the client span is a child of the caller's, the server span of the client's.
    let deadline = Instant::now() + Duration::from_secs(10);
    let by_kind = loop {
        let got: HashMap<i32, (String, Span)> = spans
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(svc, s)| (s.kind, (svc.clone(), s.clone())))
            .collect();
        if got.len() >= 2 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all = spans.0.lock().unwrap().len();
    assert_eq!(all, 2, "only the sampled call is traced");
    let (client_svc, client_span) = by_kind.get(&3).expect("client span").clone();
    let (server_svc, server_span) = by_kind.get(&2).expect("server span").clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&client_span.trace_id), trace);
    assert_eq!(hex(&server_span.trace_id), trace);
    assert_eq!(hex(&client_span.parent_span_id), caller_span);
    assert_eq!(server_span.parent_span_id, client_span.span_id);
    assert_eq!(client_svc, "productpage.default");
    assert_eq!(server_svc, "reviews.default");
    assert_eq!(client_span.name, "reviews.default.svc.cluster.local:9080/*");
    for (span, side) in [(&client_span, "client"), (&server_span, "server")] {
        assert_eq!(attr(span, "http.method").as_deref(), Some("GET"), "{side}");
        assert_eq!(
            attr(span, "http.status_code").as_deref(),
            Some("200"),
            "{side}"
        );
        assert_eq!(attr(span, "component").as_deref(), Some("proxy"), "{side}");
        assert_eq!(attr(span, "response_flags").as_deref(), Some("-"), "{side}");
        assert_eq!(
            attr(span, "istio.mesh_id").as_deref(),
            Some("cluster.local"),
            "{side}"
        );
        assert_eq!(
            attr(span, "guid:x-request-id"),
            line["request_id"].as_str().map(str::to_string),
            "{side}"
        );
        assert!(attr(span, "node_id")
            .unwrap()
            .starts_with("sidecar~127.0.0.1~"));
    }
    assert_eq!(
        attr(&client_span, "istio.canonical_service").as_deref(),
        Some("productpage")
    );
    assert_eq!(
        attr(&client_span, "upstream_cluster").as_deref(),
        Some(REVIEWS)
    );
    assert_eq!(
        attr(&server_span, "istio.canonical_service").as_deref(),
        Some("reviews")
    );
    assert!(attr(&client_span, "http.url")
        .unwrap()
        .starts_with("http://reviews:9080/reviews/1"));
    // The collector has the span before the exporter reads its reply and counts it.
    let mut sent = 0.0;
    for _ in 0..50 {
        let exported = scrape(client.stats).await;
        sent = counter(find(&exported, "envoy_tracing_opentelemetry_spans_sent", &[]).unwrap());
        if sent >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sent, 1.0);
}

#[tokio::test]
async fn spans_to_a_collector_that_is_down_are_dropped_and_counted() {
    let app = http_echo("app").await;
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let server_ports = Ports::new();
    let client_ports = Ports::new();
    let server = Proxy::start(
        serve_ads(server_resources(&server_ports, app)).await,
        server_ports,
        &[],
    );
    let client = Proxy::start(
        serve_ads(client_resources(&client_ports, server_ports.inbound)).await,
        client_ports,
        &[
            "--tracing-otlp-endpoint",
            &dead,
            "--tracing-sampling",
            "100",
        ],
    );
    server.wait_ready().await;
    client.wait_ready().await;
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(
            get(client.outbound, "reviews", "/", false).await.status,
            200
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "export never slows requests"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = scrape(client.stats).await;
        let dropped = find(&s, "envoy_tracing_opentelemetry_spans_dropped", &[]).map(counter);
        if dropped == Some(5.0) {
            break;
        }
        assert!(Instant::now() < deadline, "dropped spans: {dropped:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn admin_endpoints_and_bad_parameters() {
    let app = http_echo("app").await;
    let ports = Ports::new();
    let proxy = Proxy::start(serve_ads(server_resources(&ports, app)).await, ports, &[]);
    proxy.wait_ready().await;
    let admin = |path: &str| format!("http://{}{path}", proxy.admin);
    let status = |args: Vec<String>| async move {
        let mut a = vec![
            "-s".to_string(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
        ];
        a.extend(args);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        curl(&refs).await
    };
    for (path, want) in [
        ("/clusters", "200"),
        ("/clusters?format=json", "200"),
        ("/clusters?format=yaml", "400"),
        ("/listeners", "200"),
        ("/listeners?bogus=1", "400"),
        ("/stats", "200"),
        ("/stats?format=prometheus", "200"),
        ("/stats?format=xml", "400"),
        ("/stats/prometheus", "200"),
        ("/memory", "200"),
        ("/config_dump", "200"),
        ("/config_dump?resource=dynamic_active_clusters", "200"),
        ("/config_dump?resource=nope", "400"),
        ("/logging", "200"),
        ("/ready", "200"),
        ("/nope", "404"),
    ] {
        assert_eq!(status(vec![admin(path)]).await, want, "{path}");
    }
    for (path, want) in [
        ("/logging?level=debug", "200"),
        ("/logging?paths=proxy::http:trace,xds_client:info", "200"),
        ("/logging?proxy=warn", "200"),
        ("/logging?level=loud", "400"),
        ("/logging?paths=nocolon", "400"),
        ("/drain_listeners?graceful&bogus", "400"),
    ] {
        assert_eq!(
            status(vec!["-X".into(), "POST".into(), admin(path)]).await,
            want,
            "POST {path}"
        );
    }
    let logging = curl(&["-s", &admin("/logging")]).await;
    assert!(logging.contains("proxy=warn"), "{logging}");
    let clusters = curl(&["-s", &admin("/clusters")]).await;
    assert!(
        clusters.contains(&format!(
            "{REVIEWS}::{}::health_flags::healthy",
            ports.inbound
        )),
        "{clusters}"
    );
    let listeners = curl(&["-s", &admin("/listeners")]).await;
    assert!(
        listeners.contains("virtualInbound::0.0.0.0:15006"),
        "{listeners}"
    );
    let dump: serde_json::Value = serde_json::from_str(
        &curl(&[
            "-s",
            &admin("/config_dump?resource=dynamic_active_clusters"),
        ])
        .await,
    )
    .unwrap();
    let names: Vec<&str> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&REVIEWS), "{names:?}");
    assert!(dump["configs"][0]["version_info"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    let memory: serde_json::Value =
        serde_json::from_str(&curl(&["-s", &admin("/memory")]).await).unwrap();
    assert!(
        memory["allocated"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    // Draining the listeners fails readiness and refuses new connections.
    assert_eq!(
        status(vec!["-X".into(), "POST".into(), admin("/drain_listeners")]).await,
        "200"
    );
    assert_eq!(status(vec![admin("/ready")]).await, "503");
    assert_eq!(
        status(vec![format!("http://{}/", proxy.inbound)]).await,
        "000",
        "a drained listener closes new connections"
    );
}

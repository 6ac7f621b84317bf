//! Telemetry through two captured sidecars (pod `client`, app `client`; pod `reviews-v1`, app
//! `reviews` version `v1`): known traffic (two HTTP 200s, one traced; a 503 `UH` to a Service
//! without endpoints; one TCP connection), then
//! - each sidecar's `/stats/prometheus` on 15090, scraped from the host as Prometheus does and
//!   parsed with a Prometheus text parser, checked label by label and value by value (both
//!   reporters of the 200s, the client's 503 with its flag, the TCP connection at both ends);
//! - the access-log lines parsed as JSON and checked field by field (the 200 at both ends,
//!   the 503, a request an AuthorizationPolicy denies at the server's sidecar, at both ends,
//!   the TCP connection);
//! - an OTLP collector on the host, built on the published OpenTelemetry protos, receiving
//!   both spans of the traced call: one trace id, the client span a child of the caller's
//!   span and the server span a child of the client span.

mod common;
#[path = "telemetry_support/denied.rs"]
mod denied;
#[path = "telemetry_support/proxy_config.rs"]
mod proxy_config;
mod telemetry_support;
use telemetry_support::*;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use common::{curl, echo_client, ip_of, s, wait_for, wait_log, Mesh, NS};
use mesh_tests::harness::{Pod, ProxyOptions, ServiceSpec};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prometheus_parse::Value;
use serde_json::Value as Json;

/// Istio's Prometheus port (excluded from capture).
const STATS_PORT: u16 = 15090;
const HTTP_PORT: u16 = common::HTTP_PORT;
const TCP_PORT: u16 = common::TCP_PORT;
const REVIEWS: &str = common::REVIEWS_HOST;
const RATINGS: &str = "ratings.default.svc.cluster.local";

/// Denies one path at `reviews`' sidecar (on the HTTP port only: a DENY rule with HTTP fields
/// denies every TCP connection, as in Istio).
const DENY_POLICY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-telemetry, namespace: default}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  action: DENY\n  rules:\n  - to: [{operation: {ports: [\"9080\"], paths: [\"/telemetry/denied\"]}}]\n";

#[test]
fn metrics_access_logs_and_spans_through_two_sidecars() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("e2e_telemetry")?;
    mesh.topo.add_service(
        &ServiceSpec::new("ratings", NS)
            .port("http", HTTP_PORT, HTTP_PORT)
            .selector("app", "ratings"),
    )?;
    // The caller is a Service's endpoint too, so the server's sidecar knows the workload at
    // its address (the source labels of a TCP connection, which carries no peer metadata).
    mesh.topo.add_service(
        &ServiceSpec::new("client", NS)
            .port("http", HTTP_PORT, HTTP_PORT)
            .selector("app", "client"),
    )?;
    let (_rt, otlp, collector) = start_collector(&mesh)?;
    mesh.topo.write_config("deny.yaml", DENY_POLICY)?;
    mesh.topo.start_control_plane()?;
    let opts = ProxyOptions {
        extra_run_args: vec![
            "--tracing-otlp-endpoint".into(),
            format!("http://{otlp}"),
            // Only calls that come with a sampling decision are traced.
            "--tracing-sampling".into(),
            "0".into(),
        ],
        ..ProxyOptions::default()
    };
    let server = reviews_pod(&mesh, &opts)?;
    let client = mesh
        .topo
        .injected_pod_with("client", NS, &[("app", "client")], &opts)?;
    mesh.check(|| {
        mesh.wait_converged(&client, std::slice::from_ref(&server))?;
        check(&mesh, &client, &server, &collector)
    })
}

fn check(mesh: &Mesh, client: &Pod, server: &Pod, collector: &Collector) -> Result<()> {
    // The traffic: a traced 200, an untraced 200, a 503 UH, a TCP connection.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let url = format!("http://reviews:{HTTP_PORT}/telemetry/traced");
    let traced = curl(
        client,
        &[
            "-H",
            &format!("traceparent: 00-{trace}-{caller_span}-01"),
            &url,
        ],
    )?;
    ensure!(traced.status == 200, "{traced:?}");
    let echo = traced.json()?;
    let seen = echo["headers"].as_object().context("echo headers")?;
    ensure!(
        !seen.keys().any(|k| k.starts_with("x-envoy-peer-metadata")),
        "the app saw peer metadata: {seen:?}"
    );
    ensure!(
        !traced
            .headers
            .iter()
            .any(|(k, _)| k.starts_with("x-envoy-peer-metadata")),
        "the client app saw peer metadata: {:?}",
        traced.headers
    );
    let plain = curl(
        client,
        &[&format!("http://reviews:{HTTP_PORT}/telemetry/plain")],
    )?;
    ensure!(plain.status == 200, "{plain:?}");
    let uh = curl(
        client,
        &[&format!("http://ratings:{HTTP_PORT}/telemetry/uh")],
    )?;
    ensure!(
        (uh.status, uh.body.as_str()) == (503, "no healthy upstream"),
        "{uh:?}"
    );
    let data = "hello telemetry\n";
    let tcp = echo_client(
        client,
        &["tcp", &format!("reviews:{TCP_PORT}"), "--data", data],
    )?;
    ensure!(tcp[0]["ok"] == true, "{tcp:?}");
    let n = data.len() as u64;

    // Access log: the traced 200 at both ends, joined by the request id.
    let out = wait_log(client, "the traced 200", |e| {
        e["path"] == "/telemetry/traced"
    })?;
    let id = s(&out, "request_id").to_owned();
    ensure!(id.len() == 36, "request id {id:?}");
    ensure!(seen["x-request-id"][0] == id.as_str(), "{seen:?}");
    let inb = common::request_log(server, &id, "inbound|")?;
    for (e, side) in [(&out, "client"), (&inb, "server")] {
        for (field, want) in [
            ("method", Json::from("GET")),
            ("path", Json::from("/telemetry/traced")),
            ("protocol", Json::from("HTTP/1.1")),
            ("response_code", Json::from(200)),
            ("response_flags", Json::from("-")),
            ("response_code_details", Json::from("via_upstream")),
            ("authority", Json::from(format!("reviews:{HTTP_PORT}"))),
            ("bytes_received", Json::from(0)),
            ("bytes_sent", Json::from(traced.body.len())),
            ("request_id", Json::from(id.as_str())),
        ] {
            ensure!(
                e[field] == want,
                "{side}: {field} is {}, want {want}: {e}",
                e[field]
            );
        }
        ensure!(s(e, "user_agent").starts_with("curl/"), "{side}: {e}");
        ensure!(e["duration"].as_u64().is_some(), "{side}: duration {e}");
        ensure!(
            s(e, "upstream_service_time").parse::<u64>().is_ok(),
            "{side}: upstream_service_time {e}"
        );
        ensure!(chrono_like(s(e, "start_time")), "{side}: start_time {e}");
        for field in [
            "route_name",
            "connection_termination_details",
            "x_forwarded_for",
            "upstream_local_address",
            "requested_server_name",
            "upstream_transport_failure_reason",
        ] {
            ensure!(e.get(field).is_some(), "{side}: no field {field}: {e}");
        }
    }
    ensure!(
        out["upstream_cluster"] == format!("outbound|{HTTP_PORT}||{REVIEWS}")
            && out["upstream_host"] == format!("{}:{HTTP_PORT}", server.ip())
            && out["downstream_local_address"] == format!("{}:{HTTP_PORT}", mesh.reviews_ip)
            && out["downstream_remote_address"] == traced.local.to_string(),
        "client addresses: {out}"
    );
    ensure!(
        inb["upstream_cluster"] == format!("inbound|{HTTP_PORT}||")
            && inb["downstream_local_address"] == format!("{}:{HTTP_PORT}", server.ip())
            && ip_of(&inb, "downstream_remote_address") == Some(client.ip().into()),
        "server addresses: {inb}"
    );
    // The 503 of a Service without endpoints, at the client.
    let e = wait_log(client, "the 503", |e| e["path"] == "/telemetry/uh")?;
    for (field, want) in [
        ("response_code", Json::from(503)),
        ("response_flags", Json::from("UH")),
        ("response_code_details", Json::from("no_healthy_upstream")),
        (
            "upstream_cluster",
            Json::from(format!("outbound|{HTTP_PORT}||{RATINGS}")),
        ),
        ("upstream_host", Json::Null),
        ("upstream_service_time", Json::Null),
        ("authority", Json::from(format!("ratings:{HTTP_PORT}"))),
        ("bytes_sent", Json::from("no healthy upstream".len())),
    ] {
        ensure!(
            e[field] == want,
            "503: {field} is {}, want {want}: {e}",
            e[field]
        );
    }
    // The TCP connection at both ends.
    let tcp_out = wait_log(client, "the TCP connection", |e| {
        e["upstream_cluster"] == format!("outbound|{TCP_PORT}||{REVIEWS}")
    })?;
    let tcp_in = wait_log(server, "the TCP connection", |e| {
        e["upstream_cluster"] == format!("inbound|{TCP_PORT}||")
    })?;
    for (e, side) in [(&tcp_out, "client"), (&tcp_in, "server")] {
        for (field, want) in [
            ("bytes_received", Json::from(n)),
            ("bytes_sent", Json::from(n)),
            ("response_flags", Json::from("-")),
            ("method", Json::Null),
            ("path", Json::Null),
            ("response_code", Json::from(0)),
        ] {
            ensure!(
                e[field] == want,
                "tcp {side}: {field} is {}, want {want}: {e}",
                e[field]
            );
        }
    }
    ensure!(
        tcp_out["upstream_host"] == format!("{}:{TCP_PORT}", server.ip())
            && tcp_out["downstream_local_address"] == format!("{}:{TCP_PORT}", mesh.reviews_ip),
        "tcp client: {tcp_out}"
    );
    ensure!(
        tcp_in["downstream_local_address"] == format!("{}:{TCP_PORT}", server.ip())
            && ip_of(&tcp_in, "downstream_remote_address") == Some(client.ip().into()),
        "tcp server: {tcp_in}"
    );

    check_metrics(client, server, [traced.body.len(), plain.body.len()], n)?;
    check_spans(collector, trace, caller_span, &id)?;
    proxy_config::check_proxy_config(client, server)?;
    // After the metrics, whose counts it would change.
    denied::check_denied(client, server)?;
    // The control plane's flat endpoint list holds the server pod on every reviews port.
    let r = mesh.cp.debug_get("/debug/endpointz")?;
    ensure!(r.status == 200, "endpointz: {}", r.status);
    let eps: Json = serde_json::from_str(&r.body)?;
    let reviews_http = eps
        .as_array()
        .context("endpointz is a list")?
        .iter()
        .find(|e| e["service"] == REVIEWS && e["port"] == HTTP_PORT)
        .with_context(|| format!("no reviews:{HTTP_PORT} in {eps}"))?;
    ensure!(
        reviews_http["address"] == format!("{}:{HTTP_PORT}", server.ip())
            && reviews_http["healthy"] == true
            && reviews_http["namespace"] == NS,
        "{reviews_http}"
    );
    Ok(())
}

/// `2026-11-27T00:31:02.123Z`: RFC 3339 UTC with milliseconds.
fn chrono_like(s: &str) -> bool {
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

fn check_metrics(client: &Pod, server: &Pod, bodies: [usize; 2], n: u64) -> Result<()> {
    let parties = client_to_reviews();
    // The client's sidecar: reporter=source.
    let c = scrape(client)?;
    let ok = sample(
        &c,
        "istio_requests_total",
        &[("reporter", "source"), ("response_code", "200")],
    )?;
    labels(ok, &parties)?;
    labels(
        ok,
        &[
            ("request_protocol", "http"),
            ("response_flags", "-"),
            ("grpc_response_status", ""),
            ("connection_security_policy", "unknown"),
            // Mutual TLS to the server's sidecar: this workload's SPIFFE ID and the one the
            // server's certificate verified (both pods run as `default`).
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/default",
            ),
            (
                "destination_principal",
                "spiffe://cluster.local/ns/default/sa/default",
            ),
        ],
    )?;
    ensure!(value(ok)? == 2.0, "source 200s: {}", value(ok)?);
    let uh = sample(
        &c,
        "istio_requests_total",
        &[("reporter", "source"), ("response_code", "503")],
    )?;
    labels(
        uh,
        &[
            ("response_flags", "UH"),
            ("source_workload", "client"),
            ("destination_service", RATINGS),
            ("destination_service_name", "ratings"),
            ("destination_workload", "unknown"),
            ("destination_app", "unknown"),
        ],
    )?;
    ensure!(value(uh)? == 1.0, "source 503: {}", value(uh)?);
    let duration = sample(
        &c,
        "istio_request_duration_milliseconds",
        &[("reporter", "source"), ("response_code", "200")],
    )?;
    let Value::Histogram(buckets) = &duration.value else {
        bail!("duration is not a histogram: {:?}", duration.value);
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    let istio = [
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ];
    ensure!(
        bounds
            .iter()
            .filter(|b| b.is_finite())
            .copied()
            .collect::<Vec<_>>()
            == istio,
        "Istio's default buckets: {bounds:?}"
    );
    ensure!(value(duration)? == 2.0);
    let sizes = sample(
        &c,
        "istio_response_bytes",
        &[("reporter", "source"), ("response_code", "200")],
    )?;
    let Value::Histogram(sb) = &sizes.value else {
        bail!("response bytes: {:?}", sizes.value);
    };
    for b in sb {
        let want = bodies.iter().filter(|&&n| n as f64 <= b.less_than).count() as f64;
        ensure!(b.count == want, "response sizes {bodies:?}: {sb:?}");
    }
    // TCP at the client: one connection opened and closed, bytes both ways; the server's
    // workload from the chosen endpoint's metadata (no peer metadata on TCP).
    let mut tcp_labels = parties.clone();
    tcp_labels.extend([
        ("reporter", "source"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        // Mutual TLS to the server's sidecar: both SPIFFE IDs (both pods run as `default`);
        // the source reporter's security policy is `unknown`, as Istio's.
        (
            "source_principal",
            "spiffe://cluster.local/ns/default/sa/default",
        ),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/default/sa/default",
        ),
        ("connection_security_policy", "unknown"),
    ]);
    for (metric, want) in [
        ("istio_tcp_connections_opened_total", 1.0),
        ("istio_tcp_connections_closed_total", 1.0),
        ("istio_tcp_sent_bytes_total", n as f64),
        ("istio_tcp_received_bytes_total", n as f64),
    ] {
        let s = sample(
            &c,
            metric,
            &[("reporter", "source"), ("request_protocol", "tcp")],
        )?;
        labels(s, &tcp_labels)?;
        ensure!(
            value(s)? == want,
            "client {metric}: {} want {want}",
            value(s)?
        );
    }
    // Envoy's names for the proxy's health.
    let rq = sample(
        &c,
        "envoy_cluster_upstream_rq_total",
        &[("cluster_name", &format!("outbound|{HTTP_PORT}||{REVIEWS}"))],
    )?;
    ensure!(value(rq)? == 2.0, "upstream_rq_total {}", value(rq)?);
    ensure!(value(sample(&c, "envoy_control_plane_connected_state", &[])?)? == 1.0);
    ensure!(
        value(sample(
            &c,
            "envoy_cluster_manager_cds_update_rejected",
            &[]
        )?)? == 0.0
    );

    // The server's sidecar: reporter=destination, the same parties.
    let sv = scrape(server)?;
    // Both hold a workload certificate of the CA's default lifetime (24 h), issued moments ago.
    for (who, samples) in [("client", &c), ("server", &sv)] {
        let days = value(sample(
            samples,
            "envoy_server_days_until_first_cert_expiring",
            &[],
        )?)?;
        ensure!(
            days > 0.9 && days <= 1.0,
            "{who}: envoy_server_days_until_first_cert_expiring is {days}, not about 1 day"
        );
    }
    let ok = sample(
        &sv,
        "istio_requests_total",
        &[("reporter", "destination"), ("response_code", "200")],
    )?;
    labels(ok, &parties)?;
    labels(
        ok,
        &[
            ("request_protocol", "http"),
            ("response_flags", "-"),
            ("connection_security_policy", "mutual_tls"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/default",
            ),
            (
                "destination_principal",
                "spiffe://cluster.local/ns/default/sa/default",
            ),
        ],
    )?;
    ensure!(value(ok)? == 2.0, "destination 200s: {}", value(ok)?);
    ensure!(
        sample(&sv, "istio_requests_total", &[("reporter", "source")]).is_err(),
        "the server made no outbound request"
    );
    // The caller's workload from the endpoint metadata of its address.
    let mut tcp_in = parties.clone();
    tcp_in.extend([
        ("reporter", "destination"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/default/sa/default",
        ),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/default/sa/default",
        ),
    ]);
    for (metric, want) in [
        ("istio_tcp_connections_opened_total", 1.0),
        ("istio_tcp_connections_closed_total", 1.0),
        ("istio_tcp_sent_bytes_total", n as f64),
        ("istio_tcp_received_bytes_total", n as f64),
    ] {
        let s = sample(
            &sv,
            metric,
            &[("reporter", "destination"), ("request_protocol", "tcp")],
        )?;
        labels(s, &tcp_in)?;
        ensure!(
            value(s)? == want,
            "server {metric}: {} want {want}",
            value(s)?
        );
    }
    Ok(())
}

fn check_spans(collector: &Collector, trace: &str, caller_span: &str, id: &str) -> Result<()> {
    wait_for(
        "both spans at the collector",
        Duration::from_secs(15),
        || Ok(collector.spans().len() >= 2),
    )?;
    // Give a wrongly sampled untraced call the time to show up.
    std::thread::sleep(Duration::from_millis(500));
    let spans = collector.spans();
    ensure!(
        spans.len() == 2,
        "only the traced call is sampled: {spans:?}"
    );
    let by_kind: HashMap<i32, (String, Span)> = spans
        .into_iter()
        .map(|(svc, s)| (s.kind, (svc, s)))
        .collect();
    let (client_svc, client_span) = by_kind
        .get(&(SpanKind::Client as i32))
        .context("no client span")?;
    let (server_svc, server_span) = by_kind
        .get(&(SpanKind::Server as i32))
        .context("no server span")?;
    ensure!(hex(&client_span.trace_id) == trace, "client trace id");
    ensure!(hex(&server_span.trace_id) == trace, "server trace id");
    ensure!(
        hex(&client_span.parent_span_id) == caller_span,
        "the client span continues the caller's"
    );
    ensure!(
        server_span.parent_span_id == client_span.span_id,
        "the server span is the client span's child"
    );
    ensure!(client_svc == "client.default" && server_svc == "reviews.default");
    ensure!(
        client_span.name == format!("{REVIEWS}:{HTTP_PORT}/*"),
        "client span name {}",
        client_span.name
    );
    for (span, side) in [(client_span, "client"), (server_span, "server")] {
        for (key, want) in [
            ("http.method", "GET"),
            ("http.status_code", "200"),
            ("response_flags", "-"),
            ("component", "proxy"),
            ("guid:x-request-id", id),
        ] {
            ensure!(
                attr(span, key).as_deref() == Some(want),
                "{side} span {key}: {:?}",
                attr(span, key)
            );
        }
        ensure!(
            attr(span, "http.url").is_some_and(|u| u.ends_with("/telemetry/traced")),
            "{side} url"
        );
        ensure!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }
    Ok(())
}

//! The Telemetry API through two captured sidecars (pod `client`, app `client`; pod
//! `reviews-v1`, app `reviews`), neither started with a tracing flag:
//! - the mesh config (ConfigMap `istio-system/istio`, key `mesh`) names an `opentelemetry`
//!   extension provider `otel`: the Service `otel-collector.istio-system`, whose endpoint is
//!   an OTLP collector on the host (built on the published OpenTelemetry protos);
//! - a Telemetry selecting `app: reviews` turns its access log off and traces 100% of its
//!   requests to `otel`.
//!
//! Then: every request is logged by the client's sidecar and by no one at `reviews`, and
//! every request's server span reaches the collector (the proxies' own default is 1%, and the
//! client, which no Telemetry selects, sends none). Replacing the Telemetry with a filter
//! `response.code >= 400` brings `reviews`' log back for the errors only.

mod common;
mod telemetry_support;
use telemetry_support::*;

use std::time::Duration;

use anyhow::{ensure, Result};
use common::{access_log, curl, wait_for, wait_log, Mesh, HTTP_PORT, NS};
use mesh_tests::harness::{Pod, ProxyOptions};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// Istio's Prometheus port (the shared scene's scrapes use it).
const STATS_PORT: u16 = 15090;
const REVIEWS: &str = common::REVIEWS_HOST;
fn telemetry(spec: &str) -> String {
    format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: reviews, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n{spec}"
    )
}

const QUIET_AND_TRACED: &str = "  accessLogging:\n  - disabled: true\n  tracing:\n  - providers: [{name: otel}]\n    randomSamplingPercentage: 100\n";
const ERRORS_ONLY: &str = "  accessLogging:\n  - filter: {expression: \"response.code >= 400\"}\n";

#[test]
fn a_telemetry_resource_turns_one_workload_log_off_and_traces_it_fully() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("e2e_telemetry_api")?;
    let (_rt, otlp, collector) = start_collector(&mesh)?;
    collector_as_provider(&mesh, otlp)?;
    mesh.topo
        .write_config("telemetry.yaml", &telemetry(QUIET_AND_TRACED))?;
    mesh.topo.start_control_plane()?;
    let opts = ProxyOptions::default();
    let server = reviews_pod(&mesh, &opts)?;
    let client = mesh
        .topo
        .injected_pod_with("client", NS, &[("app", "client")], &opts)?;
    mesh.check(|| {
        mesh.wait_converged(&client, std::slice::from_ref(&server))?;
        check(&mesh, &client, &server, &collector)
    })
}

fn url(path: &str) -> String {
    format!("http://reviews:{HTTP_PORT}{path}")
}

fn check(mesh: &Mesh, client: &Pod, server: &Pod, collector: &Collector) -> Result<()> {
    // Three untraced calls (no trace headers): the client's sidecar logs each and traces
    // none; `reviews`' sidecar logs none and traces each (100%).
    let paths = ["/quiet/1", "/quiet/2", "/quiet/3"];
    for p in paths {
        let r = curl(client, &[&url(p)])?;
        ensure!(r.status == 200, "{p}: {r:?}");
    }
    let mut ids = Vec::new();
    for p in paths {
        let line = wait_log(client, p, |e| e["path"] == p)?;
        ensure!(line["response_code"] == 200, "{line}");
        ids.push(line["request_id"].as_str().unwrap_or_default().to_string());
    }
    let server_spans = |c: &Collector| {
        c.spans()
            .into_iter()
            .filter(|(_, s)| s.kind == SpanKind::Server as i32)
            .filter(|(_, s)| attr(s, "guid:x-request-id").is_some_and(|id| ids.contains(&id)))
            .count()
    };
    wait_for(
        "a server span per request at the collector",
        Duration::from_secs(15),
        || Ok(server_spans(collector) == paths.len()),
    )?;
    let spans = collector.spans();
    ensure!(
        spans.iter().all(|(_, s)| s.kind == SpanKind::Server as i32),
        "only reviews traces: {:?}",
        spans
            .iter()
            .map(|(svc, s)| (svc, s.kind))
            .collect::<Vec<_>>()
    );
    ensure!(
        spans.iter().all(|(svc, _)| svc == "reviews.default"),
        "service names: {:?}",
        spans.iter().map(|(svc, _)| svc).collect::<Vec<_>>()
    );
    // The spans are recorded where the log line would be written: none came.
    let logged: Vec<_> = access_log(server)
        .into_iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| p.starts_with("/quiet")))
        .collect();
    ensure!(logged.is_empty(), "reviews logged: {logged:?}");

    // The same workload, now logging errors only.
    mesh.topo
        .write_config("telemetry.yaml", &telemetry(ERRORS_ONLY))?;
    let failing = url("/filtered/503");
    wait_for("reviews to log its 503s", Duration::from_secs(20), || {
        let r = curl(client, &["-H", "x-echo-status: 503", &failing])?;
        ensure!(r.status == 503, "{r:?}");
        Ok(access_log(server)
            .iter()
            .any(|e| e["path"] == "/filtered/503" && e["response_code"] == 503))
    })?;
    let ok = curl(client, &[&url("/filtered/200")])?;
    ensure!(ok.status == 200, "{ok:?}");
    let bad = curl(client, &["-H", "x-echo-status: 404", &url("/filtered/404")])?;
    ensure!(bad.status == 404, "{bad:?}");
    let line = wait_log(server, "the 404", |e| e["path"] == "/filtered/404")?;
    ensure!(line["response_code"] == 404, "{line}");
    // The 200 went before the 404 and reviews writes its lines in order: with the 404's line
    // there, a line for the 200 would be too.
    wait_log(client, "the 200", |e| e["path"] == "/filtered/200")?;
    let ok_lines: Vec<_> = access_log(server)
        .into_iter()
        .filter(|e| e["path"] == "/filtered/200")
        .collect();
    ensure!(ok_lines.is_empty(), "reviews logged a 200: {ok_lines:?}");
    Ok(())
}

//! The Telemetry API given to real Envoy: the control plane's `access_log` (Envoy's file
//! logger with Istio's JSON format and a CEL filter) and `tracing` (`envoy.tracers.opentelemetry`
//! to a mesh-config provider over `envoy_grpc`) on an Envoy sidecar (pod `client-envoy`)
//! calling `reviews-v1` (a `mesh-proxy` sidecar).
//!
//! Checked: Envoy ACKs every type with no NACK in the control plane's `/debug/syncz`; with a
//! filter `response.code >= 400` Envoy writes the 404's JSON line (Istio's field names) on
//! stdout and none for the 200 before it; at 100% sampling Envoy's spans of both calls reach
//! the OTLP collector (built on the published OpenTelemetry protos); `reviews`' sidecar labels
//! the calls with Envoy's workload from the endpoint metadata (Envoy sends no peer headers);
//! then the Telemetry turns the log off (a logger filtered by `false`), which Envoy ACKs.

mod common;
mod telemetry_support;
use telemetry_support::*;

use std::time::Duration;

use anyhow::{ensure, Result};
use common::{access_log, all_acked, curl, wait_for, wait_log, Mesh, HTTP_PORT, NS, READY_TIMEOUT};
use mesh_tests::harness::ServiceSpec;
use serde_json::Value;

/// Istio's Prometheus port (the shared scene's scrapes use it).
const STATS_PORT: u16 = 15090;
const REVIEWS: &str = common::REVIEWS_HOST;
const TELEMETRY: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: envoy-client, namespace: default}\nspec:\n  selector: {matchLabels: {app: client-envoy}}\n  accessLogging:\n  - filter: {expression: \"response.code >= 400\"}\n  tracing:\n  - providers: [{name: otel}]\n    randomSamplingPercentage: 100\n";

#[test]
fn envoy_applies_a_telemetry_resources_access_log_filter_and_tracing() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("e2e_envoy_telemetry")?;
    let (_rt, otlp, collector) = start_collector(&mesh)?;
    collector_as_provider(&mesh, otlp)?;
    mesh.topo.write_config("telemetry.yaml", TELEMETRY)?;
    // Envoy's pod is a Service's endpoint: `reviews`' sidecar, which gets no peer metadata
    // headers from Envoy, labels the caller from the endpoint metadata of its address.
    mesh.topo.add_service(
        &ServiceSpec::new("client-envoy", NS)
            .port("http", HTTP_PORT, HTTP_PORT)
            .selector("app", "client-envoy"),
    )?;
    mesh.topo.start_control_plane()?;
    let reviews = mesh.reviews_pod("v1")?;
    let envoy = mesh
        .topo
        .envoy_pod("client-envoy", NS, &[("app", "client-envoy")])?;
    mesh.check(|| {
        mesh.topo.wait_ready(READY_TIMEOUT)?;
        let want = format!("{}:{HTTP_PORT}", reviews.ip());
        let cluster = format!("outbound|{HTTP_PORT}||{REVIEWS}::{want}::cx_active");
        wait_for("Envoy to hold reviews' endpoint", READY_TIMEOUT, || {
            Ok(envoy.admin("/clusters")?.contains(&cluster))
        })?;
        wait_for("every proxy to ACK every type", READY_TIMEOUT, || {
            all_acked(&mesh.cp, 2)
        })?;
        // What Envoy holds is the Telemetry's: the file logger with its CEL filter on the
        // outbound listeners, the OpenTelemetry tracer at 100%.
        // (Re-serialized: Envoy's JSON escapes `>`.)
        let dump: Value =
            serde_json::from_str(&envoy.admin("/config_dump?resource=dynamic_listeners")?)?;
        let dump = dump.to_string();
        for needle in [
            "envoy.access_loggers.file",
            "response.code >= 400",
            "envoy.tracers.opentelemetry",
            &format!(
                "outbound|{}||{COLLECTOR}.{ROOT}.svc.cluster.local",
                otlp.port()
            ),
        ] {
            ensure!(dump.contains(needle), "Envoy's listeners lack {needle:?}");
        }

        let url = |p: &str| format!("http://reviews:{HTTP_PORT}{p}");
        let ok = curl(&envoy, &[&url("/envoy-telemetry/ok")])?;
        ensure!(ok.status == 200, "{ok:?}");
        let bad = curl(
            &envoy,
            &["-H", "x-echo-status: 404", &url("/envoy-telemetry/bad")],
        )?;
        ensure!(bad.status == 404, "{bad:?}");
        let line = wait_log(&envoy, "Envoy's line for the 404", |e| {
            e["path"] == "/envoy-telemetry/bad"
        })?;
        for (field, want) in [
            ("method", Value::from("GET")),
            ("response_code", Value::from(404)),
            ("protocol", Value::from("HTTP/1.1")),
            ("authority", Value::from(format!("reviews:{HTTP_PORT}"))),
            (
                "upstream_cluster",
                Value::from(format!("outbound|{HTTP_PORT}||{REVIEWS}")),
            ),
            (
                "upstream_host",
                Value::from(format!("{}:{HTTP_PORT}", reviews.ip())),
            ),
        ] {
            ensure!(
                line[field] == want,
                "{field} is {}, want {want}: {line}",
                line[field]
            );
        }
        // Envoy writes its lines in order: the 200 before the 404 was filtered out.
        let ok_lines: Vec<Value> = access_log(&envoy)
            .into_iter()
            .filter(|e| e["path"] == "/envoy-telemetry/ok")
            .collect();
        ensure!(ok_lines.is_empty(), "Envoy logged the 200: {ok_lines:?}");

        // At `reviews`' sidecar the caller is Envoy's workload, known from the endpoint
        // metadata (Envoy sends no peer metadata headers), its principal from mutual TLS.
        // (Recorded when `reviews`' sidecar finishes the request, which may be a moment
        // after Envoy has its answer.)
        let from_404 = [("reporter", "destination"), ("response_code", "404")];
        wait_for(
            "reviews' metric of the 404",
            Duration::from_secs(10),
            || Ok(sample(&scrape(&reviews)?, "istio_requests_total", &from_404).is_ok()),
        )?;
        let sv = scrape(&reviews)?;
        let from_envoy = sample(&sv, "istio_requests_total", &from_404)?;
        labels(
            from_envoy,
            &[
                ("source_workload", "client-envoy"),
                ("source_workload_namespace", NS),
                ("source_app", "client-envoy"),
                ("source_version", "unknown"),
                ("source_canonical_service", "client-envoy"),
                ("source_canonical_revision", "latest"),
                ("source_cluster", "Kubernetes"),
                ("destination_workload", "reviews-v1"),
                ("destination_app", "reviews"),
                ("connection_security_policy", "mutual_tls"),
                (
                    "source_principal",
                    "spiffe://cluster.local/ns/default/sa/default",
                ),
            ],
        )?;

        // Both calls traced (100%), exported by Envoy to the provider's collector.
        wait_for(
            "Envoy's spans at the collector",
            Duration::from_secs(20),
            || {
                let urls: Vec<String> = collector
                    .spans()
                    .iter()
                    .filter_map(|(_, s)| attr(s, "http.url"))
                    .collect();
                Ok(["/envoy-telemetry/ok", "/envoy-telemetry/bad"]
                    .iter()
                    .all(|p| urls.iter().any(|u| u.ends_with(p))))
            },
        )?;

        // Logging turned off for the workload: the control plane sends a logger whose CEL
        // filter is `false`, which Envoy takes too (ACK, no NACK).
        mesh.topo.write_config(
            "telemetry.yaml",
            &TELEMETRY.replace(
                "  - filter: {expression: \"response.code >= 400\"}\n",
                "  - disabled: true\n",
            ),
        )?;
        wait_for("Envoy to hold the disabled log", READY_TIMEOUT, || {
            let dump: Value =
                serde_json::from_str(&envoy.admin("/config_dump?resource=dynamic_listeners")?)?;
            let dump = dump.to_string();
            Ok(!dump.contains("response.code >= 400") && dump.contains("\"expression\":\"false\""))
        })?;
        wait_for("every proxy to ACK every type", READY_TIMEOUT, || {
            all_acked(&mesh.cp, 2)
        })
    })
}

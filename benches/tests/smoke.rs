//! The bench's own test: `mesh-bench --smoke` runs every path and peer for a second or two
//! and must write sane results (every path present, no errors, positive numbers) and the
//! charts, so that the harness cannot rot between real runs. Needs root (network namespaces);
//! peers that are not installed are skipped by the bench and must be listed as skipped.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const TRAFFIC_PATHS: [&str; 5] = ["S1", "S2", "S3", "S4", "S6"];

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn check_peer(path: &str, p: &Value) {
    let peer = p["peer"].as_str().unwrap_or("?");
    let what = format!("{path}/{peer}");
    assert!(
        ["true", "false", "false (pending)"].contains(&p["mtls"].as_str().unwrap_or("")),
        "{what}: mtls label {}",
        p["mtls"]
    );
    let runs = p["runs"].as_array().expect("runs");
    assert!(!runs.is_empty(), "{what}: no run");
    for r in runs {
        assert!(
            r["requests"].as_u64().unwrap_or(0) > 0,
            "{what}: no request: {r}"
        );
        assert_eq!(
            r["errors"].as_u64(),
            Some(0),
            "{what}: errors: {}",
            r["error_kinds"]
        );
        assert!(num(&r["latency_us"]["p50"]) > 0.0, "{what}: p50 {r}");
        assert!(
            num(&r["latency_us"]["p999"]) >= num(&r["latency_us"]["p50"]),
            "{what}: percentiles {r}"
        );
        if !r["max"].is_null() {
            assert!(num(&r["max"]["rps"]) > 0.0, "{what}: max rps {r}");
            assert_eq!(
                r["max"]["errors"].as_u64(),
                Some(0),
                "{what}: max-throughput errors {r}"
            );
        }
        if peer != "direct" {
            assert!(num(&r["cpu_ms_per_1k"]) > 0.0, "{what}: CPU {r}");
            assert!(num(&r["peak_rss_mb"]) > 0.0, "{what}: peak RSS {r}");
            assert!(!r["added_us"].is_null(), "{what}: no added latency {r}");
        }
    }
    if peer != "direct" {
        assert!(num(&p["idle_rss_mb"]) > 0.0, "{what}: idle RSS {p}");
    }
}

fn check_results(out: &Path) {
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let r: Value = serde_json::from_str(&text).expect("results.json is JSON");
    assert_eq!(r["smoke"], true);
    let skipped: Vec<&str> = r["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .filter_map(|s| s["peer"].as_str())
        .collect();
    let paths = r["paths"].as_array().expect("paths");
    let ids: Vec<&str> = paths.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, ["S0", "S1", "S2", "S3", "S4", "S6"]);
    for path in paths {
        let id = path["id"].as_str().unwrap_or("?");
        let peers: Vec<&str> = path["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .filter_map(|p| p["peer"].as_str())
            .collect();
        assert_eq!(peers.first(), Some(&"direct"), "{id}: {peers:?}");
        let expected: &[&str] = match id {
            "S0" => &[],
            "S3" | "S4" => &["mesh-proxy", "envoy", "pingora"],
            _ => &["mesh-proxy", "envoy", "nginx", "haproxy", "pingora"],
        };
        for e in expected {
            assert!(
                peers.contains(e) || skipped.contains(e),
                "{id}: {e} neither ran nor was skipped ({peers:?}, skipped {skipped:?})"
            );
        }
        for p in path["peers"].as_array().expect("peers") {
            check_peer(id, p);
            // The sidecar pairs talk mutual TLS (Envoy with its agent's SDS certificate).
            if ["S2", "S3", "S4", "S6"].contains(&id)
                && ["mesh-proxy", "envoy"].contains(&p["peer"].as_str().unwrap_or(""))
            {
                assert_eq!(p["mtls"], "true", "{id}/{}: not mutual TLS", p["peer"]);
            }
        }
    }
    let points = r["scale"]["points"].as_array().expect("S5 points");
    assert!(
        points.iter().any(|p| p["peer"] == "mesh-proxy"),
        "S5: {points:?}"
    );
    for p in points {
        assert!(num(&p["first_sync_ms"]) > 0.0, "S5: {p}");
        assert!(num(&p["rss_mb"]) > 0.0, "S5: {p}");
        assert!(!p["update_ms"].is_null(), "S5: no update time {p}");
    }
    for id in TRAFFIC_PATHS {
        for chart in [format!("latency-{id}.svg"), format!("resources-{id}.svg")] {
            let svg = std::fs::read_to_string(out.join(&chart)).unwrap_or_default();
            assert!(svg.contains("<svg"), "{chart} missing or not SVG");
        }
    }
    let table = std::fs::read_to_string(out.join("results.txt")).expect("results.txt");
    assert!(
        table.contains("SMOKE RUN") && table.contains("S2 "),
        "{table}"
    );
}

#[test]
fn smoke_run_writes_sane_results_and_charts() {
    mesh_tests::skip_unless_netns!();
    let out = tempfile::tempdir().expect("temp dir");
    let started = std::time::Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .args(["--smoke", "--out"])
        .arg(out.path())
        .output()
        .expect("run mesh-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "mesh-bench --smoke failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    println!("{stdout}");
    eprintln!("mesh-bench --smoke took {:?}", started.elapsed());
    assert!(stdout.contains("Targets"), "no table on stdout:\n{stdout}");
    check_results(out.path());
}

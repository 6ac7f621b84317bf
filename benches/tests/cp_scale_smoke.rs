//! `mesh-bench cp-scale --smoke`: the control-plane scale benchmark at a tiny scale (the real
//! `mesh-controlplane` on loopback, a few simulated ADS clients), so that it cannot rot between
//! real runs. Needs no root; `cargo build --workspace --bins` first (for `mesh-controlplane`).

use std::process::Command;

use serde_json::Value;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn check_change(what: &str, c: &Value) {
    for key in ["change_to_all_acked_ms", "push_ms", "per_proxy_ms"] {
        let p = &c[key];
        assert!(p["n"].as_u64() > Some(0), "{what}.{key}: {p}");
        assert!(
            num(&p["p50"]) >= 0.0 && num(&p["p99"]) >= num(&p["p50"]),
            "{what}.{key}: {p}"
        );
    }
    // The file write comes before the debounce, which comes before the push.
    assert!(
        num(&c["change_to_all_acked_ms"]["p50"]) >= num(&c["push_ms"]["p50"]),
        "{what}: {c}"
    );
    assert!(num(&c["debounce_ms"]) > 0.0, "{what}: no debounce {c}");
    assert!(
        num(&c["bytes_per_proxy"]) > 0.0,
        "{what}: nothing pushed {c}"
    );
}

#[test]
fn cp_scale_smoke_run_writes_sane_results() {
    let out = tempfile::tempdir().expect("tempdir");
    let run = Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .args(["cp-scale", "--smoke", "--out"])
        .arg(out.path())
        .output()
        .expect("mesh-bench runs");
    assert!(
        run.status.success(),
        "mesh-bench cp-scale --smoke failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(out.path().join("cp-scale.json")).expect("cp-scale.json");
    let r: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(r["smoke"], true);
    assert_eq!(r["proxies"], 4);
    let passes = r["passes"].as_array().expect("passes");
    assert_eq!(passes.len(), 2, "{r}");
    let plain = &passes[0];
    assert_eq!(plain["scoped"], false);
    // 20 services: one outbound cluster each at least.
    assert!(num(&plain["clusters_per_proxy"]) >= 20.0, "{plain}");
    assert!(num(&plain["first_sync_bytes_per_proxy"]) > 0.0, "{plain}");
    assert!(num(&plain["cp_rss_mb"]) > 0.0, "{plain}");
    check_change("full_push", &plain["full_push"]);
    check_change("endpoint_change", &plain["endpoint_change"]);
    // A moved endpoint reaches the proxies as EDS alone.
    assert_eq!(plain["endpoint_change"]["eds_only"], true, "{plain}");
    assert_eq!(plain["full_push"]["eds_only"], false, "{plain}");
    let table = std::fs::read_to_string(out.path().join("cp-scale.txt")).expect("cp-scale.txt");
    assert!(
        table.contains("SMOKE RUN") && table.contains("endpoint-only change"),
        "{table}"
    );
}

//! The control plane's own metrics read from its monitoring port's `/metrics`, as Prometheus
//! scrapes them: `pilot_total_rejected_configs` for invalid config objects (a counter, as in
//! istiod: counted on every load that rejects the object, never decreased, no longer counted
//! once the object is fixed), and the `pilot_xds_push_time` and
//! `pilot_proxy_convergence_time` histograms after pushes.

mod common;

use std::time::Duration;

use common::*;
use controlplane::app::ControlPlane;

const DB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\n\
                  spec:\n  clusterIP: 10.96.0.60\n  ports: [{name: tcp, port: 5432}]\n";
const DETAILS: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n\
                       spec:\n  clusterIP: 10.96.0.50\n  ports: [{name: http, port: 9080}]\n";

/// Polls `/metrics` until `check` holds; returns that page.
async fn wait_metrics(cp: &ControlPlane, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = metrics(cp).await;
        if check(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never held:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rejected(text: &str, kind: &str, name: &str) -> f64 {
    metric(
        text,
        "pilot_total_rejected_configs",
        &[("type", kind), ("name", name)],
    )
}

fn services(text: &str, event: &str) -> f64 {
    metric(
        text,
        "pilot_k8s_cfg_events",
        &[("type", "Service"), ("event", event)],
    )
}

#[tokio::test]
async fn an_invalid_object_counts_in_pilot_total_rejected_configs_until_fixed() {
    let dir = config_dir();
    let db = dir.path().join("db.yaml");
    std::fs::write(&db, DB.replace("5432", "0")).unwrap();
    let cp = start(dir.path()).await;

    // Rejected at the first load, with the object's kind and namespace/name.
    let text = wait_metrics(&cp, "db rejected at start", |t| {
        rejected(t, "Service", "default/db") >= 1.0
    })
    .await;
    assert_eq!(rejected(&text, "Service", "default/db"), 1.0);
    assert!(text.contains("# TYPE pilot_total_rejected_configs counter"));
    assert_eq!(
        metric(&text, "pilot_total_rejected_configs", &[]),
        1.0,
        "only the invalid object: {text}"
    );

    // Another load while it is still invalid counts it again (istiod counts per push
    // context); the valid object beside it is not counted.
    std::fs::write(dir.path().join("details.yaml"), DETAILS).unwrap();
    let text = wait_metrics(&cp, "details added and db rejected again", |t| {
        services(t, "add") == 1.0 && rejected(t, "Service", "default/db") == 2.0
    })
    .await;
    assert_eq!(rejected(&text, "Service", "default/db"), 2.0);
    assert_eq!(rejected(&text, "Service", "default/details"), 0.0);

    // A file that is not YAML: counted under the file's path.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: [unclosed\n").unwrap();
    let path = broken.display().to_string();
    let text = wait_metrics(&cp, "broken.yaml rejected", |t| {
        rejected(t, "file", &path) >= 1.0
    })
    .await;
    assert_eq!(rejected(&text, "file", &path), 1.0, "{text}");
    assert_eq!(rejected(&text, "Service", "default/db"), 3.0);
    std::fs::remove_file(&broken).unwrap();
    wait_metrics(&cp, "broken.yaml removed", |t| {
        rejected(t, "Service", "default/db") == 4.0
    })
    .await;

    // Fixed: the counter keeps its value (it never goes down) and stops growing, across
    // this load and the next ones.
    std::fs::write(&db, DB).unwrap();
    let text = wait_metrics(&cp, "db accepted", |t| services(t, "add") == 2.0).await;
    let total = metric(&text, "pilot_total_rejected_configs", &[]);
    assert_eq!(rejected(&text, "Service", "default/db"), 4.0, "{text}");
    assert_eq!(rejected(&text, "file", &path), 1.0);
    std::fs::remove_file(dir.path().join("details.yaml")).unwrap();
    let text = wait_metrics(&cp, "details deleted", |t| services(t, "delete") == 1.0).await;
    assert_eq!(rejected(&text, "Service", "default/db"), 4.0, "{text}");
    assert_eq!(metric(&text, "pilot_total_rejected_configs", &[]), total);
    cp.shutdown().await;
}

#[tokio::test]
async fn push_time_and_convergence_time_histograms_grow_with_pushes() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut p = Proxy::synced_client(&cp).await;
    let before = metrics(&cp).await;
    for name in ["pilot_xds_push_time", "pilot_proxy_convergence_time"] {
        assert!(
            before.contains(&format!("# TYPE {name} histogram")),
            "{name}: {before}"
        );
    }
    // The initial responses were timed: one observation per response sent.
    for t in ["cds", "eds", "lds", "rds"] {
        let count = metric(&before, "pilot_xds_push_time_count", &[("type", t)]);
        assert!(count >= 1.0, "{t}: {before}");
        assert_eq!(
            count,
            metric(&before, "pilot_xds_pushes", &[("type", t)]),
            "{t}"
        );
    }

    // One change that concerns every type: a cluster and a listener (db), a virtual host
    // (details), endpoints of a subscribed cluster (ratings).
    let endpoints = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: ratings, namespace: default}\n\
                     subsets:\n- addresses: [{ip: 10.1.0.30}]\n  ports: [{name: http, port: 9080}]\n";
    std::fs::write(
        dir.path().join("change.yaml"),
        format!("{DB}---\n{DETAILS}---\n{endpoints}"),
    )
    .unwrap();
    let mut types = Vec::new();
    for _ in 0..4 {
        let r = p.recv().await;
        let names: &[&str] = match r.type_url.as_str() {
            EDS => &[REVIEWS, RATINGS],
            RDS => &["9080"],
            _ => &[],
        };
        p.ack(&r, names).await;
        types.push(r.type_url);
    }
    assert_eq!(types, [CDS, EDS, LDS, RDS]);
    p.expect_silence(Duration::from_millis(300)).await;

    let after = metrics(&cp).await;
    let grew = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    let mut build_time = 0.0;
    for t in ["cds", "eds", "lds", "rds"] {
        let label = [("type", t)];
        assert_eq!(
            grew("pilot_xds_push_time_count", &label),
            1.0,
            "{t}: {after}"
        );
        assert_eq!(
            grew("pilot_xds_push_time_bucket", &[("type", t), ("le", "+Inf")]),
            1.0,
            "{t}"
        );
        build_time += grew("pilot_xds_push_time_sum", &label);
    }
    assert!(build_time > 0.0, "push times are measured: {after}");
    // One push reached the proxy, timed from the file change: at least the debounce's quiet
    // time (20 ms in the tests' options), well under the 5 s the test waits at most.
    assert_eq!(
        grew("pilot_proxy_convergence_time_count", &[]),
        1.0,
        "{after}"
    );
    assert_eq!(
        grew("pilot_proxy_convergence_time_bucket", &[("le", "+Inf")]),
        1.0
    );
    let converged = grew("pilot_proxy_convergence_time_sum", &[]);
    assert!(
        (0.02..WAIT.as_secs_f64()).contains(&converged),
        "convergence {converged} s"
    );
    cp.shutdown().await;
}

//! Pushes over real sockets: endpoint-only changes reach only the proxies that subscribe to
//! them, as EDS alone; a proxy joining pushes EDS alone to the others; a NACK shows in syncz,
//! in `meshctl proxy-status` and in the metrics; a flood of file writes coalesces into a few
//! pushes (read from `/metrics`); an AuthorizationPolicy added, changed, put in dry-run or
//! removed pushes LDS alone, to the proxies whose RBAC filters it changes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use controlplane::app::{ControlPlane, Options};
use controlplane::watch::Debounce;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use prost::Message;

const CLIENT: &[(&str, &str)] = &[("app", "client")];

const ENDPOINTS: &str = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: reviews, namespace: default}\n\
                         subsets:\n- addresses: [{ip: 10.1.0.20}, {ip: 10.1.0.21}]\n  ports: [{name: http, port: 9080}]\n";

#[tokio::test]
async fn endpoint_changes_reach_only_subscribers_as_eds_alone() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut a = Proxy::connect(cp.xds_addr, node("a", "10.1.0.50", CLIENT)).await;
    a.sync(&[REVIEWS, RATINGS], &["9080"]).await;
    let mut b = Proxy::connect(cp.xds_addr, node("b", "10.1.0.51", CLIENT)).await;
    b.sync(&[RATINGS], &["9080"]).await;
    let before = metrics(&cp).await;

    std::fs::write(dir.path().join("reviews-endpoints.yaml"), ENDPOINTS).unwrap();
    let eds = a.recv().await;
    assert_eq!(eds.type_url, EDS);
    assert_eq!(eds.resources.len(), 1, "only the changed load assignment");
    assert_eq!(
        endpoints(&eds, REVIEWS),
        ["10.1.0.20:9080", "10.1.0.21:9080"]
    );
    a.ack(&eds, &[REVIEWS, RATINGS]).await;
    a.expect_silence(Duration::from_millis(300)).await;
    b.expect_silence(Duration::from_millis(10)).await;

    let after = metrics(&cp).await;
    for t in ["cds", "lds", "rds"] {
        assert_eq!(
            metric(&after, "pilot_xds_pushes", &[("type", t)]),
            metric(&before, "pilot_xds_pushes", &[("type", t)]),
            "{t}"
        );
    }
    assert_eq!(
        metric(&after, "pilot_xds_pushes", &[("type", "eds")]),
        metric(&before, "pilot_xds_pushes", &[("type", "eds")]) + 1.0
    );
    assert!(metric(&after, "pilot_push_triggers", &[("type", "endpoint")]) >= 1.0);
    assert!(metric(&after, "pilot_inbound_updates", &[("type", "eds")]) >= 1.0);
    assert!(metric(&after, "pilot_proxy_convergence_time_count", &[]) >= 1.0);
    assert_eq!(
        metric(
            &after,
            "pilot_k8s_cfg_events",
            &[("type", "Endpoints"), ("event", "update")]
        ),
        1.0
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn a_proxy_joining_pushes_eds_alone_to_the_others() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut a = Proxy::connect(cp.xds_addr, node("a", "10.1.0.50", CLIENT)).await;
    a.sync(&[REVIEWS, RATINGS], &["9080"]).await;

    let mut joining = Proxy::connect(
        cp.xds_addr,
        node("ratings-1", "10.1.0.30", &[("app", "ratings")]),
    )
    .await;
    joining.send(CDS, &[], "", "", None).await;
    joining.recv().await;

    let eds = a.recv().await;
    assert_eq!(eds.type_url, EDS);
    assert_eq!(eds.resources.len(), 1);
    assert_eq!(endpoints(&eds, RATINGS), ["10.1.0.30:9080"]);
    a.ack(&eds, &[REVIEWS, RATINGS]).await;
    a.expect_silence(Duration::from_millis(200)).await;

    // And leaving: EDS alone again, without it.
    drop(joining);
    let eds = a.recv().await;
    assert_eq!(eds.type_url, EDS);
    assert!(endpoints(&eds, RATINGS).is_empty());
    cp.shutdown().await;
}

#[tokio::test]
async fn a_nack_shows_in_syncz_proxy_status_and_metrics() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    let mut p = Proxy::connect(cp.xds_addr, node("reviews-1", "10.1.0.20", CLIENT)).await;
    let [_, _, lds, _] = p.sync(&[REVIEWS], &["9080"]).await;
    // A new listener, rejected.
    let tcp = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\n\
               spec:\n  clusterIP: 10.96.0.60\n  ports: [{name: tcp, port: 5432}]\n";
    std::fs::write(dir.path().join("db.yaml"), tcp).unwrap();
    let cds = p.recv().await;
    p.ack(&cds, &[]).await;
    let lds2 = p.recv().await;
    assert_eq!(lds2.type_url, LDS);
    let message = "listener \"10.96.0.60_5432\": filter_chains[0]: unsupported filter \"x\"";
    p.send(LDS, &[], &lds.version_info, &lds2.nonce, Some(message))
        .await;

    let entry = wait_syncz(&cp, "reviews-1", |e| {
        !e["types"]["lds"]["last_nack"].is_null()
    })
    .await;
    assert_eq!(entry["types"]["lds"]["last_nack"], message);
    assert_eq!(entry["types"]["lds"]["nacked_nonce"], lds2.nonce.as_str());
    assert_eq!(entry["types"]["lds"]["acked_nonce"], lds.nonce.as_str());
    assert_eq!(entry["types"]["lds"]["sent_nonce"], lds2.nonce.as_str());

    let text = metrics(&cp).await;
    assert_eq!(
        metric(&text, "pilot_total_xds_rejects", &[("type", "lds")]),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "pilot_xds_lds_reject",
            &[
                (
                    "node",
                    "sidecar~10.1.0.20~reviews-1.default~default.svc.cluster.local"
                ),
                ("err", "InvalidArgument")
            ]
        ),
        1.0
    );
    assert_eq!(metric(&text, "pilot_xds", &[]), 1.0);
    assert_eq!(metric(&text, "pilot_services", &[]), 3.0);
    assert!(metric(&text, "mesh_xds_ack_time_count", &[("type", "lds")]) >= 2.0);
    assert!(
        metric(
            &text,
            "pilot_xds_config_size_bytes_count",
            &[("type", "cds")]
        ) >= 2.0
    );

    // meshctl proxy-status, as an operator runs it.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["proxy-status", "--cp-addr", &cp.debug_addr.to_string()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with("reviews-1.default "))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row
        .split("     ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells[1], "SYNCED", "CDS: {table}");
    assert!(
        cells[2].starts_with("STALE (NACK: listener"),
        "LDS: {table}"
    );
    assert_eq!(&cells[3..6], ["SYNCED", "SYNCED", "NOT SENT"], "{table}");
    assert!(
        table.contains(&format!("reviews-1.default LDS: {message}")),
        "{table}"
    );
    let json = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["proxy-status", "-o", "json", "reviews-1"])
        .env("MESH_CP_ADDR", cp.debug_addr.to_string())
        .output()
        .await
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows[0]["types"]["lds"]["status"], "STALE");
    assert_eq!(rows[0]["types"]["lds"]["nack"], message);

    // The next ACK of LDS clears it.
    std::fs::remove_file(dir.path().join("db.yaml")).unwrap();
    loop {
        let r = p.recv().await;
        let names = if r.type_url == RDS {
            vec!["9080"]
        } else {
            vec![]
        };
        let eds_names = [REVIEWS];
        p.ack(
            &r,
            if r.type_url == EDS {
                &eds_names[..]
            } else {
                &names[..]
            },
        )
        .await;
        if r.type_url == LDS {
            break;
        }
    }
    wait_syncz(&cp, "reviews-1", |e| {
        e["types"]["lds"]["last_nack"].is_null()
    })
    .await;
    drop(p);
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&metrics(&cp).await, "pilot_xds", &[]) != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pilot_xds never went back to 0"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cp.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_file_writes_coalesces_into_a_few_pushes() {
    let dir = config_dir();
    // istiod's debounce: 100 ms quiet, 10 s at most.
    let cp = ControlPlane::start(Options {
        debounce: Debounce::default(),
        ..options(dir.path())
    })
    .await
    .unwrap();
    let mut p = Proxy::connect(cp.xds_addr, node("a", "10.1.0.50", CLIENT)).await;
    p.sync(&[REVIEWS], &["9080"]).await;
    let before = metrics(&cp).await;

    // 200 writes within about a second: 200 new Services.
    let started = tokio::time::Instant::now();
    for i in 0..200 {
        let svc = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: flood-{i}, namespace: default}}\n\
             spec:\n  clusterIP: 10.97.{}.{}\n  ports: [{{name: http, port: 9080}}]\n",
            i / 250,
            i % 250 + 1
        );
        std::fs::write(dir.path().join(format!("flood-{i}.yaml")), svc).unwrap();
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let written = started.elapsed();
    // Every push is taken and ACKed until the proxy has all 200 and nothing more comes.
    let mut cds_pushes = 0;
    let mut last_cds_floods = 0;
    loop {
        let r = match tokio::time::timeout(Duration::from_millis(500), p.message()).await {
            Ok(r) => r.unwrap().unwrap(),
            Err(_) if last_cds_floods == 200 => break,
            Err(_) => panic!("no push in time; the proxy has {last_cds_floods} of 200"),
        };
        if r.type_url == CDS {
            cds_pushes += 1;
            last_cds_floods = names::<Cluster>(&r, |c| c.name.clone())
                .iter()
                .filter(|c| c.contains("flood-"))
                .count();
        }
        let names: &[&str] = match r.type_url.as_str() {
            RDS => &["9080"],
            EDS => &[REVIEWS],
            _ => &[],
        };
        p.ack(&r, names).await;
    }
    let after = metrics(&cp).await;
    let pushes = metric(&after, "pilot_xds_pushes", &[("type", "cds")])
        - metric(&before, "pilot_xds_pushes", &[("type", "cds")]);
    let triggers = metric(&after, "pilot_push_triggers", &[("type", "config")])
        - metric(&before, "pilot_push_triggers", &[("type", "config")]);
    let debounced = metric(&after, "pilot_debounce_time_count", &[])
        - metric(&before, "pilot_debounce_time_count", &[]);
    eprintln!(
        "200 writes in {written:?}: {pushes} CDS pushes, {triggers} config triggers, {debounced} debounced bursts"
    );
    assert_eq!(pushes, f64::from(cds_pushes));
    assert!(
        (1.0..=5.0).contains(&pushes),
        "{pushes} CDS pushes for 200 writes in {written:?}"
    );
    assert!((1.0..=5.0).contains(&triggers), "{triggers}");
    assert_eq!(
        metric(
            &after,
            "pilot_k8s_cfg_events",
            &[("type", "Service"), ("event", "add")]
        ),
        200.0
    );
    cp.shutdown().await;
}

/// The HTTP RBAC policies of the proxy's `virtualInbound` listener, over all its chains:
/// name (`shadow:` first for dry-run rules) to the policy's debug form.
fn inbound_rbac(lds: &DiscoveryResponse) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let inbound = lds
        .resources
        .iter()
        .map(|a| Listener::decode(a.value.as_slice()).unwrap())
        .find(|l| l.name == "virtualInbound")
        .expect("virtualInbound");
    for chain in &inbound.filter_chains {
        for f in &chain.filters {
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                continue;
            };
            let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                continue;
            };
            for hf in hcm
                .http_filters
                .iter()
                .filter(|h| h.name == "envoy.filters.http.rbac")
            {
                let Some(http_filter::ConfigType::TypedConfig(any)) = &hf.config_type else {
                    continue;
                };
                let rbac = HttpRbac::decode(any.value.as_slice()).unwrap();
                for (prefix, rules) in [("", &rbac.rules), ("shadow:", &rbac.shadow_rules)] {
                    for (name, policy) in rules.iter().flat_map(|r| &r.policies) {
                        out.insert(format!("{prefix}{name}"), format!("{policy:?}"));
                    }
                }
            }
        }
    }
    out
}

/// The next response, which must be LDS; ACKed.
async fn lds_push(p: &mut Proxy) -> BTreeMap<String, String> {
    let r = p.recv().await;
    assert_eq!(
        r.type_url, LDS,
        "an AuthorizationPolicy change pushes LDS alone"
    );
    p.ack(&r, &[]).await;
    inbound_rbac(&r)
}

fn policy(ns: &str, name: &str, annotations: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: {ns}{annotations}}}\nspec: {spec}\n"
    )
}

#[tokio::test]
async fn authorization_policy_changes_push_lds_to_the_affected_proxies() {
    let dir = config_dir();
    let cp = start(dir.path()).await;
    // ratings-1 is selected by the namespace's policy; client-1 is in the same namespace but
    // not selected; other-1 is in another namespace.
    let mut ratings = Proxy::connect(
        cp.xds_addr,
        node("ratings-1", "10.1.0.30", &[("app", "ratings")]),
    )
    .await;
    let [_, _, lds, _] = ratings.sync(&[REVIEWS], &["9080"]).await;
    assert!(inbound_rbac(&lds).is_empty());
    let mut client = Proxy::connect(cp.xds_addr, node("client-1", "10.1.0.50", CLIENT)).await;
    client.sync(&[REVIEWS], &["9080"]).await;
    let mut other = Proxy::connect(
        cp.xds_addr,
        node_in("other", "other-1", "10.1.0.60", CLIENT),
    )
    .await;
    other.sync(&[REVIEWS], &["9080"]).await;
    ratings.expect_silence(Duration::from_millis(200)).await;
    let before = metrics(&cp).await;

    const ALLOW_GET: &str =
        "{selector: {matchLabels: {app: ratings}}, rules: [{to: [{operation: {methods: [GET]}}]}]}";
    const RULE: &str = "ns[default]-policy[allow-get]-rule[0]";
    let file = dir.path().join("allow-get.yaml");

    // Added: the selected proxy gets it, alone.
    std::fs::write(&file, policy("default", "allow-get", "", ALLOW_GET)).unwrap();
    let added = lds_push(&mut ratings).await;
    assert_eq!(added.keys().collect::<Vec<_>>(), [RULE]);
    assert!(added[RULE].contains("GET") && !added[RULE].contains("HEAD"));
    client.expect_silence(Duration::from_millis(300)).await;
    other.expect_silence(Duration::from_millis(10)).await;

    // Changed.
    std::fs::write(
        &file,
        policy(
            "default",
            "allow-get",
            "",
            &ALLOW_GET.replace("[GET]", "[GET, HEAD]"),
        ),
    )
    .unwrap();
    let changed = lds_push(&mut ratings).await;
    assert_eq!(changed.keys().collect::<Vec<_>>(), [RULE]);
    assert!(changed[RULE].contains("HEAD"), "{changed:?}");

    // Put in dry-run: the same rule, as a shadow rule.
    std::fs::write(
        &file,
        policy(
            "default",
            "allow-get",
            ", annotations: {istio.io/dry-run: \"true\"}",
            ALLOW_GET,
        ),
    )
    .unwrap();
    let dry = lds_push(&mut ratings).await;
    assert_eq!(
        dry.keys().cloned().collect::<Vec<_>>(),
        [format!("shadow:{RULE}")]
    );

    // Mesh-wide from the root namespace: every proxy.
    let root = dir.path().join("root.yaml");
    std::fs::write(
        &root,
        policy(
            "istio-system",
            "deny-debug",
            "",
            "{action: DENY, rules: [{to: [{operation: {paths: [\"/debug/*\"]}}]}]}",
        ),
    )
    .unwrap();
    const ROOT_RULE: &str = "ns[istio-system]-policy[deny-debug]-rule[0]";
    for p in [&mut ratings, &mut client, &mut other] {
        assert!(lds_push(p).await.contains_key(ROOT_RULE));
    }

    // Removed: the namespace's policy leaves the selected proxy only; then the root one
    // leaves everybody.
    std::fs::remove_file(&file).unwrap();
    let removed = lds_push(&mut ratings).await;
    assert_eq!(removed.keys().collect::<Vec<_>>(), [ROOT_RULE]);
    client.expect_silence(Duration::from_millis(300)).await;
    other.expect_silence(Duration::from_millis(10)).await;
    std::fs::remove_file(&root).unwrap();
    for p in [&mut ratings, &mut client, &mut other] {
        assert!(lds_push(p).await.is_empty());
    }
    for p in [&mut ratings, &mut client, &mut other] {
        p.expect_silence(Duration::from_millis(100)).await;
    }

    let after = metrics(&cp).await;
    for t in ["cds", "eds", "rds"] {
        assert_eq!(
            metric(&after, "pilot_xds_pushes", &[("type", t)]),
            metric(&before, "pilot_xds_pushes", &[("type", t)]),
            "{t}: AuthorizationPolicy changes touch listeners only"
        );
    }
    assert_eq!(
        metric(&after, "pilot_xds_pushes", &[("type", "lds")])
            - metric(&before, "pilot_xds_pushes", &[("type", "lds")]),
        // ratings: add, change, dry-run, root, remove, remove root; client and other: root
        // added and removed.
        10.0
    );
    cp.shutdown().await;
}

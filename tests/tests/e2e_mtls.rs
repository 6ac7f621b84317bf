//! Identity and mutual TLS through captured sidecars: each sidecar's SPIFFE certificate from
//! the control plane's CA (bootstrap token, then renewals over mutual TLS), readiness that
//! waits for it, and rotation.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{config_dump, readiness, wait_for, Mesh, NS, READY_TIMEOUT};
use mesh_tests::harness::{create_token, ProxyOptions};
use serde_json::Value;

/// `identity` of a sidecar's `/config_dump`.
fn identity(pod: &mesh_tests::harness::Pod) -> Result<Value> {
    Ok(config_dump(pod)?["identity"].clone())
}

#[test]
fn each_sidecar_gets_its_spiffe_certificate_and_renews_it_over_mutual_tls() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("e2e_mtls_identity_rotation")?;
    mesh.topo.start_control_plane()?;
    let opts = ProxyOptions {
        service_account: "bookinfo-reviews".into(),
        extra_run_args: ["--cert-ttl", "2m", "--cert-renew-interval", "2s"]
            .map(String::from)
            .to_vec(),
        ..ProxyOptions::default()
    };
    let pod = mesh
        .topo
        .injected_pod_with("reviews-v1", NS, &[("app", "reviews")], &opts)?;
    mesh.check(|| {
        mesh.topo.wait_ready(READY_TIMEOUT)?;
        let id = identity(&pod)?;
        ensure!(
            id["spiffe_id"] == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
            "{id}"
        );
        ensure!(id["state"] == "VALID", "{id}");
        let first = id["certificate"]["serial"]
            .as_str()
            .context("no serial")?
            .to_owned();
        let root = std::fs::read_to_string(mesh.cp.ca_dir().join("root-cert.pem"))?;
        ensure!(id["trust_bundle"][0] == root.as_str(), "trust bundle {id}");
        ensure!(!config_dump(&pod)?.to_string().contains("PRIVATE KEY"));
        // Forced renewal every 2 s: new serials, each renewal proven by the current
        // certificate over mutual TLS on 15012 (the control plane says how).
        wait_for("two renewals", Duration::from_secs(20), || {
            let id = identity(&pod)?;
            Ok(id["certificate"]["generation"].as_u64() >= Some(3)
                && id["certificate"]["serial"] != first.as_str())
        })?;
        let cp_log = mesh.cp.process().context("control plane")?.stderr();
        ensure!(
            cp_log.contains(
                "identity=spiffe://cluster.local/ns/default/sa/bookinfo-reviews proof=Certificate"
            ),
            "no renewal by certificate in the control plane's log"
        );
        ensure!(readiness(&pod)? == 200);
        Ok(())
    })
}

#[test]
fn a_forged_token_gets_no_certificate_and_readiness_waits_for_one() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("e2e_mtls_forged_token")?;
    mesh.topo.start_control_plane()?;
    // The sidecar reads a token the harness does not manage.
    let pod = mesh.topo.pod("reviews-v1", NS, &[("app", "reviews")])?;
    let token_file = pod.work_dir().join("my-token");
    let good = create_token(&mesh.cp.ca_dir(), NS, "default")?;
    // The same claims with a signature of the right size but wrong bytes.
    let (head, sig) = good.rsplit_once('.').context("token")?;
    let forged = format!("{head}.{}", sig.chars().rev().collect::<String>());
    std::fs::write(&token_file, &forged)?;
    let opts = ProxyOptions {
        identity: false,
        extra_run_args: vec!["--token-file".into(), token_file.display().to_string()],
        ..ProxyOptions::default()
    };
    pod.inject(&opts)?;
    mesh.check(|| {
        wait_for("the refusal", Duration::from_secs(10), || {
            Ok(identity(&pod)?["renewal"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("bootstrap token refused")))
        })?;
        let id = identity(&pod)?;
        ensure!(id["state"] == "PENDING", "{id}");
        ensure!(config_dump(&pod)?["state"] == "INITIALIZING");
        ensure!(readiness(&pod)? == 503, "ready without a certificate");
        let cp_log = mesh.cp.process().context("control plane")?.stderr();
        ensure!(cp_log.contains("reason=\"bad_token\"") || cp_log.contains("reason=bad_token"));
        // A good token, written later, is picked up.
        std::fs::write(&token_file, &good)?;
        pod.wait_proxy_ready(Duration::from_secs(20))?;
        ensure!(identity(&pod)?["state"] == "VALID");
        Ok(())
    })
}

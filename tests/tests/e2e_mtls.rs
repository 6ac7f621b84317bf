//! Identity and mutual TLS through captured sidecars: each sidecar's SPIFFE certificate from
//! the control plane's CA (bootstrap token, then renewals over mutual TLS), readiness that
//! waits for it, and rotation; auto mTLS between sidecars, PeerAuthentication STRICT and
//! PERMISSIVE against a pod without a sidecar, client certificates from the mesh's CA and
//! from another CA, `x-forwarded-client-cert` as the app sees it, rotation under traffic.

mod common;

use std::time::Duration;

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use common::{
    certs, config_dump, curl, readiness, seen_header, stat, wait_for, wait_log, Mesh, Traffic,
    HTTP_PORT, NS, READY_TIMEOUT,
};
use mesh_tests::harness::{create_token, Pod, ProxyOptions};
use serde_json::Value;

/// The SPIFFE ID of the injected pods' default service account.
const DEFAULT_SA: &str = "spiffe://cluster.local/ns/default/sa/default";

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

/// A client certificate (and key) for the SPIFFE ID `uri` in `dir`, signed by the CA
/// `ca_cert`/`ca_key`; returns (certificate, key) paths.
fn client_cert(
    dir: &Path,
    name: &str,
    uri: &str,
    ca_cert: &Path,
    ca_key: &Path,
) -> Result<(String, String)> {
    let (cert, key) = certs::leaf(dir, name, &[&format!("URI:{uri}")], ca_cert, ca_key)?;
    Ok((cert.display().to_string(), key.display().to_string()))
}

/// `curl` in a pod without a sidecar straight to a pod's port; `Err` when curl fails.
fn direct(pod: &Pod, args: &[&str]) -> Result<common::Reply> {
    curl(pod, &[&["-sS", "--max-time", "5"], args].concat())
}

/// The echo body of a request from the client sidecar to `reviews`.
fn through_mesh(client: &Pod, headers: &[&str]) -> Result<Value> {
    let url = format!("http://reviews:{HTTP_PORT}/mtls");
    let mut args = vec!["-sS", "--max-time", "5"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(&url);
    let reply = curl(client, &args)?;
    ensure!(reply.status == 200, "{reply:?}");
    reply.json()
}

#[test]
fn sidecars_use_mutual_tls_and_the_app_sees_the_clients_spiffe_id() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("e2e_mtls_auto_xfcc", &["v1"])?;
    mesh.check(|| {
        // A client app's own x-forwarded-client-cert is never trusted.
        let echo = through_mesh(
            &client,
            &["x-forwarded-client-cert: By=evil;URI=spiffe://cluster.local/ns/default/sa/admin"],
        )?;
        let xfcc = seen_header(&echo, "x-forwarded-client-cert").context("no XFCC")?;
        ensure!(xfcc.contains(&format!("URI={DEFAULT_SA}")), "{xfcc}");
        ensure!(
            xfcc.starts_with(&format!("By={DEFAULT_SA};Hash=")),
            "{xfcc}"
        );
        ensure!(xfcc.contains("Subject=\"\""), "{xfcc}");
        ensure!(
            !xfcc.contains("admin") && !xfcc.contains("evil"),
            "forged XFCC kept: {xfcc}"
        );
        ensure!(!xfcc.contains(','), "one element only: {xfcc}");
        // The server's sidecar saw the client's certificate; the client's verified the server's.
        let inbound = wait_log(&servers[0], "the mTLS request", |e| {
            e["path"] == "/mtls" && e["downstream_peer_uri_san"] == DEFAULT_SA
        })?;
        ensure!(inbound["response_code"] == 200, "{inbound}");
        ensure!(stat(&client, "upstream_ssl.handshake")? >= 1);
        ensure!(stat(&servers[0], "ssl.handshake")? >= 1);
        Ok(())
    })
}

#[test]
fn strict_refuses_a_pod_without_a_sidecar_and_permissive_takes_both() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("e2e_mtls_modes", &["v1"])?;
    let plain = mesh.topo.pod("plain", NS, &[("app", "plain")])?;
    let server = format!("http://{}:{HTTP_PORT}/plain", servers[0].ip());
    mesh.check(|| {
        // PERMISSIVE (no policy): plaintext from the pod without a sidecar, mTLS from the
        // sidecar, on the same port.
        let reply = direct(&plain, &[&server])?;
        ensure!(reply.status == 200, "{reply:?}");
        let echo = reply.json()?;
        ensure!(
            seen_header(&echo, "x-forwarded-client-cert").is_none(),
            "{echo}"
        );
        through_mesh(&client, &[])?;

        mesh.topo.write_config(
            "peer-authentication.yaml",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n",
        )?;
        wait_for("STRICT applied", Duration::from_secs(20), || {
            Ok(direct(&plain, &[&server]).is_err())
        })?;
        // Refused before the app: the sidecar logs a connection that found no chain.
        wait_log(&servers[0], "the refused plaintext connection", |e| {
            e["response_flags"] == "NR"
                && e["downstream_remote_address"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("{}:", plain.ip())))
        })?;
        // Sidecars still talk (mTLS); a few tries, none failing.
        for _ in 0..5 {
            through_mesh(&client, &[])?;
        }
        // Back to PERMISSIVE with a workload policy: plaintext is accepted again.
        mesh.topo.write_config(
            "peer-authentication.yaml",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {name: reviews, namespace: default}\nspec:\n  \
             selector: {matchLabels: {app: reviews}}\n  mtls: {mode: PERMISSIVE}\n",
        )?;
        wait_for("PERMISSIVE applied", Duration::from_secs(20), || {
            Ok(direct(&plain, &[&server]).is_ok_and(|r| r.status == 200))
        })?;
        through_mesh(&client, &[])?;
        Ok(())
    })
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, _client, servers) = Mesh::standard("e2e_mtls_other_ca", &["v1"])?;
    let plain = mesh.topo.pod("plain", NS, &[("app", "plain")])?;
    let dir = plain.work_dir().to_path_buf();
    let url = format!("https://{}:{HTTP_PORT}/tls", servers[0].ip());
    mesh.check(|| {
        let spiffe = "spiffe://cluster.local/ns/default/sa/outsider";
        // Signed by the mesh's CA: accepted, and the app sees its SPIFFE ID.
        let ca = mesh.cp.ca_dir();
        // `-k`: the server's certificate names no IP; a small CA file keeps curl's TLS setup
        // (after connecting) well within the sidecar's detection timeout.
        let root = ca.join("root-cert.pem").display().to_string();
        let (cert, key) = client_cert(
            &dir,
            "mesh",
            spiffe,
            &ca.join("ca-cert.pem"),
            &ca.join("ca-key.pem"),
        )?;
        let reply = direct(
            &plain,
            &[
                "-k", "--cacert", &root, "--cert", &cert, "--key", &key, &url,
            ],
        )?;
        ensure!(reply.status == 200, "{reply:?}");
        let xfcc = seen_header(&reply.json()?, "x-forwarded-client-cert")
            .context("no XFCC")?
            .to_owned();
        ensure!(xfcc.contains(&format!("URI={spiffe}")), "{xfcc}");
        // The same identity signed by another CA: the handshake fails.
        let (other_cert, other_key) = certs::ca(&dir, "other-ca")?;
        let (cert, key) = client_cert(&dir, "other", spiffe, &other_cert, &other_key)?;
        if let Ok(reply) = direct(
            &plain,
            &[
                "-k", "--cacert", &root, "--cert", &cert, "--key", &key, &url,
            ],
        ) {
            bail!("a certificate from another CA got through: {reply:?}");
        }
        // No client certificate at all: refused too.
        ensure!(
            direct(&plain, &["-k", "--cacert", &root, &url]).is_err(),
            "no client certificate got through"
        );
        ensure!(stat(&servers[0], "ssl.connection_error")? >= 2);
        Ok(())
    })
}

#[test]
fn certificates_rotate_under_steady_traffic_without_a_failed_request() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("e2e_mtls_rotation_traffic")?;
    mesh.topo.start_control_plane()?;
    let opts = ProxyOptions {
        extra_run_args: ["--cert-ttl", "2m", "--cert-renew-interval", "2s"]
            .map(String::from)
            .to_vec(),
        ..ProxyOptions::default()
    };
    let server = mesh.topo.injected_pod_with(
        "reviews-v1",
        NS,
        &[("app", "reviews"), ("version", "v1")],
        &opts,
    )?;
    let echo = server.spawn_echo(&common::reviews_echo("v1"))?;
    echo.wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    let client = mesh
        .topo
        .injected_pod_with("client", NS, &[("app", "client")], &opts)?;
    mesh.check(|| {
        mesh.wait_converged(&client, std::slice::from_ref(&server))?;
        let generation = |pod: &Pod| -> Result<u64> {
            identity(pod)?["certificate"]["generation"]
                .as_u64()
                .context("generation")
        };
        let (c0, s0) = (generation(&client)?, generation(&server)?);
        let traffic = Traffic::start(&client, &format!("http://reviews:{HTTP_PORT}/rotate"), 20);
        wait_for(
            "three renewals on each side",
            Duration::from_secs(30),
            || Ok(generation(&client)? >= c0 + 3 && generation(&server)? >= s0 + 3),
        )?;
        let report = traffic.stop()?;
        ensure!(
            report.failures.is_empty(),
            "failed requests: {:?}",
            report.failures
        );
        ensure!(report.ok >= 50, "too little traffic: {}", report.ok);
        // It was mutual TLS all along.
        let inbound = wait_log(&server, "a rotated-through request", |e| {
            e["path"] == "/rotate"
        })?;
        ensure!(
            inbound["downstream_peer_uri_san"] == DEFAULT_SA,
            "{inbound}"
        );
        Ok(())
    })
}

//! Envoy sidecars with workload certificates, as Istio gives them: `mesh-proxy agent` in the
//! pod gets the certificate from the control plane's CA (bootstrap token, its own key) and
//! serves it to Envoy over SDS on a Unix socket (the bootstrap's `sds-grpc` cluster), and the
//! control plane's listeners and clusters name the secrets with that source. Under a STRICT
//! PeerAuthentication an Envoy client sidecar calls a `mesh-proxy` server sidecar, a
//! `mesh-proxy` client calls an Envoy server sidecar, and Envoy calls Envoy, all in mutual
//! TLS; each app sees Istio's `x-forwarded-client-cert` naming the calling sidecar's SPIFFE
//! ID, and a pod without a sidecar is refused by both kinds of server.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{curl, seen_header, wait_endpoints, wait_for, Mesh, HTTP_PORT, NS, READY_TIMEOUT};
use mesh_tests::harness::{EchoSpec, EnvoyOptions, Peer, Pod, ServiceSpec};

/// `ratings`' FQDN: the Service served by the Envoy-injected pod.
const RATINGS_HOST: &str = "ratings.default.svc.cluster.local";
/// `reviews`' FQDN: the Service served by the `mesh-proxy`-injected pod.
const REVIEWS_HOST: &str = "reviews.default.svc.cluster.local";
/// The identities: `mesh-proxy` pods run as `default`, the Envoy pods have their own.
const MESH_PROXY_SA: &str = "spiffe://cluster.local/ns/default/sa/default";
const ENVOY_CLIENT_SA: &str = "spiffe://cluster.local/ns/default/sa/envoy-client";
const ENVOY_SERVER_SA: &str = "spiffe://cluster.local/ns/default/sa/ratings";

const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
metadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n";

fn envoy_with(service_account: &str) -> EnvoyOptions {
    EnvoyOptions {
        service_account: service_account.to_owned(),
        ..EnvoyOptions::default()
    }
}

/// A counter from Envoy's admin `/stats`.
fn envoy_stat(pod: &Pod, name: &str) -> Result<u64> {
    let stats = pod.admin("/stats")?;
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .with_context(|| format!("no {name} in Envoy's stats"))?
        .trim()
        .parse()
        .context(name.to_owned())
}

/// The `x-forwarded-client-cert` the app behind `host` saw for a request from `client`.
fn xfcc_seen(client: &Pod, host: &str, path: &str) -> Result<String> {
    let url = format!("http://{host}:{HTTP_PORT}{path}");
    let reply = curl(client, &["-sS", "--max-time", "5", &url])?;
    ensure!(reply.status == 200, "{url}: {reply:?}");
    let echo = reply.json()?;
    seen_header(&echo, "x-forwarded-client-cert")
        .map(str::to_owned)
        .with_context(|| format!("{url}: the app saw no XFCC: {echo}"))
}

/// Istio's XFCC for one hop: `By=<server>;Hash=<hex>;Subject="";URI=<client>`.
fn check_xfcc(xfcc: &str, server: &str, client: &str) -> Result<()> {
    ensure!(
        xfcc.starts_with(&format!("By={server};Hash=")),
        "XFCC not by {server}: {xfcc}"
    );
    ensure!(xfcc.contains("Subject=\"\""), "{xfcc}");
    ensure!(
        xfcc.contains(&format!(";URI={client}")),
        "XFCC not naming {client}: {xfcc}"
    );
    ensure!(!xfcc.contains(','), "one element only: {xfcc}");
    Ok(())
}

#[test]
fn envoy_sidecars_get_workload_certificates_over_sds_and_talk_strict_mtls() -> Result<()> {
    mesh_tests::skip_unless_peer!(Peer::Envoy);
    let mesh = Mesh::new("e2e_envoy_mtls")?;
    mesh.topo.add_service(
        &ServiceSpec::new("ratings", NS)
            .port("http", HTTP_PORT, HTTP_PORT)
            .selector("app", "ratings"),
    )?;
    mesh.topo.write_config("peer-authentication.yaml", STRICT)?;
    mesh.topo.start_control_plane()?;
    let reviews = mesh.reviews_pod("v1")?;
    let ratings = mesh.topo.envoy_pod_with(
        "ratings-v1",
        NS,
        &[("app", "ratings"), ("version", "v1")],
        &envoy_with("ratings"),
    )?;
    ratings
        .spawn_echo(&EchoSpec::new("ratings", "v1").http(HTTP_PORT))?
        .wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    let client = mesh.client_pod()?;
    let envoy_client = mesh.topo.envoy_pod_with(
        "client-envoy",
        NS,
        &[("app", "client-envoy")],
        &envoy_with("envoy-client"),
    )?;
    let plain = mesh.topo.pod("plain", NS, &[("app", "plain")])?;
    mesh.check(|| {
        // Envoy is LIVE only once its listeners and clusters have their secrets: readiness
        // itself shows SDS worked.
        mesh.topo.wait_ready(READY_TIMEOUT)?;
        let reviews_ep = SocketAddr::from((reviews.ip(), HTTP_PORT)).to_string();
        let ratings_ep = SocketAddr::from((ratings.ip(), HTTP_PORT)).to_string();
        wait_endpoints(
            &client,
            &format!("outbound|{HTTP_PORT}||{RATINGS_HOST}"),
            std::slice::from_ref(&ratings_ep),
        )?;
        // Envoy's certificate is its own identity's, from the mesh's CA.
        let certs = envoy_client.admin("/certs")?;
        ensure!(certs.contains(ENVOY_CLIENT_SA), "Envoy's /certs: {certs}");
        ensure!(
            ratings.admin("/certs")?.contains(ENVOY_SERVER_SA),
            "Envoy server without its certificate"
        );

        // Envoy client -> mesh-proxy server (STRICT): the app sees the Envoy's identity.
        let xfcc = wait_for_xfcc(&envoy_client, "reviews", "/envoy-to-mesh-proxy")?;
        check_xfcc(&xfcc, MESH_PROXY_SA, ENVOY_CLIENT_SA)?;
        ensure!(
            envoy_stat(
                &envoy_client,
                &format!("cluster.outbound|{HTTP_PORT}||{REVIEWS_HOST}.ssl.handshake")
            )? >= 1,
            "Envoy made no TLS handshake to reviews"
        );
        // mesh-proxy client -> Envoy server: Envoy verified the mesh-proxy's certificate and
        // sets Istio's XFCC itself.
        let xfcc = wait_for_xfcc(&client, "ratings", "/mesh-proxy-to-envoy")?;
        check_xfcc(&xfcc, ENVOY_SERVER_SA, MESH_PROXY_SA)?;
        // Envoy -> Envoy.
        let xfcc = wait_for_xfcc(&envoy_client, "ratings", "/envoy-to-envoy")?;
        check_xfcc(&xfcc, ENVOY_SERVER_SA, ENVOY_CLIENT_SA)?;
        ensure!(
            envoy_stat(&ratings, "listener.0.0.0.0_15006.ssl.handshake")? >= 2,
            "the Envoy server terminated no TLS"
        );

        // STRICT at both kinds of server: plaintext from a pod without a sidecar is refused.
        for (server, ep) in [("reviews", &reviews_ep), ("ratings", &ratings_ep)] {
            let url = format!("http://{ep}/plaintext");
            let reply = curl(&plain, &["-sS", "--max-time", "5", &url]);
            ensure!(
                reply.is_err(),
                "{server} answered plaintext under STRICT: {reply:?}"
            );
        }
        Ok(())
    })
}

/// [`xfcc_seen`], retried until the client's sidecar has the server's endpoint and secrets
/// (each sidecar applies its config on its own schedule).
fn wait_for_xfcc(client: &Pod, host: &str, path: &str) -> Result<String> {
    let mut last = None;
    let found = wait_for(
        &format!("{host}{path} through mutual TLS"),
        READY_TIMEOUT,
        || {
            last = Some(xfcc_seen(client, host, path)?);
            Ok(true)
        },
    );
    found?;
    last.context("no XFCC")
}

//! Envoy 1.40 as a sidecar beside `mesh-proxy`, programmed by the same control plane from the
//! same resources: Envoy client → mesh-proxy server, mesh-proxy client → Envoy server, and
//! Envoy → Envoy, over HTTP/1.1 (by name and on a sniffed port), gRPC, raw TCP and a
//! server-first TCP port. Each pairing must give the apps the same answers as the
//! mesh-proxy → mesh-proxy pair of the same topology, and every proxy (Envoy and mesh-proxy)
//! must have ACKed every type with no NACK.

mod common;
mod telemetry_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{
    all_acked, curl, echo_client, sidecars, wait_endpoints, wait_for, Mesh, BANNER_PORT, GRPC_PORT,
    HTTP_PORT, LEGACY_PORT, NS, READY_TIMEOUT, REVIEWS_HOST, TCP_PORT, WEB_PORT,
};
use mesh_tests::harness::{EchoSpec, Peer, Pod, ServiceSpec};
use serde_json::Value;

/// Where inbound sidecars (both kinds) deliver from.
const INBOUND_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
/// How soon a server-first banner on a sniffed port must arrive (the detection timeout the
/// control plane sends is 100 ms).
const BANNER_DEADLINE: Duration = Duration::from_secs(1);
/// Istio's Prometheus port (the telemetry scene's scrapes use it).
const STATS_PORT: u16 = 15090;
/// `reviews`' FQDN (the telemetry scene's name for it).
const REVIEWS: &str = REVIEWS_HOST;
/// `ratings`' FQDN: the Service served by the Envoy-injected pod.
const RATINGS_HOST: &str = "ratings.default.svc.cluster.local";

/// Headers a sidecar may add that differ by proxy by design (ids, timing, Envoy's own
/// `x-envoy-*` internals), and `x-forwarded-client-cert`, whose `Hash=` names each client's
/// own certificate (every sidecar here, Envoy with its `mesh-proxy agent`, talks mutual TLS;
/// `e2e_envoy_mtls.rs` checks the header itself). Present or not, they are not compared.
fn proxy_specific(name: &str) -> bool {
    name.starts_with("x-envoy-")
        || name == "x-request-id"
        || name == "x-b3-traceid"
        || name == "x-forwarded-client-cert"
}

/// The topology: the baseline pair (`client` → `reviews-v1`, both `mesh-proxy`), plus an
/// Envoy-injected `ratings-v1` pod serving Service `ratings` and an Envoy-injected
/// `client-envoy` pod, each when asked for.
struct PeerMesh {
    mesh: Mesh,
    reviews: Pod,
    client: Pod,
    ratings: Option<Pod>,
    envoy_client: Option<Pod>,
}

impl PeerMesh {
    fn new(test: &str, envoy_server: bool, envoy_client: bool) -> Result<PeerMesh> {
        let mesh = Mesh::new(test)?;
        mesh.topo.add_service(
            &ServiceSpec::new("ratings", NS)
                .port("http", HTTP_PORT, HTTP_PORT)
                .port("grpc", GRPC_PORT, GRPC_PORT)
                .port("tcp-echo", TCP_PORT, TCP_PORT)
                .port("tcp-banner", BANNER_PORT, BANNER_PORT)
                .selector("app", "ratings"),
        )?;
        mesh.topo.start_control_plane()?;
        let reviews = mesh.reviews_pod("v1")?;
        let ratings = if envoy_server {
            let pod =
                mesh.topo
                    .envoy_pod("ratings-v1", NS, &[("app", "ratings"), ("version", "v1")])?;
            let echo = pod.spawn_echo(
                &EchoSpec::new("ratings", "v1")
                    .http(HTTP_PORT)
                    .grpc(GRPC_PORT)
                    .tcp(TCP_PORT)
                    .tcp_banner(BANNER_PORT),
            )?;
            echo.wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
            Some(pod)
        } else {
            None
        };
        let client = mesh.client_pod()?;
        let envoy_client = if envoy_client {
            Some(
                mesh.topo
                    .envoy_pod("client-envoy", NS, &[("app", "client-envoy")])?,
            )
        } else {
            None
        };
        let pm = PeerMesh {
            mesh,
            reviews,
            client,
            ratings,
            envoy_client,
        };
        pm.mesh.check(|| pm.wait_converged())?;
        Ok(pm)
    }

    /// Every sidecar ready; every client holding the endpoints of the Services it will call;
    /// every proxy in sync with no NACK.
    fn wait_converged(&self) -> Result<()> {
        self.mesh.topo.wait_ready(READY_TIMEOUT)?;
        let mut want = vec![(
            format!("outbound|{HTTP_PORT}||{REVIEWS_HOST}"),
            self.reviews.ip(),
        )];
        if let Some(r) = &self.ratings {
            want.push((format!("outbound|{HTTP_PORT}||{RATINGS_HOST}"), r.ip()));
        }
        for (cluster, ip) in &want {
            let addr = SocketAddr::from((*ip, HTTP_PORT)).to_string();
            wait_endpoints(&self.client, cluster, std::slice::from_ref(&addr))?;
            if let Some(e) = &self.envoy_client {
                wait_envoy_endpoints(e, cluster, std::slice::from_ref(&addr))?;
            }
        }
        wait_for("every proxy to ACK every type", READY_TIMEOUT, || {
            all_acked(&self.mesh.cp, sidecars(&self.mesh.topo))
        })
    }
}

/// The endpoints Envoy in `pod` holds for `cluster` (admin `/clusters`), sorted.
fn envoy_endpoints(pod: &Pod, cluster: &str) -> Result<Vec<String>> {
    let text = pod.admin("/clusters")?;
    let prefix = format!("{cluster}::");
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (addr, field) = rest.split_once("::")?;
            (field.starts_with("cx_active") && addr.parse::<SocketAddr>().is_ok())
                .then(|| addr.to_owned())
        })
        .collect();
    out.sort();
    Ok(out)
}

fn wait_envoy_endpoints(pod: &Pod, cluster: &str, want: &[String]) -> Result<()> {
    let what = format!(
        "Envoy in {} to hold endpoints {want:?} for {cluster}",
        pod.name()
    );
    wait_for(&what, Duration::from_secs(10), || {
        Ok(envoy_endpoints(pod, cluster)? == want)
    })
}

/// What the app behind `service` answered to an HTTP/1.1 GET through the sidecars, reduced
/// to what both proxies must agree on.
fn http_answer(client: &Pod, service: &str, port: u16, path: &str) -> Result<Value> {
    let reply = curl(client, &[&format!("http://{service}:{port}{path}")])?;
    let echo = reply.json()?;
    let mut headers: Vec<String> = echo["headers"]
        .as_object()
        .map(|h| h.keys().filter(|k| !proxy_specific(k)).cloned().collect())
        .unwrap_or_default();
    headers.sort();
    let peer_ip = echo["peer"]
        .as_str()
        .and_then(|p| p.parse::<SocketAddr>().ok())
        .map(|a| a.ip().to_string());
    eprintln!(
        "{} -> {service}:{port}{path}: {}",
        client.name(),
        reply.body.trim()
    );
    Ok(serde_json::json!({
        "status": reply.status,
        "version": reply.version,
        "server": format!("{} {}", echo["name"].as_str().unwrap_or_default(), echo["version"].as_str().unwrap_or_default()),
        "method": echo["method"],
        "path": echo["path"],
        "host": echo["host"],
        "protocol": echo["protocol"],
        "peer_ip": peer_ip,
        "request_id": echo["headers"]["x-request-id"].is_array(),
        "forwarded_proto": echo["headers"]["x-forwarded-proto"],
        "headers": headers,
    }))
}

/// A gRPC unary call through the sidecars, reduced likewise.
fn grpc_answer(client: &Pod, service: &str) -> Result<Value> {
    let r = echo_client(
        client,
        &[
            "grpc",
            &format!("{service}:{GRPC_PORT}"),
            "--message",
            "ping",
        ],
    )?;
    let r = r.first().context("one gRPC reply")?;
    eprintln!("{} -> {service}:{GRPC_PORT} (gRPC): {r}", client.name());
    let reply = &r["reply"];
    let peer_ip = reply["peer"]
        .as_str()
        .and_then(|p| p.parse::<SocketAddr>().ok())
        .map(|a| a.ip().to_string());
    let mut metadata: Vec<String> = reply["metadata"]
        .as_object()
        .map(|h| h.keys().filter(|k| !proxy_specific(k)).cloned().collect())
        .unwrap_or_default();
    metadata.sort();
    Ok(serde_json::json!({
        "code": r["code"],
        "server": format!("{} {}", reply["name"].as_str().unwrap_or_default(), reply["version"].as_str().unwrap_or_default()),
        "message": reply["message"],
        "method": reply["method"],
        "authority": reply["authority"],
        "protocol": reply["protocol"],
        "peer_ip": peer_ip,
        "metadata": metadata,
    }))
}

/// Raw TCP echo and the server-first banner through the sidecars.
fn tcp_answer(client: &Pod, service: &str) -> Result<Value> {
    let data = "not http at all\n";
    let echo = echo_client(
        client,
        &["tcp", &format!("{service}:{TCP_PORT}"), "--data", data],
    )?;
    let banner = echo_client(
        client,
        &[
            "tcp",
            &format!("{service}:{BANNER_PORT}"),
            "--expect-banner",
            "--data",
            "after\n",
        ],
    )?;
    Ok(serde_json::json!({
        "echo_ok": echo[0]["ok"],
        "echoed": echo[0]["received"],
        "banner_ok": banner[0]["ok"],
        "banner": banner[0]["banner"],
    }))
}

/// Every answer of `service` seen from `client`, with the server's name replaced by
/// `SERVER` so that two Services' answers compare.
fn answers(client: &Pod, service: &str) -> Result<Value> {
    let text = serde_json::json!({
        "http": http_answer(client, service, HTTP_PORT, "/peers?x=1")?,
        "grpc": grpc_answer(client, service)?,
        "tcp": tcp_answer(client, service)?,
    })
    .to_string()
    .replace(service, "SERVER");
    Ok(serde_json::from_str(&text)?)
}

/// Checks that `client` gets from `service` what the baseline pair gets from `reviews`,
/// and that what it gets is right.
fn same_answers(pm: &PeerMesh, client: &Pod, service: &str) -> Result<()> {
    let baseline = answers(&pm.client, "reviews")?;
    let got = answers(client, service)?;
    ensure!(
        got == baseline,
        "{} -> {service} differs from client -> reviews (mesh-proxy both sides):\n  got      {got}\n  baseline {baseline}",
        client.name()
    );
    let http = &got["http"];
    ensure!(
        http["status"] == 200
            && http["server"] == "SERVER v1"
            && http["protocol"] == "HTTP/1.1"
            && http["path"] == "/peers?x=1"
            && http["peer_ip"] == INBOUND_SOURCE.to_string(),
        "{http}"
    );
    let grpc = &got["grpc"];
    ensure!(
        grpc["code"] == 0 && grpc["server"] == "SERVER v1" && grpc["message"] == "ping",
        "{grpc}"
    );
    let tcp = &got["tcp"];
    ensure!(
        tcp["echo_ok"] == true
            && tcp["banner_ok"] == true
            && tcp["banner"] == "mesh-echo SERVER v1",
        "{tcp}"
    );
    Ok(())
}

#[test]
fn envoy_client_sidecar_to_mesh_proxy_server() -> Result<()> {
    mesh_tests::skip_unless_peer!(Peer::Envoy);
    let pm = PeerMesh::new("envoy_client_sidecar_to_mesh_proxy_server", false, true)?;
    pm.mesh.check(|| {
        let envoy = pm.envoy_client.as_ref().context("Envoy client")?;
        same_answers(&pm, envoy, "reviews")?;
        // A sniffed port (`web`, named without a protocol): both sidecars detect HTTP.
        let web = http_answer(envoy, "web", WEB_PORT, "/sniffed")?;
        let base = http_answer(&pm.client, "web", WEB_PORT, "/sniffed")?;
        ensure!(web == base && web["status"] == 200, "{web} vs {base}");
        // A server-first protocol on a sniffed port (`legacy`, unnamed): both client sidecars
        // give up sniffing after the configured detection timeout and pass it as TCP.
        for client in [envoy, &pm.client] {
            let started = Instant::now();
            let target = format!("legacy:{LEGACY_PORT}");
            let r = echo_client(
                client,
                &["tcp", &target, "--expect-banner", "--data", "after\n"],
            )?;
            let took = started.elapsed();
            ensure!(
                r[0]["ok"] == true && r[0]["banner"] == "mesh-echo reviews v1",
                "{} -> {target}: {r:?}",
                client.name()
            );
            ensure!(
                took < BANNER_DEADLINE,
                "{} -> {target}: the banner took {took:?}",
                client.name()
            );
        }
        all_acked(&pm.mesh.cp, sidecars(&pm.mesh.topo))?;
        Ok(())
    })
}

#[test]
fn mesh_proxy_client_to_envoy_server_sidecar() -> Result<()> {
    mesh_tests::skip_unless_peer!(Peer::Envoy);
    let pm = PeerMesh::new("mesh_proxy_client_to_envoy_server_sidecar", true, false)?;
    pm.mesh.check(|| {
        same_answers(&pm, &pm.client, "ratings")?;
        all_acked(&pm.mesh.cp, sidecars(&pm.mesh.topo))?;
        server_labels_from_endpoint_metadata(&pm.client)
    })
}

/// The client's sidecar labels its HTTP and TCP calls to the Envoy server, which sends no
/// peer metadata back, with the server's workload from the endpoint metadata.
fn server_labels_from_endpoint_metadata(client: &Pod) -> Result<()> {
    let want = [
        ("destination_workload", "ratings-v1"),
        ("destination_workload_namespace", NS),
        ("destination_app", "ratings"),
        ("destination_version", "v1"),
        ("destination_canonical_service", "ratings"),
        ("destination_canonical_revision", "v1"),
        ("destination_cluster", "Kubernetes"),
    ];
    for (metric, protocol) in [
        ("istio_requests_total", "http"),
        ("istio_tcp_connections_closed_total", "tcp"),
    ] {
        let select = |s: &&prometheus_parse::Sample| {
            s.metric == metric
                && s.labels.get("reporter") == Some("source")
                && s.labels.get("destination_service") == Some(RATINGS_HOST)
                && s.labels.get("request_protocol") == Some(protocol)
        };
        // Recorded when the sidecar finishes the call, a moment after the client's answer.
        wait_for(&format!("the client's {metric}"), READY_TIMEOUT, || {
            Ok(telemetry_support::scrape(client)?
                .iter()
                .any(|s| select(&s)))
        })?;
        for s in telemetry_support::scrape(client)?.iter().filter(select) {
            telemetry_support::labels(s, &want)?;
        }
    }
    Ok(())
}

#[test]
fn envoy_client_sidecar_to_envoy_server_sidecar() -> Result<()> {
    mesh_tests::skip_unless_peer!(Peer::Envoy);
    let pm = PeerMesh::new("envoy_client_sidecar_to_envoy_server_sidecar", true, true)?;
    pm.mesh.check(|| {
        let envoy = pm.envoy_client.as_ref().context("Envoy client")?;
        same_answers(&pm, envoy, "ratings")?;
        all_acked(&pm.mesh.cp, sidecars(&pm.mesh.topo))?;
        Ok(())
    })
}

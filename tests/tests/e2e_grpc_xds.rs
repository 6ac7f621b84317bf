//! gRPC's proxyless xDS client (Python grpcio) against our control plane: a client pod with
//! no sidecar resolves `xds:///reviews.default.svc.cluster.local:7070` through the control
//! plane (Listener, RouteConfiguration, Cluster and ClusterLoadAssignment, all by name, in
//! istiod's proxyless shape), balances its calls over the two `reviews` pods itself, and
//! follows an endpoint change on the same channel.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::{wait_for, Mesh, GRPC_PORT, NS, REVIEWS_HOST};
use mesh_tests::harness::{
    json_lines, sidecar_node_id, ControlPlane, EchoSpec, Peer, Pod, Process,
};
use serde_json::Value;

/// The target a proxyless client dials.
fn target() -> String {
    format!("xds:///{REVIEWS_HOST}:{GRPC_PORT}")
}

/// A mesh whose `reviews` endpoints are two plain pods (no sidecar) running `mesh-echo`'s
/// gRPC server, listed in an Endpoints object, and a plain client pod.
struct Proxyless {
    mesh: Mesh,
    servers: Vec<Pod>,
    echoes: Vec<Process>,
    client: Pod,
}

impl Proxyless {
    fn new(test: &str) -> Result<Proxyless> {
        let mesh = Mesh::new(test)?;
        let mut servers = Vec::new();
        let mut echoes = Vec::new();
        for version in ["v1", "v2"] {
            let pod = mesh.topo.pod(
                &format!("reviews-{version}"),
                NS,
                &[("app", "reviews"), ("version", version)],
            )?;
            let echo = pod.spawn_echo(&EchoSpec::new("reviews", version).grpc(GRPC_PORT))?;
            echo.wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
            servers.push(pod);
            echoes.push(echo);
        }
        let this = Proxyless {
            client: mesh
                .topo
                .pod("grpc-client", NS, &[("app", "grpc-client")])?,
            mesh,
            servers,
            echoes,
        };
        this.set_endpoints(&this.servers)?;
        this.mesh.topo.start_control_plane()?;
        Ok(this)
    }

    /// Lists `pods` as `reviews`' endpoints on its gRPC port.
    fn set_endpoints(&self, pods: &[Pod]) -> Result<()> {
        let ips: Vec<Ipv4Addr> = pods.iter().map(Pod::ip).collect();
        self.mesh
            .topo
            .add_endpoints("reviews", NS, &ips, &[("grpc", GRPC_PORT)])?;
        Ok(())
    }
}

/// Who answered a successful call (`reviews v1`), or why it failed.
fn answered_by(line: &Value) -> Result<String> {
    ensure!(line["ok"] == true, "failed call: {line}");
    let reply = &line["reply"];
    Ok(format!(
        "{} {}",
        reply["name"].as_str().unwrap_or_default(),
        reply["version"].as_str().unwrap_or_default()
    ))
}

/// Checks the control plane shows the client's node with LDS, RDS, CDS and EDS sent and
/// ACKed at the same version, and no NACK.
fn acked_by_client(cp: &ControlPlane, node_id: &str) -> Result<bool> {
    let syncz: Value = serde_json::from_str(&cp.syncz()?).context("syncz is not JSON")?;
    let Some(entry) = syncz
        .as_array()
        .and_then(|all| all.iter().find(|e| e["node_id"] == node_id))
    else {
        return Ok(false);
    };
    for t in ["lds", "rds", "cds", "eds"] {
        let ty = &entry["types"][t];
        ensure!(
            ty["last_nack"].is_null(),
            "{t} NACKed by the gRPC client: {entry}"
        );
        if ty["sent_version"].is_null() || ty["acked_version"] != ty["sent_version"] {
            return Ok(false);
        }
    }
    Ok(true)
}

#[test]
fn proxyless_grpc_calls_are_balanced_across_two_pods() -> Result<()> {
    mesh_tests::skip_unless_peer!(Peer::GrpcPython);
    let p = Proxyless::new("proxyless_grpc_calls_are_balanced_across_two_pods")?;
    p.mesh.check(|| {
        let (out, lines) = p.client.grpc_xds_client(&target())?.calls(20)?;
        ensure!(out.success() && lines.len() == 20, "{out:?}");
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for line in &lines {
            *counts.entry(answered_by(line)?).or_default() += 1;
            let reply = &line["reply"];
            // No sidecar anywhere: the client connected to a pod itself, as the authority
            // it dialled.
            let local: SocketAddr = reply["local"].as_str().unwrap_or_default().parse()?;
            ensure!(
                p.servers
                    .iter()
                    .any(|s| local == SocketAddr::from((s.ip(), GRPC_PORT))),
                "{line}"
            );
            ensure!(
                reply["authority"] == format!("{REVIEWS_HOST}:{GRPC_PORT}")
                    && reply["method"] == "/mesh.echo.v1.EchoService/Echo",
                "{line}"
            );
        }
        // gRPC's round robin over the two endpoints of the load assignment.
        ensure!(
            counts.len() == 2 && counts.values().all(|&n| n >= 5),
            "calls not balanced over both pods: {counts:?}"
        );

        // The short name a client in the same namespace may dial resolves too.
        let short = format!("xds:///reviews:{GRPC_PORT}");
        let (out, lines) = p.client.grpc_xds_client(&short)?.calls(2)?;
        ensure!(out.success() && lines.len() == 2, "{short}: {out:?}");
        // A name the control plane does not know fails (the listener does not exist).
        let (out, lines) = p
            .client
            .grpc_xds_client(&format!(
                "xds:///nothing.default.svc.cluster.local:{GRPC_PORT}"
            ))?
            .args(["--timeout", "3"])
            .calls(1)?;
        ensure!(
            !out.success() && lines.len() == 1 && lines[0]["ok"] == false,
            "an unknown service must fail: {out:?}"
        );
        Ok(())
    })
}

/// The client's JSON lines so far.
fn client_lines(client: &Process) -> Vec<Value> {
    json_lines(&client.stdout())
}

#[test]
fn proxyless_grpc_follows_an_endpoint_change() -> Result<()> {
    mesh_tests::skip_unless_peer!(Peer::GrpcPython);
    let p = Proxyless::new("proxyless_grpc_follows_an_endpoint_change")?;
    p.mesh.check(|| {
        let client = p.client.grpc_xds_client(&target())?.spawn(
            "grpc-client",
            Duration::from_secs(60),
            Duration::from_millis(20),
        )?;
        // Both pods answer on one channel.
        wait_for(
            "both pods to answer the client",
            Duration::from_secs(20),
            || {
                client.check_running()?;
                let who: Vec<String> = client_lines(&client)
                    .iter()
                    .filter_map(|l| answered_by(l).ok())
                    .collect();
                Ok(who.iter().any(|w| w == "reviews v1") && who.iter().any(|w| w == "reviews v2"))
            },
        )?;
        let node = sidecar_node_id(&p.client);
        wait_for(
            "the gRPC client to ACK every type",
            Duration::from_secs(10),
            || acked_by_client(&p.mesh.cp, &node),
        )?;

        // reviews-v2 leaves the Service (it still serves: only EDS can tell the client).
        let before = client_lines(&client).len();
        let changed = Instant::now();
        p.set_endpoints(&p.servers[..1])?;
        let streak = 25;
        wait_for(
            &format!("{streak} calls in a row answered by reviews-v1 alone"),
            Duration::from_secs(15),
            || {
                client.check_running()?;
                let after = &client_lines(&client)[before..];
                let tail_ok = after.len() >= streak
                    && after[after.len() - streak..]
                        .iter()
                        .all(|l| answered_by(l).is_ok_and(|w| w == "reviews v1"));
                Ok(tail_ok)
            },
        )?;
        eprintln!("endpoint change followed within {:?}", changed.elapsed());
        // Then the pod goes away for good: nothing of the client's notices.
        p.echoes[1].stop();
        let seen = client_lines(&client).len();
        wait_for(
            "10 more calls after reviews-v2 stopped",
            Duration::from_secs(10),
            || {
                client.check_running()?;
                Ok(client_lines(&client).len() >= seen + 10)
            },
        )?;
        let lines = client_lines(&client);
        let failed: Vec<&Value> = lines.iter().filter(|l| l["ok"] != true).collect();
        if !failed.is_empty() {
            bail!("calls failed around the endpoint change: {failed:?}");
        }
        wait_for(
            "the gRPC client to ACK the change",
            Duration::from_secs(10),
            || acked_by_client(&p.mesh.cp, &node),
        )?;
        client.stop();
        Ok(())
    })
}

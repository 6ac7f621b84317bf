//! The vertical slice end to end: an app's HTTP request leaves through its sidecar's outbound
//! capture, is routed by service name or ClusterIP, arrives through the server's sidecar's
//! inbound capture and is delivered from 127.0.0.6; both sidecars log it. Also: what the apps
//! can see of the sidecars, passthrough to addresses no service owns, a pod calling itself,
//! and load balancing. Each test builds its own topology (see `common`).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{
    access_log, curl, echo_client, ip_of, request_log, s, seen_header, wait_endpoints, wait_for,
    wait_log, Mesh, HTTP_PORT, NS, REVIEWS_HOST,
};
use mesh_tests::harness::{EchoSpec, Pod};
use serde_json::Value;

/// The address inbound sidecars deliver from (Envoy's `upstream_bind_config` in Istio).
const INBOUND_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));

/// Request headers an Istio sidecar pair may add on the way to the app: the request id,
/// Envoy's forwarding and retry headers, tracing headers (when tracing is on) and, with mTLS,
/// the client certificate.
const ISTIO_REQUEST_HEADERS: &[&str] = &[
    "x-request-id",
    "x-forwarded-proto",
    "x-envoy-attempt-count",
    "x-envoy-expected-rq-timeout-ms",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-forwarded-client-cert",
];

/// Response headers an Istio sidecar pair adds on the way back to the client.
const ISTIO_RESPONSE_HEADERS: &[&str] = &["x-envoy-upstream-service-time", "server"];

/// One request by `target` (`reviews:9080` or `CLUSTERIP:9080`) from `client` to the
/// `reviews-v1` pod `server`, checked end to end: who answered, what the app saw, the
/// connection the client app made, and both sidecars' access-log lines.
fn check_one_request(mesh: &Mesh, client: &Pod, server: &Pod, target: &str) -> Result<()> {
    let path = "/slice?q=1";
    let reply = curl(
        client,
        &["-H", "x-test: slice", &format!("http://{target}{path}")],
    )?;
    ensure!(reply.status == 200, "{target}: {reply:?}");
    let echo = reply.json()?;
    // Who answered, and what the app saw.
    ensure!(
        echo["name"] == "reviews" && echo["version"] == "v1",
        "{target}: answered by {echo}"
    );
    ensure!(
        s(&echo, "method") == "GET" && s(&echo, "path") == path,
        "{echo}"
    );
    ensure!(s(&echo, "host") == target, "authority kept: {echo}");
    ensure!(seen_header(&echo, "x-test") == Some("slice"), "{echo}");
    let server_addr = SocketAddr::from((server.ip(), HTTP_PORT));
    ensure!(s(&echo, "local") == server_addr.to_string(), "{echo}");
    // Delivered by the server's sidecar, from 127.0.0.6 as Istio's sidecar does.
    ensure!(ip_of(&echo, "peer") == Some(INBOUND_SOURCE), "peer: {echo}");
    // The client app connected to the ClusterIP itself: capture is transparent.
    let cluster_addr = SocketAddr::from((mesh.reviews_ip, HTTP_PORT));
    ensure!(
        reply.remote == cluster_addr,
        "{target}: connected to {}",
        reply.remote
    );
    ensure!(reply.local.ip() == IpAddr::V4(client.ip()), "{reply:?}");

    let id = seen_header(&echo, "x-request-id").context("the app saw no x-request-id")?;
    let outbound = request_log(client, id, "outbound|")?;
    let inbound = request_log(server, id, "inbound|")?;
    for (side, e) in [("outbound", &outbound), ("inbound", &inbound)] {
        ensure!(
            e["method"] == "GET"
                && e["path"] == path
                && e["authority"] == target
                && e["protocol"] == "HTTP/1.1"
                && e["response_code"] == 200
                && e["response_flags"] == "-"
                && e["user_agent"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("curl/"))
                && e["bytes_sent"].as_u64() == Some(reply.body.len() as u64),
            "{side} access log: {e}"
        );
        ensure!(
            s(e, "upstream_host") == server_addr.to_string(),
            "{side}: {e}"
        );
    }
    ensure!(
        s(&outbound, "upstream_cluster") == format!("outbound|{HTTP_PORT}||{REVIEWS_HOST}")
            && s(&outbound, "downstream_local_address") == cluster_addr.to_string()
            && s(&outbound, "downstream_remote_address") == reply.local.to_string(),
        "the client sidecar saw the app's own connection to the ClusterIP: {outbound}"
    );
    ensure!(
        s(&inbound, "upstream_cluster") == format!("inbound|{HTTP_PORT}||")
            && s(&inbound, "downstream_local_address") == server_addr.to_string()
            && ip_of(&inbound, "downstream_remote_address") == Some(IpAddr::V4(client.ip())),
        "the server sidecar got the connection from the client pod: {inbound}"
    );
    Ok(())
}

#[test]
fn http_by_service_name_and_by_cluster_ip_through_both_sidecars() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) =
        Mesh::standard("http_by_service_name_and_by_cluster_ip", &["v1"])?;
    mesh.check(|| {
        check_one_request(&mesh, &client, &servers[0], &format!("reviews:{HTTP_PORT}"))?;
        check_one_request(
            &mesh,
            &client,
            &servers[0],
            &format!("{}:{HTTP_PORT}", mesh.reviews_ip),
        )?;
        // The longer names resolve and route too.
        for name in ["reviews.default", "reviews.default.svc.cluster.local"] {
            let echo = curl(&client, &[&format!("http://{name}:{HTTP_PORT}/")])?.json()?;
            ensure!(echo["name"] == "reviews", "{name}: {echo}");
        }
        // A request body reaches the app whole, and both sidecars count it.
        let body = "x".repeat(100_000);
        let url = format!("http://reviews:{HTTP_PORT}/upload");
        let reply = curl(&client, &["-X", "POST", "--data-binary", &body, &url])?;
        let echo = reply.json()?;
        ensure!(
            reply.status == 200 && echo["method"] == "POST" && echo["body_len"] == body.len(),
            "{echo}"
        );
        let id = seen_header(&echo, "x-request-id").context("x-request-id")?;
        for (pod, side) in [(&client, "outbound|"), (&servers[0], "inbound|")] {
            let e = request_log(pod, id, side)?;
            ensure!(e["bytes_received"] == body.len(), "{side}: {e}");
        }
        Ok(())
    })
}

#[test]
fn the_apps_cannot_tell_the_sidecars_are_there() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, _servers) =
        Mesh::standard("the_apps_cannot_tell_the_sidecars_are_there", &["v1"])?;
    // A pod without a sidecar: its replies reach the client through a TCP passthrough,
    // byte for byte, which makes them the reference for what mesh-echo itself sends. (Not on
    // 9080: like Istio's, the client sidecar handles every destination on an HTTP service
    // port with that port's HTTP listener.)
    let plain = mesh.topo.pod("plain", NS, &[("app", "plain")])?;
    let echo = plain.spawn_echo(&EchoSpec::new("reviews", "v1").http(8080))?;
    echo.wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    mesh.check(|| {
        let direct = curl(&client, &[&format!("http://{}:8080/", plain.ip())])?;
        let meshed = curl(&client, &[&format!("http://reviews:{HTTP_PORT}/")])?;
        ensure!(
            direct.status == 200 && meshed.status == 200,
            "{direct:?} {meshed:?}"
        );
        ensure!(
            meshed.remote == SocketAddr::from((mesh.reviews_ip, HTTP_PORT)),
            "{meshed:?}"
        );

        // Request headers: what curl sent, plus only what Istio's sidecars add.
        let sent = |r: &common::Reply| -> Result<BTreeSet<String>> {
            let echo = r.json()?;
            Ok(echo["headers"]
                .as_object()
                .context("headers")?
                .keys()
                .cloned()
                .collect())
        };
        let (direct_seen, meshed_seen) = (sent(&direct)?, sent(&meshed)?);
        let added: Vec<&String> = meshed_seen.difference(&direct_seen).collect();
        ensure!(
            added
                .iter()
                .all(|h| ISTIO_REQUEST_HEADERS.contains(&h.as_str())),
            "the sidecars added request headers Istio does not: {added:?}"
        );
        ensure!(
            added.iter().any(|h| *h == "x-request-id"),
            "Istio adds x-request-id: {added:?}"
        );
        let removed: Vec<&String> = direct_seen.difference(&meshed_seen).collect();
        ensure!(
            removed.is_empty(),
            "request headers lost on the way: {removed:?}"
        );

        // Response headers: everything the app sent, values unchanged, nothing else but
        // Istio's own and the hop-by-hop `connection: keep-alive` of the HTTP/1.1 hop.
        for (name, value) in &direct.headers {
            let through = meshed.header(name);
            ensure!(through.is_some(), "response header {name} lost: {meshed:?}");
            if !matches!(name.as_str(), "date" | "content-length") {
                ensure!(
                    through == Some(value.as_str()),
                    "{name}: {value} became {through:?}"
                );
            }
        }
        for (name, value) in &meshed.headers {
            if direct.header(name).is_some() || ISTIO_RESPONSE_HEADERS.contains(&name.as_str()) {
                continue;
            }
            ensure!(
                name == "connection" && value == "keep-alive",
                "the sidecars added response header {name}: {value}"
            );
        }
        Ok(())
    })
}

#[test]
fn addresses_no_service_owns_pass_through_or_fail_cleanly() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "addresses_no_service_owns_pass_through_or_fail_cleanly";
    let mesh = Mesh::new(test)?;
    mesh.topo.start_control_plane()?;
    let client = mesh.client_pod()?;
    let plain = mesh.topo.pod("plain", NS, &[("app", "plain")])?;
    let echo = plain.spawn_echo(&EchoSpec::new("plain", "v0").http(8080).tcp(8081))?;
    echo.wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    mesh.check(|| {
        mesh.topo.wait_ready(common::READY_TIMEOUT)?;
        // A pod IP no Service selects: the sidecar passes the connection through to it.
        let target = SocketAddr::from((plain.ip(), 8080));
        let reply = curl(&client, &[&format!("http://{target}/pt")])?;
        let echo = reply.json()?;
        ensure!(reply.status == 200 && echo["name"] == "plain", "{reply:?}");
        ensure!(reply.remote == target, "{reply:?}");
        // Passthrough keeps the pod's own source address (the sidecar connects as the pod).
        ensure!(
            ip_of(&echo, "peer") == Some(IpAddr::V4(client.ip())),
            "{echo}"
        );
        let entry = wait_log(&client, "the passthrough connection", |e| {
            e["downstream_local_address"] == target.to_string()
                && e["downstream_remote_address"] == reply.local.to_string()
        })?;
        ensure!(
            s(&entry, "upstream_cluster") == "PassthroughCluster"
                && s(&entry, "upstream_host") == target.to_string()
                && entry["response_flags"] == "-"
                && entry["bytes_sent"].as_u64() > Some(0),
            "{entry}"
        );
        // Raw TCP passes through the same way.
        let tcp = common::echo_client(&client, &["tcp", &format!("{}:8081", plain.ip())])?;
        ensure!(tcp[0]["ok"] == true, "{tcp:?}");

        // An address nobody holds: the connection fails, promptly and cleanly (reset or
        // closed, not a hang until curl's own 10 s limit).
        let [a, b, c, _] = plain.ip().octets();
        let unused = Ipv4Addr::new(a, b, c, 250);
        let started = Instant::now();
        let out = client.curl(&[&format!("http://{unused}:8080/")])?;
        let took = started.elapsed();
        ensure!(!out.success(), "{out:?}");
        ensure!(out.status.code() != Some(28), "curl timed out: {out:?}");
        ensure!(took < Duration::from_secs(8), "failing took {took:?}");
        let entry = wait_log(&client, "the failed passthrough", |e| {
            s(e, "downstream_local_address") == format!("{unused}:8080")
        })?;
        ensure!(
            s(&entry, "upstream_cluster") == "PassthroughCluster"
                && entry["response_flags"] == "UF",
            "{entry}"
        );
        Ok(())
    })
}

#[test]
fn an_app_calls_itself_through_its_own_service_name() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("an_app_calls_itself_through_its_own_service_name")?;
    mesh.topo.start_control_plane()?;
    let server = mesh.reviews_pod("v1")?;
    mesh.check(|| {
        mesh.wait_converged(&server, std::slice::from_ref(&server))?;
        let reply = curl(&server, &[&format!("http://reviews:{HTTP_PORT}/self")])?;
        let echo = reply.json()?;
        let own = SocketAddr::from((server.ip(), HTTP_PORT));
        ensure!(
            reply.status == 200 && echo["name"] == "reviews",
            "{reply:?}"
        );
        ensure!(s(&echo, "local") == own.to_string(), "{echo}");
        ensure!(ip_of(&echo, "peer") == Some(INBOUND_SOURCE), "{echo}");
        // One sidecar, both directions: out through its outbound capture, back in through
        // its inbound capture (Istio's rule for UID 1337 to the pod's own address on lo).
        let id = seen_header(&echo, "x-request-id").context("no x-request-id")?;
        let outbound = request_log(&server, id, "outbound|")?;
        let inbound = request_log(&server, id, "inbound|")?;
        ensure!(
            s(&outbound, "upstream_host") == own.to_string() && outbound["response_code"] == 200,
            "{outbound}"
        );
        ensure!(
            s(&inbound, "downstream_local_address") == own.to_string()
                && ip_of(&inbound, "downstream_remote_address") == Some(IpAddr::V4(server.ip()))
                && inbound["response_code"] == 200,
            "{inbound}"
        );
        Ok(())
    })
}

#[test]
fn requests_are_balanced_across_two_server_pods() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard(
        "requests_are_balanced_across_two_server_pods",
        &["v1", "v2"],
    )?;
    mesh.check(|| {
        // Both pods registered themselves (auto-registration) and reached the client's EDS.
        let want: Vec<String> = servers
            .iter()
            .map(|p| SocketAddr::from((p.ip(), HTTP_PORT)).to_string())
            .collect();
        let cluster = format!("outbound|{HTTP_PORT}||{REVIEWS_HOST}");
        wait_endpoints(&client, &cluster, &want)?;
        // 20 requests on one connection: balanced per request, round robin.
        let url = format!("http://reviews:{HTTP_PORT}/lb");
        let replies = echo_client(
            &client,
            &["http", &url, "--count", "20", "--expect-status", "200"],
        )?;
        ensure!(replies.len() == 20, "{replies:?}");
        let versions: Vec<&str> = replies.iter().map(|r| s(&r["body"], "version")).collect();
        let v1 = versions.iter().filter(|v| **v == "v1").count();
        let v2 = versions.iter().filter(|v| **v == "v2").count();
        ensure!(
            v1 + v2 == 20 && v1 >= 5 && v2 >= 5,
            "unbalanced: {versions:?}"
        );
        // The client sidecar logged 20 requests spread over both endpoints.
        let hosts = || -> Vec<String> {
            access_log(&client)
                .iter()
                .filter(|e| e["path"] == "/lb")
                .map(|e: &Value| s(e, "upstream_host").to_owned())
                .collect()
        };
        wait_for("20 access-log lines", Duration::from_secs(5), || {
            Ok(hosts().len() == 20)
        })?;
        let hosts = hosts();
        ensure!(
            want.iter()
                .all(|w| hosts.iter().filter(|h| *h == w).count() >= 5),
            "{hosts:?}"
        );
        Ok(())
    })
}

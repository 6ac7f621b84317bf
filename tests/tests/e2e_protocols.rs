//! Every protocol through two captured sidecars (client pod → `reviews` pod): h2c, gRPC
//! (unary, server streaming, bidirectional), WebSocket, raw TCP on a `tcp-` port, HTTP on a
//! port whose protocol is sniffed, and server-first protocols on a `tcp-` port and on an
//! unnamed (sniffed) port, where the banner must not wait for a client byte that never comes.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{
    curl, echo_client, ip_of, request_log, s, seen_header, wait_log, Mesh, BANNER_PORT, GRPC_PORT,
    HTTP_PORT, LEGACY_PORT, REVIEWS_HOST, TCP_PORT, WEB_PORT,
};
use mesh_tests::harness::Pod;
use serde_json::Value;

/// Where inbound sidecars deliver from.
const INBOUND_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
/// How soon a server-first banner must reach the client.
const BANNER_DEADLINE: Duration = Duration::from_secs(1);

fn outbound_cluster(port: u16, host: &str) -> String {
    format!("outbound|{port}||{host}")
}

/// Checks that both sidecars logged the request `id` with `status`, the client's through
/// `cluster`, and returns the two lines.
fn both_logged(
    client: &Pod,
    server: &Pod,
    id: &str,
    cluster: &str,
    status: u64,
) -> Result<(Value, Value)> {
    let out = request_log(client, id, "outbound|")?;
    let inb = request_log(server, id, "inbound|")?;
    ensure!(
        s(&out, "upstream_cluster") == cluster && out["response_code"] == status,
        "{out}"
    );
    ensure!(inb["response_code"] == status, "{inb}");
    Ok((out, inb))
}

#[test]
fn h2c_with_prior_knowledge() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("h2c_with_prior_knowledge", &["v1"])?;
    mesh.check(|| {
        let url = format!("http://reviews:{HTTP_PORT}/h2c");
        let reply = curl(&client, &["--http2-prior-knowledge", &url])?;
        ensure!(
            reply.version == "HTTP/2" && reply.status == 200,
            "{reply:?}"
        );
        let echo = reply.json()?;
        ensure!(
            echo["name"] == "reviews" && s(&echo, "path") == "/h2c",
            "{echo}"
        );
        ensure!(ip_of(&echo, "peer") == Some(INBOUND_SOURCE), "{echo}");
        // As with Istio, a port named `http` is HTTP/1.1 upstream: the client sidecar took
        // HTTP/2 from the app and spoke HTTP/1.1 to the server.
        ensure!(echo["protocol"] == "HTTP/1.1", "{echo}");
        let id = seen_header(&echo, "x-request-id").context("x-request-id")?;
        let cluster = outbound_cluster(HTTP_PORT, REVIEWS_HOST);
        let (out, inb) = both_logged(&client, &servers[0], id, &cluster, 200)?;
        ensure!(
            out["protocol"] == "HTTP/2" && inb["protocol"] == "HTTP/1.1",
            "{out} {inb}"
        );
        // mesh-echo's own h2c client, several requests on one connection.
        let replies = echo_client(&client, &["http", "--h2c", &url, "--count", "3"])?;
        ensure!(
            replies.len() == 3 && replies.iter().all(|r| r["status"] == 200),
            "{replies:?}"
        );
        Ok(())
    })
}

#[test]
fn grpc_unary_server_streaming_and_bidi() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("grpc_unary_server_streaming_and_bidi", &["v1"])?;
    mesh.check(|| {
        let target = format!("reviews:{GRPC_PORT}");
        let cluster = outbound_cluster(GRPC_PORT, REVIEWS_HOST);
        let check_reply = |r: &Value, rpc: &str| -> Result<String> {
            let reply = &r["reply"];
            ensure!(r["code"] == 0 && r["rpc"] == rpc, "{r}");
            ensure!(
                reply["name"] == "reviews"
                    && reply["protocol"] == "HTTP/2"
                    && s(reply, "method") == format!("/mesh.echo.v1.EchoService/{rpc}")
                    && s(reply, "local")
                        == SocketAddr::from((servers[0].ip(), GRPC_PORT)).to_string()
                    && ip_of(reply, "peer") == Some(INBOUND_SOURCE),
                "{r}"
            );
            reply["metadata"]["x-request-id"][0]
                .as_str()
                .map(str::to_owned)
                .context("x-request-id")
        };

        let unary = echo_client(&client, &["grpc", &target, "--message", "ping"])?;
        ensure!(
            unary.len() == 1 && unary[0]["reply"]["message"] == "ping",
            "{unary:?}"
        );
        let id = check_reply(&unary[0], "Echo")?;
        let (out, _) = both_logged(&client, &servers[0], &id, &cluster, 200)?;
        ensure!(out["protocol"] == "HTTP/2", "{out}");

        let stream = echo_client(&client, &["grpc", &target, "--stream", "5"])?;
        ensure!(stream.len() == 5, "five replies: {stream:?}");
        for (i, r) in stream.iter().enumerate() {
            ensure!(r["reply"]["index"] == i, "in order: {stream:?}");
        }
        let id = check_reply(&stream[0], "StreamEcho")?;
        both_logged(&client, &servers[0], &id, &cluster, 200)?;

        let chat = echo_client(&client, &["grpc", &target, "--chat", "5"])?;
        ensure!(chat.len() == 5, "five replies: {chat:?}");
        for (i, r) in chat.iter().enumerate() {
            ensure!(r["reply"]["message"] == format!("hello {i}"), "{chat:?}");
        }
        let id = check_reply(&chat[0], "Chat")?;
        let (out, _) = both_logged(&client, &servers[0], &id, &cluster, 200)?;
        ensure!(out["bytes_received"].as_u64() > Some(0), "{out}");

        // A gRPC error status travels back in the trailers.
        let failed = client.echo_client(&[
            "grpc",
            &target,
            "-H",
            "x-echo-grpc-status: 5",
            "--expect-code",
            "5",
        ])?;
        ensure!(failed.success(), "{failed:?}");
        Ok(())
    })
}

#[test]
fn websocket_through_both_sidecars() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("websocket_through_both_sidecars", &["v1"])?;
    mesh.check(|| {
        let url = format!("ws://reviews:{HTTP_PORT}/ws");
        let r = echo_client(&client, &["ws", &url, "--messages", "6"])?;
        ensure!(
            r.len() == 1 && r[0]["ok"] == true && r[0]["status"] == 101 && r[0]["echoed"] == 6,
            "{r:?}"
        );
        let upgraded = |pod: &Pod| {
            wait_log(pod, "the upgrade", |e| {
                e["path"] == "/ws" && e["response_code"] == 101
            })
        };
        let out = upgraded(&client)?;
        let inb = upgraded(&servers[0])?;
        ensure!(
            s(&out, "upstream_cluster") == outbound_cluster(HTTP_PORT, REVIEWS_HOST)
                && s(&inb, "upstream_cluster") == format!("inbound|{HTTP_PORT}||")
                && out["request_id"] == inb["request_id"],
            "{out} {inb}"
        );
        // Six frames each way went through after the upgrade.
        ensure!(out["bytes_received"].as_u64() > Some(6), "{out}");
        Ok(())
    })
}

#[test]
fn raw_tcp_on_a_tcp_port() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("raw_tcp_on_a_tcp_port", &["v1"])?;
    mesh.check(|| {
        let data = "not http at all\n";
        let target = format!("reviews:{TCP_PORT}");
        let r = echo_client(&client, &["tcp", &target, "--data", data])?;
        ensure!(r[0]["ok"] == true && r[0]["received"] == data, "{r:?}");
        let server_addr = SocketAddr::from((servers[0].ip(), TCP_PORT)).to_string();
        let out = wait_log(&client, "the TCP connection", |e| {
            s(e, "upstream_cluster") == outbound_cluster(TCP_PORT, REVIEWS_HOST)
        })?;
        ensure!(
            s(&out, "upstream_host") == server_addr
                && s(&out, "downstream_local_address")
                    == SocketAddr::from((mesh.reviews_ip, TCP_PORT)).to_string()
                && out["bytes_received"] == data.len()
                && out["bytes_sent"] == data.len()
                && out["response_flags"] == "-",
            "{out}"
        );
        let inb = wait_log(&servers[0], "the TCP connection", |e| {
            s(e, "upstream_cluster") == format!("inbound|{TCP_PORT}||")
        })?;
        ensure!(
            s(&inb, "downstream_local_address") == server_addr
                && ip_of(&inb, "downstream_remote_address") == Some(IpAddr::V4(client.ip()))
                && inb["bytes_received"] == data.len(),
            "{inb}"
        );
        Ok(())
    })
}

#[test]
fn http_on_a_sniffed_port() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("http_on_a_sniffed_port", &["v1"])?;
    mesh.check(|| {
        // `web`'s port is named `web`: no protocol, so both sidecars sniff it and find HTTP.
        let reply = curl(&client, &[&format!("http://web:{WEB_PORT}/sniffed")])?;
        let echo = reply.json()?;
        ensure!(
            reply.status == 200 && echo["name"] == "reviews",
            "{reply:?}"
        );
        ensure!(ip_of(&echo, "peer") == Some(INBOUND_SOURCE), "{echo}");
        let id = seen_header(&echo, "x-request-id").context("routed as HTTP")?;
        let (out, inb) = both_logged(
            &client,
            &servers[0],
            id,
            &outbound_cluster(WEB_PORT, "web.default.svc.cluster.local"),
            200,
        )?;
        ensure!(
            s(&inb, "upstream_cluster") == format!("inbound|{HTTP_PORT}||")
                && s(&out, "downstream_local_address")
                    == SocketAddr::from((mesh.web_ip, WEB_PORT)).to_string(),
            "{out} {inb}"
        );
        Ok(())
    })
}

/// Connects to `target` expecting mesh-echo's banner first; returns how long the whole
/// client run took.
fn banner_from(client: &Pod, target: &str, want: &str) -> Result<Duration> {
    let started = Instant::now();
    let r = echo_client(
        client,
        &["tcp", target, "--expect-banner", "--data", "after\n"],
    )?;
    let took = started.elapsed();
    ensure!(
        r[0]["ok"] == true && r[0]["banner"] == want && r[0]["received"] == "after\n",
        "{target}: {r:?}"
    );
    Ok(took)
}

#[test]
fn server_first_banners_arrive_promptly_on_tcp_and_sniffed_ports() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "server_first_banners_arrive_promptly_on_tcp_and_sniffed_ports";
    let (mesh, client, servers) = Mesh::standard(test, &["v1"])?;
    mesh.check(|| {
        let want = "mesh-echo reviews v1";
        // A `tcp-` port: no sniffing at all.
        let took = banner_from(&client, &format!("reviews:{BANNER_PORT}"), want)?;
        ensure!(
            took < BANNER_DEADLINE,
            "banner on the tcp- port took {took:?}"
        );
        // An unnamed port: both sidecars sniff, see no client byte within their detection
        // timeout, and fall back to TCP (the service's own cluster, not a passthrough).
        let took = banner_from(&client, &format!("legacy:{LEGACY_PORT}"), want)?;
        ensure!(
            took < BANNER_DEADLINE,
            "banner on the sniffed port took {took:?}"
        );
        let out = wait_log(&client, "the legacy connection", |e| {
            s(e, "downstream_local_address")
                == SocketAddr::from((mesh.legacy_ip, LEGACY_PORT)).to_string()
        })?;
        ensure!(
            s(&out, "upstream_cluster")
                == outbound_cluster(LEGACY_PORT, "legacy.default.svc.cluster.local")
                && out["response_flags"] == "-",
            "{out}"
        );
        let inb = wait_log(&servers[0], "the legacy connection", |e| {
            s(e, "upstream_cluster") == format!("inbound|{LEGACY_PORT}||")
        })?;
        ensure!(
            inb["bytes_sent"].as_u64() > Some(want.len() as u64),
            "{inb}"
        );
        Ok(())
    })
}

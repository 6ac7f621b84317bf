//! The real `mesh-proxy`'s lifecycle: failing closed before the first config, readiness,
//! `/config_dump`, `/quitquitquit`, draining on SIGTERM, and flag errors.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::upstreams::http_echo;
use common::xds::*;
use common::{curl, free_port, get, Ports, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn resources(ports: &Ports, echo: std::net::SocketAddr) -> Resources {
    let inb = ports.inbound.port();
    let routes = route_config(
        "inbound",
        vec![vhost(
            "inbound|http|80",
            &["*"],
            vec![route_to("inbound|80||", None)],
        )],
    );
    Resources::default()
        .listener(virtual_inbound(
            vec![chain("http", Some(on_port(inb, &[])), hcm_inline(routes))],
            None,
        ))
        .cluster(static_cluster("inbound|80||", &[echo], Proto::Http1))
}

async fn status(url: &str) -> (String, String) {
    let out = curl(&["-s", "-w", "\n%{http_code}", url]).await;
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_closed_until_configured_then_quits_on_request() {
    // Nothing listens at the control plane address: no config ever arrives.
    let nowhere = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let ports = Ports::new();
    let mut proxy = Proxy::start(nowhere, ports, &[]);
    let ready_url = format!("http://{}/ready", ports.admin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        let r = status(&ready_url).await;
        if !r.0.is_empty() && r.0 != "000" {
            break r;
        }
        assert!(Instant::now() < deadline, "admin port never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((code.as_str(), body.as_str()), ("503", "PRE_INITIALIZING"));
    let (code, _) = status(&format!("http://{}/healthz/ready", ports.readiness)).await;
    assert_eq!(code, "503");

    // New connections are closed at once, whatever they send.
    for addr in [ports.outbound, ports.inbound] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
            .await
            .expect("closed");
        assert!(buf.is_empty());
    }

    let (code, body) = status(&format!("http://{}/config_dump", ports.admin)).await;
    assert_eq!(code, "200");
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["config"]["synced"], false);
    assert_eq!(dump["xds_status"]["connected"], false);
    assert_eq!(dump["node"]["labels"]["app"], "test");

    let (code, _) = status(&format!("http://{}/quitquitquit", ports.admin)).await;
    assert_eq!(code, "405", "GET is refused");
    let out = curl(&[
        "-s",
        "-X",
        "POST",
        &format!("http://{}/quitquitquit", ports.admin),
    ])
    .await;
    assert_eq!(out, "OK\n");
    let exit = proxy
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_with_config_and_dump_shows_versions() {
    let echo = http_echo("app").await;
    let ports = Ports::new();
    let ads = serve_ads(resources(&ports, echo)).await;
    let proxy = Proxy::start(ads, ports, &[]);
    proxy.wait_ready().await;
    let (code, body) = status(&format!("http://{}/ready", ports.admin)).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", "LIVE"));
    let (_, body) = status(&format!("http://{}/config_dump", ports.admin)).await;
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["config"]["synced"], true);
    assert_eq!(dump["xds_status"]["connected"], true);
    assert!(dump["config"]["versions"]["Listener"].is_string(), "{dump}");
    assert!(dump["config"]["versions"]["Cluster"].is_string(), "{dump}");
    assert!(dump["config"]["listeners"]["virtualInbound"].is_object());
    let r = get(ports.inbound, "app", "/", false).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let echo = http_echo("app").await;
    let ports = Ports::new();
    let ads = serve_ads(resources(&ports, echo)).await;
    let mut proxy = Proxy::start(ads, ports, &[]);
    proxy.wait_ready().await;

    let slow =
        tokio::spawn(async move { get(ports.inbound, "app", "/?delay_ms=1000", false).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    proxy.signal("TERM");
    // Readiness turns 503 while draining.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, _) = status(&format!("http://{}/healthz/ready", ports.readiness)).await;
    assert!(code == "503" || code == "000", "{code}");

    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request completes");
    let exit = proxy
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits");
    assert!(exit.success(), "{exit:?}");
    // Exited once idle, within the 3 s drain duration.
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "{:?}",
        signalled.elapsed()
    );
    let logs = proxy.access_logs();
    assert!(logs
        .iter()
        .any(|l| l["path"] == "/?delay_ms=1000" && l["response_code"] == 200));
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
            .args(["run", "--xds-address", "127.0.0.1:1", "--pod-name", "p"])
            .args(["--namespace", "ns", "--ip", "127.0.0.1"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--protocol-detection-timeout", "0s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--protocol-detection-timeout"), "{err}");

    let out = run(&["--labels", "app"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--labels"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["--admin-addr", &addr, "--outbound-addr", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--outbound-addr"), "{err}");
    let free = |_| format!("127.0.0.1:{}", free_port());
    let [o, i, r]: [String; 3] = [0, 1, 2].map(free);
    let out = run(&[
        "--admin-addr",
        &addr,
        "--outbound-addr",
        &o,
        "--inbound-addr",
        &i,
        "--readiness-addr",
        &r,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin-addr") && err.contains("in use"),
        "{err}"
    );
}

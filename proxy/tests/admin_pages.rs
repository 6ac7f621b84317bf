//! The admin port's `/logging`, `/memory`, `/drain_listeners` and `/config_dump` against a
//! running `mesh-proxy` (one sidecar on loopback, its config from an in-test ADS server): log
//! levels changed per module and for everything, the effect seen on the proxy's stderr and
//! in the listing, bad parameters refused with a message; `/memory`'s allocator figures sane
//! and growing with the load; Envoy's graceful and inbound-only drains seen by new
//! connections; every config-dump section with the version each resource arrived in.

mod common;
#[path = "traffic_support/ads.rs"]
mod push_ads;
#[allow(dead_code)]
mod telemetry_support;
use telemetry_support::*;

use std::time::{Duration, Instant};

use common::upstreams::http_echo;
use common::xds::*;
use common::{curl, Ports, Proxy};
use tokio::io::AsyncWriteExt;

/// The cluster the telemetry scene's routes use.
const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

/// The debug line the HTTP path writes when it refuses a request path (`proxy::http`).
const REFUSED: &str = "path refused";

/// `curl ARGS` with the status code and the body: `(status, body)`.
async fn call(args: &[&str]) -> (String, String) {
    let mut a = vec!["-s", "-w", "\n%{http_code}"];
    a.extend_from_slice(args);
    let out = curl(&a).await;
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.to_string(), body.to_string())
}

/// Polls the proxy's stderr until a line contains `needle`.
async fn wait_stderr(proxy: &Proxy, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = proxy.stderr();
        if lines.iter().any(|l| l.contains(needle)) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn logging_levels_change_per_module_and_globally() {
    let app = http_echo("app").await;
    let ports = Ports::new();
    let proxy = Proxy::start(serve_ads(server_resources(&ports, app)).await, ports, &[]);
    proxy.wait_ready().await;
    let admin = |q: &str| format!("http://{}/logging{q}", proxy.admin);
    let refused = format!("http://{}/a%00b", proxy.inbound);
    let post = |q: String| async move { call(&["-X", "POST", &q]).await };

    // Started with RUST_LOG=info: the listing says so, and a refused path logs nothing.
    let (status, listing) = call(&[&admin("")]).await;
    assert_eq!(status, "200");
    assert!(listing.contains("active filter: info\n"), "{listing}");
    assert!(
        listing.contains("levels: trace, debug, info, warn, error, off"),
        "{listing}"
    );
    assert_eq!(call(&[&refused]).await.0, "400");

    // One module to debug (Envoy's `?paths=`): its debug lines appear, others' do not.
    let (status, body) = post(admin("?paths=proxy::http:debug")).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("200", "active filter: info,proxy::http=debug\n")
    );
    assert_eq!(call(&[&refused]).await.0, "400");
    let lines = wait_stderr(&proxy, REFUSED).await;
    assert_eq!(
        count(&lines, REFUSED),
        1,
        "only the request after the change"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("DEBUG") && !l.contains("proxy::http")),
        "only proxy::http logs at debug: {lines:#?}"
    );
    let (_, listing) = call(&[&admin("")]).await;
    assert!(
        listing.contains("active filter: info,proxy::http=debug\n"),
        "{listing}"
    );

    // `?MODULE=LEVEL` (Envoy's form) puts it back to info: nothing more is written. The
    // change's own info line, written after the refused request's reply, marks how far the
    // log has come.
    let (status, body) = post(admin("?proxy::http=info")).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("200", "active filter: info,proxy::http=info\n")
    );
    assert_eq!(call(&[&refused]).await.0, "400");
    let (status, _) = post(admin("?xds_client=warn")).await;
    assert_eq!(status, "200");
    let lines = wait_stderr(&proxy, "info,proxy::http=info,xds_client=warn").await;
    assert_eq!(
        count(&lines, REFUSED),
        1,
        "proxy::http is back at info: {lines:#?}"
    );

    // `?level=` sets every module at once and drops the per-module ones.
    let (status, body) = post(admin("?level=debug")).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("200", "active filter: debug\n")
    );
    assert_eq!(call(&[&refused]).await.0, "400");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&proxy.stderr(), REFUSED) < 2 {
        assert!(Instant::now() < deadline, "level=debug has no effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, listing) = call(&[&admin("")]).await;
    assert!(listing.contains("active filter: debug\n"), "{listing}");
    let (status, _) = post(admin("?level=off")).await;
    assert_eq!(status, "200");

    // Bad parameters: 400 with what is wrong, and the filter stays as it was.
    for (q, message) in [
        (
            "?level=loud",
            "invalid level `loud`: expected one of trace, debug, info, warn, error, off",
        ),
        (
            "?paths=nocolon",
            "invalid paths entry `nocolon`: expected MODULE:LEVEL",
        ),
        ("?paths=proxy:loud", "invalid level `loud`"),
        ("?bad-module=debug", "invalid module `bad-module`"),
        ("?proxy::=debug", "invalid module `proxy::`"),
    ] {
        let (status, body) = post(admin(q)).await;
        assert_eq!(status, "400", "{q}: {body}");
        assert!(body.contains(message), "{q}: {body}");
    }
    let (status, body) = call(&[&admin("?level=debug")]).await;
    assert_eq!(status, "405", "a GET never changes levels: {body}");
    let (_, listing) = call(&[&admin("")]).await;
    assert!(listing.contains("active filter: off\n"), "{listing}");
}

/// `/memory` as JSON: `(allocated, heap_size, total_physical_bytes)`.
async fn memory(proxy: &Proxy) -> (u64, u64, u64) {
    let (status, body) = call(&[&format!("http://{}/memory", proxy.admin)]).await;
    assert_eq!(status, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let n = |k: &str| -> u64 {
        v[k].as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {v}"))
    };
    assert_eq!(
        v["jemalloc"]["allocated"].as_u64(),
        Some(n("allocated")),
        "{v}"
    );
    (n("allocated"), n("heap_size"), n("total_physical_bytes"))
}

#[tokio::test]
async fn memory_reports_the_allocator_and_grows_with_the_load() {
    let app = http_echo("app").await;
    let ports = Ports::new();
    let proxy = Proxy::start(serve_ads(server_resources(&ports, app)).await, ports, &[]);
    proxy.wait_ready().await;
    let (allocated, heap, physical) = memory(&proxy).await;
    // A sidecar with one small config: a few hundred KiB to a few hundred MiB allocated
    // (jemalloc: allocated <= active <= mapped and resident).
    assert!(
        (256 << 10..512 << 20).contains(&allocated),
        "allocated {allocated}"
    );
    assert!(heap >= allocated, "heap {heap} < allocated {allocated}");
    assert!(
        physical >= allocated,
        "resident {physical} < allocated {allocated}"
    );
    assert_eq!(
        call(&[&format!("http://{}/memory?x=1", proxy.admin)])
            .await
            .0,
        "400"
    );

    // 200 connections held open, each with half a request in the proxy's buffers: more is
    // allocated while they are open (at least 1 KiB each).
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nX-Pad: ")
            .await
            .unwrap();
        held.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let grown = loop {
        let (now, _, _) = memory(&proxy).await;
        if now > allocated + (200 << 10) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "allocated {allocated} -> {now} with 200 open connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(grown > allocated);
    drop(held);
}

/// The outbound scene of the telemetry tests (`reviews` to `app`) and the inbound one
/// (delivering to `app`) in one sidecar.
fn inbound_and_outbound(ports: &Ports, app: std::net::SocketAddr) -> Resources {
    let mut r = server_resources(ports, app);
    for (kind, items) in client_resources(ports, app).0 {
        r.0.entry(kind).or_default().extend(items);
    }
    r
}

/// GET `/` through `addr` with `Host: host`: the status and whether the response asks the
/// client to close; `("000", _)` when the connection is refused or closed unanswered.
async fn probe(addr: std::net::SocketAddr, host: &str) -> (String, bool) {
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Host: {host}"),
        &format!("http://{addr}/"),
    ])
    .await;
    let close = out.to_ascii_lowercase().contains("connection: close");
    (out.lines().last().unwrap_or("").to_string(), close)
}

/// The `--drain-duration` every test proxy runs with (`common::Proxy::start`).
const DRAIN: Duration = Duration::from_secs(3);

/// POST `/drain_listeners{query}`, then poll until `addr` refuses new connections; checks
/// that it accepted them (each response asking the client to close) until then, and returns
/// how long after the POST the refusals began.
async fn drain_and_wait_refused(
    proxy: &Proxy,
    query: &str,
    addr: std::net::SocketAddr,
) -> Duration {
    let (status, _) = call(&[
        "-X",
        "POST",
        &format!("http://{}/drain_listeners{query}", proxy.admin),
    ])
    .await;
    let posted = Instant::now();
    assert_eq!(status, "200", "{query}");
    assert_eq!(
        call(&[&format!("http://{}/ready", proxy.admin)]).await.0,
        "503"
    );
    let deadline = posted + DRAIN + Duration::from_secs(10);
    let mut accepted = 0;
    loop {
        match probe(addr, "app").await {
            (s, _) if s == "000" => break,
            (s, close) => {
                assert_eq!(s, "200");
                assert!(close, "a draining proxy asks HTTP/1 clients to close");
                accepted += 1;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts after {DRAIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused_after = posted.elapsed();
    assert!(
        accepted > 0,
        "{query}: nothing accepted during the graceful period"
    );
    refused_after
}

#[tokio::test]
async fn graceful_drain_accepts_for_the_drain_duration_then_refuses_everywhere() {
    let app = http_echo("app").await;
    let ports = Ports::new();
    let proxy = Proxy::start(
        serve_ads(inbound_and_outbound(&ports, app)).await,
        ports,
        &[],
    );
    proxy.wait_ready().await;
    assert_eq!(probe(proxy.inbound, "app").await, ("200".into(), false));
    let before = Instant::now();
    let refused_after = drain_and_wait_refused(&proxy, "?graceful", proxy.inbound).await;
    assert!(
        before.elapsed() >= DRAIN,
        "refused after {refused_after:?}, before the drain duration {DRAIN:?}"
    );
    assert_eq!(
        probe(proxy.outbound, "reviews").await.0,
        "000",
        "outbound too"
    );
}

#[tokio::test]
async fn inboundonly_drains_only_the_inbound_listener() {
    let app = http_echo("app").await;
    let ports = Ports::new();
    let proxy = Proxy::start(
        serve_ads(inbound_and_outbound(&ports, app)).await,
        ports,
        &[],
    );
    proxy.wait_ready().await;
    // Envoy refuses `skip_exit` without `graceful`, saying why.
    let (status, body) = call(&[
        "-X",
        "POST",
        &format!("http://{}/drain_listeners?skip_exit", proxy.admin),
    ])
    .await;
    assert_eq!(status, "400");
    assert!(body.contains("skip_exit requires graceful"), "{body}");
    // Istio's call at shutdown: inbound only, graceful.
    let before = Instant::now();
    drain_and_wait_refused(&proxy, "?inboundonly&graceful", proxy.inbound).await;
    assert!(before.elapsed() >= DRAIN);
    for _ in 0..3 {
        assert_eq!(
            probe(proxy.outbound, "reviews").await.0,
            "200",
            "the outbound listener still accepts"
        );
    }
}

/// `/config_dump`, parsed.
async fn dump(proxy: &Proxy, query: &str) -> serde_json::Value {
    let (status, body) = call(&[&format!("http://{}/config_dump{query}", proxy.admin)]).await;
    assert_eq!(status, "200", "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Every resource of every config-dump section, with its `version_info` (the section's too
/// where Envoy has one), and whether `?resource=NAME` gave the same resources as the whole
/// dump's `configs[]` (it may not while a push is being applied).
async fn versions(proxy: &Proxy) -> (Vec<(String, String)>, bool) {
    let all = dump(proxy, "").await;
    let mut out = Vec::new();
    let mut same = true;
    for (kind, section, has_version) in [
        ("Listeners", "dynamic_listeners", true),
        ("Clusters", "dynamic_active_clusters", true),
        ("Routes", "dynamic_route_configs", false),
        ("Endpoints", "dynamic_endpoint_configs", false),
        ("Secrets", "dynamic_active_secrets", false),
    ] {
        let at = format!("type.googleapis.com/envoy.admin.v3.{kind}ConfigDump");
        let s = all["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["@type"] == at.as_str())
            .unwrap_or_else(|| panic!("no {at}"));
        if has_version {
            out.push((
                kind.to_string(),
                s["version_info"].as_str().unwrap().to_string(),
            ));
        }
        let one = dump(proxy, &format!("?resource={section}")).await;
        same &= one["configs"] == s[section];
        for item in s[section].as_array().unwrap() {
            let name = item["name"]
                .as_str()
                .or(item["cluster"]["name"].as_str())
                .or(item["route_config"]["name"].as_str())
                .or(item["endpoint_config"]["cluster_name"].as_str())
                .unwrap_or("?");
            // Envoy's `DynamicListener` carries it in its `active_state`.
            let state = if kind == "Listeners" {
                &item["active_state"]
            } else {
                item
            };
            let version = state["version_info"].as_str();
            let version = version.unwrap_or_else(|| panic!("no version_info in {kind}: {item}"));
            out.push((format!("{kind}/{name}"), version.to_string()));
        }
    }
    (out, same)
}

#[tokio::test]
async fn config_dump_sections_carry_each_resources_version() {
    let app = http_echo("app").await;
    let ports = Ports::new();
    let resources = || inbound_and_outbound(&ports, app);
    let ads = push_ads::PushAds::start(resources()).await;
    let proxy = Proxy::start(ads.addr, ports, &[]);
    proxy.wait_ready().await;

    let (v1, same) = versions(&proxy).await;
    assert!(same, "?resource= gives the dump's resources");
    for kind in [
        "Listeners/virtualInbound",
        "Clusters/inbound|9080||",
        "Routes/",
        "Endpoints/",
    ] {
        assert!(
            v1.iter().any(|(k, _)| k.starts_with(kind)),
            "{kind} in {v1:?}"
        );
    }
    assert!(v1.iter().all(|(_, v)| v == "1"), "{v1:?}");
    let secrets = dump(&proxy, "?resource=dynamic_active_secrets").await;
    assert_eq!(
        secrets["configs"],
        serde_json::json!([]),
        "no identity, no secret"
    );

    // A new push: every section and resource moves to version 2.
    ads.push(resources());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now, same) = versions(&proxy).await;
        if same && now.iter().all(|(_, v)| v == "2") {
            assert_eq!(now.len(), v1.len(), "{now:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Bad parameters elsewhere: 400 with a message naming them.
    for (path, message) in [
        (
            "/config_dump?resource=nope",
            "unknown resource `nope`; expected one of: dynamic_listeners",
        ),
        ("/config_dump?bogus=1", "unknown parameter `bogus`"),
        (
            "/stats?format=xml",
            "invalid format `xml`: expected text, json or prometheus",
        ),
        (
            "/clusters?format=yaml",
            "invalid format `yaml`: expected text or json",
        ),
        ("/listeners?bogus=1", "unknown parameter `bogus`"),
    ] {
        let (status, body) = call(&[&format!("http://{}{path}", proxy.admin)]).await;
        assert_eq!(status, "400", "{path}: {body}");
        assert!(body.contains(message), "{path}: {body}");
    }
}

//! The admin port's `/logging` and `/memory` against a running `mesh-proxy` (one sidecar on
//! loopback, its config from an in-test ADS server): log levels changed per module and for
//! everything, the effect seen on the proxy's stderr and in the listing, bad parameters
//! refused with a message; `/memory`'s allocator figures sane and growing with the load.

mod common;
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

//! The access-log flags of a running `mesh-proxy`, read from its stdout:
//! `--access-log-format text` writes Istio's default text layout with the request's values
//! (a proxied 200 and a local 503 `UH`), and `--access-log off` writes no line at all while
//! a control proxy started the same way without the flag logs the same requests. The
//! dropped-lines counter is exported on `/stats/prometheus`.

mod common;
#[allow(dead_code)]
mod telemetry_support;
use telemetry_support::*;

use std::time::{Duration, Instant};

use common::upstreams::http_echo;
use common::xds::*;
use common::{curl, free_port, get, Ports, Proxy};

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

/// Istio's `EnvoyTextLogFormat`, one capture group per operator, in order.
const ISTIO_TEXT: &str = concat!(
    r#"^\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" "#,
    r#"(?P<code>\d+) (?P<flags>\S+) (?P<details>\S+) (?P<termination>\S+) "#,
    r#""(?P<transport_failure>[^"]*)" (?P<received>\d+) (?P<sent>\d+) (?P<duration>\d+) "#,
    r#"(?P<service_time>\S+) "(?P<xff>[^"]*)" "(?P<user_agent>[^"]*)" "(?P<request_id>[^"]*)" "#,
    r#""(?P<authority>[^"]*)" "(?P<upstream_host>[^"]*)" (?P<cluster>\S+) "#,
    r#"(?P<upstream_local>\S+) (?P<downstream_local>\S+) (?P<downstream_remote>\S+) "#,
    r#"(?P<sni>\S+) (?P<route>\S+)$"#
);

/// Polls the proxy's stdout until a line contains `needle`.
async fn wait_line(proxy: &Proxy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = proxy.stdout().into_iter().find(|l| l.contains(needle)) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} in {:?}",
            proxy.stdout()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the proxy's stats until `envoy_http_downstream_rq_total` reaches `n`.
async fn wait_requests(proxy: &Proxy, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = find(
            &scrape(proxy.stats).await,
            "envoy_http_downstream_rq_total",
            &[],
        )
        .map(counter);
        if got >= Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "requests handled: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn text_format_writes_istios_default_layout_with_the_requests_values() {
    let app = http_echo("reviews").await;
    let ports = Ports::new();
    let proxy = Proxy::start(
        serve_ads(client_resources(&ports, app)).await,
        ports,
        &["--access-log-format", "text"],
    );
    proxy.wait_ready().await;

    // A proxied POST with known headers, from a known client port.
    let local_port = free_port().to_string();
    let url = format!("http://{}/text/1?q=1", proxy.outbound);
    let out = curl(&[
        "-s",
        "--local-port",
        &local_port,
        "-w",
        "\n%{http_code} %{size_download}",
        "-H",
        "Host: reviews:9080",
        "-H",
        "x-request-id: text-rid-1",
        "-H",
        "x-forwarded-for: 10.1.2.3",
        "-A",
        "text-agent/1.0",
        "--data-binary",
        "hello",
        &url,
    ])
    .await;
    let (body, tail) = out.rsplit_once('\n').unwrap();
    let (status, size) = tail.split_once(' ').unwrap();
    assert_eq!(status, "200", "{out}");
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();

    let re = regex::Regex::new(ISTIO_TEXT).unwrap();
    let line = wait_line(&proxy, "text-rid-1").await;
    let f = re
        .captures(&line)
        .unwrap_or_else(|| panic!("not Istio's text layout: {line}"));
    let start = chrono::DateTime::parse_from_rfc3339(&f["start"]).expect("RFC 3339 start");
    assert!(
        f["start"].ends_with('Z') && f["start"].len() == 24,
        "{line}"
    );
    let age = chrono::Utc::now().signed_duration_since(start);
    assert!(age.num_seconds().abs() < 60, "start_time {start}");
    for (field, want) in [
        ("method", "POST"),
        ("path", "/text/1?q=1"),
        ("protocol", "HTTP/1.1"),
        ("code", "200"),
        ("flags", "-"),
        ("details", "via_upstream"),
        ("termination", "-"),
        ("transport_failure", "-"),
        ("received", "5"),
        ("sent", size),
        ("xff", "10.1.2.3"),
        ("user_agent", "text-agent/1.0"),
        ("request_id", "text-rid-1"),
        ("authority", "reviews:9080"),
        ("upstream_host", &app.to_string()),
        ("cluster", REVIEWS),
        ("upstream_local", echo["peer"].as_str().unwrap()),
        ("downstream_local", &ports.outbound.to_string()),
        ("downstream_remote", &format!("127.0.0.1:{local_port}")),
        ("sni", "-"),
        ("route", "default"),
    ] {
        assert_eq!(&f[field], want, "{field} in {line}");
    }
    assert!(f["duration"].parse::<u64>().is_ok(), "{line}");
    assert!(f["service_time"].parse::<u64>().is_ok(), "{line}");
    assert!(
        f["duration"].parse::<u64>().unwrap() >= f["service_time"].parse::<u64>().unwrap(),
        "{line}"
    );

    // A local reply: no healthy upstream.
    assert_eq!(
        get(proxy.outbound, "nowhere", "/gone", false).await.status,
        503
    );
    let line = wait_line(&proxy, "/gone").await;
    let f = re
        .captures(&line)
        .unwrap_or_else(|| panic!("not Istio's text layout: {line}"));
    for (field, want) in [
        ("method", "GET"),
        ("code", "503"),
        ("flags", "UH"),
        ("details", "no_healthy_upstream"),
        ("received", "0"),
        ("service_time", "-"),
        ("xff", "-"),
        ("authority", "nowhere"),
        ("upstream_host", "-"),
        ("cluster", "outbound|80||nowhere.default.svc.cluster.local"),
        ("upstream_local", "-"),
    ] {
        assert_eq!(&f[field], want, "{field} in {line}");
    }
    assert!(
        proxy.stdout().iter().all(|l| re.is_match(l)),
        "every stdout line is a text access-log line: {:?}",
        proxy.stdout()
    );

    // Nothing was dropped, and the counter is exported.
    let stats = scrape(proxy.stats).await;
    let dropped = find(&stats, "envoy_access_logs_dropped", &[]).expect("dropped-lines counter");
    assert_eq!(counter(dropped), 0.0);
}

#[tokio::test]
async fn the_global_off_flag_writes_no_access_log_line() {
    let app = http_echo("reviews").await;
    let off_ports = Ports::new();
    let on_ports = Ports::new();
    let off = Proxy::start(
        serve_ads(client_resources(&off_ports, app)).await,
        off_ports,
        &["--access-log", "off"],
    );
    let on = Proxy::start(
        serve_ads(client_resources(&on_ports, app)).await,
        on_ports,
        &[],
    );
    off.wait_ready().await;
    on.wait_ready().await;

    // The same requests to both: a proxied 200 and a local 503.
    for proxy in [&off, &on] {
        assert_eq!(
            get(proxy.outbound, "reviews", "/off/1", false).await.status,
            200
        );
        assert_eq!(
            get(proxy.outbound, "nowhere", "/off/2", false).await.status,
            503
        );
    }
    // The control logs both; the proxy with logging off has handled both and logged nothing.
    on.wait_log(|v| v["path"] == "/off/1" && v["response_code"] == 200)
        .await;
    on.wait_log(|v| v["path"] == "/off/2" && v["response_code"] == 503)
        .await;
    wait_requests(&off, 2.0).await;
    // The off proxy's requests were sent first: had it logged them, the lines would be
    // out already, as the control's are.
    assert_eq!(off.stdout(), Vec::<String>::new(), "logging is off");
    let stats = scrape(off.stats).await;
    assert_eq!(
        counter(find(&stats, "envoy_access_logs_dropped", &[]).expect("dropped counter")),
        0.0,
        "off drops nothing: it never queues"
    );
}

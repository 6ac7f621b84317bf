//! Trace context through a running `mesh-proxy` sidecar to an echo app that returns the
//! headers it saw, with the spans received by an OTLP collector on the published protos:
//! B3 multi-header, single `b3` and W3C `traceparent` + `tracestate` each keep their trace
//! id, get a new span id whose parent is the caller's span (the exported client span is that
//! span), keep the caller's sampling decision and (W3C) the `tracestate` unchanged. A sampled
//! call is exported at 0% sampling; an unsampled one is not exported at 100%.

mod common;
#[allow(dead_code)]
mod telemetry_support;
use telemetry_support::*;

use std::time::{Duration, Instant};

use common::upstreams::http_echo;
use common::xds::*;
use common::{curl, Ports, Proxy};
use opentelemetry_proto::tonic::trace::v1::Span;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A proxy whose outbound `reviews` goes to an echo app, exporting to a fresh collector
/// at `sampling` percent.
async fn traced_proxy(sampling: &str) -> (Proxy, Collector) {
    let app = http_echo("reviews").await;
    let (otlp, spans) = collector().await;
    let endpoint = format!("http://{otlp}");
    let ports = Ports::new();
    let proxy = Proxy::start(
        serve_ads(client_resources(&ports, app)).await,
        ports,
        &[
            "--tracing-otlp-endpoint",
            &endpoint,
            "--tracing-sampling",
            sampling,
        ],
    );
    proxy.wait_ready().await;
    (proxy, spans)
}

/// GET `/` of `reviews` through the proxy with `headers`; the headers the app saw.
async fn call(proxy: &Proxy, headers: &[String]) -> serde_json::Map<String, serde_json::Value> {
    let url = format!("http://{}/", proxy.outbound);
    let mut args = vec!["-s", "-f", "-H", "Host: reviews:9080"];
    for h in headers {
        args.extend(["-H", h.as_str()]);
    }
    args.push(&url);
    let body = curl(&args).await;
    let echo: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    echo["headers"].as_object().unwrap().clone()
}

fn header<'a>(seen: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> &'a str {
    seen.get(name)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("the app saw no {name}: {seen:?}"))
}

/// Polls the collector until a span of trace `trace` arrives.
async fn wait_span(spans: &Collector, trace: &str) -> Span {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = spans.0.lock().unwrap().clone();
        if let Some((_, s)) = got.iter().find(|(_, s)| hex(&s.trace_id) == trace) {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "no span of {trace} in {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn b3_and_w3c_contexts_are_continued_and_sampled_ones_exported_at_zero_percent() {
    let (proxy, spans) = traced_proxy("0").await;

    // B3 multi-header.
    let t1 = "463ac35c9f6413ad48485a3953bb6124";
    let seen = call(
        &proxy,
        &[
            format!("x-b3-traceid: {t1}"),
            format!("x-b3-spanid: {CALLER_SPAN}"),
            "x-b3-sampled: 1".into(),
        ],
    )
    .await;
    assert_eq!(header(&seen, "x-b3-traceid"), t1);
    assert_eq!(header(&seen, "x-b3-parentspanid"), CALLER_SPAN);
    assert_eq!(header(&seen, "x-b3-sampled"), "1");
    let b3_multi_span = header(&seen, "x-b3-spanid").to_string();
    assert_eq!(b3_multi_span.len(), 16);
    assert_ne!(b3_multi_span, CALLER_SPAN);
    assert!(!seen.contains_key("b3"), "answered in kind: {seen:?}");

    // Single `b3`: trace-span-sampled.
    let t2 = "80f198ee56343ba864fe8b2a57d3eff7";
    let seen = call(&proxy, &[format!("b3: {t2}-{CALLER_SPAN}-1")]).await;
    let b3 = header(&seen, "b3");
    let parts: Vec<&str> = b3.split('-').collect();
    assert_eq!(parts.len(), 4, "trace-span-sampled-parent: {b3}");
    assert_eq!(
        (parts[0], parts[2], parts[3]),
        (t2, "1", CALLER_SPAN),
        "{b3}"
    );
    let b3_single_span = parts[1].to_string();
    assert_eq!(b3_single_span.len(), 16);
    assert_ne!(b3_single_span, CALLER_SPAN);

    // W3C with a tracestate.
    let t3 = "4bf92f3577b34da6a3ce929d0e0e4736";
    let seen = call(
        &proxy,
        &[
            format!("traceparent: 00-{t3}-{CALLER_SPAN}-01"),
            format!("tracestate: {TRACESTATE}"),
        ],
    )
    .await;
    let tp = header(&seen, "traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", t3, "01"), "{tp}");
    let w3c_span = parts[2].to_string();
    assert_eq!(w3c_span.len(), 16);
    assert_ne!(w3c_span, CALLER_SPAN);
    assert_eq!(header(&seen, "tracestate"), TRACESTATE);

    // Each call's span is the one the app saw as its parent, a child of the caller's span.
    for (trace, span_id) in [(t1, b3_multi_span), (t2, b3_single_span), (t3, w3c_span)] {
        let span = wait_span(&spans, trace).await;
        assert_eq!(hex(&span.span_id), span_id, "trace {trace}");
        assert_eq!(hex(&span.parent_span_id), CALLER_SPAN, "trace {trace}");
        assert_eq!(span.kind, 3, "a client span: {span:?}");
        assert_eq!(attr(&span, "upstream_cluster").as_deref(), Some(REVIEWS));
    }
    assert_eq!(spans.0.lock().unwrap().len(), 3, "one span per call");
}

#[tokio::test]
async fn unsampled_contexts_are_kept_unsampled_and_not_exported_at_full_sampling() {
    let (proxy, spans) = traced_proxy("100").await;

    let t1 = "11111111111111111111111111111111";
    let seen = call(
        &proxy,
        &[
            format!("x-b3-traceid: {t1}"),
            format!("x-b3-spanid: {CALLER_SPAN}"),
            "x-b3-sampled: 0".into(),
        ],
    )
    .await;
    assert_eq!(header(&seen, "x-b3-traceid"), t1);
    assert_eq!(header(&seen, "x-b3-parentspanid"), CALLER_SPAN);
    assert_eq!(header(&seen, "x-b3-sampled"), "0");

    let t2 = "22222222222222222222222222222222";
    let seen = call(&proxy, &[format!("b3: {t2}-{CALLER_SPAN}-0")]).await;
    let b3 = header(&seen, "b3");
    assert!(b3.starts_with(&format!("{t2}-")), "{b3}");
    assert!(b3.ends_with(&format!("-0-{CALLER_SPAN}")), "{b3}");

    let t3 = "33333333333333333333333333333333";
    let seen = call(
        &proxy,
        &[
            format!("traceparent: 00-{t3}-{CALLER_SPAN}-00"),
            format!("tracestate: {TRACESTATE}"),
        ],
    )
    .await;
    let tp = header(&seen, "traceparent");
    assert!(
        tp.starts_with(&format!("00-{t3}-")) && tp.ends_with("-00"),
        "{tp}"
    );
    assert!(!tp.contains(CALLER_SPAN), "{tp}");
    assert_eq!(header(&seen, "tracestate"), TRACESTATE);

    // A call without a context, after those three, is sampled at 100% and exported; by the
    // time its span arrives the earlier ones would have too.
    let seen = call(&proxy, &[]).await;
    let control = header(&seen, "traceparent")
        .split('-')
        .nth(1)
        .unwrap()
        .to_string();
    assert!(header(&seen, "traceparent").ends_with("-01"));
    wait_span(&spans, &control).await;
    let traces: Vec<String> = spans
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| hex(&s.trace_id))
        .collect();
    assert_eq!(traces, vec![control], "unsampled calls are not exported");
}

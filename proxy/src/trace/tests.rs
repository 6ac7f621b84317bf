use http::HeaderMap;

use super::*;

fn tracer(sampling: f64) -> Tracer {
    Tracer::new(TracingSettings {
        sampling,
        endpoint: Some("http://127.0.0.1:1".into()),
        service_name: "reviews.default".into(),
        tags: vec![("istio.canonical_service", "reviews".into())],
    })
}

fn with(name: &str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    h
}

#[test]
fn upstream_decisions_are_honoured_whatever_the_percentage() {
    let t = tracer(0.0);
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let s = t.begin(&with("traceparent", parent), Side::Server);
    assert!(s.sampled);
    assert_eq!(propagation::to_hex(&s.parent.unwrap()), "00f067aa0ba902b7");
    assert_ne!(s.span_id, s.parent.unwrap());
    let t = tracer(100.0);
    assert!(!t.begin(&with("x-b3-sampled", "0"), Side::Client).sampled);
    assert!(!t.begin(&with("b3", "0"), Side::Client).sampled);
}

#[test]
fn the_percentage_decides_new_traces() {
    assert!(tracer(100.0).begin(&HeaderMap::new(), Side::Client).sampled);
    assert!(!tracer(0.0).begin(&HeaderMap::new(), Side::Client).sampled);
    let t = tracer(50.0);
    let sampled = (0..2000)
        .filter(|_| t.begin(&HeaderMap::new(), Side::Client).sampled)
        .count();
    assert!((800..1200).contains(&sampled), "{sampled}");
}

#[test]
fn a_new_trace_is_propagated_with_its_decision() {
    let t = tracer(100.0);
    let s = t.begin(&HeaderMap::new(), Side::Client);
    assert!(s.parent.is_none());
    let mut next = HeaderMap::new();
    for (k, v) in s.headers() {
        next.insert(k, v);
    }
    let ctx = propagation::extract(&next).unwrap();
    assert_eq!(ctx.trace_id, s.trace_id);
    assert_eq!(ctx.span_id, s.span_id);
    assert_eq!(ctx.sampled, Some(true));
    assert!(
        next.contains_key("x-b3-traceid"),
        "B3 for applications that propagate it"
    );
}

#[test]
fn finished_spans_are_queued_and_a_full_queue_drops() {
    let t = tracer(100.0);
    let s = t.begin(&HeaderMap::new(), Side::Client);
    t.finish(
        &s,
        Finished {
            name: "reviews.default.svc.cluster.local:9080/*".into(),
            method: "GET",
            status: 503,
            response_flags: "UH",
            ..Finished::default()
        },
    );
    let mut rx = t.take_receiver().unwrap();
    let (endpoint, span) = rx.try_recv().unwrap();
    assert_eq!(endpoint, "http://127.0.0.1:1");
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(
        span.span_context.trace_id(),
        TraceId::from_bytes(s.trace_id)
    );
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("http.status_code").as_deref(), Some("503"));
    assert_eq!(attr("response_flags").as_deref(), Some("UH"));
    assert_eq!(attr("error").as_deref(), Some("true"));
    assert_eq!(attr("component").as_deref(), Some("proxy"));
    assert_eq!(attr("istio.canonical_service").as_deref(), Some("reviews"));
    for _ in 0..QUEUE + 3 {
        t.finish(&s, Finished::default());
    }
    assert_eq!(t.dropped.load(Ordering::Relaxed), 3);
}

#[test]
fn a_listener_sampling_and_collector_replace_the_proxy_own() {
    let t = tracer(0.0);
    // The proxy samples nothing; the listener's 100% wins.
    assert!(!t.begin(&HeaderMap::new(), Side::Server).sampled);
    let s = t.begin_with(&HeaderMap::new(), Side::Server, Some(100.0));
    assert!(s.sampled);
    assert!(
        !t.begin_with(&HeaderMap::new(), Side::Server, Some(0.0))
            .sampled
    );
    t.finish_to(&s, Finished::default(), Some("http://10.0.0.9:4317".into()));
    let (endpoint, _) = t.take_receiver().unwrap().try_recv().unwrap();
    assert_eq!(endpoint, "http://10.0.0.9:4317");
}

use http::HeaderMap;

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

#[test]
fn w3c_traceparent() {
    let h = headers(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]);
    let ctx = extract(&h).unwrap();
    assert_eq!(to_hex(&ctx.trace_id), TRACE);
    assert_eq!(to_hex(&ctx.span_id), SPAN);
    assert_eq!(ctx.sampled, Some(true));
    assert_eq!(ctx.format, Format::W3c);
    assert_eq!(ctx.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    let unsampled = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-00"))]);
    assert_eq!(extract(&unsampled).unwrap().sampled, Some(false));
}

#[test]
fn w3c_rejects_malformed_values() {
    for bad in [
        format!("00-{TRACE}-{SPAN}"),
        format!("00-{}-{SPAN}-01", "0".repeat(32)),
        format!("00-{TRACE}-{}-01", "0".repeat(16)),
        format!("ff-{TRACE}-{SPAN}-01"),
        format!("00-{TRACE}-{SPAN}-01-extra"),
        format!("00-{}-{SPAN}-01", &TRACE[..30]),
        "garbage".to_string(),
    ] {
        assert!(parse_traceparent(&bad).is_none(), "{bad}");
    }
    // A later version may carry more fields.
    assert!(parse_traceparent(&format!("01-{TRACE}-{SPAN}-01-what-ever")).is_some());
}

#[test]
fn b3_multi_with_64_bit_ids_and_debug() {
    let h = headers(&[
        ("x-b3-traceid", "a3ce929d0e0e4736"),
        ("x-b3-spanid", SPAN),
        ("x-b3-parentspanid", "1111111111111111"),
        ("x-b3-flags", "1"),
    ]);
    let ctx = extract(&h).unwrap();
    assert_eq!(to_hex(&ctx.trace_id), "0000000000000000a3ce929d0e0e4736");
    assert_eq!(ctx.sampled, Some(true), "debug implies sampled");
    assert_eq!(ctx.format, Format::B3Multi);
    let no_decision = headers(&[("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)]);
    assert_eq!(extract(&no_decision).unwrap().sampled, None);
    // A decision without ids starts a new trace with that decision.
    assert_eq!(
        extract(&headers(&[("x-b3-sampled", "0")])),
        Err(Some(false))
    );
}

#[test]
fn b3_single() {
    let h = headers(&[("b3", &format!("{TRACE}-{SPAN}-1-1111111111111111"))]);
    let ctx = extract(&h).unwrap();
    assert_eq!(ctx.sampled, Some(true));
    assert_eq!(ctx.format, Format::B3Single);
    assert_eq!(
        extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}"))]))
            .unwrap()
            .sampled,
        None
    );
    assert_eq!(extract(&headers(&[("b3", "0")])), Err(Some(false)));
    assert_eq!(extract(&headers(&[("b3", "d")])), Err(Some(true)));
    assert!(parse_b3_single(&format!("{TRACE}-{SPAN}-x")).is_none());
    assert_eq!(extract(&HeaderMap::new()), Err(None));
}

#[test]
fn w3c_wins_over_b3() {
    let h = headers(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-00")),
        ("x-b3-traceid", "1111111111111111"),
        ("x-b3-spanid", "2222222222222222"),
        ("x-b3-sampled", "1"),
    ]);
    let ctx = extract(&h).unwrap();
    assert_eq!(ctx.format, Format::W3c);
    assert_eq!(ctx.sampled, Some(false));
}

#[test]
fn inject_answers_in_kind() {
    let trace = hex_bytes::<16>(TRACE).unwrap();
    let span = hex_bytes::<8>("1234567890abcdef").unwrap();
    let parent = hex_bytes::<8>(SPAN).unwrap();
    let w3c = inject(
        &trace,
        &span,
        Some(&parent),
        true,
        Some(Format::W3c),
        Some("a=b"),
    );
    assert_eq!(
        w3c,
        vec![
            (
                TRACEPARENT,
                HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-1234567890abcdef-01")
            ),
            (TRACESTATE, HeaderValue::from_static("a=b")),
        ]
    );
    let multi = inject(
        &trace,
        &span,
        Some(&parent),
        false,
        Some(Format::B3Multi),
        None,
    );
    let get = |name: &HeaderName| {
        multi
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap().to_string())
    };
    assert_eq!(get(&B3_TRACE_ID).as_deref(), Some(TRACE));
    assert_eq!(get(&B3_SPAN_ID).as_deref(), Some("1234567890abcdef"));
    assert_eq!(get(&B3_PARENT_SPAN_ID).as_deref(), Some(SPAN));
    assert_eq!(get(&B3_SAMPLED).as_deref(), Some("0"));
    assert!(get(&TRACEPARENT).unwrap().ends_with("-00"));
    let single = inject(
        &trace,
        &span,
        Some(&parent),
        true,
        Some(Format::B3Single),
        None,
    );
    assert_eq!(
        single[1].1.to_str().unwrap(),
        format!("{TRACE}-1234567890abcdef-1-{SPAN}")
    );
    // Round trip: what is injected is read back as the same context.
    let mut h = HeaderMap::new();
    for (k, v) in inject(&trace, &span, None, true, None, None) {
        h.insert(k, v);
    }
    let back = extract(&h).unwrap();
    assert_eq!(
        (back.trace_id, back.span_id, back.sampled),
        (trace, span, Some(true))
    );
}

//! Trace context propagation formats: W3C Trace Context (`traceparent`, `tracestate`), B3
//! multi-header (`x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`,
//! `x-b3-flags`) and B3 single-header (`b3`).
//!
//! [`extract`] reads the context a request arrived with (W3C first, then `b3`, then the B3
//! headers, as Envoy's OpenTelemetry and Zipkin tracers accept them); [`inject`] writes the
//! context of this proxy's span for the next hop: always `traceparent` (and the received
//! `tracestate`), and B3 in the form the request used, so that applications propagating
//! either keep working.

use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// `b3`.
pub const B3: HeaderName = HeaderName::from_static("b3");
/// `x-b3-traceid`.
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// `x-b3-spanid`.
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// `x-b3-parentspanid`.
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// `x-b3-sampled`.
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// `x-b3-flags`.
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// How the incoming context was written (to answer in kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// W3C `traceparent`.
    W3c,
    /// B3 single header.
    B3Single,
    /// B3 multi header.
    B3Multi,
}

/// A trace context: where a request sits in its trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 128-bit trace id (a 64-bit B3 id is padded on the left with zeros).
    pub trace_id: [u8; 16],
    /// The span the next hop's span is a child of.
    pub span_id: [u8; 8],
    /// The sampling decision: `Some` when one was made upstream (or by this proxy).
    pub sampled: Option<bool>,
    /// W3C `tracestate`, passed on unchanged.
    pub tracestate: Option<String>,
    /// How it was received.
    pub format: Format,
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A 64- or 128-bit hex trace id; all zeros is invalid.
fn trace_id(s: &str) -> Option<[u8; 16]> {
    let id = match s.len() {
        32 => hex_bytes::<16>(s)?,
        16 => {
            let low = hex_bytes::<8>(s)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        _ => return None,
    };
    (id != [0; 16]).then_some(id)
}

fn span_id(s: &str) -> Option<[u8; 8]> {
    hex_bytes::<8>(s).filter(|id| *id != [0; 8])
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Parse `traceparent` (version 00; higher versions are read by their first four fields, as
/// the specification asks).
pub fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = value.split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || hex_bytes::<1>(version).is_none() {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = hex_bytes::<16>(trace).filter(|id| *id != [0; 16])?;
    let span = span_id(span)?;
    let flags = hex_bytes::<1>(flags)?[0];
    Some((trace, span, flags & 1 == 1))
}

/// Parse a `b3` single header: `TRACEID-SPANID[-SAMPLED[-PARENTSPANID]]`, or a bare
/// sampling state (`0`, `1`, `d`): the latter is returned as a decision without ids.
pub fn parse_b3_single(value: &str) -> Option<B3Single> {
    let sampling = |s: &str| match s {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    };
    let parts: Vec<&str> = value.split('-').collect();
    match parts.as_slice() {
        [s] => sampling(s).map(B3Single::DecisionOnly),
        [t, s, rest @ ..] if rest.len() <= 2 => {
            let trace = trace_id(t)?;
            let span = span_id(s)?;
            let sampled = match rest.first() {
                Some(v) => Some(sampling(v)?),
                None => None,
            };
            if let Some(parent) = rest.get(1) {
                span_id(parent)?;
            }
            Some(B3Single::Context(trace, span, sampled))
        }
        _ => None,
    }
}

/// What a `b3` header holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum B3Single {
    /// Ids and an optional decision.
    Context([u8; 16], [u8; 8], Option<bool>),
    /// Only a sampling decision (`b3: 0`).
    DecisionOnly(bool),
}

/// The context a request arrived with, if any; `Err` carries a bare sampling decision
/// (`b3: 0`, `x-b3-sampled` without ids) for a new trace.
pub fn extract(headers: &HeaderMap) -> Result<TraceContext, Option<bool>> {
    let tracestate = header(headers, &TRACESTATE)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some((trace_id, span_id, sampled)) =
        header(headers, &TRACEPARENT).and_then(parse_traceparent)
    {
        return Ok(TraceContext {
            trace_id,
            span_id,
            sampled: Some(sampled),
            tracestate,
            format: Format::W3c,
        });
    }
    let mut decision = None;
    if let Some(b3) = header(headers, &B3).and_then(parse_b3_single) {
        match b3 {
            B3Single::Context(trace_id, span_id, sampled) => {
                return Ok(TraceContext {
                    trace_id,
                    span_id,
                    sampled,
                    tracestate,
                    format: Format::B3Single,
                })
            }
            B3Single::DecisionOnly(d) => decision = Some(d),
        }
    }
    let debug = header(headers, &B3_FLAGS) == Some("1");
    let sampled = match header(headers, &B3_SAMPLED) {
        _ if debug => Some(true),
        Some("1") | Some("true") => Some(true),
        Some("0") | Some("false") => Some(false),
        _ => None,
    };
    let ids = header(headers, &B3_TRACE_ID)
        .and_then(trace_id)
        .zip(header(headers, &B3_SPAN_ID).and_then(span_id));
    match ids {
        Some((trace_id, span_id)) => Ok(TraceContext {
            trace_id,
            span_id,
            sampled,
            tracestate,
            format: Format::B3Multi,
        }),
        None => Err(decision.or(sampled)),
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    s
}

/// Lowercase hex of a trace or span id.
pub fn to_hex(bytes: &[u8]) -> String {
    hex(bytes)
}

fn value(s: String) -> HeaderValue {
    // Hex digits and dashes are always valid header values.
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The headers that carry `span` (a span of this proxy, child of `parent` when given) to the
/// next hop, in the format(s) `received` used: `traceparent` always (and `tracestate` when
/// one was received); B3 single or multi when the request came with it, and B3 multi for a
/// trace this proxy starts (applications propagate either).
pub fn inject(
    trace_id: &[u8; 16],
    span: &[u8; 8],
    parent: Option<&[u8; 8]>,
    sampled: bool,
    received: Option<Format>,
    tracestate: Option<&str>,
) -> Vec<(HeaderName, HeaderValue)> {
    let flag = if sampled { "1" } else { "0" };
    let mut out = vec![(
        TRACEPARENT,
        value(format!(
            "00-{}-{}-{}",
            hex(trace_id),
            hex(span),
            if sampled { "01" } else { "00" }
        )),
    )];
    if let Some(state) = tracestate {
        if let Ok(v) = HeaderValue::from_str(state) {
            out.push((TRACESTATE, v));
        }
    }
    match received {
        Some(Format::B3Single) => {
            let mut b3 = format!("{}-{}-{flag}", hex(trace_id), hex(span));
            if let Some(p) = parent {
                b3.push('-');
                b3.push_str(&hex(p));
            }
            out.push((B3, value(b3)));
        }
        Some(Format::B3Multi) | None => {
            out.push((B3_TRACE_ID, value(hex(trace_id))));
            out.push((B3_SPAN_ID, value(hex(span))));
            if let Some(p) = parent {
                out.push((B3_PARENT_SPAN_ID, value(hex(p))));
            }
            out.push((
                B3_SAMPLED,
                HeaderValue::from_static(if sampled { "1" } else { "0" }),
            ));
        }
        Some(Format::W3c) => {}
    }
    out
}

#[cfg(test)]
mod tests;

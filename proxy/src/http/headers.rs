//! Header operations of routes, virtual hosts, route configurations and weighted clusters
//! (Envoy's `*_headers_to_add` / `*_headers_to_remove`), applied as Envoy applies them: level
//! by level from the most specific (weighted cluster) to the least (route configuration), each
//! level removing first and adding next, so a less specific level's `set` wins.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderMap;
use pingora_http::{RequestHeader, ResponseHeader};
use xds_client::model::{AppendAction, HeaderAppend, HeaderOps, HeaderValue, ValuePart};

/// What `%VARIABLE%` values are rendered from.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValueContext<'a> {
    /// The downstream peer.
    pub downstream_remote: Option<SocketAddr>,
    /// The connection's original destination.
    pub downstream_local: Option<SocketAddr>,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: &'a str,
    /// The downstream request's headers, for `%REQ(name)%`.
    pub request: Option<&'a HeaderMap>,
}

/// Render a header value.
pub fn render<'v>(value: &'v HeaderValue, cx: &ValueContext<'_>) -> Cow<'v, str> {
    if let Some(literal) = value.as_literal() {
        return Cow::Borrowed(literal);
    }
    let mut out = String::new();
    for part in &value.0 {
        match part {
            ValuePart::Literal(s) => out.push_str(s),
            ValuePart::DownstreamRemoteAddress => {
                if let Some(a) = cx.downstream_remote {
                    out.push_str(&a.to_string());
                }
            }
            ValuePart::DownstreamRemoteAddressWithoutPort => {
                if let Some(a) = cx.downstream_remote {
                    out.push_str(&a.ip().to_string());
                }
            }
            ValuePart::DownstreamLocalAddress => {
                if let Some(a) = cx.downstream_local {
                    out.push_str(&a.to_string());
                }
            }
            ValuePart::DownstreamLocalAddressWithoutPort => {
                if let Some(a) = cx.downstream_local {
                    out.push_str(&a.ip().to_string());
                }
            }
            ValuePart::Protocol => out.push_str(cx.protocol),
            ValuePart::Hostname => out.push_str(&crate::http::hostname()),
            ValuePart::RequestHeader(name) => {
                if let Some(v) = cx.request.and_then(|h| h.get(name.as_str())) {
                    out.push_str(v.to_str().unwrap_or(""));
                }
            }
        }
    }
    Cow::Owned(out)
}

/// A header map that header operations can change.
trait Mutable {
    fn map(&self) -> &HeaderMap;
    fn append(&mut self, name: &str, value: &str);
    fn set(&mut self, name: &str, value: &str);
    fn remove(&mut self, name: &str);
}

impl Mutable for RequestHeader {
    fn map(&self) -> &HeaderMap {
        &self.headers
    }
    fn append(&mut self, name: &str, value: &str) {
        let _ = self.append_header(name.to_string(), value);
    }
    fn set(&mut self, name: &str, value: &str) {
        let _ = self.insert_header(name.to_string(), value);
    }
    fn remove(&mut self, name: &str) {
        let _ = self.remove_header(name);
    }
}

impl Mutable for ResponseHeader {
    fn map(&self) -> &HeaderMap {
        &self.headers
    }
    fn append(&mut self, name: &str, value: &str) {
        let _ = self.append_header(name.to_string(), value);
    }
    fn set(&mut self, name: &str, value: &str) {
        let _ = self.insert_header(name.to_string(), value);
    }
    fn remove(&mut self, name: &str) {
        let _ = self.remove_header(name);
    }
}

fn add(target: &mut impl Mutable, h: &HeaderAppend, cx: &ValueContext<'_>) {
    let value = render(&h.value, cx);
    if value.is_empty() && !h.keep_empty {
        return;
    }
    let exists = target.map().contains_key(h.name.as_str());
    match h.action {
        AppendAction::AppendIfExistsOrAdd => target.append(&h.name, &value),
        AppendAction::AddIfAbsent if !exists => target.append(&h.name, &value),
        AppendAction::AddIfAbsent => {}
        AppendAction::OverwriteIfExistsOrAdd => target.set(&h.name, &value),
        AppendAction::OverwriteIfExists if exists => target.set(&h.name, &value),
        AppendAction::OverwriteIfExists => {}
    }
}

/// Apply the request side of `levels` (most specific first) to an upstream request.
pub fn apply_request(levels: &[Arc<HeaderOps>], req: &mut RequestHeader, cx: &ValueContext<'_>) {
    for ops in levels {
        for name in &ops.request_remove {
            req.remove(name);
        }
        for h in &ops.request_add {
            add(req, h, cx);
        }
    }
}

/// Apply the response side of `levels` (most specific first) to a response.
pub fn apply_response(levels: &[Arc<HeaderOps>], resp: &mut ResponseHeader, cx: &ValueContext<'_>) {
    for ops in levels {
        for name in &ops.response_remove {
            resp.remove(name);
        }
        for h in &ops.response_add {
            add(resp, h, cx);
        }
    }
}

//! The HTTP proxy: one `impl ProxyHttp` whose phases call the chain's filters in order.
//!
//! Phase by phase, in the order Pingora runs them:
//! 1. `early_request_filter` — attach the connection's [`ConnContext`] (listener, chain,
//!    original destination), carried on the stream's digest by the capture listener.
//! 2. `request_filter` — normalize the path as the chain says (400 when it cannot be),
//!    take the current snapshot, match the route (and pick among its
//!    weighted clusters), then run the chain's filters in their configured order: fault
//!    (RBAC: 403 `RBAC: access denied`; delay `DI`, abort `FI`), CORS (preflights, allowed origins), router (redirect, direct
//!    response, or the forwarding decision: cluster `NC`/`UH`, timeouts, retry policy, hash
//!    key, rewrites). Then start the route's mirrors.
//! 3. `request_body_filter` — feed the request body to the mirrors.
//! 4. `upstream_peer` — per attempt: back-off, circuit breakers (`UO`), host choice (policy,
//!    ejections, hosts already tried), peer options (timeouts of the attempt, pool settings).
//! 5. `connected_to_upstream` — requests per connection and connection age: mark the
//!    connection to close after this request.
//! 6. `upstream_request_filter` — rewrites, header operations, `x-request-id`,
//!    `x-forwarded-proto` (when the request has none), `x-envoy-attempt-count`,
//!    `connection: close`.
//! 7. `upstream_response_filter` — outlier detection, retry on the response (status, gRPC
//!    status, headers), response header operations, CORS, hash cookie.
//! 8. `upstream_response_body_filter` — end a response still streaming past its deadline.
//! 9. `fail_to_connect` / `error_while_proxy` — outlier detection and retries of failed
//!    attempts; `fail_to_proxy` — Envoy's local replies (503 `UF`, 504 `UT`, ...).
//! 10. `logging` — one access-log line.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cors;
pub mod ctx;
pub mod fault;
pub mod filters;
pub mod headers;
pub mod mirror;
pub mod normalize;
mod phases;
pub mod reply;
pub mod retry;
pub mod route;
pub mod router;
mod steps;
pub mod telemetry;
pub mod xfcc;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use http::Version;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

pub use self::ctx::RequestCtx;
use self::mirror::Mirrors;
use self::reply::LocalReply;
use crate::shared::Shared;
use crate::stats::Stats;

/// The `ProxyHttp` of the sidecar (one instance per capture listener).
#[derive(Debug)]
pub struct MeshHttp {
    shared: Arc<Shared>,
    mirrors: Mirrors,
}

impl MeshHttp {
    /// The proxy logic over the shared state.
    pub fn new(shared: Arc<Shared>) -> MeshHttp {
        MeshHttp {
            shared,
            mirrors: Mirrors::new(),
        }
    }

    async fn local_reply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reply: LocalReply,
    ) -> pingora_error::Result<bool> {
        ctx.record(&reply);
        Stats::incr(&self.shared.stats.downstream_rq_local_reply);
        let protocol = protocol_name(session.req_header().version);
        let ctx_ref = &*ctx;
        let finalize = |resp: &mut pingora_http::ResponseHeader| {
            phases::finalize_response(ctx_ref, protocol, resp)
        };
        reply::send(session, &reply, false, &finalize).await?;
        Ok(true)
    }
}

/// The request's authority: `:authority` (HTTP/2, absolute-form) or the `Host` header.
pub fn authority(req: &RequestHeader) -> Option<String> {
    if let Some(a) = req.uri.authority() {
        return Some(a.as_str().to_string());
    }
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// Normalizes the request's path as the chain says (the same path is then checked, routed
/// and forwarded), and joins repeated values of the headers the chain's authorization rules
/// read into one (so that the application sees the value that was checked).
fn normalize_request(
    req: &mut RequestHeader,
    chain: &crate::snapshot::HttpChain,
    normalization: xds_client::model::PathNormalization,
) -> std::result::Result<(), normalize::PathError> {
    let current = req
        .uri
        .path_and_query()
        .map_or_else(|| req.uri.path(), |p| p.as_str());
    match normalize::normalize(current, normalization)? {
        std::borrow::Cow::Owned(path) => {
            let mut parts = req.uri.clone().into_parts();
            let pq = path
                .parse::<http::uri::PathAndQuery>()
                .map_err(|_| normalize::PathError::Unparsable)?;
            parts.path_and_query = Some(pq);
            let uri = http::Uri::from_parts(parts).map_err(|_| normalize::PathError::Unparsable)?;
            req.set_uri(uri);
        }
        std::borrow::Cow::Borrowed(_) => {
            // A target kept as raw bytes (not valid UTF-8) would be forwarded as those bytes
            // while the rules checked its lossy rendering: forward the rendering instead.
            if req.raw_path() != current.as_bytes() {
                let uri = req.uri.clone();
                req.set_uri(uri);
            }
        }
    }
    for filter in &chain.filters {
        if let filters::Filter::Rbac(rbac) = filter {
            for name in rbac.header_names() {
                if let Some(value) = crate::authz::joined_value(&req.headers, name) {
                    // Cannot fail: the name and value are valid.
                    let _ = req.insert_header(name.clone(), value);
                }
            }
        }
    }
    Ok(())
}

/// A random version-4 UUID, Envoy's `x-request-id` format.
pub fn new_request_id() -> String {
    let v: u128 = rand::random();
    let v = (v & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let s = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

/// This machine's host name (for `%HOSTNAME%`), read once.
pub fn hostname() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
    .clone()
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

fn header(req: &RequestHeader, name: &str) -> Option<String> {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

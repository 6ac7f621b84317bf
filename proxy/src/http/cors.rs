//! `envoy.filters.http.cors`: with the route's CORS policy, answer preflight requests whose
//! origin is allowed (200 with the `access-control-allow-*` headers) and add
//! `access-control-allow-origin` (and friends) to responses for allowed origins. Requests
//! without an allowed `origin` pass untouched; preflights for other origins are forwarded, or
//! answered without CORS headers when the policy says not to forward them.

use std::sync::Arc;

use bytes::Bytes;
use pingora_http::ResponseHeader;
use xds_client::model::CorsPolicy;

use super::ctx::MatchedRoute;
use super::reply::{DirectReply, LocalReply};
use super::route::RequestInfo;

/// What the CORS filter decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    Pass,
    /// Forward, and add CORS headers for this origin to the response.
    Annotate(String),
    /// Answer the preflight locally.
    Reply(LocalReply),
}

/// The policy that applies to a request, if any.
pub fn policy(route: Option<&MatchedRoute>) -> Option<&CorsPolicy> {
    route.and_then(|r| r.target().cors.as_deref())
}

/// Decide for a request; `draw` is uniform in `[0, 1_000_000)` (the policy's enabled share).
pub fn decide(policy: Option<&CorsPolicy>, info: &RequestInfo<'_>, draw: u32) -> Decision {
    let Some(policy) = policy else {
        return Decision::Pass;
    };
    if !policy.enabled.hit(draw) {
        return Decision::Pass;
    }
    let Some(origin) = info.header("origin") else {
        return Decision::Pass;
    };
    let allowed = policy.allow_origin.iter().any(|m| m.matches(&origin));
    let preflight = info.req.method == http::Method::OPTIONS
        && info
            .req
            .headers
            .contains_key("access-control-request-method");
    match (preflight, allowed) {
        (false, true) => Decision::Annotate(origin.into_owned()),
        (false, false) => Decision::Pass,
        (true, false) if policy.forward_not_matching_preflights => Decision::Pass,
        (true, false) => Decision::Reply(LocalReply::Direct(Arc::new(DirectReply {
            status: 200,
            headers: Vec::new(),
            body: Bytes::new(),
            details: "cors_response",
        }))),
        (true, true) => {
            let mut headers = vec![(
                "access-control-allow-origin".to_string(),
                origin.into_owned(),
            )];
            let mut add = |name: &str, value: &str| {
                if !value.is_empty() {
                    headers.push((name.to_string(), value.to_string()));
                }
            };
            add("access-control-allow-methods", &policy.allow_methods);
            add("access-control-allow-headers", &policy.allow_headers);
            add("access-control-max-age", &policy.max_age);
            if policy.allow_credentials {
                add("access-control-allow-credentials", "true");
            }
            let wants_private = info
                .req
                .headers
                .get("access-control-request-private-network")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            if policy.allow_private_network_access && wants_private {
                add("access-control-allow-private-network", "true");
            }
            Decision::Reply(LocalReply::Direct(Arc::new(DirectReply {
                status: 200,
                headers,
                body: Bytes::new(),
                details: "cors_response",
            })))
        }
    }
}

/// Add the CORS headers for an allowed `origin` to a response.
pub fn annotate(policy: &CorsPolicy, origin: &str, resp: &mut ResponseHeader) {
    let _ = resp.insert_header("access-control-allow-origin", origin);
    if policy.allow_credentials {
        let _ = resp.insert_header("access-control-allow-credentials", "true");
    }
    if !policy.expose_headers.is_empty() {
        let _ = resp.insert_header(
            "access-control-expose-headers",
            policy.expose_headers.as_str(),
        );
    }
}

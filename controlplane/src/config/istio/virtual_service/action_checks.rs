//! Istio's checks of HTTP route actions: redirect, direct response, retries, rewrite, and the
//! single place the authority may be rewritten.

use super::{HttpDirectResponse, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, Problem};
use crate::config::istio::values::{self, validate_duration};
use crate::config::istio::{at, key, Checker, IstioProblem};

/// Envoy's and gRPC's retry conditions Istio accepts in `retryOn`.
const RETRY_ON: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Istio's `validateHTTPRedirect` reports the first problem only.
pub(super) fn check_redirect(c: &mut Checker, path: &str, r: &HttpRedirect) {
    if r.port.is_some() && r.derive_port.is_some() {
        c.err(path, Problem::RedirectPortOneOf);
    }
    let no_port = r.port.is_none() && r.derive_port.is_none();
    let first: Option<(String, IstioProblem)> =
        if r.uri.is_empty() && r.authority.is_empty() && no_port && r.scheme.is_empty() {
            Some((path.to_string(), Problem::RedirectEmpty.into()))
        } else if let Some(code) = r
            .redirect_code
            .filter(|c| *c != 0 && !(300..=399).contains(c))
        {
            Some((at(path, "redirectCode"), Problem::RedirectCode(code).into()))
        } else if !r.scheme.is_empty() && r.scheme != "http" && r.scheme != "https" {
            Some((at(path, "scheme"), Problem::RedirectScheme.into()))
        } else {
            r.port.filter(|p| *p > 0).and_then(|p| {
                values::validate_port(i64::from(p))
                    .err()
                    .map(|e| (at(path, "port"), e.into()))
            })
        };
    if let Some((field, problem)) = first {
        c.err(field, problem);
    }
}

pub(super) fn check_direct_response(c: &mut Checker, path: &str, d: &HttpDirectResponse) {
    if let Some(body) = &d.body {
        let bp = at(path, "body");
        if body.string.is_some() && body.bytes.is_some() {
            c.err(bp.clone(), Problem::BodyOneOf);
        }
        let size = if let Some(s) = &body.string {
            Some(s.len())
        } else if let Some(b) = &body.bytes {
            let decoded = base64_len(b);
            if decoded.is_none() {
                c.err(at(&bp, "bytes"), Problem::BodyBase64);
            }
            decoded
        } else {
            None
        };
        match size {
            Some(n) if n > 1024 * 1024 => c.err(bp, Problem::DirectResponseTooLarge),
            Some(n) if n > 100 * 1024 => c.warn(bp, Problem::DirectResponseLarge),
            _ => {}
        }
    }
    match d.status {
        None => c.required(at(path, "status")),
        Some(s) => c.check(
            at(path, "status"),
            values::validate_http_status(i64::from(s)),
        ),
    }
}

/// The decoded length of base64 text (standard or URL-safe alphabet, padding optional), or
/// `None` when it is not base64.
fn base64_len(text: &str) -> Option<usize> {
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    let valid = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'));
    if !valid
        || padding > 2
        || body.len() % 4 == 1
        || (padding > 0 && !text.len().is_multiple_of(4))
    {
        return None;
    }
    Some(body.len() * 3 / 4)
}

pub(super) fn check_retries(c: &mut Checker, path: &str, r: &HttpRetry) {
    if r.attempts < 0 {
        c.err(at(path, "attempts"), Problem::RetryAttempts);
    }
    if r.attempts == 0
        && (r.per_try_timeout.is_some()
            || !r.retry_on.is_empty()
            || r.retry_remote_localities.is_some())
    {
        c.err(at(path, "attempts"), Problem::RetryDisabled);
    }
    if let Some(d) = r.per_try_timeout {
        c.check(at(path, "perTryTimeout"), validate_duration(d));
    }
    if !r.retry_on.is_empty() {
        for policy in r.retry_on.split(',') {
            let status = policy.parse::<i64>().unwrap_or(0);
            if !values::is_known_http_status(status) && !RETRY_ON.contains(&policy) {
                c.err(at(path, "retryOn"), Problem::RetryOn(policy.to_string()));
            }
        }
    }
    if let Some(d) = r.backoff {
        c.check(at(path, "backoff"), validate_duration(d));
    }
}

/// Istio's `validateHTTPRewrite` reports the first problem only.
pub(super) fn check_rewrite(c: &mut Checker, path: &str, rw: &HttpRewrite) {
    if !rw.uri.is_empty() && rw.uri_regex_rewrite.is_some() {
        c.err(path, Problem::RewriteBoth);
        return;
    }
    if rw.uri.is_empty() && rw.uri_regex_rewrite.is_none() && rw.authority.is_empty() {
        c.err(path, Problem::RewriteEmpty);
        return;
    }
    if let Some(rr) = &rw.uri_regex_rewrite {
        let field = at(path, "uriRegexRewrite");
        if rr.pattern.is_empty() || rr.rewrite.is_empty() {
            c.err(field, Problem::RegexRewriteIncomplete);
            return;
        }
        c.check(
            at(&field, "match"),
            values::validate_regex(&rr.pattern, "HTTPRewrite.UriRegexRewrite.Match"),
        );
    }
}

/// The authority may be rewritten in one place only: `rewrite.authority` or one request
/// header operation on `:authority`/`host`.
pub(super) fn check_authority_rewrite(c: &mut Checker, path: &str, r: &HttpRoute) {
    let mut current = r
        .rewrite
        .as_ref()
        .map(|rw| rw.authority.clone())
        .unwrap_or_default();
    let Some(req) = r.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    for (leaf, map) in [("set", &req.set), ("add", &req.add)] {
        for (k, v) in map {
            if !values::is_authority_header(k) {
                continue;
            }
            if !current.is_empty() {
                c.err(
                    key(&at(&at(&at(path, "headers"), "request"), leaf), k),
                    Problem::AuthorityTwice {
                        have: current,
                        set: v.clone(),
                    },
                );
                return;
            }
            current = v.clone();
        }
    }
}

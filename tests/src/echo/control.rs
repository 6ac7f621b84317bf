//! Behaviour controls: what a request asks the echo server to do (delay, answer a status, fail
//! its first calls, add response headers, pad the reply).
//!
//! Each control is read from a request header `x-echo-NAME` or, for HTTP, from the query
//! parameter `NAME` (`_` and `-` are interchangeable in query names, values are
//! percent-decoded). A header wins over the query parameter of the same name, except for the
//! repeatable `response-header`, where both are used. The table is in the [`crate::echo`] docs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Largest reply padding accepted (`size`), so that a typo cannot exhaust memory.
pub const MAX_SIZE: usize = 64 * 1024 * 1024;

/// Status answered by a call failed by `fail-first` when `fail-status` is not given.
pub const DEFAULT_FAIL_STATUS: u16 = 503;

/// gRPC code answered by a call failed by `fail-first` when `fail-grpc-status` is not given
/// (14, `UNAVAILABLE`).
pub const DEFAULT_FAIL_GRPC_STATUS: i32 = 14;

/// A control value that could not be understood; the server answers 400 (HTTP) or
/// `INVALID_ARGUMENT` (gRPC) with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// `delay` is neither a humantime duration (`250ms`, `1s`) nor a number of milliseconds.
    #[error(
        "invalid delay {0:?}: expected a duration such as 250ms, 2s or a number of milliseconds"
    )]
    Delay(String),
    /// `status` / `fail-status` is not an HTTP status between 200 and 599.
    #[error("invalid {name} {value:?}: expected an HTTP status between 200 and 599")]
    Status {
        /// The control's name.
        name: &'static str,
        /// The value given.
        value: String,
    },
    /// `grpc-status` / `fail-grpc-status` is not a gRPC code between 0 and 16.
    #[error("invalid {name} {value:?}: expected a gRPC status code between 0 and 16")]
    GrpcStatus {
        /// The control's name.
        name: &'static str,
        /// The value given.
        value: String,
    },
    /// `fail-first` is not a non-negative integer.
    #[error("invalid fail-first {0:?}: expected a non-negative integer")]
    FailFirst(String),
    /// `size` is not an integer up to [`MAX_SIZE`].
    #[error("invalid size {0:?}: expected an integer up to {MAX_SIZE}")]
    Size(String),
    /// `response-header` is not `name=value` with a valid header name and value.
    #[error(
        "invalid response-header {0:?}: expected name=value with a valid header name and value"
    )]
    ResponseHeader(String),
    /// A control header's value is not visible ASCII.
    #[error("control header x-echo-{0} is not valid ASCII")]
    NotAscii(&'static str),
}

/// The controls one request carries. `Default` is a request that asks for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    /// Wait this long before answering (`delay`).
    pub delay: Option<Duration>,
    /// Answer this HTTP status (`status`).
    pub status: Option<u16>,
    /// Answer this gRPC status code (`grpc-status`; 0 means OK).
    pub grpc_status: Option<i32>,
    /// Fail the first N calls of the fail key (`fail-first`).
    pub fail_first: Option<u64>,
    /// The counter `fail-first` counts on (`fail-key`); the request path when absent.
    pub fail_key: Option<String>,
    /// The HTTP status of a failed call (`fail-status`, default [`DEFAULT_FAIL_STATUS`]).
    pub fail_status: Option<u16>,
    /// The gRPC code of a failed call (`fail-grpc-status`, default
    /// [`DEFAULT_FAIL_GRPC_STATUS`]).
    pub fail_grpc_status: Option<i32>,
    /// Headers (gRPC: metadata) to add to the reply (`response-header`, repeatable).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Pad the reply to this many bytes (`size`).
    pub size: Option<usize>,
}

/// Names of the controls, as used after `x-echo-` in headers and as query parameters.
const NAMES: [&str; 9] = [
    "delay",
    "status",
    "grpc-status",
    "fail-first",
    "fail-key",
    "fail-status",
    "fail-grpc-status",
    "response-header",
    "size",
];

impl Controls {
    /// Reads the controls from request headers (`x-echo-NAME`) and an optional raw query
    /// string (`NAME=value&...`). Unknown query parameters are ignored.
    pub fn parse(headers: &HeaderMap, query: Option<&str>) -> Result<Self, ControlError> {
        let query = query.map(parse_query).unwrap_or_default();
        let mut controls = Controls::default();
        for name in NAMES {
            let mut values = Vec::new();
            for value in headers.get_all(format!("x-echo-{name}").as_str()) {
                let value = value.to_str().map_err(|_| ControlError::NotAscii(name))?;
                values.push(value.trim().to_string());
            }
            let from_query = query
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone());
            if name == "response-header" {
                values.extend(from_query);
            } else if values.is_empty() {
                values.extend(from_query.take(1));
            }
            for value in values {
                controls.set(name, value)?;
            }
        }
        Ok(controls)
    }

    fn set(&mut self, name: &'static str, value: String) -> Result<(), ControlError> {
        match name {
            "delay" => self.delay = Some(parse_delay(&value)?),
            "status" | "fail-status" => {
                let status = value
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (200..=599).contains(s))
                    .ok_or(ControlError::Status { name, value })?;
                if name == "status" {
                    self.status = Some(status);
                } else {
                    self.fail_status = Some(status);
                }
            }
            "grpc-status" | "fail-grpc-status" => {
                let code = value
                    .parse::<i32>()
                    .ok()
                    .filter(|c| (0..=16).contains(c))
                    .ok_or(ControlError::GrpcStatus { name, value })?;
                if name == "grpc-status" {
                    self.grpc_status = Some(code);
                } else {
                    self.fail_grpc_status = Some(code);
                }
            }
            "fail-first" => {
                let n = value.parse().map_err(|_| ControlError::FailFirst(value))?;
                self.fail_first = Some(n);
            }
            "fail-key" => self.fail_key = Some(value),
            "size" => {
                let size = value
                    .parse::<usize>()
                    .ok()
                    .filter(|s| *s <= MAX_SIZE)
                    .ok_or(ControlError::Size(value))?;
                self.size = Some(size);
            }
            _ => self.response_headers.push(parse_response_header(&value)?),
        }
        Ok(())
    }

    /// Counts this call against `fail-first` (if given) on its key, `fail_key` or else
    /// `default_key` (the request path), and says which call number it was and whether it
    /// must fail. `None` when the request carries no `fail-first`.
    pub fn count_call(&self, counters: &FailCounters, default_key: &str) -> Option<FailOutcome> {
        let limit = self.fail_first?;
        let key = self.fail_key.as_deref().unwrap_or(default_key);
        let call = counters.next(key);
        Some(FailOutcome {
            call,
            fail: call <= limit,
        })
    }

    /// The HTTP status to answer, given the fail-first outcome of this call: the fail status
    /// when the call must fail, else `status`, else 200.
    pub fn http_status(&self, outcome: Option<FailOutcome>) -> u16 {
        match outcome {
            Some(FailOutcome { fail: true, .. }) => self.fail_status.unwrap_or(DEFAULT_FAIL_STATUS),
            _ => self.status.unwrap_or(200),
        }
    }

    /// The gRPC code to answer, given the fail-first outcome of this call: the fail code when
    /// the call must fail, else `grpc-status`, else 0 (OK).
    pub fn grpc_code(&self, outcome: Option<FailOutcome>) -> i32 {
        match outcome {
            Some(FailOutcome { fail: true, .. }) => {
                self.fail_grpc_status.unwrap_or(DEFAULT_FAIL_GRPC_STATUS)
            }
            _ => self.grpc_status.unwrap_or(0),
        }
    }
}

/// Result of counting one call against `fail-first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailOutcome {
    /// This call's number on its key, starting at 1.
    pub call: u64,
    /// Whether the call is among the first N and must fail.
    pub fail: bool,
}

/// Per-key call counters for `fail-first`, shared by every port of one server process.
#[derive(Debug, Default)]
pub struct FailCounters {
    counts: Mutex<HashMap<String, u64>>,
}

impl FailCounters {
    /// Increments the counter of `key` and returns its new value (1 for the first call).
    pub fn next(&self, key: &str) -> u64 {
        // A poisoned lock only means another request panicked mid-increment; the map is
        // still consistent.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.to_string()).or_insert(0);
        *count += 1;
        *count
    }
}

/// Parses a delay: a humantime duration (`250ms`, `2s`, `1m30s`) or a bare number of
/// milliseconds.
pub fn parse_delay(value: &str) -> Result<Duration, ControlError> {
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(value).map_err(|_| ControlError::Delay(value.to_string()))
}

fn parse_response_header(value: &str) -> Result<(HeaderName, HeaderValue), ControlError> {
    let invalid = || ControlError::ResponseHeader(value.to_string());
    let (name, val) = value.split_once('=').ok_or_else(invalid)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| invalid())?;
    let val = HeaderValue::from_str(val.trim()).map_err(|_| invalid())?;
    Ok((name, val))
}

/// Splits a raw query string into percent-decoded `(name, value)` pairs, with `_` in names
/// turned into `-` and `+` decoded as a space.
fn parse_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k).replace('_', "-"), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn reads_headers_and_query() {
        let h = headers(&[
            ("x-echo-delay", "250ms"),
            ("x-echo-response-header", "a=1"),
            ("x-echo-response-header", "b = 2"),
        ]);
        let c = Controls::parse(
            &h,
            Some("delay=5s&status=503&fail_first=3&response-header=c%3D3&size=10"),
        )
        .unwrap();
        assert_eq!(c.delay, Some(Duration::from_millis(250)));
        assert_eq!(c.status, Some(503));
        assert_eq!(c.fail_first, Some(3));
        assert_eq!(c.size, Some(10));
        let names: Vec<_> = c.response_headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn bare_number_delay_is_milliseconds() {
        assert_eq!(parse_delay("40").unwrap(), Duration::from_millis(40));
        assert!(parse_delay("soon").is_err());
    }

    #[test]
    fn rejects_bad_values() {
        for q in [
            "status=99",
            "status=abc",
            "grpc_status=17",
            "size=-1",
            "response_header=x",
        ] {
            assert!(Controls::parse(&HeaderMap::new(), Some(q)).is_err(), "{q}");
        }
    }

    #[test]
    fn fail_first_counts_per_key() {
        let counters = FailCounters::default();
        let c = Controls::parse(&headers(&[("x-echo-fail-first", "2")]), None).unwrap();
        let statuses: Vec<_> = (0..3)
            .map(|_| c.http_status(c.count_call(&counters, "/a")))
            .collect();
        assert_eq!(statuses, [503, 503, 200]);
        assert_eq!(c.http_status(c.count_call(&counters, "/b")), 503);
        let keyed = Controls {
            fail_key: Some("k".into()),
            fail_grpc_status: Some(4),
            ..c
        };
        assert_eq!(keyed.grpc_code(keyed.count_call(&counters, "/a")), 4);
        assert_eq!(Controls::default().count_call(&counters, "/a"), None);
    }
}

//! Istio's rules for values: ports, durations, percentages, HTTP header names and values,
//! regular expressions (RE2 semantics: the `regex` crate), IP addresses and subnets, Unix
//! socket paths, protocols and HTTP statuses.

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

use super::duration::Duration;
use super::types::{Percent, Protocol, StringMatch};

/// What is wrong with a value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    /// A port outside 1-65535.
    #[error("port number {0} must be in the range 1..65535")]
    Port(i64),
    /// The CRD rule on port fields and port map entries.
    #[error("port must be between 1-65535")]
    PortRange,
    /// A duration under 1ms (the CRDs: "must be a valid duration greater than 1ms").
    #[error("duration must be greater than 1ms")]
    DurationTooShort,
    /// A duration finer than milliseconds.
    #[error("only durations to ms precision are supported")]
    DurationPrecision,
    /// An integer percentage outside 0-100.
    #[error("percentage {0} is not in range 0..100")]
    PercentInt(i64),
    /// A fractional percentage outside {0} ∪ [0.0001, 100].
    #[error("percentage {0} is neither 0.0, nor in range [0.0001, 100.0]")]
    Percentage(f64),
    /// An empty header name.
    #[error("header name cannot be empty")]
    HeaderNameEmpty,
    /// A header name with characters outside RFC 7230's token.
    #[error("header name {0} is not a valid header name")]
    HeaderName(String),
    /// A pseudo-header (or Host) in a header operation.
    #[error("invalid header {0:?}: header cannot have \":\" prefix")]
    HeaderPseudo(String),
    /// Host in a response or removal operation.
    #[error("invalid header {0:?}: cannot set Host header")]
    HeaderHost(String),
    /// A header value with control characters.
    #[error("header value configuration {0} is invalid")]
    HeaderValueChars(String),
    /// A header value whose `%VARIABLE%` syntax is broken.
    #[error("header value configuration: {0}")]
    HeaderValueSyntax(&'static str),
    /// An empty prefix match where Envoy requires one.
    #[error("{0:?}: prefix string match should not be empty")]
    EmptyPrefix(&'static str),
    /// An empty regex match.
    #[error("{0:?}: regex string match should not be empty")]
    EmptyRegex(&'static str),
    /// A regex longer than 1024.
    #[error("{0:?}: regex is too large, max length allowed is 1024")]
    RegexTooLarge(&'static str),
    /// A regex that does not compile.
    #[error("{where_:?}: {error}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)")]
    Regex {
        /// The field kind (`uri`, `headers`...).
        where_: &'static str,
        /// The compiler's message.
        error: String,
    },
    /// Several of exact, prefix, regex (the CRD's oneOf).
    #[error("only one of exact, prefix or regex may be set")]
    StringMatchOneOf,
    /// Not an IP address.
    #[error("{0} is not a valid IP")]
    Ip(String),
    /// Not a CIDR block.
    #[error("{0} is not a valid CIDR block")]
    Cidr(String),
    /// An empty Unix socket address.
    #[error("unix address must not be empty")]
    UnixEmpty,
    /// A relative or directory Unix socket path.
    #[error("{0} is not an absolute path to a file")]
    UnixPath(String),
    /// A protocol Istio does not know.
    #[error("unsupported protocol: {0}")]
    Protocol(String),
    /// A port name that is not a DNS-1123 label.
    #[error("invalid port name: {0}")]
    PortName(String),
    /// An HTTP status outside 200-600.
    #[error("HTTP status {0} is not in range 200-599")]
    HttpStatus(i64),
}

/// RFC 7230 `token` characters.
static HEADER_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[!#$%&'*+\-.^_`|~A-Za-z0-9]+$").expect("static pattern"));

const PSEUDO_HEADERS: [&str; 5] = [":method", ":scheme", ":authority", ":path", ":status"];

/// A port number in 1-65535.
pub fn validate_port(port: i64) -> Result<(), Problem> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(Problem::Port(port))
    }
}

/// Istio's `ValidateDuration`: at least 1ms, whole milliseconds.
pub fn validate_duration(d: Duration) -> Result<(), Problem> {
    if d.as_nanos() < 1_000_000 {
        return Err(Problem::DurationTooShort);
    }
    if !d.is_whole_millis() {
        return Err(Problem::DurationPrecision);
    }
    Ok(())
}

/// An integer percentage in 0-100.
pub fn validate_percent(value: i64) -> Result<(), Problem> {
    if (0..=100).contains(&value) {
        Ok(())
    } else {
        Err(Problem::PercentInt(value))
    }
}

/// A fractional percentage: 0, or 0.0001 to 100.
pub fn validate_percentage(p: &Percent) -> Result<(), Problem> {
    let v = p.value;
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        return Err(Problem::Percentage(v));
    }
    Ok(())
}

/// A header name (RFC 7230 token).
pub fn validate_header_name(name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::HeaderNameEmpty);
    }
    if !HEADER_NAME.is_match(name) {
        return Err(Problem::HeaderName(name.to_string()));
    }
    Ok(())
}

/// A header name in a CORS list: a token or `*`.
pub fn validate_cors_header_name(name: &str) -> Result<(), Problem> {
    if name == "*" {
        return Ok(());
    }
    validate_header_name(name)
}

/// Whether a match key is a JWT claim (`@request.auth.claims.NAME` or
/// `@request.auth.claims[A][B]`), which routes on a validated token's claims.
pub fn is_jwt_claim_route(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("@request.auth.claims") else {
        return false;
    };
    if let Some(claim) = rest.strip_prefix('.') {
        return !claim.is_empty();
    }
    // One or more `[claim]` groups, each non-empty.
    let mut rest = rest;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('[') else {
            return false;
        };
        let Some(end) = inner.find(']') else {
            return false;
        };
        if end == 0 {
            return false;
        }
        rest = &inner[end + 1..];
    }
    true
}

/// A header match key: a header name, a pseudo-header or a JWT claim.
pub fn validate_header_name_or_claim(name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::HeaderNameEmpty);
    }
    if is_jwt_claim_route(name) || PSEUDO_HEADERS.contains(&name) {
        return Ok(());
    }
    validate_header_name(name)
}

fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

/// Whether a header names the authority (`:authority` or `host`).
pub fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// A request header to add or set: the authority may be set, other pseudo-headers not.
pub fn validate_header_op_with_authority(name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::HeaderNameEmpty);
    }
    if is_internal_header(name) && !is_authority_header(name) {
        return Err(Problem::HeaderPseudo(name.to_string()));
    }
    Ok(())
}

/// A request header to remove or a response header to change: no Host, no pseudo-header.
pub fn validate_header_op(name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::HeaderNameEmpty);
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(Problem::HeaderHost(name.to_string()));
    }
    if is_internal_header(name) {
        return Err(Problem::HeaderPseudo(name.to_string()));
    }
    Ok(())
}

/// A header value: no control characters (tab aside), and Envoy's `%VARIABLE%` / `%%` syntax.
pub fn validate_header_value(value: &str) -> Result<(), Problem> {
    if value
        .chars()
        .any(|c| (c <= '\u{8}') || ('\u{a}'..='\u{1f}').contains(&c) || c == '\u{7f}')
    {
        return Err(Problem::HeaderValueChars(value.to_string()));
    }
    envoy_header_syntax(value).map_err(Problem::HeaderValueSyntax)
}

/// Envoy's header formatter parser (`header_parser.cc`), as Istio ports it.
fn envoy_header_syntax(value: &str) -> Result<(), &'static str> {
    #[derive(PartialEq)]
    enum S {
        Literal,
        VarName,
        ExpectArray,
        ExpectString,
        String,
        ExpectDelimOrEnd,
        ExpectArgsEnd,
        ExpectVarEnd,
    }
    let b = value.as_bytes();
    let mut state = S::Literal;
    let mut pos = 0;
    while pos < b.len() {
        let ch = b[pos];
        let has_next = pos + 1 < b.len();
        match state {
            S::Literal => {
                if ch == b'%' {
                    if !has_next {
                        return Err("invalid header configuration. Un-escaped %");
                    }
                    if b[pos + 1] == b'%' {
                        pos += 1;
                    } else {
                        state = S::VarName;
                    }
                }
            }
            S::VarName => {
                if ch == b'%' {
                    state = S::Literal;
                } else if ch == b'(' {
                    state = S::ExpectArray;
                }
            }
            S::ExpectArray => {
                if ch == b'[' {
                    state = S::ExpectString;
                } else if ch != b' ' {
                    state = S::String;
                }
            }
            S::ExpectDelimOrEnd => {
                if ch == b',' {
                    state = S::ExpectString;
                } else if ch == b']' {
                    state = S::ExpectArgsEnd;
                } else if ch != b' ' {
                    return Err("invalid header configuration. Expecting ',', ']', or whitespace");
                }
            }
            S::ExpectString => {
                if ch == b'"' {
                    state = S::String;
                } else if ch != b' ' {
                    return Err("invalid header configuration. Expecting '\"'");
                }
            }
            S::String => {
                if ch == b'\\' {
                    if !has_next {
                        return Err(
                            "invalid header configuration. Un-terminated backslash in JSON string",
                        );
                    }
                    pos += 1;
                } else if ch == b')' {
                    state = S::ExpectVarEnd;
                } else if ch == b'"' {
                    state = S::ExpectDelimOrEnd;
                }
            }
            S::ExpectArgsEnd => {
                if ch == b')' {
                    state = S::ExpectVarEnd;
                } else if ch != b' ' {
                    return Err("invalid header configuration. Expecting ')' or whitespace");
                }
            }
            S::ExpectVarEnd => {
                if ch == b'%' {
                    state = S::Literal;
                } else if ch != b' ' {
                    return Err("invalid header configuration. Expecting '%' or whitespace after");
                }
            }
        }
        pos += 1;
    }
    if state != S::Literal {
        return Err("invalid header configuration. Un-terminated variable expression");
    }
    Ok(())
}

/// A regex: at most 1024 characters and compiling with RE2 semantics.
pub fn validate_regex(re: &str, where_: &'static str) -> Result<(), Problem> {
    if re.len() > 1024 {
        return Err(Problem::RegexTooLarge(where_));
    }
    Regex::new(re).map(|_| ()).map_err(|e| Problem::Regex {
        where_,
        error: one_line_regex_error(re, &e),
    })
}

/// The compiler's message on one line (its syntax errors draw a caret under the pattern over
/// several lines): `error parsing regexp: unclosed group: "(a"`.
fn one_line_regex_error(re: &str, e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => {
            let cause = text
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or_default();
            let cause = cause.strip_prefix("error: ").unwrap_or(cause);
            format!("error parsing regexp: {cause}: {re:?}")
        }
        other => other.to_string(),
    }
}

/// Istio's `validateStringMatchRegexp`: a regex match must be non-empty and compile.
pub fn validate_string_match_regex(sm: &StringMatch, where_: &'static str) -> Result<(), Problem> {
    if sm.count_set() > 1 {
        return Err(Problem::StringMatchOneOf);
    }
    match &sm.regex {
        Some(re) if re.is_empty() => Err(Problem::EmptyRegex(where_)),
        Some(re) => validate_regex(re, where_),
        None => Ok(()),
    }
}

/// Istio's `validateStringMatch`: as the regex rule, and a prefix must not be empty.
pub fn validate_string_match(sm: &StringMatch, where_: &'static str) -> Result<(), Problem> {
    if sm.prefix.as_deref() == Some("") && sm.count_set() == 1 {
        return Err(Problem::EmptyPrefix(where_));
    }
    validate_string_match_regex(sm, where_)
}

/// An IP address (Go's `netip.ParseAddr`).
pub fn validate_ip(addr: &str) -> Result<(), Problem> {
    addr.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| Problem::Ip(addr.to_string()))
}

/// An IP address or a CIDR block.
pub fn validate_ip_subnet(subnet: &str) -> Result<(), Problem> {
    if subnet.matches('/').count() == 1 {
        return subnet
            .parse::<ipnet::IpNet>()
            .map(|_| ())
            .map_err(|_| Problem::Cidr(subnet.to_string()));
    }
    validate_ip(subnet)
}

/// A Unix socket path (after `unix://`): abstract (`@name`) or an absolute file path.
pub fn validate_unix_address(addr: &str) -> Result<(), Problem> {
    if addr.is_empty() {
        return Err(Problem::UnixEmpty);
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(Problem::UnixPath(addr.to_string()));
    }
    Ok(())
}

/// A port protocol: empty (sniffed) or one Istio knows.
pub fn validate_protocol(protocol: &str) -> Result<(), Problem> {
    if !protocol.is_empty() && Protocol::parse(protocol) == Protocol::Unsupported {
        return Err(Problem::Protocol(protocol.to_string()));
    }
    Ok(())
}

/// A port name: a DNS-1123 label.
pub fn validate_port_name(name: &str) -> Result<(), Problem> {
    if !super::names::is_dns1123_label(name) {
        return Err(Problem::PortName(name.to_string()));
    }
    Ok(())
}

/// An HTTP status for fault aborts and direct responses: 200-600.
pub fn validate_http_status(status: i64) -> Result<(), Problem> {
    if !(200..=600).contains(&status) {
        return Err(Problem::HttpStatus(status));
    }
    Ok(())
}

/// Whether Go's `http.StatusText` knows the code (bare status codes in `retryOn`).
pub fn is_known_http_status(code: i64) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

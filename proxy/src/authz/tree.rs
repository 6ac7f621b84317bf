//! The compiled permission and principal trees and their evaluation.
//!
//! Compilation turns the config model's trees into a form the data path walks without
//! allocating: header names are resolved once (pseudo-headers to request fields, others to
//! `http::HeaderName`), authority matchers know whether they compare with or without the port,
//! metadata matchers (no filter of this proxy writes dynamic metadata) become constants, and
//! regular expressions are the ones compiled at conversion.

use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderName;
use ipnet::IpNet;
use xds_client::model::matcher::{HeaderMatch, HeaderMatcher, Regex, StringMatcher};
use xds_client::model::rbac::{Permission, Principal};

use super::Attributes;

/// A compiled permission.
#[derive(Debug)]
pub(super) enum Perm {
    Any,
    And(Box<[Perm]>),
    Or(Box<[Perm]>),
    Not(Box<Perm>),
    Header(Header),
    Path(StringMatcher),
    Template(Regex),
    DestinationIp(IpNet),
    DestinationPort(u16),
    DestinationPortRange(u32, u32),
    ServerName(StringMatcher),
    Constant(bool),
}

/// A compiled principal.
#[derive(Debug)]
pub(super) enum Prin {
    Any,
    And(Box<[Prin]>),
    Or(Box<[Prin]>),
    Not(Box<Prin>),
    Authenticated(Option<StringMatcher>),
    DirectRemoteIp(IpNet),
    RemoteIp(IpNet),
    Header(Header),
    Path(StringMatcher),
    Constant(bool),
}

/// Where a header matcher reads its value.
#[derive(Debug)]
enum Source {
    Method,
    Path,
    Scheme,
    /// `:authority` (and `host`), the host with its trailing dot removed, with the port when
    /// `with_port`.
    Authority {
        with_port: bool,
    },
    Header(HeaderName),
    /// A name that cannot be a header (invalid characters): never present.
    Never,
}

/// A compiled header matcher.
#[derive(Debug)]
pub(super) struct Header {
    source: Source,
    matcher: HeaderMatcher,
}

impl Header {
    fn new(matcher: &HeaderMatcher) -> Header {
        let source = match matcher.name.as_str() {
            ":method" => Source::Method,
            ":path" => Source::Path,
            ":scheme" => Source::Scheme,
            ":authority" | "host" => Source::Authority {
                with_port: authority_with_port(&matcher.rule),
            },
            name => HeaderName::from_bytes(name.as_bytes()).map_or(Source::Never, Source::Header),
        };
        Header {
            source,
            matcher: matcher.clone(),
        }
    }

    fn matches(&self, attrs: &Attributes<'_>) -> bool {
        let Some(req) = attrs.request else {
            // No HTTP request (a TCP connection): every header is absent.
            return self.matcher.matches(None);
        };
        let value: Option<Cow<'_, str>> = match &self.source {
            Source::Method => Some(Cow::Borrowed(req.method)),
            Source::Path => Some(Cow::Borrowed(req.path)),
            Source::Scheme => Some(Cow::Borrowed(req.scheme)),
            Source::Authority { with_port } => {
                (!req.authority.is_empty()).then(|| authority_view(req.authority, *with_port))
            }
            Source::Header(name) => header_value(req.headers, name),
            Source::Never => None,
        };
        self.matcher.matches(value.as_deref())
    }
}

/// Whether an authority matcher compares the port too: only when its own pattern names one
/// (Istio's `hosts: ["example.com"]` must match `example.com:8080` as well).
fn authority_with_port(rule: &HeaderMatch) -> bool {
    match rule {
        HeaderMatch::String(StringMatcher::Regex(re)) => re.as_str().contains(':'),
        HeaderMatch::String(m) => m.literal().is_some_and(|l| l.contains(':')),
        HeaderMatch::Present(_) | HeaderMatch::Range { .. } => true,
    }
}

/// The authority as an authority matcher sees it: the host without its trailing dot, and the
/// port when asked for.
fn authority_view(authority: &str, with_port: bool) -> Cow<'_, str> {
    let (host, port) = split_authority(authority);
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    match (with_port, port) {
        (true, Some(port)) if trimmed.len() != host.len() => {
            Cow::Owned(format!("{trimmed}:{port}"))
        }
        (true, Some(_)) => Cow::Borrowed(authority),
        _ => Cow::Borrowed(trimmed),
    }
}

/// Splits `host[:port]`, `[v6]` or `[v6]:port`.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => {
                let port = authority[end + 1..].strip_prefix(':');
                (&authority[..=end], port)
            }
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

/// A request header's value as Envoy's matchers see it: absent, the only value, or every
/// value joined with `,` (`; ` for `cookie`). The proxy forwards such a header joined the same
/// way ([`super::joined_value`]), so that the application sees what was checked.
pub fn header_value<'a>(headers: &'a http::HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(String::from_utf8_lossy(first.as_bytes()));
    };
    let separator = if name == http::header::COOKIE {
        "; "
    } else {
        ","
    };
    let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for v in std::iter::once(second).chain(values) {
        joined.push_str(separator);
        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(Cow::Owned(joined))
}

fn in_net(net: &IpNet, ip: IpAddr) -> bool {
    let ip = match (net, ip) {
        (IpNet::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        _ => ip,
    };
    net.contains(&ip)
}

/// The path without query and fragment.
fn path_only(path: &str) -> &str {
    path.find(['?', '#']).map_or(path, |i| &path[..i])
}

impl Header {
    fn collect(&self, out: &mut Vec<HeaderName>) {
        if let Source::Header(name) = &self.source {
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
    }
}

impl Perm {
    /// Adds the names of the (non-pseudo) headers this tree reads to `out`.
    pub(super) fn headers(&self, out: &mut Vec<HeaderName>) {
        match self {
            Perm::And(all) | Perm::Or(all) => all.iter().for_each(|p| p.headers(out)),
            Perm::Not(inner) => inner.headers(out),
            Perm::Header(h) => h.collect(out),
            _ => {}
        }
    }

    pub(super) fn compile(p: &Permission) -> Perm {
        match p {
            Permission::Any => Perm::Any,
            Permission::And(all) => Perm::And(all.iter().map(Perm::compile).collect()),
            Permission::Or(any) => Perm::Or(any.iter().map(Perm::compile).collect()),
            Permission::Not(inner) => Perm::Not(Box::new(Perm::compile(inner))),
            Permission::Header(h) => Perm::Header(Header::new(h)),
            Permission::UrlPath(m) => Perm::Path(m.clone()),
            Permission::UriTemplate(t) => Perm::Template(t.regex.clone()),
            Permission::DestinationIp(net) => Perm::DestinationIp(*net),
            Permission::DestinationPort(p) => Perm::DestinationPort(*p),
            Permission::DestinationPortRange { start, end } => {
                Perm::DestinationPortRange(*start, *end)
            }
            Permission::RequestedServerName(m) => Perm::ServerName(m.clone()),
            Permission::Metadata(m) => Perm::Constant(m.matches_absent()),
        }
    }

    pub(super) fn matches(&self, a: &Attributes<'_>) -> bool {
        match self {
            Perm::Any => true,
            Perm::And(all) => all.iter().all(|p| p.matches(a)),
            Perm::Or(any) => any.iter().any(|p| p.matches(a)),
            Perm::Not(inner) => !inner.matches(a),
            Perm::Header(h) => h.matches(a),
            Perm::Path(m) => a.request.is_some_and(|r| m.matches(path_only(r.path))),
            Perm::Template(re) => a.request.is_some_and(|r| re.is_match(path_only(r.path))),
            Perm::DestinationIp(net) => in_net(net, a.destination.ip()),
            Perm::DestinationPort(p) => a.destination.port() == *p,
            Perm::DestinationPortRange(start, end) => {
                let p = u32::from(a.destination.port());
                p >= *start && p < *end
            }
            Perm::ServerName(m) => m.matches(a.server_name.unwrap_or("")),
            Perm::Constant(c) => *c,
        }
    }
}

impl Prin {
    /// Adds the names of the (non-pseudo) headers this tree reads to `out`.
    pub(super) fn headers(&self, out: &mut Vec<HeaderName>) {
        match self {
            Prin::And(all) | Prin::Or(all) => all.iter().for_each(|p| p.headers(out)),
            Prin::Not(inner) => inner.headers(out),
            Prin::Header(h) => h.collect(out),
            _ => {}
        }
    }

    pub(super) fn compile(p: &Principal) -> Prin {
        match p {
            Principal::Any => Prin::Any,
            Principal::And(all) => Prin::And(all.iter().map(Prin::compile).collect()),
            Principal::Or(any) => Prin::Or(any.iter().map(Prin::compile).collect()),
            Principal::Not(inner) => Prin::Not(Box::new(Prin::compile(inner))),
            Principal::Authenticated(m) => Prin::Authenticated(m.clone()),
            Principal::SourceIp(net) | Principal::DirectRemoteIp(net) => Prin::DirectRemoteIp(*net),
            Principal::RemoteIp(net) => Prin::RemoteIp(*net),
            Principal::Header(h) => Prin::Header(Header::new(h)),
            Principal::UrlPath(m) => Prin::Path(m.clone()),
            Principal::Metadata(m) => Prin::Constant(m.matches_absent()),
        }
    }

    pub(super) fn matches(&self, a: &Attributes<'_>) -> bool {
        match self {
            Prin::Any => true,
            Prin::And(all) => all.iter().all(|p| p.matches(a)),
            Prin::Or(any) => any.iter().any(|p| p.matches(a)),
            Prin::Not(inner) => !inner.matches(a),
            Prin::Authenticated(m) => match (a.principal, m) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(id), Some(m)) => m.matches(id),
            },
            Prin::DirectRemoteIp(net) => in_net(net, a.source.ip()),
            Prin::RemoteIp(net) => {
                let ip = a.request.map_or(a.source.ip(), |r| r.remote_ip);
                in_net(net, ip)
            }
            Prin::Header(h) => h.matches(a),
            Prin::Path(m) => a.request.is_some_and(|r| m.matches(path_only(r.path))),
            Prin::Constant(c) => *c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_views() {
        assert_eq!(authority_view("Example.COM.:80", false), "Example.COM");
        assert_eq!(authority_view("example.com.:80", true), "example.com:80");
        assert_eq!(authority_view("example.com:80", true), "example.com:80");
        assert_eq!(authority_view("example.com.", true), "example.com");
        assert_eq!(authority_view("[::1]:80", false), "[::1]");
        assert_eq!(authority_view("::1", false), "::1");
    }

    #[test]
    fn repeated_headers_join() {
        let mut h = http::HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        let name = HeaderName::from_static("x-a");
        assert_eq!(header_value(&h, &name).as_deref(), Some("1,2"));
        assert_eq!(header_value(&h, &HeaderName::from_static("x-b")), None);
    }

    #[test]
    fn mapped_v4_in_v4_range() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(in_net(&net, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!in_net(&net, "::1".parse().unwrap()));
    }
}

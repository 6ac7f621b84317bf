//! Envoy's RBAC semantics read straight off the expected output (the YAML tree, not the
//! converted model), and requests built from it: for a policy, a request that satisfies its
//! permission and principal trees (a small backtracking search over per-attribute
//! constraints), then near misses that change one attribute back.
//!
//! The reading follows Envoy's documented matching, plus the two rules this project states
//! for `:authority` (ARCHITECTURE.md, authorization): the host is compared without its
//! trailing dot, and without its port unless the pattern names one.

use super::matchers::*;
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use regex_syntax::hir::{Class, Hir, HirKind};
use serde_json::{json, Value};

use super::pb::{Obj, PERMISSION_KEYS, PRINCIPAL_KEYS};

/// One request or connection.
#[derive(Clone, Debug)]
pub struct Req {
    /// An HTTP request (else a TCP connection: no request fields).
    pub http: bool,
    pub method: String,
    pub path: String,
    pub authority: String,
    /// Lower-case name to value.
    pub headers: BTreeMap<String, String>,
    pub source: IpAddr,
    pub remote: IpAddr,
    pub dest_ip: IpAddr,
    pub port: u16,
    pub principal: Option<String>,
    pub sni: Option<String>,
}

impl Req {
    /// The request every search starts from.
    pub fn base(http: bool) -> Req {
        let mut r = Req {
            http,
            method: String::new(),
            path: String::new(),
            authority: String::new(),
            headers: BTreeMap::new(),
            source: "10.0.0.1".parse().unwrap(),
            remote: "10.0.0.1".parse().unwrap(),
            dest_ip: "10.0.0.2".parse().unwrap(),
            port: 8080,
            principal: None,
            sni: None,
        };
        for attr in [Attr::Method, Attr::Path, Attr::Authority] {
            r.set(&attr, fillers(&attr, http)[0].clone());
        }
        r
    }

    fn get(&self, attr: &Attr) -> Option<String> {
        let h = |s: &String| self.http.then(|| s.clone());
        match attr {
            Attr::Method => h(&self.method),
            Attr::Path => h(&self.path),
            Attr::Authority => h(&self.authority).filter(|a| !a.is_empty()),
            Attr::Scheme => self.http.then(|| "http".to_string()),
            Attr::Header(n) => self.headers.get(n).filter(|_| self.http).cloned(),
            Attr::DestIp => Some(self.dest_ip.to_string()),
            Attr::Port => Some(self.port.to_string()),
            Attr::Source => Some(self.source.to_string()),
            Attr::Remote => Some(self.remote.to_string()),
            Attr::Principal => self.principal.clone(),
            Attr::Sni => self.sni.clone(),
            Attr::Metadata => None,
        }
    }

    fn set(&mut self, attr: &Attr, v: Option<String>) {
        match attr {
            Attr::Method => self.method = v.unwrap_or_default(),
            Attr::Path => self.path = v.unwrap_or_default(),
            Attr::Authority => self.authority = v.unwrap_or_default(),
            Attr::Header(n) => {
                match v {
                    Some(v) => self.headers.insert(n.clone(), v),
                    None => self.headers.remove(n),
                };
            }
            Attr::DestIp => self.dest_ip = v.unwrap().parse().unwrap(),
            Attr::Port => self.port = v.unwrap().parse().unwrap(),
            Attr::Source => self.source = v.unwrap().parse().unwrap(),
            Attr::Remote => self.remote = v.unwrap().parse().unwrap(),
            Attr::Principal => self.principal = v,
            Attr::Sni => self.sni = v,
            Attr::Scheme | Attr::Metadata => {}
        }
    }
}

/// What a leaf reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attr {
    Method,
    Path,
    Authority,
    Scheme,
    Header(String),
    DestIp,
    Port,
    Source,
    Remote,
    Principal,
    Sni,
    Metadata,
}

/// A leaf of a permission or principal tree.
#[derive(Clone, Debug)]
struct Leaf<'a> {
    attr: Attr,
    test: Test<'a>,
}

#[derive(Clone, Debug)]
enum Test<'a> {
    /// A `HeaderMatcher`.
    Header(&'a Value),
    /// A `StringMatcher` on the path without query.
    UrlPath(&'a Value),
    Template(String),
    Cidr(IpNet),
    Port(u16),
    PortRange(u32, u32),
    /// A `StringMatcher` on the server name ("" without one).
    Sni(&'a Value),
    /// The peer is authenticated, and its identity matches (if a matcher is given).
    Authenticated(Option<&'a Value>),
    /// A `MetadataMatcher`: no filter of the proxy writes metadata.
    Metadata {
        invert: bool,
    },
}

impl Leaf<'_> {
    fn on(&self, value: Option<&str>) -> bool {
        match &self.test {
            Test::Header(m) => header_match(m, &self.attr, value),
            Test::UrlPath(m) => value.is_some_and(|p| string_match(m, path_only(p))),
            Test::Template(t) => {
                value.is_some_and(|p| full_match(&template_regex(t), path_only(p)))
            }
            Test::Cidr(net) => value.is_some_and(|ip| net.contains(&ip.parse::<IpAddr>().unwrap())),
            Test::Port(p) => value == Some(&*p.to_string()),
            Test::PortRange(s, e) => {
                value.is_some_and(|v| (*s..*e).contains(&v.parse::<u32>().unwrap()))
            }
            Test::Sni(m) => string_match(m, value.unwrap_or("")),
            Test::Authenticated(m) => match (value, m) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(id), Some(m)) => string_match(m, id),
            },
            Test::Metadata { invert } => *invert,
        }
    }

    /// Values that satisfy this leaf.
    fn witnesses(&self) -> Vec<String> {
        match &self.test {
            Test::Header(m) => {
                if m.get("presentMatch").is_some() {
                    vec!["present".into()]
                } else if let Some(sm) = m.get("stringMatch") {
                    string_witness(sm)
                } else if let Some(r) = m.get("safeRegexMatch") {
                    vec![regex_witness(r["regex"].as_str().unwrap())]
                } else {
                    let lit = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
                    vec![lit("exactMatch")
                        .or(lit("prefixMatch").map(|p| p + "w"))
                        .or(lit("suffixMatch").map(|s| format!("w{s}")))
                        .unwrap()]
                }
            }
            Test::UrlPath(m) | Test::Sni(m) => string_witness(m),
            Test::Authenticated(Some(m)) => string_witness(m),
            Test::Authenticated(None) => vec!["spiffe://cluster.local/ns/w/sa/w".into()],
            Test::Template(t) => vec![t.replace("**", "w").replace('*', "w")],
            Test::Cidr(net) => {
                let first = net.network();
                let mut v = vec![first.to_string()];
                if let Some(next) = net.hosts().nth(1) {
                    v.push(next.to_string());
                }
                v
            }
            Test::Port(p) => vec![p.to_string()],
            Test::PortRange(s, _) => vec![s.to_string()],
            Test::Metadata { .. } => vec![],
        }
    }
}

fn string_witness(m: &Value) -> Vec<String> {
    let lit = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(v) = lit("exact") {
        vec![v]
    } else if let Some(v) = lit("prefix") {
        vec![format!("{v}w")]
    } else if let Some(v) = lit("suffix") {
        vec![format!("w{v}")]
    } else if let Some(v) = lit("contains") {
        vec![format!("w{v}w")]
    } else {
        vec![regex_witness(m["safeRegex"]["regex"].as_str().unwrap())]
    }
}

/// A string the expression matches in full: shortest repetitions, first alternatives,
/// `a` (or the class's first printable character) for classes.
fn regex_witness(re: &str) -> String {
    fn pick(c: &Class) -> char {
        let chars: Vec<(char, char)> = match c {
            Class::Unicode(u) => u.ranges().iter().map(|r| (r.start(), r.end())).collect(),
            Class::Bytes(b) => b
                .ranges()
                .iter()
                .map(|r| (r.start() as char, r.end() as char))
                .collect(),
        };
        for want in ['a', 'A', '0'] {
            if chars.iter().any(|(s, e)| (*s..=*e).contains(&want)) {
                return want;
            }
        }
        chars
            .iter()
            .find_map(|(s, e)| (*s..=*e).find(|c| c.is_ascii_graphic()))
            .unwrap_or(chars[0].0)
    }
    fn walk(h: &Hir, out: &mut String) {
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(l) => out.push_str(&String::from_utf8_lossy(&l.0)),
            HirKind::Class(c) => out.push(pick(c)),
            HirKind::Repetition(r) => {
                for _ in 0..r.min {
                    walk(&r.sub, out);
                }
            }
            HirKind::Capture(c) => walk(&c.sub, out),
            HirKind::Concat(all) => all.iter().for_each(|h| walk(h, out)),
            HirKind::Alternation(alts) => walk(&alts[0], out),
        }
    }
    let hir = regex_syntax::parse(re).unwrap();
    let mut out = String::new();
    walk(&hir, &mut out);
    assert!(full_match(re, &out), "witness {out:?} of {re}");
    out
}

/// The node as a leaf, or `None` for an operator (`any`, and/or/not).
fn leaf<'a>(key: &str, v: &'a Value, http: bool) -> Option<Leaf<'a>> {
    let cidr = |v: &Value| -> IpNet {
        let ip: IpAddr = v["addressPrefix"].as_str().unwrap().parse().unwrap();
        let len = v["prefixLen"]
            .as_u64()
            .map_or(if ip.is_ipv4() { 32 } else { 128 }, |n| n as u8);
        IpNet::new(ip, len).unwrap().trunc()
    };
    let (attr, test) = match key {
        "header" => {
            let attr = match v["name"].as_str().unwrap().to_ascii_lowercase().as_str() {
                ":method" => Attr::Method,
                ":path" => Attr::Path,
                ":authority" | "host" => Attr::Authority,
                ":scheme" => Attr::Scheme,
                n => Attr::Header(n.to_string()),
            };
            (attr, Test::Header(v))
        }
        "urlPath" => (Attr::Path, Test::UrlPath(&v["path"])),
        "uriTemplate" => (
            Attr::Path,
            Test::Template(
                v["typedConfig"]["pathTemplate"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
        ),
        "destinationIp" => (Attr::DestIp, Test::Cidr(cidr(v))),
        "destinationPort" => (Attr::Port, Test::Port(v.as_u64().unwrap() as u16)),
        "destinationPortRange" => (
            Attr::Port,
            Test::PortRange(
                v["start"].as_u64().unwrap_or(0) as u32,
                v["end"].as_u64().unwrap_or(0) as u32,
            ),
        ),
        "requestedServerName" => (Attr::Sni, Test::Sni(v)),
        "authenticated" => (Attr::Principal, Test::Authenticated(v.get("principalName"))),
        "sourceIp" | "directRemoteIp" => (Attr::Source, Test::Cidr(cidr(v))),
        // Without a request, the original client is the peer.
        "remoteIp" if !http => (Attr::Source, Test::Cidr(cidr(v))),
        "remoteIp" => (Attr::Remote, Test::Cidr(cidr(v))),
        "metadata" => (
            Attr::Metadata,
            Test::Metadata {
                invert: v["invert"].as_bool().unwrap_or(false),
            },
        ),
        _ => return None,
    };
    Some(Leaf { attr, test })
}

/// A node of a permission or principal tree: its one key and value.
fn node(v: &Value) -> (&str, &Value) {
    let known: Vec<&str> = PERMISSION_KEYS
        .iter()
        .chain(PRINCIPAL_KEYS)
        .copied()
        .collect();
    Obj::new(v, "node", &known).one()
}

fn children<'a>(key: &str, v: &'a Value) -> &'a [Value] {
    let list = match key {
        "andRules" | "orRules" => &v["rules"],
        _ => &v["ids"],
    };
    list.as_array().map_or(&[], Vec::as_slice)
}

/// Whether a permission or principal tree matches `req`.
pub fn matches(v: &Value, req: &Req) -> bool {
    let (key, inner) = node(v);
    match key {
        "any" => inner.as_bool().unwrap(),
        "andRules" | "andIds" => children(key, inner).iter().all(|c| matches(c, req)),
        "orRules" | "orIds" => children(key, inner).iter().any(|c| matches(c, req)),
        "notRule" | "notId" => !matches(inner, req),
        _ => {
            let l = leaf(key, inner, req.http).unwrap();
            l.on(req.get(&l.attr).as_deref())
        }
    }
}

/// A policy as one tree: any permission and any principal.
pub fn policy_tree(p: &Value) -> Value {
    json!({"andRules": {"rules": [
        {"orRules": {"rules": p["permissions"].clone()}},
        {"orIds": {"ids": p["principals"].clone()}},
    ]}})
}

/// Constraints gathered by the search: per attribute, leaves that must and must not match.
type Constraints<'a> = BTreeMap<Attr, (Vec<Leaf<'a>>, Vec<Leaf<'a>>)>;

fn fillers(attr: &Attr, http: bool) -> Vec<Option<String>> {
    let s = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
    let pseudo = matches!(
        attr,
        Attr::Method | Attr::Path | Attr::Authority | Attr::Scheme
    );
    if !http && (pseudo || matches!(attr, Attr::Header(_))) {
        return vec![None];
    }
    match attr {
        Attr::Method => s(&["GET", "ZZFILLER"]),
        Attr::Path => s(&["/", "/zz-filler"]),
        Attr::Authority => s(&["zz-filler.test"]),
        Attr::Scheme => s(&["http"]),
        Attr::Header(_) => [None].into_iter().chain(s(&["zz-filler"])).collect(),
        Attr::DestIp => s(&["10.0.0.2", "203.0.113.2", "fd00::2"]),
        Attr::Source | Attr::Remote => s(&["10.0.0.1", "203.0.113.1", "fd00::1"]),
        Attr::Port => s(&["8080", "1"]),
        Attr::Principal => [None]
            .into_iter()
            .chain(s(&["spiffe://zz.test/ns/zz/sa/zz"]))
            .collect(),
        Attr::Sni => [None].into_iter().chain(s(&["zz.test"])).collect(),
        Attr::Metadata => vec![None],
    }
}

/// A value of `attr` meeting the constraints, if one of the candidates does.
fn solve_attr(
    attr: &Attr,
    pos: &[Leaf<'_>],
    neg: &[Leaf<'_>],
    http: bool,
) -> Option<Option<String>> {
    let mut cands: Vec<Option<String>> = Vec::new();
    for l in pos {
        cands.extend(l.witnesses().into_iter().map(Some));
    }
    // Combine a prefix and a suffix when both are asked for.
    let lits = |k: &str| -> Vec<String> {
        pos.iter()
            .filter_map(|l| match &l.test {
                Test::Header(m) => m.get("stringMatch"),
                Test::UrlPath(m) | Test::Sni(m) | Test::Authenticated(Some(m)) => Some(*m),
                _ => None,
            })
            .filter_map(|m| m.get(k).and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    for p in lits("prefix") {
        for s in lits("suffix") {
            cands.push(Some(format!("{p}w{s}")));
        }
    }
    cands.extend(fillers(attr, http));
    let pseudo = matches!(
        attr,
        Attr::Method | Attr::Path | Attr::Authority | Attr::Scheme | Attr::Header(_)
    );
    if !http && pseudo {
        // A connection has no request: these are absent.
        cands = vec![None];
    }
    cands
        .into_iter()
        .find(|c| pos.iter().all(|l| l.on(c.as_deref())) && !neg.iter().any(|l| l.on(c.as_deref())))
}

struct Search<'a> {
    http: bool,
    budget: u32,
    found: Option<Constraints<'a>>,
}

impl<'a> Search<'a> {
    fn run(&mut self, mut goals: Vec<(&'a Value, bool)>, mut cons: Constraints<'a>) -> bool {
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        let Some((v, want)) = goals.pop() else {
            self.found = Some(cons);
            return true;
        };
        let (key, inner) = node(v);
        match (key, want) {
            ("any", w) => inner.as_bool().unwrap() == w && self.run(goals, cons),
            ("andRules" | "andIds", true) | ("orRules" | "orIds", false) => {
                goals.extend(children(key, inner).iter().map(|c| (c, want)));
                self.run(goals, cons)
            }
            ("andRules" | "andIds", false) | ("orRules" | "orIds", true) => {
                for c in children(key, inner) {
                    let mut g = goals.clone();
                    g.push((c, want));
                    if self.run(g, cons.clone()) {
                        return true;
                    }
                }
                false
            }
            ("notRule" | "notId", w) => {
                goals.push((inner, !w));
                self.run(goals, cons)
            }
            _ => {
                let l = leaf(key, inner, self.http).unwrap();
                let attr = l.attr.clone();
                let entry = cons.entry(attr.clone()).or_default();
                if want {
                    entry.0.push(l);
                } else {
                    entry.1.push(l);
                }
                let (pos, neg) = &cons[&attr];
                solve_attr(&attr, pos, neg, self.http).is_some() && self.run(goals, cons)
            }
        }
    }
}

/// A request matching the tree (`want` true) or not, starting from the base request; and
/// the attributes the search set.
pub fn witness(tree: &Value, http: bool, want: bool) -> Option<(Req, Vec<Attr>)> {
    let mut s = Search {
        http,
        budget: 20_000,
        found: None,
    };
    if !s.run(vec![(tree, want)], Constraints::new()) {
        return None;
    }
    let cons = s.found.unwrap();
    let mut req = Req::base(http);
    let mut set = Vec::new();
    for (attr, (pos, neg)) in &cons {
        let v = solve_attr(attr, pos, neg, http).unwrap();
        req.set(attr, v);
        set.push(attr.clone());
    }
    assert_eq!(matches(tree, &req), want, "search result {req:?}");
    Some((req, set))
}

/// `req` with `attr` put back to the base request's value (or absent).
pub fn near_miss(req: &Req, attr: &Attr) -> Vec<Req> {
    fillers(attr, req.http)
        .into_iter()
        .map(|v| {
            let mut r = req.clone();
            r.set(attr, v);
            r
        })
        .collect()
}

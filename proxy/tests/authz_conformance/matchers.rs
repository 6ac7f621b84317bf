//! Envoy's string, header and authority matching as the oracle reads it off the expected
//! RBAC output.

thread_local! {
    /// Compiled regexes of the expected output, by source.
    static REGEXES: RefCell<HashMap<String, Regex>> = RefCell::new(HashMap::new());
}

use super::oracle::*;
use super::pb::Obj;
use regex::Regex;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;

pub fn full_match(re: &str, s: &str) -> bool {
    REGEXES.with(|c| {
        c.borrow_mut()
            .entry(re.to_string())
            .or_insert_with(|| Regex::new(&format!("^(?:{re})$")).unwrap())
            .is_match(s)
    })
}

/// Envoy's `StringMatcher`.
pub fn string_match(m: &Value, s: &str) -> bool {
    let o = Obj::new(
        m,
        "stringMatch",
        &[
            "exact",
            "prefix",
            "suffix",
            "contains",
            "safeRegex",
            "ignoreCase",
        ],
    );
    let ic = o
        .get("ignoreCase")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let fold = |v: &str| if ic { v.to_lowercase() } else { v.to_string() };
    let s = fold(s);
    let lit = |k: &str| o.get(k).and_then(Value::as_str).map(fold);
    if let Some(v) = lit("exact") {
        s == v
    } else if let Some(v) = lit("prefix") {
        s.starts_with(&v)
    } else if let Some(v) = lit("suffix") {
        s.ends_with(&v)
    } else if let Some(v) = lit("contains") {
        s.contains(&v)
    } else {
        let re = o.get("safeRegex").unwrap()["regex"].as_str().unwrap();
        full_match(re, &s)
    }
}

/// A header matcher's pattern text (for the authority's port rule) and its test on a value.
pub fn header_match(m: &Value, attr: &Attr, value: Option<&str>) -> bool {
    let invert = m["invertMatch"].as_bool().unwrap_or(false);
    let Some(value) = value else {
        return m
            .get("presentMatch")
            .is_some_and(|p| p.as_bool() == Some(invert));
    };
    let pattern_text = m
        .get("stringMatch")
        .or(m.get("safeRegexMatch"))
        .map(Value::to_string);
    let value = if *attr == Attr::Authority {
        let with_port = pattern_text.as_ref().is_some_and(|p| p.contains(':'))
            || m.get("presentMatch").is_some();
        authority_view(value, with_port)
    } else {
        value.to_string()
    };
    let matched = if let Some(p) = m.get("presentMatch") {
        p.as_bool().unwrap()
    } else if let Some(sm) = m.get("stringMatch") {
        string_match(sm, &value)
    } else if let Some(r) = m.get("safeRegexMatch") {
        full_match(r["regex"].as_str().unwrap(), &value)
    } else {
        let lit = |k: &str| m.get(k).and_then(Value::as_str);
        if let Some(v) = lit("exactMatch") {
            value == v
        } else if let Some(v) = lit("prefixMatch") {
            value.starts_with(v)
        } else {
            value.ends_with(lit("suffixMatch").unwrap())
        }
    };
    matched != invert
}

pub fn authority_view(a: &str, with_port: bool) -> String {
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && !a.starts_with('[') => (h, Some(p)),
        _ => (a, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    match (with_port, port) {
        (true, Some(p)) => format!("{host}:{p}"),
        _ => host.to_string(),
    }
}

pub fn path_only(p: &str) -> &str {
    p.find(['?', '#']).map_or(p, |i| &p[..i])
}

/// Envoy's URI template: `*` one segment, `**` any text, literals as written.
pub fn template_regex(t: &str) -> String {
    let mut out = String::new();
    let mut rest = t;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("**") {
            out.push_str(".*");
            rest = r;
        } else if let Some(r) = rest.strip_prefix('*') {
            out.push_str("[^/]+");
            rest = r;
        } else {
            let end = rest.find('*').unwrap_or(rest.len());
            out.push_str(&regex::escape(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

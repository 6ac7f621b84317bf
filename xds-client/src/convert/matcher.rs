//! Envoy's generic matchers: `StringMatcher`, `RegexMatcher`, `HeaderMatcher`, `PathMatcher`,
//! `MetadataMatcher`, `ValueMatcher`, `QueryParameterMatcher`; regex substitutions, fractions
//! and header operations (`HeaderValueOption`).
//!
//! Ignored fields: `RegexMatcher.engine_type` (RE2 is the only engine; its program size limit
//! is Envoy's tuning). Rejected: `StringMatcher.custom` (extensions the proxy does not have).

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValueOption, RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher::QueryParameterMatchSpecifier,
    HeaderMatcher as PbHeader, QueryParameterMatcher as PbQueryMatcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    double_matcher, list_matcher, metadata_matcher, path_matcher, string_matcher, value_matcher,
    MetadataMatcher as PbMetadata, PathMatcher, RegexMatchAndSubstitute, RegexMatcher,
    StringMatcher as PbString, ValueMatcher as PbValue,
};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};

use super::{ConvertError, Within};
use crate::model::matcher::{
    Fraction, HeaderMatch, HeaderMatcher, MetadataMatcher, QueryParameterMatcher, Regex,
    StringMatcher, ValueMatcher,
};
use crate::model::{AppendAction, HeaderAppend, HeaderOps, HeaderValue, RegexRewrite, ValuePart};

/// A `RegexMatcher`, compiled.
pub(crate) fn regex(proto: &RegexMatcher) -> Result<Regex, ConvertError> {
    Regex::new(&proto.regex)
        .map_err(|e| {
            // The parser's message spans lines (pattern, caret, reason): keep the reason.
            let text = e.to_string();
            let reason = text
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            ConvertError::invalid("regular expression", format!("{}: {reason}", proto.regex))
        })
        .at("regex")
}

/// A `StringMatcher`. Empty prefixes, suffixes and substrings are invalid, as in Envoy.
impl TryFrom<&PbString> for StringMatcher {
    type Error = ConvertError;

    fn try_from(proto: &PbString) -> Result<Self, ConvertError> {
        use string_matcher::MatchPattern as P;
        let ignore_case = proto.ignore_case;
        let non_empty = |field: &'static str, v: &String| {
            if v.is_empty() {
                Err(ConvertError::missing(field))
            } else {
                Ok(v.clone())
            }
        };
        Ok(match &proto.match_pattern {
            Some(P::Exact(value)) => StringMatcher::Exact {
                value: value.clone(),
                ignore_case,
            },
            Some(P::Prefix(v)) => StringMatcher::Prefix {
                value: non_empty("prefix", v)?,
                ignore_case,
            },
            Some(P::Suffix(v)) => StringMatcher::Suffix {
                value: non_empty("suffix", v)?,
                ignore_case,
            },
            Some(P::Contains(v)) => StringMatcher::Contains {
                value: non_empty("contains", v)?,
                ignore_case,
            },
            Some(P::SafeRegex(re)) => StringMatcher::Regex(regex(re).at("safe_regex")?),
            Some(P::Custom(_)) => return Err(ConvertError::unsupported("custom")),
            None => return Err(ConvertError::missing("match_pattern")),
        })
    }
}

/// An optional `StringMatcher` field that must be set.
pub(crate) fn string(
    proto: Option<&PbString>,
    field: &'static str,
) -> Result<StringMatcher, ConvertError> {
    let proto = proto.ok_or_else(|| ConvertError::missing(field))?;
    StringMatcher::try_from(proto).at(field)
}

/// A `PathMatcher` (its only rule is a string matcher on the path).
pub(crate) fn path(proto: &PathMatcher) -> Result<StringMatcher, ConvertError> {
    match &proto.rule {
        Some(path_matcher::Rule::Path(m)) => StringMatcher::try_from(m).at("path"),
        None => Err(ConvertError::missing("rule")),
    }
}

/// A `HeaderMatcher`: the name is lowercased; the deprecated `*_match` forms become string
/// matchers (an empty `exact_match` matches any value, as in Envoy).
#[allow(deprecated)]
impl TryFrom<&PbHeader> for HeaderMatcher {
    type Error = ConvertError;

    fn try_from(proto: &PbHeader) -> Result<Self, ConvertError> {
        use header_matcher::HeaderMatchSpecifier as S;
        if proto.name.is_empty() {
            return Err(ConvertError::missing("name"));
        }
        let plain = |value: &String| HeaderMatch::String(StringMatcher::exact(value.clone()));
        let literal = |field: &'static str, value: &String, make: fn(String) -> StringMatcher| {
            if value.is_empty() {
                Err(ConvertError::missing(field))
            } else {
                Ok(HeaderMatch::String(make(value.clone())))
            }
        };
        let rule = match &proto.header_match_specifier {
            Some(S::ExactMatch(v)) if v.is_empty() => HeaderMatch::Present(true),
            Some(S::ExactMatch(v)) => plain(v),
            Some(S::SafeRegexMatch(re)) => {
                HeaderMatch::String(StringMatcher::Regex(regex(re).at("safe_regex_match")?))
            }
            Some(S::RangeMatch(r)) => {
                if r.start >= r.end {
                    return Err(ConvertError::invalid(
                        "range",
                        format!("[{}, {})", r.start, r.end),
                    )
                    .at("range_match"));
                }
                HeaderMatch::Range {
                    start: r.start,
                    end: r.end,
                }
            }
            Some(S::PresentMatch(p)) => HeaderMatch::Present(*p),
            Some(S::PrefixMatch(v)) => literal("prefix_match", v, |value| StringMatcher::Prefix {
                value,
                ignore_case: false,
            })?,
            Some(S::SuffixMatch(v)) => literal("suffix_match", v, |value| StringMatcher::Suffix {
                value,
                ignore_case: false,
            })?,
            Some(S::ContainsMatch(v)) => {
                literal("contains_match", v, |value| StringMatcher::Contains {
                    value,
                    ignore_case: false,
                })?
            }
            Some(S::StringMatch(m)) => {
                HeaderMatch::String(StringMatcher::try_from(m).at("string_match")?)
            }
            // No specifier: Envoy matches on presence.
            None => HeaderMatch::Present(true),
        };
        Ok(HeaderMatcher {
            name: proto.name.to_ascii_lowercase(),
            rule,
            invert: proto.invert_match,
            treat_missing_as_empty: proto.treat_missing_header_as_empty,
        })
    }
}

/// A `MetadataMatcher`.
impl TryFrom<&PbMetadata> for MetadataMatcher {
    type Error = ConvertError;

    fn try_from(proto: &PbMetadata) -> Result<Self, ConvertError> {
        if proto.filter.is_empty() {
            return Err(ConvertError::missing("filter"));
        }
        if proto.path.is_empty() {
            return Err(ConvertError::missing("path"));
        }
        let mut path = Vec::with_capacity(proto.path.len());
        for (i, segment) in proto.path.iter().enumerate() {
            match &segment.segment {
                Some(metadata_matcher::path_segment::Segment::Key(k)) if !k.is_empty() => {
                    path.push(k.clone())
                }
                _ => return Err(ConvertError::missing("key").at_index("path", i)),
            }
        }
        let value = proto
            .value
            .as_ref()
            .ok_or_else(|| ConvertError::missing("value"))?;
        Ok(MetadataMatcher {
            filter: proto.filter.clone(),
            path,
            value: ValueMatcher::try_from(value).at("value")?,
            invert: proto.invert,
        })
    }
}

/// A `ValueMatcher`.
impl TryFrom<&PbValue> for ValueMatcher {
    type Error = ConvertError;

    fn try_from(proto: &PbValue) -> Result<Self, ConvertError> {
        use value_matcher::MatchPattern as P;
        Ok(match &proto.match_pattern {
            Some(P::NullMatch(_)) => ValueMatcher::Null,
            Some(P::DoubleMatch(d)) => match &d.match_pattern {
                Some(double_matcher::MatchPattern::Exact(v)) => ValueMatcher::DoubleExact(*v),
                Some(double_matcher::MatchPattern::Range(r)) => ValueMatcher::DoubleRange {
                    start: r.start,
                    end: r.end,
                },
                None => return Err(ConvertError::missing("match_pattern").at("double_match")),
            },
            Some(P::StringMatch(m)) => {
                ValueMatcher::String(StringMatcher::try_from(m).at("string_match")?)
            }
            Some(P::BoolMatch(b)) => ValueMatcher::Bool(*b),
            Some(P::PresentMatch(p)) => ValueMatcher::Present(*p),
            Some(P::ListMatch(list)) => match &list.match_pattern {
                Some(list_matcher::MatchPattern::OneOf(inner)) => {
                    ValueMatcher::ListOneOf(Box::new(
                        ValueMatcher::try_from(inner.as_ref())
                            .at("one_of")
                            .at("list_match")?,
                    ))
                }
                None => return Err(ConvertError::missing("match_pattern").at("list_match")),
            },
            Some(P::OrMatch(or)) => {
                if or.value_matchers.len() < 2 {
                    return Err(ConvertError::invalid(
                        "or_match (at least 2 value matchers)",
                        or.value_matchers.len().to_string(),
                    )
                    .at("or_match"));
                }
                let mut all = Vec::with_capacity(or.value_matchers.len());
                for (i, m) in or.value_matchers.iter().enumerate() {
                    all.push(
                        ValueMatcher::try_from(m)
                            .at_index("value_matchers", i)
                            .at("or_match")?,
                    );
                }
                ValueMatcher::Or(all)
            }
            None => return Err(ConvertError::missing("match_pattern")),
        })
    }
}

/// A `RegexMatchAndSubstitute`: Envoy's `\N` back-references become `${N}`.
pub(super) fn regex_rewrite(m: &RegexMatchAndSubstitute) -> Result<RegexRewrite, ConvertError> {
    let Some(pattern) = &m.pattern else {
        return Err(ConvertError::missing("pattern"));
    };
    let pattern = Regex::unanchored(&pattern.regex)
        .map_err(|e| ConvertError::invalid("regular expression", format!("{}: {e}", pattern.regex)))
        .at("regex")
        .at("pattern")?;
    Ok(RegexRewrite {
        pattern,
        substitution: substitution(&m.substitution),
    })
}

/// Envoy's substitution syntax (`\1`, literal `$`) in the regex crate's (`${1}`, `$$`).
fn substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        out.push(d);
                        chars.next();
                    }
                    out.push('}');
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// A list of header matchers, located at `field[i]`.
pub(super) fn header_matchers(
    list: &[PbHeader],
    field: &'static str,
) -> Result<Vec<HeaderMatcher>, ConvertError> {
    list.iter()
        .enumerate()
        .map(|(i, m)| HeaderMatcher::try_from(m).at_index(field, i))
        .collect()
}

/// A `QueryParameterMatcher`.
pub(super) fn query_matcher(m: &PbQueryMatcher) -> Result<QueryParameterMatcher, ConvertError> {
    if m.name.is_empty() {
        return Err(ConvertError::missing("name"));
    }
    let value = match &m.query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
            Some(StringMatcher::try_from(s).at("string_match")?)
        }
        Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None => None,
        Some(QueryParameterMatchSpecifier::PresentMatch(false)) => {
            return Err(ConvertError::unsupported_value("present_match", "false"))
        }
    };
    Ok(QueryParameterMatcher {
        name: m.name.clone(),
        value,
    })
}

/// A `FractionalPercent` in parts per million (a numerator above the denominator is 100%).
pub(super) fn fraction(p: &FractionalPercent) -> Result<Fraction, ConvertError> {
    let scale = match DenominatorType::try_from(p.denominator) {
        Ok(DenominatorType::Hundred) => 10_000u64,
        Ok(DenominatorType::TenThousand) => 100,
        Ok(DenominatorType::Million) => 1,
        Err(_) => {
            return Err(ConvertError::unsupported_value(
                "denominator",
                p.denominator.to_string(),
            ))
        }
    };
    let per_million = (u64::from(p.numerator) * scale).min(1_000_000) as u32;
    Ok(Fraction { per_million })
}

/// A `RuntimeFractionalPercent`: its default value (100% when absent).
pub(super) fn runtime_fraction(
    p: Option<&RuntimeFractionalPercent>,
) -> Result<Fraction, ConvertError> {
    match p.and_then(|p| p.default_value.as_ref()) {
        Some(v) => fraction(v).at("default_value"),
        None => Ok(Fraction::ALL),
    }
}

/// Header names Envoy forbids modifying with header operations.
fn is_protected(name: &str) -> bool {
    name.starts_with(':') || name == "host"
}

/// One `HeaderValueOption`.
#[allow(deprecated)]
pub(super) fn header_append(h: &HeaderValueOption) -> Result<HeaderAppend, ConvertError> {
    let Some(header) = &h.header else {
        return Err(ConvertError::missing("header"));
    };
    let name = header.key.to_ascii_lowercase();
    if name.is_empty() || is_protected(&name) {
        return Err(ConvertError::invalid("header name", header.key.clone())
            .at("key")
            .at("header"));
    }
    let raw = if header.raw_value.is_empty() {
        header.value.clone()
    } else {
        String::from_utf8(header.raw_value.clone()).map_err(|_| {
            ConvertError::invalid("header value", "non-UTF-8 bytes")
                .at("raw_value")
                .at("header")
        })?
    };
    let value = header_value(&raw).at("value").at("header")?;
    let action = if let Some(append) = &h.append {
        if append.value {
            AppendAction::AppendIfExistsOrAdd
        } else {
            AppendAction::OverwriteIfExistsOrAdd
        }
    } else {
        match HeaderAppendAction::try_from(h.append_action) {
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
            Ok(HeaderAppendAction::AddIfAbsent) => AppendAction::AddIfAbsent,
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
            Ok(HeaderAppendAction::OverwriteIfExists) => AppendAction::OverwriteIfExists,
            Err(_) => {
                return Err(ConvertError::unsupported_value(
                    "append_action",
                    h.append_action.to_string(),
                ))
            }
        }
    };
    Ok(HeaderAppend {
        name,
        value,
        action,
        keep_empty: h.keep_empty_value,
    })
}

/// A header value with Envoy's `%VARIABLE%` syntax parsed.
fn header_value(raw: &str) -> Result<HeaderValue, ConvertError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find('%') {
        literal.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            literal.push('%');
            rest = after;
            continue;
        }
        let Some(end) = rest.find('%') else {
            return Err(ConvertError::invalid("header value", raw));
        };
        let variable = &rest[..end];
        rest = &rest[end + 1..];
        let part = match variable {
            "DOWNSTREAM_REMOTE_ADDRESS" => ValuePart::DownstreamRemoteAddress,
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
                ValuePart::DownstreamRemoteAddressWithoutPort
            }
            "DOWNSTREAM_LOCAL_ADDRESS" => ValuePart::DownstreamLocalAddress,
            "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => ValuePart::DownstreamLocalAddressWithoutPort,
            "PROTOCOL" => ValuePart::Protocol,
            "HOSTNAME" => ValuePart::Hostname,
            v => match v.strip_prefix("REQ(").and_then(|r| r.strip_suffix(')')) {
                Some(name) if !name.is_empty() => {
                    ValuePart::RequestHeader(name.to_ascii_lowercase())
                }
                _ => return Err(ConvertError::unsupported_value("value", format!("%{v}%"))),
            },
        };
        if !literal.is_empty() {
            parts.push(ValuePart::Literal(std::mem::take(&mut literal)));
        }
        parts.push(part);
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(ValuePart::Literal(literal));
    }
    Ok(HeaderValue(parts))
}

/// Removed header names: lowercase, never a pseudo-header or `host`.
fn header_names(names: &[String], field: &'static str) -> Result<Vec<String>, ConvertError> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let lower = n.to_ascii_lowercase();
            if lower.is_empty() || is_protected(&lower) {
                Err(ConvertError::invalid("header name", n.clone()).at_index(field, i))
            } else {
                Ok(lower)
            }
        })
        .collect()
}

/// The four header operation lists of a route, virtual host, route configuration or
/// weighted cluster.
pub(super) fn header_ops(
    request_add: &[HeaderValueOption],
    request_remove: &[String],
    response_add: &[HeaderValueOption],
    response_remove: &[String],
) -> Result<HeaderOps, ConvertError> {
    let adds = |list: &[HeaderValueOption], field| {
        list.iter()
            .enumerate()
            .map(|(i, h)| header_append(h).at_index(field, i))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(HeaderOps {
        request_add: adds(request_add, "request_headers_to_add")?,
        request_remove: header_names(request_remove, "request_headers_to_remove")?,
        response_add: adds(response_add, "response_headers_to_add")?,
        response_remove: header_names(response_remove, "response_headers_to_remove")?,
    })
}

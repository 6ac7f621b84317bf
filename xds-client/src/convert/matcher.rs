//! Envoy's generic matchers: `StringMatcher`, `RegexMatcher`, `HeaderMatcher`, `PathMatcher`,
//! `MetadataMatcher`, `ValueMatcher`.
//!
//! Ignored fields: `RegexMatcher.engine_type` (RE2 is the only engine; its program size limit
//! is Envoy's tuning). Rejected: `StringMatcher.custom` (extensions the proxy does not have).

use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher as PbHeader};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    double_matcher, list_matcher, metadata_matcher, path_matcher, string_matcher, value_matcher,
    MetadataMatcher as PbMetadata, PathMatcher, RegexMatcher, StringMatcher as PbString,
    ValueMatcher as PbValue,
};

use super::{ConvertError, Within};
use crate::model::matcher::{
    HeaderMatch, HeaderMatcher, MetadataMatcher, Regex, StringMatcher, ValueMatcher,
};

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

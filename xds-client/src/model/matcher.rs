//! Envoy's generic matchers (`envoy.type.matcher.v3` and `route.v3.HeaderMatcher`), as plain
//! validated data with their matching rules.
//!
//! Regular expressions are compiled once, when the resource is converted ([`Regex`]); an
//! expression that does not compile makes the resource invalid (a NACK), never a request-time
//! failure. Matching follows Envoy: `safe_regex` must match the whole input (RE2 full match),
//! `ignore_case` applies to exact, prefix, suffix and contains but not to regexes.

use std::fmt;

use serde::{Serialize, Serializer};

/// A regular expression matched against the whole input, as Envoy's `safe_regex` (Google RE2
/// semantics; the `regex` crate implements the same syntax and linear-time guarantees).
#[derive(Clone)]
pub struct Regex {
    pattern: String,
    compiled: regex::Regex,
}

impl Regex {
    /// Compiles `pattern` for full matches. The error is about `pattern` as written.
    pub fn new(pattern: &str) -> Result<Regex, regex::Error> {
        regex::Regex::new(pattern)?;
        let compiled = regex::Regex::new(&format!("^(?:{pattern})$"))?;
        Ok(Regex {
            pattern: pattern.to_string(),
            compiled,
        })
    }

    /// Compiles `pattern` to match anywhere in the input: for substitutions (Envoy's
    /// `RegexMatchAndSubstitute`), which replace every match.
    pub fn unanchored(pattern: &str) -> Result<Regex, regex::Error> {
        Ok(Regex {
            pattern: pattern.to_string(),
            compiled: regex::Regex::new(pattern)?,
        })
    }

    /// The compiled expression (anchored, unless built with [`Regex::unanchored`]).
    pub fn compiled(&self) -> &regex::Regex {
        &self.compiled
    }

    /// The pattern as configured (without the anchors added for full matching).
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the whole of `input` matches.
    pub fn is_match(&self, input: &str) -> bool {
        self.compiled.is_match(input)
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Regex) -> bool {
        self.pattern == other.pattern
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Regex({:?})", self.pattern)
    }
}

impl Serialize for Regex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pattern)
    }
}

/// Envoy's `StringMatcher`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatcher {
    /// The input equals `value`.
    Exact {
        /// The value.
        value: String,
        /// Compare ASCII case-insensitively.
        ignore_case: bool,
    },
    /// The input starts with `value` (never empty).
    Prefix {
        /// The value.
        value: String,
        /// Compare ASCII case-insensitively.
        ignore_case: bool,
    },
    /// The input ends with `value` (never empty).
    Suffix {
        /// The value.
        value: String,
        /// Compare ASCII case-insensitively.
        ignore_case: bool,
    },
    /// The input contains `value` (never empty).
    Contains {
        /// The value.
        value: String,
        /// Compare ASCII case-insensitively.
        ignore_case: bool,
    },
    /// The whole input matches the expression.
    Regex(Regex),
}

impl StringMatcher {
    /// An exact, case-sensitive matcher.
    pub fn exact(value: impl Into<String>) -> StringMatcher {
        StringMatcher::Exact {
            value: value.into(),
            ignore_case: false,
        }
    }

    /// Whether `input` matches.
    pub fn matches(&self, input: &str) -> bool {
        match self {
            StringMatcher::Exact { value, ignore_case } => {
                if *ignore_case {
                    input.eq_ignore_ascii_case(value)
                } else {
                    input == value
                }
            }
            StringMatcher::Prefix { value, ignore_case } => {
                input.len() >= value.len()
                    && input.is_char_boundary(value.len())
                    && eq(&input[..value.len()], value, *ignore_case)
            }
            StringMatcher::Suffix { value, ignore_case } => {
                let start = input.len().wrapping_sub(value.len());
                input.len() >= value.len()
                    && input.is_char_boundary(start)
                    && eq(&input[start..], value, *ignore_case)
            }
            StringMatcher::Contains { value, ignore_case } => {
                if *ignore_case {
                    contains_ignore_case(input.as_bytes(), value.as_bytes())
                } else {
                    input.contains(value.as_str())
                }
            }
            StringMatcher::Regex(re) => re.is_match(input),
        }
    }

    /// The literal of an exact, prefix, suffix or contains matcher.
    pub fn literal(&self) -> Option<&str> {
        match self {
            StringMatcher::Exact { value, .. }
            | StringMatcher::Prefix { value, .. }
            | StringMatcher::Suffix { value, .. }
            | StringMatcher::Contains { value, .. } => Some(value),
            StringMatcher::Regex(_) => None,
        }
    }
}

fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Envoy's `route.v3.HeaderMatcher`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderMatcher {
    /// Header name, lowercased (pseudo-headers keep their colon: `:authority`, `:method`,
    /// `:path`, `:scheme`).
    pub name: String,
    /// What the value must be.
    pub rule: HeaderMatch,
    /// Invert the result (a missing header still fails, unless the rule is `present`).
    pub invert: bool,
    /// A missing header is matched as the empty string.
    pub treat_missing_as_empty: bool,
}

/// The value condition of a [`HeaderMatcher`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderMatch {
    /// The header is present (`true`) or absent (`false`).
    Present(bool),
    /// The value matches.
    String(StringMatcher),
    /// The value is an integer in `[start, end)`.
    Range {
        /// Inclusive start.
        start: i64,
        /// Exclusive end.
        end: i64,
    },
}

impl HeaderMatcher {
    /// Whether a header with the given value (`None`: absent; several values are joined with
    /// `,` first, as Envoy does) matches, with Envoy's rules for absent headers and inversion.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = match (value, self.treat_missing_as_empty) {
            (Some(v), _) => v,
            (None, true) => "",
            (None, false) => {
                let present = matches!(self.rule, HeaderMatch::Present(_));
                let wanted = matches!(self.rule, HeaderMatch::Present(p) if p == self.invert);
                return present && wanted;
            }
        };
        let matched = match &self.rule {
            HeaderMatch::Present(p) => *p,
            HeaderMatch::String(m) => m.matches(value),
            HeaderMatch::Range { start, end } => {
                value.parse::<i64>().is_ok_and(|n| n >= *start && n < *end)
            }
        };
        matched != self.invert
    }
}

/// Envoy's `QueryParameterMatcher`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryParameterMatcher {
    /// Parameter name (case-sensitive, as in Envoy).
    pub name: String,
    /// The condition on its (percent-decoded) value; `None` means "present".
    pub value: Option<StringMatcher>,
}

/// A fraction, normalized to parts per million (Envoy's `FractionalPercent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Fraction {
    /// Parts per million, at most 1,000,000.
    pub per_million: u32,
}

impl Fraction {
    /// Always.
    pub const ALL: Fraction = Fraction {
        per_million: 1_000_000,
    };

    /// Whether a uniformly random draw in `[0, 1_000_000)` falls inside the fraction.
    pub fn hit(self, draw: u32) -> bool {
        draw < self.per_million
    }
}

/// Envoy's `MetadataMatcher`: a value in the dynamic metadata of a filter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetadataMatcher {
    /// The filter namespace (`envoy.filters.http.jwt_authn`).
    pub filter: String,
    /// The keys leading to the value.
    pub path: Vec<String>,
    /// What the value must be.
    pub value: ValueMatcher,
    /// Invert the result.
    pub invert: bool,
}

/// Envoy's `ValueMatcher`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueMatcher {
    /// The value is null.
    Null,
    /// The value is a number equal to this.
    DoubleExact(f64),
    /// The value is a number in `[start, end)`.
    DoubleRange {
        /// Inclusive start.
        start: f64,
        /// Exclusive end.
        end: f64,
    },
    /// The value is a string that matches.
    String(StringMatcher),
    /// The value is this boolean.
    Bool(bool),
    /// The value is present (any kind).
    Present(bool),
    /// The value is a list with one element matching.
    ListOneOf(Box<ValueMatcher>),
    /// Any of these matches.
    Or(Vec<ValueMatcher>),
}

impl MetadataMatcher {
    /// The result when the metadata holds no value at the path: Envoy's matchers then see an
    /// unset value, which no value matcher accepts (`present_match: false` included), so the
    /// result is `invert`.
    pub fn matches_absent(&self) -> bool {
        self.invert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rule: HeaderMatch, invert: bool) -> HeaderMatcher {
        HeaderMatcher {
            name: "x".into(),
            rule,
            invert,
            treat_missing_as_empty: false,
        }
    }

    #[test]
    fn string_matchers() {
        let m = |v: &str| StringMatcher::Prefix {
            value: v.into(),
            ignore_case: true,
        };
        assert!(m("ab").matches("ABc"));
        assert!(!m("ab").matches("a"));
        assert!(!m("é").matches("e"));
        let s = StringMatcher::Suffix {
            value: ".com".into(),
            ignore_case: true,
        };
        assert!(s.matches("X.COM"));
        assert!(!s.matches("com"));
        let c = StringMatcher::Contains {
            value: "Mid".into(),
            ignore_case: true,
        };
        assert!(c.matches("amidst"));
        let re = StringMatcher::Regex(Regex::new("a.c").unwrap());
        assert!(re.matches("abc"));
        assert!(!re.matches("xabc"), "full match only");
        assert!(!re.matches("abcd"));
        let alt = StringMatcher::Regex(Regex::new("a|b").unwrap());
        assert!(!alt.matches("ab"), "alternation is anchored as a whole");
    }

    #[test]
    fn header_matcher_envoy_rules() {
        let exact = HeaderMatch::String(StringMatcher::exact("v"));
        assert!(header(exact.clone(), false).matches(Some("v")));
        assert!(!header(exact.clone(), false).matches(None));
        assert!(
            !header(exact.clone(), true).matches(None),
            "inverted, absent: no match"
        );
        assert!(header(exact, true).matches(Some("w")));
        assert!(header(HeaderMatch::Present(true), false).matches(Some("")));
        assert!(!header(HeaderMatch::Present(true), false).matches(None));
        assert!(header(HeaderMatch::Present(false), false).matches(None));
        assert!(header(HeaderMatch::Present(true), true).matches(None));
        let range = header(HeaderMatch::Range { start: 1, end: 10 }, false);
        assert!(range.matches(Some("9")));
        assert!(!range.matches(Some("10")));
        assert!(!range.matches(Some("x")));
        let mut empty = header(HeaderMatch::String(StringMatcher::exact("")), false);
        empty.treat_missing_as_empty = true;
        assert!(empty.matches(None));
    }
}

//! Durations as Istio's YAML writes them: Go's `time.ParseDuration` form (`1h30m`, `100ms`,
//! `2.5s`, `0`), of which protobuf's JSON form (`1.000340012s`) is a subset. Negative values
//! decode (so that validation can say what is wrong with them) and serialize in protobuf's JSON
//! form.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_MILLI: i128 = 1_000_000;
const NANOS_PER_SEC: i128 = 1_000_000_000;
/// Go's `time.Duration` is an int64 of nanoseconds; larger values do not parse.
const MAX_NANOS: i128 = i64::MAX as i128;

/// A signed duration with nanosecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    nanos: i128,
}

/// Why a duration string does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the form `[-+]?(NUMBER UNIT)+`.
    #[error("invalid duration {0:?} (expected a number and a unit, e.g. 1s, 100ms, 1h30m)")]
    Syntax(String),
    /// A unit other than ns, us, µs, ms, s, m, h.
    #[error("unknown unit {unit:?} in duration {value:?} (units: ns, us, ms, s, m, h)")]
    Unit {
        /// The unit.
        unit: String,
        /// The whole value.
        value: String,
    },
    /// More than Go's time.Duration holds (about 292 years).
    #[error("duration {0:?} is out of range")]
    Range(String),
}

impl Duration {
    /// A duration of `nanos` nanoseconds.
    pub fn from_nanos(nanos: i128) -> Duration {
        Duration { nanos }
    }

    /// A duration of `ms` milliseconds.
    pub fn from_millis(ms: i64) -> Duration {
        Duration {
            nanos: i128::from(ms) * NANOS_PER_MILLI,
        }
    }

    /// The signed number of nanoseconds.
    pub fn as_nanos(self) -> i128 {
        self.nanos
    }

    /// The duration, when it is not negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        let nanos = u64::try_from(self.nanos).ok()?;
        Some(std::time::Duration::from_nanos(nanos))
    }

    /// Whether the duration is whole milliseconds.
    pub fn is_whole_millis(self) -> bool {
        self.nanos % NANOS_PER_MILLI == 0
    }

    /// Whether the duration is whole seconds.
    pub fn is_whole_seconds(self) -> bool {
        self.nanos % NANOS_PER_SEC == 0
    }

    /// Parses Go's duration syntax.
    pub fn parse(text: &str) -> Result<Duration, DurationError> {
        let syntax = || DurationError::Syntax(text.to_string());
        let (negative, mut rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if rest == "0" {
            return Ok(Duration::default());
        }
        if rest.is_empty() {
            return Err(syntax());
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (int_part, after) = rest.split_at(int_len);
            let (frac_part, after) = match after.strip_prefix('.') {
                Some(f) => {
                    let n = f.bytes().take_while(u8::is_ascii_digit).count();
                    f.split_at(n)
                }
                None => ("", after),
            };
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(syntax());
            }
            let unit_len = after
                .char_indices()
                .find(|(_, c)| c.is_ascii_digit() || *c == '.')
                .map_or(after.len(), |(i, _)| i);
            let (unit, after) = after.split_at(unit_len);
            let scale: i128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => NANOS_PER_MILLI,
                "s" => NANOS_PER_SEC,
                "m" => 60 * NANOS_PER_SEC,
                "h" => 3_600 * NANOS_PER_SEC,
                "" => return Err(syntax()),
                other => {
                    return Err(DurationError::Unit {
                        unit: other.to_string(),
                        value: text.to_string(),
                    })
                }
            };
            let range = || DurationError::Range(text.to_string());
            let whole: i128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| range())?
            };
            let mut value = whole.checked_mul(scale).ok_or_else(range)?;
            // Fractional digits beyond nanosecond precision are dropped, as Go does.
            let mut unit_frac = scale;
            for digit in frac_part.bytes() {
                unit_frac /= 10;
                if unit_frac == 0 {
                    break;
                }
                value += i128::from(digit - b'0') * unit_frac;
            }
            total = total.checked_add(value).ok_or_else(range)?;
            if total > MAX_NANOS {
                return Err(range());
            }
            rest = after;
        }
        Ok(Duration {
            nanos: if negative { -total } else { total },
        })
    }
}

impl fmt::Display for Duration {
    /// Protobuf's JSON form: seconds with up to nine fractional digits, then `s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let secs = abs / NANOS_PER_SEC as u128;
        let frac = abs % NANOS_PER_SEC as u128;
        if frac == 0 {
            write!(f, "{sign}{secs}s")
        } else {
            let digits = format!("{frac:09}");
            write!(f, "{sign}{secs}.{}s", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as 1s, 100ms or 1h30m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

//! Go's `time.ParseDuration`, which ip-masq-agent's `resyncInterval` goes
//! through (`metav1.Duration`): a possibly signed sequence of decimal
//! numbers, each with an optional fraction and a unit, such as `1m30s`,
//! `-1.5h` or `500ms`.
//!
//! Written by hand because no maintained crate parses exactly Go's grammar
//! (humantime accepts spaces and other units, and rejects fractions like
//! `1.5h`). The aim is Go's result for every input, the odd ones included,
//! since the same ConfigMap is read by upstream: which strings are errors,
//! the nanoseconds of the rest (Go computes a fraction's share in `f64`, so
//! `0.3333333333333333333h` is exactly `20m`, not a nanosecond less), and
//! the error texts. All arithmetic is checked: no input panics or wraps.

use std::{fmt, str::FromStr, time::Duration};

use thiserror::Error;

/// Why a duration string was rejected. The messages are Go's, quoting
/// included, except for [`DurationError::Negative`], which Go never reports.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Not the grammar: empty, no digits before the unit (`s`, `.s`), or a
    /// character that cannot start a number.
    #[error("time: invalid duration {}", GoQuoted(.0))]
    Invalid(String),
    /// A number with no unit after it (`60`).
    #[error("time: missing unit in duration {}", GoQuoted(.0))]
    MissingUnit(String),
    /// A unit other than ns, us, µs, μs, ms, s, m and h.
    #[error("time: unknown unit {} in duration {}", GoQuoted(unit), GoQuoted(text))]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole duration.
        text: String,
    },
    /// Beyond Go's `int64` nanoseconds. Go reports it with the same words
    /// as [`DurationError::Invalid`], so the message is the same.
    #[error("time: invalid duration {}", GoQuoted(.0))]
    Overflow(String),
    /// A valid duration below zero where only a non-negative one can be
    /// used ([`parse_go_duration`]).
    #[error("negative duration {}", GoQuoted(.0))]
    Negative(String),
}

/// Go's `time.Duration`: a signed count of nanoseconds. Go accepts negative
/// durations (`-1s`), so the parser returns them and callers decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(i64);

impl GoDuration {
    /// No time.
    pub const ZERO: Self = Self(0);
    /// The most negative duration Go holds.
    pub const MIN: Self = Self(i64::MIN);
    /// The longest duration Go holds (about 292 years).
    pub const MAX: Self = Self(i64::MAX);

    /// A duration of `nanos` nanoseconds.
    #[must_use]
    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    /// The duration in nanoseconds.
    #[must_use]
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Whether the duration is below zero.
    #[must_use]
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The same length as a [`Duration`], or `None` below zero.
    #[must_use]
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.0).ok().map(Duration::from_nanos)
    }

    /// The same length as a [`Duration`], with negative values as zero.
    #[must_use]
    pub fn to_std_saturating(self) -> Duration {
        self.to_std().unwrap_or(Duration::ZERO)
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_go_duration_signed(text)
    }
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Go's `Duration.String()`: `1h2m3.5s`, `1.5ms`, `-2µs`, `0s`. Parsing the
/// text gives the same value back, for every value from `MIN` to `MAX`.
impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.0.unsigned_abs();
        if magnitude == 0 {
            return f.write_str("0s");
        }
        if self.0 < 0 {
            f.write_str("-")?;
        }
        if magnitude < NANOS_PER_SECOND {
            // Below a second the unit shrinks so that no leading `0.` shows.
            let (unit, per_unit, digits) = match magnitude {
                0..1_000 => ("ns", 1, 0),
                1_000..1_000_000 => ("µs", 1_000, 3),
                _ => ("ms", 1_000_000, 6),
            };
            write!(f, "{}", magnitude / per_unit)?;
            write_fraction(f, magnitude % per_unit, digits)?;
            return f.write_str(unit);
        }
        let seconds = magnitude / NANOS_PER_SECOND;
        let (hours, minutes) = (seconds / 3600, seconds / 60 % 60);
        // Hours are the largest unit, as in Go: days differ in length.
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if seconds >= 60 {
            write!(f, "{minutes}m")?;
        }
        write!(f, "{}", seconds % 60)?;
        write_fraction(f, magnitude % NANOS_PER_SECOND, 9)?;
        f.write_str("s")
    }
}

/// `.` and `value` as `digits` decimals without trailing zeros; nothing for 0.
fn write_fraction(f: &mut fmt::Formatter<'_>, value: u64, digits: usize) -> fmt::Result {
    if value == 0 {
        return Ok(());
    }
    let padded = format!("{value:0digits$}");
    write!(f, ".{}", padded.trim_end_matches('0'))
}

/// Go's `time` package quoting of the input in its errors: double quotes,
/// `\"` and `\\`, and every byte of a control or non-ASCII character as
/// `\xNN` (so `µs` shows as `\xc2\xb5s`).
struct GoQuoted<'a>(&'a str);

impl fmt::Display for GoQuoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c.is_ascii() && c >= ' ' {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            } else {
                for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                    write!(f, "\\x{byte:02x}")?;
                }
            }
        }
        f.write_str("\"")
    }
}

/// The units and their length in nanoseconds; `µ` is U+00B5 (micro sign)
/// and `μ` U+03BC (Greek mu), both accepted as in Go.
const UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SECOND),
    ("m", 60 * NANOS_PER_SECOND),
    ("h", 3600 * NANOS_PER_SECOND),
];

/// The largest magnitude Go's parser carries: that of `i64::MIN`. Every
/// running value is kept at or below it.
const MAGNITUDE_LIMIT: u64 = 1 << 63;

/// The decimal digits at the start of `text`, and their number. The value
/// is `None` once it exceeds [`MAGNITUDE_LIMIT`], which Go rejects.
fn whole_number(text: &[u8]) -> (Option<u64>, usize) {
    let len = digit_count(text);
    let value = text[..len].iter().try_fold(0u64, |value, &digit| {
        append_digit(value, digit).filter(|&v| v <= MAGNITUDE_LIMIT)
    });
    (value, len)
}

/// A fraction as Go reads it: `digits / scale`, where `scale` is 10 to the
/// number of digits taken, computed by repeated `f64` multiplication as Go
/// does (past 308 digits it is infinite, which makes the share zero).
/// Digits stop being taken, for good, at the first one that would push
/// `digits` past [`MAGNITUDE_LIMIT`]: they are below a nanosecond.
struct Fraction {
    digits: u64,
    scale: f64,
}

/// The fraction at the start of `text` (after the `.`), and how many bytes
/// of digits it spans, taken or not.
fn fraction(text: &[u8]) -> (Fraction, usize) {
    let len = digit_count(text);
    let mut fraction = Fraction {
        digits: 0,
        scale: 1.0,
    };
    for &digit in &text[..len] {
        match append_digit(fraction.digits, digit).filter(|&v| v <= MAGNITUDE_LIMIT) {
            Some(digits) => {
                fraction.digits = digits;
                fraction.scale *= 10.0;
            }
            None => break,
        }
    }
    (fraction, len)
}

impl Fraction {
    /// Nanoseconds of this fraction of `unit`. The `f64` steps are Go's,
    /// in Go's order (`digits * (unit / scale)`, truncated), because their
    /// rounding decides the last nanosecond: `0.999…9s` (30 nines) is `1s`,
    /// while the same of `m` is `59.999999999s`.
    fn nanos_of(&self, unit: u64) -> u64 {
        if self.digits == 0 {
            return 0;
        }
        // Non-negative and at most about `unit`: the cast truncates exactly.
        (self.digits as f64 * (unit as f64 / self.scale)) as u64
    }
}

fn digit_count(text: &[u8]) -> usize {
    text.iter().take_while(|b| b.is_ascii_digit()).count()
}

fn append_digit(value: u64, digit: u8) -> Option<u64> {
    value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
}

/// Parses a Go duration string into its signed nanoseconds, exactly as
/// Go's `time.ParseDuration` does.
///
/// # Errors
/// Returns [`DurationError`] for every string Go rejects, with Go's message.
pub fn parse_go_duration_signed(text: &str) -> Result<GoDuration, DurationError> {
    let invalid = || DurationError::Invalid(text.to_owned());
    let overflow = || DurationError::Overflow(text.to_owned());
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    // A lone zero needs no unit; `00` or `0.0` still do.
    if body == "0" {
        return Ok(GoDuration::ZERO);
    }
    if body.is_empty() {
        return Err(invalid());
    }
    let mut magnitude: u64 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        // One `[0-9]*(\.[0-9]*)?unit` term. The checks come in Go's order,
        // which decides the message when a term has more than one fault.
        let bytes = rest.as_bytes();
        if !(bytes[0] == b'.' || bytes[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let (whole, whole_len) = whole_number(bytes);
        let whole = whole.ok_or_else(overflow)?;
        let mut end = whole_len;
        let mut fraction_part = None;
        if bytes.get(end) == Some(&b'.') {
            let (parsed, len) = fraction(&bytes[end + 1..]);
            end += 1 + len;
            fraction_part = (len > 0).then_some(parsed);
        }
        if whole_len == 0 && fraction_part.is_none() {
            return Err(invalid());
        }
        // The unit runs to the next number; `.` and digits are ASCII, so
        // the byte offsets are character boundaries.
        let unit_len = bytes[end..]
            .iter()
            .position(|&b| b == b'.' || b.is_ascii_digit())
            .unwrap_or(bytes.len() - end);
        let unit = &rest[end..end + unit_len];
        rest = &rest[end + unit_len..];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(text.to_owned()));
        }
        let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                unit: unit.to_owned(),
                text: text.to_owned(),
            });
        };
        let mut term = whole
            .checked_mul(unit_nanos)
            .filter(|&n| n <= MAGNITUDE_LIMIT)
            .ok_or_else(overflow)?;
        if let Some(fraction_part) = fraction_part {
            term = term
                .checked_add(fraction_part.nanos_of(unit_nanos))
                .filter(|&n| n <= MAGNITUDE_LIMIT)
                .ok_or_else(overflow)?;
        }
        magnitude = match magnitude.checked_add(term) {
            Some(sum) if sum <= MAGNITUDE_LIMIT => sum,
            Some(_) => return Err(overflow()),
            // Both are exactly 2^63. Go adds them in a uint64, where the
            // sum wraps to 0 and so passes its range check: Go reads
            // `9223372036854775808ns9223372036854775808ns` as 0, and so
            // does this, to agree with upstream on the same file.
            None => 0,
        };
    }
    let nanos = if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    nanos.map(GoDuration).ok_or_else(overflow)
}

/// Parses a Go duration string that must not be negative (`-0s` is zero).
///
/// # Errors
/// Returns [`DurationError`] for anything Go's parser would reject, and
/// [`DurationError::Negative`] for values below zero.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    parse_go_duration_signed(text)?
        .to_std()
        .ok_or_else(|| DurationError::Negative(text.to_owned()))
}

#[cfg(test)]
mod tests;

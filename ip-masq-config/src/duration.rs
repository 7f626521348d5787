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
    UnknownUnit { unit: String, text: String },
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
    pub const ZERO: Self = Self(0);
    pub const MIN: Self = Self(i64::MIN);
    pub const MAX: Self = Self(i64::MAX);

    #[must_use]
    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    #[must_use]
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

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
mod tests {
    use super::*;

    /// What Go's `time.ParseDuration` returns for an input: nanoseconds, or
    /// the full error message.
    #[derive(Clone, Copy)]
    enum Go {
        Nanos(i64),
        Error(&'static str),
    }
    use Go::{Error, Nanos};

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    fn check(cases: &[(&str, Go)]) {
        for &(text, want) in cases {
            let got = parse_go_duration_signed(text)
                .map(GoDuration::as_nanos)
                .map_err(|err| err.to_string());
            let want = match want {
                Nanos(nanos) => Ok(nanos),
                Error(message) => Err(message.to_owned()),
            };
            assert_eq!(got, want, "input {text:?}");
        }
    }

    /// Go's own `parseDurationTests` (src/time/time_test.go), as data.
    #[test]
    fn go_parse_duration_tests() {
        check(&[
            // simple
            ("0", Nanos(0)),
            ("5s", Nanos(5 * S)),
            ("30s", Nanos(30 * S)),
            ("1478s", Nanos(1478 * S)),
            // sign
            ("-5s", Nanos(-5 * S)),
            ("+5s", Nanos(5 * S)),
            ("-0", Nanos(0)),
            ("+0", Nanos(0)),
            // decimal
            ("5.0s", Nanos(5 * S)),
            ("5.6s", Nanos(5 * S + 600 * MS)),
            ("5.s", Nanos(5 * S)),
            (".5s", Nanos(500 * MS)),
            ("1.0s", Nanos(S)),
            ("1.00s", Nanos(S)),
            ("1.004s", Nanos(S + 4 * MS)),
            ("1.0040s", Nanos(S + 4 * MS)),
            ("100.00100s", Nanos(100 * S + MS)),
            // different units
            ("10ns", Nanos(10 * NS)),
            ("11us", Nanos(11 * US)),
            ("12µs", Nanos(12 * US)), // U+00B5
            ("12μs", Nanos(12 * US)), // U+03BC
            ("13ms", Nanos(13 * MS)),
            ("14s", Nanos(14 * S)),
            ("15m", Nanos(15 * M)),
            ("16h", Nanos(16 * H)),
            // composite durations
            ("3h30m", Nanos(3 * H + 30 * M)),
            ("10.5s4m", Nanos(4 * M + 10 * S + 500 * MS)),
            ("-2m3.4s", Nanos(-(2 * M + 3 * S + 400 * MS))),
            (
                "1h2m3s4ms5us6ns",
                Nanos(H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
            ),
            ("39h9m14.425s", Nanos(39 * H + 9 * M + 14 * S + 425 * MS)),
            // large value
            ("52763797000ns", Nanos(52_763_797_000)),
            // more than 9 digits after the decimal point
            ("0.3333333333333333333h", Nanos(20 * M)),
            // 2^53 + 1 cannot be stored exactly in an f64
            ("9007199254740993ns", Nanos((1 << 53) + 1)),
            // the largest and smallest durations
            ("9223372036854775807ns", Nanos(i64::MAX)),
            ("9223372036854775.807us", Nanos(i64::MAX)),
            ("9223372036s854ms775us807ns", Nanos(i64::MAX)),
            ("-9223372036854775808ns", Nanos(i64::MIN)),
            ("-9223372036854775.808us", Nanos(i64::MIN)),
            ("-9223372036s854ms775us808ns", Nanos(i64::MIN)),
            ("-2562047h47m16.854775808s", Nanos(i64::MIN)),
            // a long fraction
            ("0.100000000000000000000h", Nanos(6 * M)),
            // the first overflow check of the fraction's digits
            (
                "0.830103483285477580700h",
                Nanos(49 * M + 48 * S + 372_539_827 * NS),
            ),
        ]);
    }

    /// Go's own `parseDurationErrorTests`, with the full messages Go gives.
    /// Its inputs with invalid UTF-8 (`"\x85\x85"`) cannot reach this
    /// parser, which takes `&str` (the config decoder yields strings).
    #[test]
    fn go_parse_duration_error_tests() {
        check(&[
            ("", Error(r#"time: invalid duration """#)),
            ("3", Error(r#"time: missing unit in duration "3""#)),
            ("-", Error(r#"time: invalid duration "-""#)),
            ("s", Error(r#"time: invalid duration "s""#)),
            (".", Error(r#"time: invalid duration ".""#)),
            ("-.", Error(r#"time: invalid duration "-.""#)),
            (".s", Error(r#"time: invalid duration ".s""#)),
            ("+.s", Error(r#"time: invalid duration "+.s""#)),
            ("1d", Error(r#"time: unknown unit "d" in duration "1d""#)),
            (
                "\u{FFFD}",
                Error(r#"time: invalid duration "\xef\xbf\xbd""#),
            ),
            (
                "\u{FFFD} hello \u{FFFD} world",
                Error(r#"time: invalid duration "\xef\xbf\xbd hello \xef\xbf\xbd world""#),
            ),
            // overflow
            (
                "9223372036854775810ns",
                Error(r#"time: invalid duration "9223372036854775810ns""#),
            ),
            (
                "9223372036854775808ns",
                Error(r#"time: invalid duration "9223372036854775808ns""#),
            ),
            (
                "-9223372036854775809ns",
                Error(r#"time: invalid duration "-9223372036854775809ns""#),
            ),
            (
                "9223372036854776us",
                Error(r#"time: invalid duration "9223372036854776us""#),
            ),
            ("3000000h", Error(r#"time: invalid duration "3000000h""#)),
            (
                "9223372036854775.808us",
                Error(r#"time: invalid duration "9223372036854775.808us""#),
            ),
            (
                "9223372036854ms775us808ns",
                Error(r#"time: invalid duration "9223372036854ms775us808ns""#),
            ),
        ]);
    }

    /// Inputs beyond Go's tables, with what Go 1.19's `time.ParseDuration`
    /// returned for each (its algorithm is unchanged in later releases).
    #[test]
    fn matches_go_on_edge_cases() {
        check(&[
            // Fractions longer than 19 digits: the digits past what fits
            // are dropped, and the f64 steps round the rest. These
            // overflowed (a panic in debug builds) before.
            ("0.999999999999999999999999999999s", Nanos(S)),
            ("0.999999999999999999999999999999m", Nanos(M - 1)),
            ("0.999999999999999999999999999999h", Nanos(H)),
            ("0.999999999999999999999999999999ms", Nanos(MS)),
            ("0.999999999999999999999999999999us", Nanos(US)),
            ("0.999999999999999999999999999999ns", Nanos(1)),
            ("-0.999999999999999999999999999999m", Nanos(-(M - 1))),
            ("0.9223372036854775808h", Nanos(3_320_413_933_267)),
            ("0.9223372036854775809h", Nanos(3_320_413_933_267)),
            ("0.92233720368547758079h", Nanos(3_320_413_933_267)),
            ("0.000000000001234567890123456789h", Nanos(4)),
            ("0.0000000000001234567890123456789h", Nanos(0)),
            ("0.3333333333333333333m", Nanos(20 * S)),
            ("0.7h", Nanos(42 * M)),
            ("2.3h", Nanos(2 * H + 18 * M)),
            // below a nanosecond, truncated
            (".0000000001s", Nanos(0)),
            ("1.0000000009s", Nanos(S)),
            ("0.000000001s", Nanos(1)),
            ("0.0000000015s", Nanos(1)),
            // the range
            ("2562047h", Nanos(2_562_047 * H)),
            ("2562048h", Error(r#"time: invalid duration "2562048h""#)),
            ("-2562048h", Error(r#"time: invalid duration "-2562048h""#)),
            ("153722867m", Nanos(153_722_867 * M)),
            (
                "153722868m",
                Error(r#"time: invalid duration "153722868m""#),
            ),
            (
                "2562047.8h",
                Error(r#"time: invalid duration "2562047.8h""#),
            ),
            (
                "18446744073709551616ns",
                Error(r#"time: invalid duration "18446744073709551616ns""#),
            ),
            (
                "9223372036854775808.5ns",
                Error(r#"time: invalid duration "9223372036854775808.5ns""#),
            ),
            ("-9223372036854775808.9ns", Nanos(i64::MIN)),
            ("-9223372036854775807.99999999999ns", Nanos(-i64::MAX)),
            (
                "4611686018427387904ns4611686018427387904ns",
                Error(r#"time: invalid duration "4611686018427387904ns4611686018427387904ns""#),
            ),
            (
                "-4611686018427387904ns4611686018427387904ns",
                Nanos(i64::MIN),
            ),
            // Go's uint64 sum wraps here, and Go returns 0 without error.
            ("9223372036854775808ns9223372036854775808ns", Nanos(0)),
            ("-9223372036854775808ns9223372036854775808ns1ns", Nanos(-1)),
            // signs, zero and the grammar
            ("1.5h", Nanos(H + 30 * M)),
            ("-1s", Nanos(-S)),
            ("-0s", Nanos(0)),
            ("0s", Nanos(0)),
            ("0ns", Nanos(0)),
            ("1h1h1h", Nanos(3 * H)),
            ("1s.5ms", Nanos(S + 500 * US)),
            ("1µs", Nanos(US)),
            ("+", Error(r#"time: invalid duration "+""#)),
            ("+-1s", Error(r#"time: invalid duration "+-1s""#)),
            ("-+1s", Error(r#"time: invalid duration "-+1s""#)),
            ("--1s", Error(r#"time: invalid duration "--1s""#)),
            (" 1s", Error(r#"time: invalid duration " 1s""#)),
            ("..5s", Error(r#"time: invalid duration "..5s""#)),
            ("1.s.s", Error(r#"time: invalid duration "1.s.s""#)),
            ("1s.", Error(r#"time: invalid duration "1s.""#)),
            ("1ns.", Error(r#"time: invalid duration "1ns.""#)),
            (
                "99999999999999999999x",
                Error(r#"time: invalid duration "99999999999999999999x""#),
            ),
            ("1", Error(r#"time: missing unit in duration "1""#)),
            ("00", Error(r#"time: missing unit in duration "00""#)),
            ("0.0", Error(r#"time: missing unit in duration "0.0""#)),
            (
                "1.2.3s",
                Error(r#"time: missing unit in duration "1.2.3s""#),
            ),
            ("5..s", Error(r#"time: missing unit in duration "5..s""#)),
            ("1s.5", Error(r#"time: missing unit in duration "1s.5""#)),
            ("1x", Error(r#"time: unknown unit "x" in duration "1x""#)),
            ("1S", Error(r#"time: unknown unit "S" in duration "1S""#)),
            ("1H", Error(r#"time: unknown unit "H" in duration "1H""#)),
            (
                "1e9ns",
                Error(r#"time: unknown unit "e" in duration "1e9ns""#),
            ),
            ("1s ", Error(r#"time: unknown unit "s " in duration "1s ""#)),
            // Go's quoting of the input in messages
            ("\"1s\"", Error(r#"time: invalid duration "\"1s\"""#)),
            (
                "1\\s",
                Error(r#"time: unknown unit "\\s" in duration "1\\s""#),
            ),
            (
                "1\ts",
                Error(r#"time: unknown unit "\x09s" in duration "1\x09s""#),
            ),
            (
                "1µ",
                Error(r#"time: unknown unit "\xc2\xb5" in duration "1\xc2\xb5""#),
            ),
            (
                "1é",
                Error(r#"time: unknown unit "\xc3\xa9" in duration "1\xc3\xa9""#),
            ),
            (
                "1😀",
                Error(r#"time: unknown unit "\xf0\x9f\x98\x80" in duration "1\xf0\x9f\x98\x80""#),
            ),
        ]);
    }

    /// Long runs of digits, also from Go 1.19.
    #[test]
    fn long_digit_runs_match_go() {
        let nines = "9".repeat(100);
        let cases = [
            (format!("0.{nines}s"), S),
            (format!("0.{nines}h"), H),
            (format!("0.{}h", "1".repeat(100)), 6 * M + 40 * S),
            (format!("1.{}1s", "0".repeat(100)), S),
            // past 308 zeros the scale is infinite and the share zero
            (format!("0.{}1h", "0".repeat(330)), 0),
            (format!("{}1s", "0".repeat(1000)), S),
            (format!("-{}s", "0".repeat(500)), 0),
        ];
        for (text, nanos) in cases {
            assert_eq!(
                parse_go_duration_signed(&text),
                Ok(GoDuration::from_nanos(nanos)),
                "input {text:?}"
            );
        }
    }

    #[test]
    fn overflow_and_syntax_errors_are_told_apart() {
        for text in [
            "9223372036854775808ns",
            "99999999999999999999x",
            "2562048h",
            "2562047.8h",
            "4611686018427387904ns4611686018427387904ns",
        ] {
            assert_eq!(
                parse_go_duration_signed(text),
                Err(DurationError::Overflow(text.into()))
            );
        }
        for text in ["", "+", "s", ".s", "1s."] {
            assert_eq!(
                parse_go_duration_signed(text),
                Err(DurationError::Invalid(text.into()))
            );
        }
        assert_eq!(
            parse_go_duration_signed("1µ"),
            Err(DurationError::UnknownUnit {
                unit: "µ".into(),
                text: "1µ".into()
            })
        );
    }

    #[test]
    fn unsigned_parse_refuses_negative_values() {
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("-0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_go_duration("-1ns"),
            Err(DurationError::Negative("-1ns".into()))
        );
        assert_eq!(
            parse_go_duration("-1ns").unwrap_err().to_string(),
            r#"negative duration "-1ns""#
        );
        assert_eq!(
            parse_go_duration("0.999999999999999999999999999999m"),
            Ok(Duration::from_nanos(59_999_999_999))
        );
        assert_eq!(
            parse_go_duration("5d"),
            Err(DurationError::UnknownUnit {
                unit: "d".into(),
                text: "5d".into()
            })
        );
        assert_eq!(GoDuration::from_nanos(-5).to_std(), None);
        assert_eq!(GoDuration::MIN.to_std_saturating(), Duration::ZERO);
        assert_eq!(
            GoDuration::MAX.to_std_saturating(),
            Duration::from_nanos(i64::MAX as u64)
        );
        assert_eq!("1.5s".parse(), Ok(GoDuration::from_nanos(S + 500 * MS)));
    }

    /// Go's `durationTests` for `Duration.String()`, and their negations.
    #[test]
    fn formats_as_go_string() {
        let cases = [
            ("0s", 0),
            ("1ns", NS),
            ("1.1µs", 1100 * NS),
            ("2.2ms", 2200 * US),
            ("3.3s", 3300 * MS),
            ("4m5s", 4 * M + 5 * S),
            ("4m5.001s", 4 * M + 5001 * MS),
            ("5h6m7.001s", 5 * H + 6 * M + 7001 * MS),
            ("8m0.000000001s", 8 * M + 1),
            ("2562047h47m16.854775807s", i64::MAX),
            ("-2562047h47m16.854775808s", i64::MIN),
        ];
        for (text, nanos) in cases {
            assert_eq!(GoDuration::from_nanos(nanos).to_string(), text);
            if nanos > 0 {
                assert_eq!(
                    GoDuration::from_nanos(-nanos).to_string(),
                    format!("-{text}")
                );
            }
        }
        assert_eq!(GoDuration::from_nanos(H).to_string(), "1h0m0s");
        assert_eq!(
            GoDuration::from_nanos(59_999_999_999).to_string(),
            "59.999999999s"
        );
    }

    /// SplitMix64: a fixed sequence, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Go's `TestParseDurationRoundTrip`, over every resolution rather than
    /// milliseconds only: `String()` always parses back to the same value.
    #[test]
    fn formatted_durations_parse_back() {
        let mut rng = Rng(1);
        let extremes = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        let random = (0..20_000).map(|i| {
            let bits = rng.next();
            // Small values too, where the units below a second show.
            (if i % 2 == 0 {
                bits
            } else {
                bits >> (bits % 64)
            }) as i64
        });
        for nanos in extremes.into_iter().chain(random) {
            let duration = GoDuration::from_nanos(nanos);
            let text = duration.to_string();
            assert_eq!(parse_go_duration_signed(&text), Ok(duration), "{text}");
        }
    }

    /// Strings of duration-like pieces and long digit runs never panic
    /// (debug builds check every overflow), and whatever parses formats to
    /// a string that parses back to it.
    #[test]
    fn arbitrary_strings_never_panic() {
        const PIECES: [&str; 24] = [
            "0",
            "1",
            "5",
            "9",
            ".",
            "-",
            "+",
            "ns",
            "us",
            "µs",
            "μs",
            "ms",
            "s",
            "m",
            "h",
            "µ",
            "x",
            " ",
            "é",
            "\u{FFFD}",
            "9223372036854775808",
            "2562047",
            "922337203685477580",
            "18446744073709551616",
        ];
        let mut rng = Rng(2);
        for _ in 0..50_000 {
            let mut text = String::new();
            for _ in 0..rng.below(12) {
                match rng.below(8) {
                    0 => {
                        let digit = char::from(b'0' + rng.below(10) as u8);
                        let run = rng.below(400);
                        text.extend(std::iter::repeat_n(digit, run));
                    }
                    1 => text
                        .extend((0..rng.below(60)).map(|_| char::from(b'0' + rng.below(10) as u8))),
                    _ => text.push_str(PIECES[rng.below(PIECES.len())]),
                }
            }
            let Ok(duration) = parse_go_duration_signed(&text) else {
                continue;
            };
            let formatted = duration.to_string();
            assert_eq!(
                parse_go_duration_signed(&formatted),
                Ok(duration),
                "{text:?} gave {formatted}"
            );
            assert_eq!(parse_go_duration(&text).ok(), duration.to_std(), "{text:?}");
        }
    }
}

//! Fuzzes the Go duration parser behind `resyncInterval` on its own, where
//! libFuzzer reaches its corners (digit runs, units, signs, the range
//! limits) far faster than through whole config files.
//!
//! For every input the parser must return rather than panic (the target is
//! built with overflow checks), and:
//! - whatever it accepts formats (Go's `Duration.String()`) to a string
//!   that parses back to the same value, and the unsigned wrapper agrees;
//! - its answer agrees with `reference` below, a second reading of Go's
//!   grammar written without the parser's code: exact integer arithmetic on
//!   the digit strings where the parser replays Go's `f64` steps. Those
//!   steps can move a fraction's share by a nanosecond either way, so a
//!   value may differ by one nanosecond per fractional term, and a range
//!   check that falls within that margin is not judged;
//! - the first eight bytes, as a signed count of nanoseconds, format to a
//!   string that parses back to it.
//!
//! The parser is the agent's own, from the `ip-masq-config` crate.

#![no_main]

use ip_masq_config::duration::{DurationError, GoDuration, parse_go_duration, parse_go_duration_signed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = data.first_chunk::<8>() {
        let duration = GoDuration::from_nanos(i64::from_le_bytes(*bytes));
        let text = duration.to_string();
        assert_eq!(parse_go_duration_signed(&text), Ok(duration), "{text}");
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_go_duration_signed(text);
    if let Ok(duration) = parsed {
        let formatted = duration.to_string();
        assert_eq!(
            parse_go_duration_signed(&formatted),
            Ok(duration),
            "{text:?} formatted as {formatted:?}"
        );
        assert_eq!(parse_go_duration(text).ok(), duration.to_std());
    } else {
        assert_eq!(parse_go_duration(text).err(), parsed.clone().err());
    }
    match reference(text) {
        Outcome::Value { nanos, slack } => {
            let got = match &parsed {
                Ok(duration) => i128::from(duration.as_nanos()),
                Err(err) => panic!("{text:?}: rejected ({err}), the reference reads {nanos}ns"),
            };
            assert!(
                (got - nanos).abs() <= slack,
                "{text:?}: {got}ns, the reference reads {nanos}ns ± {slack}"
            );
        }
        Outcome::Error(expected) => assert_eq!(parsed, Err(expected), "{text:?}"),
        Outcome::Uncertain => {}
    }
});

/// What Go's `time.ParseDuration` gives for a string, as far as exact
/// arithmetic can tell.
enum Outcome {
    /// Accepted, with a value within `slack` nanoseconds of `nanos`.
    Value {
        nanos: i128,
        slack: i128,
    },
    Error(DurationError),
    /// A range check fell within the slack of the float steps.
    Uncertain,
}

/// Go's magnitude limit, 2^63 (that of `i64::MIN`).
const LIMIT: i128 = 1 << 63;
/// Fraction digits read; the rest are worth under 1e-11 ns.
const FRACTION_DIGITS: usize = 24;

fn reference(text: &str) -> Outcome {
    let err = |make: fn(String) -> DurationError| Outcome::Error(make(text.to_owned()));
    let (negative, body) = if let Some(body) = text.strip_prefix('-') {
        (true, body)
    } else {
        (false, text.strip_prefix('+').unwrap_or(text))
    };
    if body == "0" {
        return Outcome::Value { nanos: 0, slack: 0 };
    }
    if body.is_empty() {
        return err(DurationError::Invalid);
    }
    let (mut total, mut slack) = (0i128, 0i128);
    let mut rest = body;
    while !rest.is_empty() {
        if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return err(DurationError::Invalid);
        }
        let (whole_digits, after) = split_digits(rest);
        let significant = whole_digits.trim_start_matches('0');
        // 2^63 has 19 digits; equal lengths compare as strings do.
        if significant.len() > 19
            || (significant.len() == 19 && significant > "9223372036854775808")
        {
            return err(DurationError::Overflow);
        }
        let whole: i128 = significant.parse().unwrap_or(0);
        let (fraction_digits, after) = match after.strip_prefix('.') {
            Some(after_point) => split_digits(after_point),
            None => ("", after),
        };
        if whole_digits.is_empty() && fraction_digits.is_empty() {
            return err(DurationError::Invalid);
        }
        let unit_end = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        rest = after;
        let unit_nanos: i128 = match unit {
            "" => return err(DurationError::MissingUnit),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Outcome::Error(DurationError::UnknownUnit {
                    unit: unit.to_owned(),
                    text: text.to_owned(),
                });
            }
        };
        let mut term = whole * unit_nanos;
        if term > LIMIT {
            return err(DurationError::Overflow);
        }
        if fraction_digits.bytes().any(|b| b != b'0') {
            let mut digits: String = fraction_digits.chars().take(FRACTION_DIGITS).collect();
            while digits.len() < FRACTION_DIGITS {
                digits.push('0');
            }
            let numerator: i128 = digits.parse().expect("24 digits");
            term += numerator * unit_nanos / 10i128.pow(FRACTION_DIGITS as u32);
            // The term's own range check sees this term's margin only.
            match judge(term, 1, LIMIT) {
                Some(true) => {}
                Some(false) => return err(DurationError::Overflow),
                None => return Outcome::Uncertain,
            }
            slack += 1;
        }
        total += term;
        if slack == 0 && total == 2 * LIMIT {
            // Go's uint64 sum of 2^63 and 2^63 wraps to 0 and passes.
            total = 0;
            continue;
        }
        if total + slack >= 2 * LIMIT {
            return Outcome::Uncertain;
        }
        match judge(total, slack, LIMIT) {
            Some(true) => {}
            Some(false) => return err(DurationError::Overflow),
            None => return Outcome::Uncertain,
        }
    }
    if negative {
        return Outcome::Value {
            nanos: -total,
            slack,
        };
    }
    match judge(total, slack, LIMIT - 1) {
        Some(true) => Outcome::Value {
            nanos: total,
            slack,
        },
        Some(false) => err(DurationError::Overflow),
        None => Outcome::Uncertain,
    }
}

/// Whether a value known to within `slack` is at most `limit`: `None` when
/// the margin straddles it.
fn judge(value: i128, slack: i128, limit: i128) -> Option<bool> {
    if value + slack <= limit {
        Some(true)
    } else if value - slack > limit {
        Some(false)
    } else {
        None
    }
}

fn split_digits(text: &str) -> (&str, &str) {
    text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    )
}

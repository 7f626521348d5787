//! Go's `time.ParseDuration` syntax, which ip-masq-agent's `resyncInterval`
//! uses: a sequence of decimal numbers with units, such as `1m30s` or `500ms`.
//!
//! Written by hand because no maintained crate parses exactly Go's grammar
//! (humantime accepts spaces and other units, and rejects fractions like `1.5h`).

use std::time::Duration;

use thiserror::Error;

/// Why a duration string was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("negative duration {0:?}")]
    Negative(String),
    #[error("invalid duration {0:?}: expected a number followed by a unit (ns, us, ms, s, m, h)")]
    Invalid(String),
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {text:?}")]
    UnknownUnit { unit: String, text: String },
    #[error("duration {0:?} overflows")]
    Overflow(String),
}

/// Parses a Go duration string. Negative durations are rejected because no
/// caller here can use one.
///
/// # Errors
/// Returns [`DurationError`] for anything Go's parser would reject, and for
/// negative values.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let mut rest = text;
    if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    } else if let Some(stripped) = rest.strip_prefix('-') {
        if stripped != "0" {
            return Err(DurationError::Negative(text.to_owned()));
        }
        rest = stripped;
    }
    if rest.is_empty() {
        return Err(if text.is_empty() {
            DurationError::Empty
        } else {
            DurationError::Invalid(text.to_owned())
        });
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(DurationError::Invalid(text.to_owned()));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(text.to_owned()));
        }
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_owned(),
                    text: text.to_owned(),
                });
            }
        };
        let overflow = || DurationError::Overflow(text.to_owned());
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| overflow())?
        };
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
        if !fraction.is_empty() {
            // Go truncates the fractional part to the unit's resolution.
            let digits = fraction.len().min(30) as u32;
            let fraction_value: u128 = fraction[..digits as usize]
                .parse()
                .map_err(|_| overflow())?;
            nanos += fraction_value * unit_nanos / 10u128.pow(digits);
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(overflow)?;
        rest = next;
    }
    // Go's Duration is an int64 of nanoseconds.
    if total_nanos > i64::MAX as u128 {
        return Err(DurationError::Overflow(text.to_owned()));
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_go_examples() {
        let cases = [
            ("0", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("2µs", Duration::from_micros(2)),
            (".5s", Duration::from_millis(500)),
            ("+10s", Duration::from_secs(10)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert_eq!(parse_go_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_go_duration("60"),
            Err(DurationError::MissingUnit("60".into()))
        );
        assert!(matches!(
            parse_go_duration("10 s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_go_duration("5d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert_eq!(
            parse_go_duration("s"),
            Err(DurationError::Invalid("s".into()))
        );
        assert_eq!(
            parse_go_duration("1..5s"),
            Err(DurationError::Invalid("1..5s".into()))
        );
        assert_eq!(
            parse_go_duration("-1s"),
            Err(DurationError::Negative("-1s".into()))
        );
        assert!(matches!(
            parse_go_duration("9999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }
}

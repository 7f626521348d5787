//! `--to-ports`: source-port ranges for MASQUERADE, and how new connections
//! are spread over them. Pure.
//!
//! The flag reads as upstream's (`pkg/interval`): comma-separated `N` or
//! `FIRST-LAST` with Go's `strconv.Atoi` (a sign is allowed, spaces are
//! not), ranges kept in the order given, overlaps and port 0 allowed, and an
//! empty value meaning no ranges. The one refusal upstream does not make is
//! a port above 65535: upstream takes it and then every iptables-restore
//! of its chain fails, so the agent would run without rules.

use std::{fmt, str::FromStr};

use thiserror::Error;

/// An inclusive source-port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Number of ports in the range (never zero).
    pub fn port_count(self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Why a `--to-ports` value was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PortRangeError {
    #[error("{0:?} is not a port or a FIRST-LAST range")]
    Syntax(String),
    #[error("first is greater than last in {0:?}")]
    Reversed(String),
    #[error(
        "port {0} in {1:?} is above 65535 (ip-masq-agent takes it, and then iptables refuses every rule of its chain)"
    )]
    TooLarge(u64, String),
}

/// A `--to-ports` list, in the order given (empty: no per-port rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortRanges(Vec<PortRange>);

impl PortRanges {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = PortRange> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|range| range.contains(port))
    }

    /// Each range with the probability that a rule matching "this range or a
    /// later one" picks it: evaluated top to bottom, the rules then spread
    /// new connections over the ranges in proportion to their sizes. The
    /// last range always gets `None` (it takes whatever is left).
    pub fn spread(&self) -> Vec<(PortRange, Option<f64>)> {
        let mut remaining: u32 = self.0.iter().map(|r| r.port_count()).sum();
        let mut rules = Vec::with_capacity(self.0.len());
        for (index, range) in self.0.iter().enumerate() {
            if index + 1 == self.0.len() {
                rules.push((*range, None));
            } else {
                rules.push((
                    *range,
                    Some(f64::from(range.port_count()) / f64::from(remaining)),
                ));
                remaining -= range.port_count();
            }
        }
        rules
    }
}

impl FromStr for PortRanges {
    type Err = PortRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Upstream parses the flag only when it is not empty.
        if text.is_empty() {
            return Ok(Self::default());
        }
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let mut bounds = part.split('-');
            let (first, last) = match (bounds.next(), bounds.next(), bounds.next()) {
                (Some(port), None, _) => (port, port),
                (Some(first), Some(last), None) => (first, last),
                _ => return Err(PortRangeError::Syntax(part.to_owned())),
            };
            let (first, last) = (go_atoi(first, part)?, go_atoi(last, part)?);
            if first > last {
                return Err(PortRangeError::Reversed(part.to_owned()));
            }
            let port = |value: i64| {
                u16::try_from(value)
                    .map_err(|_| PortRangeError::TooLarge(value as u64, part.to_owned()))
            };
            ranges.push(PortRange {
                first: port(first)?,
                last: port(last)?,
            });
        }
        Ok(Self(ranges))
    }
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits, nothing else.
/// A negative value can only be a range's last port (`5--1` splits into
/// three parts), which then fails as reversed.
fn go_atoi(text: &str, part: &str) -> Result<i64, PortRangeError> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortRangeError::Syntax(part.to_owned()));
    }
    text.parse::<i64>()
        .map_err(|_| PortRangeError::TooLarge(u64::MAX, part.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_single_ports_in_the_order_given() {
        let ranges: PortRanges = "32768-65535,1024-29999,30080".parse().unwrap();
        let listed: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
        assert_eq!(listed, ["32768-65535", "1024-29999", "30080"]);
        assert!(ranges.contains(1024) && ranges.contains(65535) && ranges.contains(30080));
        assert!(!ranges.contains(30000) && !ranges.contains(1023));
    }

    #[test]
    fn takes_what_upstream_takes() {
        assert!("".parse::<PortRanges>().unwrap().is_empty());
        for text in ["0", "0-65535", "1000-2000,1500-2500", "+80", "0080"] {
            assert!(text.parse::<PortRanges>().is_ok(), "{text}");
        }
        let overlapping: PortRanges = "1000-2000,1500-2500".parse().unwrap();
        assert_eq!(overlapping.iter().count(), 2);
    }

    #[test]
    fn refuses_what_upstream_refuses_and_ports_iptables_refuses() {
        for text in ["a-b", " 80", "80 ", "1-2-3", "5-", ",", "1024,", "-5"] {
            assert!(
                matches!(text.parse::<PortRanges>(), Err(PortRangeError::Syntax(_))),
                "{text}"
            );
        }
        assert_eq!(
            "10-5".parse::<PortRanges>(),
            Err(PortRangeError::Reversed("10-5".into()))
        );
        assert!(matches!(
            "1-65536".parse::<PortRanges>(),
            Err(PortRangeError::TooLarge(65536, _))
        ));
    }

    #[test]
    fn spread_is_proportional_to_range_size() {
        let ranges: PortRanges = "1024-29999,32768-65535".parse().unwrap();
        let spread = ranges.spread();
        let first = spread[0].1.unwrap();
        // 28976 of 61744 ports are in the first range.
        assert!((first - 28976.0 / 61744.0).abs() < 1e-12);
        assert_eq!(spread[1].1, None);
        // Three equal ranges: 1/3, then 1/2 of the rest, then the rest.
        let equal: PortRanges = "1-10,11-20,21-30".parse().unwrap();
        let probabilities: Vec<_> = equal.spread().iter().map(|(_, p)| *p).collect();
        assert!((probabilities[0].unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((probabilities[1].unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(probabilities[2], None);
    }
}

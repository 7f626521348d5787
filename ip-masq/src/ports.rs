//! `--to-ports`: source-port ranges for MASQUERADE, and how new connections
//! are spread over them. Pure.

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
    #[error("port range {0:?} must lie within 1-65535 with FIRST <= LAST")]
    Bounds(String),
    #[error("port ranges {0} and {1} overlap")]
    Overlap(PortRange, PortRange),
}

/// A validated `--to-ports` list: non-empty, sorted, without overlaps.
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
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            let parse = |value: &str| {
                value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| PortRangeError::Syntax(part.to_owned()))
            };
            let (first, last) = (parse(first)?, parse(last)?);
            if first == 0 || last > 65_535 || first > last {
                return Err(PortRangeError::Bounds(part.to_owned()));
            }
            ranges.push(PortRange {
                first: first as u16,
                last: last as u16,
            });
        }
        ranges.sort();
        for pair in ranges.windows(2) {
            if pair[1].first <= pair[0].last {
                return Err(PortRangeError::Overlap(pair[0], pair[1]));
            }
        }
        Ok(Self(ranges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_single_ports() {
        let ranges: PortRanges = "32768-65535, 1024-29999,30080".parse().unwrap();
        let listed: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
        assert_eq!(listed, ["1024-29999", "30080", "32768-65535"]);
        assert!(ranges.contains(1024) && ranges.contains(65535) && ranges.contains(30080));
        assert!(!ranges.contains(30000) && !ranges.contains(1023));
    }

    #[test]
    fn refuses_bad_ranges() {
        assert!(matches!(
            "".parse::<PortRanges>(),
            Err(PortRangeError::Syntax(_))
        ));
        assert!(matches!(
            "a-b".parse::<PortRanges>(),
            Err(PortRangeError::Syntax(_))
        ));
        assert!(matches!(
            "0-10".parse::<PortRanges>(),
            Err(PortRangeError::Bounds(_))
        ));
        assert!(matches!(
            "10-5".parse::<PortRanges>(),
            Err(PortRangeError::Bounds(_))
        ));
        assert!(matches!(
            "1-65536".parse::<PortRanges>(),
            Err(PortRangeError::Bounds(_))
        ));
        assert!(matches!(
            "1000-2000,1500-2500".parse::<PortRanges>(),
            Err(PortRangeError::Overlap(_, _))
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

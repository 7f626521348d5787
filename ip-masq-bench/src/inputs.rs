//! The benchmark's inputs: the CIDR list file, the sizes to measure, and
//! destinations that hit or miss the table.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ip_masq_common::DEFAULT_MAP_CAPACITY;
use ipnet::IpNet;

use super::BenchError;

/// Splits a CIDR list by family, keeping its order and dropping repeats,
/// so that N lines are N map entries. On a bad line returns its 1-based
/// number and text. Blank lines and `#` comments are skipped.
pub(super) fn parse_cidr_lines(text: &str) -> Result<(Vec<IpNet>, Vec<IpNet>), (usize, String)> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut seen = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let prefix: IpNet = line.parse().map_err(|_| (index + 1, line.to_owned()))?;
        if !seen.insert(prefix.trunc()) {
            continue;
        }
        match prefix {
            IpNet::V4(_) => v4.push(prefix.trunc()),
            IpNet::V6(_) => v6.push(prefix.trunc()),
        }
    }
    Ok((v4, v6))
}

pub(super) fn check_sizes(sizes: &[usize], v4: usize, v6: usize) -> Result<(), BenchError> {
    for pair in sizes.windows(2) {
        if pair[1] < pair[0] {
            return Err(BenchError::SizesNotAscending {
                previous: pair[0],
                next: pair[1],
            });
        }
    }
    let largest = sizes.last().copied().unwrap_or(0);
    for (family, available) in [("IPv4", v4), ("IPv6", v6)] {
        if largest > available {
            return Err(BenchError::TooFewCidrs {
                family,
                wanted: largest,
                available,
            });
        }
    }
    Ok(())
}

/// Map capacity for `largest` entries and the one-entry changes on top:
/// the agent's default unless more is needed, as `--max-cidrs` would be
/// raised (with the same headroom as the flow benchmark's agent).
pub(super) fn map_capacity(largest: usize) -> u32 {
    u32::try_from(largest)
        .unwrap_or(u32::MAX)
        .saturating_add(1024)
        .max(DEFAULT_MAP_CAPACITY)
}

/// A destination inside the middle prefix of `prefixes`: the trie holds
/// entries on both sides of it. `None` for an empty list.
pub(super) fn hit_destination(prefixes: &[IpNet]) -> Option<IpAddr> {
    let prefix = prefixes.get(prefixes.len().checked_sub(1)? / 2)?;
    Some(match prefix {
        IpNet::V4(net) => {
            let base = u32::from(net.network());
            IpAddr::V4(Ipv4Addr::from(if net.prefix_len() < 32 {
                base + 1
            } else {
                base
            }))
        }
        IpNet::V6(net) => {
            let base = u128::from(net.network());
            IpAddr::V6(Ipv6Addr::from(if net.prefix_len() < 128 {
                base + 1
            } else {
                base
            }))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_lines_split_by_family_in_order() {
        let (v4, v6) = parse_cidr_lines(
            "10.0.0.1/8\n\n# comment\n2001:db8::/32\n192.168.1.0/24\n10.0.0.0/8\n",
        )
        .unwrap();
        assert_eq!(
            v4,
            [
                "10.0.0.0/8".parse().unwrap(),
                "192.168.1.0/24".parse().unwrap()
            ],
            "host bits cleared, order kept, repeats dropped"
        );
        assert_eq!(v6, ["2001:db8::/32".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn a_bad_line_is_named() {
        assert_eq!(
            parse_cidr_lines("10.0.0.0/8\nnot-a-cidr\n"),
            Err((2, "not-a-cidr".to_owned()))
        );
    }

    #[test]
    fn hit_is_inside_the_middle_prefix() {
        let prefixes: Vec<IpNet> = ["1.0.0.0/8", "2.2.0.0/16", "3.3.3.3/32"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(hit_destination(&prefixes), Some("2.2.0.1".parse().unwrap()));
        assert_eq!(
            hit_destination(&prefixes[2..]),
            Some("3.3.3.3".parse().unwrap()),
            "a host route is hit on itself"
        );
        assert_eq!(
            hit_destination(&["2001:db8::/32".parse().unwrap()]),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(hit_destination(&[]), None);
    }

    #[test]
    fn sizes_must_ascend_and_fit_the_file() {
        assert!(check_sizes(&[0, 64, 1000], 1000, 1000).is_ok());
        assert!(matches!(
            check_sizes(&[64, 0], 100, 100),
            Err(BenchError::SizesNotAscending {
                previous: 64,
                next: 0
            })
        ));
        assert!(matches!(
            check_sizes(&[0, 2000], 2000, 10),
            Err(BenchError::TooFewCidrs {
                family: "IPv6",
                wanted: 2000,
                available: 10
            })
        ));
    }

    #[test]
    fn capacity_grows_past_the_default_only_when_needed() {
        assert_eq!(map_capacity(0), DEFAULT_MAP_CAPACITY);
        assert_eq!(map_capacity(64), DEFAULT_MAP_CAPACITY);
        assert_eq!(map_capacity(100_000), 101_024);
    }
}

//! What a config change does to the decisions, before it is applied: the
//! address ranges whose decision flips (both ways) with their sizes, and
//! warnings for changes that commonly break egress.
//!
//! A table decides by longest prefix, with "masquerade" for any address no
//! entry covers. CIDRs nest or are disjoint, so one sweep over the entries'
//! boundaries of both tables, with a stack of the prefixes that cover the
//! current address, finds every range where the two decide differently.

use std::{collections::BTreeSet, fmt, net::IpAddr};

use ip_masq_common::Action;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::table::Table;

/// One range whose decision changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DecisionChange {
    /// The range, as the fewest CIDRs that cover exactly it.
    pub cidrs: Vec<IpNet>,
    /// The decision before the change.
    #[serde(serialize_with = "action_name")]
    pub from: Action,
    /// The decision after it.
    #[serde(serialize_with = "action_name")]
    pub to: Action,
    /// How many addresses the range holds (2^128 for all of IPv6 saturates).
    pub addresses: u128,
}

/// An address whose change is worth a warning, with what it is.
#[derive(Clone, Debug)]
pub struct SensitiveAddress {
    /// The address.
    pub address: IpAddr,
    /// What it is, e.g. "the default gateway" or "DNS server (resolv.conf)".
    pub role: String,
}

/// A change that commonly breaks egress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Short name, stable for scripts: `keeps-everything`,
    /// `masquerades-link-local`, `keeps-sensitive-address`.
    pub kind: &'static str,
    /// One sentence for a person.
    pub message: String,
}

fn action_name<S: serde::Serializer>(action: &Action, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(match action {
        Action::KeepSource => "keep-source",
        Action::Masquerade => "masquerade",
    })
}

impl fmt::Display for DecisionChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cidrs: Vec<String> = self.cidrs.iter().map(ToString::to_string).collect();
        let name = |action| match action {
            Action::KeepSource => "keep source",
            Action::Masquerade => "masquerade",
        };
        write!(
            f,
            "{}: {} -> {} ({} addresses)",
            cidrs.join(", "),
            name(self.from),
            name(self.to),
            self.addresses
        )
    }
}

/// Every range that `old` and `new` decide differently, IPv4 first, in
/// address order; adjacent ranges with the same change are one.
pub fn decision_changes(old: &Table, new: &Table) -> Vec<DecisionChange> {
    let mut changes = family_changes(old, new, false);
    changes.extend(family_changes(old, new, true));
    changes
}

/// Warnings for `new` against `old`: keeping the source for everything,
/// masquerading link-local that was kept, and keeping the source towards
/// an address (the default gateway, a DNS server) that was masqueraded,
/// which hangs egress through a firewall that trusts node addresses.
pub fn warnings(old: &Table, new: &Table, sensitive: &[SensitiveAddress]) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for everything in ["0.0.0.0/0", "::/0"] {
        let everything: IpNet = everything.parse().expect("literal");
        if new
            .get(&everything)
            .is_some_and(|e| e.action == Action::KeepSource)
        {
            warnings.push(Warning {
                kind: "keeps-everything",
                message: format!(
                    "{everything} keeps the source: no pod traffic of this family is masqueraded, so destinations outside the cluster's routed networks see pod addresses they cannot answer"
                ),
            });
        }
    }
    for (link_local, sample) in [
        ("169.254.0.0/16", "169.254.169.254"),
        ("fe80::/10", "fe80::1"),
    ] {
        let sample: IpAddr = sample.parse().expect("literal");
        if decide(old, sample) == Action::KeepSource && decide(new, sample) == Action::Masquerade {
            warnings.push(Warning {
                kind: "masquerades-link-local",
                message: format!(
                    "{link_local} is masqueraded now (masqLinkLocal): link-local services such as cloud metadata endpoints see the node address"
                ),
            });
        }
    }
    for target in sensitive {
        if decide(old, target.address) == Action::Masquerade
            && decide(new, target.address) == Action::KeepSource
        {
            warnings.push(Warning {
                kind: "keeps-sensitive-address",
                message: format!(
                    "{} ({}) is inside a range that now keeps the source: traffic to it shows pod addresses instead of the node's, which a firewall or resolver that trusts node addresses refuses",
                    target.address, target.role
                ),
            });
        }
    }
    warnings
}

/// The decision `table` makes for `address`: its longest covering prefix,
/// else masquerade.
pub fn decide(table: &Table, address: IpAddr) -> Action {
    table
        .iter()
        .filter(|(prefix, _)| prefix.contains(&address))
        .max_by_key(|(prefix, _)| prefix.prefix_len())
        .map_or(Action::Masquerade, |(_, entry)| entry.action)
}

/// A prefix as a half-open interval of one family's addresses, in u128.
fn interval(prefix: &IpNet) -> (u128, u128) {
    match prefix {
        IpNet::V4(net) => (
            u128::from(u32::from(net.network())),
            u128::from(u32::from(net.broadcast())) + 1,
        ),
        IpNet::V6(net) => {
            let start = u128::from(net.network());
            let end = u128::from(net.broadcast());
            // The top of IPv6 has no successor in u128: saturate.
            (start, end.saturating_add(1))
        }
    }
}

struct Sweep {
    /// (start, end, action) sorted by start, outer prefixes first.
    prefixes: Vec<(u128, u128, Action)>,
    next: usize,
    stack: Vec<(u128, Action)>,
}

impl Sweep {
    fn new(table: &Table, ipv6: bool) -> Self {
        let mut prefixes: Vec<(u128, u128, Action)> = table
            .iter()
            .filter(|(prefix, _)| matches!(prefix, IpNet::V6(_)) == ipv6)
            .map(|(prefix, entry)| {
                let (start, end) = interval(prefix);
                (start, end, entry.action)
            })
            // Same start: the wider (outer) one first, so the stack nests.
            .collect();
        prefixes.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        Self {
            prefixes,
            next: 0,
            stack: Vec::new(),
        }
    }

    /// Every point where this table's decision may change.
    fn boundaries(&self, out: &mut BTreeSet<u128>) {
        for (start, end, _) in &self.prefixes {
            out.insert(*start);
            out.insert(*end);
        }
    }

    /// The decision at `point`; points must come in increasing order.
    fn decision_at(&mut self, point: u128) -> Action {
        while self.stack.last().is_some_and(|(end, _)| *end <= point) {
            self.stack.pop();
        }
        while let Some(&(start, end, action)) = self.prefixes.get(self.next) {
            if start > point {
                break;
            }
            self.next += 1;
            if end > point {
                while self.stack.last().is_some_and(|(top, _)| *top <= point) {
                    self.stack.pop();
                }
                self.stack.push((end, action));
            }
        }
        self.stack
            .last()
            .map_or(Action::Masquerade, |(_, action)| *action)
    }
}

fn family_changes(old: &Table, new: &Table, ipv6: bool) -> Vec<DecisionChange> {
    let top: u128 = if ipv6 { u128::MAX } else { 1 << 32 };
    let (mut old_sweep, mut new_sweep) = (Sweep::new(old, ipv6), Sweep::new(new, ipv6));
    let mut points = BTreeSet::from([0u128]);
    old_sweep.boundaries(&mut points);
    new_sweep.boundaries(&mut points);
    let points: Vec<u128> = points.into_iter().filter(|p| *p < top).collect();
    // (start, end, from, to) of each range that changes, merged.
    let mut ranges: Vec<(u128, u128, Action, Action)> = Vec::new();
    for (index, &start) in points.iter().enumerate() {
        let end = points.get(index + 1).copied().unwrap_or(top);
        let (from, to) = (old_sweep.decision_at(start), new_sweep.decision_at(start));
        if from == to {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last.1 == start && last.2 == from && last.3 == to => last.1 = end,
            _ => ranges.push((start, end, from, to)),
        }
    }
    ranges
        .into_iter()
        .map(|(start, end, from, to)| DecisionChange {
            cidrs: cover(start, end, ipv6),
            from,
            to,
            addresses: (end - start).saturating_add(u128::from(ipv6 && end == u128::MAX)),
        })
        .collect()
}

/// The fewest CIDRs that cover exactly `[start, end)`; for IPv6, `end`
/// u128::MAX stands for the end of the space.
fn cover(mut start: u128, end: u128, ipv6: bool) -> Vec<IpNet> {
    let bits = if ipv6 { 128 } else { 32 };
    let end_inclusive = if ipv6 && end == u128::MAX {
        u128::MAX
    } else {
        end - 1
    };
    let mut cidrs = Vec::new();
    loop {
        // The largest aligned block at `start` that stays within the range.
        let mut size_log = if start == 0 {
            bits
        } else {
            start.trailing_zeros().min(bits)
        };
        while size_log > 0 {
            let last = if size_log == 128 {
                u128::MAX
            } else {
                start + ((1u128 << size_log) - 1)
            };
            if last <= end_inclusive {
                break;
            }
            size_log -= 1;
        }
        let prefix_len = (bits - size_log) as u8;
        cidrs.push(if ipv6 {
            IpNet::V6(Ipv6Net::new(start.into(), prefix_len).expect("valid length"))
        } else {
            IpNet::V4(Ipv4Net::new((start as u32).into(), prefix_len).expect("valid length"))
        });
        let last = if size_log == 128 {
            u128::MAX
        } else {
            start + ((1u128 << size_log) - 1)
        };
        if last >= end_inclusive {
            return cidrs;
        }
        start = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ParseOptions, parse, table::Table};

    fn table(text: &str, ipv6: bool) -> Table {
        let options = ParseOptions {
            enable_ipv6: ipv6,
            nomasq_all_reserved_ranges: false,
        };
        Table::effective(&parse(text.as_bytes(), options).unwrap().config, ipv6)
    }

    fn shown(changes: &[DecisionChange]) -> Vec<String> {
        changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn identical_tables_change_nothing() {
        let a = table("nonMasqueradeCIDRs: [10.0.0.0/8]", false);
        assert!(decision_changes(&a, &a).is_empty());
    }

    #[test]
    fn a_removed_and_an_added_range_flip_both_ways() {
        let old = table("nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]", false);
        let new = table("nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]", false);
        assert_eq!(
            shown(&decision_changes(&old, &new)),
            [
                "172.16.0.0/12: keep source -> masquerade (1048576 addresses)",
                "192.168.0.0/16: masquerade -> keep source (65536 addresses)",
            ]
        );
    }

    #[test]
    fn an_exception_carves_a_hole_and_adjacent_changes_merge() {
        let old = table("nonMasqueradeCIDRs: [10.0.0.0/8]", false);
        let new = table(
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.1.0.0/16, 10.2.0.0/16]",
            false,
        );
        let changes = decision_changes(&old, &new);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].addresses, 2 * 65536);
        assert_eq!(
            changes[0].cidrs,
            [
                "10.1.0.0/16".parse::<IpNet>().unwrap(),
                "10.2.0.0/16".parse().unwrap()
            ]
        );
    }

    #[test]
    fn the_whole_ipv6_space_flipping_saturates_the_address_count() {
        // 2^128 does not fit a u128; an agent reloading from `::/0` to an
        // empty list once panicked here.
        let old = table(
            "nonMasqueradeCIDRs: ['::/0']\nmasqLinkLocalIPv6: true",
            true,
        );
        let new = table("nonMasqueradeCIDRs: []\nmasqLinkLocalIPv6: true", true);
        let changes: Vec<_> = decision_changes(&old, &new)
            .into_iter()
            .filter(|change| change.cidrs.iter().all(|cidr| cidr.addr().is_ipv6()))
            .collect();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].cidrs, ["::/0".parse::<IpNet>().unwrap()]);
        assert_eq!(changes[0].addresses, u128::MAX);
    }

    #[test]
    fn a_range_that_is_no_cidr_is_covered_by_the_fewest_cidrs() {
        let cidrs = cover(
            u128::from(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1))),
            u128::from(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 8))),
            false,
        );
        let cidrs: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(cidrs, ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/30"]);
        assert_eq!(
            cover(0, 1 << 32, false),
            ["0.0.0.0/0".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            cover(0, u128::MAX, true),
            ["::/0".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn the_sweep_agrees_with_a_plain_lookup_everywhere_it_looks() {
        let old = table(
            "nonMasqueradeCIDRs: [10.0.0.0/8, 10.200.5.0/24, 0.0.0.0/1, 2001:db8::/32]\nmasqueradeCIDRs: [10.200.0.0/16, 10.0.0.0/9]",
            true,
        );
        let new = table(
            "nonMasqueradeCIDRs: [10.0.0.0/7, 10.200.0.0/16, 2001:db8:1::/48]\nmasqueradeCIDRs: [10.200.5.0/25]",
            true,
        );
        let changes = decision_changes(&old, &new);
        for change in &changes {
            for cidr in &change.cidrs {
                for address in [cidr.network(), cidr.broadcast()] {
                    assert_eq!(decide(&old, address), change.from, "{address} in {cidr}");
                    assert_eq!(decide(&new, address), change.to, "{address} in {cidr}");
                }
            }
        }
        // And outside every change, both tables agree.
        for probe in [
            "10.1.2.3",
            "10.200.5.200",
            "10.200.5.1",
            "11.0.0.1",
            "200.0.0.1",
            "2001:db8:1::1",
            "2001:db8:2::1",
            "2002::1",
        ] {
            let address: IpAddr = probe.parse().unwrap();
            let changed = changes
                .iter()
                .any(|c| c.cidrs.iter().any(|n| n.contains(&address)));
            assert_eq!(
                changed,
                decide(&old, address) != decide(&new, address),
                "{probe}"
            );
        }
    }

    #[test]
    fn warnings_name_what_breaks_egress() {
        let old = table("nonMasqueradeCIDRs: [172.16.0.0/12]", false);
        let sensitive = [SensitiveAddress {
            address: "10.0.0.1".parse().unwrap(),
            role: "the default gateway".into(),
        }];
        let kinds = |new: &str| -> Vec<&'static str> {
            warnings(&old, &table(new, false), &sensitive)
                .iter()
                .map(|w| w.kind)
                .collect()
        };
        // 0.0.0.0/0 keeps link-local and the gateway too: one warning says it all.
        assert_eq!(
            kinds("nonMasqueradeCIDRs: [0.0.0.0/0]"),
            ["keeps-everything", "keeps-sensitive-address"]
        );
        assert_eq!(
            kinds("nonMasqueradeCIDRs: [172.16.0.0/12]\nmasqLinkLocal: true"),
            ["masquerades-link-local"]
        );
        assert_eq!(
            kinds("nonMasqueradeCIDRs: [10.0.0.0/8]"),
            ["keeps-sensitive-address"]
        );
        assert!(warnings(&old, &old, &sensitive).is_empty());
    }
}

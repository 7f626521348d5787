//! The effective CIDR table (what the LPM maps must hold) and the difference
//! between two tables. Pure: no I/O.

use std::{collections::BTreeMap, fmt};

use ip_masq_common::Action;
use ipnet::IpNet;
use serde::Serialize;

use crate::config::{LINK_LOCAL_V4, LINK_LOCAL_V6, MasqConfig};

/// Why an entry is in the table, for `check` and `dump`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Upstream's default `nonMasqueradeCIDRs`.
    Default,
    /// Link-local, non-masquerade unless `masqLinkLocal`/`masqLinkLocalIPv6`.
    LinkLocal,
    /// Listed in the config file.
    Config,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::LinkLocal => "link-local",
            Self::Config => "config",
        })
    }
}

/// One entry of the effective table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub action: Action,
    pub origin: Origin,
}

/// Destinations and their action, normalised (host bits cleared) and keyed
/// by prefix, both address families together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    entries: BTreeMap<IpNet, Entry>,
}

impl Table {
    /// The table the maps must hold for `config`. `enable_ipv6` decides
    /// whether IPv6 link-local is added, as upstream does.
    pub fn effective(config: &MasqConfig, enable_ipv6: bool) -> Self {
        let mut table = Self::default();
        let config_origin = if config.non_masquerade_cidrs_defaulted {
            Origin::Default
        } else {
            Origin::Config
        };
        if !config.masq_link_local {
            table.insert(
                LINK_LOCAL_V4.parse().expect("built-in CIDR"),
                Action::KeepSource,
                Origin::LinkLocal,
            );
        }
        if enable_ipv6 && !config.masq_link_local_ipv6 {
            table.insert(
                LINK_LOCAL_V6.parse().expect("built-in CIDR"),
                Action::KeepSource,
                Origin::LinkLocal,
            );
        }
        for cidr in &config.non_masquerade_cidrs {
            table.insert(*cidr, Action::KeepSource, config_origin);
        }
        // Exceptions last: an explicit masquerade entry wins over link-local
        // for the very same prefix.
        for cidr in &config.masquerade_cidrs {
            table.insert(*cidr, Action::Masquerade, Origin::Config);
        }
        table
    }

    /// Builds a table from entries read back from the maps; their origin is unknown
    /// there, so it is recorded as `Config`.
    pub fn from_map_entries(entries: impl IntoIterator<Item = (IpNet, Action)>) -> Self {
        let mut table = Self::default();
        for (prefix, action) in entries {
            table.insert(prefix, action, Origin::Config);
        }
        table
    }

    pub fn insert(&mut self, prefix: IpNet, action: Action, origin: Origin) {
        self.entries
            .insert(prefix.trunc(), Entry { action, origin });
    }

    pub fn remove(&mut self, prefix: &IpNet) {
        self.entries.remove(prefix);
    }

    pub fn get(&self, prefix: &IpNet) -> Option<&Entry> {
        self.entries.get(prefix)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpNet, &Entry)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries per address family: (IPv4, IPv6).
    pub fn family_counts(&self) -> (usize, usize) {
        let v4 = self
            .entries
            .keys()
            .filter(|p| matches!(p, IpNet::V4(_)))
            .count();
        (v4, self.entries.len() - v4)
    }

    /// What `destination` gets: the action of the longest matching prefix,
    /// masquerade when nothing matches. Used by `check` to explain a table;
    /// the datapath's own decision is tested against the kernel.
    pub fn decide(&self, destination: std::net::IpAddr) -> Action {
        self.entries
            .iter()
            .filter(|(prefix, _)| prefix.contains(&destination))
            .max_by_key(|(prefix, _)| prefix.prefix_len())
            .map_or(Action::Masquerade, |(_, entry)| entry.action)
    }

    /// The map writes that turn `self` into `desired`.
    pub fn diff(&self, desired: &Table) -> Diff {
        let upserts = desired
            .entries
            .iter()
            .filter(|(prefix, entry)| {
                self.entries.get(prefix).map(|e| e.action) != Some(entry.action)
            })
            .map(|(prefix, entry)| (*prefix, entry.action))
            .collect();
        let removals = self
            .entries
            .keys()
            .filter(|prefix| !desired.entries.contains_key(prefix))
            .copied()
            .collect();
        Diff { upserts, removals }
    }
}

/// Map writes: new or changed entries, and stale ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub upserts: Vec<(IpNet, Action)>,
    pub removals: Vec<IpNet>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MasqConfig, ParseOptions, parse};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn table_for(text: &str, enable_ipv6: bool) -> Table {
        let options = ParseOptions {
            enable_ipv6,
            ..ParseOptions::default()
        };
        Table::effective(
            &parse(text.as_bytes(), options).unwrap().config,
            enable_ipv6,
        )
    }

    #[test]
    fn default_table_has_rfc1918_and_link_local() {
        let table = Table::effective(&MasqConfig::defaults(ParseOptions::default()), false);
        let prefixes: Vec<String> = table.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            prefixes,
            [
                "10.0.0.0/8",
                "169.254.0.0/16",
                "172.16.0.0/12",
                "192.168.0.0/16"
            ]
        );
        assert_eq!(
            table.get(&net("10.0.0.0/8")).unwrap().origin,
            Origin::Default
        );
        assert_eq!(
            table.get(&net("169.254.0.0/16")).unwrap().origin,
            Origin::LinkLocal
        );
    }

    #[test]
    fn link_local_follows_the_flags() {
        assert!(
            table_for("masqLinkLocal: true", false)
                .get(&net("169.254.0.0/16"))
                .is_none()
        );
        assert!(table_for("", true).get(&net("fe80::/10")).is_some());
        assert!(table_for("", false).get(&net("fe80::/10")).is_none());
        assert!(
            table_for("masqLinkLocalIPv6: true", true)
                .get(&net("fe80::/10"))
                .is_none()
        );
    }

    #[test]
    fn longest_prefix_decides_both_ways() {
        let table = table_for(
            "nonMasqueradeCIDRs: [10.0.0.0/8, 10.200.5.0/24]\nmasqueradeCIDRs: [10.200.0.0/16]",
            false,
        );
        let decide = |ip: &str| table.decide(ip.parse().unwrap());
        assert_eq!(decide("10.1.2.3"), Action::KeepSource);
        assert_eq!(decide("10.200.1.1"), Action::Masquerade);
        assert_eq!(decide("10.200.5.9"), Action::KeepSource);
        assert_eq!(decide("8.8.8.8"), Action::Masquerade);
    }

    #[test]
    fn diff_adds_changes_and_removes() {
        let before = table_for("nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]", false);
        let after = table_for(
            "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\nmasqLinkLocal: true\nmasqueradeCIDRs: [10.1.0.0/16]",
            false,
        );
        let diff = before.diff(&after);
        assert_eq!(
            diff.upserts,
            [
                (net("10.1.0.0/16"), Action::Masquerade),
                (net("172.16.0.0/12"), Action::KeepSource)
            ]
        );
        assert_eq!(
            diff.removals,
            [net("169.254.0.0/16"), net("192.168.0.0/16")]
        );
        assert!(after.diff(&after).is_empty());
    }

    #[test]
    fn diff_rewrites_an_entry_whose_action_flipped() {
        let mut before = Table::default();
        before.insert(net("10.0.0.0/8"), Action::KeepSource, Origin::Config);
        let mut after = Table::default();
        after.insert(net("10.0.0.0/8"), Action::Masquerade, Origin::Config);
        let diff = before.diff(&after);
        assert_eq!(diff.upserts, [(net("10.0.0.0/8"), Action::Masquerade)]);
        assert!(diff.removals.is_empty());
    }

    #[test]
    fn origin_alone_does_not_cause_writes() {
        let mut before = Table::default();
        before.insert(net("10.0.0.0/8"), Action::KeepSource, Origin::Default);
        let mut after = Table::default();
        after.insert(net("10.0.0.0/8"), Action::KeepSource, Origin::Config);
        assert!(before.diff(&after).is_empty());
    }

    #[test]
    fn family_counts() {
        let table = table_for("nonMasqueradeCIDRs: [10.0.0.0/8, 2001:db8::/32]", true);
        assert_eq!(table.family_counts(), (2, 2));
    }
}

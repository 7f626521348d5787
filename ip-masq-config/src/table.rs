//! The effective CIDR table (what the LPM maps must hold) and the difference
//! between two tables. Pure: no I/O.

use std::{collections::BTreeMap, fmt};

use ip_masq_common::Action;
use ipnet::IpNet;
use serde::Serialize;

use crate::{LINK_LOCAL_V4, LINK_LOCAL_V6, MasqConfig};

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
    /// Keep the source or masquerade.
    pub action: Action,
    /// Where the entry comes from.
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
        let config_origin = if config.non_masquerade_cidrs_defaulted {
            Origin::Default
        } else {
            Origin::Config
        };
        let keep = |origin| Entry {
            action: Action::KeepSource,
            origin,
        };
        // In order of precedence, lowest first: for the same prefix a later
        // entry wins, so an explicit masquerade exception beats link-local.
        let mut entries = Vec::with_capacity(
            2 + config.non_masquerade_cidrs.len() + config.masquerade_cidrs.len(),
        );
        if !config.masq_link_local {
            let link_local: IpNet = LINK_LOCAL_V4.parse().expect("built-in CIDR");
            entries.push((link_local, keep(Origin::LinkLocal)));
        }
        if enable_ipv6 && !config.masq_link_local_ipv6 {
            let link_local: IpNet = LINK_LOCAL_V6.parse().expect("built-in CIDR");
            entries.push((link_local, keep(Origin::LinkLocal)));
        }
        entries.extend(
            config
                .non_masquerade_cidrs
                .iter()
                .map(|cidr| (cidr.trunc(), keep(config_origin))),
        );
        entries.extend(config.masquerade_cidrs.iter().map(|cidr| {
            let entry = Entry {
                action: Action::Masquerade,
                origin: Origin::Config,
            };
            (cidr.trunc(), entry)
        }));
        Self::from_ordered_by_precedence(entries)
    }

    /// Builds the table in one sort instead of one tree insert per entry,
    /// which is what makes a reload of a 100k list cheap. Of several entries
    /// for one prefix the last one wins.
    fn from_ordered_by_precedence(mut entries: Vec<(IpNet, Entry)>) -> Self {
        // Stable: entries for one prefix stay in precedence order.
        entries.sort_by_key(|(prefix, _)| *prefix);
        let mut winners: Vec<(IpNet, Entry)> = Vec::with_capacity(entries.len());
        for (prefix, entry) in entries {
            match winners.last_mut() {
                Some(last) if last.0 == prefix => last.1 = entry,
                _ => winners.push((prefix, entry)),
            }
        }
        Self {
            entries: winners.into_iter().collect(),
        }
    }

    /// Builds a table from entries read back from the maps; their origin is unknown
    /// there, so it is recorded as `Config`.
    pub fn from_map_entries(entries: impl IntoIterator<Item = (IpNet, Action)>) -> Self {
        let origin = Origin::Config;
        Self::from_ordered_by_precedence(
            entries
                .into_iter()
                .map(|(prefix, action)| (prefix.trunc(), Entry { action, origin }))
                .collect(),
        )
    }

    /// Adds or replaces the entry for `prefix` (host bits cleared).
    pub fn insert(&mut self, prefix: IpNet, action: Action, origin: Origin) {
        self.entries
            .insert(prefix.trunc(), Entry { action, origin });
    }

    /// Removes the entry for `prefix`, if any.
    pub fn remove(&mut self, prefix: &IpNet) {
        self.entries.remove(prefix);
    }

    /// The entry for exactly `prefix`.
    pub fn get(&self, prefix: &IpNet) -> Option<&Entry> {
        self.entries.get(prefix)
    }

    /// The entries in prefix order.
    pub fn iter(&self) -> impl Iterator<Item = (&IpNet, &Entry)> {
        self.entries.iter()
    }

    /// How many entries the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no entry.
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
        let mut diff = Diff::default();
        for pair in merge_join(&self.entries, &desired.entries) {
            match pair {
                Joined::Left(prefix) => diff.removals.push(*prefix),
                Joined::Right(prefix, wanted) => diff.upserts.push((*prefix, wanted.action)),
                Joined::Both(prefix, held, wanted) => {
                    if held.action != wanted.action {
                        diff.upserts.push((*prefix, wanted.action));
                    }
                }
            }
        }
        diff
    }

    /// Takes over `desired`'s origin labels for the entries whose action
    /// already matches it; an origin is bookkeeping and never costs a map
    /// write.
    pub fn relabel_origins(&mut self, desired: &Table) {
        let mut wanted = desired.entries.iter().peekable();
        for (prefix, held) in &mut self.entries {
            while wanted.next_if(|(next, _)| *next < prefix).is_some() {}
            if let Some((_, entry)) = wanted.next_if(|(next, _)| *next == prefix)
                && entry.action == held.action
            {
                held.origin = entry.origin;
            }
        }
    }
}

/// One step of a walk over two ordered maps at once.
enum Joined<'a, K, V> {
    Left(&'a K),
    Right(&'a K, &'a V),
    Both(&'a K, &'a V, &'a V),
}

/// Walks two ordered maps side by side in key order: linear, with no lookups.
fn merge_join<'a, K: Ord, V>(
    left: &'a BTreeMap<K, V>,
    right: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = Joined<'a, K, V>> {
    let mut left = left.iter().peekable();
    let mut right = right.iter().peekable();
    std::iter::from_fn(move || match (left.peek(), right.peek()) {
        (None, None) => None,
        (Some(_), None) => left.next().map(|(k, _)| Joined::Left(k)),
        (None, Some(_)) => right.next().map(|(k, v)| Joined::Right(k, v)),
        (Some((l, _)), Some((r, _))) => match l.cmp(r) {
            std::cmp::Ordering::Less => left.next().map(|(k, _)| Joined::Left(k)),
            std::cmp::Ordering::Greater => right.next().map(|(k, v)| Joined::Right(k, v)),
            std::cmp::Ordering::Equal => {
                let (k, held) = left.next()?;
                let (_, wanted) = right.next()?;
                Some(Joined::Both(k, held, wanted))
            }
        },
    })
}

/// Map writes: new or changed entries, and stale ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Entries to write: new ones and ones whose action changes.
    pub upserts: Vec<(IpNet, Action)>,
    /// Entries the new table no longer holds.
    pub removals: Vec<IpNet>,
}

impl Diff {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MasqConfig, ParseOptions, parse};

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
    fn relabel_takes_origins_only_where_the_action_matches() {
        let mut held = Table::default();
        held.insert(net("10.0.0.0/8"), Action::KeepSource, Origin::Default);
        held.insert(net("10.1.0.0/16"), Action::KeepSource, Origin::Config);
        held.insert(net("192.168.0.0/16"), Action::KeepSource, Origin::Default);
        let mut desired = Table::default();
        desired.insert(net("10.0.0.0/8"), Action::KeepSource, Origin::Config);
        desired.insert(net("10.1.0.0/16"), Action::Masquerade, Origin::Default);
        desired.insert(net("172.16.0.0/12"), Action::KeepSource, Origin::LinkLocal);
        held.relabel_origins(&desired);
        let origins: Vec<(String, Origin)> = held
            .iter()
            .map(|(prefix, entry)| (prefix.to_string(), entry.origin))
            .collect();
        assert_eq!(
            origins,
            [
                ("10.0.0.0/8".to_owned(), Origin::Config),
                ("10.1.0.0/16".to_owned(), Origin::Config),
                ("192.168.0.0/16".to_owned(), Origin::Default),
            ]
        );
    }

    #[test]
    fn read_back_duplicates_keep_the_last_and_are_normalised() {
        let table = Table::from_map_entries([
            (net("10.0.0.0/8"), Action::KeepSource),
            (net("10.9.9.9/8"), Action::Masquerade),
            (net("172.16.0.0/12"), Action::KeepSource),
        ]);
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.get(&net("10.0.0.0/8")).map(|e| e.action),
            Some(Action::Masquerade)
        );
    }

    #[test]
    fn diff_of_interleaved_tables_walks_both_in_order() {
        let before = table_for(
            "nonMasqueradeCIDRs: [10.0.0.0/8, 10.2.0.0/16, 10.4.0.0/16]",
            false,
        );
        let after = table_for(
            "nonMasqueradeCIDRs: [10.1.0.0/16, 10.2.0.0/16, 10.5.0.0/16]\nmasqueradeCIDRs: [10.4.0.0/16]",
            false,
        );
        let diff = before.diff(&after);
        let upserts: Vec<String> = diff
            .upserts
            .iter()
            .map(|(prefix, action)| format!("{prefix} {action:?}"))
            .collect();
        let removals: Vec<String> = diff.removals.iter().map(ToString::to_string).collect();
        assert_eq!(
            upserts,
            [
                "10.1.0.0/16 KeepSource",
                "10.4.0.0/16 Masquerade",
                "10.5.0.0/16 KeepSource"
            ]
        );
        assert_eq!(removals, ["10.0.0.0/8"]);
    }

    #[test]
    fn family_counts() {
        let table = table_for("nonMasqueradeCIDRs: [10.0.0.0/8, 2001:db8::/32]", true);
        assert_eq!(table.family_counts(), (2, 2));
    }
}

//! Brings the LPM maps to a desired table through a small trait, so that the
//! whole sync (ordering, capacity, partial failure) is unit-tested without
//! root.
//!
//! Order matters for correctness: during an update every destination is
//! decided either as the old table decides it or as the new one does, never
//! otherwise; in particular a destination covered by both tables never falls
//! through to "masquerade" in between. Three rules give that:
//! - new and changed entries are written before stale ones are removed;
//! - they are written innermost first (a prefix before the prefixes around
//!   it), so that a new masquerade exception never shows before the
//!   keep-source range inside it that the new table also adds;
//! - stale entries are removed outermost first, so that an address never
//!   falls back from a removed inner entry to a stale outer one.
//!
//! When the map cannot hold the old and the new entries side by side, only
//! stale entries whose removal changes no decision, or changes it to the new
//! table's, go first; if that does not make room the update is refused
//! whole, before any write.

use crate::kernel::datapath::PrefixStore;
use std::{collections::BTreeMap, ops::Bound};

use ip_masq_common::Action;
use ipnet::IpNet;
use thiserror::Error;

use ip_masq_config::table::{Origin, Table};

/// Why a single map write failed.
#[derive(Debug, Error)]
#[error("{operation} {prefix} failed: {source}")]
pub struct WriteError {
    pub operation: &'static str,
    pub prefix: IpNet,
    #[source]
    pub source: std::io::Error,
}

/// Why a whole table was refused before anything was written.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SyncError {
    #[error(
        "{family} table needs {needed} entries but the map holds at most {capacity} (raise --max-cidrs)"
    )]
    OverCapacity {
        family: &'static str,
        needed: usize,
        capacity: usize,
    },
    #[error(
        "{family} update needs {needed} entries at once (old and new side by side, so that no destination is masqueraded in between) but the map holds at most {capacity} (raise --max-cidrs)"
    )]
    NoRoomForUpdate {
        family: &'static str,
        needed: usize,
        capacity: usize,
    },
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
    /// Writes that failed; the in-memory record does not claim them.
    pub failures: Vec<WriteError>,
}

/// Applies the difference between `current` (what the maps hold) and
/// `desired` to `store`, updating `current` entry by entry as writes succeed.
///
/// # Errors
/// [`SyncError::OverCapacity`] when `desired` cannot fit, and
/// [`SyncError::NoRoomForUpdate`] when the update cannot be made in an order
/// that keeps every decision old or new: nothing is written then.
/// Individual write failures are reported in [`SyncReport::failures`].
pub fn apply<S: PrefixStore>(
    store: &mut S,
    current: &mut Table,
    desired: &Table,
) -> Result<SyncReport, SyncError> {
    check_capacity(store, desired)?;
    let diff = current.diff(desired);
    let early = removals_to_make_room(store, current, desired, &diff)?;
    let mut report = SyncReport::default();

    remove_stale(store, current, &early, &mut report);
    // The diff is in prefix order, which puts a prefix before the prefixes
    // inside it: walked backwards, inner entries are written first.
    for (prefix, action) in diff.upserts.iter().rev() {
        match store.upsert(*prefix, *action) {
            Ok(()) => {
                let origin = desired.get(prefix).map_or(Origin::Config, |e| e.origin);
                current.insert(*prefix, *action, origin);
                report.added += 1;
            }
            Err(source) => report.failures.push(WriteError {
                operation: "insert",
                prefix: *prefix,
                source,
            }),
        }
    }
    // Forwards: outer stale entries go before the inner ones.
    let rest: Vec<IpNet> = if early.is_empty() {
        diff.removals
    } else {
        diff.removals
            .into_iter()
            .filter(|prefix| early.binary_search(prefix).is_err())
            .collect()
    };
    remove_stale(store, current, &rest, &mut report);
    current.relabel_origins(desired);
    Ok(report)
}

fn remove_stale<S: PrefixStore>(
    store: &mut S,
    current: &mut Table,
    removals: &[IpNet],
    report: &mut SyncReport,
) {
    for prefix in removals {
        match store.remove(*prefix) {
            Ok(()) => {
                current.remove(prefix);
                report.removed += 1;
            }
            Err(source) => report.failures.push(WriteError {
                operation: "remove",
                prefix: *prefix,
                source,
            }),
        }
    }
}

fn check_capacity<S: PrefixStore>(store: &S, desired: &Table) -> Result<(), SyncError> {
    let (v4, v6) = desired.family_counts();
    for (family, needed, sample) in [("IPv4", v4, "0.0.0.0/0"), ("IPv6", v6, "::/0")] {
        let capacity = store.capacity(&sample.parse().expect("literal"));
        if needed > capacity {
            return Err(SyncError::OverCapacity {
                family,
                needed,
                capacity,
            });
        }
    }
    Ok(())
}

/// The stale entries to remove before anything is written, so that the old
/// and the new entries fit side by side; empty when they fit anyway. Sorted.
///
/// A stale entry may go first only when its removal keeps every decision
/// old or new: the addresses it decides fall back to the entry around it
/// (or to "masquerade" when none), which must give the same action as the
/// entry itself, or the action the new table gives all of them.
///
/// # Errors
/// [`SyncError::NoRoomForUpdate`] when even then the entries do not fit.
fn removals_to_make_room<S: PrefixStore>(
    store: &S,
    current: &Table,
    desired: &Table,
    diff: &ip_masq_config::table::Diff,
) -> Result<Vec<IpNet>, SyncError> {
    let families = [
        ("IPv4", "0.0.0.0/0".parse::<IpNet>().expect("literal")),
        ("IPv6", "::/0".parse::<IpNet>().expect("literal")),
    ];
    let (v4_union, v6_union) = union_counts(current, &diff.upserts);
    let mut excess = [v4_union, v6_union];
    for (index, (_, sample)) in families.iter().enumerate() {
        excess[index] = excess[index].saturating_sub(store.capacity(sample));
    }
    if excess == [0, 0] {
        return Ok(Vec::new());
    }
    // The rare path: copies of both tables to simulate removals on.
    let mut held: BTreeMap<IpNet, Action> = current.iter().map(|(p, e)| (*p, e.action)).collect();
    let wanted: BTreeMap<IpNet, Action> = desired.iter().map(|(p, e)| (*p, e.action)).collect();
    let mut early = Vec::new();
    for prefix in &diff.removals {
        let slot = usize::from(prefix.addr().is_ipv6());
        if excess[slot] == 0 {
            continue;
        }
        let Some(&own) = held.get(prefix) else {
            continue;
        };
        let fallback = enclosing_action(&held, prefix);
        let harmless = fallback == own
            || (!holds_inside(&wanted, prefix) && enclosing_action(&wanted, prefix) == fallback);
        if harmless {
            held.remove(prefix);
            early.push(*prefix);
            excess[slot] -= 1;
        }
    }
    for (slot, (family, sample)) in families.iter().enumerate() {
        if excess[slot] > 0 {
            let capacity = store.capacity(sample);
            return Err(SyncError::NoRoomForUpdate {
                family,
                needed: capacity + excess[slot],
                capacity,
            });
        }
    }
    Ok(early)
}

/// The action of the longest entry strictly around `prefix`; "masquerade"
/// when there is none, as for a lookup miss.
fn enclosing_action(entries: &BTreeMap<IpNet, Action>, prefix: &IpNet) -> Action {
    (0..prefix.prefix_len())
        .rev()
        .find_map(|len| {
            let outer = IpNet::new(prefix.addr(), len)
                .expect("shorter prefix")
                .trunc();
            entries.get(&outer).copied()
        })
        .unwrap_or(Action::Masquerade)
}

/// Whether `entries` hold a prefix strictly inside `prefix`. Keys are
/// normalised, so those are exactly the keys after `prefix` up to its last
/// address as a host route.
fn holds_inside(entries: &BTreeMap<IpNet, Action>, prefix: &IpNet) -> bool {
    let last = IpNet::new(prefix.broadcast(), prefix.max_prefix_len()).expect("host route");
    entries
        .range((Bound::Excluded(*prefix), Bound::Included(last)))
        .next()
        .is_some()
}

fn union_counts(current: &Table, upserts: &[(IpNet, Action)]) -> (usize, usize) {
    let (mut v4, mut v6) = current.family_counts();
    for (prefix, _) in upserts {
        if current.get(prefix).is_none() {
            match prefix {
                IpNet::V4(_) => v4 += 1,
                IpNet::V6(_) => v6 += 1,
            }
        }
    }
    (v4, v6)
}

/// The maps' contents as read back from the kernel.
#[derive(Debug, Default)]
pub struct ReadBack {
    /// The entries whose value is an action.
    pub table: Table,
    /// Entries whose value is no action (someone else wrote them): the
    /// classifier treats them as "masquerade", and as the longest match
    /// they win over the keep-source range around them.
    pub unknown: Vec<(IpNet, u8)>,
}

impl ReadBack {
    /// Sorts entries read back from the maps by whether their value decodes.
    pub fn from_entries(entries: impl IntoIterator<Item = (IpNet, u8)>) -> Self {
        let mut unknown = Vec::new();
        let known: Vec<(IpNet, Action)> = entries
            .into_iter()
            .filter_map(|(prefix, value)| match Action::from_value(value) {
                Some(action) => Some((prefix, action)),
                None => {
                    unknown.push((prefix, value));
                    None
                }
            })
            .collect();
        Self {
            table: Table::from_map_entries(known),
            unknown,
        }
    }

    /// Whether the maps hold exactly `table`, and nothing else.
    pub fn matches(&self, table: &Table) -> bool {
        self.unknown.is_empty() && self.table.diff(table).is_empty()
    }
}

/// What [`repair`] did.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// Entries with an unknown value that were removed.
    pub unknown_removed: Vec<(IpNet, u8)>,
    /// The writes that brought the known entries back, and every failed
    /// write, removals of unknown entries included.
    pub sync: SyncReport,
    /// Why the known entries could not be brought back, if so.
    pub refused: Option<SyncError>,
}

impl RepairReport {
    /// Entries put right: unknown ones removed, known ones written or removed.
    pub fn repaired(&self) -> usize {
        self.unknown_removed.len() + self.sync.added + self.sync.removed
    }
}

/// Brings maps that hold `found` to `desired`, leaving in `current` what
/// they hold afterwards. Unknown entries go first: they decide their
/// addresses as "masquerade" already, so removing one only lets the table's
/// own entries decide; one on a prefix `desired` holds is overwritten
/// instead.
pub fn repair<S: PrefixStore>(
    store: &mut S,
    current: &mut Table,
    found: ReadBack,
    desired: &Table,
) -> RepairReport {
    *current = found.table;
    let mut report = RepairReport::default();
    for (prefix, value) in found.unknown {
        if desired.get(&prefix).is_some() {
            continue;
        }
        match store.remove(prefix) {
            Ok(()) => report.unknown_removed.push((prefix, value)),
            Err(source) => report.sync.failures.push(WriteError {
                operation: "remove",
                prefix,
                source,
            }),
        }
    }
    match apply(store, current, desired) {
        Ok(sync) => {
            report.sync.added = sync.added;
            report.sync.removed = sync.removed;
            report.sync.failures.extend(sync.failures);
        }
        Err(err) => report.refused = Some(err),
    }
    report
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// A map double that records the order of writes and fails on request.
    #[derive(Default)]
    struct FakeStore {
        /// Raw values, as the kernel holds them.
        entries: BTreeMap<IpNet, u8>,
        log: Vec<String>,
        capacity: usize,
        failing: BTreeSet<IpNet>,
    }

    impl FakeStore {
        fn with_capacity(capacity: usize) -> Self {
            Self {
                capacity,
                ..Self::default()
            }
        }
    }

    impl PrefixStore for FakeStore {
        fn upsert(&mut self, prefix: IpNet, action: Action) -> Result<(), std::io::Error> {
            if self.failing.contains(&prefix) {
                return Err(std::io::Error::from_raw_os_error(libc::ENOMEM));
            }
            let family_len = self
                .entries
                .keys()
                .filter(|p| p.addr().is_ipv4() == prefix.addr().is_ipv4())
                .count();
            if !self.entries.contains_key(&prefix) && family_len >= self.capacity {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.entries.insert(prefix, action as u8);
            self.log.push(format!("+{prefix}"));
            Ok(())
        }

        fn remove(&mut self, prefix: IpNet) -> Result<(), std::io::Error> {
            if self.failing.contains(&prefix) {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            self.entries.remove(&prefix);
            self.log.push(format!("-{prefix}"));
            Ok(())
        }

        fn capacity(&self, _prefix: &IpNet) -> usize {
            self.capacity
        }
    }

    fn table(prefixes: &[&str]) -> Table {
        Table::from_map_entries(
            prefixes
                .iter()
                .map(|p| (p.parse().unwrap(), Action::KeepSource)),
        )
    }

    #[test]
    fn adds_before_it_removes() {
        let mut store = FakeStore::with_capacity(10);
        let mut current = Table::default();
        apply(&mut store, &mut current, &table(&["10.0.0.0/8"])).unwrap();
        store.log.clear();
        let report = apply(
            &mut store,
            &mut current,
            &table(&["10.0.0.0/9", "10.128.0.0/9"]),
        )
        .unwrap();
        assert_eq!(store.log, ["+10.128.0.0/9", "+10.0.0.0/9", "-10.0.0.0/8"]);
        assert_eq!((report.added, report.removed), (2, 1));
        assert_eq!(current, table(&["10.0.0.0/9", "10.128.0.0/9"]));
    }

    #[test]
    fn unchanged_table_writes_nothing() {
        let mut store = FakeStore::with_capacity(10);
        let mut current = Table::default();
        let desired = table(&["10.0.0.0/8", "192.168.0.0/16"]);
        apply(&mut store, &mut current, &desired).unwrap();
        store.log.clear();
        let report = apply(&mut store, &mut current, &desired).unwrap();
        assert!(store.log.is_empty());
        assert_eq!((report.added, report.removed), (0, 0));
    }

    #[test]
    fn over_capacity_is_refused_whole() {
        let mut store = FakeStore::with_capacity(2);
        let mut current = Table::default();
        apply(&mut store, &mut current, &table(&["10.0.0.0/8"])).unwrap();
        let err = apply(
            &mut store,
            &mut current,
            &table(&["1.0.0.0/8", "2.0.0.0/8", "3.0.0.0/8"]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            SyncError::OverCapacity {
                family: "IPv4",
                needed: 3,
                capacity: 2
            }
        );
        assert_eq!(store.entries.len(), 1, "nothing written");
        assert_eq!(current, table(&["10.0.0.0/8"]));
    }

    #[test]
    fn full_map_removes_stale_entries_first() {
        let mut store = FakeStore::with_capacity(2);
        let mut current = Table::default();
        apply(
            &mut store,
            &mut current,
            &table(&["1.0.0.0/8", "2.0.0.0/8"]),
        )
        .unwrap();
        store.log.clear();
        let report = apply(
            &mut store,
            &mut current,
            &table(&["1.0.0.0/8", "3.0.0.0/8"]),
        )
        .unwrap();
        assert_eq!(store.log, ["-2.0.0.0/8", "+3.0.0.0/8"]);
        assert!(report.failures.is_empty());
    }

    #[test]
    fn failed_writes_are_reported_and_not_recorded() {
        let mut store = FakeStore::with_capacity(10);
        let mut current = Table::default();
        apply(&mut store, &mut current, &table(&["10.0.0.0/8"])).unwrap();
        store.failing.insert("192.168.0.0/16".parse().unwrap());
        store.failing.insert("10.0.0.0/8".parse().unwrap());
        let report = apply(
            &mut store,
            &mut current,
            &table(&["172.16.0.0/12", "192.168.0.0/16"]),
        )
        .unwrap();
        assert_eq!((report.added, report.removed), (1, 0));
        let failed: Vec<String> = report
            .failures
            .iter()
            .map(|f| format!("{} {}", f.operation, f.prefix))
            .collect();
        assert_eq!(failed, ["insert 192.168.0.0/16", "remove 10.0.0.0/8"]);
        // The record matches the store exactly, so the next sync retries both.
        assert_eq!(current, table(&["10.0.0.0/8", "172.16.0.0/12"]));
        store.failing.clear();
        let report = apply(
            &mut store,
            &mut current,
            &table(&["172.16.0.0/12", "192.168.0.0/16"]),
        )
        .unwrap();
        assert_eq!((report.added, report.removed), (1, 1));
    }

    #[test]
    fn action_flip_is_an_in_place_overwrite() {
        let mut store = FakeStore::with_capacity(10);
        let mut current = Table::default();
        apply(&mut store, &mut current, &table(&["10.0.0.0/8"])).unwrap();
        store.log.clear();
        let mut desired = Table::default();
        desired.insert(
            "10.0.0.0/8".parse().unwrap(),
            Action::Masquerade,
            Origin::Config,
        );
        apply(&mut store, &mut current, &desired).unwrap();
        assert_eq!(store.log, ["+10.0.0.0/8"]);
        assert_eq!(
            store.entries.get(&"10.0.0.0/8".parse().unwrap()),
            Some(&(Action::Masquerade as u8))
        );
    }

    /// What the store decides for `destination`, as the classifier does: the
    /// longest matching prefix, "masquerade" on a miss or an unknown value.
    fn decide(entries: &BTreeMap<IpNet, u8>, destination: &str) -> Action {
        let destination: std::net::IpAddr = destination.parse().unwrap();
        entries
            .iter()
            .filter(|(prefix, _)| prefix.contains(&destination))
            .max_by_key(|(prefix, _)| prefix.prefix_len())
            .and_then(|(_, value)| Action::from_value(*value))
            .unwrap_or(Action::Masquerade)
    }

    /// A store that checks, after every write, that each probe address is
    /// decided as the old or the new table decides it.
    struct Watched {
        inner: FakeStore,
        probes: Vec<(&'static str, Action, Action)>,
        violations: Vec<String>,
    }

    impl Watched {
        fn check(&mut self, write: String) {
            for (address, old, new) in &self.probes {
                let now = decide(&self.inner.entries, address);
                if now != *old && now != *new {
                    self.violations
                        .push(format!("after {write}: {address} is {now:?}"));
                }
            }
        }
    }

    impl PrefixStore for Watched {
        fn upsert(&mut self, prefix: IpNet, action: Action) -> Result<(), std::io::Error> {
            self.inner.upsert(prefix, action)?;
            self.check(format!("+{prefix}"));
            Ok(())
        }
        fn remove(&mut self, prefix: IpNet) -> Result<(), std::io::Error> {
            self.inner.remove(prefix)?;
            self.check(format!("-{prefix}"));
            Ok(())
        }
        fn capacity(&self, prefix: &IpNet) -> usize {
            self.inner.capacity(prefix)
        }
    }

    fn entries(list: &[(&str, Action)]) -> Table {
        let mut table = Table::default();
        for (prefix, action) in list {
            table.insert(prefix.parse().unwrap(), *action, Origin::Config);
        }
        table
    }

    /// Updates `old` to `new` on a store of `capacity` and returns the
    /// decisions that were neither old nor new at some point.
    fn transitions(
        capacity: usize,
        old: &Table,
        new: &Table,
        probes: &[&'static str],
    ) -> (Result<SyncReport, SyncError>, Watched) {
        let mut store = Watched {
            inner: FakeStore::with_capacity(capacity),
            probes: probes
                .iter()
                .map(|address| {
                    let ip = address.parse().unwrap();
                    (*address, old.decide(ip), new.decide(ip))
                })
                .collect(),
            violations: Vec::new(),
        };
        let mut current = Table::default();
        apply(&mut store.inner, &mut current, old).unwrap();
        store.inner.log.clear();
        let result = apply(&mut store, &mut current, new);
        (result, store)
    }

    #[test]
    fn inner_entries_are_written_before_the_ones_around_them() {
        use Action::{KeepSource, Masquerade};
        // A masquerade exception with a keep-source range inside it, both
        // new: written outer first, 10.1.1.x would be masqueraded for a
        // moment although both tables keep its source.
        let old = entries(&[("10.0.0.0/8", KeepSource)]);
        let new = entries(&[
            ("10.0.0.0/8", KeepSource),
            ("10.1.0.0/16", Masquerade),
            ("10.1.1.0/24", KeepSource),
        ]);
        let (result, store) = transitions(10, &old, &new, &["10.1.1.1", "10.1.2.1", "10.2.0.1"]);
        result.unwrap();
        assert_eq!(store.inner.log, ["+10.1.1.0/24", "+10.1.0.0/16"]);
        assert!(store.violations.is_empty(), "{:?}", store.violations);
    }

    #[test]
    fn outer_stale_entries_are_removed_before_the_ones_inside_them() {
        use Action::{KeepSource, Masquerade};
        let old = entries(&[
            ("10.0.0.0/8", KeepSource),
            ("10.1.0.0/16", Masquerade),
            ("10.1.1.0/24", KeepSource),
        ]);
        let new = entries(&[("192.168.0.0/16", KeepSource)]);
        let (result, store) = transitions(10, &old, &new, &["10.1.1.1", "10.1.2.1", "10.2.0.1"]);
        result.unwrap();
        assert_eq!(
            store.inner.log,
            [
                "+192.168.0.0/16",
                "-10.0.0.0/8",
                "-10.1.0.0/16",
                "-10.1.1.0/24"
            ]
        );
        assert!(store.violations.is_empty(), "{:?}", store.violations);
    }

    #[test]
    fn a_full_map_never_masquerades_what_both_tables_keep() {
        // Replacing a /8 with its two halves needs three entries at once;
        // removing the /8 first would masquerade all of 10.0.0.0/8 until the
        // halves are in. The update is refused whole instead.
        let old = table(&["10.0.0.0/8", "192.168.0.0/16"]);
        let new = table(&["10.0.0.0/9", "10.128.0.0/9", "192.168.0.0/16"]);
        let (result, store) = transitions(3, &old, &new, &["10.1.0.1", "10.200.0.1"]);
        assert_eq!(
            result.unwrap_err(),
            SyncError::NoRoomForUpdate {
                family: "IPv4",
                needed: 4,
                capacity: 3
            }
        );
        assert!(
            store.inner.log.is_empty(),
            "nothing written: {:?}",
            store.inner.log
        );
        assert!(store.violations.is_empty(), "{:?}", store.violations);
        assert_eq!(store.inner.entries.len(), 2);
        // With one more slot the halves go in first, as always.
        let (result, store) = transitions(4, &old, &new, &["10.1.0.1", "10.200.0.1"]);
        result.unwrap();
        assert_eq!(
            store.inner.log,
            ["+10.128.0.0/9", "+10.0.0.0/9", "-10.0.0.0/8"]
        );
        assert!(store.violations.is_empty(), "{:?}", store.violations);
    }

    #[test]
    fn a_full_map_frees_only_slots_whose_removal_is_harmless() {
        use Action::{KeepSource, Masquerade};
        // 10.5.0.0/16 keep-source inside 10.0.0.0/8 keep-source decides
        // nothing of its own: it may go first. 2.0.0.0/8 decides addresses
        // the new table masquerades: it may go first too. 10.0.0.0/8 may
        // not: the new table keeps 10.0.0.0/9's sources.
        let old = entries(&[
            ("2.0.0.0/8", KeepSource),
            ("10.0.0.0/8", KeepSource),
            ("10.5.0.0/16", KeepSource),
            ("10.6.0.0/16", Masquerade),
        ]);
        let new = entries(&[
            ("10.0.0.0/9", KeepSource),
            ("10.6.0.0/16", Masquerade),
            ("3.0.0.0/8", KeepSource),
            ("4.0.0.0/8", KeepSource),
        ]);
        let probes = [
            "2.0.0.1",
            "3.0.0.1",
            "10.5.0.1",
            "10.6.0.1",
            "10.1.0.1",
            "10.200.0.1",
        ];
        let (result, store) = transitions(5, &old, &new, &probes);
        result.unwrap();
        assert_eq!(
            store.inner.log,
            [
                "-2.0.0.0/8",
                "-10.5.0.0/16",
                "+10.0.0.0/9",
                "+4.0.0.0/8",
                "+3.0.0.0/8",
                "-10.0.0.0/8"
            ]
        );
        assert!(store.violations.is_empty(), "{:?}", store.violations);
        // One slot fewer, and even those two do not make room.
        let (result, store) = transitions(4, &old, &new, &probes);
        assert!(
            matches!(result, Err(SyncError::NoRoomForUpdate { .. })),
            "{result:?}"
        );
        assert!(store.inner.log.is_empty());
    }

    #[test]
    fn unknown_values_are_removed_and_known_entries_put_back() {
        let mut store = FakeStore::with_capacity(10);
        let mut current = Table::default();
        let desired = table(&["10.0.0.0/8", "192.168.0.0/16"]);
        apply(&mut store, &mut current, &desired).unwrap();
        // A stray entry inside a kept range, one over a kept prefix, and a
        // kept entry gone.
        store.entries.insert("10.1.0.0/16".parse().unwrap(), 7);
        store.entries.insert("192.168.0.0/16".parse().unwrap(), 0);
        store.entries.remove(&"10.0.0.0/8".parse().unwrap());
        assert_eq!(decide(&store.entries, "10.1.0.1"), Action::Masquerade);
        store.log.clear();
        let found = ReadBack::from_entries(store.entries.clone());
        assert_eq!(found.unknown.len(), 2);
        assert!(!found.matches(&desired));
        let report = repair(&mut store, &mut current, found, &desired);
        assert!(report.refused.is_none());
        assert!(report.sync.failures.is_empty());
        let removed: Vec<String> = report
            .unknown_removed
            .iter()
            .map(|(prefix, value)| format!("{prefix}={value}"))
            .collect();
        assert_eq!(removed, ["10.1.0.0/16=7"]);
        assert_eq!(report.repaired(), 3);
        assert_eq!(
            store.log,
            ["-10.1.0.0/16", "+192.168.0.0/16", "+10.0.0.0/8"]
        );
        assert_eq!(current, desired);
        assert!(ReadBack::from_entries(store.entries.clone()).matches(&desired));
        assert_eq!(decide(&store.entries, "10.1.0.1"), Action::KeepSource);
        assert_eq!(decide(&store.entries, "192.168.0.1"), Action::KeepSource);
    }

    #[test]
    fn restoring_drops_unknown_values_and_keeps_the_rest() {
        let mut store = FakeStore::with_capacity(10);
        store.entries.insert("10.0.0.0/8".parse().unwrap(), 1);
        store.entries.insert("10.1.0.0/16".parse().unwrap(), 7);
        let found = ReadBack::from_entries(store.entries.clone());
        let restored = found.table.clone();
        let mut current = Table::default();
        let report = repair(&mut store, &mut current, found, &restored);
        assert_eq!(report.unknown_removed.len(), 1);
        assert_eq!(store.log, ["-10.1.0.0/16"]);
        assert_eq!(current, table(&["10.0.0.0/8"]));
    }
}

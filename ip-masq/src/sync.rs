//! Brings the LPM maps to a desired table through a small trait, so that the
//! whole sync (ordering, capacity, partial failure) is unit-tested without
//! root.
//!
//! Order matters for correctness: new and changed entries are written before
//! stale ones are removed, so that a destination covered by both the old and
//! the new table never falls through to "masquerade" in between.

use ip_masq_common::Action;
use ipnet::IpNet;
use thiserror::Error;

use crate::table::{Origin, Table};

/// Why a single map write failed.
#[derive(Debug, Error)]
#[error("{operation} {prefix} failed: {source}")]
pub struct WriteError {
    pub operation: &'static str,
    pub prefix: IpNet,
    #[source]
    pub source: std::io::Error,
}

/// The LPM maps as the sync loop sees them.
pub trait PrefixStore {
    /// Inserts or overwrites one prefix.
    ///
    /// # Errors
    /// Returns the kernel's error for that write.
    fn upsert(&mut self, prefix: IpNet, action: Action) -> Result<(), std::io::Error>;
    /// Removes one prefix; removing an absent prefix is not an error.
    ///
    /// # Errors
    /// Returns the kernel's error for that write.
    fn remove(&mut self, prefix: IpNet) -> Result<(), std::io::Error>;
    /// Capacity of the map that holds `prefix`'s family.
    fn capacity(&self, prefix: &IpNet) -> usize;
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
/// [`SyncError::OverCapacity`] when `desired` cannot fit: nothing is written
/// then. Individual write failures are reported in [`SyncReport::failures`].
pub fn apply<S: PrefixStore>(
    store: &mut S,
    current: &mut Table,
    desired: &Table,
) -> Result<SyncReport, SyncError> {
    check_capacity(store, desired)?;
    let diff = current.diff(desired);
    let mut report = SyncReport::default();

    // When the union of old and new does not fit, stale entries must go
    // first. That is only safe for the stale entries themselves: their
    // destinations are about to change behaviour anyway.
    let (v4_union, v6_union) = union_counts(current, &diff.upserts);
    let sample_v4: IpNet = "0.0.0.0/0".parse().expect("literal");
    let sample_v6: IpNet = "::/0".parse().expect("literal");
    let remove_first =
        v4_union > store.capacity(&sample_v4) || v6_union > store.capacity(&sample_v6);

    if remove_first {
        remove_stale(store, current, &diff.removals, &mut report);
    }
    for (prefix, action) in &diff.upserts {
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
    if !remove_first {
        remove_stale(store, current, &diff.removals, &mut report);
    }
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// A map double that records the order of writes and fails on request.
    #[derive(Default)]
    struct FakeStore {
        entries: BTreeMap<IpNet, Action>,
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
            self.entries.insert(prefix, action);
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
        assert_eq!(store.log, ["+10.0.0.0/9", "+10.128.0.0/9", "-10.0.0.0/8"]);
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
            Some(&Action::Masquerade)
        );
    }
}

//! The sync's ordering, capacity and failure rules, against a map double
//! that records every write.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// A map double that records the order of writes and fails on request.
#[derive(Default)]
struct FakeStore {
    /// Raw values, as the kernel holds them.
    entries: BTreeMap<IpNet, u8>,
    log: Vec<String>,
    /// For each publish, how many writes of `log` came before it.
    published_after: Vec<usize>,
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

    fn publish(&mut self) -> Result<ip_masq_lookup::PublishReport, ip_masq_lookup::LookupError> {
        self.published_after.push(self.log.len());
        Ok(ip_masq_lookup::PublishReport::default())
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
    // The directory is published once, after the last write.
    assert_eq!(store.published_after, [1, 3]);
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
    fn check(&mut self, write: &str) {
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
        self.check(&format!("+{prefix}"));
        Ok(())
    }
    fn remove(&mut self, prefix: IpNet) -> Result<(), std::io::Error> {
        self.inner.remove(prefix)?;
        self.check(&format!("-{prefix}"));
        Ok(())
    }
    fn capacity(&self, prefix: &IpNet) -> usize {
        self.inner.capacity(prefix)
    }
    fn publish(&mut self) -> Result<ip_masq_lookup::PublishReport, ip_masq_lookup::LookupError> {
        self.inner.publish()
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

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
//! The programs themselves decide with the range directory, which the
//! store publishes once the writes are done (`PrefixStore::publish`): it
//! goes from the old table to the new one chunk by chunk, each chunk in
//! one store, so the same holds for it.
//!
//! When the map cannot hold the old and the new entries side by side, only
//! stale entries whose removal changes no decision, or changes it to the new
//! table's, go first; if that does not make room the update is refused
//! whole, before any write.

use crate::kernel::datapath::PrefixStore;
use std::{collections::BTreeMap, ops::Bound};

use ip_masq_common::Action;
use ip_masq_lookup::{LookupError, PublishReport};
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
    /// What publishing the range directory wrote.
    pub published: PublishReport,
    /// Why part of the directory still decides as before, if so.
    pub unpublished: Option<LookupError>,
    /// How long the record's writes took, of the whole sync.
    pub write_time: std::time::Duration,
    /// How long publishing took, of the whole sync.
    pub publish_time: std::time::Duration,
}

impl SyncReport {
    /// Failed writes, the directory's counted as one.
    pub fn failed(&self) -> usize {
        self.failures.len() + usize::from(self.unpublished.is_some())
    }
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
    let writing = std::time::Instant::now();

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
    report.write_time = writing.elapsed();
    current.relabel_origins(desired);
    // The programs decide with the directory: it switches, chunk by chunk,
    // from the old table to what the maps hold now.
    let publishing = std::time::Instant::now();
    match store.publish() {
        Ok(published) => report.published = published,
        Err(err) => report.unpublished = Some(err),
    }
    report.publish_time = publishing.elapsed();
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

#[cfg(test)]
mod tests;

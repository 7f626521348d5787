//! The programs' per-CPU counters, read from their pinned maps.

use std::{collections::BTreeMap, path::Path};

use aya::maps::{MapData, PerCpuArray};
use ip_masq_common::{MAP_STATS, MAP_XT_BPF_STATS, STAT_SLOTS, StatCounter, XT_STAT_SLOTS};

use super::{Datapath, DatapathError};

/// The TC classifier's packet counters (`STATS`), summed over CPUs: every
/// packet of every flow it sees at a pod interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketStats {
    pub v4_seen: u64,
    pub v4_kept: u64,
    pub v6_seen: u64,
    pub v6_kept: u64,
}

/// The xt_bpf socket filters' counters (`XT_BPF_STATS`), summed over CPUs:
/// one per run, which is one per new connection that reaches the nat
/// chain's xt_bpf rule, by the rule's family and the filter's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    pub v4_keep_source: u64,
    pub v4_masquerade: u64,
    pub v6_keep_source: u64,
    pub v6_masquerade: u64,
}

impl Datapath {
    /// The classifier's per-CPU packet counters, summed.
    ///
    /// # Errors
    /// Fails when the stats map cannot be read.
    pub fn stats(&self) -> Result<PacketStats, DatapathError> {
        read_stats(&self.pin_dir)
    }

    /// The socket filters' per-CPU connection counters, summed.
    ///
    /// # Errors
    /// Fails when the stats map cannot be read.
    pub fn connection_stats(&self) -> Result<ConnectionStats, DatapathError> {
        read_connection_stats(&self.pin_dir)
    }
}

/// Each slot of the per-CPU counter map pinned as `pin_dir/name`, summed
/// over CPUs.
fn read_counters(
    pin_dir: &Path,
    name: &str,
    slots: u32,
) -> Result<BTreeMap<u32, u64>, DatapathError> {
    let stats: PerCpuArray<MapData, StatCounter> = PerCpuArray::try_from(
        aya::maps::Map::PerCpuArray(MapData::from_pin(pin_dir.join(name))?),
    )?;
    let mut sums = BTreeMap::new();
    for slot in 0..slots {
        let values = stats.get(&slot, 0)?;
        sums.insert(slot, values.iter().sum::<u64>());
    }
    Ok(sums)
}

/// Reads the classifier's pinned per-CPU packet counters.
///
/// # Errors
/// Fails when the stats map is not pinned under `pin_dir`.
pub(crate) fn read_stats(pin_dir: &Path) -> Result<PacketStats, DatapathError> {
    let sums = read_counters(pin_dir, MAP_STATS, STAT_SLOTS)?;
    Ok(PacketStats {
        v4_seen: sums[&ip_masq_common::STAT_V4_SEEN],
        v4_kept: sums[&ip_masq_common::STAT_V4_KEPT],
        v6_seen: sums[&ip_masq_common::STAT_V6_SEEN],
        v6_kept: sums[&ip_masq_common::STAT_V6_KEPT],
    })
}

/// Reads the socket filters' pinned per-CPU connection counters.
///
/// # Errors
/// Fails when the map is not pinned under `pin_dir` (an agent older than
/// these counters pinned the rest).
pub(crate) fn read_connection_stats(pin_dir: &Path) -> Result<ConnectionStats, DatapathError> {
    let sums = read_counters(pin_dir, MAP_XT_BPF_STATS, XT_STAT_SLOTS)?;
    Ok(ConnectionStats {
        v4_keep_source: sums[&ip_masq_common::XT_STAT_V4_KEEP_SOURCE],
        v4_masquerade: sums[&ip_masq_common::XT_STAT_V4_MASQUERADE],
        v6_keep_source: sums[&ip_masq_common::XT_STAT_V6_KEEP_SOURCE],
        v6_masquerade: sums[&ip_masq_common::XT_STAT_V6_MASQUERADE],
    })
}

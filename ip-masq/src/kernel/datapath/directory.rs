//! The range directory the programs decide with: the agent's copy of the
//! table, the [`Layout`] of each family's arrays, and the arrays themselves
//! ([`shared`](super::shared)) behind the [`Memory`] door.
//!
//! The LPM writes of a sync are only noted here; [`Directory::publish`]
//! then rewrites the chunks they touched, each in one step the programs
//! never see half done, so a destination is decided by the table before
//! the sync or by the one after it.

use std::collections::BTreeSet;

use aya::{Ebpf, maps::MapData};
use ip_masq_common::{
    Action, DIRECTORY_SLOTS, DirectoryEntry, MAP_DIRECTORY_V4, MAP_DIRECTORY_V6, MAP_RANGES_V4,
    MAP_RANGES_V6, V4_STARTS_PER_WORD, range_start_v4,
};
use ip_masq_lookup::{Family, FamilyTable, Layout, LookupError, Memory, PublishReport};
use ipnet::IpNet;

use super::{
    DatapathError,
    shared::{ReaderFence, SharedArray},
};

/// One family's arrays.
struct Arrays {
    directory: SharedArray,
    ranges: SharedArray,
}

/// The arrays of both families and the fence that waits for readers.
pub(crate) struct Mapped {
    v4: Arrays,
    v6: Arrays,
    fence: ReaderFence,
}

impl Mapped {
    fn arrays(&self, family: Family) -> &Arrays {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

impl Memory for Mapped {
    fn write_starts(&mut self, family: Family, base: u32, starts: &[u128]) {
        let ranges = &self.arrays(family).ranges;
        match family {
            Family::V4 => {
                // Four 16-bit starts to a word: a word shared with another
                // chunk's slots is rewritten with those slots unchanged.
                for (offset, &start) in (0u32..).zip(starts) {
                    let index = base + offset;
                    let word_index = (index / V4_STARTS_PER_WORD) as usize;
                    let shift = (index % V4_STARTS_PER_WORD) * 16;
                    let word = ranges.load(word_index);
                    let low = u64::from(start as u16);
                    ranges.store(word_index, (word & !(0xFFFF << shift)) | (low << shift));
                }
            }
            Family::V6 => {
                for (offset, &start) in (0usize..).zip(starts) {
                    let index = (base as usize + offset) * 2;
                    ranges.store(index, (start >> 64) as u64);
                    ranges.store(index + 1, start as u64);
                }
            }
        }
    }

    fn store_entry(&mut self, family: Family, chunk: u32, entry: DirectoryEntry) {
        self.arrays(family).directory.store(chunk as usize, entry.0);
    }

    fn load_entry(&self, family: Family, chunk: u32) -> DirectoryEntry {
        DirectoryEntry(self.arrays(family).directory.load(chunk as usize))
    }

    fn read_starts(&self, family: Family, chunk: u32, base: u32, len: u32) -> Vec<u128> {
        let ranges = &self.arrays(family).ranges;
        (base..base + len)
            .map(|index| match family {
                Family::V4 => {
                    let word = ranges.load((index / V4_STARTS_PER_WORD) as usize);
                    family.chunk_start(chunk) | u128::from(range_start_v4(word, index))
                }
                Family::V6 => {
                    let at = index as usize * 2;
                    u128::from(ranges.load(at)) << 64 | u128::from(ranges.load(at + 1))
                }
            })
            .collect()
    }

    fn wait_for_readers(&mut self) -> std::io::Result<()> {
        self.fence.wait()
    }
}

/// One family's table, layout and the chunks changed since the last publish.
struct FamilyDirectory {
    table: FamilyTable,
    layout: Layout,
    dirty: BTreeSet<u32>,
}

/// The directory of both families.
pub(crate) struct Directory {
    mapped: Mapped,
    v4: FamilyDirectory,
    v6: FamilyDirectory,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, DatapathError> {
    match ebpf.take_map(name).ok_or(DatapathError::Missing(name))? {
        aya::maps::Map::Array(data) => Ok(data),
        _ => Err(DatapathError::Missing(name)),
    }
}

fn shared(map: MapData, entries: u32, value_size: usize) -> Result<SharedArray, DatapathError> {
    SharedArray::map(map, entries, value_size).map_err(DatapathError::Directory)
}

/// Records in `tables` (IPv4, IPv6) that `prefix` now has `action`, or no
/// entry, and returns the chunks that changes.
fn record(
    tables: [&mut FamilyTable; 2],
    prefix: &IpNet,
    action: Option<Action>,
) -> std::ops::RangeInclusive<u32> {
    let (family, network, len) = family_of(prefix);
    let [v4, v6] = tables;
    let table = match family {
        Family::V4 => v4,
        Family::V6 => v6,
    };
    match action {
        Some(action) => table.insert(network, len, action == Action::KeepSource),
        None => table.remove(network, len),
    }
    table.chunks_of(network, len)
}

fn family_of(prefix: &IpNet) -> (Family, u128, u8) {
    match prefix {
        IpNet::V4(net) => (
            Family::V4,
            u128::from(u32::from(net.network())),
            net.prefix_len(),
        ),
        IpNet::V6(net) => (Family::V6, u128::from(net.network()), net.prefix_len()),
    }
}

impl Directory {
    /// Maps the arrays of a loaded object, adopts what they hold and
    /// rewrites every chunk that does not decide as `entries` (the LPM
    /// record) does: nothing after a restart, everything the record holds
    /// after an upgrade from an agent without the directory.
    ///
    /// # Errors
    /// When a map is missing or cannot be mapped, or the chunks cannot be
    /// published.
    pub(crate) fn load(
        ebpf: &mut Ebpf,
        range_slots: [u32; 2],
        entries: &[(IpNet, u8)],
    ) -> Result<(Self, PublishReport), DatapathError> {
        let [v4_slots, v6_slots] = range_slots;
        let mut mapped = Mapped {
            v4: Arrays {
                directory: shared(take(ebpf, MAP_DIRECTORY_V4)?, DIRECTORY_SLOTS, 8)?,
                ranges: shared(
                    take(ebpf, MAP_RANGES_V4)?,
                    ip_masq_common::range_words_v4(v4_slots),
                    8,
                )?,
            },
            v6: Arrays {
                directory: shared(take(ebpf, MAP_DIRECTORY_V6)?, DIRECTORY_SLOTS, 8)?,
                ranges: shared(take(ebpf, MAP_RANGES_V6)?, v6_slots, 16)?,
            },
            fence: ReaderFence::new().map_err(DatapathError::Directory)?,
        };
        debug_assert_eq!(mapped.v6.ranges.word_count(), v6_slots as usize * 2);
        let [mut table_v4, mut table_v6] = [Family::V4, Family::V6].map(FamilyTable::new);
        for (prefix, value) in entries {
            // A value that is no action was written by another tool; the
            // agent removes it from the record at start, and it decides
            // nothing meanwhile.
            if let Some(action) = Action::from_value(*value) {
                record([&mut table_v4, &mut table_v6], prefix, Some(action));
            }
        }
        let mut report = PublishReport::default();
        let mut adopt = |table: FamilyTable, slots: u32, mapped: &mut Mapped| {
            let mut layout =
                Layout::adopt(table.family(), slots, mapped).map_err(DatapathError::Publish)?;
            // A chunk that cannot be published keeps what it held and is
            // tried again at every publish (the first is the first sync),
            // whose failure is logged and keeps the agent from claiming
            // the config applied; starting anyway keeps the rest in force.
            let dirty = match layout.publish_all(&table, mapped) {
                Ok(published) => {
                    report.add(published);
                    BTreeSet::new()
                }
                Err((published, _)) => {
                    report.add(published);
                    (0..DIRECTORY_SLOTS).collect()
                }
            };
            Ok::<_, DatapathError>(FamilyDirectory {
                table,
                layout,
                dirty,
            })
        };
        let v4 = adopt(table_v4, v4_slots, &mut mapped)?;
        let v6 = adopt(table_v6, v6_slots, &mut mapped)?;
        Ok((Self { mapped, v4, v6 }, report))
    }

    /// Notes that the LPM record now holds `prefix` with `action`, or no
    /// longer holds it.
    pub(crate) fn note(&mut self, prefix: &IpNet, action: Option<Action>) {
        let chunks = record([&mut self.v4.table, &mut self.v6.table], prefix, action);
        let directory = match prefix {
            IpNet::V4(_) => &mut self.v4,
            IpNet::V6(_) => &mut self.v6,
        };
        directory.dirty.extend(chunks);
    }

    /// Rewrites the chunks changed since the last publish. A chunk that
    /// fails stays noted and is tried again at the next publish.
    ///
    /// # Errors
    /// The first chunk that could not be published.
    pub(crate) fn publish(&mut self) -> Result<PublishReport, LookupError> {
        let mut report = PublishReport::default();
        let mut first_error = None;
        for directory in [&mut self.v4, &mut self.v6] {
            let chunks = std::mem::take(&mut directory.dirty);
            match directory.layout.publish(
                &directory.table,
                chunks.iter().copied(),
                &mut self.mapped,
            ) {
                Ok(done) => report.add(done),
                Err((done, err)) => {
                    report.add(done);
                    // Chunks already right are skipped on the retry.
                    directory.dirty = chunks;
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            None => Ok(report),
            Some(err) => Err(err),
        }
    }

    /// Finds chunks someone changed in the arrays behind the agent's back
    /// and rewrites them; returns how many there were.
    ///
    /// # Errors
    /// A chunk that could not be rewritten; it is tried again at the next
    /// publish.
    pub(crate) fn repair(&mut self) -> Result<usize, LookupError> {
        let mut found = 0;
        for directory in [&mut self.v4, &mut self.v6] {
            let drifted = directory.layout.drifted(&self.mapped);
            found += drifted.len();
            directory.dirty.extend(drifted);
        }
        self.publish()?;
        Ok(found)
    }

    /// The directory's maps by name, for re-pinning.
    pub(crate) fn maps(&self) -> [(&'static str, &MapData); 4] {
        let m = &self.mapped;
        [
            (MAP_DIRECTORY_V4, m.v4.directory.map_data()),
            (MAP_RANGES_V4, m.v4.ranges.map_data()),
            (MAP_DIRECTORY_V6, m.v6.directory.map_data()),
            (MAP_RANGES_V6, m.v6.ranges.map_data()),
        ]
    }
}

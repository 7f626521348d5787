//! Where each chunk's ranges sit in the range array, and the publishing of
//! chunks through the [`Memory`] door.
//!
//! Readers (the eBPF programs) load a chunk's directory entry once and then
//! read only the ranges it names. So a chunk is changed without a reader
//! ever seeing it half done:
//! 1. its new ranges are written to free space no entry names;
//! 2. its entry is replaced by one aligned 64-bit store;
//! 3. its old ranges are retired, and become free space again only after
//!    [`Memory::wait_for_readers`], by which time no program that read the
//!    old entry is still running.
//!
//! A destination is therefore decided by the old chunk or by the new one,
//! never by a mixture, and one decided alike by both never sees the other
//! decision.

use std::collections::BTreeMap;

use ip_masq_common::{DIRECTORY_SLOTS, DirectoryEntry, MAX_CHUNK_RANGES_V6, SEARCH_STEPS_V4};
use thiserror::Error;

use crate::{Family, FamilyTable, Ranges};

/// The kernel arrays as the layout writes them: a door, so that the
/// publishing order is unit-tested against a fake.
pub trait Memory {
    /// Writes `starts` at range slots `base..base + starts.len()`, which no
    /// directory entry names. Neighbouring slots keep their values.
    fn write_starts(&mut self, family: Family, base: u32, starts: &[u128]);
    /// Replaces the entry of `chunk` in one atomic 64-bit store, after the
    /// writes before it.
    fn store_entry(&mut self, family: Family, chunk: u32, entry: DirectoryEntry);
    /// The entry of `chunk` as the arrays hold it.
    fn load_entry(&self, family: Family, chunk: u32) -> DirectoryEntry;
    /// The starts of `chunk` at slots `base..base + len`, as whole
    /// addresses (IPv4 slots hold only the bits below the chunk's).
    fn read_starts(&self, family: Family, chunk: u32, base: u32, len: u32) -> Vec<u128>;
    /// Returns once no program that could have read the arrays before the
    /// call is still running.
    ///
    /// # Errors
    /// The kernel's error; then retired space stays retired.
    fn wait_for_readers(&mut self) -> std::io::Result<()>;
}

/// Why a chunk could not be published; it keeps its old ranges.
#[derive(Debug, Error)]
pub enum LookupError {
    #[error(
        "{family} range array has no room for {needed} more ranges (it holds {capacity}; raise --max-cidrs)"
    )]
    NoRoom {
        family: &'static str,
        needed: u32,
        capacity: u32,
    },
    #[error(
        "{family} chunk {chunk} would need {ranges} ranges, more than the programs' search settles ({limit})"
    )]
    TooFine {
        family: &'static str,
        chunk: u32,
        ranges: u32,
        limit: u32,
    },
    #[error("waiting for the programs to leave the old ranges failed: {0}")]
    Wait(#[source] std::io::Error),
}

/// What a publish did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PublishReport {
    /// Chunks whose entry was replaced.
    pub chunks_written: usize,
    /// Range starts written.
    pub starts_written: usize,
    /// Waits for readers (each about one RCU grace period).
    pub waits: usize,
}

impl PublishReport {
    /// Adds what another publish did.
    pub fn add(&mut self, other: Self) {
        self.chunks_written += other.chunks_written;
        self.starts_written += other.starts_written;
        self.waits += other.waits;
    }
}

/// One family's directory as the arrays hold it, and their free space.
#[derive(Debug)]
pub struct Layout {
    family: Family,
    capacity: u32,
    /// The entry of every chunk, as stored.
    entries: Vec<DirectoryEntry>,
    /// The starts of every chunk whose entry names ranges.
    placed: BTreeMap<u32, Vec<u128>>,
    /// Free extents: first slot to length, never touching each other.
    free: BTreeMap<u32, u32>,
    /// Extents no entry names any more that a reader may still be reading.
    retired: Vec<(u32, u32)>,
    /// The most ranges a chunk may have: what the programs' fixed number
    /// of search steps settles.
    chunk_limit: u32,
}

impl Layout {
    /// The layout of fresh arrays: every entry zero (masquerade), every
    /// range slot free.
    pub fn fresh(family: Family, capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self {
            family,
            capacity,
            entries: vec![DirectoryEntry::default(); DIRECTORY_SLOTS as usize],
            placed: BTreeMap::new(),
            free,
            retired: Vec::new(),
            chunk_limit: match family {
                Family::V4 => 1 << SEARCH_STEPS_V4,
                Family::V6 => MAX_CHUNK_RANGES_V6,
            },
        }
    }

    /// The same layout with a lower limit of ranges per chunk, to test the
    /// refusal without millions of prefixes.
    #[must_use]
    pub fn with_chunk_limit(mut self, limit: u32) -> Self {
        self.chunk_limit = self.chunk_limit.min(limit);
        self
    }

    /// The layout of arrays an earlier agent wrote: entries and the ranges
    /// they name are read back, everything else is free once the readers of
    /// that agent's retired ranges are gone. An entry naming slots outside
    /// the array or overlapping another is dropped from the record, so that
    /// [`Layout::publish`] rewrites its chunk.
    ///
    /// # Errors
    /// When the wait for readers fails.
    pub fn adopt(
        family: Family,
        capacity: u32,
        memory: &mut impl Memory,
    ) -> Result<Self, LookupError> {
        let mut layout = Self::fresh(family, capacity);
        let mut used: BTreeMap<u32, u32> = BTreeMap::new();
        for chunk in 0..DIRECTORY_SLOTS {
            let entry = memory.load_entry(family, chunk);
            if entry.is_uniform() {
                layout.entries[chunk as usize] = entry;
                continue;
            }
            let (base, len) = (entry.base(), entry.ranges());
            let fits = base.checked_add(len).is_some_and(|end| end <= capacity);
            let overlaps = used
                .range(..base.saturating_add(len))
                .next_back()
                .is_some_and(|(&start, &other_len)| start + other_len > base);
            if !fits || overlaps {
                // Unknown shape: recorded as a junk entry that matches no
                // table, so the next publish replaces it.
                layout.entries[chunk as usize] = DirectoryEntry(u64::MAX);
                continue;
            }
            used.insert(base, len);
            layout.entries[chunk as usize] = entry;
            layout
                .placed
                .insert(chunk, memory.read_starts(family, chunk, base, len));
        }
        layout.free = complement(&used, capacity);
        memory.wait_for_readers().map_err(LookupError::Wait)?;
        Ok(layout)
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Range slots the array holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Range slots named by entries now.
    pub fn slots_in_use(&self) -> u32 {
        self.placed
            .values()
            .map(|starts| u32::try_from(starts.len()).unwrap_or(u32::MAX))
            .sum()
    }

    /// Whether `address` keeps its source, decided from the layout the way
    /// the programs decide it.
    pub fn decide(&self, address: u128) -> bool {
        let chunk = self.family.chunk_of(address);
        let entry = self.entries[chunk as usize];
        if entry.is_uniform() {
            return entry.first_keeps();
        }
        let starts = self.placed.get(&chunk).map_or(&[][..], Vec::as_slice);
        let position = starts
            .partition_point(|&start| start <= address)
            .saturating_sub(1);
        entry.keeps(u32::try_from(position).unwrap_or(u32::MAX))
    }

    /// The chunks whose entry or ranges in `memory` are not what this
    /// layout wrote (someone wrote into the arrays), now recorded as
    /// unknown so that the next publish rewrites them into fresh space.
    pub fn drifted(&mut self, memory: &impl Memory) -> Vec<u32> {
        let mut drifted = Vec::new();
        for chunk in 0..DIRECTORY_SLOTS {
            let recorded = self.entries[chunk as usize];
            let found = memory.load_entry(self.family, chunk);
            let same = if recorded.is_uniform() {
                found.is_uniform() && found.first_keeps() == recorded.first_keeps()
            } else {
                found == recorded
                    && self.placed.get(&chunk).is_some_and(|starts| {
                        *starts
                            == memory.read_starts(
                                self.family,
                                chunk,
                                recorded.base(),
                                recorded.ranges(),
                            )
                    })
            };
            if !same {
                drifted.push(chunk);
            }
        }
        for &chunk in &drifted {
            let recorded =
                std::mem::replace(&mut self.entries[chunk as usize], DirectoryEntry(u64::MAX));
            if self.placed.remove(&chunk).is_some() {
                self.retired.push((recorded.base(), recorded.ranges()));
            }
        }
        drifted
    }

    /// Whether `chunk` holds exactly `ranges`.
    fn holds(&self, chunk: u32, ranges: &Ranges) -> bool {
        let entry = self.entries[chunk as usize];
        if ranges.starts.len() <= 1 {
            return entry.is_uniform() && entry.first_keeps() == ranges.first_keeps;
        }
        !entry.is_uniform()
            && entry.first_keeps() == ranges.first_keeps
            && self.placed.get(&chunk) == Some(&ranges.starts)
    }

    /// Brings `chunks` to what `table` decides, writing only those that
    /// differ. Each chunk is published on its own (see the module docs);
    /// one that finds no room keeps its old ranges, the error says so, and
    /// the chunks after it are still published.
    ///
    /// # Errors
    /// The first chunk that could not be published, with what was written.
    pub fn publish(
        &mut self,
        table: &FamilyTable,
        chunks: impl IntoIterator<Item = u32>,
        memory: &mut impl Memory,
    ) -> Result<PublishReport, (PublishReport, LookupError)> {
        let each = chunks
            .into_iter()
            .map(|chunk| (chunk, table.chunk_ranges(chunk)));
        self.publish_each(each, memory)
    }

    /// [`Layout::publish`] over every chunk, from one pass over the table.
    ///
    /// # Errors
    /// As [`Layout::publish`].
    pub fn publish_all(
        &mut self,
        table: &FamilyTable,
        memory: &mut impl Memory,
    ) -> Result<PublishReport, (PublishReport, LookupError)> {
        let each = (0..DIRECTORY_SLOTS).zip(table.all_chunk_ranges());
        self.publish_each(each, memory)
    }

    /// Publishes each chunk on its own; the first error is returned once
    /// all were tried.
    fn publish_each(
        &mut self,
        chunks: impl Iterator<Item = (u32, Ranges)>,
        memory: &mut impl Memory,
    ) -> Result<PublishReport, (PublishReport, LookupError)> {
        let mut report = PublishReport::default();
        let mut first_error = None;
        for (chunk, ranges) in chunks {
            match self.publish_chunk(chunk, &ranges, memory) {
                Ok(done) => report.add(done),
                Err((done, err)) => {
                    report.add(done);
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            None => Ok(report),
            Some(err) => Err((report, err)),
        }
    }

    fn publish_chunk(
        &mut self,
        chunk: u32,
        ranges: &Ranges,
        memory: &mut impl Memory,
    ) -> Result<PublishReport, (PublishReport, LookupError)> {
        let mut report = PublishReport::default();
        if self.holds(chunk, ranges) {
            return Ok(report);
        }
        let entry = if ranges.starts.len() <= 1 {
            DirectoryEntry::uniform(ranges.first_keeps)
        } else {
            let len = u32::try_from(ranges.starts.len()).unwrap_or(u32::MAX);
            if len > self.chunk_limit {
                let err = LookupError::TooFine {
                    family: self.family.name(),
                    chunk,
                    ranges: len,
                    limit: self.chunk_limit,
                };
                return Err((report, err));
            }
            let base = self
                .allocate(len, memory, &mut report)
                .map_err(|err| (report, err))?;
            memory.write_starts(self.family, base, &ranges.starts);
            report.starts_written += ranges.starts.len();
            DirectoryEntry::new(base, len, ranges.first_keeps)
        };
        memory.store_entry(self.family, chunk, entry);
        report.chunks_written += 1;
        let old = std::mem::replace(&mut self.entries[chunk as usize], entry);
        let old_starts = if entry.is_uniform() {
            self.placed.remove(&chunk)
        } else {
            self.placed.insert(chunk, ranges.starts.clone())
        };
        if old_starts.is_some() && !old.is_uniform() {
            self.retired.push((old.base(), old.ranges()));
        }
        Ok(report)
    }

    /// A free extent of `len` slots, first fit; retired space is reclaimed
    /// (after a wait for readers) only when free space has none.
    fn allocate(
        &mut self,
        len: u32,
        memory: &mut impl Memory,
        report: &mut PublishReport,
    ) -> Result<u32, LookupError> {
        if let Some(base) = self.take_free(len) {
            return Ok(base);
        }
        if !self.retired.is_empty() {
            memory.wait_for_readers().map_err(LookupError::Wait)?;
            report.waits += 1;
            for (base, retired_len) in std::mem::take(&mut self.retired) {
                self.release(base, retired_len);
            }
            if let Some(base) = self.take_free(len) {
                return Ok(base);
            }
        }
        Err(LookupError::NoRoom {
            family: self.family.name(),
            needed: len,
            capacity: self.capacity,
        })
    }

    fn take_free(&mut self, len: u32) -> Option<u32> {
        let (&start, &free_len) = self.free.iter().find(|&(_, &free_len)| free_len >= len)?;
        self.free.remove(&start);
        if free_len > len {
            self.free.insert(start + len, free_len - len);
        }
        Some(start)
    }

    /// Returns an extent to free space, merged with its neighbours.
    fn release(&mut self, base: u32, len: u32) {
        let (mut start, mut end) = (base, base + len);
        if let Some((&before, &before_len)) = self.free.range(..start).next_back()
            && before + before_len == start
        {
            self.free.remove(&before);
            start = before;
        }
        if let Some(&after_len) = self.free.get(&end) {
            self.free.remove(&end);
            end += after_len;
        }
        self.free.insert(start, end - start);
    }
}

/// The extents of `0..capacity` that `used` leaves free.
fn complement(used: &BTreeMap<u32, u32>, capacity: u32) -> BTreeMap<u32, u32> {
    let mut free = BTreeMap::new();
    let mut cursor = 0;
    for (&start, &len) in used {
        if start > cursor {
            free.insert(cursor, start - cursor);
        }
        cursor = cursor.max(start + len);
    }
    if capacity > cursor {
        free.insert(cursor, capacity - cursor);
    }
    free
}

#[cfg(test)]
mod tests;

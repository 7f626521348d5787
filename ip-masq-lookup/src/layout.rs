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
//!
//! Space never runs out for a table the arrays are sized for. The range
//! array is two halves, each big enough for any whole table
//! ([`ip_masq_common::range_capacity`]); ranges are allocated in one
//! half, first fit. When that half has no run long enough (old and new
//! ranges of one chunk side by side, or gaps left by earlier updates), the
//! layout *flips*: after a wait for readers the other half is free, and
//! every chunk of the table is written into it from its start, each chunk
//! switched on its own as above. The half left behind is free again after
//! the next wait.

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
    /// Times the whole table was moved to the other half of the range array.
    pub flips: usize,
}

impl PublishReport {
    /// Adds what another publish did.
    pub fn add(&mut self, other: Self) {
        self.chunks_written += other.chunks_written;
        self.starts_written += other.starts_written;
        self.waits += other.waits;
        self.flips += other.flips;
    }
}

/// What publishing several chunks did: all of it, and the first error.
#[derive(Default)]
struct Outcome {
    report: PublishReport,
    first_error: Option<LookupError>,
}

impl Outcome {
    fn add(&mut self, done: Result<PublishReport, (PublishReport, LookupError)>) {
        match done {
            Ok(done) => self.report.add(done),
            Err((done, err)) => {
                self.report.add(done);
                self.first_error.get_or_insert(err);
            }
        }
    }

    fn finish(self) -> Result<PublishReport, (PublishReport, LookupError)> {
        match self.first_error {
            None => Ok(self.report),
            Some(err) => Err((self.report, err)),
        }
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
    /// Free extents of each half: first slot to length, never touching
    /// each other, never crossing into the other half.
    free: [BTreeMap<u32, u32>; 2],
    /// The half new ranges are allocated in.
    current: usize,
    /// Extents no entry names any more that a reader may still be reading.
    retired: Vec<(u32, u32)>,
    /// Chunks whose ranges in the arrays someone changed: rewritten at the
    /// next publish whatever the table says.
    forced: std::collections::BTreeSet<u32>,
    /// The most ranges a chunk may have: what the programs' fixed number
    /// of search steps settles.
    chunk_limit: u32,
}

impl Layout {
    /// The layout of fresh arrays: every entry zero (masquerade), every
    /// range slot free.
    pub fn fresh(family: Family, capacity: u32) -> Self {
        Self {
            family,
            capacity,
            entries: vec![DirectoryEntry::default(); DIRECTORY_SLOTS as usize],
            placed: BTreeMap::new(),
            free: [0, 1].map(|half| complement(&BTreeMap::new(), half_range(capacity, half))),
            current: 0,
            retired: Vec::new(),
            forced: std::collections::BTreeSet::new(),
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
        layout.free = [0, 1].map(|half| complement(&used, half_range(capacity, half)));
        // Allocate where an interrupted flip was going: the half whose
        // ranges are one run from its start; else the fuller half.
        let in_use = |half: usize| {
            let range = half_range(capacity, half);
            used.range(range.clone())
                .map(|(_, &len)| u64::from(len))
                .sum::<u64>()
        };
        let packed = |half: usize| {
            let range = half_range(capacity, half);
            let free = &layout.free[half];
            in_use(half) > 0 && free.len() == 1 && free.keys().next() != Some(&range.start)
        };
        layout.current = match (packed(0), packed(1)) {
            (true, false) => 0,
            (false, true) => 1,
            _ => usize::from(in_use(1) > in_use(0)),
        };
        memory.wait_for_readers().map_err(LookupError::Wait)?;
        Ok(layout)
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
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
        // Their recorded ranges stay allocated until the rewrite switches
        // the entry away from them, as for any update.
        self.forced.extend(drifted.iter().copied());
        drifted
    }

    /// Whether `chunk` holds exactly `ranges`.
    fn holds(&self, chunk: u32, ranges: &Ranges) -> bool {
        if self.forced.contains(&chunk) {
            return false;
        }
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
        self.publish_each(table, each, memory)
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
        self.publish_each(table, each, memory)
    }

    /// Publishes each chunk on its own; the first error is returned once
    /// all were tried. A chunk that finds no run long enough in the
    /// current half flips the layout, which publishes the whole table.
    fn publish_each(
        &mut self,
        table: &FamilyTable,
        chunks: impl Iterator<Item = (u32, Ranges)>,
        memory: &mut impl Memory,
    ) -> Result<PublishReport, (PublishReport, LookupError)> {
        let mut outcome = Outcome::default();
        let mut flipped = false;
        for (chunk, ranges) in chunks {
            let mut done = self.publish_chunk(chunk, &ranges, false, memory);
            if !flipped && matches!(done, Err((_, LookupError::NoRoom { .. }))) {
                flipped = true;
                outcome.report.flips += 1;
                done = self.flip(table, memory);
            }
            outcome.add(done);
        }
        outcome.finish()
    }

    /// Moves the whole table into the other half: after a wait for
    /// readers that half holds nothing a reader can still see (after an
    /// interrupted flip, only the run it wrote from its start), and each
    /// chunk is written there and switched on its own.
    fn flip(
        &mut self,
        table: &FamilyTable,
        memory: &mut impl Memory,
    ) -> Result<PublishReport, (PublishReport, LookupError)> {
        let mut report = PublishReport::default();
        memory
            .wait_for_readers()
            .map_err(|err| (report, LookupError::Wait(err)))?;
        report.waits += 1;
        for (base, len) in std::mem::take(&mut self.retired) {
            self.release(base, len);
        }
        self.current = 1 - self.current;
        let mut outcome = Outcome {
            report,
            first_error: None,
        };
        for (chunk, ranges) in (0..DIRECTORY_SLOTS).zip(table.all_chunk_ranges()) {
            outcome.add(self.publish_chunk(chunk, &ranges, true, memory));
        }
        outcome.finish()
    }

    /// Publishes one chunk; with `in_current_half`, a chunk whose ranges
    /// lie in the other half is moved even when they are right.
    fn publish_chunk(
        &mut self,
        chunk: u32,
        ranges: &Ranges,
        in_current_half: bool,
        memory: &mut impl Memory,
    ) -> Result<PublishReport, (PublishReport, LookupError)> {
        let mut report = PublishReport::default();
        let entry = self.entries[chunk as usize];
        let misplaced = in_current_half
            && !entry.is_uniform()
            && !half_range(self.capacity, self.current).contains(&entry.base());
        if !misplaced && self.holds(chunk, ranges) {
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
        self.forced.remove(&chunk);
        Ok(report)
    }

    /// A free extent of `len` slots in the current half, first fit;
    /// retired space is reclaimed (after a wait for readers) only when the
    /// half has none.
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
        let free = &mut self.free[self.current];
        let (&start, &free_len) = free.iter().find(|&(_, &free_len)| free_len >= len)?;
        free.remove(&start);
        if free_len > len {
            free.insert(start + len, free_len - len);
        }
        Some(start)
    }

    /// Returns an extent to its half's free space, merged with its
    /// neighbours there.
    fn release(&mut self, base: u32, len: u32) {
        let half = usize::from(!half_range(self.capacity, 0).contains(&base));
        let free = &mut self.free[half];
        let (mut start, mut end) = (base, base + len);
        if let Some((&before, &before_len)) = free.range(..start).next_back()
            && before + before_len == start
        {
            free.remove(&before);
            start = before;
        }
        if let Some(&after_len) = free.get(&end) {
            free.remove(&end);
            end += after_len;
        }
        free.insert(start, end - start);
    }
}

/// The slots of one half of a range array of `capacity` slots.
fn half_range(capacity: u32, half: usize) -> std::ops::Range<u32> {
    let half_len = capacity / 2;
    if half == 0 {
        0..half_len
    } else {
        half_len..half_len * 2
    }
}

/// The extents of `range` that `used` leaves free; an extent that crosses
/// the range's edge (never written by this layout, which keeps each half
/// apart) counts as used where it overlaps.
fn complement(used: &BTreeMap<u32, u32>, range: std::ops::Range<u32>) -> BTreeMap<u32, u32> {
    let mut free = BTreeMap::new();
    let mut cursor = range.start;
    for (&start, &len) in used {
        let end = start.saturating_add(len).min(range.end);
        let start = start.max(range.start);
        if start >= end {
            continue;
        }
        if start > cursor {
            free.insert(cursor, start - cursor);
        }
        cursor = cursor.max(end);
    }
    if range.end > cursor {
        free.insert(cursor, range.end - cursor);
    }
    free
}

#[cfg(test)]
mod tests;

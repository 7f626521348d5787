//! The directory against the longest-prefix answer, and the publishing
//! order against a fake of the kernel arrays that checks every write.

use ip_masq_common::{DIRECTORY_SLOTS, DirectoryEntry, SEARCH_STEPS_V4, SEARCH_STEPS_V6};

use rand::{Rng as _, RngCore as _, SeedableRng as _, rngs::StdRng};

use super::*;

fn host_mask(family: Family, len: u8) -> u128 {
    let width = family.width();
    let all = u128::MAX >> (128 - width);
    if u32::from(len) >= width {
        0
    } else {
        all >> u32::from(len)
    }
}

/// A random table: nested ranges (prefixes drawn inside a few /8-ish
/// blocks so that they nest), both actions, /0 and full-length ones.
fn random_table(family: Family, rng: &mut StdRng, count: usize) -> FamilyTable {
    let width = family.width();
    let mut table = FamilyTable::new(family);
    let bases: Vec<u128> = (0..4)
        .map(|_| {
            let high = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
            high >> (128 - width)
        })
        .collect();
    for _ in 0..count {
        let len = match rng.random_range(0..10) {
            0 => u8::try_from(rng.random_range(0..u64::from(width) / 2 + 1)).unwrap(),
            1 => u8::try_from(width).unwrap(),
            _ => u8::try_from(8 + rng.random_range(0..u64::from(width) - 8 + 1)).unwrap(),
        };
        let base = bases[rng.random_range(0..4usize)];
        let noise =
            (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) >> (128 - width);
        // Keep the top bits of the base so that prefixes nest.
        let keep_bits =
            (width / 4) + u32::try_from(rng.random_range(0..u64::from(width) / 2)).unwrap();
        let spread = if keep_bits >= width {
            0
        } else {
            (u128::MAX >> (128 - width)) >> keep_bits
        };
        let address = (base & !spread) | (noise & spread);
        let network = address & !host_mask(family, len);
        table.insert(network, len, rng.random_range(0..3) != 0);
    }
    if rng.random_range(0..2) == 0 {
        table.insert(0, 0, rng.random_range(0..2) == 0);
    }
    table
}

/// Probes: edges of every prefix and random addresses near them.
fn probes(table: &FamilyTable, rng: &mut StdRng) -> Vec<u128> {
    let family = table.family();
    let all = u128::MAX >> (128 - family.width());
    let mut out = vec![0, all];
    for (network, len, _) in table.prefixes() {
        let last = network | host_mask(family, len);
        out.extend([
            network,
            last,
            network.wrapping_sub(1) & all,
            last.wrapping_add(1) & all,
        ]);
        out.push(network | (u128::from(rng.next_u64()) & host_mask(family, len)));
    }
    out
}

/// A check run after every entry store, on the arrays as readers see them.
type StoreCheck = Box<dyn FnMut(&FakeMemory)>;

/// The kernel arrays, checking each write against what readers may hold.
struct FakeMemory {
    family: Family,
    entries: Vec<DirectoryEntry>,
    starts: Vec<u128>,
    /// Extents named by an entry replaced since the last wait.
    guarded: Vec<(u32, u32)>,
    waits: usize,
    /// Called after every entry store, with the arrays as readers see them.
    after_store: Option<StoreCheck>,
}

impl FakeMemory {
    fn new(family: Family, capacity: u32) -> Self {
        Self {
            family,
            entries: vec![DirectoryEntry::default(); DIRECTORY_SLOTS as usize],
            starts: vec![0; capacity as usize],
            guarded: Vec::new(),
            waits: 0,
            after_store: None,
        }
    }

    /// The programs' lookup, step for step: entry, then the halving search.
    fn decide(&self, address: u128) -> bool {
        let entry = self.entries[self.family.chunk_of(address) as usize];
        if entry.is_uniform() {
            return entry.first_keeps();
        }
        let (mut low, mut remaining) = (0u32, entry.ranges());
        let steps = match self.family {
            Family::V4 => SEARCH_STEPS_V4,
            Family::V6 => SEARCH_STEPS_V6,
        };
        for _ in 0..steps {
            if remaining <= 1 {
                break;
            }
            let half = remaining / 2;
            let start = self.starts[(entry.base() + low + half) as usize];
            // IPv4 keeps only the low 16 bits of a start.
            let at_or_below = match self.family {
                Family::V4 => (start as u16) <= address as u16,
                Family::V6 => start <= address,
            };
            if at_or_below {
                low += half;
            }
            remaining -= half;
        }
        entry.keeps(low)
    }
}

fn overlaps((a, a_len): (u32, u32), (b, b_len): (u32, u32)) -> bool {
    a < b + b_len && b < a + a_len
}

impl Memory for FakeMemory {
    fn write_starts(&mut self, family: Family, base: u32, starts: &[u128]) {
        assert_eq!(family, self.family);
        let extent = (base, u32::try_from(starts.len()).unwrap());
        for entry in &self.entries {
            if !entry.is_uniform() {
                assert!(
                    !overlaps(extent, (entry.base(), entry.ranges())),
                    "wrote over live ranges"
                );
            }
        }
        for &guarded in &self.guarded {
            assert!(
                !overlaps(extent, guarded),
                "wrote over ranges a reader may hold"
            );
        }
        for (slot, &start) in self.starts[base as usize..].iter_mut().zip(starts) {
            *slot = match family {
                Family::V4 => start & 0xFFFF,
                Family::V6 => start,
            };
        }
    }

    fn store_entry(&mut self, family: Family, chunk: u32, entry: DirectoryEntry) {
        assert_eq!(family, self.family);
        let old = std::mem::replace(&mut self.entries[chunk as usize], entry);
        if !old.is_uniform() {
            self.guarded.push((old.base(), old.ranges()));
        }
        if let Some(mut check) = self.after_store.take() {
            check(self);
            self.after_store = Some(check);
        }
    }

    fn load_entry(&self, _family: Family, chunk: u32) -> DirectoryEntry {
        self.entries[chunk as usize]
    }

    fn read_starts(&self, family: Family, chunk: u32, base: u32, len: u32) -> Vec<u128> {
        self.starts[base as usize..(base + len) as usize]
            .iter()
            .map(|&start| match family {
                Family::V4 => family.chunk_start(chunk) | start,
                Family::V6 => start,
            })
            .collect()
    }

    fn wait_for_readers(&mut self) -> std::io::Result<()> {
        self.guarded.clear();
        self.waits += 1;
        Ok(())
    }
}

/// From now on, after every entry store, each of `probes` must be decided
/// as `old` or as `new` decides it.
fn check_old_or_new(
    memory: &mut FakeMemory,
    old: &FamilyTable,
    new: &FamilyTable,
    probes: Vec<u128>,
) {
    let expected: Vec<(u128, bool, bool)> = probes
        .into_iter()
        .map(|address| {
            (
                address,
                old.longest_match(address),
                new.longest_match(address),
            )
        })
        .collect();
    memory.after_store = Some(Box::new(move |memory: &FakeMemory| {
        for &(address, before, after) in &expected {
            let seen = memory.decide(address);
            assert!(
                seen == before || seen == after,
                "{address:#x} decided neither way"
            );
        }
    }));
}

fn touched_chunks(tables: &[&FamilyTable]) -> Vec<u32> {
    let mut chunks: Vec<u32> = tables
        .iter()
        .flat_map(|table| {
            table
                .prefixes()
                .flat_map(|(network, len, _)| table.chunks_of(network, len))
                .collect::<Vec<_>>()
        })
        .collect();
    chunks.sort_unstable();
    chunks.dedup();
    chunks
}

#[test]
fn chunk_ranges_give_the_longest_prefix_answer() {
    let mut rng = StdRng::seed_from_u64(7);
    for family in [Family::V4, Family::V6] {
        for round in 0..40 {
            let table = random_table(family, &mut rng, 1 + round * 7);
            for address in probes(&table, &mut rng) {
                let ranges = table.chunk_ranges(family.chunk_of(address));
                assert_eq!(
                    ranges.decide(address),
                    table.longest_match(address),
                    "{family:?} {address:#x}"
                );
                for pair in ranges.starts.windows(2) {
                    assert!(pair[0] < pair[1], "sorted, no empty range");
                }
            }
        }
    }
}

#[test]
fn one_pass_over_every_chunk_agrees_with_each_chunk_alone() {
    let mut rng = StdRng::seed_from_u64(11);
    for family in [Family::V4, Family::V6] {
        let table = random_table(family, &mut rng, 300);
        let all = table.all_chunk_ranges();
        for chunk in touched_chunks(&[&table])
            .into_iter()
            .chain([0, 1, DIRECTORY_SLOTS - 1])
        {
            assert_eq!(
                all[chunk as usize],
                table.chunk_ranges(chunk),
                "chunk {chunk}"
            );
        }
    }
}

#[test]
fn a_published_directory_decides_as_the_table_does() {
    let mut rng = StdRng::seed_from_u64(13);
    for family in [Family::V4, Family::V6] {
        let mut memory = FakeMemory::new(family, 20_000);
        let mut layout = Layout::fresh(family, 20_000);
        for round in 0..20 {
            let table = random_table(family, &mut rng, 50 + round * 20);
            layout.publish_all(&table, &mut memory).expect("room");
            for address in probes(&table, &mut rng) {
                let expected = table.longest_match(address);
                assert_eq!(layout.decide(address), expected, "{family:?} {address:#x}");
                assert_eq!(memory.decide(address), expected, "{family:?} {address:#x}");
            }
        }
    }
}

#[test]
fn an_update_shows_each_destination_the_old_or_the_new_decision_only() {
    let mut rng = StdRng::seed_from_u64(17);
    for family in [Family::V4, Family::V6] {
        // Arrays sized for 200 prefixes, as the agent sizes them for
        // --max-cidrs: reclaiming and flips are needed on the way.
        let capacity = ip_masq_common::range_capacity(200);
        let mut memory = FakeMemory::new(family, capacity);
        let mut layout = Layout::fresh(family, capacity);
        let mut old = random_table(family, &mut rng, 200);
        layout.publish_all(&old, &mut memory).expect("room");
        for _ in 0..10 {
            let new = random_table(family, &mut rng, 200);
            let mut all_probes = probes(&old, &mut rng);
            all_probes.extend(probes(&new, &mut rng));
            check_old_or_new(&mut memory, &old, &new, all_probes);
            let chunks = touched_chunks(&[&old, &new]);
            layout.publish(&new, chunks, &mut memory).expect("room");
            memory.after_store = None;
            for address in probes(&new, &mut rng) {
                assert_eq!(memory.decide(address), new.longest_match(address));
            }
            old = new;
        }
        assert!(memory.waits > 0, "space was reclaimed on the way");
    }
}

/// 10.0.0.0/8 kept with 10.1.2.0/24 masqueraded, published on fresh arrays.
fn ten_with_an_exception() -> (FakeMemory, Layout, FamilyTable) {
    let family = Family::V4;
    let mut memory = FakeMemory::new(family, 1_000);
    let mut layout = Layout::fresh(family, 1_000);
    let mut table = FamilyTable::new(family);
    table.insert(0x0a00_0000, 8, true);
    table.insert(0x0a01_0200, 24, false);
    layout.publish_all(&table, &mut memory).expect("room");
    (memory, layout, table)
}

#[test]
fn a_one_entry_change_writes_one_chunk() {
    let (mut memory, mut layout, mut table) = ten_with_an_exception();
    table.insert(0x0a02_0300, 24, false);
    let report = layout
        .publish(&table, table.chunks_of(0x0a02_0300, 24), &mut memory)
        .expect("room");
    assert_eq!((report.chunks_written, report.starts_written), (1, 3));
    // Publishing the same table again writes nothing.
    let again = layout.publish_all(&table, &mut memory).expect("room");
    assert_eq!(again, PublishReport::default());
}

#[test]
fn adopting_written_arrays_rewrites_nothing() {
    let mut rng = StdRng::seed_from_u64(19);
    for family in [Family::V4, Family::V6] {
        let mut memory = FakeMemory::new(family, 5_000);
        let mut layout = Layout::fresh(family, 5_000);
        let table = random_table(family, &mut rng, 400);
        layout.publish_all(&table, &mut memory).expect("room");
        let mut adopted = Layout::adopt(family, 5_000, &mut memory).expect("adopt");
        assert_eq!(adopted.slots_in_use(), layout.slots_in_use());
        let report = adopted.publish_all(&table, &mut memory).expect("room");
        assert_eq!(
            report,
            PublishReport {
                waits: 0,
                ..PublishReport::default()
            }
        );
    }
}

#[test]
fn an_entry_naming_slots_outside_the_array_is_rewritten() {
    let family = Family::V4;
    let mut memory = FakeMemory::new(family, 100);
    memory.entries[5] = DirectoryEntry::new(90, 20, true);
    let mut layout = Layout::adopt(family, 100, &mut memory).expect("adopt");
    let report = layout
        .publish_all(&FamilyTable::new(family), &mut memory)
        .expect("room");
    assert_eq!(report.chunks_written, 1);
    assert_eq!(memory.entries[5], DirectoryEntry::uniform(false));
}

#[test]
fn a_chunk_without_room_keeps_its_old_ranges() {
    // Halves of four slots: a table over the size the arrays were made for.
    let family = Family::V4;
    let mut memory = FakeMemory::new(family, 8);
    let mut layout = Layout::fresh(family, 8);
    let mut table = FamilyTable::new(family);
    table.insert(0x0a00_0100, 24, true);
    layout.publish_all(&table, &mut memory).expect("room");
    let before = memory.entries[0x0a00];
    table.insert(0x0a00_0300, 24, true);
    table.insert(0x0a00_0500, 24, true);
    let (_, err) = layout
        .publish(&table, [0x0a00], &mut memory)
        .expect_err("7 starts in halves of 4 slots");
    assert!(
        matches!(
            err,
            LookupError::NoRoom {
                needed: 7,
                capacity: 8,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(memory.entries[0x0a00], before);
    assert!(layout.decide(0x0a00_0101) && !layout.decide(0x0a00_0301));
}

#[test]
fn a_chunk_finer_than_the_search_settles_is_refused() {
    let family = Family::V6;
    let mut memory = FakeMemory::new(family, 100);
    let mut layout = Layout::fresh(family, 100).with_chunk_limit(4);
    let mut table = FamilyTable::new(family);
    // Two /64s in one /16: five ranges.
    table.insert(0x2001_0db8_0000_0001 << 64, 64, true);
    table.insert(0x2001_0db8_0000_0003 << 64, 64, true);
    let (_, err) = layout
        .publish(&table, [0x2001], &mut memory)
        .expect_err("five ranges over a limit of four");
    assert!(
        matches!(
            err,
            LookupError::TooFine {
                ranges: 5,
                limit: 4,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        memory.entries[0x2001],
        DirectoryEntry::default(),
        "left as it was"
    );
}

#[test]
fn writes_into_the_arrays_by_someone_else_are_found_and_undone() {
    let (mut memory, mut layout, table) = ten_with_an_exception();
    assert!(layout.drifted(&memory).is_empty());
    // A uniform chunk flipped, and a range start moved.
    memory.entries[0x0a05] = DirectoryEntry::uniform(false);
    let entry = memory.entries[0x0a01];
    memory.starts[entry.base() as usize + 1] = 0x0300;
    let drifted = layout.drifted(&memory);
    assert_eq!(drifted, [0x0a01, 0x0a05]);
    let report = layout.publish(&table, drifted, &mut memory).expect("room");
    assert_eq!(report.chunks_written, 2);
    assert!(layout.drifted(&memory).is_empty());
    for address in [0x0a05_0001, 0x0a01_0201, 0x0a01_0301] {
        assert_eq!(
            memory.decide(address),
            table.longest_match(address),
            "{address:#x}"
        );
    }
}

/// `count` keep-source /64s, every other one from `2001:db8:2i::/64`,
/// all in chunk 0x2001: none adjacent, so each is a range of its own.
fn dense_v6(first: u128, count: u128) -> FamilyTable {
    let mut table = FamilyTable::new(Family::V6);
    for i in first..first + count {
        table.insert((0x2001_0db8_u128 << 96) | ((2 * i) << 64), 64, true);
    }
    table
}

#[test]
fn a_dense_chunk_changed_at_full_size_flips_into_the_other_half() {
    // A /16 holding every prefix the arrays are sized for: its old and new
    // ranges cannot sit side by side in one half.
    let family = Family::V6;
    let capacity = ip_masq_common::range_capacity(64);
    let mut memory = FakeMemory::new(family, capacity);
    let mut layout = Layout::fresh(family, capacity);
    let old = dense_v6(0, 64);
    layout.publish_all(&old, &mut memory).expect("room");
    let new = dense_v6(1, 64);
    let probes = (0..140u128).map(|i| (0x2001_0db8_u128 << 96) | (i << 64) | 5);
    check_old_or_new(&mut memory, &old, &new, probes.collect());
    let report = layout
        .publish(&new, [0x2001], &mut memory)
        .expect("flipped");
    assert_eq!(report.flips, 1);
    memory.after_store = None;
    for i in 0..140u128 {
        let address = (0x2001_0db8_u128 << 96) | (i << 64) | 5;
        assert_eq!(
            memory.decide(address),
            new.longest_match(address),
            "{address:#x}"
        );
    }
    // And back, which flips again into the first half.
    let back = layout
        .publish(&old, [0x2001], &mut memory)
        .expect("flipped back");
    assert_eq!(back.flips, 1);
}

#[test]
fn updates_that_fragment_the_arrays_never_run_out_of_room() {
    // Tables up to the size the arrays are made for, clustered in a few
    // chunks so that chunks grow, shrink and move: first fit alone would
    // leave gaps too short for a chunk that grows.
    let mut rng = StdRng::seed_from_u64(23);
    for family in [Family::V4, Family::V6] {
        let max = 64;
        let capacity = ip_masq_common::range_capacity(max);
        let mut memory = FakeMemory::new(family, capacity);
        let mut layout = Layout::fresh(family, capacity);
        let mut current = FamilyTable::new(family);
        let mut flips = 0;
        for _ in 0..300 {
            let mut next = FamilyTable::new(family);
            let count = rng.random_range(max / 2..=max);
            for _ in 0..count {
                // Apart from each other, so that each prefix is two more
                // ranges: chunks as fine as a table of this size can cut.
                let chunk = u128::from(rng.random_range(0..2u32));
                let slot = u128::from(rng.random_range(0..2_000u32));
                let (network, len) = match family {
                    Family::V4 => ((chunk << 16) | (slot * 8), 30),
                    Family::V6 => ((chunk << 112) | ((2 * slot) << 64), 64),
                };
                next.insert(network, len, true);
            }
            let chunks = touched_chunks(&[&current, &next]);
            let report = layout.publish(&next, chunks, &mut memory).expect("room");
            flips += report.flips;
            for address in probes(&next, &mut rng) {
                assert_eq!(
                    memory.decide(address),
                    next.longest_match(address),
                    "{address:#x}"
                );
            }
            current = next;
        }
        assert!(
            flips > 0,
            "{family:?}: the updates never needed the other half"
        );
    }
}

#[test]
fn a_flip_cut_short_is_finished_by_the_next_agent() {
    let family = Family::V6;
    let capacity = ip_masq_common::range_capacity(64);
    let mut memory = FakeMemory::new(family, capacity);
    let mut layout = Layout::fresh(family, capacity);
    let with_others = |mut table: FamilyTable, keep_every: u128| {
        for i in 0..4u128 {
            table.insert(
                (0x2002_0000_u128 << 96) | (i << 80),
                48,
                i % keep_every == 0,
            );
        }
        table
    };
    let old = with_others(dense_v6(0, 60), 1);
    layout.publish_all(&old, &mut memory).expect("room");
    // 121 new ranges for chunk 0x2001 beside its 121 old ones: a flip.
    let new = with_others(dense_v6(3, 60), 2);
    // The agent dies right after the flip's first entry store: chunk
    // 0x2001 is in the second half, chunk 0x2002 still in the first.
    let stores = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = stores.clone();
    memory.after_store = Some(Box::new(move |_: &FakeMemory| {
        counter.set(counter.get() + 1);
        assert!(counter.get() < 1, "killed");
    }));
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        layout.publish(&new, [0x2001, 0x2002], &mut memory)
    }));
    assert!(died.is_err());
    assert_eq!(stores.get(), 1);
    memory.after_store = None;
    drop(layout);
    // The next agent adopts the arrays as they are, goes on in the half the
    // flip was filling, and publishes.
    let mut next = Layout::adopt(family, capacity, &mut memory).expect("adopt");
    next.publish_all(&new, &mut memory).expect("room");
    for address in probes(&new, &mut StdRng::seed_from_u64(5)) {
        assert_eq!(
            memory.decide(address),
            new.longest_match(address),
            "{address:#x}"
        );
    }
    // And the layout still has room to change again.
    next.publish(&old, [0x2001, 0x2002], &mut memory)
        .expect("room");
    for address in probes(&old, &mut StdRng::seed_from_u64(6)) {
        assert_eq!(
            memory.decide(address),
            old.longest_match(address),
            "{address:#x}"
        );
    }
}

//! Layout shared by the eBPF programs and the agent: map and program names,
//! the LPM action values and the statistics slots.
//!
//! Everything here is part of the on-node ABI. Maps are pinned and outlive the
//! agent, so a value that changes meaning here breaks nodes that upgrade.
#![no_std]

/// LPM trie of IPv4 destinations, keyed by `Key<[u8; 4]>`, valued by an action byte.
pub const MAP_NON_MASQ_V4: &str = "NON_MASQ_V4";
/// LPM trie of IPv6 destinations, keyed by `Key<[u8; 16]>`, valued by an action byte.
pub const MAP_NON_MASQ_V6: &str = "NON_MASQ_V6";
/// Range directory of IPv4 destinations: one [`DirectoryEntry`] per /16,
/// indexed by the destination's top 16 bits. What the programs look up; the
/// LPM tries are the table's readable record.
pub const MAP_DIRECTORY_V4: &str = "MASQ_DIR_V4";
/// Range starts of the IPv4 directory's chunks: the low 16 bits of each
/// start, four to a 64-bit word ([`range_start_v4`]).
pub const MAP_RANGES_V4: &str = "MASQ_RANGES_V4";
/// Range directory of IPv6 destinations: one [`DirectoryEntry`] per /16.
pub const MAP_DIRECTORY_V6: &str = "MASQ_DIR_V6";
/// Range starts of the IPv6 directory's chunks, each a whole address as
/// `[high 64 bits, low 64 bits]`.
pub const MAP_RANGES_V6: &str = "MASQ_RANGES_V6";
/// The range directory's four maps, each pinned under its name.
pub const DIRECTORY_MAPS: [&str; 4] = [
    MAP_DIRECTORY_V4,
    MAP_RANGES_V4,
    MAP_DIRECTORY_V6,
    MAP_RANGES_V6,
];
/// Per-CPU packet counters of the TC classifier, indexed by the `STAT_*` slots.
pub const MAP_STATS: &str = "STATS";
/// Per-CPU connection counters of the xt_bpf socket filters, indexed by the
/// `XT_STAT_*` slots ([`xt_stat_slot`]). A map of its own rather than more
/// `STATS` slots: a pinned `STATS` of an older agent keeps its four slots
/// across an upgrade, and the filters count something else (a connection's
/// first packet, not every packet).
pub const MAP_XT_BPF_STATS: &str = "XT_BPF_STATS";

/// Name of the TC classifier function, as the kernel and `bpftool prog` show
/// it. Kernel object names hold 15 characters; longer ones are cut.
pub const PROGRAM_CLASSIFIER: &str = "ipmasq_classify";
/// Read-only global holding the mark bit(s) the classifier ORs into `skb->mark`.
pub const GLOBAL_KEEP_SOURCE_MARK: &str = "KEEP_SOURCE_MARK";

/// Name of a classifier that returns at once; only the benchmark loads it,
/// as the baseline of BPF_PROG_TEST_RUN's own cost.
pub const PROGRAM_BENCH_NOOP: &str = "ip_masq_noop";
/// Name of a socket filter that returns at once: the benchmark's baseline
/// for the xt_bpf filters.
pub const PROGRAM_BENCH_NOOP_FILTER: &str = "ip_masq_noop_sf";
/// Name of a socket filter that only reads the destination: the floor of
/// any filter that looks at the packet, for the benchmark.
pub const PROGRAM_BENCH_LOAD_FILTER: &str = "ip_masq_load_sf";

/// Name of the IPv4 socket filter run by the iptables `bpf` match (xt_bpf).
/// Kernel program names hold at most 15 characters.
pub const PROGRAM_XT_BPF_V4: &str = "ip_masq_xt_v4";
/// Name of the IPv6 socket filter run by the ip6tables `bpf` match (xt_bpf).
pub const PROGRAM_XT_BPF_V6: &str = "ip_masq_xt_v6";
/// File name, under the pin directory, of the pinned IPv4 socket filter.
/// iptables rules name this path (`-m bpf --object-pinned`), so it must
/// never change meaning.
pub const PIN_XT_BPF_V4: &str = "xt_bpf_v4";
/// File name, under the pin directory, of the pinned IPv6 socket filter.
pub const PIN_XT_BPF_V6: &str = "xt_bpf_v6";
/// What a socket filter returns for "keep source": xt_bpf matches on any
/// non-zero value.
pub const XT_BPF_KEEP_SOURCE: i64 = 1;
/// What a socket filter returns for "masquerade" (no match).
pub const XT_BPF_MASQUERADE: i64 = 0;

/// Default capacity of each LPM trie; `--max-cidrs` overrides it.
pub const DEFAULT_MAP_CAPACITY: u32 = 65_536;

/// `BPF_F_MMAPABLE`: the agent writes the directory and range arrays
/// through a shared mapping, in aligned 64-bit stores.
pub const MAP_FLAG_MMAPABLE: usize = 1 << 10;

/// Number of directory entries per family: one per /16.
pub const DIRECTORY_SLOTS: u32 = 1 << CHUNK_BITS;
/// Address bits that index the directory.
pub const CHUNK_BITS: u32 = 16;
/// IPv4 range starts held by one 64-bit word of `MASQ_RANGES_V4`.
pub const V4_STARTS_PER_WORD: u32 = 4;
/// Steps of the IPv4 binary search: a /16 holds at most 2^16 ranges, and
/// each step halves the count still in question.
pub const SEARCH_STEPS_V4: usize = 16;
/// Steps of the IPv6 binary search: chunks of up to 2^24 ranges
/// ([`MAX_CHUNK_RANGES_V6`]). A fixed bound the verifier can see; each
/// more step costs it states to walk.
pub const SEARCH_STEPS_V6: usize = 24;
/// The most ranges one IPv6 chunk may have; the agent refuses to publish a
/// finer one.
pub const MAX_CHUNK_RANGES_V6: u32 = 1 << SEARCH_STEPS_V6;

/// Range starts each family's range array holds for a table capacity of
/// `max_cidrs` prefixes: two halves, each able to hold any whole table.
///
/// A table of N prefixes cuts at most 2N + min(N, 65,536) ranges: a prefix
/// no longer than /16 decides whole chunks and adds none, a longer one
/// lies in one chunk and adds at most two, and each chunk it cuts has one
/// more. The agent allocates in one half; when a changed chunk's new
/// ranges find no room beside the old ones there, it writes the whole
/// table into the other half (see `ip-masq-lookup`'s layout).
pub const fn range_capacity(max_cidrs: u32) -> u32 {
    let chunks = if max_cidrs < DIRECTORY_SLOTS {
        max_cidrs
    } else {
        DIRECTORY_SLOTS
    };
    max_cidrs
        .saturating_mul(2)
        .saturating_add(chunks)
        .saturating_add(1)
        .saturating_mul(2)
}

/// 64-bit words of `MASQ_RANGES_V4` for `starts` range starts.
pub const fn range_words_v4(starts: u32) -> u32 {
    starts.div_ceil(V4_STARTS_PER_WORD)
}

/// The IPv4 range start at `index` within the word that holds it.
#[inline(always)]
pub const fn range_start_v4(word: u64, index: u32) -> u16 {
    (word >> ((index % V4_STARTS_PER_WORD) * 16)) as u16
}

/// One directory entry: where a /16's ranges are and what they decide.
///
/// A chunk's ranges are sorted by start, the first starts at the chunk's
/// first address, and neighbours never decide alike (they are merged), so
/// the decisions alternate and only the first one is stored. A chunk with
/// one range (or none) is decided by the entry alone: no range is read.
/// The all-zero entry, a fresh map's, masquerades the whole chunk, as a
/// lookup miss does.
///
/// Layout: bit 0 the first range's decision (1: keep source), bits 1–31
/// the number of ranges, bits 32–63 the index of the first one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DirectoryEntry(pub u64);

impl DirectoryEntry {
    /// An entry for `len` ranges from `base`, the first deciding `first_keeps`.
    #[inline(always)]
    pub const fn new(base: u32, len: u32, first_keeps: bool) -> Self {
        Self(((base as u64) << 32) | (((len & 0x7FFF_FFFF) as u64) << 1) | first_keeps as u64)
    }

    /// A chunk decided as a whole.
    #[inline(always)]
    pub const fn uniform(keeps: bool) -> Self {
        Self::new(0, 1, keeps)
    }

    /// Index of the chunk's first range.
    #[inline(always)]
    pub const fn base(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Number of ranges; 0 and 1 both mean "decided by the entry".
    #[inline(always)]
    pub const fn ranges(self) -> u32 {
        ((self.0 >> 1) & 0x7FFF_FFFF) as u32
    }

    /// Whether the chunk is decided without reading a range.
    #[inline(always)]
    pub const fn is_uniform(self) -> bool {
        self.ranges() <= 1
    }

    /// Whether the first range keeps the source.
    #[inline(always)]
    pub const fn first_keeps(self) -> bool {
        self.0 & 1 == 1
    }

    /// Whether the range at `position` (counted from the chunk's first)
    /// keeps the source.
    #[inline(always)]
    pub const fn keeps(self, position: u32) -> bool {
        self.first_keeps() ^ (position & 1 == 1)
    }
}

/// The decision stored as the value of an LPM entry.
///
/// The longest matching prefix decides, so a `Masquerade` entry inside a
/// `KeepSource` range carves an exception out of it, and vice versa.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Keep the pod's source address: the classifier sets the mark bit.
    KeepSource = 1,
    /// Masquerade even though a shorter prefix says otherwise.
    Masquerade = 2,
}

impl Action {
    /// Decodes a map value. Unknown values decode to `None` and are treated as
    /// a miss, which means "masquerade": the safe default for an unknown byte.
    #[inline(always)]
    pub const fn from_value(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::KeepSource),
            2 => Some(Self::Masquerade),
            _ => None,
        }
    }

    /// Whether a lookup result means the source address must be kept.
    #[inline(always)]
    pub const fn keeps_source(value: Option<u8>) -> bool {
        matches!(value, Some(v) if v == Self::KeepSource as u8)
    }
}

/// IPv4 packets the classifier looked up.
pub const STAT_V4_SEEN: u32 = 0;
/// IPv4 packets the classifier marked keep-source.
pub const STAT_V4_KEPT: u32 = 1;
/// IPv6 packets the classifier looked up.
pub const STAT_V6_SEEN: u32 = 2;
/// IPv6 packets the classifier marked keep-source.
pub const STAT_V6_KEPT: u32 = 3;
/// Number of statistics slots.
pub const STAT_SLOTS: u32 = 4;

/// One value of either stats map: a per-CPU event count.
pub type StatCounter = u64;

/// IPv4 connections the xt_bpf filter answered "keep source" (RETURN).
pub const XT_STAT_V4_KEEP_SOURCE: u32 = 0;
/// IPv4 connections the xt_bpf filter answered "masquerade" (no match).
pub const XT_STAT_V4_MASQUERADE: u32 = 1;
/// IPv6 connections the xt_bpf filter answered "keep source".
pub const XT_STAT_V6_KEEP_SOURCE: u32 = 2;
/// IPv6 connections the xt_bpf filter answered "masquerade".
pub const XT_STAT_V6_MASQUERADE: u32 = 3;
/// Number of xt_bpf statistics slots.
pub const XT_STAT_SLOTS: u32 = 4;

/// The `XT_BPF_STATS` slot of one socket filter run: the rule's family
/// (which filter ran) and its answer.
#[inline(always)]
pub const fn xt_stat_slot(ipv6: bool, keep_source: bool) -> u32 {
    match (ipv6, keep_source) {
        (false, true) => XT_STAT_V4_KEEP_SOURCE,
        (false, false) => XT_STAT_V4_MASQUERADE,
        (true, true) => XT_STAT_V6_KEEP_SOURCE,
        (true, false) => XT_STAT_V6_MASQUERADE,
    }
}

/// Default mark bit: left free by kube-proxy (0x4000, 0x8000), Calico,
/// flannel, AWS VPC CNI and Cilium's commonly used bits.
pub const DEFAULT_KEEP_SOURCE_MARK: u32 = 0x1000;

const _: () = assert!(core::mem::size_of::<Action>() == 1);
const _: () = assert!(
    PROGRAM_CLASSIFIER.len() <= 15
        && PROGRAM_BENCH_NOOP.len() <= 15
        && PROGRAM_BENCH_NOOP_FILTER.len() <= 15
        && PROGRAM_BENCH_LOAD_FILTER.len() <= 15
);
const _: () = assert!(PROGRAM_XT_BPF_V4.len() <= 15 && PROGRAM_XT_BPF_V6.len() <= 15);
// Map names are cut at 15 characters too, and the pins are named after them.
const _: () = assert!(MAP_STATS.len() <= 15 && MAP_XT_BPF_STATS.len() <= 15);
const _: () = assert!(
    MAP_DIRECTORY_V4.len() <= 15
        && MAP_RANGES_V4.len() <= 15
        && MAP_DIRECTORY_V6.len() <= 15
        && MAP_RANGES_V6.len() <= 15
);
// The agent reads both maps as arrays of u64 per CPU.
const _: () = assert!(core::mem::size_of::<StatCounter>() == 8);
// The slot numbers are ABI (the maps are pinned and outlive the agent), and
// each map has exactly one slot per counter.
const _: () = assert!(
    STAT_V4_SEEN == 0
        && STAT_V4_KEPT == 1
        && STAT_V6_SEEN == 2
        && STAT_V6_KEPT == 3
        && STAT_SLOTS == 4
);
const _: () = assert!(
    XT_STAT_V4_KEEP_SOURCE == 0
        && XT_STAT_V4_MASQUERADE == 1
        && XT_STAT_V6_KEEP_SOURCE == 2
        && XT_STAT_V6_MASQUERADE == 3
        && XT_STAT_SLOTS == 4
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keep_source_keeps_source() {
        assert!(Action::keeps_source(Some(Action::KeepSource as u8)));
        assert!(!Action::keeps_source(Some(Action::Masquerade as u8)));
        assert!(!Action::keeps_source(None));
        assert!(!Action::keeps_source(Some(0)));
        assert!(!Action::keeps_source(Some(0xff)));
    }

    #[test]
    fn each_filter_verdict_has_its_own_slot() {
        assert_eq!(xt_stat_slot(false, true), XT_STAT_V4_KEEP_SOURCE);
        assert_eq!(xt_stat_slot(false, false), XT_STAT_V4_MASQUERADE);
        assert_eq!(xt_stat_slot(true, true), XT_STAT_V6_KEEP_SOURCE);
        assert_eq!(xt_stat_slot(true, false), XT_STAT_V6_MASQUERADE);
    }

    #[test]
    fn directory_entries_round_trip() {
        let entry = DirectoryEntry::new(0xDEAD_BEEF, 131_073, true);
        assert_eq!(entry.base(), 0xDEAD_BEEF);
        assert_eq!(entry.ranges(), 131_073);
        assert!(entry.first_keeps() && entry.keeps(0) && !entry.keeps(1) && entry.keeps(2));
        assert!(!entry.is_uniform());
        assert!(
            DirectoryEntry::uniform(true).is_uniform()
                && DirectoryEntry::uniform(true).first_keeps()
        );
        let fresh = DirectoryEntry::default();
        assert!(fresh.is_uniform() && !fresh.first_keeps());
    }

    #[test]
    fn four_ipv4_starts_share_a_word() {
        let word = 0x0004_0003_0002_0001_u64;
        assert_eq!([0, 1, 2, 3].map(|i| range_start_v4(word, i)), [1, 2, 3, 4]);
        assert_eq!(range_start_v4(word, 5), 2);
        assert_eq!(range_words_v4(5), 2);
    }

    #[test]
    fn values_round_trip() {
        for action in [Action::KeepSource, Action::Masquerade] {
            assert_eq!(Action::from_value(action as u8), Some(action));
        }
        assert_eq!(Action::from_value(0), None);
    }
}

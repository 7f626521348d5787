//! The lookup shared by every ip-masq eBPF program, so that they cannot disagree.
//!
//! Destinations are decided through a range directory (DXR's "D16R"): the
//! top 16 bits of the address index an array of [`DirectoryEntry`]s, and a
//! /16 that the table cuts into several ranges is searched by a binary
//! search over its sorted range starts. Array lookups are inlined by the
//! verifier, so a lookup is one load for a chunk decided as a whole and one
//! more per halving otherwise, with no call and no walk that deepens with
//! the whole table. The agent builds the arrays from the table and writes
//! them through a shared mapping; the LPM tries it also writes are the
//! table's readable record (`bpftool map dump`) and are not read here.
#![no_std]

use aya_ebpf::{
    btf_maps::{Array, LpmTrie},
    macros::btf_map,
};
use ip_masq_common::{
    DEFAULT_MAP_CAPACITY, DIRECTORY_SLOTS, DirectoryEntry, MAP_FLAG_MMAPABLE, SEARCH_STEPS_V4,
    SEARCH_STEPS_V6, V4_STARTS_PER_WORD, range_capacity, range_start_v4, range_words_v4,
};

/// IPv4 destinations and their action, as the agent wrote them: the record
/// that `bpftool map dump` and `ip-masq dump` show.
#[btf_map]
pub static NON_MASQ_V4: LpmTrie<[u8; 4], u8, { DEFAULT_MAP_CAPACITY as usize }> = LpmTrie::new();

/// IPv6 destinations and their action, as the agent wrote them.
#[btf_map]
pub static NON_MASQ_V6: LpmTrie<[u8; 16], u8, { DEFAULT_MAP_CAPACITY as usize }> = LpmTrie::new();

/// One directory entry per IPv4 /16.
#[btf_map]
pub static MASQ_DIR_V4: Array<u64, { DIRECTORY_SLOTS as usize }, MAP_FLAG_MMAPABLE> = Array::new();

/// IPv4 range starts (low 16 bits), four to a word; the agent sizes it
/// from `--max-cidrs` at load.
#[btf_map]
pub static MASQ_RANGES_V4: Array<
    u64,
    { range_words_v4(range_capacity(DEFAULT_MAP_CAPACITY)) as usize },
    MAP_FLAG_MMAPABLE,
> = Array::new();

/// One directory entry per IPv6 /16.
#[btf_map]
pub static MASQ_DIR_V6: Array<u64, { DIRECTORY_SLOTS as usize }, MAP_FLAG_MMAPABLE> = Array::new();

/// IPv6 range starts, each `[high 64 bits, low 64 bits]` of the address.
#[btf_map]
pub static MASQ_RANGES_V6: Array<
    [u64; 2],
    { range_capacity(DEFAULT_MAP_CAPACITY) as usize },
    MAP_FLAG_MMAPABLE,
> = Array::new();

/// Whether traffic to this IPv4 destination keeps its source address.
#[inline(always)]
pub fn keeps_source_v4(destination: [u8; 4]) -> bool {
    let address = u32::from_be_bytes(destination);
    let Some(&raw) = MASQ_DIR_V4.get(address >> 16) else {
        return false;
    };
    let entry = DirectoryEntry(raw);
    if entry.is_uniform() {
        return entry.first_keeps();
    }
    let key = address as u16;
    let base = entry.base();
    let found = search::<SEARCH_STEPS_V4>(base, entry.ranges(), |index| {
        MASQ_RANGES_V4
            .get(index / V4_STARTS_PER_WORD)
            .map(|&word| at_or_below_v4(range_start_v4(word, index), key))
    });
    matches!(found, Some(position) if entry.keeps(position))
}

/// Whether traffic to this IPv6 destination keeps its source address.
#[inline(always)]
pub fn keeps_source_v6(destination: [u8; 16]) -> bool {
    let address = u128::from_be_bytes(destination);
    let Some(&raw) = MASQ_DIR_V6.get((address >> 112) as u32) else {
        return false;
    };
    let entry = DirectoryEntry(raw);
    if entry.is_uniform() {
        return entry.first_keeps();
    }
    let (high, low) = ((address >> 64) as u64, address as u64);
    let base = entry.base();
    let found = search::<SEARCH_STEPS_V6>(base, entry.ranges(), |index| {
        MASQ_RANGES_V6
            .get(index)
            .map(|&[start_high, start_low]| at_or_below_v6(start_high, start_low, high, low))
    });
    matches!(found, Some(position) if entry.keeps(position))
}

/// The position (counted from `base`) of the last of `len` sorted ranges
/// whose start is at or below the address; `starts_at_or_below(i)`
/// compares the start in slot `i`. The first range starts at the chunk's
/// first address, so one is always found. `None` when a range could not be
/// read, which the callers treat as "masquerade", the safe answer.
///
/// `STEPS` halvings settle up to 2^STEPS ranges; the agent never publishes
/// a chunk with more.
///
/// The search walks absolute slots from `base`, a value read from the map,
/// rather than positions from 0: on the path where every comparison fails
/// a position from 0 would stay the constant 0, the verifier would then
/// predict the final branch on it and track it precisely, and its states
/// at the loop head could no longer be merged, doubling the paths it walks
/// with each step (without CAP_PERFMON it gives up at 8,192 of them).
#[inline(always)]
fn search<const STEPS: usize>(
    base: u32,
    len: u32,
    starts_at_or_below: impl Fn(u32) -> Option<bool>,
) -> Option<u32> {
    let mut at = base;
    let mut remaining = len;
    for _ in 0..STEPS {
        if remaining <= 1 {
            break;
        }
        let half = remaining / 2;
        let next = at.wrapping_add(half);
        if starts_at_or_below(next)? {
            at = next;
        }
        remaining -= half;
    }
    Some(at.wrapping_sub(base))
}

/// Whether the 16-bit `start` is at or below `key`, without a branch (see
/// [`at_or_below_v6`]). Both sit in the top bits of a word, so that LLVM,
/// which knows a plain u16 difference cannot wrap, does not turn the
/// borrow back into a comparison and a branch.
#[inline(always)]
fn at_or_below_v4(start: u16, key: u16) -> bool {
    borrow(u64::from(key) << 48, u64::from(start) << 48) == 0
}

/// The borrow of `a - b` (1 when `b` is above `a`): the top bit of
/// `(!a & b) | (!(a ^ b) & (a - b))`, bit operations only.
#[inline(always)]
fn borrow(a: u64, b: u64) -> u64 {
    ((!a & b) | (!(a ^ b) & a.wrapping_sub(b))) >> 63
}

/// Whether the 128-bit start `[start_high, start_low]` is at or below the
/// address `[high, low]`, computed with bit operations and no branch.
///
/// Branches on the address would let the verifier narrow its registers at
/// every step, predict later comparisons from the narrowed ranges, and
/// (without CAP_PERFMON) push a speculative path for each prediction,
/// doubling its work per step.
#[inline(always)]
fn at_or_below_v6(start_high: u64, start_low: u64, high: u64, low: u64) -> bool {
    let differ = start_high ^ high;
    // 1 when the high words are equal.
    let equal = ((differ | differ.wrapping_neg()) >> 63) ^ 1;
    // address < start: high below, or high equal and low below.
    let below = borrow(high, start_high) | (equal & borrow(low, start_low));
    below == 0
}

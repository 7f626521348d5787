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
    DEFAULT_MAP_CAPACITY, DIRECTORY_SLOTS, DirectoryEntry, MAP_FLAG_MMAPABLE, MAX_SEARCH_STEPS,
    V4_STARTS_PER_WORD, range_capacity_v4, range_capacity_v6, range_start_v4, range_words_v4,
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
    { range_words_v4(range_capacity_v4(DEFAULT_MAP_CAPACITY)) as usize },
    MAP_FLAG_MMAPABLE,
> = Array::new();

/// One directory entry per IPv6 /16.
#[btf_map]
pub static MASQ_DIR_V6: Array<u64, { DIRECTORY_SLOTS as usize }, MAP_FLAG_MMAPABLE> = Array::new();

/// IPv6 range starts, each `[high 64 bits, low 64 bits]` of the address.
#[btf_map]
pub static MASQ_RANGES_V6: Array<
    [u64; 2],
    { range_capacity_v6(DEFAULT_MAP_CAPACITY) as usize },
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
    let found = search(entry.ranges(), |position| {
        let index = base.wrapping_add(position);
        MASQ_RANGES_V4
            .get(index / V4_STARTS_PER_WORD)
            .map(|&word| range_start_v4(word, index) <= key)
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
    let found = search(entry.ranges(), |position| {
        MASQ_RANGES_V6
            .get(base.wrapping_add(position))
            .map(|&[start_high, start_low]| {
                start_high < high || (start_high == high && start_low <= low)
            })
    });
    matches!(found, Some(position) if entry.keeps(position))
}

/// The position of the last of `len` sorted ranges whose start is at or
/// below the address; `starts_at_or_below(p)` compares the start at `p`.
/// The first range starts at the chunk's first address, so one is always
/// found. `None` when a range could not be read, which the callers treat
/// as "masquerade", the safe answer.
///
/// A fixed bound the verifier can see: each step halves a `u32` count.
#[inline(always)]
fn search(len: u32, starts_at_or_below: impl Fn(u32) -> Option<bool>) -> Option<u32> {
    let mut low = 0u32;
    let mut remaining = len;
    for _ in 0..MAX_SEARCH_STEPS {
        if remaining <= 1 {
            break;
        }
        let half = remaining / 2;
        if starts_at_or_below(low + half)? {
            low += half;
        }
        remaining -= half;
    }
    Some(low)
}

//! The lookup shared by every ip-masq eBPF program, so that they cannot disagree.
#![no_std]

use aya_ebpf::{
    btf_maps::{LpmTrie, lpm_trie::Key},
    macros::btf_map,
};
use ip_masq_common::{Action, DEFAULT_MAP_CAPACITY};

/// IPv4 destinations and their action; the longest matching prefix decides.
#[btf_map]
pub static NON_MASQ_V4: LpmTrie<[u8; 4], u8, { DEFAULT_MAP_CAPACITY as usize }> = LpmTrie::new();

/// IPv6 destinations and their action; the longest matching prefix decides.
#[btf_map]
pub static NON_MASQ_V6: LpmTrie<[u8; 16], u8, { DEFAULT_MAP_CAPACITY as usize }> = LpmTrie::new();

/// Whether traffic to this IPv4 destination keeps its source address.
#[inline(always)]
pub fn keeps_source_v4(destination: [u8; 4]) -> bool {
    Action::keeps_source(NON_MASQ_V4.get(&Key::new(32, destination)).copied())
}

/// Whether traffic to this IPv6 destination keeps its source address.
#[inline(always)]
pub fn keeps_source_v6(destination: [u8; 16]) -> bool {
    Action::keeps_source(NON_MASQ_V6.get(&Key::new(128, destination)).copied())
}

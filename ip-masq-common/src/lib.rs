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
const _: () = assert!(PROGRAM_CLASSIFIER.len() <= 15 && PROGRAM_BENCH_NOOP.len() <= 15);
const _: () = assert!(PROGRAM_XT_BPF_V4.len() <= 15 && PROGRAM_XT_BPF_V6.len() <= 15);
// Map names are cut at 15 characters too, and the pins are named after them.
const _: () = assert!(MAP_STATS.len() <= 15 && MAP_XT_BPF_STATS.len() <= 15);
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
    fn values_round_trip() {
        for action in [Action::KeepSource, Action::Masquerade] {
            assert_eq!(Action::from_value(action as u8), Some(action));
        }
        assert_eq!(Action::from_value(0), None);
    }
}

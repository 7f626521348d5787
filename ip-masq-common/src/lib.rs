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
/// Per-CPU packet counters, indexed by the `STAT_*` slots.
pub const MAP_STATS: &str = "STATS";

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

/// Default mark bit (bit 12). The CNI portmap plugin masquerades every
/// packet carrying 0x2000 once a hostPort pod has run, kube-proxy and
/// flannel use 0x4000, the legacy kubelet drop chain 0x8000, Calico, Weave,
/// kube-router, Antrea and Tailscale bits above 0xffff, AWS VPC CNI 0x80 and
/// Cilium's magic marks 0x0f00; 0x1000 is outside all of them in their
/// default configurations (the README's table lists each with its source).
pub const DEFAULT_KEEP_SOURCE_MARK: u32 = 0x1000;

const _: () = assert!(core::mem::size_of::<Action>() == 1);
const _: () = assert!(PROGRAM_CLASSIFIER.len() <= 15 && PROGRAM_BENCH_NOOP.len() <= 15);
const _: () = assert!(PROGRAM_XT_BPF_V4.len() <= 15 && PROGRAM_XT_BPF_V6.len() <= 15);

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
    fn values_round_trip() {
        for action in [Action::KeepSource, Action::Masquerade] {
            assert_eq!(Action::from_value(action as u8), Some(action));
        }
        assert_eq!(Action::from_value(0), None);
    }
}

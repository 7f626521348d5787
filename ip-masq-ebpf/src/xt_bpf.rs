//! Socket filters run by the iptables `bpf` match (xt_bpf) in the nat
//! chain. They judge traffic the TC classifier never sees, such as packets
//! the node sends itself, and, with `--datapath xt-bpf`, all traffic.
//!
//! xt_bpf hands a socket filter the packet starting at the IP header (the
//! nat table runs at layer 3) and matches when the program returns
//! non-zero. The destination is looked up with the very routine the
//! classifier uses, so both datapaths always decide alike.
//!
//! Each run is counted in `XT_BPF_STATS` by family and answer. The nat
//! table sees only a connection's first packet, so these count new
//! connections, not packets; the classifier's `STATS` count packets.

use aya_ebpf::{
    btf_maps::PerCpuArray,
    macros::{btf_map, socket_filter},
    programs::SkBuffContext,
};
use ip_masq_common::{
    StatCounter, XT_BPF_KEEP_SOURCE, XT_BPF_MASQUERADE, XT_STAT_SLOTS, xt_stat_slot,
};
use ip_masq_ebpf::{keeps_source_v4, keeps_source_v6};

/// Per-CPU counts of the filters' answers, read by the agent's metrics.
#[btf_map]
static XT_BPF_STATS: PerCpuArray<StatCounter, { XT_STAT_SLOTS as usize }> = PerCpuArray::new();

/// Offset of the destination address in the IPv4 header.
const IPV4_DST_OFFSET: usize = 16;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
/// Offset of the destination address in the IPv6 header.
const IPV6_DST_OFFSET: usize = 24;

/// Matches IPv4 packets whose destination keeps the source address.
#[socket_filter]
pub fn ip_masq_xt_v4(ctx: SkBuffContext) -> i64 {
    verdict(false, try_v4(&ctx))
}

/// Matches IPv6 packets whose destination keeps the source address.
#[socket_filter]
pub fn ip_masq_xt_v6(ctx: SkBuffContext) -> i64 {
    verdict(true, try_v6(&ctx))
}

#[inline(always)]
fn try_v4(ctx: &SkBuffContext) -> Result<bool, ()> {
    // The rule sits in an iptables (not ip6tables) chain, so the packet is
    // IPv4; checking `skb->protocol` (a context field, no packet read)
    // means a misplaced rule can only ever fall through to MASQUERADE.
    if protocol(ctx) != ETH_P_IPV4 {
        return Ok(false);
    }
    // One `bpf_skb_load_bytes`: a socket filter has no direct packet
    // access, and each helper call costs more than the lookup itself.
    let destination: [u8; 4] = ctx.load(IPV4_DST_OFFSET).map_err(|_| ())?;
    Ok(keeps_source_v4(destination))
}

#[inline(always)]
fn try_v6(ctx: &SkBuffContext) -> Result<bool, ()> {
    if protocol(ctx) != ETH_P_IPV6 {
        return Ok(false);
    }
    let destination: [u8; 16] = ctx.load(IPV6_DST_OFFSET).map_err(|_| ())?;
    Ok(keeps_source_v6(destination))
}

/// `skb->protocol`, the packet's EtherType in host order.
#[inline(always)]
fn protocol(ctx: &SkBuffContext) -> u16 {
    // SAFETY: the context is the kernel's __sk_buff for this run.
    u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16)
}

/// A packet too short to parse is not ours to judge: no match, so the
/// chain's MASQUERADE applies, as it would without ip-masq. Every answer is
/// counted under the filter's family, so the two answers add up to the
/// filter's runs.
#[inline(always)]
fn verdict(ipv6: bool, keep: Result<bool, ()>) -> i64 {
    let keep = matches!(keep, Ok(true));
    if let Some(counter) = XT_BPF_STATS.get_ptr_mut(xt_stat_slot(ipv6, keep)) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe { *counter += 1 };
    }
    if keep {
        XT_BPF_KEEP_SOURCE
    } else {
        XT_BPF_MASQUERADE
    }
}

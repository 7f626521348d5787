//! TC classifier run at tcx ingress of pod-facing host interfaces, which is
//! the pod's egress. For each packet that can start a connection, it ORs
//! the keep-source mark into `skb->mark` when the destination's longest
//! matching prefix says "keep source"; a static iptables rule then RETURNs
//! such connections before MASQUERADE.
//!
//! It never drops, redirects or rewrites: it always answers `TC_ACT_UNSPEC`
//! (tcx "next") so that programs after it on the interface still run.
// Built for the host only by workspace-wide checks (`cargo clippy
// --workspace`); the real build targets bpfel-unknown-none.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    Global,
    bindings::TC_ACT_UNSPEC,
    btf_maps::PerCpuArray,
    macros::{btf_map, classifier},
    programs::TcContext,
};
use ip_masq_common::{
    STAT_SLOTS, STAT_V4_KEPT, STAT_V4_SEEN, STAT_V6_KEPT, STAT_V6_SEEN, StatCounter,
};
use ip_masq_ebpf::{keeps_source_v4, keeps_source_v6};

mod noop;
mod xt_bpf;

/// The mark bit(s) to OR in; the agent overrides it at load time (`--mark`).
#[unsafe(no_mangle)]
static KEEP_SOURCE_MARK: Global<u32> = Global::new(ip_masq_common::DEFAULT_KEEP_SOURCE_MARK);

/// Per-CPU packet counters, read by the agent's metrics endpoint.
#[btf_map]
static STATS: PerCpuArray<StatCounter, { STAT_SLOTS as usize }> = PerCpuArray::new();

const ETH_HEADER_LEN: usize = 14;
const VLAN_HEADER_LEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
/// The IPv4 "more fragments" flag and fragment offset: any bit set makes
/// the packet a fragment.
const IPV4_FRAGMENT: u16 = 0x3FFF;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

#[classifier]
pub fn ipmasq_classify(ctx: TcContext) -> i32 {
    // A packet too short to parse is simply not ours to judge: unmarked,
    // it is decided by the nat chain's xt_bpf rule, on the same table.
    let _ = try_classify(&ctx);
    TC_ACT_UNSPEC
}

/// Looks up the destination of every packet that can start a connection
/// and marks it when the source is kept.
///
/// The mark matters only where the nat table sees a packet: the first of
/// a connection. A TCP segment other than a SYN without ACK cannot start
/// one, so it skips the lookup. Where conntrack picks a connection up mid
/// stream (`nf_conntrack_tcp_loose`, after a flush), that packet arrives
/// unmarked and the xt_bpf rule decides it on the same table, exactly as
/// before. Everything else keeps the lookup: other protocols, fragments
/// (whose TCP header may be elsewhere) and IPv6 with extension headers.
#[inline(always)]
fn try_classify(ctx: &TcContext) -> Result<(), ()> {
    // skb->protocol rather than the frame's EtherType: the kernel has taken
    // an offloaded or outer VLAN tag out of the frame by tcx ingress and
    // names the protocol behind it here.
    // SAFETY: the context is the kernel's __sk_buff for this run.
    let protocol = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let destination = if protocol == ETH_P_8021Q || protocol == ETH_P_8021AD {
        // A tag still in the frame (the inner one of QinQ): the protocol
        // follows it.
        let inner = u16::from_be_bytes(pair(ctx, ETH_HEADER_LEN + 2)?);
        destination::<{ ETH_HEADER_LEN + VLAN_HEADER_LEN }>(ctx, inner)?
    } else {
        destination::<ETH_HEADER_LEN>(ctx, protocol)?
    };
    // One lookup site per family, whatever the header layout: the verifier
    // walks each inlined copy of the search on its own.
    let (keep, seen_slot, kept_slot) = match destination {
        Destination::None => return Ok(()),
        Destination::V4(address) => (keeps_source_v4(address), STAT_V4_SEEN, STAT_V4_KEPT),
        Destination::V6(address) => (keeps_source_v6(address), STAT_V6_SEEN, STAT_V6_KEPT),
    };
    count(seen_slot);
    if keep {
        // OR, never assign: other components own the other bits.
        let mark = unsafe { (*ctx.skb.skb).mark };
        ctx.set_mark(mark | KEEP_SOURCE_MARK.load());
        count(kept_slot);
    }
    Ok(())
}

/// What to look up for one packet.
enum Destination {
    /// Nothing: not IP, or a TCP segment that cannot open a connection.
    None,
    V4([u8; 4]),
    V6([u8; 16]),
}

/// The destination of a packet whose network header is at `L3`, if it is
/// one to look up.
///
/// Every packet read is at a constant offset, hence the const parameter:
/// without CAP_PERFMON (a pod granted only NET_ADMIN and BPF) the verifier
/// applies its Spectre v1 mitigations and refuses to add a register to a
/// packet pointer. The one offset known only at run time, the TCP header
/// behind IPv4 options, is read through `bpf_skb_load_bytes`, which takes
/// it as a plain number. Fields are read as 16- or 32-bit words.
#[inline(always)]
fn destination<const L3: usize>(ctx: &TcContext, protocol: u16) -> Result<Destination, ()> {
    match protocol {
        ETH_P_IPV4 => {
            let [version_ihl, _] = pair(ctx, L3)?;
            let fragment = u16::from_be_bytes(pair(ctx, L3 + 6)?);
            let [_, transport] = pair(ctx, L3 + 8)?;
            if transport == IPPROTO_TCP && fragment & IPV4_FRAGMENT == 0 {
                let header_len = usize::from(version_ihl & 0x0F) * 4;
                let flags = if header_len == IPV4_HEADER_LEN {
                    tcp_flags(ctx, L3 + IPV4_HEADER_LEN)?
                } else {
                    ctx.load::<u8>(L3 + header_len + TCP_FLAGS_OFFSET)
                        .map_err(|_| ())?
                };
                if !opens_connection(flags) {
                    return Ok(Destination::None);
                }
            }
            Ok(Destination::V4(load::<u32>(ctx, L3 + 16)?.to_ne_bytes()))
        }
        ETH_P_IPV6 => {
            let [next_header, _] = pair(ctx, L3 + 6)?;
            if next_header == IPPROTO_TCP
                && !opens_connection(tcp_flags(ctx, L3 + IPV6_HEADER_LEN)?)
            {
                return Ok(Destination::None);
            }
            let mut destination = [0u8; 16];
            for (word, chunk) in destination.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&load::<u32>(ctx, L3 + 24 + word * 4)?.to_ne_bytes());
            }
            Ok(Destination::V6(destination))
        }
        _ => Ok(Destination::None),
    }
}

/// The flags byte of the TCP header at `offset`, read with the data
/// offset byte before it.
#[inline(always)]
fn tcp_flags(ctx: &TcContext, offset: usize) -> Result<u8, ()> {
    let [_, flags] = pair(ctx, offset + TCP_FLAGS_OFFSET - 1)?;
    Ok(flags)
}

/// The two bytes at `offset`, in packet order, from one 16-bit load (a
/// `[u8; 2]` would be read byte by byte).
#[inline(always)]
fn pair(ctx: &TcContext, offset: usize) -> Result<[u8; 2], ()> {
    Ok(load::<u16>(ctx, offset)?.to_ne_bytes())
}

/// Whether TCP flags can open a connection: SYN without ACK.
#[inline(always)]
fn opens_connection(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// Reads a `T` at `offset`: one load straight from the linear packet data
/// when the headers are there (the common case), `bpf_skb_load_bytes` when
/// the skb is non-linear.
#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, offset: usize) -> Result<T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() <= end {
        // SAFETY: bounds checked against data_end just above, which is what
        // the verifier requires. An aligned read on purpose: headers behind
        // the 14-byte Ethernet header sit at 2-byte boundaries, and LLVM's
        // BPF backend splits an unaligned read into byte loads (which were
        // most of this program). The load instructions themselves take any
        // alignment on the JITs of the architectures that run the agent
        // (x86-64, arm64: efficient unaligned access, so the verifier does
        // not enforce alignment of packet reads).
        Ok(unsafe { core::ptr::read((start + offset) as *const T) })
    } else {
        ctx.load::<T>(offset).map_err(|_| ())
    }
}

#[inline(always)]
fn count(slot: u32) {
    if let Some(counter) = STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe { *counter += 1 };
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// On the host this binary is only type-checked; it has nothing to run.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("ip-masq-ebpf is an eBPF object: it is loaded by `ip-masq run`, not run");
    std::process::exit(2);
}

/// The licence the kernel is told, in its module-style spelling of this
/// crate's `MIT OR GPL-2.0-only` (Cargo.toml). The kernel has no SPDX
/// parser: `license_is_gpl_compatible` compares this string against a fixed
/// list ("GPL", "GPL v2", "Dual BSD/GPL", "Dual MIT/GPL", ...), and a program
/// whose object names anything else, Apache-2.0 included, is refused GPL-only
/// helpers. Today the programs call only `bpf_map_lookup_elem` and
/// `bpf_skb_load_bytes`, neither GPL-only, but logging (`bpf_perf_event_output`,
/// `bpf_trace_printk`) and kfuncs are; a GPL-compatible licence keeps
/// them usable without a licence change. ip-masq/tests/workspace.rs checks
/// this section of the built object against Cargo.toml.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

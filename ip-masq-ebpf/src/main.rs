//! TC classifier run at tcx ingress of pod-facing host interfaces, which is
//! the pod's egress. It ORs the keep-source mark into `skb->mark` when the
//! destination's longest matching prefix says "keep source"; a static
//! iptables rule then RETURNs such packets before MASQUERADE.
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
const ETH_TYPE_OFFSET: usize = 12;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV4_DST_OFFSET: usize = ETH_HEADER_LEN + 16;
const IPV6_DST_OFFSET: usize = ETH_HEADER_LEN + 24;

#[classifier]
pub fn ipmasq_classify(ctx: TcContext) -> i32 {
    // A packet too short to parse is simply not ours to judge; the result
    // is the same either way.
    let _ = try_classify(&ctx);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn try_classify(ctx: &TcContext) -> Result<(), ()> {
    let ether_type = u16::from_be_bytes(read::<2>(ctx, ETH_TYPE_OFFSET)?);
    let (keep, seen_slot, kept_slot) = match ether_type {
        ETH_P_IPV4 => (
            keeps_source_v4(read::<4>(ctx, IPV4_DST_OFFSET)?),
            STAT_V4_SEEN,
            STAT_V4_KEPT,
        ),
        ETH_P_IPV6 => (
            keeps_source_v6(read::<16>(ctx, IPV6_DST_OFFSET)?),
            STAT_V6_SEEN,
            STAT_V6_KEPT,
        ),
        _ => return Ok(()),
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

/// Reads `N` bytes at `offset`: straight from the linear packet data when the
/// headers are there (the common case), through `bpf_skb_load_bytes` when
/// the skb is non-linear.
#[inline(always)]
fn read<const N: usize>(ctx: &TcContext, offset: usize) -> Result<[u8; N], ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N <= end {
        // SAFETY: bounds checked against data_end just above.
        Ok(unsafe { *((start + offset) as *const [u8; N]) })
    } else {
        ctx.load::<[u8; N]>(offset).map_err(|_| ())
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

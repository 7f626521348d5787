//! Programs that return at once. Only `cargo xtask bench` loads them, to
//! measure what BPF_PROG_TEST_RUN itself costs per packet for each program
//! type, so that the classifier's and the xt_bpf filter's costs can be
//! given as ratios to them. The agent never loads or attaches them.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, socket_filter},
    programs::{SkBuffContext, TcContext},
};

#[classifier]
pub fn ip_masq_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[socket_filter]
pub fn ip_masq_noop_sf(_ctx: SkBuffContext) -> i64 {
    0
}

/// A socket filter that reads the IPv4 destination as the xt_bpf filter
/// does (one `bpf_skb_load_bytes`: socket filters have no direct packet
/// access) and returns: the floor of any filter that looks at the packet.
#[socket_filter]
pub fn ip_masq_load_sf(ctx: SkBuffContext) -> i64 {
    match ctx.load::<[u8; 4]>(16) {
        Ok(destination) => i64::from(destination[0] == 0xFF),
        Err(_) => 0,
    }
}

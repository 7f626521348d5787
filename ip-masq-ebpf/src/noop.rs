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

//! A TC classifier that returns at once. Only `cargo xtask bench` loads it,
//! to measure what BPF_PROG_TEST_RUN itself costs per packet, so that the
//! classifier's cost can be given as a ratio to it. The agent never loads
//! or attaches it.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};

#[classifier]
pub fn ip_masq_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

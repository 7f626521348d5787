//! The kernel-facing layer: thin side effects only. Each module reaches one
//! kernel interface, and the decisions of what to write come from above.

pub mod conntrack;
pub mod datapath;
pub mod iptables;
pub mod netlink;
pub mod nftables;
pub mod packet;
pub mod watch;

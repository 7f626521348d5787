//! ip-masq: a drop-in replacement for Kubernetes' ip-masq-agent that
//! decides masquerading with an eBPF lookup instead of one iptables rule
//! per CIDR.
//!
//! The tree is the architecture, each layer using only those below it
//! (`tests/layers.rs` checks it):
//!
//! - [`cli`] (clap) turns flags into [`options`], which
//! - [`commands`] (`check`, `dump`, `status`, `doctor`, `cleanup`) and
//! - [`agent`] (the run loop: reload, repair, attach) act on;
//! - [`serve`] publishes the agent's state (HTTP, metrics, state file);
//! - [`kernel`] is the thin side-effect layer (BPF, xt_bpf, iptables,
//!   netlink, inotify);
//! - [`model`] and [`error`] hold the plain types everything shares.
//!
//! The decisions themselves (config text → effective table → diff) are in
//! the pure `ip-masq-config` crate.

pub mod agent;
pub mod cli;
pub mod commands;
pub mod error;
pub mod kernel;
pub mod model;
pub mod options;
pub mod serve;

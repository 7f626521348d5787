//! ip-masq: a drop-in replacement for Kubernetes' ip-masq-agent that
//! decides masquerading with an eBPF LPM lookup instead of one iptables
//! rule per CIDR.
//!
//! The agent is a pipeline: config text → [`config::MasqConfig`] →
//! [`table::Table`] → [`table::Diff`] against what the maps hold → map
//! writes ([`sync`]). Everything before the map writes is pure; the kernel
//! is reached only through [`datapath`], [`rules`] and [`watch`].

pub mod agent;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod datapath;
pub mod doctor;
pub mod duration;
pub mod http;
pub mod interfaces;
pub mod metrics;
pub mod packet;
pub mod ports;
pub mod rules;
pub mod source;
pub mod state;
pub mod status;
pub mod sync;
pub mod table;
pub mod watch;

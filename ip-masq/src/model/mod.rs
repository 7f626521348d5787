//! Plain types every layer shares: no behaviour beyond naming, no I/O, no
//! command-line parsing (the CLI maps its flags onto them).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// An address family: which map, which iptables, which socket filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn iptables(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }

    pub(crate) fn iptables_restore(self) -> &'static str {
        match self {
            Self::V4 => "iptables-restore",
            Self::V6 => "ip6tables-restore",
        }
    }
}

/// Which datapath decides that a packet keeps its source address
/// (`--datapath`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DatapathMode {
    /// A TC classifier on every pod interface marks pod traffic per packet;
    /// the xt_bpf match judges the first packet of what it did not mark
    /// (the node's own traffic, connections from outside into pods).
    Tc,
    /// The xt_bpf match judges all traffic in the nat chain, which sees only
    /// a connection's first packet. No TC program, no interface tracking,
    /// no mark. The default: see the README, "Choosing the datapath".
    #[default]
    XtBpf,
}

/// Which conntrack entries a config change flushes (`--flush-conntrack`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushScope {
    /// None: existing flows keep their decision until their entry expires.
    Off,
    /// Connectionless protocols (everything but TCP and SCTP).
    #[default]
    Connectionless,
    /// All, TCP and SCTP included, which breaks their established connections.
    All,
}

/// One destination's use of the source ports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationUse {
    /// The destination address.
    pub destination: IpAddr,
    /// Its port.
    pub port: u16,
    /// `tcp`, `udp`, `sctp` or the protocol number.
    pub protocol: String,
    /// Masqueraded connections to it.
    pub connections: u64,
    /// Distinct source ports they hold, per node address: the highest.
    pub ports_in_use: u64,
    /// Ports MASQUERADE can choose from.
    pub ports_available: u64,
    /// `ports_in_use / ports_available`, 0 to 1.
    pub utilization: f64,
    /// The pods (sources before translation) holding the most ports, with
    /// how many, most first (at most 5).
    pub top_sources: Vec<(IpAddr, u64)>,
}

pub mod ports;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xt_bpf_is_the_default_mode() {
        assert_eq!(DatapathMode::default(), DatapathMode::XtBpf);
    }
}

//! How full masquerading is, per destination (`ip-masq snat` and the
//! `ip_masq_snat_*` metrics). A
//! masqueraded connection takes one source port of the node address for
//! its (destination address, destination port, protocol), so each such
//! destination can hold as many connections as MASQUERADE has ports: when
//! they run out, new connections fail (conntrack `insert_failed`).
//!
//! The counting is pure ([`utilization`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    net::IpAddr,
};

use crate::{
    kernel::conntrack::Entry,
    model::{DestinationUse, ports::PortRanges},
};

fn protocol_name(number: u8) -> String {
    match number {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

/// Masqueraded connections grouped by destination, fullest first, at most
/// `top` of them. A connection counts when conntrack marks it source-NATed
/// and its translated source (the reply's destination) differs from its
/// original source; protocols without ports are left out.
pub fn utilization(entries: &[Entry], ports_available: u64, top: usize) -> Vec<DestinationUse> {
    #[derive(Default)]
    struct Tally {
        connections: u64,
        ports: BTreeMap<IpAddr, BTreeSet<u16>>,
        sources: BTreeMap<IpAddr, u64>,
    }
    let mut by_destination: BTreeMap<(IpAddr, u16, u8), Tally> = BTreeMap::new();
    for entry in entries {
        let translated = entry.reply.destination;
        if !entry.source_nat
            || translated == entry.original.source
            || !matches!(entry.protocol, 6 | 17 | 132)
        {
            continue;
        }
        let tally = by_destination
            .entry((
                entry.original.destination,
                entry.original.destination_port,
                entry.protocol,
            ))
            .or_default();
        tally.connections += 1;
        tally
            .ports
            .entry(translated)
            .or_default()
            .insert(entry.reply.destination_port);
        *tally.sources.entry(entry.original.source).or_default() += 1;
    }
    let mut uses: Vec<DestinationUse> = by_destination
        .into_iter()
        .map(|((destination, port, protocol), tally)| {
            let ports_in_use = tally
                .ports
                .values()
                .map(|ports| ports.len() as u64)
                .max()
                .unwrap_or(0);
            let mut top_sources: Vec<(IpAddr, u64)> = tally.sources.into_iter().collect();
            top_sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            top_sources.truncate(5);
            DestinationUse {
                destination,
                port,
                protocol: protocol_name(protocol),
                connections: tally.connections,
                ports_in_use,
                ports_available,
                utilization: if ports_available == 0 {
                    1.0
                } else {
                    ports_in_use as f64 / ports_available as f64
                },
                top_sources,
            }
        })
        .collect();
    uses.sort_by(|a, b| {
        b.ports_in_use
            .cmp(&a.ports_in_use)
            .then(b.connections.cmp(&a.connections))
            .then(a.destination.cmp(&b.destination))
            .then(a.port.cmp(&b.port))
    });
    uses.truncate(top);
    uses
}

/// Ports MASQUERADE chooses from: `--to-ports` when the agent uses it, else
/// the namespace's `net.ipv4.ip_local_port_range`.
///
/// # Errors
/// The sysctl cannot be read.
pub fn ports_available(to_ports: Option<&PortRanges>) -> io::Result<u64> {
    if let Some(ranges) = to_ports.filter(|ranges| !ranges.is_empty()) {
        return Ok(ranges
            .iter()
            .map(|range| u64::from(range.port_count()))
            .sum());
    }
    const PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = fs::read_to_string(PATH)?;
    Ok(local_port_range_size(&text))
}

fn local_port_range_size(text: &str) -> u64 {
    let mut bounds = text
        .split_whitespace()
        .filter_map(|word| word.parse::<u64>().ok());
    match (bounds.next(), bounds.next()) {
        (Some(low), Some(high)) if high >= low => high - low + 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::conntrack::Flow;

    fn entry(
        pod: &str,
        port: u16,
        dst: &str,
        dport: u16,
        node: &str,
        translated_port: u16,
        nat: bool,
    ) -> Entry {
        Entry {
            protocol: 17,
            original: Flow {
                source: pod.parse().unwrap(),
                destination: dst.parse().unwrap(),
                source_port: port,
                destination_port: dport,
            },
            reply: Flow {
                source: dst.parse().unwrap(),
                destination: node.parse().unwrap(),
                source_port: dport,
                destination_port: translated_port,
            },
            source_nat: nat,
        }
    }

    #[test]
    fn counts_ports_per_destination_and_names_the_pods() {
        let entries = [
            entry(
                "10.244.1.10",
                1000,
                "203.0.113.5",
                53,
                "192.0.2.1",
                40000,
                true,
            ),
            entry(
                "10.244.1.10",
                1001,
                "203.0.113.5",
                53,
                "192.0.2.1",
                40001,
                true,
            ),
            entry(
                "10.244.1.11",
                1000,
                "203.0.113.5",
                53,
                "192.0.2.1",
                40002,
                true,
            ),
            entry(
                "10.244.1.10",
                1002,
                "203.0.113.6",
                53,
                "192.0.2.1",
                40000,
                true,
            ),
            // Kept: not masqueraded.
            entry(
                "10.244.1.10",
                1003,
                "172.16.5.5",
                53,
                "10.244.1.10",
                1003,
                false,
            ),
        ];
        let uses = utilization(&entries, 4, 10);
        assert_eq!(uses.len(), 2);
        assert_eq!(
            uses[0].destination,
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!((uses[0].connections, uses[0].ports_in_use), (3, 3));
        assert!((uses[0].utilization - 0.75).abs() < 1e-9);
        assert_eq!(uses[0].top_sources[0], ("10.244.1.10".parse().unwrap(), 2));
        assert_eq!(utilization(&entries, 4, 1).len(), 1, "bounded");
    }

    #[test]
    fn port_range_from_the_sysctl_or_to_ports() {
        assert_eq!(local_port_range_size("32768\t60999\n"), 28232);
        let ranges: PortRanges = "40000-40009,50000-50009".parse().unwrap();
        assert_eq!(ports_available(Some(&ranges)).unwrap(), 20);
    }
}

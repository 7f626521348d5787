//! After a config change, the conntrack entries whose decision the change
//! flipped. NAT is decided on a connection's first packet and kept in its
//! conntrack entry, so a UDP flow that stays alive, or a new one reusing
//! the same ports within the entry's timeout, would keep the old decision.
//! As kube-proxy does for UDP Services, those entries are deleted, so the
//! next datagram is decided anew. Connection-oriented protocols (TCP, SCTP)
//! only with `--flush-conntrack=all`: deleting their entries breaks the
//! established connections.

use std::net::IpAddr;

use ip_masq_config::preview::DecisionChange;

use crate::{
    kernel::conntrack::{Entry, Flow},
    model::FlushScope,
};

/// The entries to delete, as (protocol, original flow): those whose
/// original destination lies in a range whose decision changed.
pub(crate) fn entries_to_flush(
    entries: &[Entry],
    changes: &[DecisionChange],
    scope: FlushScope,
) -> Vec<(u8, Flow)> {
    if scope == FlushScope::Off || changes.is_empty() {
        return Vec::new();
    }
    let changed = |address: IpAddr| {
        changes
            .iter()
            .any(|change| change.cidrs.iter().any(|cidr| cidr.contains(&address)))
    };
    entries
        .iter()
        .filter(|entry| scope == FlushScope::All || !matches!(entry.protocol, 6 | 132))
        .filter(|entry| changed(entry.original.destination))
        .map(|entry| (entry.protocol, entry.original))
        .collect()
}

#[cfg(test)]
mod tests {
    use ip_masq_config::{ParseOptions, parse, preview::decision_changes, table::Table};

    use super::*;

    fn table(text: &str) -> Table {
        Table::effective(
            &parse(text.as_bytes(), ParseOptions::default())
                .unwrap()
                .config,
            false,
        )
    }

    fn entry(protocol: u8, destination: &str) -> Entry {
        let flow = Flow {
            source: "10.244.1.10".parse().unwrap(),
            destination: destination.parse().unwrap(),
            source_port: 1000,
            destination_port: 53,
        };
        Entry {
            protocol,
            original: flow,
            reply: flow,
            source_nat: false,
        }
    }

    #[test]
    fn flushes_connectionless_flows_towards_changed_ranges_only() {
        let changes = decision_changes(
            &table("nonMasqueradeCIDRs: [172.16.0.0/12]"),
            &table("nonMasqueradeCIDRs: [203.0.113.0/24]"),
        );
        let entries = [
            entry(17, "203.0.113.5"),
            entry(17, "172.16.5.5"),
            entry(17, "198.51.100.1"),
            entry(6, "203.0.113.5"),
            entry(1, "172.20.0.1"),
        ];
        let destinations = |scope| -> Vec<(u8, String)> {
            entries_to_flush(&entries, &changes, scope)
                .into_iter()
                .map(|(p, f)| (p, f.destination.to_string()))
                .collect()
        };
        assert_eq!(
            destinations(FlushScope::Connectionless),
            [
                (17, "203.0.113.5".into()),
                (17, "172.16.5.5".into()),
                (1, "172.20.0.1".into())
            ]
        );
        assert_eq!(destinations(FlushScope::All).len(), 4);
        assert!(destinations(FlushScope::Off).is_empty());
    }
}

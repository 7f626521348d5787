//! Prometheus metrics, rendered at scrape time from a status snapshot and
//! the per-CPU counters of the classifier and of the xt_bpf socket filters,
//! in the OpenMetrics text format.
//!
//! Every scrape builds a fresh registry around one collector: the values
//! live in [`AgentStatus`] and in the pinned `STATS` and `XT_BPF_STATS`
//! maps, not in metric objects, so there is one source of truth and
//! rendering is a pure function, unit-tested without root.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use prometheus_client::encoding::EncodeLabelSet;

use crate::kernel::datapath::ConnectionStats;
use crate::kernel::datapath::PacketStats;
use crate::serve::state::AgentStatus;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders every metric. `packets` (the classifier's) or `connections`
/// (the socket filters') is `None` when its counters could not be read (the
/// pin is gone); those metrics are then left out rather than reported as
/// zero, which would look like a counter reset.
pub fn render(
    status: &AgentStatus,
    packets: Option<PacketStats>,
    connections: Option<ConnectionStats>,
) -> String {
    let mut registry = Registry::with_prefix("ip_masq");
    registry.register_collector(Box::new(Snapshot {
        status: status.clone(),
        packets,
        connections,
    }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

#[derive(Debug)]
struct Snapshot {
    status: AgentStatus,
    packets: Option<PacketStats>,
    connections: Option<ConnectionStats>,
}

type Labels = [(&'static str, &'static str); 1];

fn family(value: &'static str) -> Labels {
    [("family", value)]
}

/// Writes one counter family with one sample per label set.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// Writes one gauge family with one sample per label set.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = &self.status;
        if let Some(packets) = self.packets {
            counters(
                &mut encoder,
                "packets_seen",
                "Packets the TC classifier looked up at the tcx ingress of a pod interface, by address family: every packet that can open a connection (a TCP SYN without ACK, any other protocol, fragments, IPv6 behind extension headers); other TCP segments skip the lookup. Only --datapath tc attaches the classifier.",
                &[
                    (family("ipv4"), packets.v4_seen),
                    (family("ipv6"), packets.v6_seen),
                ],
            )?;
            counters(
                &mut encoder,
                "packets_keep_source",
                "Packets the TC classifier looked up and marked keep-source (not masqueraded), by address family.",
                &[
                    (family("ipv4"), packets.v4_kept),
                    (family("ipv6"), packets.v6_kept),
                ],
            )?;
        }
        if let Some(connections) = self.connections {
            let sample =
                |decision, family, value| ([("decision", decision), ("family", family)], value);
            counters(
                &mut encoder,
                "connections",
                "New connections the nat chain's xt_bpf rule judged (it sees only a connection's first packet), by the socket filter's decision (keep_source: RETURN; masquerade: on to MASQUERADE) and address family. With --datapath xt-bpf: every connection to a non-local destination; with tc: only those the classifier did not mark (the node's own, forwarded ones from outside, pods' to masqueraded destinations) or that were DNATed.",
                &[
                    sample("keep_source", "ipv4", connections.v4_keep_source),
                    sample("masquerade", "ipv4", connections.v4_masquerade),
                    sample("keep_source", "ipv6", connections.v6_keep_source),
                    sample("masquerade", "ipv6", connections.v6_masquerade),
                ],
            )?;
        }
        counters(
            &mut encoder,
            "config_reloads",
            "Config reloads by result: success (applied) or failure (rejected, previous table kept).",
            &[
                ([("result", "success")], status.reloads_succeeded),
                ([("result", "failure")], status.reloads_failed),
            ],
        )?;
        if let Some(at) = status.last_successful_reload_at {
            let unit = Unit::Seconds;
            let metric = encoder.encode_descriptor(
                "last_successful_reload_timestamp",
                "Unix time of the last config reload that was applied.",
                Some(&unit),
                MetricType::Gauge,
            )?;
            ConstGauge::new(at).encode(metric)?;
        }
        gauge(
            &mut encoder,
            "config_watched",
            "1 while the config directory is watched for changes; 0 when only the resync sees them.",
            i64::from(status.config_watched),
        )?;
        let metric = encoder.encode_descriptor(
            "config_watch_failures",
            "Times the config watch stopped (read error, directory removed or moved) and was set up again.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(status.config_watch_failures).encode(metric)?;
        if let Some(sha256) = &status.config_sha256 {
            let labels: [(&str, String); 2] = [
                ("sha256", sha256.clone()),
                ("sources", status.config_sources.join(",")),
            ];
            let mut metric = encoder.encode_descriptor(
                "config_info",
                "1 for the config in force: its identity (a hash of the table and the flags that shape decisions, equal on nodes that decide alike) and the files it came from.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1i64).encode(metric.encode_family(&labels)?)?;
        }
        {
            // The ten fullest destinations of the last scan: bounded cardinality.
            let label = |d: &crate::model::DestinationUse| -> [(&str, String); 3] {
                [
                    ("destination", d.destination.to_string()),
                    ("port", d.port.to_string()),
                    ("protocol", d.protocol.clone()),
                ]
            };
            let mut metric = encoder.encode_descriptor(
                "snat_port_utilization",
                "Share of MASQUERADE's source ports that masqueraded connections to this destination hold (0 to 1); new connections fail at 1. The ten fullest destinations.",
                None,
                MetricType::Gauge,
            )?;
            for destination in &status.snat_destinations {
                ConstGauge::new(destination.utilization)
                    .encode(metric.encode_family(&label(destination))?)?;
            }
            let mut metric = encoder.encode_descriptor(
                "snat_connections",
                "Masqueraded connections to this destination, for the ten fullest destinations.",
                None,
                MetricType::Gauge,
            )?;
            for destination in &status.snat_destinations {
                ConstGauge::new(as_i64(destination.connections))
                    .encode(metric.encode_family(&label(destination))?)?;
            }
            if let Some((entries, max)) = status.conntrack_usage {
                gauge(
                    &mut encoder,
                    "conntrack_entries",
                    "conntrack entries in use (nf_conntrack_count).",
                    as_i64(entries),
                )?;
                gauge(
                    &mut encoder,
                    "conntrack_max",
                    "Size of the conntrack table (nf_conntrack_max).",
                    as_i64(max),
                )?;
            }
            let mut metric = encoder.encode_descriptor(
                "conntrack_events",
                "conntrack's own failure counters, summed over CPUs (/proc/net/stat/nf_conntrack): insert_failed and drop rise when masquerading runs out of ports.",
                None,
                MetricType::Counter,
            )?;
            for event in [
                "insert_failed",
                "drop",
                "early_drop",
                "clashres",
                "search_restart",
            ] {
                if let Some(value) = status.conntrack_counters.get(event) {
                    ConstCounter::new(*value).encode(metric.encode_family(&[("event", event)])?)?;
                }
            }
        }
        let metric = encoder.encode_descriptor(
            "conntrack_flushed",
            "Conntrack entries deleted after config changes that flipped their decision, so their next packet is decided anew.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(status.conntrack_flushed).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "map_write_failures",
            "LPM map writes the kernel refused; they are retried at the next resync.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(status.map_write_failures).encode(metric)?;
        gauges(
            &mut encoder,
            "map_entries",
            "Entries in the non-masquerade LPM map, by address family.",
            None,
            &[
                (family("ipv4"), as_i64(status.map_entries.ipv4)),
                (family("ipv6"), as_i64(status.map_entries.ipv6)),
            ],
        )?;
        gauges(
            &mut encoder,
            "map_capacity",
            "Capacity of the non-masquerade LPM map (--max-cidrs), by address family.",
            None,
            &[
                (family("ipv4"), as_i64(status.map_capacity.ipv4)),
                (family("ipv6"), as_i64(status.map_capacity.ipv6)),
            ],
        )?;
        gauge(
            &mut encoder,
            "interfaces_attached",
            "Interfaces that carry the classifier at tcx ingress.",
            as_i64(status.attached.len() as u64),
        )?;
        let mut repairs = vec![(family("ipv4"), status.iptables_repairs.ipv4)];
        if status.ipv6 {
            repairs.push((family("ipv6"), status.iptables_repairs.ipv6));
        }
        counters(
            &mut encoder,
            "iptables_repairs",
            "Times the static iptables rules were found missing or changed and put back.",
            &repairs,
        )?;
        counters(
            &mut encoder,
            "repairs",
            "Interference by someone else that the agent repaired, by kind: chain, jump, link (classifier detached), map_pin, program_pin (pin removed), map_entry (map entry removed or put back, or a range directory chunk rewritten).",
            &status
                .repairs
                .by_kind()
                .map(|(kind, count)| ([("kind", kind)], count)),
        )?;
        let metric = encoder.encode_descriptor(
            "build",
            "Build information; the value is always 1.",
            None,
            MetricType::Info,
        )?;
        prometheus_client::metrics::info::Info::new([("version", env!("CARGO_PKG_VERSION"))])
            .encode(metric)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::state::{AttachedInterface, PerFamily};

    fn status() -> AgentStatus {
        AgentStatus {
            ipv6: true,
            reloads_succeeded: 3,
            reloads_failed: 1,
            last_successful_reload_at: Some(1_700_000_000.5),
            map_entries: PerFamily { ipv4: 4, ipv6: 1 },
            map_capacity: PerFamily {
                ipv4: 65_536,
                ipv6: 65_536,
            },
            attached: vec![
                AttachedInterface {
                    name: "veth1".into(),
                    ifindex: 3,
                },
                AttachedInterface {
                    name: "veth2".into(),
                    ifindex: 4,
                },
            ],
            iptables_repairs: PerFamily { ipv4: 2, ipv6: 0 },
            config_watched: true,
            config_watch_failures: 2,
            ..AgentStatus::default()
        }
    }

    fn sample(text: &str, series: &str) -> String {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
            .to_owned()
    }

    #[test]
    fn renders_every_metric_from_the_snapshot() {
        let text = render(
            &status(),
            Some(PacketStats {
                v4_seen: 10,
                v4_kept: 7,
                v6_seen: 2,
                v6_kept: 1,
            }),
            Some(ConnectionStats {
                v4_keep_source: 5,
                v4_masquerade: 4,
                v6_keep_source: 3,
                v6_masquerade: 6,
            }),
        );
        for (series, value) in [
            ("ip_masq_packets_seen_total{family=\"ipv4\"}", "10"),
            ("ip_masq_packets_seen_total{family=\"ipv6\"}", "2"),
            ("ip_masq_packets_keep_source_total{family=\"ipv4\"}", "7"),
            ("ip_masq_packets_keep_source_total{family=\"ipv6\"}", "1"),
            (
                "ip_masq_connections_total{decision=\"keep_source\",family=\"ipv4\"}",
                "5",
            ),
            (
                "ip_masq_connections_total{decision=\"masquerade\",family=\"ipv4\"}",
                "4",
            ),
            (
                "ip_masq_connections_total{decision=\"keep_source\",family=\"ipv6\"}",
                "3",
            ),
            (
                "ip_masq_connections_total{decision=\"masquerade\",family=\"ipv6\"}",
                "6",
            ),
            ("ip_masq_config_reloads_total{result=\"success\"}", "3"),
            ("ip_masq_config_reloads_total{result=\"failure\"}", "1"),
            (
                "ip_masq_last_successful_reload_timestamp_seconds",
                "1700000000.5",
            ),
            ("ip_masq_map_entries{family=\"ipv4\"}", "4"),
            ("ip_masq_map_entries{family=\"ipv6\"}", "1"),
            ("ip_masq_map_capacity{family=\"ipv4\"}", "65536"),
            ("ip_masq_interfaces_attached", "2"),
            ("ip_masq_config_watched", "1"),
            ("ip_masq_config_watch_failures_total", "2"),
            ("ip_masq_iptables_repairs_total{family=\"ipv4\"}", "2"),
            ("ip_masq_iptables_repairs_total{family=\"ipv6\"}", "0"),
            (
                &format!(
                    "ip_masq_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                ),
                "1",
            ),
        ] {
            assert_eq!(sample(&text, series), value, "{series}");
        }
        assert!(text.contains("# TYPE ip_masq_packets_keep_source counter"));
        assert!(text.contains("# TYPE ip_masq_connections counter"));
        assert!(text.contains("# UNIT ip_masq_last_successful_reload_timestamp_seconds seconds"));
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics needs the EOF marker"
        );
    }

    #[test]
    fn unreadable_counters_are_left_out_not_zeroed() {
        let text = render(&status(), None, None);
        assert!(!text.contains("ip_masq_packets_seen"), "{text}");
        assert!(!text.contains("ip_masq_connections"), "{text}");
        assert!(text.contains("ip_masq_config_reloads_total"));
        // Each map on its own: an agent older than XT_BPF_STATS left only STATS.
        let text = render(&status(), Some(PacketStats::default()), None);
        assert!(text.contains("ip_masq_packets_seen_total"), "{text}");
        assert!(!text.contains("ip_masq_connections"), "{text}");
        let text = render(&status(), None, Some(ConnectionStats::default()));
        assert!(!text.contains("ip_masq_packets_seen"), "{text}");
        assert_eq!(
            sample(
                &text,
                "ip_masq_connections_total{decision=\"keep_source\",family=\"ipv4\"}"
            ),
            "0"
        );
    }

    #[test]
    fn no_reload_yet_means_no_timestamp_and_ipv4_only_repairs() {
        let text = render(&AgentStatus::default(), None, None);
        assert!(!text.contains("last_successful_reload"), "{text}");
        assert!(!text.contains("ip_masq_iptables_repairs_total{family=\"ipv6\"}"));
        assert_eq!(sample(&text, "ip_masq_interfaces_attached"), "0");
    }

    #[test]
    fn repairs_are_counted_by_kind() {
        let mut status = AgentStatus::default();
        status.repairs.chain = 2;
        status.repairs.map_pin = 1;
        status.repairs.map_entry = 3;
        let text = render(&status, None, None);
        for (kind, value) in [
            ("chain", "2"),
            ("jump", "0"),
            ("link", "0"),
            ("map_pin", "1"),
            ("program_pin", "0"),
            ("map_entry", "3"),
        ] {
            assert_eq!(
                sample(&text, &format!("ip_masq_repairs_total{{kind=\"{kind}\"}}")),
                value,
                "{kind}"
            );
        }
    }
}

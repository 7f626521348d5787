//! `ip-masq snat` on the real kernel: masqueraded connections to one
//! destination from a narrowed port range fill it, the counts are exact
//! against `conntrack -L`, and running out of ports shows in conntrack's
//! failure counters. Root.

use std::net::UdpSocket;

use lab::{Lab, LabOptions, agent::agent_binary, topology::EXTERNAL_OUTSIDE_V4};
use serde_json::Value;

const PORTS: &str = "40000-40009";

fn datagram_from_a_fresh_socket(lab: &Lab) {
    let to = format!("{EXTERNAL_OUTSIDE_V4}:5353");
    lab.pods[0].netns.enter(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.send_to(b"x", to.as_str()).expect("send");
    });
}

fn snat_report(lab: &Lab) -> Value {
    let output = lab.node.exec(
        agent_binary().to_str().expect("utf-8 path"),
        &["snat", "--to-ports", PORTS, "--json"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// Masqueraded UDP entries towards the destination, by `conntrack -L`.
fn conntrack_count(lab: &Lab) -> usize {
    let output = lab.node.exec(
        "conntrack",
        &[
            "-L",
            "-p",
            "udp",
            "-d",
            EXTERNAL_OUTSIDE_V4,
            "--dport",
            "5353",
        ],
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("dport=5353"))
        .count()
}

#[test]
#[ignore = "needs root"]
fn a_narrow_port_range_fills_up_and_the_counts_match_conntrack() {
    let lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    });
    // A resync a second, so that the agent's SNAT scan runs often.
    lab.write_config("resyncInterval: 1s\n");
    let _agent = lab.start_agent(&["--to-ports", PORTS]);
    for _ in 0..9 {
        datagram_from_a_fresh_socket(&lab);
    }
    let report = snat_report(&lab);
    let destination = &report["destinations"][0];
    assert_eq!(report["ports_available"], 10);
    assert_eq!(destination["destination"], EXTERNAL_OUTSIDE_V4);
    assert_eq!(destination["port"], 5353);
    assert_eq!(destination["protocol"], "udp");
    assert_eq!(
        destination["connections"].as_u64(),
        Some(conntrack_count(&lab) as u64),
        "exact against conntrack -L"
    );
    assert_eq!(destination["ports_in_use"], 9);
    assert!((destination["utilization"].as_f64().unwrap() - 0.9).abs() < 1e-9);
    assert_eq!(
        destination["top_sources"][0][0],
        lab.pods[0].ipv4.to_string()
    );

    let failed_before = report["conntrack"]["counters"]["insert_failed"]
        .as_u64()
        .unwrap_or(0)
        + report["conntrack"]["counters"]["drop"]
            .as_u64()
            .unwrap_or(0);
    // The tenth fills the range; the ones after it find no port.
    for _ in 0..5 {
        datagram_from_a_fresh_socket(&lab);
    }
    let report = snat_report(&lab);
    let destination = &report["destinations"][0];
    assert_eq!(destination["ports_in_use"], 10);
    assert_eq!(destination["utilization"].as_f64(), Some(1.0));
    assert_eq!(
        destination["connections"].as_u64(),
        Some(conntrack_count(&lab) as u64)
    );
    let failed_after = report["conntrack"]["counters"]["insert_failed"]
        .as_u64()
        .unwrap_or(0)
        + report["conntrack"]["counters"]["drop"]
            .as_u64()
            .unwrap_or(0);
    assert!(failed_after > failed_before, "no failure counted: {report}");

    // The agent's own scan exports the same, at its next resync.
    let utilization = format!(
        "ip_masq_snat_port_utilization{{destination=\"{EXTERNAL_OUTSIDE_V4}\",port=\"5353\",protocol=\"udp\"}} 1"
    );
    let exported = lab::wait_until(std::time::Duration::from_secs(10), || {
        let (_, body) = lab.node.http_get("127.0.0.1:9483", "/metrics");
        body.lines()
            .any(|line| line.starts_with(utilization.as_str()))
            && body.lines().any(|line| {
                (line.starts_with("ip_masq_conntrack_events_total{event=\"insert_failed\"}")
                    || line.starts_with("ip_masq_conntrack_events_total{event=\"drop\"}"))
                    && !line.ends_with(" 0")
            })
    });
    assert!(exported, "the metrics show the full range and the failures");
}

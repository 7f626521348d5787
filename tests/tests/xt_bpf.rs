//! Traffic the node sends itself, and the `--datapath xt-bpf` mode, on the
//! real kernel: the nat chain's xt_bpf rule runs the pinned socket filter,
//! which looks the destination up in the same LPM maps as the classifier.
//!
//! The node sends from a secondary address on its uplink, as host-network
//! pods, node daemons and VIPs do. Upstream's chain keeps that source for
//! non-masquerade destinations; MASQUERADE would rewrite it to the uplink's
//! own address. Needs root.

use std::{net::IpAddr, path::Path, time::Duration};

use aya::programs::{ProgramInfo, loaded_programs};
use lab::{
    AgentBuilder, Lab, LabOptions,
    agent::ip_masq_in,
    python::{self, Sample, sample_value},
    topology::{
        EXTERNAL_INSIDE_V4, EXTERNAL_INSIDE_V6, EXTERNAL_OUTSIDE_V4, EXTERNAL_OUTSIDE_V6,
        NODE_UPLINK_V4, NODE_UPLINK_V6, try_observed_source_from,
    },
    wait_until,
};
use serde_json::Value;

/// A second address on the node's uplink, in the uplink's subnet.
const NODE_SECONDARY_V4: &str = "192.0.2.50";
/// A second IPv6 address on the node's uplink.
const NODE_SECONDARY_V6: &str = "2001:db8:ff::50";
/// Keeps the source for 172.16.0.0/12 and fd00::/8, where the external
/// host's "inside" addresses live; its "outside" addresses are masqueraded.
const CONFIG: &str = "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, fd00::/8]\n";

/// One address family's view of the lab, for node-originated traffic.
struct NodeFamily {
    /// The node's secondary address, which the client socket binds.
    secondary: &'static str,
    /// External address inside the config's non-masquerade ranges.
    inside: &'static str,
    /// External address outside them.
    outside: &'static str,
    /// The node's uplink address, which MASQUERADE picks.
    uplink: &'static str,
}

const FAMILIES: [NodeFamily; 2] = [
    NodeFamily {
        secondary: NODE_SECONDARY_V4,
        inside: EXTERNAL_INSIDE_V4,
        outside: EXTERNAL_OUTSIDE_V4,
        uplink: NODE_UPLINK_V4,
    },
    NodeFamily {
        secondary: NODE_SECONDARY_V6,
        inside: EXTERNAL_INSIDE_V6,
        outside: EXTERNAL_OUTSIDE_V6,
        uplink: NODE_UPLINK_V6,
    },
];

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A dual-stack lab whose node has secondary addresses on its uplink.
fn lab_with_secondary_addresses() -> Lab {
    with_secondary_addresses(Lab::new(LabOptions {
        ipv6: true,
        ..LabOptions::default()
    }))
}

/// Gives the node of `lab` secondary addresses on its uplink.
fn with_secondary_addresses(lab: Lab) -> Lab {
    // Same /24 as the uplink's address, so the kernel makes it secondary:
    // MASQUERADE keeps choosing the primary, 192.0.2.1.
    lab.node.ip(&[
        "addr",
        "add",
        &format!("{NODE_SECONDARY_V4}/24"),
        "dev",
        "uplink0",
    ]);
    // IPv6 has no primary: source selection prefers the newest address, so
    // MASQUERADE would pick this one itself. Deprecated (preferred_lft 0),
    // as a VIP is, it is never chosen, yet sockets bound to it still use it.
    lab.node.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{NODE_SECONDARY_V6}/64"),
        "dev",
        "uplink0",
        "nodad",
        "preferred_lft",
        "0",
    ]);
    lab.write_config(CONFIG);
    lab
}

/// The source address `destination` sees from a node socket bound to `source`.
fn node_sends(lab: &Lab, source: &str, destination: &str) -> IpAddr {
    try_observed_source_from(
        &lab.node,
        &lab.external,
        ip(source),
        ip(destination),
        Duration::from_secs(3),
    )
    .unwrap_or_else(|err| panic!("{source} -> {destination} failed: {err}"))
}

/// Asserts upstream's decisions for node-originated traffic: the secondary
/// address towards non-masquerade destinations, the uplink address (from
/// MASQUERADE) towards the others. Both families.
fn assert_node_traffic_keeps_upstreams_decisions(lab: &Lab) {
    for NodeFamily {
        secondary,
        inside,
        outside,
        uplink,
    } in FAMILIES
    {
        assert_eq!(
            node_sends(lab, secondary, inside),
            ip(secondary),
            "non-masquerade destination {inside} must see the bound source"
        );
        assert_eq!(
            node_sends(lab, secondary, outside),
            ip(uplink),
            "masqueraded destination {outside} must see the uplink address"
        );
    }
}

/// Asserts the core decisions for pod traffic in both families.
fn assert_pod_traffic_keeps_upstreams_decisions(lab: &Lab) {
    for pod in &lab.pods {
        let pod_v6 = pod.ipv6.expect("lab built with IPv6");
        for (destination, expected) in [
            (EXTERNAL_INSIDE_V4, pod.ipv4),
            (EXTERNAL_OUTSIDE_V4, ip(NODE_UPLINK_V4)),
            (EXTERNAL_INSIDE_V6, pod_v6),
            (EXTERNAL_OUTSIDE_V6, ip(NODE_UPLINK_V6)),
        ] {
            assert_eq!(
                lab.observed_source(pod, ip(destination)),
                expected,
                "{} -> {destination}",
                pod.host_interface
            );
        }
    }
}

/// The rules of chain IP-MASQ-AGENT as `program -t nat -S` lists them.
fn chain_rules(lab: &Lab, program: &str) -> Vec<String> {
    lab.node
        .iptables_save(program, "nat")
        .lines()
        .filter(|line| line.starts_with("-A IP-MASQ-AGENT "))
        .map(str::to_owned)
        .collect()
}

/// Id of the program pinned at `path`.
fn pinned_program_id(path: &Path) -> u32 {
    ProgramInfo::from_pin(path)
        .unwrap_or_else(|err| panic!("no program pinned at {}: {err}", path.display()))
        .id()
}

/// Whether the kernel still holds a program with this id.
fn program_loaded(id: u32) -> bool {
    loaded_programs().any(|info| info.is_ok_and(|info| info.id() == id))
}

/// Interfaces of the node that a TC program could be attached to.
fn node_interfaces(lab: &Lab) -> Vec<String> {
    let mut names: Vec<String> = lab.pods.iter().map(|p| p.host_interface.clone()).collect();
    names.push("uplink0".into());
    names
}

#[test]
#[ignore = "needs root"]
fn tc_mode_node_traffic_from_a_secondary_address() {
    let lab = lab_with_secondary_addresses();
    let _agent = lab.start_agent(&["--enable-ipv6"]);
    let pin_dir = lab.bpffs.pin_dir();
    for (program, pin) in [("iptables", "xt_bpf_v4"), ("ip6tables", "xt_bpf_v6")] {
        let rules = chain_rules(&lab, program);
        assert_eq!(rules.len(), 3, "{program}: {rules:#?}");
        assert!(
            rules[0]
                .contains("-m mark --mark 0x1000/0x1000 -m conntrack ! --ctstate DNAT -j RETURN"),
            "{rules:#?}"
        );
        assert!(
            rules[1].contains(&format!(
                "-m bpf --object-pinned {}/{pin} -j RETURN",
                pin_dir.display()
            )),
            "{rules:#?}"
        );
        assert!(rules[2].contains("-j MASQUERADE"), "{rules:#?}");
    }
    assert_node_traffic_keeps_upstreams_decisions(&lab);
    assert_pod_traffic_keeps_upstreams_decisions(&lab);
}

#[test]
#[ignore = "needs root"]
fn the_default_xt_bpf_mode_decides_node_and_pod_traffic_without_any_tc_program() {
    let lab = lab_with_secondary_addresses();
    // No --datapath: the agent's default.
    let agent = lab.agent_with_defaults(&["--enable-ipv6"]).spawn();
    agent.wait_ready();
    let pin_dir = lab.bpffs.pin_dir();
    for (program, pin) in [("iptables", "xt_bpf_v4"), ("ip6tables", "xt_bpf_v6")] {
        let rules = chain_rules(&lab, program);
        assert_eq!(rules.len(), 2, "{program}: {rules:#?}");
        assert!(
            rules[0].contains(&format!(
                "-m bpf --object-pinned {}/{pin} -j RETURN",
                pin_dir.display()
            )),
            "{rules:#?}"
        );
        assert!(!rules[0].contains("addrtype"), "{rules:#?}");
        assert!(rules[1].contains("-j MASQUERADE"), "{rules:#?}");
    }
    for interface in node_interfaces(&lab) {
        assert_eq!(
            lab.node.tcx_ingress_programs(&interface),
            Vec::<String>::new(),
            "no TC program on {interface}"
        );
    }
    assert_node_traffic_keeps_upstreams_decisions(&lab);
    assert_pod_traffic_keeps_upstreams_decisions(&lab);
}

#[test]
#[ignore = "needs root"]
fn xt_bpf_lookup_honours_the_longest_prefix_action() {
    let lab = lab_with_secondary_addresses();
    // Exceptions both ways: 172.16.5.0/24 is masqueraded inside a
    // keep-source /12; 203.0.113.0/24 keeps the source.
    lab.write_config(
        "nonMasqueradeCIDRs: [172.16.0.0/12, 203.0.113.0/24, fd00::/8, 2001:db8:5::/48]\n\
         masqueradeCIDRs: [172.16.5.0/24, fd00:aaaa::/32]\n",
    );
    for mode in ["tc", "xt-bpf"] {
        let mut agent = lab.start_agent(&["--enable-ipv6", "--datapath", mode]);
        // The config turns the usual roles around: "inside" now lies in a
        // masquerade exception, "outside" in a non-masquerade range.
        for NodeFamily {
            secondary,
            inside: masqueraded,
            outside: kept,
            uplink,
        } in FAMILIES
        {
            assert_eq!(
                node_sends(&lab, secondary, masqueraded),
                ip(uplink),
                "{mode}: {masqueraded} lies in a masquerade exception"
            );
            assert_eq!(
                node_sends(&lab, secondary, kept),
                ip(secondary),
                "{mode}: {kept} lies in a non-masquerade range"
            );
        }
        agent
            .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
            .expect("agent exits on SIGTERM");
    }
}

#[test]
#[ignore = "needs root"]
fn restart_replaces_the_pins_and_the_rules_follow() {
    let lab = lab_with_secondary_addresses();
    let v4_pin = lab.bpffs.pin_dir().join("xt_bpf_v4");
    let v6_pin = lab.bpffs.pin_dir().join("xt_bpf_v6");
    let mut agent = lab.start_agent(&["--enable-ipv6"]);
    let old = [pinned_program_id(&v4_pin), pinned_program_id(&v6_pin)];
    for pod in &lab.pods {
        assert_eq!(
            lab.node.tcx_ingress_programs(&pod.host_interface),
            ["ipmasq_classify"],
            "the tc run attached the classifier to {}",
            pod.host_interface
        );
    }
    agent
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .expect("agent exits on SIGTERM");
    // While the agent is down, the rules keep running the pinned programs.
    assert_node_traffic_keeps_upstreams_decisions(&lab);

    // Restart in the other mode: new programs under the same paths, the
    // classifier gone from every interface.
    let agent = lab.start_agent(&["--enable-ipv6", "--datapath", "xt-bpf"]);
    let new = [pinned_program_id(&v4_pin), pinned_program_id(&v6_pin)];
    for (old, new) in old.into_iter().zip(new) {
        assert_ne!(old, new, "the pin names this run's program");
        // The chain was rewritten, so no rule holds the old program.
        assert!(
            wait_until(Duration::from_secs(30), || !program_loaded(old)),
            "program {old} still loaded after the restart"
        );
    }
    let staging: Vec<String> = std::fs::read_dir(lab.bpffs.pin_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("staging"))
        .collect();
    assert!(staging.is_empty(), "staging pins left: {staging:?}");
    // Unpinning drops the kernel's last reference to a link, and the kernel
    // frees (detaches) it from a workqueue: on a loaded machine that can
    // lag the agent's ready state by a moment.
    for interface in node_interfaces(&lab) {
        wait_until(Duration::from_secs(10), || {
            lab.node.tcx_ingress_programs(&interface).is_empty()
        });
        assert_eq!(
            lab.node.tcx_ingress_programs(&interface),
            Vec::<String>::new(),
            "the tc run's link on {interface} is gone"
        );
    }
    let state = agent.state().expect("state file");
    assert_eq!(state["attachesToInterfaces"], false, "{state:#}");
    assert_eq!(state["attached"], serde_json::json!([]), "{state:#}");
    assert_node_traffic_keeps_upstreams_decisions(&lab);
    assert_pod_traffic_keeps_upstreams_decisions(&lab);
}

#[test]
#[ignore = "needs root"]
fn cleanup_removes_the_socket_filter_pins() {
    let lab = lab_with_secondary_addresses();
    let pin_dir = lab.bpffs.pin_dir();
    let pins = [pin_dir.join("xt_bpf_v4"), pin_dir.join("xt_bpf_v6")];
    let mut agent = lab.start_agent(&["--enable-ipv6"]);
    let ids = pins.each_ref().map(|pin| pinned_program_id(pin));
    agent
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .expect("agent exits on SIGTERM");

    let pin_arg = pin_dir.to_str().unwrap();
    let mut cleanup = AgentBuilder::new(
        &lab.node.path(),
        &["cleanup", "--pin-path", pin_arg, "--enable-ipv6"],
    )
    .spawn();
    let status = cleanup
        .wait_exit(Duration::from_secs(30))
        .expect("cleanup exits");
    assert!(status.success(), "cleanup failed:\n{}", cleanup.log());

    for pin in &pins {
        assert!(!pin.exists(), "{} still pinned", pin.display());
    }
    assert!(!pin_dir.exists(), "pin directory removed");
    for program in ["iptables", "ip6tables"] {
        let nat = lab.node.iptables_save(program, "nat");
        assert!(
            !nat.contains("IP-MASQ-AGENT") && !nat.contains("--object-pinned"),
            "{program} still holds our rules:\n{nat}"
        );
    }
    // Neither a pin nor a rule holds the socket filters any more.
    for id in ids {
        assert!(
            wait_until(Duration::from_secs(30), || !program_loaded(id)),
            "socket filter {id} still loaded after cleanup"
        );
    }
}

/// The agent's default metrics listener, inside the node namespace.
const METRICS: &str = "127.0.0.1:9483";

fn scrape(lab: &Lab) -> Vec<Sample> {
    let (code, body) = lab.node.http_get(METRICS, "/metrics");
    assert_eq!(code, 200, "{body}");
    python::parse_openmetrics(&body)
}

/// `ip-masq status --json` for the lab's agent, run in the node namespace.
fn status_json(lab: &Lab) -> Value {
    let pin_dir = lab.bpffs.pin_dir();
    let state_dir = lab.state_dir();
    let output = ip_masq_in(
        &lab.node,
        &[
            "status",
            "--json",
            "--pin-path",
            pin_dir.to_str().expect("utf-8 path"),
            "--state-dir",
            state_dir.to_str().expect("utf-8 path"),
        ],
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "status printed no JSON ({err}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// New connections opened in one round, per family, by who and where to.
#[derive(Clone, Copy)]
struct Round {
    pod_kept: usize,
    pod_masqueraded: usize,
    node_kept: usize,
    node_masqueraded: usize,
}

const ROUNDS: [Round; 2] = [
    // IPv4
    Round {
        pod_kept: 7,
        pod_masqueraded: 4,
        node_kept: 3,
        node_masqueraded: 2,
    },
    // IPv6: other numbers, so that a count in the wrong family shows.
    Round {
        pod_kept: 5,
        pod_masqueraded: 6,
        node_kept: 1,
        node_masqueraded: 4,
    },
];

/// Opens the round's TCP connections for one family, each from a fresh
/// source port (a new conntrack entry), and checks each one's source.
fn open_connections(lab: &Lab, round: Round, family: &NodeFamily, ipv6: bool) {
    let pod = &lab.pods[0];
    let pod_address = if ipv6 {
        pod.ipv6.expect("lab built with IPv6")
    } else {
        pod.ipv4
    };
    for _ in 0..round.pod_kept {
        assert_eq!(lab.observed_source(pod, ip(family.inside)), pod_address);
    }
    for _ in 0..round.pod_masqueraded {
        assert_eq!(
            lab.observed_source(pod, ip(family.outside)),
            ip(family.uplink)
        );
    }
    for _ in 0..round.node_kept {
        assert_eq!(
            node_sends(lab, family.secondary, family.inside),
            ip(family.secondary)
        );
    }
    for _ in 0..round.node_masqueraded {
        assert_eq!(
            node_sends(lab, family.secondary, family.outside),
            ip(family.uplink)
        );
    }
}

/// The xt_bpf filters count each new connection that reaches their rule
/// exactly once, by decision and family: with `--datapath xt-bpf` that is
/// every connection, pods' and the node's; in tc mode only what the
/// classifier did not mark, so pods' keep-source connections (RETURNed by
/// the mark rule first) are not among them. The classifier's lookup
/// counters stay apart: in xt-bpf mode no classifier runs at all.
#[test]
#[ignore = "needs root"]
fn socket_filters_count_each_new_connection_once() {
    // No bridge: the node sends IGMP reports from cni0's address for a
    // while after it comes up, each a new (multicast) conntrack entry that
    // reaches the chain and is counted, at times no test can predict.
    let lab = with_secondary_addresses(Lab::new(LabOptions {
        ipv6: true,
        routed_pods: 1,
        bridged_pods: 0,
    }));
    lab.write_config(&format!("{CONFIG}resyncInterval: 1h\n"));
    let stats_pin = lab.bpffs.pin_dir().join("XT_BPF_STATS");
    let mut stats_map = None;
    for mode in ["xt-bpf", "tc"] {
        let mut agent = lab.start_agent(&["--enable-ipv6", "--datapath", mode]);
        // Pinned, so a restart keeps counting in the same map.
        let id = aya::maps::MapInfo::from_pin(&stats_pin)
            .expect("XT_BPF_STATS is pinned")
            .id();
        assert_eq!(*stats_map.get_or_insert(id), id, "{mode}: same map");
        let before = scrape(&lab);
        for (index, (round, family)) in ROUNDS.iter().zip(&FAMILIES).enumerate() {
            open_connections(&lab, *round, family, index == 1);
        }
        let after = scrape(&lab);
        let value = |samples: &[Sample], name: &str, labels: &[(&str, &str)]| {
            sample_value(samples, name, labels)
                .unwrap_or_else(|| panic!("{mode}: no {name}{labels:?} in {samples:?}"))
        };
        let delta = |name: &str, labels: &[(&str, &str)]| {
            value(&after, name, labels) - value(&before, name, labels)
        };
        for (round, family) in ROUNDS.iter().zip(["ipv4", "ipv6"]) {
            let pod_kept_by_filter = if mode == "xt-bpf" { round.pod_kept } else { 0 };
            assert_eq!(
                delta(
                    "ip_masq_connections_total",
                    &[("decision", "keep_source"), ("family", family)]
                ),
                (pod_kept_by_filter + round.node_kept) as f64,
                "{mode}: {family} keep-source connections"
            );
            assert_eq!(
                delta(
                    "ip_masq_connections_total",
                    &[("decision", "masquerade"), ("family", family)]
                ),
                (round.pod_masqueraded + round.node_masqueraded) as f64,
                "{mode}: {family} masqueraded connections"
            );
            let seen = delta("ip_masq_packets_seen_total", &[("family", family)]);
            let kept = delta("ip_masq_packets_keep_source_total", &[("family", family)]);
            if mode == "xt-bpf" {
                assert_eq!((seen, kept), (0.0, 0.0), "{family}: no classifier runs");
            } else {
                // The packets that can open a connection: each connection's
                // SYN (a retransmitted one too), not its other segments.
                let pod_connections = (round.pod_kept + round.pod_masqueraded) as f64;
                assert!(
                    kept >= round.pod_kept as f64 && seen >= pod_connections,
                    "{family}: {seen} looked up and {kept} kept for {pod_connections} connections, {} kept",
                    round.pod_kept
                );
            }
        }
        // `status` reads the same map.
        let status = status_json(&lab);
        let connections = &status["connections"];
        for (key, name, labels) in [
            (
                "ipv4KeepSource",
                "ip_masq_connections_total",
                [("decision", "keep_source"), ("family", "ipv4")],
            ),
            (
                "ipv6Masquerade",
                "ip_masq_connections_total",
                [("decision", "masquerade"), ("family", "ipv6")],
            ),
        ] {
            assert_eq!(
                connections[key].as_u64().map(|v| v as f64),
                Some(value(&after, name, &labels)),
                "{mode}: status {key}: {status:#}"
            );
        }
        agent
            .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
            .expect("agent exits on SIGTERM");
    }
}

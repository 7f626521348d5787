//! Drop-in compatibility with ip-masq-agent, end to end in namespaces:
//! taking over its chain and jump, `--random-fully`, and `--to-ports`.
//! Needs root.

use std::{net::IpAddr, time::Duration};

use lab::{
    Lab, LabOptions,
    topology::{EXTERNAL_INSIDE_V4, EXTERNAL_OUTSIDE_V4, NODE_UPLINK_V4, try_observed_peer},
    wait_until,
};

const UPSTREAM_JUMP_COMMENT: &str = "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain";

/// The nat table as ip-masq-agent leaves it: one RETURN per CIDR, then
/// MASQUERADE, and its POSTROUTING jump.
fn upstream_nat_table(cidrs: &[&str]) -> String {
    let mut restore = String::from("*nat\n:IP-MASQ-AGENT - [0:0]\n");
    restore.push_str(&format!(
        "-A POSTROUTING -m comment --comment \"{UPSTREAM_JUMP_COMMENT}\" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n"
    ));
    for cidr in cidrs {
        restore.push_str(&format!(
            "-A IP-MASQ-AGENT -d {cidr} -m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN\n"
        ));
    }
    restore.push_str("-A IP-MASQ-AGENT -m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE --random-fully\nCOMMIT\n");
    restore
}

fn chain_rules(lab: &Lab) -> Vec<String> {
    lab.node
        .iptables_save("iptables", "nat")
        .lines()
        .filter(|line| line.starts_with("-A IP-MASQ-AGENT "))
        .map(str::to_owned)
        .collect()
}

fn jumps(lab: &Lab) -> usize {
    lab.node
        .iptables_save("iptables", "nat")
        .lines()
        .filter(|line| line.starts_with("-A POSTROUTING ") && line.ends_with("-j IP-MASQ-AGENT"))
        .count()
}

#[test]
#[ignore = "needs root"]
fn takes_over_an_ip_masq_agent_chain_and_jump() {
    let lab = Lab::new(LabOptions::default());
    let restore = upstream_nat_table(&[
        "169.254.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ]);
    let loaded = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.node.name(),
            "iptables-restore",
            "--noflush",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(restore.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(loaded.success());
    assert_eq!(chain_rules(&lab).len(), 5, "upstream chain pre-loaded");
    assert_eq!(jumps(&lab), 1);

    let _agent = lab.start_agent(&[]);
    let rules = chain_rules(&lab);
    assert!(
        rules.iter().all(|rule| !rule.contains(" -d ")),
        "per-CIDR rules are gone: {rules:#?}"
    );
    assert!(
        rules[0].contains("-m mark --mark 0x1000/0x1000 -m conntrack ! --ctstate DNAT -j RETURN"),
        "{rules:#?}"
    );
    assert!(
        rules
            .last()
            .unwrap()
            .ends_with("-j MASQUERADE --random-fully"),
        "{rules:#?}"
    );
    assert_eq!(jumps(&lab), 1, "the jump appears once");
    let pod = &lab.pods[0];
    assert_eq!(
        lab.observed_source(pod, EXTERNAL_INSIDE_V4.parse().unwrap()),
        pod.ipv4
    );
    assert_eq!(
        lab.observed_source(pod, EXTERNAL_OUTSIDE_V4.parse().unwrap()),
        NODE_UPLINK_V4.parse::<IpAddr>().unwrap()
    );
}

#[test]
#[ignore = "needs root"]
fn duplicate_jumps_are_collapsed_and_a_removed_jump_comes_back() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config("resyncInterval: 1s\n");
    let agent = lab.start_agent(&[]);
    let jump = [
        "-w",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        UPSTREAM_JUMP_COMMENT,
        "-m",
        "addrtype",
        "!",
        "--dst-type",
        "LOCAL",
        "-j",
        "IP-MASQ-AGENT",
    ];
    lab.node.exec_ok("iptables", &jump);
    assert_eq!(jumps(&lab), 2);
    assert!(
        wait_until(Duration::from_secs(30), || jumps(&lab) == 1),
        "duplicate removed"
    );
    agent.wait_state("the duplicate counted", Duration::from_secs(30), |state| {
        state["repairs"]["jump"] == 1
    });
    let mut delete = jump;
    delete[3] = "-D";
    lab.node.exec_ok("iptables", &delete);
    assert_eq!(jumps(&lab), 0);
    assert!(
        wait_until(Duration::from_secs(30), || jumps(&lab) == 1),
        "jump restored"
    );
    let state = agent.wait_state("the restore counted", Duration::from_secs(30), |state| {
        state["repairs"]["jump"] == 2
    });
    assert_eq!(state["repairs"]["chain"], 0, "{state:#}");
}

#[test]
#[ignore = "needs root"]
fn random_fully_flag() {
    let lab = Lab::new(LabOptions::default());
    let mut agent = lab.start_agent(&[]);
    assert!(
        chain_rules(&lab)
            .last()
            .unwrap()
            .ends_with("-j MASQUERADE --random-fully")
    );
    agent
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .unwrap();
    let _agent = lab.start_agent(&["--random-fully=false"]);
    let rules = chain_rules(&lab);
    assert!(
        rules.last().unwrap().ends_with("-j MASQUERADE"),
        "{rules:#?}"
    );
    assert!(
        rules.iter().all(|rule| !rule.contains("random-fully")),
        "{rules:#?}"
    );
}

#[test]
#[ignore = "needs root"]
fn to_ports_puts_masqueraded_source_ports_in_the_ranges() {
    let lab = Lab::new(LabOptions::default());
    // Two small ranges of equal size, so both are hit in a few dozen tries.
    let _agent = lab.start_agent(&["--to-ports", "40000-40099,50000-50099"]);
    let rules = chain_rules(&lab);
    for protocol in ["tcp", "udp", "sctp"] {
        assert_eq!(
            rules
                .iter()
                .filter(
                    |rule| rule.contains(&format!("-p {protocol} ")) && rule.contains("--to-ports")
                )
                .count(),
            2,
            "{rules:#?}"
        );
    }
    let pod = &lab.pods[0];
    let node: IpAddr = NODE_UPLINK_V4.parse().unwrap();
    let (mut low, mut high) = (0, 0);
    for _ in 0..60 {
        let peer = try_observed_peer(
            &pod.netns,
            &lab.external,
            EXTERNAL_OUTSIDE_V4.parse().unwrap(),
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(peer.ip(), node, "masqueraded");
        match peer.port() {
            40000..=40099 => low += 1,
            50000..=50099 => high += 1,
            other => panic!("source port {other} outside --to-ports"),
        }
    }
    println!("--to-ports spread over 60 connections: {low} low, {high} high");
    // Equal halves: each range gets some; 60 fair coin flips all landing on
    // one side has probability 2^-59.
    assert!(low > 0 && high > 0, "low {low}, high {high}");
    // Non-masqueraded traffic keeps its own source port range.
    let inside = try_observed_peer(
        &pod.netns,
        &lab.external,
        EXTERNAL_INSIDE_V4.parse().unwrap(),
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(inside.ip(), pod.ipv4);
}

/// Every `--to-ports` value upstream's flag parser takes starts the agent
/// with the same rules upstream writes: ranges in the order given, overlaps
/// and port 0 included, an empty value meaning no per-port rules. A port
/// above 65535, which upstream takes and iptables then refuses, is refused
/// at start with a message that says so.
#[test]
#[ignore = "needs root"]
fn to_ports_takes_what_upstream_takes() {
    let lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    });
    for (value, ranges) in [
        ("", &[][..]),
        ("0", &["0"][..]),
        ("0-65535", &["0-65535"][..]),
        (
            "50000-50099,40000-40099,40050-40060",
            &["50000-50099", "40000-40099", "40050-40060"][..],
        ),
    ] {
        let mut agent = lab.start_agent(&[&format!("--to-ports={value}")]);
        let rules = chain_rules(&lab);
        let tcp: Vec<&str> = rules
            .iter()
            .filter(|rule| rule.contains("-p tcp ") && rule.contains("--to-ports"))
            .map(|rule| {
                rule.rsplit("--to-ports ")
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(tcp, ranges, "--to-ports={value}: {rules:#?}");
        assert!(
            rules.last().unwrap().contains("-j MASQUERADE"),
            "{rules:#?}"
        );
        agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    }
    let mut refused = lab.agent(&["--to-ports=1024-70000"]).spawn();
    let status = refused.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(refused.log().contains("above 65535"), "{}", refused.log());
}

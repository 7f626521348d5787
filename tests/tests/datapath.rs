//! End-to-end tests of the core datapath on the real kernel: a node
//! namespace running the agent, pods behind veths (one through a bridge) and
//! an external host whose TCP server reports the source address it saw.
//! Needs root.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use lab::{
    Lab, LabOptions, Pod,
    topology::{
        EXTERNAL_INSIDE_V4, EXTERNAL_INSIDE_V6, EXTERNAL_LINK_LOCAL_V4, EXTERNAL_OUTSIDE_V4,
        EXTERNAL_OUTSIDE_V6, NODE_UPLINK_V4, NODE_UPLINK_V6,
    },
    wait_until,
};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Asserts what `destination` sees from `pod`: its own address or the node's.
fn assert_sees(lab: &Lab, pod: &Pod, destination: &str, expected: IpAddr) {
    let seen = lab.observed_source(pod, ip(destination));
    assert_eq!(
        seen, expected,
        "{} -> {destination}: expected {expected}, saw {seen}",
        pod.host_interface
    );
}

/// How long a change may take to show: generous, since tests run in
/// parallel on a small machine. Tests print how long it did take.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an agent may take to exit on SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls until `destination` sees `expected` from `pod`; returns how long it took.
fn wait_until_sees(lab: &Lab, pod: &Pod, destination: &str, expected: IpAddr) -> Duration {
    let started = Instant::now();
    let mut last = None;
    let reached = wait_until(CHANGE_TIMEOUT, || {
        last = Some(lab.observed_source(pod, ip(destination)));
        last == Some(expected)
    });
    assert!(
        reached,
        "{destination} still saw {last:?} from {} {CHANGE_TIMEOUT:?} after the change (expected {expected})",
        pod.host_interface
    );
    started.elapsed()
}

#[test]
#[ignore = "needs root"]
fn default_config_keeps_pod_ip_inside_and_masquerades_outside() {
    let lab = Lab::new(LabOptions::default());
    let _agent = lab.start_agent(&[]);
    let node = ip(NODE_UPLINK_V4);
    for pod in &lab.pods {
        assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
        assert_sees(&lab, pod, EXTERNAL_LINK_LOCAL_V4, pod.ipv4);
        assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);
    }
    // One attachment per pod interface, first in the chain.
    for pod in &lab.pods {
        assert_eq!(
            lab.node.tcx_ingress_programs(&pod.host_interface),
            ["ipmasq_classify"]
        );
    }
}

#[test]
#[ignore = "needs root"]
fn masq_link_local_masquerades_link_local() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config("masqLinkLocal: true\n");
    let _agent = lab.start_agent(&[]);
    let node = ip(NODE_UPLINK_V4);
    for pod in &lab.pods {
        assert_sees(&lab, pod, EXTERNAL_LINK_LOCAL_V4, node);
        assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    }
}

#[test]
#[ignore = "needs root"]
fn ipv6_with_enable_ipv6() {
    let lab = Lab::new(LabOptions {
        ipv6: true,
        ..LabOptions::default()
    });
    lab.write_config("nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, fd00::/8]\n");
    let _agent = lab.start_agent(&["--enable-ipv6"]);
    let nat6 = lab.node.iptables_save("ip6tables", "nat");
    assert!(
        nat6.contains("-j MASQUERADE"),
        "ip6tables chain missing:\n{nat6}"
    );
    for pod in &lab.pods {
        let pod_v6 = pod.ipv6.expect("lab built with IPv6");
        assert_sees(&lab, pod, EXTERNAL_INSIDE_V6, pod_v6);
        assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V6, ip(NODE_UPLINK_V6));
        assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
        assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, ip(NODE_UPLINK_V4));
    }
}

#[test]
#[ignore = "needs root"]
fn live_reload_in_place_and_by_configmap_swap() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config_configmap_style("nonMasqueradeCIDRs: [172.16.0.0/12]\n");
    let agent = lab.start_agent(&[]);
    let pod = &lab.pods[0];
    let node = ip(NODE_UPLINK_V4);
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);

    // ConfigMap-style: a new version directory and a `..data` swap.
    lab.write_config_configmap_style("nonMasqueradeCIDRs: [203.0.113.0/24]\n");
    let swap = wait_until_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, node);

    // A second swap, back again.
    lab.write_config_configmap_style("nonMasqueradeCIDRs: [172.16.0.0/12]\n");
    let swap_back = wait_until_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);
    println!("configmap swap reflected in {swap:?} and {swap_back:?}");
    // One reload per swap, however many inotify events a swap makes.
    let state = agent.wait_reloads_succeeded(3, CHANGE_TIMEOUT);
    assert_eq!(state["reloadsSucceeded"], 3, "{state:#}");
    assert_eq!(state["reloadsFailed"], 0, "{state:#}");
}

#[test]
#[ignore = "needs root"]
fn live_reload_of_a_plain_file() {
    let lab = Lab::new(LabOptions::default());
    let _agent = lab.start_agent(&[]);
    let pod = &lab.pods[1];
    assert_sees(&lab, pod, EXTERNAL_LINK_LOCAL_V4, pod.ipv4);
    lab.write_config("masqLinkLocal: true\n");
    let took = wait_until_sees(&lab, pod, EXTERNAL_LINK_LOCAL_V4, ip(NODE_UPLINK_V4));
    println!("file rewrite reflected in {took:?}");
}

/// Each bad file is refused with one error line that names the file and the
/// bad value, also across the resyncs that re-read it (`resyncInterval:
/// 1s`, and the test waits for a whole one per file); the previous table
/// stays in force and the agent runs on.
#[test]
#[ignore = "needs root"]
fn bad_config_keeps_previous_table_and_agent_running() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12]\nresyncInterval: 1s\n");
    let mut agent = lab.start_agent(&[]);
    let pod = &lab.pods[0];
    let node = ip(NODE_UPLINK_V4);
    let config_path = lab.config_path().display().to_string();
    let cases = [
        (
            "nonMasqueradeCIDRs: [203.0.113.0/24, not-a-cidr]\nresyncInterval: 1s\n",
            "not-a-cidr",
        ),
        (
            "nonMasqueradeCIDRs: [203.0.113.0/24, 10.0.0.1/8]\nresyncInterval: 1s\n",
            "10.0.0.1/8",
        ),
        (
            "nonMasqueradeCIDRs: [203.0.113.0/24\nresyncInterval: 1s\n",
            "config is not valid YAML",
        ),
    ];
    for (round, (text, bad_value)) in cases.into_iter().enumerate() {
        lab.write_config(text);
        let rejected = round as u64 + 1;
        let state = agent.wait_reloads_failed(rejected, CHANGE_TIMEOUT);
        assert_eq!(state["reloadsSucceeded"], 1, "{state:#}");
        // A resync re-reads the file: a repeated error would show up now.
        agent.wait_for_resync();
        let state = agent.state().expect("state file");
        assert_eq!(state["reloadsFailed"], rejected, "{state:#}");
        // The error line is the promise: one per bad file, naming it.
        let log = agent.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("config rejected"))
            .collect();
        assert_eq!(lines.len(), round + 1, "one error per bad file:\n{log}");
        let line = lines[round];
        assert!(line.contains(&config_path), "error names the file: {line}");
        assert!(
            line.contains(bad_value),
            "error names {bad_value:?}: {line}"
        );
        // The previous table is still in force, and the agent still runs.
        assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
        assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);
        assert!(agent.is_running());
    }
    // A good file after bad ones is applied.
    lab.write_config("nonMasqueradeCIDRs: [203.0.113.0/24]\n");
    wait_until_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, pod.ipv4);
    agent.wait_reloads_succeeded(2, CHANGE_TIMEOUT);
}

#[test]
#[ignore = "needs root"]
fn pod_created_after_start_is_classified() {
    let mut lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    });
    let agent = lab.start_agent(&[]);
    lab.add_pod(2, false, false);
    let pod = &lab.pods[1];
    agent.wait_state(
        &format!("{} attached", pod.host_interface),
        CHANGE_TIMEOUT,
        |state| {
            state["attached"]
                .as_array()
                .is_some_and(|attached| attached.iter().any(|a| a["name"] == *pod.host_interface))
        },
    );
    assert_eq!(
        lab.node.tcx_ingress_programs(&pod.host_interface),
        ["ipmasq_classify"]
    );
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, ip(NODE_UPLINK_V4));
}

/// The uplink is a veth here, as on kind and other container-based nodes,
/// and the default selector (every veth) would take it and run the
/// classifier on all inbound traffic. It holds the default route, so it is
/// left alone; it is taken when no default route leaves through it, left
/// again when one does (followed through rtnetlink route events, with no
/// resync in between), and taken whenever `--interfaces` names it.
#[test]
#[ignore = "needs root"]
fn the_uplink_holding_the_default_route_gets_the_classifier_only_when_named() {
    const CLASSIFIER: &str = "ipmasq_classify";
    let lab = Lab::new(LabOptions::default());
    lab.write_config("resyncInterval: 1h\n");
    let mut agent = lab.start_agent(&[]);
    let pod = &lab.pods[0];
    let bare = |lab: &Lab| lab.node.tcx_ingress_programs("uplink0").is_empty();
    assert!(bare(&lab), "{}", agent.log());
    for pod in &lab.pods {
        assert_eq!(
            lab.node.tcx_ingress_programs(&pod.host_interface),
            [CLASSIFIER]
        );
    }

    lab.node.ip(&["route", "del", "default"]);
    assert!(
        wait_until(CHANGE_TIMEOUT, || {
            lab.node.tcx_ingress_programs("uplink0") == [CLASSIFIER]
        }),
        "no default route: the uplink is just a veth\n{}",
        agent.log()
    );
    lab.node
        .ip(&["route", "add", "default", "via", "192.0.2.2"]);
    // The kernel frees a link whose last pin went from a workqueue.
    assert!(
        wait_until(CHANGE_TIMEOUT, || bare(&lab)),
        "the default route is back: {:?}\n{}",
        lab.node.tcx_ingress_programs("uplink0"),
        agent.log()
    );
    assert!(
        agent
            .log()
            .contains("detached: the interface is not selected"),
        "{}",
        agent.log()
    );
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, ip(NODE_UPLINK_V4));

    agent
        .signal_and_wait(libc::SIGTERM, EXIT_TIMEOUT)
        .expect("agent exits on SIGTERM");
    let _named = lab.start_agent(&["--interfaces", "vpod*,vbr*,uplink0"]);
    for interface in lab
        .pods
        .iter()
        .map(|pod| pod.host_interface.as_str())
        .chain(["uplink0"])
    {
        assert_eq!(lab.node.tcx_ingress_programs(interface), [CLASSIFIER]);
    }
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, ip(NODE_UPLINK_V4));
}

/// Addresses standing for Service ClusterIPs: inside 10.0.0.0/8, so the
/// classifier, which runs before DNAT, would keep the source for all of them.
const SERVICE_TO_OUTSIDE: &str = "10.96.0.10";
const SERVICE_TO_INSIDE: &str = "10.96.0.11";
const SERVICE_TO_POD: &str = "10.96.0.12";

/// kube-proxy's shape: DNAT in nat PREROUTING from a ClusterIP to an endpoint.
fn add_service(lab: &Lab, cluster_ip: &str, endpoint: &str) {
    let cluster_ip = format!("{cluster_ip}/32");
    lab.node.exec_ok(
        "iptables",
        &[
            "-w",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            &cluster_ip,
            "-p",
            "tcp",
            "-j",
            "DNAT",
            "--to-destination",
            endpoint,
        ],
    );
}

/// What the endpoint sees of a connection from `client` to `cluster_ip`.
fn seen_via_service(
    client: &lab::Netns,
    server: &lab::Netns,
    cluster_ip: &str,
    endpoint: IpAddr,
) -> IpAddr {
    lab::topology::try_observed_source_via(
        client,
        server,
        ip(cluster_ip),
        endpoint,
        Duration::from_secs(3),
    )
    .unwrap_or_else(|err| panic!("connection to {cluster_ip} -> {endpoint} failed: {err}"))
}

/// A Service is decided on its endpoint, as ip-masq-agent decides it in
/// POSTROUTING after kube-proxy's DNAT: a selector-less Service in front of
/// an external database outside the non-masquerade ranges is masqueraded
/// although its ClusterIP is inside 10.0.0.0/8; one in front of a kept
/// destination or a pod keeps the pod IP; and traffic from outside DNATed to
/// a pod (NodePort, hostPort) keeps its source, as upstream's chain does.
#[test]
#[ignore = "needs root"]
fn service_traffic_is_decided_on_the_translated_destination() {
    for datapath in ["tc", "xt-bpf"] {
        let lab = Lab::new(LabOptions::default());
        let (client, target_pod) = (&lab.pods[0], &lab.pods[1]);
        add_service(&lab, SERVICE_TO_OUTSIDE, EXTERNAL_OUTSIDE_V4);
        add_service(&lab, SERVICE_TO_INSIDE, EXTERNAL_INSIDE_V4);
        add_service(&lab, SERVICE_TO_POD, &target_pod.ipv4.to_string());
        // A hostPort-style DNAT of connections from outside to the node's
        // uplink address, onto the client pod.
        lab.node.exec_ok(
            "iptables",
            &[
                "-w",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                "uplink0",
                "-d",
                NODE_UPLINK_V4,
                "-p",
                "tcp",
                "-j",
                "DNAT",
                "--to-destination",
                &client.ipv4.to_string(),
            ],
        );
        let _agent = lab.start_agent(&["--datapath", datapath]);
        let node = ip(NODE_UPLINK_V4);

        let seen = seen_via_service(
            &client.netns,
            &lab.external,
            SERVICE_TO_OUTSIDE,
            ip(EXTERNAL_OUTSIDE_V4),
        );
        assert_eq!(
            seen, node,
            "{datapath}: Service with an endpoint outside the ranges kept the pod IP"
        );
        let seen = seen_via_service(
            &client.netns,
            &lab.external,
            SERVICE_TO_INSIDE,
            ip(EXTERNAL_INSIDE_V4),
        );
        assert_eq!(
            seen, client.ipv4,
            "{datapath}: Service with a kept endpoint"
        );
        let seen = seen_via_service(
            &client.netns,
            &target_pod.netns,
            SERVICE_TO_POD,
            target_pod.ipv4,
        );
        assert_eq!(seen, client.ipv4, "{datapath}: pod -> Service -> pod");
        // Without the Service, the same pod's direct traffic is decided as before.
        assert_sees(&lab, client, EXTERNAL_OUTSIDE_V4, node);
        assert_sees(&lab, client, EXTERNAL_INSIDE_V4, client.ipv4);

        let external_source: IpAddr = "192.0.2.2".parse().unwrap();
        let seen = seen_via_service(&lab.external, &client.netns, NODE_UPLINK_V4, client.ipv4);
        assert_eq!(
            seen, external_source,
            "{datapath}: hostPort traffic from outside keeps its source"
        );
    }
}

/// The CNI portmap plugin's rules as it leaves them on a node once a
/// hostPort pod has run (`plugins/meta/portmap`, default `markMasqBit` 13):
/// POSTROUTING masquerades every packet that carries 0x2000, ahead of our
/// jump.
fn add_portmap_rules(lab: &Lab) {
    for rule in [
        &["-N", "CNI-HOSTPORT-MASQ"][..],
        &[
            "-A",
            "CNI-HOSTPORT-MASQ",
            "-m",
            "mark",
            "--mark",
            "0x2000/0x2000",
            "-j",
            "MASQUERADE",
        ],
        &[
            "-I",
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            "CNI portfwd requiring masquerade",
            "-j",
            "CNI-HOSTPORT-MASQ",
        ],
        &["-N", "CNI-HOSTPORT-SETMARK"],
        &[
            "-A",
            "CNI-HOSTPORT-SETMARK",
            "-m",
            "comment",
            "--comment",
            "CNI portfwd masquerade mark",
            "-j",
            "MARK",
            "--set-xmark",
            "0x2000/0x2000",
        ],
    ] {
        let mut args = vec!["-w", "-t", "nat"];
        args.extend_from_slice(rule);
        lab.node.exec_ok("iptables", &args);
    }
}

/// The default mark is not portmap's: with portmap's rules in place, kept
/// traffic keeps the pod IP in tc mode. With portmap's own bit as the mark,
/// the same traffic is masqueraded, which is what the default avoids.
#[test]
#[ignore = "needs root"]
fn the_default_mark_survives_portmaps_masquerade_rule() {
    let lab = Lab::new(LabOptions::default());
    add_portmap_rules(&lab);
    let node = ip(NODE_UPLINK_V4);
    {
        let _agent = lab.start_agent(&[]);
        for pod in &lab.pods {
            assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
            assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);
        }
    }
    let _colliding = lab.start_agent(&["--mark", "0x2000"]);
    for pod in &lab.pods {
        assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, node);
    }
}
/// An entry whose value is no action (written by another tool, or a future
/// version) in the LPM record: the programs decide with the range
/// directory, so it changes no decision, and it must not survive a start
/// or a resync, where it would be read back as part of the table.
#[test]
#[ignore = "needs root"]
fn entries_with_an_unknown_action_are_removed_at_start_and_at_resync() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config("resyncInterval: 1s\n");
    let mut agent = lab.start_agent(&[]);
    let pod = &lab.pods[0];
    let node = ip(NODE_UPLINK_V4);
    let pin_dir = lab.bpffs.pin_dir();
    // Inside the kept 172.16.0.0/12, around the inside address.
    const STRAY: &str = "172.16.5.0/24";
    let stray_dumped = format!("{STRAY} unknown(7)");
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    agent
        .signal_and_wait(libc::SIGTERM, EXIT_TIMEOUT)
        .expect("agent exits on SIGTERM");

    // Written while the agent is down: in the record, not in what the
    // programs read.
    lab::agent::write_raw_map_entry(&pin_dir, STRAY, 7);
    assert!(
        lab::agent::dump_maps(&pin_dir)
            .unwrap()
            .contains(&stray_dumped)
    );
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);

    // The restarted agent removes it before it is ready, keeps the known
    // entries (its first reload writes nothing) and names what it removed.
    let agent = lab.start_agent(&[]);
    let dumped = lab::agent::dump_maps(&pin_dir).unwrap();
    assert!(
        !dumped.contains(&stray_dumped),
        "{dumped:?}\n{}",
        agent.log()
    );
    let state = agent.wait_state("the first reload", CHANGE_TIMEOUT, |state| {
        state["lastReload"]["result"] == "applied"
    });
    assert_eq!(
        (
            &state["lastReload"]["added"],
            &state["lastReload"]["removed"]
        ),
        (&0.into(), &0.into()),
        "the known entries are restored: {state:#}"
    );
    assert_eq!(state["repairs"]["mapEntry"], 1, "{state:#}");
    // The warning is how an operator finds who writes such entries.
    assert_eq!(
        agent.count_in_log("unknown action value"),
        1,
        "{}",
        agent.log()
    );
    assert!(
        agent.log().contains(&format!("{STRAY}=7")),
        "{}",
        agent.log()
    );
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);

    // Written while it runs: deciding nothing, and gone at the next resync.
    lab::agent::write_raw_map_entry(&pin_dir, STRAY, 7);
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert!(
        wait_until(CHANGE_TIMEOUT, || {
            !lab::agent::dump_maps(&pin_dir)
                .unwrap()
                .contains(&stray_dumped)
        }),
        "stray entry still there {CHANGE_TIMEOUT:?} later:\n{}",
        agent.log()
    );
    agent.wait_state("a second map entry repair", CHANGE_TIMEOUT, |state| {
        state["repairs"]["mapEntry"] == 2
    });
    assert_eq!(
        agent.count_in_log("unknown action value"),
        2,
        "{}",
        agent.log()
    );
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);
    assert_eq!(
        lab::agent::dump_maps(&pin_dir).unwrap(),
        [
            "10.0.0.0/8 keep-source",
            "169.254.0.0/16 keep-source",
            "172.16.0.0/12 keep-source",
            "192.168.0.0/16 keep-source"
        ]
        .map(str::to_owned)
        .into_iter()
        .collect()
    );
}

/// The programs decide with the range directory: a chunk that someone
/// overwrites in place (`bpftool map update` on the pinned array) changes
/// the decisions at once, and the next resync finds it and rewrites it.
#[test]
#[ignore = "needs root"]
fn a_directory_chunk_changed_in_place_is_rewritten_at_resync() {
    use aya::maps::{Array, Map, MapData};
    let lab = Lab::new(LabOptions::default());
    lab.write_config("resyncInterval: 1s\n");
    let agent = lab.start_agent(&[]);
    let pod = &lab.pods[0];
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    // 172.16.5.5 sits in the /16 chunk 172.16, which 172.16.0.0/12 keeps
    // whole: one uniform entry. Set it to "masquerade the whole chunk".
    let pin = lab.bpffs.pin_dir().join(ip_masq_common::MAP_DIRECTORY_V4);
    let mut directory: Array<MapData, u64> = Array::try_from(Map::Array(
        MapData::from_pin(&pin).expect("pinned directory"),
    ))
    .expect("array");
    let chunk = (172 << 8) | 16;
    let kept = directory.get(&chunk, 0).expect("read");
    assert_eq!(kept, ip_masq_common::DirectoryEntry::uniform(true).0);
    let masquerading = ip_masq_common::DirectoryEntry::uniform(false).0;
    directory.set(chunk, masquerading, 0).expect("write");
    // Seen at once, or put back first by a resync that came right away.
    let seen = lab.observed_source(pod, ip(EXTERNAL_INSIDE_V4));
    assert!(
        seen == ip(NODE_UPLINK_V4) || directory.get(&chunk, 0).expect("read") == kept,
        "the programs did not read the directory: {seen}"
    );
    let state = agent.wait_state("the directory repair", CHANGE_TIMEOUT, |state| {
        state["repairs"]["mapEntry"] == 1
    });
    assert_eq!(directory.get(&chunk, 0).expect("read"), kept, "{state:#}");
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert_eq!(
        agent.count_in_log("range directory chunks changed by someone"),
        1,
        "{}",
        agent.log()
    );
}

/// The agent's metrics and health listener in the lab (its default).
const METRICS: &str = "127.0.0.1:9483";

/// Whether the node's nat table mentions our chain at all.
fn nat_has_our_chain(lab: &Lab) -> bool {
    lab.node
        .iptables_save("iptables", "nat")
        .contains("IP-MASQ-AGENT")
}

/// A first start on an invalid file, with nothing in the maps to keep: as
/// ip-masq-agent, which writes no chain until its config is valid, nothing
/// is masqueraded, and the agent says so and is not ready. A valid file is
/// applied as soon as it is written.
#[test]
#[ignore = "needs root"]
fn invalid_file_at_first_start_masquerades_nothing_until_a_valid_one() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12, not-a-cidr]\n");
    let agent = lab.agent(&[]).spawn();
    let pod = &lab.pods[0];
    let node = ip(NODE_UPLINK_V4);
    const WITHHELD: &str = "no earlier table to keep";
    let mut last = (0, String::new());
    assert!(
        wait_until(lab::agent::READY_TIMEOUT, || {
            last = lab
                .node
                .try_http_get(METRICS, "/readyz")
                .unwrap_or_else(|err| (0, err));
            last.1.contains(WITHHELD)
        }),
        "readyz never said why: {last:?}\n{}",
        agent.log()
    );
    assert_eq!(last.0, 503, "{last:?}");
    assert!(
        last.1.contains("not-a-cidr"),
        "names the problem: {}",
        last.1
    );
    assert!(
        !nat_has_our_chain(&lab),
        "{}",
        lab.node.iptables_save("iptables", "nat")
    );
    // Neither is masqueraded: there is no chain.
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    let state = agent.state().expect("state file");
    assert_eq!(state["rulesWithheld"], true, "{state:#}");
    assert_eq!(state["rulesInstalled"], false, "{state:#}");
    // What the log says is the promise here: once, and never "ready:".
    let log = agent.log();
    assert_eq!(agent.count_in_log("config rejected"), 1, "{log}");
    assert_eq!(agent.count_in_log(WITHHELD), 1, "{log}");
    assert!(!log.contains("stays in force"), "{log}");
    assert!(!log.contains("ready:"), "{log}");

    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12]\n");
    agent.wait_ready();
    assert!(
        nat_has_our_chain(&lab),
        "{}",
        lab.node.iptables_save("iptables", "nat")
    );
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert!(
        wait_until(CHANGE_TIMEOUT, || {
            last = lab.node.http_get(METRICS, "/readyz");
            last.0 == 200
        }),
        "{last:?}"
    );
    assert_eq!(agent.count_in_log("ready:"), 1, "{}", agent.log());
}

/// A restart on an invalid file keeps the table the earlier agent left in
/// the pinned maps: it is the last good config.
#[test]
#[ignore = "needs root"]
fn restart_on_an_invalid_file_keeps_the_restored_table() {
    const READY_LINE: &str = "ready: maps filled";
    let lab = Lab::new(LabOptions::default());
    // Unlike the defaults: the outside address keeps the pod IP, the inside
    // one is masqueraded.
    lab.write_config("nonMasqueradeCIDRs: [203.0.113.0/24]\n");
    let mut agent = lab.start_agent(&[]);
    let pod = &lab.pods[0];
    let node = ip(NODE_UPLINK_V4);
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, node);
    agent
        .signal_and_wait(libc::SIGTERM, EXIT_TIMEOUT)
        .expect("agent exits on SIGTERM");

    lab.write_config("nonMasqueradeCIDRs: [203.0.113.0/24, not-a-cidr]\n");
    let agent = lab.start_agent(&[]);
    // The table in force is the two entries restored from the maps (the
    // CIDR and link-local): no reload was applied.
    let state = agent.state().expect("state file");
    assert_eq!(state["mapEntries"]["ipv4"], 2, "{state:#}");
    assert_eq!(state["reloadsSucceeded"], 0, "{state:#}");
    assert_eq!(state["lastReload"]["result"], "rejected", "{state:#}");
    let log = agent.log();
    assert_eq!(
        agent.count_in_log(
            "config rejected, the table restored from the pinned maps stays in force"
        ),
        1,
        "{log}"
    );
    assert!(!log.contains("no earlier table"), "{log}");
    assert!(
        nat_has_our_chain(&lab),
        "{}",
        lab.node.iptables_save("iptables", "nat")
    );
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, node);
    assert_sees(&lab, pod, EXTERNAL_LINK_LOCAL_V4, pod.ipv4);
    let (code, body) = lab.node.http_get(METRICS, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("last config reload failed"), "{body}");
    assert!(!body.contains("no earlier table"), "{body}");
    // Not ready, so no "ready:" either: the log and /readyz agree.
    assert_eq!(agent.count_in_log(READY_LINE), 0, "{}", agent.log());

    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12]\n");
    wait_until_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);
    // Ready once the valid file is applied, and said once.
    assert!(
        wait_until(Duration::from_secs(5), || agent.count_in_log(READY_LINE)
            == 1),
        "{}",
        agent.log()
    );
    let (code, body) = lab.node.http_get(METRICS, "/readyz");
    assert_eq!(code, 200, "{body}");
}

/// Swaps two directories atomically (`renameat2(RENAME_EXCHANGE)`), so
/// that the path of the first never goes missing.
fn exchange_directories(a: &std::path::Path, b: &std::path::Path) {
    use std::{ffi::CString, os::unix::ffi::OsStrExt as _};
    let a_c = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b_c = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a_c.as_ptr(),
            libc::AT_FDCWD,
            b_c.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(
        rc,
        0,
        "exchange {} and {}: {}",
        a.display(),
        b.display(),
        std::io::Error::last_os_error()
    );
}

/// Removes a directory the lab does not own, also when the test fails.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A watch follows the directory's inode, not its path: when the directory
/// is replaced, the agent notices that its watch is lost, counts it, sets it
/// up on the new directory, and a later change is still picked up at once
/// (the hour-long resync would not see it within the test).
#[test]
#[ignore = "needs root"]
fn config_watch_survives_its_directory_being_replaced() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12]\nresyncInterval: 1h\n");
    let agent = lab.start_agent(&[]);
    let pod = &lab.pods[0];
    let node = ip(NODE_UPLINK_V4);
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);
    let metric = |name: &str| {
        let (_, body) = lab.node.http_get(METRICS, "/metrics");
        body.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    };
    assert_eq!(metric("ip_masq_config_watched"), "1");
    assert_eq!(metric("ip_masq_config_watch_failures_total"), "0");

    // A new directory with the same file takes the old one's place.
    let mut replacement = lab.config_dir().as_os_str().to_owned();
    replacement.push(".replacement");
    let replacement = RemoveOnDrop(replacement.into());
    std::fs::create_dir(&replacement.0).unwrap();
    std::fs::write(
        replacement.0.join("ip-masq-agent"),
        "nonMasqueradeCIDRs: [172.16.0.0/12]\nresyncInterval: 1h\n",
    )
    .unwrap();
    exchange_directories(lab.config_dir(), &replacement.0);
    let state = agent.wait_state("the watch lost and set up again", CHANGE_TIMEOUT, |state| {
        state["configWatchFailures"] == 1 && state["configWatched"] == true
    });
    assert_eq!(state["configWatchFailures"], 1, "{state:#}");
    assert_eq!(metric("ip_masq_config_watch_failures_total"), "1");
    assert_eq!(metric("ip_masq_config_watched"), "1");

    // A change in the directory now at the path is applied at once.
    lab.write_config("nonMasqueradeCIDRs: [203.0.113.0/24]\nresyncInterval: 1h\n");
    wait_until_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, pod.ipv4);
    assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, node);
    // And so is the next one.
    lab.write_config("nonMasqueradeCIDRs: [10.0.0.0/8]\nresyncInterval: 1h\n");
    wait_until_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);
    let state = agent.wait_reloads_succeeded(3, CHANGE_TIMEOUT);
    assert_eq!(state["reloadsSucceeded"], 3, "{state:#}");
    assert_eq!(state["configWatchFailures"], 1, "{state:#}");
}

/// Packets that matched each of the chain's deciding rules, from
/// `iptables-save -c`: the mark RETURN, the xt_bpf RETURN and MASQUERADE.
#[derive(Debug, Default)]
struct Decided {
    by_mark: u64,
    by_xt_bpf: u64,
    masqueraded: u64,
}

fn decided(lab: &Lab) -> Decided {
    let save = lab.node.exec_ok("iptables-save", &["-c", "-t", "nat"]);
    let mut decided = Decided::default();
    for line in save.lines() {
        let Some((counters, rule)) = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("] "))
        else {
            continue;
        };
        if !rule.starts_with("-A IP-MASQ-AGENT ") {
            continue;
        }
        let packets: u64 = counters
            .split_once(':')
            .and_then(|(packets, _)| packets.parse().ok())
            .unwrap_or_else(|| panic!("counters of {line}"));
        if rule.contains(" -m mark --mark ") {
            decided.by_mark += packets;
        } else if rule.contains(" -m bpf ") {
            decided.by_xt_bpf += packets;
        } else if rule.contains(" -j MASQUERADE") {
            decided.masqueraded += packets;
        }
    }
    decided
}

/// In `tc` mode the classifier decides pod traffic: a connection to a kept
/// destination leaves by the mark RETURN (the classifier set the very bit
/// the rule matches, the default one or another chosen with `--mark`), not
/// by the xt_bpf rule behind it, which would decide the same and so hide a
/// classifier that does nothing. A masqueraded one matches neither.
#[test]
#[ignore = "needs root"]
fn the_classifier_decides_pod_traffic_in_tc_mode() {
    for mark in [None, Some("0x40000")] {
        let lab = Lab::new(LabOptions::default());
        let args: Vec<&str> = mark.map_or_else(Vec::new, |mark| vec!["--mark", mark]);
        let _agent = lab.start_agent(&args);
        let save = lab.node.iptables_save("iptables", "nat");
        let bit = mark.unwrap_or("0x1000");
        assert!(
            save.contains(&format!("-m mark --mark {bit}/{bit} ")),
            "the rule matches the bit the classifier sets:\n{save}"
        );
        lab.node
            .exec_ok("iptables", &["-w", "-t", "nat", "-Z", "IP-MASQ-AGENT"]);
        let node = ip(NODE_UPLINK_V4);
        for pod in &lab.pods {
            assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
            assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, node);
        }
        // At least one per pod and destination. A late segment of a closed
        // connection that conntrack picks up again crosses the nat table a
        // second time; it is no SYN, so the classifier leaves it to the
        // xt_bpf rule, which is why that rule may count a few.
        let pods = lab.pods.len() as u64;
        let decided = decided(&lab);
        assert!(
            decided.by_mark >= pods && decided.masqueraded >= pods,
            "mark {bit}: kept connections must leave by the mark RETURN, {pods} pods: {decided:?}"
        );
    }
}

/// With `nf_conntrack_tcp_loose` (the kernel's default) conntrack picks a
/// connection up mid stream once its entry is gone, here after a flush.
/// That segment is no SYN, so the classifier does not look it up and leaves
/// it unmarked; the chain's xt_bpf rule decides it on the same table. A
/// kept connection keeps the pod IP and goes on working.
#[test]
#[ignore = "needs root"]
fn a_connection_picked_up_mid_stream_is_decided_by_the_xt_bpf_rule() {
    use std::io::{Read as _, Write as _};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    let lab = Lab::new(LabOptions::default());
    let _agent = lab.start_agent(&[]);
    lab.node.sysctl("net.netfilter.nf_conntrack_tcp_loose", "1");
    let pod = &lab.pods[0];
    let address: SocketAddr = format!("{EXTERNAL_INSIDE_V4}:7001").parse().unwrap();
    let listener = lab
        .external
        .enter(move || TcpListener::bind(address).expect("listen"));
    let mut client = pod.netns.enter(move || {
        TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect")
    });
    let (mut server, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip(), pod.ipv4, "kept from the first segment");
    for stream in [&client, &server] {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }
    let round_trip = |client: &mut TcpStream, server: &mut TcpStream, text: &[u8]| {
        let mut buffer = vec![0u8; text.len()];
        client.write_all(text).expect("pod writes");
        server.read_exact(&mut buffer).expect("the segment arrives");
        assert_eq!(buffer, text);
        server.write_all(text).expect("external writes");
        client.read_exact(&mut buffer).expect("the answer arrives");
        assert_eq!(buffer, text);
    };
    round_trip(&mut client, &mut server, b"before the flush");
    // Delayed ACKs go out before the entry does.
    std::thread::sleep(Duration::from_millis(300));
    lab.node
        .exec_ok("iptables", &["-w", "-t", "nat", "-Z", "IP-MASQ-AGENT"]);
    lab.node.exec_ok("conntrack", &["-F"]);

    round_trip(&mut client, &mut server, b"after the flush");
    let decided = decided(&lab);
    assert!(
        decided.by_xt_bpf >= 1 && decided.by_mark == 0 && decided.masqueraded == 0,
        "the picked-up connection must be decided by the xt_bpf rule: {decided:?}"
    );
    // Whichever side's segment came first, the new entry holds the pod IP
    // and nothing translated.
    let entries = lab.node.exec_ok("conntrack", &["-L", "-p", "tcp"]);
    assert!(
        entries
            .lines()
            .any(|line| line.contains("=7001 ") && line.contains(&format!("={} ", pod.ipv4))),
        "the new entry keeps the pod IP:\n{entries}"
    );
    assert!(
        !entries.contains(&format!("dst={NODE_UPLINK_V4}")),
        "no SNAT to the node IP:\n{entries}"
    );
}

/// The least-privilege overlay's capabilities are enough: `NET_ADMIN`,
/// `NET_RAW` and `BPF`, without `SYS_ADMIN` or `PERFMON`. Without `PERFMON`
/// the verifier applies its Spectre v1 mitigations, which refuse pointer
/// arithmetic by a register on a packet pointer: a classifier that needed
/// it would not load here, nor on a node running the overlay.
#[test]
#[ignore = "needs root"]
fn the_agent_runs_with_net_admin_net_raw_and_bpf_alone() {
    let lab = Lab::new(LabOptions::default());
    let agent = lab
        .agent(&[])
        .capabilities(&["net_admin", "net_raw", "bpf"])
        .spawn();
    agent.wait_ready();
    for pod in &lab.pods {
        // One program, the agent's; aya loads it unnamed when its probe for
        // program names fails without CAP_SYS_ADMIN.
        assert_eq!(
            lab.node.tcx_ingress_programs(&pod.host_interface).len(),
            1,
            "{}",
            agent.log()
        );
        assert_sees(&lab, pod, EXTERNAL_INSIDE_V4, pod.ipv4);
        assert_sees(&lab, pod, EXTERNAL_OUTSIDE_V4, ip(NODE_UPLINK_V4));
    }
}

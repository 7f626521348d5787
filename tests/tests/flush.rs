//! Decisions reach flows that are already alive: after a config change the
//! agent deletes the conntrack entries whose decision flipped, so the very
//! next datagram of a UDP flow that lives across the change gets the new
//! source. With `--flush-conntrack=off` it keeps the old one, as under
//! ip-masq-agent. Root.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use lab::{
    Lab, LabOptions,
    agent::dump_maps,
    topology::{EXTERNAL_OUTSIDE_V4, NODE_UPLINK_V4},
    wait_until,
};

/// One datagram from `client` (always the same socket) to the external
/// host, and the source address the external host saw.
fn seen_source(server: &UdpSocket, client: &UdpSocket) -> IpAddr {
    let to: SocketAddr = format!("{EXTERNAL_OUTSIDE_V4}:5353").parse().unwrap();
    client.send_to(b"x", to).expect("send");
    let mut buffer = [0u8; 16];
    let (_, from) = server.recv_from(&mut buffer).expect("the datagram arrives");
    from.ip()
}

fn run(flush: &str) -> (IpAddr, IpAddr, IpAddr) {
    let lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    });
    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12]\n");
    let _agent = lab.start_agent(&[&format!("--flush-conntrack={flush}")]);
    let server = lab
        .external
        .enter(|| UdpSocket::bind(format!("{EXTERNAL_OUTSIDE_V4}:5353")).expect("bind server"));
    server
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let client = lab.pods[0]
        .netns
        .enter(|| UdpSocket::bind("0.0.0.0:0").expect("bind client"));
    let before = seen_source(&server, &client);

    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12, 203.0.113.0/24]\n");
    let pin_dir = lab.bpffs.pin_dir();
    let applied = wait_until(Duration::from_secs(5), || {
        dump_maps(&pin_dir)
            .is_ok_and(|entries: BTreeSet<String>| entries.contains("203.0.113.0/24 keep-source"))
    });
    assert!(applied, "the change reached the maps");
    // The flush follows the map writes in the same reload, and the agent
    // publishes its state file after the reload: two successful reloads
    // there mean the flush, if any, is done.
    let state_dir = lab.state_dir();
    let published = wait_until(Duration::from_secs(5), || {
        std::fs::read_dir(&state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|file| {
                std::fs::read_to_string(file.path())
                    .ok()
                    .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                    .is_some_and(|state| state["reloadsSucceeded"] == 2)
            })
    });
    assert!(published, "the second reload was published");
    let after = seen_source(&server, &client);
    (before, after, lab.pods[0].ipv4)
}

#[test]
#[ignore = "needs root"]
fn the_first_datagram_after_a_change_has_the_new_source() {
    let node: IpAddr = NODE_UPLINK_V4.parse().unwrap();
    let (before, after, pod) = run("connectionless");
    assert_eq!(before, node, "masqueraded before the change");
    assert_eq!(after, pod, "the flow's next datagram keeps the pod address");

    // The witness: without the flush the live flow keeps its old decision.
    let (before, after, _) = run("off");
    assert_eq!(
        (before, after),
        (node, node),
        "without the flush the entry keeps the old NAT"
    );
}

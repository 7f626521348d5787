//! The conntrack layer on the real kernel: listing matches `conntrack -L`
//! entry for entry, source NAT is seen with its translated source, and a
//! deleted entry is gone. Needs root (a lab's namespaces).

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr, UdpSocket},
};

use ip_masq::kernel::conntrack::Conntrack;
use lab::{
    Lab, LabOptions,
    topology::{EXTERNAL_INSIDE_V4, EXTERNAL_OUTSIDE_V4, NODE_UPLINK_V4},
};

/// Sends one datagram from the pod from a fresh socket and returns its
/// source port.
fn datagram(lab: &Lab, to: &str) -> u16 {
    let to: SocketAddr = format!("{to}:5353").parse().unwrap();
    lab.pods[0].netns.enter(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.send_to(b"x", to).expect("send");
        socket.local_addr().expect("address").port()
    })
}

/// `conntrack -L -p udp` in the node, as (original source port, reply destination).
fn conntrack_cli(lab: &Lab) -> BTreeSet<(u16, String)> {
    let output = lab.node.exec("conntrack", &["-L", "-p", "udp"]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let field = |name: &str, nth: usize| {
                line.split_whitespace()
                    .filter_map(|w| w.strip_prefix(name))
                    .nth(nth)
                    .map(str::to_owned)
            };
            Some((field("sport=", 0)?.parse().ok()?, field("dst=", 1)?))
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn listing_matches_the_conntrack_tool_and_deletes_take_effect() {
    let lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    });
    let _agent = lab.start_agent(&[]);
    let mut masqueraded = Vec::new();
    for _ in 0..5 {
        masqueraded.push(datagram(&lab, EXTERNAL_OUTSIDE_V4));
    }
    let kept = datagram(&lab, EXTERNAL_INSIDE_V4);
    let pod = lab.pods[0].ipv4;
    let node: IpAddr = NODE_UPLINK_V4.parse().unwrap();
    let entries = lab
        .node
        .enter(|| Conntrack::open().expect("open").list().expect("list"));
    let udp: Vec<_> = entries
        .iter()
        .filter(|e| e.protocol == 17 && e.original.source == pod)
        .collect();
    let ours: BTreeSet<(u16, String)> = udp
        .iter()
        .map(|e| (e.original.source_port, e.reply.destination.to_string()))
        .collect();
    assert_eq!(
        ours,
        conntrack_cli(&lab)
            .into_iter()
            .filter(|(port, _)| masqueraded.contains(port) || *port == kept)
            .collect(),
        "entry for entry"
    );
    for port in &masqueraded {
        let entry = udp
            .iter()
            .find(|e| e.original.source_port == *port)
            .expect("tracked");
        assert!(entry.source_nat, "masqueraded flow has SNAT status");
        assert_eq!(
            entry.reply.destination, node,
            "the translated source is the node"
        );
    }
    let entry = udp
        .iter()
        .find(|e| e.original.source_port == kept)
        .expect("tracked");
    assert!(!entry.source_nat);
    assert_eq!(entry.reply.destination, pod);

    let victim = udp
        .iter()
        .find(|e| e.original.source_port == masqueraded[0])
        .expect("tracked")
        .original;
    lab.node.enter(move || {
        Conntrack::open()
            .expect("open")
            .delete(17, &victim)
            .expect("delete");
    });
    // Deleting it again finds nothing, which is not an error.
    lab.node.enter(move || {
        Conntrack::open()
            .expect("open")
            .delete(17, &victim)
            .expect("second delete");
    });
    let left = conntrack_cli(&lab);
    assert!(
        !left.iter().any(|(port, _)| *port == masqueraded[0]),
        "deleted entry still listed: {left:?}"
    );
    assert!(
        left.iter().any(|(port, _)| *port == masqueraded[1]),
        "the others stay"
    );
}

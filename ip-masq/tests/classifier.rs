//! The classifier and the xt_bpf socket filters themselves, run by the
//! kernel through BPF_PROG_TEST_RUN after the agent's own sync code filled
//! the maps. Needs root and BPF.

use std::net::IpAddr;

use ip_masq::{
    agent::sync,
    kernel::{
        datapath::{ConnectionStats, Datapath, LoadOptions},
        packet,
    },
    model::Family,
};
use ip_masq_common::{DEFAULT_KEEP_SOURCE_MARK, XT_BPF_KEEP_SOURCE, XT_BPF_MASQUERADE};
use ip_masq_config::{ParseOptions, parse, table::Table};
use lab::Bpffs;

const TC_ACT_UNSPEC: i32 = -1;

/// A loaded classifier in a private bpffs, with the table for `config`.
struct Loaded {
    datapath: Datapath,
    _bpffs: Bpffs,
}

fn load(config: &str, enable_ipv6: bool, mark: u32) -> Loaded {
    let bpffs = Bpffs::new();
    let mut datapath = Datapath::load(&LoadOptions {
        pin_dir: bpffs.pin_dir(),
        mark,
        max_entries: 1024,
    })
    .expect("load classifier");
    let options = ParseOptions {
        enable_ipv6,
        ..ParseOptions::default()
    };
    let parsed = parse(config.as_bytes(), options).expect("valid config");
    let desired = Table::effective(&parsed.config, enable_ipv6);
    let mut applied = Table::default();
    let report = sync::apply(&mut datapath, &mut applied, &desired).expect("fits");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    Loaded {
        datapath,
        _bpffs: bpffs,
    }
}

fn mark_after(loaded: &mut Loaded, destination: &str, mark_in: u32) -> u32 {
    let destination: IpAddr = destination.parse().unwrap();
    let probe = loaded
        .datapath
        .probe(&packet::tcp_syn_to(destination), mark_in)
        .expect("test run");
    assert_eq!(
        probe.return_value, TC_ACT_UNSPEC,
        "never drops or redirects"
    );
    probe.mark
}

#[test]
#[ignore = "needs root"]
fn keep_source_destinations_get_the_mark() {
    let mut loaded = load("", false, DEFAULT_KEEP_SOURCE_MARK);
    for destination in [
        "10.1.2.3",
        "172.31.255.254",
        "192.168.0.1",
        "169.254.169.254",
    ] {
        assert_eq!(
            mark_after(&mut loaded, destination, 0),
            DEFAULT_KEEP_SOURCE_MARK,
            "{destination}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn other_destinations_are_left_alone() {
    let mut loaded = load("", false, DEFAULT_KEEP_SOURCE_MARK);
    for destination in ["8.8.8.8", "172.32.0.1", "11.0.0.1", "192.169.0.1"] {
        assert_eq!(mark_after(&mut loaded, destination, 0), 0, "{destination}");
        assert_eq!(
            mark_after(&mut loaded, destination, 0x4000),
            0x4000,
            "{destination}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn other_mark_bits_are_preserved() {
    let mut loaded = load("", false, DEFAULT_KEEP_SOURCE_MARK);
    assert_eq!(
        mark_after(&mut loaded, "10.0.0.1", 0x4000),
        0x4000 | DEFAULT_KEEP_SOURCE_MARK
    );
    assert_eq!(
        mark_after(&mut loaded, "10.0.0.1", !DEFAULT_KEEP_SOURCE_MARK),
        u32::MAX
    );
    assert_eq!(
        mark_after(&mut loaded, "10.0.0.1", DEFAULT_KEEP_SOURCE_MARK),
        DEFAULT_KEEP_SOURCE_MARK
    );
}

#[test]
#[ignore = "needs root"]
fn mark_follows_the_flag() {
    let mut loaded = load("", false, 0x40000);
    assert_eq!(mark_after(&mut loaded, "10.0.0.1", 0), 0x40000);
    assert_eq!(mark_after(&mut loaded, "8.8.8.8", 0), 0);
}

#[test]
#[ignore = "needs root"]
fn ipv6_destinations_are_classified() {
    let mut loaded = load(
        "nonMasqueradeCIDRs: [10.0.0.0/8, 2001:db8::/32]",
        true,
        DEFAULT_KEEP_SOURCE_MARK,
    );
    assert_eq!(
        mark_after(&mut loaded, "2001:db8:1::1", 0),
        DEFAULT_KEEP_SOURCE_MARK
    );
    assert_eq!(mark_after(&mut loaded, "2001:db9::1", 0), 0);
    assert_eq!(
        mark_after(&mut loaded, "fe80::1", 0),
        DEFAULT_KEEP_SOURCE_MARK,
        "link-local by default"
    );
    assert_eq!(
        mark_after(&mut loaded, "10.9.9.9", 0),
        DEFAULT_KEEP_SOURCE_MARK
    );
}

#[test]
#[ignore = "needs root"]
fn longest_prefix_carves_exceptions_both_ways() {
    let mut loaded = load(
        "nonMasqueradeCIDRs: [10.0.0.0/8, 10.200.5.0/24]\nmasqueradeCIDRs: [10.200.0.0/16]",
        false,
        DEFAULT_KEEP_SOURCE_MARK,
    );
    assert_eq!(
        mark_after(&mut loaded, "10.1.1.1", 0),
        DEFAULT_KEEP_SOURCE_MARK
    );
    assert_eq!(mark_after(&mut loaded, "10.200.1.1", 0), 0);
    assert_eq!(
        mark_after(&mut loaded, "10.200.5.1", 0),
        DEFAULT_KEEP_SOURCE_MARK
    );
}

#[test]
#[ignore = "needs root"]
fn non_ip_frames_pass_untouched() {
    let mut loaded = load(
        "nonMasqueradeCIDRs: [0.0.0.0/0]",
        false,
        DEFAULT_KEEP_SOURCE_MARK,
    );
    let arp = loaded.datapath.probe(&packet::arp_request(), 0x10).unwrap();
    assert_eq!((arp.return_value, arp.mark), (TC_ACT_UNSPEC, 0x10));
    // An IPv4 frame is marked: the table really matches everything.
    let ipv4 = packet::tcp_syn_to("10.0.0.1".parse().unwrap());
    assert_eq!(
        loaded.datapath.probe(&ipv4, 0x10).unwrap().mark,
        0x10 | DEFAULT_KEEP_SOURCE_MARK
    );
}

#[test]
#[ignore = "needs root"]
fn packet_counters_count_seen_and_kept() {
    let mut loaded = load("", false, DEFAULT_KEEP_SOURCE_MARK);
    let before = loaded.datapath.stats().unwrap();
    for _ in 0..3 {
        mark_after(&mut loaded, "10.0.0.1", 0);
    }
    mark_after(&mut loaded, "8.8.8.8", 0);
    let after = loaded.datapath.stats().unwrap();
    assert_eq!(after.v4_seen - before.v4_seen, 4);
    assert_eq!(after.v4_kept - before.v4_kept, 3);
    assert_eq!(after.v6_seen, before.v6_seen);
}

/// The mark and the lookup counters after the classifier ran on `frame`.
fn run_frame(loaded: &mut Loaded, frame: &[u8]) -> (u32, u64) {
    let before = loaded.datapath.stats().unwrap();
    let probe = loaded.datapath.probe(frame, 0).expect("test run");
    assert_eq!(probe.return_value, TC_ACT_UNSPEC);
    let after = loaded.datapath.stats().unwrap();
    let looked_up = (after.v4_seen - before.v4_seen) + (after.v6_seen - before.v6_seen);
    (probe.mark, looked_up)
}

/// Only a packet that can start a connection is looked up: for TCP a SYN
/// without ACK. Other segments go unmarked and uncounted (the nat table
/// never sees them, or, picked up mid stream, its xt_bpf rule decides
/// them). Everything else is looked up: UDP, fragments (the TCP header may
/// not be in them), IPv6 behind an extension header.
#[test]
#[ignore = "needs root"]
fn only_what_can_start_a_connection_is_looked_up() {
    use packet::{IpShape, TCP_ACK, TCP_SYN};
    let mut loaded = load(
        "nonMasqueradeCIDRs: [10.0.0.0/8, 2001:db8::/32]",
        true,
        DEFAULT_KEEP_SOURCE_MARK,
    );
    let kept = (DEFAULT_KEEP_SOURCE_MARK, 1);
    let skipped = (0, 0);
    let plain = IpShape::default();
    for destination in ["10.1.2.3", "2001:db8::7"] {
        let destination: IpAddr = destination.parse().unwrap();
        let tcp = |flags, shape| packet::tcp_to(destination, flags, shape);
        assert_eq!(
            run_frame(&mut loaded, &tcp(TCP_SYN, plain)),
            kept,
            "{destination} SYN"
        );
        for flags in [TCP_ACK, TCP_SYN | TCP_ACK, 0x11, 0x04, 0x18] {
            assert_eq!(
                run_frame(&mut loaded, &tcp(flags, plain)),
                skipped,
                "{destination} flags {flags:#x}"
            );
        }
        assert_eq!(run_frame(&mut loaded, &packet::udp_to(destination)), kept);
        // A tag still in the frame: the protocol behind it decides.
        assert_eq!(
            run_frame(&mut loaded, &packet::vlan_tagged(&tcp(TCP_SYN, plain))),
            kept,
            "{destination} tagged SYN"
        );
        assert_eq!(
            run_frame(&mut loaded, &packet::vlan_tagged(&tcp(TCP_ACK, plain))),
            skipped,
            "{destination} tagged ACK"
        );
    }
    let v4: IpAddr = "10.1.2.3".parse().unwrap();
    // IPv4 options move the TCP header: the IHL is followed.
    let options = IpShape {
        ipv4_option_words: 3,
        ..IpShape::default()
    };
    assert_eq!(
        run_frame(&mut loaded, &packet::tcp_to(v4, TCP_SYN, options)),
        kept
    );
    assert_eq!(
        run_frame(&mut loaded, &packet::tcp_to(v4, TCP_ACK, options)),
        skipped
    );
    // Fragments, first or later, are looked up whatever their bytes say.
    for fragment in [0x2000, 0x0001, 0x2005] {
        let shape = IpShape {
            ipv4_fragment: fragment,
            ..IpShape::default()
        };
        assert_eq!(
            run_frame(&mut loaded, &packet::tcp_to(v4, TCP_ACK, shape)),
            kept,
            "fragment {fragment:#x}"
        );
    }
    let hop_by_hop = IpShape {
        ipv6_hop_by_hop: true,
        ..IpShape::default()
    };
    assert_eq!(
        run_frame(
            &mut loaded,
            &packet::tcp_to("2001:db8::7".parse().unwrap(), TCP_ACK, hop_by_hop)
        ),
        kept
    );
    // A masqueraded destination is looked up too, and left unmarked.
    assert_eq!(
        run_frame(
            &mut loaded,
            &packet::tcp_to("8.8.8.8".parse().unwrap(), TCP_SYN, plain)
        ),
        (0, 1)
    );
}

/// Runs the xt_bpf filter of `family` on a SYN to `destination` and
/// returns whether it matched ("keep source").
fn xt_keeps(loaded: &mut Loaded, family: Family, destination: &str) -> bool {
    let frame = packet::tcp_syn_to(destination.parse().unwrap());
    match i64::from(
        loaded
            .datapath
            .probe_xt_bpf(family, &frame)
            .expect("test run"),
    ) {
        XT_BPF_KEEP_SOURCE => true,
        XT_BPF_MASQUERADE => false,
        other => panic!("xt_bpf filter answered {other}"),
    }
}

#[test]
#[ignore = "needs root"]
fn xt_bpf_filters_count_each_run_by_family_and_decision() {
    let mut loaded = load(
        "nonMasqueradeCIDRs: [10.0.0.0/8, 2001:db8::/32]",
        true,
        DEFAULT_KEEP_SOURCE_MARK,
    );
    let packets_before = loaded.datapath.stats().unwrap();
    let before = loaded.datapath.connection_stats().unwrap();
    for _ in 0..3 {
        assert!(xt_keeps(&mut loaded, Family::V4, "10.0.0.1"));
    }
    for _ in 0..2 {
        assert!(!xt_keeps(&mut loaded, Family::V4, "8.8.8.8"));
    }
    assert!(xt_keeps(&mut loaded, Family::V6, "2001:db8::1"));
    for _ in 0..4 {
        assert!(!xt_keeps(&mut loaded, Family::V6, "2001:db9::1"));
    }
    // A packet of the other family (a misplaced rule) is no match, counted
    // under the filter that ran.
    assert!(!xt_keeps(&mut loaded, Family::V4, "2001:db8::1"));
    let after = loaded.datapath.connection_stats().unwrap();
    assert_eq!(
        ConnectionStats {
            v4_keep_source: after.v4_keep_source - before.v4_keep_source,
            v4_masquerade: after.v4_masquerade - before.v4_masquerade,
            v6_keep_source: after.v6_keep_source - before.v6_keep_source,
            v6_masquerade: after.v6_masquerade - before.v6_masquerade,
        },
        ConnectionStats {
            v4_keep_source: 3,
            v4_masquerade: 3,
            v6_keep_source: 1,
            v6_masquerade: 4,
        }
    );
    // The filters leave the classifier's packet counters alone ...
    assert_eq!(loaded.datapath.stats().unwrap(), packets_before);
    // ... and the classifier leaves theirs alone.
    mark_after(&mut loaded, "10.0.0.1", 0);
    mark_after(&mut loaded, "8.8.8.8", 0);
    assert_eq!(loaded.datapath.connection_stats().unwrap(), after);
}

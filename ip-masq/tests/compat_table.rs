//! The compatibility table: ip-masq-agent ConfigMap texts and flags, a
//! destination, and the decision upstream makes for it. Each decision is
//! read from the loaded eBPF classifier (BPF_PROG_TEST_RUN) after the
//! agent's own parse → table → sync code filled the maps: not from a Rust
//! re-implementation of the lookup. Needs root and BPF.

use std::{collections::BTreeMap, net::IpAddr};

use ip_masq::{
    agent::sync,
    kernel::{
        datapath::{Datapath, LoadOptions},
        packet,
    },
};
use ip_masq_common::DEFAULT_KEEP_SOURCE_MARK;
use ip_masq_config::{ParseOptions, parse, table::Table};
use lab::Bpffs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The destination sees the pod IP.
    Keep,
    /// The destination sees the node IP.
    Masquerade,
    /// The config is refused (the previous one would stay in force).
    Rejected,
}
use Expect::{Keep, Masquerade, Rejected};

const V4: ParseOptions = ParseOptions {
    enable_ipv6: false,
    nomasq_all_reserved_ranges: false,
};
const V6: ParseOptions = ParseOptions {
    enable_ipv6: true,
    nomasq_all_reserved_ranges: false,
};
const RESERVED: ParseOptions = ParseOptions {
    enable_ipv6: false,
    nomasq_all_reserved_ranges: true,
};

const EXCEPTIONS: &str = "nonMasqueradeCIDRs: [10.0.0.0/8, 10.200.5.0/24]\n\
                          masqueradeCIDRs: [10.200.0.0/16, 10.200.5.128/25]\n";
const JSON: &str = r#"{"nonMasqueradeCIDRs": ["198.51.100.0/24"], "masqLinkLocal": true}"#;
const YAML: &str = "nonMasqueradeCIDRs:\n  - 198.51.100.0/24\nmasqLinkLocal: true\n";

/// (what is checked, config text, flags, destination, expected decision)
const CASES: &[(&str, &str, ParseOptions, &str, Expect)] = &[
    ("defaults: 10/8", "", V4, "10.0.0.1", Keep),
    ("defaults: 172.16/12 low end", "", V4, "172.16.0.1", Keep),
    (
        "defaults: 172.16/12 high end",
        "",
        V4,
        "172.31.255.255",
        Keep,
    ),
    (
        "defaults: just past 172.16/12",
        "",
        V4,
        "172.32.0.1",
        Masquerade,
    ),
    ("defaults: 192.168/16", "", V4, "192.168.1.1", Keep),
    ("defaults: link-local kept", "", V4, "169.254.169.254", Keep),
    ("defaults: public address", "", V4, "8.8.8.8", Masquerade),
    (
        "defaults: CGNAT not reserved without flag",
        "",
        V4,
        "100.64.0.1",
        Masquerade,
    ),
    ("reserved flag: 100.64/10", "", RESERVED, "100.64.0.1", Keep),
    (
        "reserved flag: 198.51.100/24",
        "",
        RESERVED,
        "198.51.100.7",
        Keep,
    ),
    ("reserved flag: 240/4", "", RESERVED, "240.0.0.1", Keep),
    ("reserved flag: 192.0.2/24", "", RESERVED, "192.0.2.1", Keep),
    (
        "reserved flag: 192.88.99/24",
        "",
        RESERVED,
        "192.88.99.1",
        Keep,
    ),
    (
        "reserved flag: public still masqueraded",
        "",
        RESERVED,
        "8.8.8.8",
        Masquerade,
    ),
    (
        "reserved flag: explicit list wins",
        "nonMasqueradeCIDRs: [10.0.0.0/8]",
        RESERVED,
        "100.64.0.1",
        Masquerade,
    ),
    (
        "empty list: masquerade RFC 1918",
        "nonMasqueradeCIDRs: []",
        V4,
        "10.0.0.1",
        Masquerade,
    ),
    (
        "empty list: link-local still kept",
        "nonMasqueradeCIDRs: []",
        V4,
        "169.254.1.1",
        Keep,
    ),
    (
        "masqLinkLocal true",
        "masqLinkLocal: true",
        V4,
        "169.254.1.1",
        Masquerade,
    ),
    (
        "masqLinkLocal true keeps defaults",
        "masqLinkLocal: true",
        V4,
        "10.0.0.1",
        Keep,
    ),
    (
        "masqLinkLocal false",
        "masqLinkLocal: false",
        V4,
        "169.254.1.1",
        Keep,
    ),
    ("IPv6 link-local kept by default", "", V6, "fe80::1", Keep),
    (
        "masqLinkLocalIPv6 true",
        "masqLinkLocalIPv6: true",
        V6,
        "fe80::1",
        Masquerade,
    ),
    (
        "IPv6 off: no IPv6 entries at all",
        "",
        V4,
        "fe80::1",
        Masquerade,
    ),
    (
        "case-insensitive key",
        "nonmasqueradecidrs: [198.51.100.0/24]",
        V4,
        "198.51.100.1",
        Keep,
    ),
    (
        "case-insensitive key replaces defaults",
        "nonmasqueradecidrs: [198.51.100.0/24]",
        V4,
        "10.0.0.1",
        Masquerade,
    ),
    (
        "case-insensitive bool key",
        "MasqLinkLocal: true",
        V4,
        "169.254.1.1",
        Masquerade,
    ),
    (
        "unknown key ignored (typo)",
        "nonMasqueradeCidr: [198.51.100.0/24]",
        V4,
        "198.51.100.1",
        Masquerade,
    ),
    (
        "unknown key leaves defaults",
        "nonMasqueradeCidr: [198.51.100.0/24]",
        V4,
        "10.0.0.1",
        Keep,
    ),
    ("JSON config", JSON, V4, "198.51.100.9", Keep),
    ("JSON masqLinkLocal", JSON, V4, "169.254.1.1", Masquerade),
    ("YAML equals JSON", YAML, V4, "198.51.100.9", Keep),
    ("YAML masqLinkLocal", YAML, V4, "169.254.1.1", Masquerade),
    ("exceptions: outer keep", EXCEPTIONS, V4, "10.1.1.1", Keep),
    (
        "exceptions: masquerade /16 inside keep /8",
        EXCEPTIONS,
        V4,
        "10.200.1.1",
        Masquerade,
    ),
    (
        "exceptions: keep /24 inside masquerade /16",
        EXCEPTIONS,
        V4,
        "10.200.5.5",
        Keep,
    ),
    (
        "exceptions: masquerade /25 inside keep /24",
        EXCEPTIONS,
        V4,
        "10.200.5.200",
        Masquerade,
    ),
    (
        "IPv6 CIDR with --enable-ipv6",
        "nonMasqueradeCIDRs: [2001:db8::/32]",
        V6,
        "2001:db8::1",
        Keep,
    ),
    (
        "IPv6 outside the CIDR",
        "nonMasqueradeCIDRs: [2001:db8::/32]",
        V6,
        "2001:db9::1",
        Masquerade,
    ),
    (
        "IPv6 CIDR without --enable-ipv6",
        "nonMasqueradeCIDRs: [2001:db8::/32]",
        V4,
        "2001:db8::1",
        Rejected,
    ),
    (
        "IPv6 exception",
        "nonMasqueradeCIDRs: [fd00::/8]\nmasqueradeCIDRs: [fd00:1::/32]",
        V6,
        "fd00:1::1",
        Masquerade,
    ),
    (
        "IPv6 outside the exception",
        "nonMasqueradeCIDRs: [fd00::/8]\nmasqueradeCIDRs: [fd00:1::/32]",
        V6,
        "fd00:2::1",
        Keep,
    ),
    (
        "mixed families: IPv4 still decided",
        "nonMasqueradeCIDRs: [2001:db8::/32, 10.0.0.0/8]",
        V6,
        "10.9.9.9",
        Keep,
    ),
    (
        "everything kept",
        "nonMasqueradeCIDRs: [0.0.0.0/0]",
        V4,
        "8.8.8.8",
        Keep,
    ),
    (
        "duplicates merged",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.0/8]",
        V4,
        "10.0.0.1",
        Keep,
    ),
    (
        "host route /32 hit",
        "nonMasqueradeCIDRs: [203.0.113.7/32]",
        V4,
        "203.0.113.7",
        Keep,
    ),
    (
        "host route /32 neighbour",
        "nonMasqueradeCIDRs: [203.0.113.7/32]",
        V4,
        "203.0.113.8",
        Masquerade,
    ),
    (
        "unaligned CIDR rejected",
        "nonMasqueradeCIDRs: [10.0.0.1/8]",
        V4,
        "10.0.0.1",
        Rejected,
    ),
    (
        "same CIDR in both lists rejected",
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.0.0.0/8]",
        V4,
        "10.0.0.1",
        Rejected,
    ),
    (
        "cidrLimit enforced when set",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 11.0.0.0/8]\ncidrLimit: 1",
        V4,
        "10.0.0.1",
        Rejected,
    ),
];

struct Loaded {
    datapath: Datapath,
    _bpffs: Bpffs,
}

fn load(text: &str, options: ParseOptions) -> Option<Loaded> {
    let parsed = parse(text.as_bytes(), options).ok()?;
    let bpffs = Bpffs::new();
    let mut datapath = Datapath::load(&LoadOptions {
        pin_dir: bpffs.pin_dir(),
        mark: DEFAULT_KEEP_SOURCE_MARK,
        max_entries: 1024,
    })
    .expect("load classifier");
    let desired = Table::effective(&parsed.config, options.enable_ipv6);
    let mut applied = Table::default();
    let report = sync::apply(&mut datapath, &mut applied, &desired).expect("fits");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    Some(Loaded {
        datapath,
        _bpffs: bpffs,
    })
}

#[test]
#[ignore = "needs root"]
fn compatibility_table() {
    assert!(CASES.len() >= 40);
    // One classifier per distinct (config, flags), shared by its cases.
    let mut loaded: BTreeMap<(String, bool, bool), Option<Loaded>> = BTreeMap::new();
    let mut failures = Vec::new();
    for (what, text, options, destination, expected) in CASES {
        let key = (
            (*text).to_owned(),
            options.enable_ipv6,
            options.nomasq_all_reserved_ranges,
        );
        let entry = loaded.entry(key).or_insert_with(|| load(text, *options));
        let actual = match entry {
            None => Rejected,
            Some(loaded) => {
                let destination: IpAddr = destination.parse().unwrap();
                let probe = loaded
                    .datapath
                    .probe(&packet::tcp_syn_to(destination), 0)
                    .expect("test run");
                if probe.mark & DEFAULT_KEEP_SOURCE_MARK != 0 {
                    Keep
                } else {
                    Masquerade
                }
            }
        };
        if actual != *expected {
            failures.push(format!(
                "{what}: {destination} with {text:?} {options:?}: expected {expected:?}, got {actual:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "{} compatibility cases decided by the kernel program",
        CASES.len()
    );
}

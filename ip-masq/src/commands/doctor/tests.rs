//! The analysis on `iptables-save` dumps and tcx listings of typical
//! nodes: kube-proxy, Docker, flannel, kubelet, Calico, both backends.

use super::marks::parse_mark_spec;
use super::render::render;
use super::*;
use crate::commands::probe::TcxProgram;

const JUMP: &str = "-A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT";
const OUR_CHAIN: &str = "-A IP-MASQ-AGENT -m comment --comment \"ip-masq: destination is non-masquerade (mark set by the eBPF classifier)\" -m mark --mark 0x2000/0x2000 -j RETURN\n-A IP-MASQ-AGENT -m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE --random-fully";

/// kube-proxy's POSTROUTING rules: a masquerade gated by its own mark.
const KUBE_PROXY: &str = "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000";

fn save(nat_rules: &[&str], extra_chains: &[&str], other_tables: &str) -> String {
    let mut text = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:IP-MASQ-AGENT - [0:0]\n",
    );
    for chain in ["KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
        .iter()
        .chain(extra_chains)
    {
        text.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for rule in nat_rules {
        text.push_str(rule);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text.push_str(other_tables);
    text
}

fn inputs(text: String) -> Inputs {
    Inputs {
        chain: "IP-MASQ-AGENT".into(),
        mark: Some(0x2000),
        listings: vec![Listing {
            command: "iptables-nft".into(),
            ours: true,
            text,
        }],
        interfaces: None,
        our_programs: BTreeSet::new(),
        nftables: None,
    }
}

fn kinds(findings: &[Finding]) -> Vec<FindingKind> {
    findings.iter().map(|f| f.kind).collect()
}

#[test]
fn clean_node_with_kube_proxy_has_no_findings() {
    let text = save(&[KUBE_PROXY, JUMP, OUR_CHAIN], &[], "");
    assert_eq!(analyze(&inputs(text)), []);
}

#[test]
fn missing_jump_is_reported() {
    let text = save(&[KUBE_PROXY, OUR_CHAIN], &[], "");
    assert_eq!(kinds(&analyze(&inputs(text))), [FindingKind::JumpMissing]);
}

#[test]
fn docker_rule_before_the_jump() {
    let docker = "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE";
    let text = save(&[KUBE_PROXY, docker, JUMP, OUR_CHAIN], &[], "");
    let findings = analyze(&inputs(text));
    assert_eq!(kinds(&findings), [FindingKind::DockerMasquerade]);
    assert!(
        findings[0].fix.contains("--ip-masq=false"),
        "{:?}",
        findings[0]
    );
    assert!(findings[0].problem.contains("before ip-masq's jump"));
    assert!(findings[0].fix.contains(
        "iptables-nft -t nat -D POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"
    ));
}

#[test]
fn docker_user_network_after_the_jump_still_counts() {
    let docker = "-A POSTROUTING -s 172.18.0.0/16 ! -o br-0123abcd -j MASQUERADE";
    let findings = analyze(&inputs(save(&[JUMP, OUR_CHAIN, docker], &[], "")));
    assert_eq!(kinds(&findings), [FindingKind::DockerMasquerade]);
    assert!(findings[0].problem.contains("RETURNs keep-source packets"));
}

#[test]
fn flannel_chain_is_followed() {
    let flannel = [
        "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG",
        "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN",
        "-A FLANNEL-POSTRTG -s 10.244.0.0/24 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN",
        "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully",
    ];
    let mut rules = flannel.to_vec();
    rules.extend([JUMP, OUR_CHAIN]);
    let findings = analyze(&inputs(save(&rules, &["FLANNEL-POSTRTG"], "")));
    assert_eq!(kinds(&findings), [FindingKind::FlannelMasquerade]);
    assert_eq!(
        findings[0].location,
        "iptables-nft nat POSTROUTING → FLANNEL-POSTRTG"
    );
    assert!(findings[0].fix.contains("--ip-masq"));
    assert!(findings[0].fix.contains("ipmasq=false"));
}

#[test]
fn old_flannel_rules_by_comment() {
    let rule = "-A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE";
    let findings = analyze(&inputs(save(&[rule, JUMP, OUR_CHAIN], &[], "")));
    assert_eq!(kinds(&findings), [FindingKind::FlannelMasquerade]);
}

#[test]
fn status_reports_defeats_but_not_what_it_finds_itself() {
    let finding = |kind| Finding {
        kind,
        location: "iptables-nft nat POSTROUTING".into(),
        evidence: "-A POSTROUTING -j MASQUERADE".into(),
        problem: "MASQUERADE rule outside ip-masq's chain.".into(),
        fix: "turn it off".into(),
    };
    let lines = defeats(&[
        finding(FindingKind::JumpMissing),
        finding(FindingKind::CniMasquerade),
        finding(FindingKind::InterfaceWithoutProgram),
        finding(FindingKind::MarkConflict),
    ]);
    assert_eq!(
        lines,
        [
            "[cni-masquerade] iptables-nft nat POSTROUTING: MASQUERADE rule outside ip-masq's chain (`ip-masq doctor` says how to fix it)",
            "[mark-conflict] iptables-nft nat POSTROUTING: MASQUERADE rule outside ip-masq's chain (`ip-masq doctor` says how to fix it)",
        ]
    );
}

#[test]
fn cni_bridge_ip_masq_is_named_with_its_network() {
    // What the bridge plugin (containernetworking-plugins 1.1) writes for a
    // pod of a network with "ipMasq": true, after our jump.
    let comment = r#"-m comment --comment "name: \"k8s-pod-network\" id: \"4f1c\"""#;
    let chain = "CNI-499dbcdc1e6dee0bf6d9702d";
    let rules = [
        JUMP.to_owned(),
        OUR_CHAIN.to_owned(),
        format!("-A POSTROUTING -s 10.244.0.5/32 {comment} -j {chain}"),
        format!("-A {chain} -d 10.244.0.0/24 {comment} -j ACCEPT"),
        format!("-A {chain} ! -d 224.0.0.0/4 {comment} -j MASQUERADE"),
    ];
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let findings = analyze(&inputs(save(&rules, &[chain], "")));
    assert_eq!(kinds(&findings), [FindingKind::CniMasquerade]);
    let finding = &findings[0];
    assert!(
        finding.problem.contains("\"k8s-pod-network\""),
        "{finding:?}"
    );
    assert!(finding.problem.contains("ipMasq"), "{finding:?}");
    assert!(finding.fix.contains("\"ipMasq\": false"), "{finding:?}");
    assert_eq!(
        serde_json::to_value(FindingKind::CniMasquerade).unwrap(),
        "cni-masquerade"
    );
}

#[test]
fn kubelet_non_masquerade_cidr_rule() {
    let rule = "-A POSTROUTING ! -d 10.0.0.0/8 -m comment --comment \"kubenet: SNAT for outbound traffic from cluster\" -m addrtype ! --dst-type LOCAL -j MASQUERADE";
    let findings = analyze(&inputs(save(&[rule, JUMP, OUR_CHAIN], &[], "")));
    assert_eq!(kinds(&findings), [FindingKind::KubeletMasquerade]);
    assert!(
        findings[0]
            .problem
            .contains("--non-masquerade-cidr=10.0.0.0/8")
    );
    assert!(findings[0].fix.contains("--non-masquerade-cidr=0.0.0.0/0"));
}

#[test]
fn other_snat_in_a_user_chain_and_calico_hint() {
    let rules = [
        "-A POSTROUTING -m comment --comment \"cali:O3lYWMrLQYEMJtB5\" -j cali-POSTROUTING",
        "-A cali-POSTROUTING -j cali-nat-outgoing",
        "-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully",
        JUMP,
        OUR_CHAIN,
        "-A POSTROUTING -o eth1 -j SNAT --to-source 192.0.2.9",
    ];
    let findings = analyze(&inputs(save(
        &rules,
        &["cali-POSTROUTING", "cali-nat-outgoing"],
        "",
    )));
    assert_eq!(
        kinds(&findings),
        [FindingKind::OtherSnat, FindingKind::OtherSnat]
    );
    assert!(findings[0].fix.contains("natOutgoing"), "{:?}", findings[0]);
    assert!(findings[0].problem.contains("before"));
    assert!(findings[1].problem.contains("SNAT"));
    assert!(findings[1].problem.contains("RETURNs keep-source"));
}

#[test]
fn unconditional_return_and_gates_stop_the_walk() {
    let rules = [
        "-A POSTROUTING -j SKIP",
        "-A SKIP -j RETURN",
        "-A SKIP -j MASQUERADE",
        "-A POSTROUTING -m mark --mark 0x100/0x100 -j MASQUERADE",
        JUMP,
        OUR_CHAIN,
    ];
    assert_eq!(analyze(&inputs(save(&rules, &["SKIP"], ""))), []);
}

#[test]
fn the_other_backend_is_looked_at_too() {
    let mut input = inputs(save(&[JUMP, OUR_CHAIN], &[], ""));
    input.listings.push(Listing {
        command: "iptables-legacy".into(),
        ours: false,
        text: "*nat\n:POSTROUTING ACCEPT [0:0]\n:IP-MASQ-AGENT - [0:0]\n-A POSTROUTING -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n-A IP-MASQ-AGENT -d 10.0.0.0/8 -j RETURN\n-A IP-MASQ-AGENT -j MASQUERADE\nCOMMIT\n".into(),
    });
    let findings = analyze(&input);
    assert_eq!(kinds(&findings), [FindingKind::OtherSnat]);
    assert!(
        findings[0]
            .location
            .starts_with("iptables-legacy nat POSTROUTING → IP-MASQ-AGENT")
    );
    assert!(findings[0].fix.contains("left-over"), "{:?}", findings[0]);
}

#[test]
fn mark_writers_and_readers_of_our_bit() {
    let mangle = "*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
        -A PREROUTING -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff\n\
        -A PREROUTING -j CONNMARK --restore-mark --nfmask 0xff --ctmask 0xff\n\
        -A FORWARD -j MARK --set-xmark 0x2000/0x2000\n\
        -A FORWARD -j MARK --set-xmark 0x4000/0x4000\n\
        -A FORWARD -j MARK --set-xmark 0x0/0xffffffff\n\
        -A FORWARD -m mark --mark 0x1 -j ACCEPT\n\
        -A FORWARD -m mark --mark 0x10000/0x10000 -j ACCEPT\n\
        COMMIT\n";
    let text = save(&[KUBE_PROXY, JUMP, OUR_CHAIN], &[], mangle);
    let findings = analyze(&inputs(text));
    let evidence: Vec<&str> = findings.iter().map(|f| f.evidence.as_str()).collect();
    assert_eq!(
        evidence,
        [
            "-A PREROUTING -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
            "-A FORWARD -j MARK --set-xmark 0x2000/0x2000",
            "-A FORWARD -j MARK --set-xmark 0x0/0xffffffff",
            "-A FORWARD -m mark --mark 0x1 -j ACCEPT",
        ]
    );
    assert!(findings.iter().all(|f| f.kind == FindingKind::MarkConflict));
    assert!(findings[0].location == "iptables-nft mangle PREROUTING");
}

#[test]
fn no_mark_checks_without_a_mark() {
    let mangle =
        "*mangle\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j MARK --set-xmark 0x2000/0x2000\nCOMMIT\n";
    let mut input = inputs(save(&[JUMP, OUR_CHAIN], &[], mangle));
    input.mark = None;
    assert_eq!(analyze(&input), []);
}

#[test]
fn interfaces_without_the_classifier_and_foreign_programs() {
    let program = |id, name: &str| TcxProgram {
        id,
        name: name.into(),
    };
    let mut input = inputs(save(&[JUMP, OUR_CHAIN], &[], ""));
    input.our_programs = BTreeSet::from([7]);
    input.interfaces = Some(vec![
        InterfaceProbe {
            name: "veth1".into(),
            ifindex: 3,
            selected: true,
            programs: vec![program(7, "ip_masq_classify")],
        },
        InterfaceProbe {
            name: "veth2".into(),
            ifindex: 4,
            selected: true,
            programs: vec![],
        },
        InterfaceProbe {
            name: "veth3".into(),
            ifindex: 5,
            selected: true,
            programs: vec![
                program(9, "ip_masq_classify"),
                program(7, "ip_masq_classify"),
                program(11, "cil_from_container"),
            ],
        },
        InterfaceProbe {
            name: "eth0".into(),
            ifindex: 2,
            selected: false,
            programs: vec![program(12, "other")],
        },
    ]);
    let findings = analyze(&input);
    assert_eq!(
        kinds(&findings),
        [
            FindingKind::InterfaceWithoutProgram,
            FindingKind::ForeignProgram,
            FindingKind::ForeignProgram
        ]
    );
    assert_eq!(findings[0].location, "interface veth2");
    assert!(findings[1].evidence.contains("id 9) runs before"));
    assert!(findings[2].evidence.contains("id 11) runs after"));
}

#[test]
fn mark_specs() {
    assert_eq!(parse_mark_spec("0x2000/0x2000"), Some((0x2000, 0x2000)));
    assert_eq!(parse_mark_spec("0x1"), Some((1, u32::MAX)));
    assert_eq!(parse_mark_spec("16"), Some((16, u32::MAX)));
    assert_eq!(parse_mark_spec("zz"), None);
}

#[test]
fn render_lists_each_finding_with_its_fix() {
    let text = save(
        &[
            "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
            JUMP,
            OUR_CHAIN,
        ],
        &[],
        "",
    );
    let rendered = render(&analyze(&inputs(text)));
    assert!(rendered.starts_with("1 problem(s) found"), "{rendered}");
    assert!(rendered.contains("[docker-masquerade] iptables-nft nat POSTROUTING"));
    assert!(rendered.contains("fix:     Start dockerd with --ip-masq=false"));
    assert_eq!(
        render(&[]),
        "no problems found: nothing on this node defeats non-masquerade\n"
    );
}

#[test]
fn nftables_masquerades_are_findings_but_kube_proxys_is_not() {
    let statement = |table: &str, only_marked: Option<u64>| nftables::NftSnat {
        family: "ip".into(),
        table: table.into(),
        chain: "POSTROUTING".into(),
        base_chain: "POSTROUTING".into(),
        priority: 100,
        handle: 7,
        statement: "masquerade",
        only_marked,
    };
    let mut findings = Vec::new();
    nftables::findings(
        &[
            statement("dockerlike", None),
            statement("kube-proxy", Some(0x4000)),
        ],
        &mut findings,
    );
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].kind, FindingKind::NftablesSnat);
    assert!(
        findings[0]
            .fix
            .contains("nft delete rule ip dockerlike POSTROUTING handle 7"),
        "{}",
        findings[0].fix
    );
    assert!(findings[0].problem.contains("a RETURN in ip-masq's chain"));
}

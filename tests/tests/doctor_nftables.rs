//! `ip-masq doctor` sees the native nftables ruleset: a Docker-like and a
//! flannel-like masquerade in tables of their own are findings with the
//! command that deletes each, kube-proxy's mark-gated masquerade is not,
//! and once the printed commands ran, doctor is clean. Root.

use lab::{Lab, LabOptions, agent::agent_binary};
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../ip-masq/tests/fixtures/nft-lab.nft"
);

fn doctor(lab: &Lab) -> (i32, Value) {
    let pin_dir = lab.bpffs.pin_dir();
    let state_dir = lab.state_dir();
    let output = lab.node.exec(
        agent_binary().to_str().unwrap(),
        &[
            "doctor",
            "--json",
            "--pin-path",
            pin_dir.to_str().unwrap(),
            "--state-dir",
            state_dir.to_str().unwrap(),
        ],
    );
    (
        output.status.code().unwrap(),
        serde_json::from_slice(&output.stdout).expect("doctor JSON"),
    )
}

#[test]
#[ignore = "needs root"]
fn nftables_masquerades_outside_our_chain_are_reported_and_fixable() {
    let lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    });
    let _agent = lab.start_agent(&[]);
    let (code, clean) = doctor(&lab);
    assert_eq!(code, 0, "a clean node: {clean}");
    lab.node.exec_ok("nft", &["-f", FIXTURE]);
    let (code, report) = doctor(&lab);
    assert_eq!(code, 1, "{report}");
    let findings: Vec<&Value> = report
        .as_array()
        .or_else(|| report["findings"].as_array())
        .expect("a list of findings")
        .iter()
        .filter(|f| f["kind"] == "nftables-snat")
        .collect();
    let locations: Vec<&str> = findings
        .iter()
        .map(|f| f["location"].as_str().unwrap())
        .collect();
    assert_eq!(locations.len(), 2, "{locations:?}");
    assert!(
        locations[0].contains("ip dockerlike POSTROUTING"),
        "{locations:?}"
    );
    assert!(locations[1].contains("inet flannel post"), "{locations:?}");
    assert!(
        !report.to_string().contains("kube-proxy"),
        "kube-proxy's own masquerade is benign: {report}"
    );
    for finding in findings {
        let fix = finding["fix"].as_str().unwrap();
        let command = &fix[fix.find("nft delete rule").expect("a delete command")..];
        let words: Vec<&str> = command.split_whitespace().collect();
        lab.node.exec_ok(words[0], &words[1..]);
    }
    let (code, after) = doctor(&lab);
    assert_eq!(code, 0, "clean once the printed commands ran: {after}");
}

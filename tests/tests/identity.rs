//! `ip_masq_config_info{sha256, sources}`: one hash of what a node does,
//! the same on two nodes with the same decisions and across a restart, and
//! different once the decisions change. Root.

use std::time::Duration;

use lab::{Lab, LabOptions, wait_until};

const METRICS: &str = "127.0.0.1:9483";

fn identity(lab: &Lab) -> Option<String> {
    let (_, body) = lab.node.http_get(METRICS, "/metrics");
    body.lines()
        .find(|line| line.starts_with("ip_masq_config_info{"))
        .and_then(|line| line.split("sha256=\"").nth(1))
        .map(|rest| rest.split('"').next().unwrap_or_default().to_owned())
}

fn small_lab() -> Lab {
    Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    })
}

#[test]
#[ignore = "needs root"]
fn the_identity_is_the_same_across_nodes_and_restarts_and_follows_changes() {
    let (first, second) = (small_lab(), small_lab());
    first.write_config("nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\n# platform\n");
    second.write_config("{\"nonMasqueradeCIDRs\": [\"172.16.0.0/12\", \"10.0.0.0/8\"]}\n");
    let mut agent = first.start_agent(&[]);
    let _other = second.start_agent(&[]);
    let on_first = identity(&first).expect("ip_masq_config_info on the first node");
    assert_eq!(on_first.len(), 64);
    // status shows the same hash.
    let pin_dir = first.bpffs.pin_dir();
    let state_dir = first.state_dir();
    let output = first.node.exec(
        lab::agent::agent_binary().to_str().unwrap(),
        &[
            "status",
            "--pin-path",
            pin_dir.to_str().unwrap(),
            "--state-dir",
            state_dir.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("config sha256: {on_first}")),
        "{text}"
    );
    assert_eq!(
        identity(&second).as_deref(),
        Some(on_first.as_str()),
        "same decisions, same identity"
    );

    agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
    let _restarted = first.start_agent(&[]);
    assert_eq!(
        identity(&first).as_deref(),
        Some(on_first.as_str()),
        "a restart keeps it"
    );

    first.write_config("nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    assert!(
        wait_until(Duration::from_secs(5), || identity(&first)
            .is_some_and(|id| id != on_first)),
        "a change of decisions changes it"
    );
}

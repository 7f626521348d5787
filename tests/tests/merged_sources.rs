//! `--config-dir`: two ConfigMaps projected into one volume, a platform
//! one and a team one, read as one config; the kubelet's `..data` swap of
//! either applies the merge, and a conflict between them keeps the table
//! in force. Root.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use lab::{Lab, LabOptions, agent::dump_maps, unique_name, wait_until};

/// A projected volume as the kubelet's atomic writer lays it out: a new
/// version directory with every key, then a rename of `..data` onto it,
/// and one symlink per key through `..data`.
fn project(dir: &Path, files: &[(&str, &str)]) {
    let version = unique_name("..version_");
    std::fs::create_dir(dir.join(&version)).expect("version dir");
    for (name, text) in files {
        std::fs::write(dir.join(&version).join(name), text).expect("write key");
    }
    let staging = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staging);
    std::os::unix::fs::symlink(&version, &staging).expect("symlink ..data_tmp");
    std::fs::rename(&staging, dir.join("..data")).expect("swap ..data");
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("key symlink");
        }
    }
}

fn keep_entries(entries: &BTreeSet<String>) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| e.ends_with("keep-source"))
        .cloned()
        .collect()
}

#[test]
#[ignore = "needs root"]
fn two_projected_configmaps_are_merged_and_each_swap_applies() {
    let lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    });
    let dir = lab.config_dir().to_owned();
    let platform = "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n";
    project(
        &dir,
        &[
            ("ip-masq-platform", platform),
            ("ip-masq-team", "nonMasqueradeCIDRs: [192.168.0.0/16]\n"),
        ],
    );
    let _agent = lab.start_agent(&["--config-dir"]);
    let pin_dir = lab.bpffs.pin_dir();
    let expect = |cidrs: &[&str]| -> BTreeSet<String> {
        cidrs.iter().map(|c| format!("{c} keep-source")).collect()
    };
    let reached = |wanted: &BTreeSet<String>| -> Option<Duration> {
        let started = Instant::now();
        wait_until(Duration::from_secs(5), || {
            dump_maps(&pin_dir).is_ok_and(|e| &keep_entries(&e) == wanted)
        })
        .then(|| started.elapsed())
    };
    reached(&expect(&["10.0.0.0/8", "192.168.0.0/16"])).expect("the union at start");

    project(
        &dir,
        &[
            ("ip-masq-platform", platform),
            (
                "ip-masq-team",
                "nonMasqueradeCIDRs: [192.168.0.0/16, 100.64.0.0/10]\n",
            ),
        ],
    );
    let team_swap = reached(&expect(&["10.0.0.0/8", "100.64.0.0/10", "192.168.0.0/16"]))
        .expect("the team swap applied");

    let platform_v2 = "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\nmasqLinkLocal: true\n";
    project(
        &dir,
        &[
            ("ip-masq-platform", platform_v2),
            (
                "ip-masq-team",
                "nonMasqueradeCIDRs: [192.168.0.0/16, 100.64.0.0/10]\n",
            ),
        ],
    );
    let platform_swap = reached(&expect(&[
        "10.0.0.0/8",
        "100.64.0.0/10",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ]))
    .expect("the platform swap applied");
    println!(
        "merge applied {team_swap:?} after the team swap, {platform_swap:?} after the platform swap"
    );
    // dump names each entry's files, from the agent's state file, which
    // the agent writes after the reload.
    let dump = || -> serde_json::Value {
        let output = lab.node.exec(
            lab::agent::agent_binary().to_str().unwrap(),
            &[
                "dump",
                "--json",
                "--pin-path",
                pin_dir.to_str().unwrap(),
                "--state-dir",
                lab.state_dir().to_str().unwrap(),
            ],
        );
        serde_json::from_slice(&output.stdout).expect("dump JSON")
    };
    let sources_of = |rows: &serde_json::Value, cidr: &str| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|row| row["cidr"] == cidr)
            .map(|row| {
                row["sources"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let published = wait_until(Duration::from_secs(5), || {
        sources_of(&dump(), "172.16.0.0/12") == ["ip-masq-platform"]
    });
    assert!(published, "the state file names each entry's files");
    let rows = dump();
    assert_eq!(sources_of(&rows, "10.0.0.0/8"), ["ip-masq-platform"]);
    assert_eq!(sources_of(&rows, "100.64.0.0/10"), ["ip-masq-team"]);

    // A conflict: the team masquerades what the platform keeps. The table
    // in force stays, and readiness names both files.
    let before = dump_maps(&pin_dir).expect("dump");
    project(
        &dir,
        &[
            ("ip-masq-platform", platform_v2),
            (
                "ip-masq-team",
                "nonMasqueradeCIDRs: [192.168.0.0/16]\nmasqueradeCIDRs: [10.0.0.0/8]\n",
            ),
        ],
    );
    let refused = wait_until(Duration::from_secs(5), || {
        let (code, body) = lab.node.http_get("127.0.0.1:9483", "/readyz");
        code == 503 && body.contains("ip-masq-platform") && body.contains("ip-masq-team")
    });
    assert!(refused, "the conflict is refused, naming both files");
    assert_eq!(
        dump_maps(&pin_dir).expect("dump"),
        before,
        "the table in force stays"
    );
}

//! `ip-masq check --diff OLD NEW` and `check --against-running NEW`: the
//! ranges whose decision changes, both ways, with their sizes, and the
//! warnings for changes that break egress; exit codes as `check`'s.

use std::{path::PathBuf, process::Command};

use lab::{Lab, LabOptions, agent::agent_binary, unique_name};
use serde_json::Value;

struct Files(PathBuf);

impl Files {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("ip-masq-preview-"));
        std::fs::create_dir_all(&dir).expect("dir");
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let output = Command::new(agent_binary())
        .arg("check")
        .args(args)
        .output()
        .expect("run check");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn diff_lists_changes_both_ways_with_sizes_and_warns() {
    let files = Files::new();
    let old = files.write("old", "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\n");
    let new = files.write("new", "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\nmasqueradeCIDRs: [10.1.0.0/16]\nmasqLinkLocal: true\n");
    let (code, stdout, stderr) = check(&["--diff".as_ref(), old.as_os_str(), new.as_os_str()]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "  10.1.0.0/16: keep source -> masquerade (65536 addresses)",
            "  169.254.0.0/16: keep source -> masquerade (65536 addresses)",
            "  172.16.0.0/12: keep source -> masquerade (1048576 addresses)",
            "  192.168.0.0/16: masquerade -> keep source (65536 addresses)",
            "warning [masquerades-link-local]: 169.254.0.0/16 is masqueraded now (masqLinkLocal): link-local services such as cloud metadata endpoints see the node address",
        ],
        "{stdout}"
    );
    let (code, json, _) = check(&[
        "--diff".as_ref(),
        old.as_os_str(),
        new.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 0);
    let document: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(document["format"], 1);
    assert_eq!(document["changes"][0]["cidrs"][0], "10.1.0.0/16");
    assert_eq!(document["changes"][0]["from"], "keep-source");
    assert_eq!(document["changes"][0]["addresses"], 65536);
    assert_eq!(document["warnings"][0]["kind"], "masquerades-link-local");

    let (code, stdout, _) = check(&["--diff".as_ref(), old.as_os_str(), old.as_os_str()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("no decision changes"), "{stdout}");

    let bad = files.write("bad", "nonMasqueradeCIDRs: [10.0.0.1/8]\n");
    let (code, _, stderr) = check(&["--diff".as_ref(), old.as_os_str(), bad.as_os_str()]);
    assert_eq!(code, 1, "an invalid file is exit 1: {stderr}");
    let directory = files.0.clone();
    let (code, _, _) = check(&["--diff".as_ref(), old.as_os_str(), directory.as_os_str()]);
    assert_eq!(code, 2, "an unreadable file is exit 2");
}

/// Root: compares with what a running agent's pinned maps hold.
#[test]
#[ignore = "needs root"]
fn against_running_compares_with_the_pinned_maps() {
    let lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    });
    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12]\n");
    let _agent = lab.start_agent(&[]);
    let files = Files::new();
    let new = files.write("new", "nonMasqueradeCIDRs: [172.16.0.0/12, 0.0.0.0/0]\n");
    let pin_dir = lab.bpffs.pin_dir();
    let (code, stdout, stderr) = check(&[
        "--against-running".as_ref(),
        new.as_os_str(),
        "--pin-path".as_ref(),
        pin_dir.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let document: Value = serde_json::from_str(&stdout).expect("JSON");
    assert!(
        document["old"]
            .as_str()
            .unwrap()
            .contains(pin_dir.to_str().unwrap())
    );
    let kinds: Vec<&str> = document["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"keeps-everything"), "{stdout}");
    let total: u64 = document["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["addresses"].as_u64().unwrap())
        .sum();
    // Everything but 172.16.0.0/12 and link-local, which both keep.
    assert_eq!(total, (1u64 << 32) - (1 << 20) - (1 << 16), "{stdout}");
    let nowhere = files.0.join("no-pins");
    let (code, _, _) = check(&[
        "--against-running".as_ref(),
        new.as_os_str(),
        "--pin-path".as_ref(),
        nowhere.as_os_str(),
    ]);
    assert_eq!(code, 2, "no pinned maps is an error");
}

//! Checks on the workspace as cargo sees it (`cargo metadata`). No root
//! needed.

use std::{collections::BTreeMap, process::Command};

use serde_json::Value;

/// `cargo metadata --no-deps` of the workspace this crate belongs to.
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// Binary target names that more than one workspace target uses, each with
/// the packages that use it. Cargo puts every binary of a build at
/// `target/<profile>/<name>`, so two of one name overwrite each other: the
/// last one built wins.
fn shared_bin_names(metadata: &Value) -> BTreeMap<String, Vec<String>> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let package_name = package["name"].as_str().expect("package name");
        for target in package["targets"].as_array().expect("targets") {
            let is_bin = target["kind"]
                .as_array()
                .expect("target kinds")
                .iter()
                .any(|kind| kind == "bin");
            if is_bin {
                let name = target["name"].as_str().expect("target name");
                by_name
                    .entry(name.to_owned())
                    .or_default()
                    .push(package_name.to_owned());
            }
        }
    }
    by_name.retain(|_, packages| packages.len() > 1);
    by_name
}

#[test]
fn no_two_workspace_binaries_share_a_name() {
    let metadata = metadata();
    let shared = shared_bin_names(&metadata);
    assert!(
        shared.is_empty(),
        "binaries that overwrite each other in target/: {shared:?}"
    );
    // The agent is the one the end-to-end tests and the image run.
    let agent = &metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ip-masq")
        .expect("package ip-masq")["targets"];
    assert!(
        agent
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "ip-masq" && t["kind"][0] == "bin"),
        "the agent binary is named ip-masq"
    );
}

#[test]
fn shared_bin_names_are_found() {
    let metadata = serde_json::json!({"packages": [
        {"name": "a", "targets": [{"kind": ["bin"], "name": "tool"}, {"kind": ["lib"], "name": "a"}]},
        {"name": "b", "targets": [{"kind": ["bin"], "name": "tool"}, {"kind": ["bin"], "name": "b"}]},
        {"name": "c", "targets": [{"kind": ["lib"], "name": "b"}]},
    ]});
    assert_eq!(
        shared_bin_names(&metadata),
        BTreeMap::from([("tool".to_owned(), vec!["a".to_owned(), "b".to_owned()])])
    );
}

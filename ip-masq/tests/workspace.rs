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

/// The `license` expression a workspace package declares in Cargo.toml.
fn declared_license(metadata: &Value, package: &str) -> String {
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("no package {package}"))["license"]
        .as_str()
        .unwrap_or_else(|| panic!("{package} declares no license"))
        .to_owned()
}

/// The string the kernel's `license_is_gpl_compatible` knows for an SPDX
/// expression, if any. The kernel has no SPDX parser: it compares the
/// object's `license` section against a fixed list of module-style names.
fn kernel_license(spdx: &str) -> Option<&'static str> {
    let mut terms: Vec<&str> = spdx.split(" OR ").map(str::trim).collect();
    terms.sort_unstable();
    Some(match terms[..] {
        ["GPL-2.0-only"] => "GPL v2",
        ["GPL-2.0-or-later"] => "GPL",
        ["GPL-2.0-only", "MIT"] => "Dual MIT/GPL",
        ["BSD-2-Clause" | "BSD-3-Clause", "GPL-2.0-only"] => "Dual BSD/GPL",
        ["GPL-2.0-only", "MPL-1.1"] => "Dual MPL/GPL",
        _ => return None,
    })
}

/// `license_is_gpl_compatible` (include/linux/license.h): the names under
/// which the kernel lets a program call GPL-only helpers.
const KERNEL_GPL_COMPATIBLE: [&str; 6] = [
    "GPL",
    "GPL v2",
    "GPL and additional rights",
    "Dual BSD/GPL",
    "Dual MIT/GPL",
    "Dual MPL/GPL",
];

#[test]
fn the_ebpf_objects_license_is_what_its_crates_declare() {
    let metadata = metadata();
    let declared = declared_license(&metadata, "ip-masq-ebpf");
    // ip-masq-common is compiled into the object too, so it must offer the
    // object's licence.
    assert_eq!(
        declared_license(&metadata, "ip-masq-common"),
        declared,
        "ip-masq-common is part of the eBPF object"
    );
    let expected = kernel_license(&declared)
        .unwrap_or_else(|| panic!("{declared:?} has no name the kernel knows"));
    let object = std::fs::read(env!("IP_MASQ_EBPF_OBJECT")).expect("the built eBPF object");
    let parsed = aya_obj::Object::parse(&object).expect("a BPF ELF object");
    let license = parsed.license.to_str().expect("an ASCII license");
    assert_eq!(
        license, expected,
        "the object's license section against Cargo.toml's {declared:?}"
    );
    assert!(
        KERNEL_GPL_COMPATIBLE.contains(&license),
        "{license:?} would lock the programs out of GPL-only helpers"
    );
}

#[test]
fn spdx_expressions_map_to_the_kernels_names() {
    assert_eq!(kernel_license("MIT OR GPL-2.0-only"), Some("Dual MIT/GPL"));
    assert_eq!(kernel_license("GPL-2.0-only OR MIT"), Some("Dual MIT/GPL"));
    assert_eq!(kernel_license("GPL-2.0-only"), Some("GPL v2"));
    assert_eq!(kernel_license("Apache-2.0"), None);
    assert_eq!(kernel_license("MIT"), None);
    assert_eq!(kernel_license("Apache-2.0 OR MIT"), None);
    for name in [
        "GPL-2.0-only",
        "MIT OR GPL-2.0-only",
        "BSD-2-Clause OR GPL-2.0-only",
    ] {
        assert!(KERNEL_GPL_COMPATIBLE.contains(&kernel_license(name).unwrap()));
    }
}

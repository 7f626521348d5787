//! `ip-masq-bench`, the helper binary behind `cargo xtask bench`'s
//! cost-per-packet phase: it fills the maps through the agent's sync code,
//! checks each program's verdict on the kernel, and only then reports
//! timings. Needs root and BPF.

use std::{path::PathBuf, process::Command};

use lab::{Bpffs, agent::bench_binary, unique_name};
use serde_json::Value;

/// A scratch CIDR file, removed on drop.
struct CidrFile(PathBuf);

impl CidrFile {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(unique_name("ip-masq-bench-cidrs-"));
        std::fs::write(&path, text).expect("write CIDR file");
        Self(path)
    }
}

impl Drop for CidrFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const CIDRS: &str =
    "172.16.0.0/12\n198.18.0.0/15\n100.64.0.0/10\n2400::/32\n2600::/24\n2a00::/16\n";

fn bench(bpffs: &Bpffs, cidrs: &CidrFile, extra: &[&str]) -> std::process::Output {
    Command::new(bench_binary())
        .arg("--pin-path")
        .arg(bpffs.pin_dir())
        .arg("--cidrs")
        .arg(&cidrs.0)
        .args(["--repeat", "1000", "--rounds", "2"])
        .args(extra)
        .output()
        .expect("run ip-masq-bench")
}

#[test]
#[ignore = "needs root"]
fn reports_every_case_for_every_size() {
    let bpffs = Bpffs::new();
    let cidrs = CidrFile::new(CIDRS);
    let output = bench(&bpffs, &cidrs, &["--sizes", "0,3"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["repeat"], 1000);
    assert_eq!(report["frame_bytes_v4"], 64);
    let sizes = report["sizes"].as_array().expect("sizes");
    assert_eq!(sizes.len(), 2);

    let empty = &sizes[0];
    assert_eq!(empty["cidrs"], 0);
    assert!(empty["hit_v4"].is_null(), "nothing to hit in an empty map");
    assert!(empty["hit_v6"].is_null());
    assert!(empty["miss_v4"]["ns_per_packet"].as_f64().unwrap() > 0.0);
    assert!(empty["noop"]["ns_per_packet"].as_f64().unwrap() > 0.0);

    let three = &sizes[1];
    assert_eq!(three["cidrs"], 3);
    assert_eq!(three["fill_entries"], 6, "three prefixes of each family");
    // The hit lies in the middle prefix of each family's list.
    assert_eq!(three["hit_v4"]["destination"], "198.18.0.1");
    assert_eq!(three["hit_v6"]["destination"], "2600::1");
    assert_eq!(three["miss_v4"]["destination"], "203.0.113.5");
    for case in [
        "hit_v4",
        "miss_v4",
        "hit_v6",
        "noop",
        "xt_hit_v4",
        "xt_miss_v4",
    ] {
        let ns = three[case]["ns_per_packet"].as_f64();
        assert!(ns.is_some_and(|ns| ns > 0.0), "{case}: {}", three[case]);
    }
}

#[test]
#[ignore = "needs root"]
fn a_miss_address_that_the_maps_hold_is_refused() {
    let bpffs = Bpffs::new();
    let cidrs = CidrFile::new(CIDRS);
    let output = bench(&bpffs, &cidrs, &["--sizes", "1", "--miss", "172.16.5.5"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("miss-v4 with 1 CIDRs: expected return -1 and mark 0x0, got -1 and 0x1000"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "no timings for a wrong path");
}

#[test]
#[ignore = "needs root"]
fn sizes_beyond_the_list_are_refused() {
    let bpffs = Bpffs::new();
    let cidrs = CidrFile::new(CIDRS);
    let output = bench(&bpffs, &cidrs, &["--sizes", "0,4"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("IPv4 size 4 asked for, but the CIDR file lists only 3"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

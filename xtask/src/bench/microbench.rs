//! Datapath cost per packet: runs the benchmark helper `ip-masq-bench`
//! command (BPF_PROG_TEST_RUN on the classifier, a no-op classifier and the
//! xt_bpf filter) in a private bpffs and reads its JSON.
//!
//! The types below mirror `ip_masq::bench`'s report. xtask does not depend
//! on the ip-masq crate, whose build needs bpf-linker: `cargo xtask`
//! compiles xtask before `setup` has installed it. The JSON is the interface.

use std::{path::Path, process::Command};

use anyhow::{Context as _, ensure};
use lab::Bpffs;
use serde::{Deserialize, Serialize};

/// One case as `ip-masq-bench` reports it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
pub struct CaseTiming {
    pub destination: std::net::IpAddr,
    pub ns_per_packet: f64,
    pub kernel_ns_per_packet: u64,
}

/// One map size as `ip-masq-bench` reports it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SizeReport {
    pub cidrs: usize,
    pub fill_entries: usize,
    pub fill_ms: f64,
    pub hit_v4: Option<CaseTiming>,
    pub miss_v4: CaseTiming,
    pub hit_v6: Option<CaseTiming>,
    pub noop: CaseTiming,
    pub xt_hit_v4: Option<CaseTiming>,
    pub xt_miss_v4: Option<CaseTiming>,
}

/// The whole `ip-masq-bench` report.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct DatapathReport {
    pub repeat: u32,
    pub rounds: u32,
    pub frame_bytes_v4: usize,
    pub frame_bytes_v6: usize,
    pub sizes: Vec<SizeReport>,
}

/// Runs `ip-masq-bench` on the CIDR list in `cidrs_file`.
pub fn run(
    cidrs_file: &Path,
    sizes: &[usize],
    repeat: u32,
    rounds: u32,
) -> anyhow::Result<DatapathReport> {
    let bpffs = Bpffs::new();
    let sizes_arg = sizes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let output = Command::new(lab::agent::bench_binary())
        .arg("--pin-path")
        .arg(bpffs.pin_dir())
        .arg("--cidrs")
        .arg(cidrs_file)
        .args(["--sizes", &sizes_arg])
        .args(["--repeat", &repeat.to_string()])
        .args(["--rounds", &rounds.to_string()])
        .output()
        .context("run ip-masq-bench")?;
    ensure!(
        output.status.success(),
        "ip-masq-bench failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    serde_json::from_slice(&output.stdout).context("unparsable ip-masq-bench JSON")
}

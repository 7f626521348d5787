//! Datapath cost per packet: runs the benchmark helper `ip-masq-bench`
//! command (BPF_PROG_TEST_RUN on the classifier, a no-op classifier and the
//! xt_bpf filter) in a private bpffs and reads its JSON.
//!
//! The report types are the helper's own (`ip-masq-bench`'s library).

use std::{path::Path, process::Command};

use anyhow::{Context as _, ensure};
use lab::Bpffs;

pub(super) use ip_masq_bench::{CaseTiming, Report as DatapathReport};

/// Runs `ip-masq-bench` on the CIDR list in `cidrs_file`.
pub(super) fn run(
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

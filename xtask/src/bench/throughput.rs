//! TCP bulk throughput from the pod to the external host (iperf3), with
//! and without ip-masq, and how often a BPF program of ours runs per packet
//! of an established flow.

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde::Serialize;

use super::{
    bpfstats, counters,
    node::{Bed, command_in},
};
use crate::bench::node::Contender;

const IPERF_PORT: &str = "5201";

/// An iperf3 server on the external host, killed on drop.
pub(super) struct Server {
    child: Child,
}

impl Server {
    pub(super) fn start(bed: &Bed) -> anyhow::Result<Self> {
        let child = command_in(&bed.lab.external, "iperf3")?
            .args([
                "-s",
                "-B",
                &Bed::destination().to_string(),
                "-p",
                IPERF_PORT,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn iperf3 -s (is iperf3 installed? cargo xtask setup)")?;
        Ok(Self { child })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The receiver's rate from `iperf3 -J` output, in bits per second.
pub(super) fn parse_iperf_bits_per_second(json: &str) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value["end"]["sum_received"]["bits_per_second"].as_f64()
}

/// One iperf3 run of `seconds` from the pod; retries while the server is
/// still starting.
pub(super) fn run_client(bed: &Bed, seconds: u32) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let output = command_in(bed.pod_netns(), "iperf3")?
            .args(["-c", &Bed::destination().to_string(), "-p", IPERF_PORT])
            .args(["-t", &seconds.to_string(), "-J"])
            .output()
            .context("run iperf3 -c")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success()
            && let Some(rate) = parse_iperf_bits_per_second(&stdout)
        {
            return Ok(rate);
        }
        if Instant::now() > deadline {
            bail!("iperf3 client failed: {}", stdout.trim());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One throughput run of one contender.
#[derive(Clone, Debug, Serialize)]
pub(super) struct ThroughputSample {
    pub contender: Contender,
    pub round: usize,
    /// Position in the phase, for pairing with the neighbouring reference.
    pub seq: usize,
    pub gbit_per_second: f64,
}

/// How often our programs ran per packet the pod sent during a bulk flow.
#[derive(Clone, Debug, Serialize)]
pub(super) struct RunCounts {
    pub contender: Contender,
    /// Packets (skbs) the node received from the pod.
    pub packets: u64,
    /// Runs of the TC classifier attached to the pod interface.
    pub classifier_runs: u64,
    /// Runs of the xt_bpf socket filter named by the nat chain.
    pub xt_bpf_runs: u64,
}

impl RunCounts {
    pub(super) fn runs_per_packet(&self) -> f64 {
        (self.classifier_runs + self.xt_bpf_runs) as f64 / self.packets.max(1) as f64
    }
}

/// Run counts of the programs `contender` uses (active on `bed`), over one
/// bulk transfer.
pub(super) fn run_counts(
    bed: &Bed,
    contender: Contender,
    seconds: u32,
) -> anyhow::Result<RunCounts> {
    let _stats = bpfstats::enable()?;
    let interface = bed.pod_interface().to_owned();
    let before = (
        bpfstats::read(bed)?,
        counters::rx_packets(&bed.lab.node, &interface)?,
    );
    run_client(bed, seconds)?;
    let after = (
        bpfstats::read(bed)?,
        counters::rx_packets(&bed.lab.node, &interface)?,
    );
    let ran = after.0.since(&before.0);
    Ok(RunCounts {
        contender,
        packets: after.1 - before.1,
        classifier_runs: ran.classifier_runs,
        xt_bpf_runs: ran.xt_bpf_runs,
    })
}

/// Checks that run counts were measured on real traffic.
pub(super) fn check_run_counts(counts: &RunCounts) -> anyhow::Result<()> {
    ensure!(
        counts.packets > 1000,
        "{}: only {} packets seen on the pod interface",
        counts.contender,
        counts.packets
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf_receiver_rate() {
        let json = r#"{"end":{"sum_sent":{"bits_per_second":2.0},"sum_received":{"bits_per_second":1.5e10}}}"#;
        assert_eq!(parse_iperf_bits_per_second(json), Some(1.5e10));
        assert_eq!(parse_iperf_bits_per_second("{}"), None);
        assert_eq!(parse_iperf_bits_per_second("not json"), None);
    }

    #[test]
    fn runs_per_packet() {
        let counts = RunCounts {
            contender: Contender::IpMasq,
            packets: 1000,
            classifier_runs: 1000,
            xt_bpf_runs: 0,
        };
        assert_eq!(counts.runs_per_packet(), 1.0);
    }
}

//! How often, and for how long, our BPF programs run in a bed: the TC
//! classifier on the pod interface and the xt_bpf filter that the nat chain
//! names. Run counts and run time are kept by the kernel only while
//! statistics are enabled.

use std::{os::fd::OwnedFd, path::PathBuf};

use anyhow::Context as _;
use aya::{
    programs::{ProgramInfo, SchedClassifier, TcAttachType},
    sys::{Stats, enable_stats},
};
use serde::Serialize;

use super::node::Bed;

/// Enables BPF run statistics until the returned descriptor is dropped.
/// BPF_ENABLE_STATS rather than the global `kernel.bpf_stats_enabled`
/// sysctl: the kernel switches statistics off again when the descriptor
/// closes, even if the benchmark dies, so nothing is left changed.
pub(super) fn enable() -> anyhow::Result<OwnedFd> {
    enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")
}

/// Run counts and run time, summed per kind of program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(super) struct Totals {
    pub classifier_runs: u64,
    pub classifier_ns: u64,
    pub xt_bpf_runs: u64,
    pub xt_bpf_ns: u64,
}

impl Totals {
    /// What ran since `earlier`.
    pub(super) fn since(&self, earlier: &Self) -> Self {
        Self {
            classifier_runs: self.classifier_runs - earlier.classifier_runs,
            classifier_ns: self.classifier_ns - earlier.classifier_ns,
            xt_bpf_runs: self.xt_bpf_runs - earlier.xt_bpf_runs,
            xt_bpf_ns: self.xt_bpf_ns - earlier.xt_bpf_ns,
        }
    }

    /// Average nanoseconds per run of the classifier, if it ran.
    pub(super) fn classifier_ns_per_run(&self) -> Option<f64> {
        (self.classifier_runs > 0).then(|| self.classifier_ns as f64 / self.classifier_runs as f64)
    }

    /// Average nanoseconds per run of the xt_bpf filter, if it ran.
    pub(super) fn xt_bpf_ns_per_run(&self) -> Option<f64> {
        (self.xt_bpf_runs > 0).then(|| self.xt_bpf_ns as f64 / self.xt_bpf_runs as f64)
    }
}

/// The programs' totals in `bed` now.
pub(super) fn read(bed: &Bed) -> anyhow::Result<Totals> {
    let (classifier_runs, classifier_ns) = classifier_totals(bed)?;
    let (xt_bpf_runs, xt_bpf_ns) = match xt_bpf_pin(bed) {
        Some(pin) => {
            let info =
                ProgramInfo::from_pin(&pin).with_context(|| format!("open {}", pin.display()))?;
            (info.run_count(), info.run_time().as_nanos() as u64)
        }
        None => (0, 0),
    };
    Ok(Totals {
        classifier_runs,
        classifier_ns,
        xt_bpf_runs,
        xt_bpf_ns,
    })
}

/// Summed over the programs at tcx ingress of the pod interface.
fn classifier_totals(bed: &Bed) -> anyhow::Result<(u64, u64)> {
    let interface = bed.pod_interface().to_owned();
    let path = bed.lab.node.path();
    std::thread::spawn(move || -> anyhow::Result<(u64, u64)> {
        lab::netns::enter_netns(&path);
        let (_revision, programs) = SchedClassifier::query_tcx(&interface, TcAttachType::Ingress)
            .with_context(|| format!("query tcx on {interface}"))?;
        Ok(programs.iter().fold((0, 0), |(runs, ns), program| {
            (
                runs + program.run_count(),
                ns + program.run_time().as_nanos() as u64,
            )
        }))
    })
    .join()
    .expect("query thread")
}

/// The pinned program the agent's nat chain names, if it has one.
fn xt_bpf_pin(bed: &Bed) -> Option<PathBuf> {
    parse_object_pinned(&bed.nat_listing("IP-MASQ-AGENT").ok()?)
}

/// The path after `--object-pinned` in an `iptables -S` listing.
pub(super) fn parse_object_pinned(listing: &str) -> Option<PathBuf> {
    listing.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        words.find(|word| *word == "--object-pinned")?;
        words.next().map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_object_from_the_listing() {
        let listing = "-N IP-MASQ-AGENT\n\
                       -A IP-MASQ-AGENT -m mark --mark 0x2000/0x2000 -j RETURN\n\
                       -A IP-MASQ-AGENT -m bpf --object-pinned /tmp/bpffs/ip-masq/xt_bpf_v4 -j RETURN\n";
        assert_eq!(
            parse_object_pinned(listing),
            Some(PathBuf::from("/tmp/bpffs/ip-masq/xt_bpf_v4"))
        );
        assert_eq!(parse_object_pinned("-N X\n"), None);
    }

    #[test]
    fn averages_only_for_programs_that_ran() {
        let later = Totals {
            classifier_runs: 30,
            classifier_ns: 6000,
            xt_bpf_runs: 0,
            xt_bpf_ns: 0,
        };
        let earlier = Totals {
            classifier_runs: 10,
            classifier_ns: 1000,
            ..Totals::default()
        };
        let delta = later.since(&earlier);
        assert_eq!(delta.classifier_ns_per_run(), Some(250.0));
        assert_eq!(delta.xt_bpf_ns_per_run(), None);
    }
}

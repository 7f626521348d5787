//! The benchmark's results: summaries, ratios, the targets, and
//! their rendering as `bench/results.md`. Pure: values in, text out.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::{
    control::{Apply, ControlResults},
    flows::FlowSample,
    microbench::DatapathReport,
    node::Contender,
    throughput::{RunCounts, ThroughputSample},
};

/// Where and how the benchmark ran.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Machine {
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
}

/// Knobs of this run.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Settings {
    pub test_run_repeat: u32,
    pub test_run_rounds: u32,
    pub flow_rounds: Vec<usize>,
    pub flow_window_ms: u64,
    pub flow_warmup_ms: u64,
    pub generator_threads: usize,
    pub throughput_rounds: usize,
    pub throughput_seconds: u32,
    pub throughput_cidrs: usize,
}

/// The median of one contender's samples.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Summary {
    pub contender: Contender,
    pub median: f64,
    pub samples: usize,
}

/// A ratio of two contenders: the median of the ratios of each numerator
/// measurement to the denominator measurement next to it, so that drift of
/// a shared machine's load cancels out.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Ratio {
    pub name: String,
    pub value: f64,
    /// The lowest and highest of the pair ratios: the run's noise.
    pub low: f64,
    pub high: f64,
    pub rounds: usize,
}

/// New flows per second at one list size.
#[derive(Clone, Debug, Serialize)]
pub(super) struct FlowSize {
    pub cidrs: usize,
    /// How long iptables-restore took to load the (b) chain.
    pub chain_b_restore_ms: Option<f64>,
    /// How long `ipset restore` took to load the (s) set.
    pub ipset_restore_ms: Option<f64>,
    /// How long `nft -f` took to load the (n) set.
    pub nft_load_ms: Option<f64>,
    pub samples: Vec<FlowSample>,
    /// Extra runs of (c) and (x) with BPF statistics on.
    pub bpf_cost: Vec<FlowSample>,
    pub summary: Vec<Summary>,
    pub ratios: Vec<Ratio>,
    pub skipped: Vec<String>,
}

/// Bulk throughput.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Throughput {
    pub cidrs: usize,
    pub samples: Vec<ThroughputSample>,
    pub summary: Vec<Summary>,
    pub ratios: Vec<Ratio>,
}

/// One of the targets.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Target {
    pub name: String,
    pub target: String,
    pub measured: Option<String>,
    /// `None`: not measured in this run (see `measured`/notes for why).
    pub pass: Option<bool>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Results {
    pub date: String,
    pub machine: Machine,
    pub wall_seconds: f64,
    pub settings: Settings,
    pub datapath: Option<DatapathReport>,
    /// Frames per second the flow generator writes when the node drops
    /// them at once: the most any contender could show.
    pub generator_ceiling_fps: Option<f64>,
    pub flows: Vec<FlowSize>,
    pub throughput: Option<Throughput>,
    pub run_counts: Vec<RunCounts>,
    pub control: Option<ControlResults>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

/// The median, or `None` for no values.
pub(super) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    })
}

/// Median per contender of `(contender, position, value)` triples, in
/// contender order.
pub(super) fn summarize(values: &[(Contender, usize, f64)]) -> Vec<Summary> {
    let mut by_contender: BTreeMap<Contender, Vec<f64>> = BTreeMap::new();
    for (contender, _, value) in values {
        by_contender.entry(*contender).or_default().push(*value);
    }
    by_contender
        .into_iter()
        .filter_map(|(contender, values)| {
            Some(Summary {
                contender,
                median: median(&values)?,
                samples: values.len(),
            })
        })
        .collect()
}

/// Each `numerator` measurement over the `denominator` measurement nearest
/// to it in position (the later one on a tie: the schedule puts the
/// reference right after each contender), then the median.
pub(super) fn paired_ratio(
    values: &[(Contender, usize, f64)],
    numerator: Contender,
    denominator: Contender,
) -> Option<Ratio> {
    let nearest = |position: usize| {
        values
            .iter()
            .filter(|(c, _, _)| *c == denominator)
            .min_by_key(|(_, p, _)| (p.abs_diff(position), usize::MAX - p))
            .map(|(_, _, v)| *v)
    };
    let ratios: Vec<f64> = values
        .iter()
        .filter(|(c, _, _)| *c == numerator)
        .filter_map(|(_, position, value)| {
            let base = nearest(*position)?;
            (base > 0.0).then(|| value / base)
        })
        .collect();
    Some(Ratio {
        name: format!("{}/{}", numerator.letter(), denominator.letter()),
        value: median(&ratios)?,
        low: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        high: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        rounds: ratios.len(),
    })
}

/// The ratios the issue asks for, against bare MASQUERADE.
pub(super) fn ratios_to_masquerade(values: &[(Contender, usize, f64)]) -> Vec<Ratio> {
    [
        Contender::IpMasq,
        Contender::Chain,
        Contender::XtBpf,
        Contender::IpSet,
        Contender::NftSet,
        Contender::None,
    ]
    .into_iter()
    .filter_map(|c| paired_ratio(values, c, Contender::Masquerade))
    .collect()
}

fn ratio_named<'a>(ratios: &'a [Ratio], name: &str) -> Option<&'a Ratio> {
    ratios.iter().find(|r| r.name == name)
}

/// Judges the run against the targets. Never loosened: a target
/// that could not be measured is reported as such, not as a pass.
pub(super) fn targets(results: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    for cidrs in [10_000, 100_000] {
        let ratio = results
            .flows
            .iter()
            .find(|f| f.cidrs == cidrs)
            .and_then(|f| ratio_named(&f.ratios, "c/m"));
        out.push(Target {
            name: format!("new flows, c/m at {}", size_label(cidrs)),
            target: ">= 0.95".into(),
            measured: ratio.map(|r| format!("{:.3}", r.value)),
            pass: ratio.map(|r| r.value >= 0.95),
        });
    }
    // The generator must leave NAT's own cost visible: no SNAT at all at
    // least three times bare MASQUERADE.
    let headroom = results
        .flows
        .iter()
        .find(|f| f.cidrs == 10_000)
        .and_then(|f| ratio_named(&f.ratios, "a/m"));
    out.push(Target {
        name: "generator: a/m at 10k".into(),
        target: ">= 3".into(),
        measured: headroom.map(|r| format!("{:.2}", r.value)),
        pass: headroom.map(|r| r.value >= 3.0),
    });
    // Against what a user could pick instead: the better of the two sets,
    // each ratio to the (m) run next to it, so that both share a reference.
    for cidrs in [10_000, 100_000] {
        let flows = results.flows.iter().find(|f| f.cidrs == cidrs);
        let ratio = |name: &str| {
            flows
                .and_then(|f| ratio_named(&f.ratios, name))
                .map(|r| r.value)
        };
        let best_set = match (ratio("s/m"), ratio("n/m")) {
            (Some(s), Some(n)) => Some(s.max(n)),
            (one, other) => one.or(other),
        };
        for (ours, letter) in [("c/m", "c"), ("x/m", "x")] {
            let measured = ratio(ours).zip(best_set).map(|(ours, set)| ours / set);
            out.push(Target {
                name: format!(
                    "new flows, {letter} / the better of s and n at {}",
                    size_label(cidrs)
                ),
                target: ">= 0.97".into(),
                measured: measured.map(|r| format!("{r:.3}")),
                pass: measured.map(|r| r >= 0.97),
            });
        }
    }
    datapath_targets(results.datapath.as_ref(), &mut out);
    let hit_ratio = results.datapath.as_ref().and_then(|d| {
        let size = d.sizes.iter().find(|s| s.cidrs == 10_000)?;
        Some(size.hit_v4?.ns_per_packet / size.noop.ns_per_packet)
    });
    out.push(Target {
        name: "classifier / no-op at 10k, hit".into(),
        target: "<= 3.5".into(),
        measured: hit_ratio.map(|r| format!("{r:.2}")),
        pass: hit_ratio.map(|r| r <= 3.5),
    });
    let throughput = results
        .throughput
        .as_ref()
        .and_then(|t| ratio_named(&t.ratios, "c/m"));
    out.push(Target {
        name: "TCP throughput, c/m".into(),
        target: ">= 0.97".into(),
        measured: throughput.map(|r| format!("{:.3}", r.value)),
        pass: throughput.map(|r| r.value >= 0.97),
    });
    let control = results.control.as_ref();
    let full = control.and_then(|c| c.full_loads.iter().find(|a| a.cidrs == 100_000));
    out.push(Target {
        name: "100k CIDRs written to applied".into(),
        target: "< 2000 ms".into(),
        measured: full.map(|a| format!("{:.0} ms", a.write_to_applied_ms)),
        pass: full.map(|a| a.write_to_applied_ms < 2000.0),
    });
    for format in ["yaml", "json"] {
        let worst_change = control.and_then(|c| {
            c.one_entry_changes
                .iter()
                .filter(|a| a.cidrs == 100_000 && a.format == format)
                .map(|a| a.write_to_applied_ms)
                .max_by(f64::total_cmp)
        });
        out.push(Target {
            name: format!(
                "one-entry change in the 100k list, {} (worst of runs)",
                format.to_uppercase()
            ),
            target: "< 50 ms".into(),
            measured: worst_change.map(|ms| format!("{ms:.1} ms")),
            pass: worst_change.map(|ms| ms < 50.0),
        });
    }
    let rss = control.and_then(|c| c.peak_rss_bytes);
    out.push(Target {
        name: "agent peak RSS (VmHWM)".into(),
        target: "< 20 MiB".into(),
        measured: rss.map(|b| format!("{:.1} MiB", b as f64 / 1_048_576.0)),
        pass: rss.map(|b| b < 20 * 1_048_576),
    });
    out
}

/// The datapath issue's targets: costs per packet as ratios to the no-op
/// of the same program type, memory, and map work.
fn datapath_targets(datapath: Option<&DatapathReport>, out: &mut Vec<Target>) {
    let size = |cidrs: usize| datapath.and_then(|d| d.sizes.iter().find(|s| s.cidrs == cidrs));
    let mut ratio_target = |name: String, limit: f64, ratio: Option<f64>| {
        out.push(Target {
            name,
            target: format!("<= {limit}"),
            measured: ratio.map(|r| format!("{r:.2}")),
            pass: ratio.map(|r| r <= limit),
        });
    };
    for cidrs in [0, 10_000, 100_000] {
        let at = size(cidrs);
        let noop = at.map(|s| s.noop.ns_per_packet);
        let over = |timing: Option<super::microbench::CaseTiming>| {
            timing.zip(noop).map(|(t, n)| t.ns_per_packet / n)
        };
        if cidrs > 0 {
            ratio_target(
                format!("classifier hit / no-op at {}", size_label(cidrs)),
                1.5,
                over(at.and_then(|s| s.hit_v4)),
            );
            ratio_target(
                format!("classifier dense hit / no-op at {}", size_label(cidrs)),
                1.5,
                over(at.and_then(|s| s.dense_hit_v4)),
            );
        }
        ratio_target(
            format!("classifier miss / no-op at {}", size_label(cidrs)),
            1.5,
            over(at.map(|s| s.miss_v4)),
        );
    }
    let at = size(100_000);
    let noop = at.map(|s| s.noop.ns_per_packet);
    ratio_target(
        "classifier IPv6 hit / no-op at 100k".into(),
        2.0,
        at.and_then(|s| s.hit_v6)
            .zip(noop)
            .map(|(t, n)| t.ns_per_packet / n),
    );
    let noop_filter = at.and_then(|s| s.noop_filter).map(|t| t.ns_per_packet);
    for (name, timing) in [
        ("hit", at.and_then(|s| s.xt_hit_v4)),
        ("miss", at.and_then(|s| s.xt_miss_v4)),
    ] {
        ratio_target(
            format!("xt_bpf {name} / no-op socket filter at 100k"),
            1.5,
            timing.zip(noop_filter).map(|(t, n)| t.ns_per_packet / n),
        );
    }
    ratio_target(
        "classifier on an established TCP segment / no-op at 100k".into(),
        1.2,
        at.and_then(|s| s.established_v4)
            .zip(noop)
            .map(|(t, n)| t.ns_per_packet / n),
    );
    let memory = datapath.and_then(|d| d.memory.as_ref());
    let mib = memory.map(|m| m.total_bytes() as f64 / 1_048_576.0);
    out.push(Target {
        name: format!(
            "kernel memory of the maps, {} IPv4 + {} IPv6",
            memory.map_or_else(|| "100k".into(), |m| size_label(m.v4)),
            memory.map_or_else(|| "10k".into(), |m| size_label(m.v6))
        ),
        target: "<= 16 MiB".into(),
        measured: mib.map(|m| format!("{m:.2} MiB")),
        pass: mib.map(|m| m <= 16.0),
    });
    // Map work: the record's writes and the directory's publish, without
    // the table's diff (which walks the whole table in memory).
    let worst_change = datapath.and_then(|d| {
        d.one_entry
            .iter()
            .map(|c| (c.write_us + c.publish_us) / 1000.0)
            .max_by(f64::total_cmp)
    });
    out.push(Target {
        name: "map work, one-entry change in the 100k table (worst of runs)".into(),
        target: "<= 1 ms".into(),
        measured: worst_change.map(|ms| format!("{ms:.3} ms")),
        pass: worst_change.map(|ms| ms <= 1.0),
    });
    out.push(Target {
        name: "map work, loading 100k CIDRs per family: the directory the programs read".into(),
        target: "<= 100 ms".into(),
        measured: at.map(|s| format!("{:.0} ms", s.publish_ms)),
        pass: at.map(|s| s.publish_ms <= 100.0),
    });
    out.push(Target {
        name: "map work, loading 100k CIDRs per family: with the LPM record".into(),
        target: "<= 100 ms".into(),
        measured: at.map(|s| format!("{:.0} ms", s.write_ms + s.publish_ms)),
        pass: at.map(|s| s.write_ms + s.publish_ms <= 100.0),
    });
}

/// Why each missed target was missed, from this run's own figures.
pub(super) fn explanations(results: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let failed = |prefix: &str| {
        results
            .targets
            .iter()
            .any(|t| t.name.starts_with(prefix) && t.pass == Some(false))
    };
    // ip-masq's own share of a new flow's CPU, from the run with BPF
    // statistics on: what a c/m below 1 can be blamed on.
    let bpf_share = results.flows.iter().rev().find_map(|size| {
        let sample = size
            .bpf_cost
            .iter()
            .find(|s| s.contender == Contender::IpMasq)?;
        let cpu = sample.cpu_ns_per_flow(results.settings.generator_threads);
        Some((size.cidrs, sample.bpf_ns_per_flow()? / cpu))
    });
    for cidrs in [10_000, 100_000] {
        let label = size_label(cidrs);
        let ratio = results
            .flows
            .iter()
            .find(|f| f.cidrs == cidrs)
            .and_then(|f| ratio_named(&f.ratios, "c/m"));
        if failed(&format!("new flows, c/m at {label}"))
            && let Some(ratio) = ratio
        {
            let own_cost = bpf_share.map_or_else(String::new, |(at, share)| {
                format!(
                    " BPF took {:.1} % of a new flow's CPU at {} CIDRs (the table above), so \
                     the programs account for a c/m of about {:.2}. The rest of the gap is \
                     what BPF statistics do not see (the tcx hook on the pod interface and the \
                     two rules ahead of MASQUERADE) and the drift of a shared machine between \
                     the two runs of a pair, which the spread of the pairs shows.",
                    100.0 * share,
                    size_label(at),
                    1.0 - share
                )
            });
            out.push(format!(
                "new flows at {label}: c/m {:.2} is the median of {} pairs that ranged from \
                 {:.2} to {:.2}.{own_cost}",
                ratio.value, ratio.rounds, ratio.low, ratio.high
            ));
        }
    }
    if failed("TCP throughput")
        && let Some(throughput) = &results.throughput
        && let Some(ratio) = ratio_named(&throughput.ratios, "c/m")
    {
        let bare: Vec<f64> = throughput
            .samples
            .iter()
            .filter(|s| s.contender == Contender::Masquerade)
            .map(|s| s.gbit_per_second)
            .collect();
        let lowest = bare.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = bare.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out.push(format!(
            "TCP throughput: c/m {:.3} is the median of {} pairs that ranged from {:.2} to \
             {:.2}, while bare MASQUERADE alone, the same setup every time, ranged from {:.2} \
             to {:.2} Gbit/s over its {} runs: the run-to-run noise is larger than the gap. \
             The classifier's cost is per packet, not per byte: it runs once per packet the \
             pod sends (counted in the table below), and the veth carries GSO packets of many \
             KiB each.",
            ratio.value,
            ratio.rounds,
            ratio.low,
            ratio.high,
            lowest,
            highest,
            bare.len()
        ));
    }
    if failed("classifier / no-op")
        && let Some(datapath) = &results.datapath
    {
        let hits: Vec<String> = datapath
            .sizes
            .iter()
            .filter_map(|s| {
                Some(format!(
                    "{:.0} ns at {}",
                    s.hit_v4?.ns_per_packet - s.noop.ns_per_packet,
                    size_label(s.cidrs)
                ))
            })
            .collect();
        let empty = datapath.sizes.iter().find(|s| s.cidrs == 0).map_or_else(
            || "–".into(),
            |s| format!("{:.0} ns", s.miss_v4.ns_per_packet - s.noop.ns_per_packet),
        );
        let noop = median(
            &datapath
                .sizes
                .iter()
                .map(|s| s.noop.ns_per_packet)
                .collect::<Vec<_>>(),
        );
        out.push(format!(
            "classifier / no-op: above the no-op, the classifier costs {empty} with an empty \
             map and, on a hit, {}. The growth is the kernel's LPM-trie walk \
             (kernel/bpf/lpm_trie.c visits one node per distinguishing prefix bit, so the walk \
             deepens with log N); the program's own work is the empty-map figure. The no-op \
             itself ({} ns) is BPF_PROG_TEST_RUN's per-run overhead, so the ratio says more \
             about the harness than about real packets: see the BPF time per new flow.",
            hits.join(", "),
            ns(noop)
        ));
    }
    if failed("xt_bpf")
        && let Some(datapath) = &results.datapath
        && let Some(size) = datapath.sizes.iter().find(|s| s.cidrs == 100_000)
        && let (Some(noop), Some(load), Some(hit)) =
            (size.noop_filter, size.load_filter, size.xt_hit_v4)
    {
        out.push(format!(
            "xt_bpf / no-op socket filter: a socket filter has no direct packet access, so any \
             filter that reads the destination pays one helper call (`bpf_skb_load_bytes`). \
             The load-only filter, which does that and nothing else, already costs {:.1} ns, \
             {:.2}× the no-op's {:.1} ns; the xt_bpf filter at 100k CIDRs costs {:.1} ns, \
             {:.2}× the load-only filter, so the lookup and the counter add {:.1} ns. The \
             filter runs once per new connection, not per packet.",
            load.ns_per_packet,
            load.ns_per_packet / noop.ns_per_packet,
            noop.ns_per_packet,
            hit.ns_per_packet,
            hit.ns_per_packet / load.ns_per_packet,
            hit.ns_per_packet - load.ns_per_packet
        ));
    }
    if failed("map work, loading 100k CIDRs per family: with the LPM record")
        && let Some(datapath) = &results.datapath
        && let Some(size) = datapath.sizes.iter().find(|s| s.cidrs == 100_000)
    {
        out.push(format!(
            "map work with the LPM record: the directory the programs decide with was built \
             and written in {:.0} ms for {} entries; the LPM record, kept for `bpftool map \
             dump`, `ip-masq dump` and restarts, took {:.0} ms more: one `BPF_MAP_UPDATE_ELEM` \
             per prefix, {:.2} µs each. No program reads it.",
            size.publish_ms,
            size.fill_entries,
            size.write_ms,
            1000.0 * size.write_ms / size.fill_entries.max(1) as f64
        ));
    }
    let Some(control) = &results.control else {
        return out;
    };
    if failed("one-entry change") {
        let median_of = |format: Option<&str>, value: fn(&Apply) -> Option<f64>| {
            let values: Vec<f64> = control
                .one_entry_changes
                .iter()
                .filter(|a| format.is_none_or(|f| a.format == f))
                .filter_map(value)
                .collect();
            median(&values)
        };
        let own = |a: &Apply| Some(a.agent_elapsed_ms);
        let decode = |a: &Apply| a.agent_decode_ms;
        let sync = |a: &Apply| a.agent_sync_ms;
        let rest = |a: &Apply| Some(a.write_to_applied_ms - a.agent_elapsed_ms);
        let floor = control
            .yaml_parse_in_process_ms
            .map_or_else(|| "–".into(), |ms| format!("{ms:.0}"));
        out.push(format!(
            "one-entry change: the agent's own time is {} ms for YAML and {} ms for JSON \
             (medians). A ConfigMap is one file, so every change is a full re-read and \
             re-decode: decoding took {} ms (YAML) and {} ms (JSON); building the table with \
             one sort, diffing it against the agent's record of the maps in one merged walk \
             and the two map writes took {} ms. In this same run, the agent's parser alone \
             (ip-masq-config, in process, no file read or map write) took {floor} ms on the \
             100k YAML text, which reads it as upstream does: a node tree, then JSON, then \
             the settings. The other {} \
             ms from write to applied are the inotify event's delivery and the file's read.",
            ns(median_of(Some("yaml"), own)),
            ns(median_of(Some("json"), own)),
            ns(median_of(Some("yaml"), decode)),
            ns(median_of(Some("json"), decode)),
            ns(median_of(None, sync)),
            ns(median_of(None, rest)),
        ));
    }
    if failed("agent peak RSS") {
        let mib = |bytes: Option<u64>| {
            bytes.map_or_else(|| "–".into(), |b| format!("{:.1}", b as f64 / 1_048_576.0))
        };
        out.push(format!(
            "peak RSS: {} MiB right after start on the default config already: aya's \
             EbpfLoader::new() reads and parses the kernel's whole BTF (/sys/kernel/btf/vmlinux, \
             5.5 MB, for CO-RE relocations) before anything is loaded and frees it right after. \
             Loading 100k CIDRs from YAML then raises the peak to {} MiB: the YAML step \
             builds the document's node tree and its JSON, as upstream's does, before the \
             settings are filled.",
            mib(control.start_peak_rss_bytes),
            mib(control.peak_rss_bytes)
        ));
    }
    out
}

/// `10k`, `100k`, `64`.
pub(super) fn size_label(cidrs: usize) -> String {
    if cidrs >= 1000 && cidrs.is_multiple_of(1000) {
        format!("{}k", cidrs / 1000)
    } else {
        cidrs.to_string()
    }
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "not measured",
    }
}

fn ns(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

fn ratio_text(value: Option<f64>) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

/// `bench/results.md`.
pub(super) fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# ip-masq benchmark results\n");
    let _ = writeln!(
        out,
        "Run {} on Linux {}, {} CPUs ({}), in {:.0} s, by `cargo xtask bench`. \
         Contenders alternate; each is followed at once by a bare-MASQUERADE (m) run, and a ratio to m is the median over those pairs.\n",
        results.date,
        results.machine.kernel,
        results.machine.cpus,
        results.machine.cpu_model,
        results.wall_seconds
    );
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| Measure | Target | Measured | Verdict |");
    let _ = writeln!(out, "|---|---|---|---|");
    for target in &results.targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            target.name,
            target.target,
            target.measured.as_deref().unwrap_or("–"),
            verdict(target.pass)
        );
    }
    out.push('\n');
    summary_tables(&mut out, results);
    if !results.notes.is_empty() {
        let _ = writeln!(out, "## Notes\n");
        for note in &results.notes {
            let _ = writeln!(out, "- {note}");
        }
        out.push('\n');
    }
    out
}

/// The tables shared by `results.md` and the README's benchmark section.
pub(super) fn summary_tables(out: &mut String, results: &Results) {
    if let Some(datapath) = &results.datapath {
        let _ = writeln!(
            out,
            "## Datapath cost per packet (BPF_PROG_TEST_RUN, {} runs, best of {})\n",
            datapath.repeat, datapath.rounds
        );
        let _ = writeln!(
            out,
            "ns per {}-byte TCP frame (IPv6: {} bytes); ratio to the no-op classifier in brackets.\n",
            datapath.frame_bytes_v4, datapath.frame_bytes_v6
        );
        let _ = writeln!(
            out,
            "Classifier columns are set against the no-op classifier, filter columns against \
             the no-op socket filter; the load-only filter reads the destination as xt_bpf does \
             (one `bpf_skb_load_bytes`) and returns. \"dense hit\" is a hit in the /16 the list cuts into the \
             most ranges (the longest binary search; its range count in brackets after the \
             size); \"established\" is an ACK segment to the hit destination, which skips the \
             lookup.\n"
        );
        let _ = writeln!(
            out,
            "| CIDRs | no-op | hit | miss | dense hit | IPv6 hit | established | no-op filter | load-only filter | xt_bpf hit | xt_bpf miss | map fill: record, directory |"
        );
        let _ = writeln!(
            out,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for size in &datapath.sizes {
            let noop = size.noop.ns_per_packet;
            let noop_filter = size.noop_filter.map(|t| t.ns_per_packet);
            let against =
                |timing: Option<super::microbench::CaseTiming>, base: Option<f64>| match timing {
                    Some(t) => format!(
                        "{} ({})",
                        ns(Some(t.ns_per_packet)),
                        ratio_text(base.map(|b| t.ns_per_packet / b))
                    ),
                    None => "–".into(),
                };
            let cell = |timing| against(timing, Some(noop));
            let label = if size.dense_ranges_v4 > 1 {
                format!("{} [{}]", size_label(size.cidrs), size.dense_ranges_v4)
            } else {
                size_label(size.cidrs)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} ms, {:.1} ms |",
                label,
                ns(Some(noop)),
                cell(size.hit_v4),
                cell(Some(size.miss_v4)),
                cell(size.dense_hit_v4),
                cell(size.hit_v6),
                cell(size.established_v4),
                ns(noop_filter),
                against(size.load_filter, noop_filter),
                against(size.xt_hit_v4, noop_filter),
                against(size.xt_miss_v4, noop_filter),
                size.write_ms,
                size.publish_ms
            );
        }
        out.push('\n');
        if !datapath.one_entry.is_empty() {
            let _ = writeln!(
                out,
                "One-entry changes on the {} table, microseconds: the agent's whole sync (the \
                 diff of the whole table in memory, the LPM record's write, the directory's \
                 publish), and of it the map work:\n",
                size_label(datapath.one_entry[0].cidrs)
            );
            let _ = writeln!(
                out,
                "| change | sync | of it, record writes | of it, publish | chunks written |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|");
            for change in &datapath.one_entry {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.0} | {:.0} | {} |",
                    change.change,
                    change.sync_us,
                    change.write_us,
                    change.publish_us,
                    change.chunks_written
                );
            }
            out.push('\n');
        }
        if let Some(memory) = &datapath.memory {
            let _ = writeln!(
                out,
                "Kernel memory of the maps (`memlock`, as `bpftool map show` prints it) with {} \
                 IPv4 and {} IPv6 prefixes, maps made for `--max-cidrs {}`: {:.2} MiB in all.\n",
                memory.v4,
                memory.v6,
                memory.max_cidrs,
                memory.total_bytes() as f64 / 1_048_576.0
            );
            let _ = writeln!(out, "| map | KiB |");
            let _ = writeln!(out, "|---|---:|");
            for (name, bytes) in &memory.maps {
                let _ = writeln!(out, "| {name} | {:.0} |", *bytes as f64 / 1024.0);
            }
            out.push('\n');
        }
    }
    if !results.flows.is_empty() {
        let contenders: Vec<Contender> = {
            let mut all: Vec<Contender> = results
                .flows
                .iter()
                .flat_map(|f| f.summary.iter().map(|s| s.contender))
                .collect();
            all.sort();
            all.dedup();
            all
        };
        let _ = writeln!(
            out,
            "## New flows per second, pod to external through NAT\n"
        );
        let _ = writeln!(
            out,
            "Medians over rounds (each flow a new conntrack entry, destination masqueraded); \
             ratios with the lowest and highest pair in brackets.\n"
        );
        if let Some(ceiling) = results.generator_ceiling_fps {
            let _ = writeln!(
                out,
                "The generator writes {ceiling:.0} frames/s when the node drops them at its ingress: \
                 its own ceiling.\n"
            );
        }
        let mut header = String::from("| CIDRs |");
        let mut rule = String::from("|---:|");
        for contender in &contenders {
            let _ = write!(header, " {contender} |");
            rule.push_str("---:|");
        }
        header.push_str(" c/m | b/m | x/m | s/m | n/m |");
        rule.push_str("---:|---:|---:|---:|---:|");
        let _ = writeln!(out, "{header}\n{rule}");
        for size in &results.flows {
            let mut row = format!("| {} |", size_label(size.cidrs));
            for contender in &contenders {
                let cell = size
                    .summary
                    .iter()
                    .find(|s| s.contender == *contender)
                    .map_or_else(|| "skipped".into(), |s| format!("{:.0}", s.median));
                let _ = write!(row, " {cell} |");
            }
            for name in ["c/m", "b/m", "x/m", "s/m", "n/m"] {
                let cell = ratio_named(&size.ratios, name).map_or_else(
                    || "–".into(),
                    |r| format!("{:.2} ({:.2}–{:.2})", r.value, r.low, r.high),
                );
                let _ = write!(row, " {cell} |");
            }
            let _ = writeln!(out, "{row}");
        }
        out.push('\n');
        for size in results.flows.iter().filter(|f| !f.bpf_cost.is_empty()) {
            let _ = writeln!(
                out,
                "BPF time per new flow at {} CIDRs (a separate run with BPF statistics on; \
                 CPU per flow assumes the generator kept all {} CPUs busy):\n",
                size_label(size.cidrs),
                results.settings.generator_threads
            );
            let _ = writeln!(
                out,
                "| Contender | classifier ns/run | xt_bpf ns/run | BPF ns per flow | CPU ns per flow | BPF share |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
            for sample in &size.bpf_cost {
                let Some(bpf) = sample.bpf else { continue };
                let per_flow = sample.bpf_ns_per_flow().unwrap_or(0.0);
                let cpu = sample.cpu_ns_per_flow(results.settings.generator_threads);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.0} | {:.0} | {:.1} % |",
                    sample.contender,
                    ns(bpf.classifier_ns_per_run()),
                    ns(bpf.xt_bpf_ns_per_run()),
                    per_flow,
                    cpu,
                    100.0 * per_flow / cpu
                );
            }
            out.push('\n');
        }
        for size in &results.flows {
            for skipped in &size.skipped {
                let _ = writeln!(out, "- {}: {skipped}", size_label(size.cidrs));
            }
            if let Some(ms) = size.chain_b_restore_ms {
                let _ = writeln!(
                    out,
                    "- {}: loading the (b) chain with iptables-restore took {:.0} ms",
                    size_label(size.cidrs),
                    ms
                );
            }
            if let (Some(ipset), Some(nft)) = (size.ipset_restore_ms, size.nft_load_ms) {
                let _ = writeln!(
                    out,
                    "- {}: loading the (s) set with ipset restore took {ipset:.0} ms, the (n) set with nft -f {nft:.0} ms",
                    size_label(size.cidrs),
                );
            }
        }
        out.push('\n');
    }
    if let Some(throughput) = &results.throughput {
        let _ = writeln!(
            out,
            "## TCP bulk throughput, pod to external ({} CIDRs)\n",
            size_label(throughput.cidrs)
        );
        let _ = writeln!(out, "| Contender | Gbit/s (median) | runs |");
        let _ = writeln!(out, "|---|---:|---:|");
        for summary in &throughput.summary {
            let _ = writeln!(
                out,
                "| {} | {:.2} | {} |",
                summary.contender, summary.median, summary.samples
            );
        }
        for ratio in &throughput.ratios {
            let _ = writeln!(
                out,
                "| ratio {} (median of pairs; lowest–highest pair {:.2}–{:.2}) | {:.3} | {} |",
                ratio.name, ratio.low, ratio.high, ratio.value, ratio.rounds
            );
        }
        out.push('\n');
    }
    if !results.run_counts.is_empty() {
        let _ = writeln!(
            out,
            "## BPF program runs per packet of an established flow\n"
        );
        let _ = writeln!(
            out,
            "| Contender | packets | classifier runs | xt_bpf runs | runs per packet |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for counts in &results.run_counts {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.4} |",
                counts.contender,
                counts.packets,
                counts.classifier_runs,
                counts.xt_bpf_runs,
                counts.runs_per_packet()
            );
        }
        out.push('\n');
    }
    if let Some(control) = &results.control {
        let _ = writeln!(out, "## Control plane\n");
        let _ = writeln!(
            out,
            "| Change | write → applied | agent's own time | of which decode | of which table, diff and map writes | added | removed |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        let loads = control.full_loads.iter().map(|a| ("load", a));
        let changes = control
            .one_entry_changes
            .iter()
            .map(|a| ("one entry in", a));
        for (what, apply) in loads.chain(changes) {
            let optional_ms =
                |ms: Option<f64>| ms.map_or_else(|| "–".into(), |ms| format!("{ms:.1} ms"));
            let _ = writeln!(
                out,
                "| {what} {}{} ({}) | {:.1} ms | {:.1} ms | {} | {} | {} | {} |",
                size_label(apply.cidrs),
                if what == "load" { " CIDRs" } else { "" },
                apply.format,
                apply.write_to_applied_ms,
                apply.agent_elapsed_ms,
                optional_ms(apply.agent_decode_ms),
                optional_ms(apply.agent_sync_ms),
                apply.added,
                apply.removed
            );
        }
        out.push('\n');
        if let Some(rss) = control.start_peak_rss_bytes {
            let _ = writeln!(
                out,
                "- Peak RSS (VmHWM) right after start on the default config: {:.1} MiB",
                rss as f64 / 1_048_576.0
            );
        }
        if let Some(rss) = control.peak_rss_bytes {
            let _ = writeln!(
                out,
                "- Peak RSS (VmHWM) after the loads and changes above: {:.1} MiB",
                rss as f64 / 1_048_576.0
            );
        }
        if let Some(cpu) = control.idle_cpu_percent {
            let _ = writeln!(
                out,
                "- Idle CPU over {:.0} s: {:.3} % of one core",
                control.idle_seconds, cpu
            );
        }
        for skipped in &control.skipped {
            let _ = writeln!(out, "- Skipped: {skipped}");
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Contender = Contender::Masquerade;
    const C: Contender = Contender::IpMasq;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn ratios_pair_neighbours() {
        // The machine runs twice as fast from position 2 on: the paired
        // ratio ignores it. Each c pairs with the m right after it.
        let values = [
            (C, 0, 90.0),
            (M, 1, 100.0),
            (C, 2, 180.0),
            (M, 3, 200.0),
            (C, 4, 170.0),
        ];
        let ratio = paired_ratio(&values, C, M).unwrap();
        assert_eq!(ratio.name, "c/m");
        assert!((ratio.value - 0.9).abs() < 1e-9, "{}", ratio.value);
        assert_eq!(ratio.rounds, 3, "the last c pairs with the m before it");
        assert!((ratio.low - 0.85).abs() < 1e-9 && (ratio.high - 0.9).abs() < 1e-9);
        assert!(paired_ratio(&values, Contender::Chain, M).is_none());
    }

    #[test]
    fn summaries_per_contender() {
        let values = [(M, 0, 1.0), (M, 1, 3.0), (C, 0, 2.0)];
        let summary = summarize(&values);
        assert_eq!(summary.len(), 2);
        assert_eq!(summary[0].contender, M);
        assert_eq!(summary[0].median, 2.0);
        assert_eq!(summary[1].samples, 1);
    }

    fn empty_results() -> Results {
        Results {
            date: "2025-01-01T00:00:00Z".into(),
            machine: Machine {
                kernel: "6.18".into(),
                cpus: 2,
                cpu_model: "test".into(),
            },
            wall_seconds: 1.0,
            settings: Settings {
                test_run_repeat: 1,
                test_run_rounds: 1,
                flow_rounds: vec![1],
                flow_window_ms: 1,
                flow_warmup_ms: 1,
                generator_threads: 1,
                throughput_rounds: 1,
                throughput_seconds: 1,
                throughput_cidrs: 1,
            },
            datapath: None,
            generator_ceiling_fps: None,
            flows: Vec::new(),
            throughput: None,
            run_counts: Vec::new(),
            control: None,
            targets: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn unmeasured_targets_are_not_passes() {
        let targets = targets(&empty_results());
        assert_eq!(targets.len(), 28);
        assert!(targets.iter().all(|t| t.pass.is_none()));
    }

    #[test]
    fn flow_targets_use_the_paired_ratio() {
        let mut results = empty_results();
        let values = [(M, 0, 100.0), (C, 0, 96.0)];
        results.flows.push(FlowSize {
            cidrs: 10_000,
            chain_b_restore_ms: None,
            ipset_restore_ms: None,
            nft_load_ms: None,
            samples: Vec::new(),
            bpf_cost: Vec::new(),
            summary: summarize(&values),
            ratios: ratios_to_masquerade(&values),
            skipped: Vec::new(),
        });
        results.targets = targets(&results);
        let targets = &results.targets;
        assert_eq!(targets[0].pass, Some(true));
        assert_eq!(targets[0].measured.as_deref(), Some("0.960"));
        assert_eq!(targets[1].pass, None, "100k not measured");
        let text = markdown(&results);
        assert!(text.contains("| new flows, c/m at 10k | >= 0.95 | 0.960 | PASS |"));
        assert!(
            text.contains("| 10k | 100 | 96 | 0.96 (0.96–0.96) |"),
            "{text}"
        );
    }

    fn assert_mentions(note: &str, phrase: &str) {
        assert!(note.contains(phrase), "{phrase:?} missing from: {note}");
    }

    #[test]
    fn misses_are_explained_from_the_runs_figures() {
        let mut results = empty_results();
        results.control = Some(ControlResults {
            one_entry_changes: vec![Apply {
                cidrs: 100_000,
                format: "yaml",
                added: 1,
                removed: 1,
                entries_v4: 100_001,
                write_to_applied_ms: 260.0,
                agent_elapsed_ms: 200.0,
                agent_decode_ms: Some(190.0),
                agent_sync_ms: Some(9.5),
            }],
            start_peak_rss_bytes: Some(21 * 1_048_576),
            peak_rss_bytes: Some(45 * 1_048_576),
            yaml_parse_in_process_ms: Some(70.4),
            ..ControlResults::default()
        });
        results.targets = targets(&results);
        let notes = explanations(&results);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_mentions(&notes[0], "200.0 ms for YAML and – ms for JSON");
        assert_mentions(&notes[0], "decoding took 190.0 ms (YAML) and – ms (JSON)");
        assert_mentions(&notes[0], "two map writes took 9.5 ms");
        assert_mentions(&notes[0], "other 60.0 ms");
        assert_mentions(&notes[0], "took 70 ms");
        let yaml_row = results
            .targets
            .iter()
            .find(|t| t.name.contains("YAML"))
            .expect("a YAML row");
        assert_eq!(yaml_row.pass, Some(false));
        let json_row = results
            .targets
            .iter()
            .find(|t| t.name.contains("JSON"))
            .expect("a JSON row");
        assert_eq!(json_row.pass, None, "no JSON change was measured");
        assert!(notes[1].starts_with("peak RSS: 21.0 MiB"), "{}", notes[1]);
        assert!(notes[1].contains("to 45.0 MiB"), "{}", notes[1]);
    }

    #[test]
    fn a_flow_miss_is_set_against_the_bpf_share_of_a_flow() {
        let mut results = empty_results();
        let values = [(C, 0, 90.0), (M, 1, 100.0), (C, 2, 95.0), (M, 3, 100.0)];
        // 10,000 flows/s on one generator thread: 100 µs of CPU per flow,
        // of which BPF took 2 µs.
        let measured = crate::bench::flows::FlowSample {
            contender: C,
            round: 0,
            seq: 4,
            flows_per_second: 10_000.0,
            flows: 1000,
            sent: 1000,
            new_entries_per_flow: 1.0,
            conntrack_drops: 0,
            seen_source: None,
            bpf: Some(crate::bench::bpfstats::Totals {
                classifier_runs: 2000,
                classifier_ns: 1_500_000,
                xt_bpf_runs: 1000,
                xt_bpf_ns: 500_000,
            }),
        };
        results.flows.push(FlowSize {
            cidrs: 10_000,
            chain_b_restore_ms: None,
            ipset_restore_ms: None,
            nft_load_ms: None,
            samples: Vec::new(),
            bpf_cost: vec![measured],
            summary: summarize(&values),
            ratios: ratios_to_masquerade(&values),
            skipped: Vec::new(),
        });
        results.targets = targets(&results);
        let notes = explanations(&results);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with(
                "new flows at 10k: c/m 0.93 is the median of 2 pairs that ranged from 0.90 to 0.95."
            ),
            "{}",
            notes[0]
        );
        assert_mentions(&notes[0], "BPF took 2.0 % of a new flow's CPU at 10k CIDRs");
        assert_mentions(&notes[0], "account for a c/m of about 0.98");
    }

    #[test]
    fn a_throughput_miss_is_explained_with_the_runs_noise() {
        let mut results = empty_results();
        let values = [(C, 0, 8.0), (M, 1, 10.0), (C, 2, 9.0), (M, 3, 12.0)];
        results.throughput = Some(Throughput {
            cidrs: 10_000,
            samples: values
                .iter()
                .map(|&(contender, seq, gbit_per_second)| ThroughputSample {
                    contender,
                    round: seq / 2,
                    seq,
                    gbit_per_second,
                })
                .collect(),
            summary: summarize(&values),
            ratios: ratios_to_masquerade(&values),
        });
        results.targets = targets(&results);
        let notes = explanations(&results);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_mentions(&notes[0], "median of 2 pairs that ranged from 0.75 to 0.80");
        assert_mentions(
            &notes[0],
            "ranged from 10.00 to 12.00 Gbit/s over its 2 runs",
        );
    }

    #[test]
    fn size_labels() {
        assert_eq!(size_label(64), "64");
        assert_eq!(size_label(1000), "1k");
        assert_eq!(size_label(100_000), "100k");
    }
}

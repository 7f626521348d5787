//! `cargo xtask bench`: ip-masq against bare MASQUERADE, ip-masq-agent's
//! per-CIDR chain and what a user could pick instead (an ipset match, an
//! nftables set), side by side in one run on the real kernel, in a
//! namespace lab that is removed afterwards. Writes `bench/results.json`
//! and `bench/results.md`.
//!
//! Phases, in order: the datapath's cost per packet (BPF_PROG_TEST_RUN),
//! new flows per second through NAT, bulk TCP throughput with the BPF
//! run counts of an established flow, and the control plane (config to
//! maps, a one-entry change, memory and idle CPU). Nothing here touches the
//! root namespace's rules or links: every rule goes into the lab's node
//! namespace and every pin into a private bpffs.

mod bpfstats;
mod cidrs;
mod control;
mod counters;
mod flows;
mod inject;
mod microbench;
mod node;
mod report;
mod sets;
mod throughput;

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use lab::topology::NODE_UPLINK_V4;

use self::{
    flows::{Sink, Window},
    node::{AgentFeatures, Bed, CHAIN_B_LIMIT, Contender},
    report::{FlowSize, Machine, Results, Settings, Throughput},
    throughput::ThroughputSample,
};

/// What to run; `quick` is a smoke run of a few seconds per phase.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub quick: bool,
    pub output: PathBuf,
}

/// Sizes, rounds and durations of one run.
struct Plan {
    datapath_sizes: Vec<usize>,
    repeat: u32,
    test_run_rounds: u32,
    flow_sizes: Vec<usize>,
    /// Rounds per flow size: more where the targets are judged.
    flow_rounds: Vec<usize>,
    /// The flow size at which the BPF time per flow is measured.
    bpf_cost_size: Option<usize>,
    window: Window,
    threads: usize,
    throughput_cidrs: usize,
    throughput_rounds: usize,
    throughput_seconds: u32,
    control_sizes: Vec<usize>,
    one_entry_changes: usize,
    idle: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        if quick {
            return Self {
                datapath_sizes: vec![0, 64, 1000],
                repeat: 100_000,
                test_run_rounds: 2,
                flow_sizes: vec![64, 1000],
                flow_rounds: vec![1, 1],
                bpf_cost_size: Some(1000),
                window: Window {
                    warmup: Duration::from_millis(30),
                    length: Duration::from_millis(100),
                },
                threads,
                throughput_cidrs: 1000,
                throughput_rounds: 1,
                throughput_seconds: 1,
                control_sizes: vec![1000],
                one_entry_changes: 1,
                idle: Duration::from_secs(2),
            };
        }
        Self {
            datapath_sizes: vec![0, 64, 1000, 10_000, 100_000],
            repeat: 1_000_000,
            test_run_rounds: 5,
            flow_sizes: vec![64, 1000, 10_000, 100_000],
            flow_rounds: vec![2, 2, 4, 4],
            bpf_cost_size: Some(100_000),
            // Short: the generator opens flows faster than the node's
            // conntrack table (262,144 entries here, UDP ones living 30 s)
            // could hold for a longer window; more rounds make up for it.
            window: Window {
                warmup: Duration::from_millis(40),
                length: Duration::from_millis(150),
            },
            threads,
            throughput_cidrs: 10_000,
            // Single 2 s runs on a shared machine swing by ±15 % on their
            // own; eight pairs make the median pair ratio worth reading.
            throughput_rounds: 8,
            throughput_seconds: 2,
            control_sizes: vec![10_000, 100_000],
            one_entry_changes: 3,
            idle: Duration::from_secs(30),
        }
    }

    fn largest(&self) -> usize {
        self.datapath_sizes
            .iter()
            .chain(&self.flow_sizes)
            .chain(&self.control_sizes)
            .copied()
            .max()
            .unwrap_or(0)
    }
}

pub(crate) fn run(options: &Options) -> anyhow::Result<()> {
    if !lab::is_root() {
        bail!("the benchmark builds network namespaces and loads BPF programs: run it as root");
    }
    let started = Instant::now();
    let plan = Plan::new(options.quick);
    let features = AgentFeatures::probe()?;
    let mut notes = Vec::new();
    if !features.xt_bpf {
        notes.push(
            "contender (x) `--datapath xt-bpf` was not measured: this agent has no such flag"
                .into(),
        );
    }
    let largest = plan.largest();
    let v4 = cidrs::ipv4(largest + 2 * plan.one_entry_changes);
    let v4_text: Vec<String> = v4.iter().map(|(a, l)| format!("{a}/{l}")).collect();
    let v6 = cidrs::ipv6(plan.datapath_sizes.last().copied().unwrap_or(0));
    let scratch = std::env::temp_dir().join(lab::unique_name("ip-masq-bench-"));
    fs::create_dir_all(&scratch)?;
    let cidrs_file = scratch.join("cidrs.txt");
    fs::write(&cidrs_file, cidrs::lines(&v4[..largest], &v6))?;

    println!("bench: 1/4 datapath cost per packet (BPF_PROG_TEST_RUN)");
    let datapath = microbench::run(
        &cidrs_file,
        &plan.datapath_sizes,
        plan.repeat,
        plan.test_run_rounds,
    )?;
    for size in &datapath.sizes {
        println!(
            "  {:>6} CIDRs: no-op {:.1} ns, hit {}, miss {:.1} ns, IPv6 {}",
            size.cidrs,
            size.noop.ns_per_packet,
            size.hit_v4
                .map_or("–".into(), |t| format!("{:.1} ns", t.ns_per_packet)),
            size.miss_v4.ns_per_packet,
            size.hit_v6
                .map_or("–".into(), |t| format!("{:.1} ns", t.ns_per_packet)),
        );
    }
    fs::remove_dir_all(&scratch)?;

    // Room for the largest list plus link-local.
    let max_cidrs = u32::try_from(largest + 1024)?.max(65_536);
    let mut bed = Bed::new(features, max_cidrs)?;
    let sink = Sink::open(&bed.lab.external, Bed::destination())?;

    println!("bench: 2/4 new flows per second");
    let ceiling = flows::generator_ceiling(&bed, plan.window, plan.threads)?;
    println!("  generator ceiling (frames dropped at the node's ingress): {ceiling:.0} frames/s");
    let mut flow_sizes = Vec::new();
    {
        // (b) runs in a bed of its own (see `Bed::load_chain_b`).
        let mut bed_b = Bed::new(features, max_cidrs)?;
        let sink_b = Sink::open(&bed_b.lab.external, Bed::destination())?;
        let mut chain_b_estimate: Option<(usize, Duration)> = None;
        for (&size, &rounds) in plan.flow_sizes.iter().zip(&plan.flow_rounds) {
            flow_sizes.push(flow_size(
                (&mut bed, &sink),
                (&mut bed_b, &sink_b),
                &plan,
                rounds,
                (&v4[..size], &v4_text[..size]),
                &mut chain_b_estimate,
            )?);
        }
        bed_b.drop_chain_b()?;
    }
    // Freeing a 100,000-rule chain and a namespace keeps kernel workers
    // busy for a moment; let them finish before the next phase measures.
    std::thread::sleep(SETTLE);

    println!("bench: 3/4 TCP throughput and BPF runs per packet");
    let (throughput, run_counts) = throughput_phase(&mut bed, &plan, &v4[..plan.throughput_cidrs])?;

    println!("bench: 4/4 control plane");
    let lists: Vec<(usize, String)> = plan
        .control_sizes
        .iter()
        .map(|&size| (size, cidrs::config_yaml(&v4[..size])))
        .collect();
    let largest_control = plan.control_sizes.last().copied().unwrap_or(0);
    let changes = one_entry_changes(&v4, largest_control, plan.one_entry_changes);
    // The agent must accept the largest file.
    bed.expect_config_bytes(
        lists
            .iter()
            .map(|(_, text)| text)
            .chain(&changes.yaml)
            .chain(&changes.json)
            .chain([&changes.json_switch])
            .map(String::len)
            .max()
            .unwrap_or(0),
    );
    let control = control::run(&mut bed, &lists, &changes, plan.idle)?;
    for skipped in &control.skipped {
        notes.push(format!("control plane: {skipped}"));
    }
    drop(sink);
    drop(bed);

    let mut results = Results {
        date: control::format_rfc3339_utc(SystemTime::now()),
        machine: machine(),
        wall_seconds: started.elapsed().as_secs_f64(),
        settings: Settings {
            test_run_repeat: plan.repeat,
            test_run_rounds: plan.test_run_rounds,
            flow_rounds: plan.flow_rounds.clone(),
            flow_window_ms: plan.window.length.as_millis() as u64,
            flow_warmup_ms: plan.window.warmup.as_millis() as u64,
            generator_threads: plan.threads,
            throughput_rounds: plan.throughput_rounds,
            throughput_seconds: plan.throughput_seconds,
            throughput_cidrs: plan.throughput_cidrs,
        },
        datapath: Some(datapath),
        generator_ceiling_fps: Some(ceiling),
        flows: flow_sizes,
        throughput: Some(throughput),
        run_counts,
        control: Some(control),
        targets: Vec::new(),
        notes,
    };
    results.targets = report::targets(&results);
    let explanations = report::explanations(&results);
    results.notes.extend(explanations);
    fs::create_dir_all(&options.output)?;
    let json_path = options.output.join("results.json");
    let md_path = options.output.join("results.md");
    fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")?;
    let markdown = report::markdown(&results);
    fs::write(&md_path, &markdown)?;
    println!("\n{markdown}");
    println!(
        "bench: wrote {} and {} in {:.0} s; lab removed",
        md_path.display(),
        json_path.display(),
        results.wall_seconds
    );
    Ok(())
}

/// How long kernel workers get to finish freeing what a phase left.
const SETTLE: Duration = Duration::from_secs(2);

/// Config texts that each change one entry of the previous one, starting
/// from the first `size` prefixes: `count` in YAML, then the list as it
/// stands in JSON (no entry changed), then `count` more in JSON. Each
/// change replaces an entry with a prefix from past the end of the list.
fn one_entry_changes(v4: &[(Ipv4Addr, u8)], size: usize, count: usize) -> control::Changes {
    let mut current = v4[..size].to_vec();
    let replace = |current: &mut Vec<(Ipv4Addr, u8)>, k: usize| {
        // Spread the changed entries over the list, never the first (the
        // inside range the bed checks).
        let index = 1 + (k * 7919 + size / 2) % (size.max(2) - 1);
        current[index] = v4[size + k];
    };
    let mut yaml = Vec::with_capacity(count);
    for k in 0..count {
        replace(&mut current, k);
        yaml.push(cidrs::config_yaml(&current));
    }
    let json_switch = cidrs::config_json(&current);
    let mut json = Vec::with_capacity(count);
    for k in count..2 * count {
        replace(&mut current, k);
        json.push(cidrs::config_json(&current));
    }
    control::Changes {
        yaml,
        json_switch,
        json,
    }
}

fn flow_size(
    (bed, sink): (&mut Bed, &Sink),
    (bed_b, sink_b): (&mut Bed, &Sink),
    plan: &Plan,
    rounds: usize,
    (v4, cidrs): (&[(Ipv4Addr, u8)], &[String]),
    chain_b_estimate: &mut Option<(usize, Duration)>,
) -> anyhow::Result<FlowSize> {
    let size = cidrs.len();
    let mut skipped = Vec::new();
    let text = cidrs::config_yaml(v4);
    bed.write_config(&text);
    let mut contenders = vec![Contender::None, Contender::Masquerade];

    // (b) is skipped where loading its chain would take over the limit,
    // judged from the last size loaded (iptables-restore grows with the
    // rule count), or when the load runs into the limit.
    let predicted =
        chain_b_estimate.map(|(loaded, took)| took.mul_f64(size as f64 / loaded as f64));
    let mut chain_b_restore_ms = None;
    match predicted {
        Some(predicted) if predicted > CHAIN_B_LIMIT => skipped.push(format!(
            "(b) skipped: loading {size} rules would take about {:.0} s (over {} s)",
            predicted.as_secs_f64(),
            CHAIN_B_LIMIT.as_secs()
        )),
        _ => match bed_b.load_chain_b(cidrs, CHAIN_B_LIMIT) {
            Ok(took) => {
                *chain_b_estimate = Some((size, took));
                chain_b_restore_ms = Some(took.as_secs_f64() * 1000.0);
                contenders.push(Contender::Chain);
                // Let the kernel finish freeing the previous, smaller chain.
                std::thread::sleep(SETTLE);
            }
            Err(err) => skipped.push(format!("(b) skipped: {err:#}")),
        },
    }
    let mut set_loads = None;
    match bed.load_sets(cidrs, CHAIN_B_LIMIT) {
        Ok(loads) => {
            set_loads = Some(loads);
            contenders.extend([Contender::IpSet, Contender::NftSet]);
        }
        Err(err) => skipped.push(format!("(s) and (n) skipped: {err:#}")),
    }
    if bed.agent_can_load_config() {
        contenders.push(Contender::IpMasq);
        if bed.features.xt_bpf {
            contenders.push(Contender::XtBpf);
        }
    } else {
        skipped.push(format!(
            "(c) and (x) skipped: the {size}-CIDR config is {:.2} MiB, over the agent's 1 MiB file limit",
            text.len() as f64 / 1_048_576.0
        ));
    }

    let pod = match bed.pod_ip() {
        IpAddr::V4(address) => address,
        IpAddr::V6(_) => bail!("the pod has an IPv4 address"),
    };
    let node: Ipv4Addr = NODE_UPLINK_V4.parse()?;
    let mut samples = Vec::new();
    for round in 0..rounds {
        for contender in flows::schedule(&contenders, round) {
            let seq = samples.len();
            let (bed, sink) = if contender == Contender::Chain {
                (&mut *bed_b, sink_b)
            } else {
                (&mut *bed, sink)
            };
            bed.activate(contender)
                .with_context(|| format!("{size} CIDRs: set up {contender}"))?;
            let sample = flows::measure(
                bed,
                sink,
                contender,
                (round, seq),
                plan.window,
                plan.threads,
                false,
            );
            bed.deactivate(contender)
                .with_context(|| format!("{size} CIDRs: tear down {contender}"))?;
            let sample = sample?;
            flows::check_sample(&sample, pod, node)?;
            println!(
                "  {:>6} CIDRs round {} {:<40} {:>8.0} flows/s (sent {}, arrived {}, new conntrack entries per flow {:.3})",
                size,
                round + 1,
                contender.to_string(),
                sample.flows_per_second,
                sample.sent,
                sample.flows,
                sample.new_entries_per_flow
            );
            samples.push(sample);
        }
    }
    // What the BPF programs cost per flow, with statistics on: a separate
    // measurement, since statistics add time to every run.
    let mut bpf_cost = Vec::new();
    if plan.bpf_cost_size == Some(size) {
        for contender in [Contender::IpMasq, Contender::XtBpf] {
            if !contenders.contains(&contender) {
                continue;
            }
            bed.activate(contender)?;
            let sample = flows::measure(
                bed,
                sink,
                contender,
                (rounds, samples.len() + bpf_cost.len()),
                plan.window,
                plan.threads,
                true,
            );
            bed.deactivate(contender)?;
            let sample = sample?;
            println!(
                "  {:>6} CIDRs {:<48} BPF {:.0} ns of {:.0} ns CPU per flow",
                size,
                contender.to_string(),
                sample.bpf_ns_per_flow().unwrap_or(0.0),
                sample.cpu_ns_per_flow(plan.threads)
            );
            bpf_cost.push(sample);
        }
    }
    bed.drop_sets()?;
    let values: Vec<(Contender, usize, f64)> = samples
        .iter()
        .map(|s| (s.contender, s.seq, s.flows_per_second))
        .collect();
    Ok(FlowSize {
        cidrs: size,
        bpf_cost,
        chain_b_restore_ms,
        ipset_restore_ms: set_loads.map(|l| l.ipset.as_secs_f64() * 1000.0),
        nft_load_ms: set_loads.map(|l| l.nft.as_secs_f64() * 1000.0),
        summary: report::summarize(&values),
        ratios: report::ratios_to_masquerade(&values),
        samples,
        skipped,
    })
}

fn throughput_phase(
    bed: &mut Bed,
    plan: &Plan,
    v4: &[(Ipv4Addr, u8)],
) -> anyhow::Result<(Throughput, Vec<throughput::RunCounts>)> {
    let size = v4.len();
    bed.write_config(&cidrs::config_yaml(v4));
    let mut contenders = vec![Contender::Masquerade, Contender::IpMasq];
    if bed.features.xt_bpf {
        contenders.push(Contender::XtBpf);
    }
    let _server = throughput::Server::start(bed)?;
    let mut samples = Vec::new();
    for round in 0..plan.throughput_rounds {
        for contender in flows::schedule(&contenders, round) {
            let seq = samples.len();
            bed.activate(contender)?;
            let rate = throughput::run_client(bed, plan.throughput_seconds);
            bed.deactivate(contender)?;
            let gbit = rate? / 1e9;
            println!(
                "  round {} {:<45} {gbit:>7.2} Gbit/s",
                round + 1,
                contender.to_string()
            );
            samples.push(ThroughputSample {
                contender,
                round,
                seq,
                gbit_per_second: gbit,
            });
        }
    }
    let mut run_counts = Vec::new();
    for &contender in contenders.iter().filter(|c| **c != Contender::Masquerade) {
        bed.activate(contender)?;
        let counts = throughput::run_counts(bed, contender, 1);
        bed.deactivate(contender)?;
        let counts = counts?;
        throughput::check_run_counts(&counts)?;
        println!(
            "  {:<45} {:.4} BPF runs per packet ({} packets)",
            contender.to_string(),
            counts.runs_per_packet(),
            counts.packets
        );
        run_counts.push(counts);
    }
    let values: Vec<(Contender, usize, f64)> = samples
        .iter()
        .map(|s| (s.contender, s.seq, s.gbit_per_second))
        .collect();
    Ok((
        Throughput {
            cidrs: size,
            summary: report::summarize(&values),
            ratios: report::ratios_to_masquerade(&values),
            samples,
        },
        run_counts,
    ))
}

fn machine() -> Machine {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cpu_model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                line.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    Machine {
        kernel,
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model,
    }
}

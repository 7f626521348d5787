//! `ip-masq-bench` (a binary of its own, run by `cargo xtask bench`, never
//! part of the agent): what the classifier costs per packet, asked of the kernel itself
//! with BPF_PROG_TEST_RUN, for growing numbers of CIDRs in the maps.
//!
//! The maps are filled through the agent's own sync code ([`sync::apply`]
//! on a [`Datapath`]), so the fill times are those the agent sees. Each
//! case runs `repeat` times inside one `BPF_PROG_TEST_RUN` call; of `rounds`
//! calls the fastest counts, because on a shared machine noise only ever
//! adds time. A classifier that returns at once, measured the same way next
//! to each case, gives the floor that the test harness itself costs.

use std::{
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader, TestRun, TestRunOptions, TestRunResult,
    programs::{ProgramError, SchedClassifier, SocketFilter},
};
use clap::Parser;
use ip_masq_common::{
    Action, DEFAULT_KEEP_SOURCE_MARK, DIRECTORY_MAPS, MAP_NON_MASQ_V4, MAP_NON_MASQ_V6,
    MAP_RANGES_V4, MAP_RANGES_V6, MAP_STATS, MAP_XT_BPF_STATS, PROGRAM_BENCH_LOAD_FILTER,
    PROGRAM_BENCH_NOOP, PROGRAM_BENCH_NOOP_FILTER, PROGRAM_XT_BPF_V4, range_capacity,
    range_words_v4,
};
use ipnet::IpNet;
use thiserror::Error;

use ip_masq::agent::sync;
use ip_masq::agent::sync::SyncError;
use ip_masq::kernel::datapath::CLASSIFIER_OBJECT;
use ip_masq::kernel::datapath::Datapath;
use ip_masq::kernel::datapath::DatapathError;
use ip_masq::kernel::datapath::LoadOptions;
use ip_masq::kernel::packet;
use ip_masq_config::table::Table;

mod inputs;

use ip_masq_bench::{CaseTiming, MemoryReport, OneEntryChange, Report, SizeReport};

use inputs::{check_sizes, hit_destination, map_capacity, parse_cidr_lines};

/// What the classifier answers for every frame (`TC_ACT_UNSPEC`).
const TC_ACT_UNSPEC: i32 = -1;

/// Measures the classifier's cost per packet with BPF_PROG_TEST_RUN and
/// prints the figures as JSON (run by `cargo xtask bench`).
#[derive(Clone, Debug, Parser)]
#[command(name = "ip-masq-bench", version)]
struct BenchDatapathArgs {
    /// bpffs directory for the benchmark's own maps; use a private one, the
    /// maps there are filled with the test CIDRs.
    #[arg(long, value_name = "DIR")]
    pub pin_path: PathBuf,

    /// File with one CIDR per line, IPv4 and IPv6 mixed; for a size N the
    /// maps hold the first N of each family.
    #[arg(long, value_name = "PATH")]
    pub cidrs: PathBuf,

    /// Comma-separated numbers of CIDRs per family to measure, ascending.
    #[arg(
        long,
        value_name = "N,…",
        value_delimiter = ',',
        default_value = "0,64,1000,10000,100000"
    )]
    pub sizes: Vec<usize>,

    /// Runs of the program inside one BPF_PROG_TEST_RUN call.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub repeat: u32,

    /// BPF_PROG_TEST_RUN calls per case; the fastest one counts.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub rounds: u32,

    /// IPv4 destination outside every listed CIDR, for the miss case.
    #[arg(long, value_name = "ADDR", default_value = "203.0.113.5")]
    pub miss: Ipv4Addr,
}

fn main() -> std::process::ExitCode {
    let args = BenchDatapathArgs::parse();
    match run(&args) {
        Ok(json) => {
            print!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", ip_masq::error::error_chain(&err));
            std::process::ExitCode::from(2)
        }
    }
}

/// Errors of the benchmark.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} line {line}: {text:?} is not a CIDR")]
    Cidr {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{family} size {wanted} asked for, but the CIDR file lists only {available}")]
    TooFewCidrs {
        family: &'static str,
        wanted: usize,
        available: usize,
    },
    #[error("sizes must be ascending, {next} follows {previous}")]
    SizesNotAscending { previous: usize, next: usize },
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("cannot load the benchmark programs")]
    Load(#[source] Box<EbpfError>),
    #[error("the eBPF object has no program {0}")]
    Missing(&'static str),
    #[error("test run of {case}")]
    Program {
        case: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error(transparent)]
    Capacity(#[from] SyncError),
    #[error("{failed} map writes failed while filling {size} CIDRs, the first: {first}")]
    Fill {
        size: usize,
        failed: usize,
        first: String,
    },
    #[error(
        "{case} with {size} CIDRs: expected return {expected_return} and mark {expected_mark:#x}, got {got_return} and {got_mark:#x}"
    )]
    WrongVerdict {
        case: &'static str,
        size: usize,
        expected_return: i32,
        expected_mark: u32,
        got_return: i32,
        got_mark: u32,
    },
}

/// Runs the benchmark and returns its JSON report.
///
/// # Errors
/// Fails when the CIDR file is unusable, the programs cannot be loaded, a
/// map write fails, or a program gives an unexpected verdict.
fn run(args: &BenchDatapathArgs) -> Result<String, BenchError> {
    let report = measure(args)?;
    Ok(serde_json::to_string_pretty(&report).expect("serialisable") + "\n")
}

fn measure(args: &BenchDatapathArgs) -> Result<Report, BenchError> {
    let text = fs::read_to_string(&args.cidrs).map_err(|source| BenchError::Read {
        path: args.cidrs.clone(),
        source,
    })?;
    let (v4, v6) = parse_cidr_lines(&text).map_err(|(line, text)| BenchError::Cidr {
        path: args.cidrs.clone(),
        line,
        text,
    })?;
    check_sizes(&args.sizes, v4.len(), v6.len())?;
    let largest = args.sizes.last().copied().unwrap_or(0);
    let capacity = map_capacity(largest);

    let mut datapath = Datapath::load(&LoadOptions {
        pin_dir: args.pin_path.clone(),
        mark: DEFAULT_KEEP_SOURCE_MARK,
        max_entries: capacity,
    })?;
    let extra = load_extra_programs(args, capacity)?;

    let miss_frame = packet::tcp_syn_to(IpAddr::V4(args.miss));
    let mut applied = Table::default();
    let mut sizes = Vec::with_capacity(args.sizes.len());
    for &size in &args.sizes {
        let desired = Table::from_map_entries(
            v4[..size]
                .iter()
                .chain(&v6[..size])
                .map(|prefix| (*prefix, Action::KeepSource)),
        );
        let started = Instant::now();
        let report = sync::apply(&mut datapath, &mut applied, &desired)?;
        let fill = started.elapsed();
        if let Some(first) = report.failures.first() {
            return Err(BenchError::Fill {
                size,
                failed: report.failures.len(),
                first: first.to_string(),
            });
        }

        let hit_v4 = hit_destination(&v4[..size]);
        let hit_v6 = hit_destination(&v6[..size]);
        for (case, destination, keeps) in [
            ("hit-v4", hit_v4, true),
            ("miss-v4", Some(IpAddr::V4(args.miss)), false),
            ("hit-v6", hit_v6, true),
        ] {
            if let Some(destination) = destination {
                verify_classifier(&mut datapath, case, size, destination, keeps)?;
            }
        }

        let time_classifier = |datapath: &mut Datapath, destination: IpAddr| {
            let frame = packet::tcp_syn_to(destination);
            let program = datapath.classifier()?;
            best_of(program, "classifier", &frame, args, destination)
        };
        let hit_v4 = hit_v4
            .map(|d| time_classifier(&mut datapath, d))
            .transpose()?;
        let miss_v4 = time_classifier(&mut datapath, IpAddr::V4(args.miss))?;
        let hit_v6 = hit_v6
            .map(|d| time_classifier(&mut datapath, d))
            .transpose()?;
        let noop = best_of(
            extra.noop()?,
            "noop",
            &miss_frame,
            args,
            IpAddr::V4(args.miss),
        )?;
        let (xt_hit_v4, xt_miss_v4) = match extra.xt_v4()? {
            None => (None, None),
            Some(filter) => {
                let hit = match hit_v4 {
                    Some(hit) => Some(time_xt(filter, size, hit.destination, 1, args)?),
                    None => None,
                };
                let miss = time_xt(filter, size, IpAddr::V4(args.miss), 0, args)?;
                (hit, Some(miss))
            }
        };
        let noop_filter = Some(best_of(
            extra.filter(PROGRAM_BENCH_NOOP_FILTER)?,
            "noop-filter",
            &miss_frame,
            args,
            IpAddr::V4(args.miss),
        )?);
        let load_filter = Some(best_of(
            extra.filter(PROGRAM_BENCH_LOAD_FILTER)?,
            "load-filter",
            &miss_frame,
            args,
            IpAddr::V4(args.miss),
        )?);
        let established_v4 = match hit_v4 {
            Some(hit) => {
                let frame =
                    packet::tcp_to(hit.destination, packet::TCP_ACK, packet::IpShape::default());
                let program = datapath.classifier()?;
                Some(best_of(
                    program,
                    "established",
                    &frame,
                    args,
                    hit.destination,
                )?)
            }
            None => None,
        };
        let (dense_hit_v4, dense_ranges_v4) = match densest_chunk(&v4[..size]) {
            Some((destination, ranges)) => {
                verify_classifier(&mut datapath, "dense-hit-v4", size, destination, true)?;
                (Some(time_classifier(&mut datapath, destination)?), ranges)
            }
            None => (None, 0),
        };
        sizes.push(SizeReport {
            cidrs: size,
            fill_entries: report.added + report.removed,
            fill_ms: fill.as_secs_f64() * 1000.0,
            write_ms: report.write_time.as_secs_f64() * 1000.0,
            publish_ms: report.publish_time.as_secs_f64() * 1000.0,
            noop_filter,
            load_filter,
            established_v4,
            dense_hit_v4,
            dense_ranges_v4,
            hit_v4,
            miss_v4,
            hit_v6,
            noop,
            xt_hit_v4,
            xt_miss_v4,
        });
    }
    let one_entry = time_one_entry_changes(&mut datapath, &mut applied, largest)?;
    // The mixed table: 100k IPv4 and 10k IPv6 (or what the list has).
    let memory = if largest >= 10_000 {
        let v6_count = (largest / 10).min(v6.len());
        let mixed = Table::from_map_entries(
            v4[..largest]
                .iter()
                .chain(&v6[..v6_count])
                .map(|prefix| (*prefix, Action::KeepSource)),
        );
        sync::apply(&mut datapath, &mut applied, &mixed)?;
        let maps = ip_masq::kernel::datapath::pinned_map_memory(&args.pin_path)?
            .into_iter()
            .map(|map| (map.name.to_owned(), map.bytes))
            .collect();
        Some(MemoryReport {
            v4: largest,
            v6: v6_count,
            max_cidrs: capacity,
            maps,
        })
    } else {
        None
    };
    Ok(Report {
        repeat: args.repeat,
        rounds: args.rounds,
        frame_bytes_v4: miss_frame.len(),
        frame_bytes_v6: packet::tcp_syn_to(IpAddr::V6(Ipv6Addr::LOCALHOST)).len(),
        sizes,
        one_entry,
        memory,
    })
}

/// Adds one /24 the table does not touch to the table in force and takes
/// it out again, a few times each, timing the agent's sync and, of it, the
/// directory's publish: a ConfigMap edit's map work, without the file.
fn time_one_entry_changes(
    datapath: &mut Datapath,
    applied: &mut Table,
    cidrs: usize,
) -> Result<Vec<OneEntryChange>, BenchError> {
    let base = applied.clone();
    let mut out = Vec::new();
    // 198.18.0.0/15 (benchmarking space) is outside the generated lists.
    for round in 0..5u8 {
        let prefix: IpNet = format!("198.18.{round}.0/24").parse().expect("literal");
        let mut with = base.clone();
        with.insert(
            prefix,
            Action::KeepSource,
            ip_masq_config::table::Origin::Config,
        );
        for (change, desired) in [("add", &with), ("remove", &base)] {
            let started = Instant::now();
            let report = sync::apply(datapath, applied, desired)?;
            let elapsed = started.elapsed();
            out.push(OneEntryChange {
                cidrs,
                change: change.to_owned(),
                sync_us: elapsed.as_secs_f64() * 1e6,
                write_us: report.write_time.as_secs_f64() * 1e6,
                publish_us: report.publish_time.as_secs_f64() * 1e6,
                chunks_written: report.published.chunks_written,
            });
        }
    }
    Ok(out)
}

/// An address in the /16 that `prefixes` cut into the most ranges (the
/// longest binary search), inside a prefix, and that range count.
fn densest_chunk(prefixes: &[IpNet]) -> Option<(IpAddr, usize)> {
    use ip_masq_lookup::{Family, FamilyTable};
    let mut table = FamilyTable::new(Family::V4);
    for prefix in prefixes {
        if let IpNet::V4(net) = prefix {
            table.insert(u128::from(u32::from(net.network())), net.prefix_len(), true);
        }
    }
    let ranges = table
        .all_chunk_ranges()
        .into_iter()
        .max_by_key(|ranges| ranges.starts.len())?;
    if ranges.starts.len() <= 1 {
        return None;
    }
    // The kept range nearest the middle of the chunk's ranges.
    let middle = ranges.starts.len() / 2;
    let position = (middle..ranges.starts.len())
        .chain(0..middle)
        .find(|&p| ranges.first_keeps ^ (p % 2 == 1))?;
    let address = u32::try_from(ranges.starts[position]).ok()?;
    Some((IpAddr::V4(Ipv4Addr::from(address)), ranges.starts.len()))
}

/// The programs the agent never loads: the no-op classifier and, for
/// timing alone, a second copy of the xt_bpf filter. They come from the
/// agent's own object and open the maps pinned by [`Datapath::load`], so
/// the filter reads the very entries the classifier reads.
struct ExtraPrograms {
    ebpf: Ebpf,
}

fn load_extra_programs(
    args: &BenchDatapathArgs,
    capacity: u32,
) -> Result<ExtraPrograms, BenchError> {
    let v4_pin = args.pin_path.join(MAP_NON_MASQ_V4);
    let v6_pin = args.pin_path.join(MAP_NON_MASQ_V6);
    let stats_pin = args.pin_path.join(MAP_STATS);
    let xt_stats_pin = args.pin_path.join(MAP_XT_BPF_STATS);
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(MAP_RANGES_V4, range_words_v4(range_capacity(capacity)))
        .map_max_entries(MAP_RANGES_V6, range_capacity(capacity));
    for name in DIRECTORY_MAPS {
        loader.map_pin_path(name, args.pin_path.join(name));
    }
    let mut ebpf = loader
        .map_max_entries(MAP_NON_MASQ_V4, capacity)
        .map_max_entries(MAP_NON_MASQ_V6, capacity)
        .map_pin_path(MAP_NON_MASQ_V4, v4_pin.as_path())
        .map_pin_path(MAP_NON_MASQ_V6, v6_pin.as_path())
        .map_pin_path(MAP_STATS, stats_pin.as_path())
        .map_pin_path(MAP_XT_BPF_STATS, xt_stats_pin.as_path())
        .load(CLASSIFIER_OBJECT)
        .map_err(|err| BenchError::Load(Box::new(err)))?;
    let program_error = |case| {
        move |source| BenchError::Program {
            case,
            source: Box::new(source),
        }
    };
    let noop: &mut SchedClassifier = ebpf
        .program_mut(PROGRAM_BENCH_NOOP)
        .ok_or(BenchError::Missing(PROGRAM_BENCH_NOOP))?
        .try_into()
        .map_err(program_error("noop"))?;
    noop.load().map_err(program_error("noop"))?;
    for name in [PROGRAM_BENCH_NOOP_FILTER, PROGRAM_BENCH_LOAD_FILTER] {
        let filter: &mut SocketFilter = ebpf
            .program_mut(name)
            .ok_or(BenchError::Missing(name))?
            .try_into()
            .map_err(program_error("baseline filter"))?;
        filter.load().map_err(program_error("baseline filter"))?;
    }
    if let Some(program) = ebpf.program_mut(PROGRAM_XT_BPF_V4) {
        let filter: &mut SocketFilter = program.try_into().map_err(program_error("xt-bpf"))?;
        filter.load().map_err(program_error("xt-bpf"))?;
    }
    Ok(ExtraPrograms { ebpf })
}

impl ExtraPrograms {
    fn noop(&self) -> Result<&SchedClassifier, BenchError> {
        self.ebpf
            .program(PROGRAM_BENCH_NOOP)
            .ok_or(BenchError::Missing(PROGRAM_BENCH_NOOP))?
            .try_into()
            .map_err(|source| BenchError::Program {
                case: "noop",
                source: Box::new(source),
            })
    }

    fn filter(&self, name: &'static str) -> Result<&SocketFilter, BenchError> {
        self.ebpf
            .program(name)
            .ok_or(BenchError::Missing(name))?
            .try_into()
            .map_err(|source| BenchError::Program {
                case: "baseline filter",
                source: Box::new(source),
            })
    }

    fn xt_v4(&self) -> Result<Option<&SocketFilter>, BenchError> {
        self.ebpf
            .program(PROGRAM_XT_BPF_V4)
            .map(|program| {
                program.try_into().map_err(|source| BenchError::Program {
                    case: "xt-bpf",
                    source: Box::new(source),
                })
            })
            .transpose()
    }
}

/// Checks, with one run, that the classifier decides `destination` as the
/// benchmark assumes; a timing of the wrong path would be worthless.
fn verify_classifier(
    datapath: &mut Datapath,
    case: &'static str,
    size: usize,
    destination: IpAddr,
    keeps: bool,
) -> Result<(), BenchError> {
    let probe = datapath.probe(&packet::tcp_syn_to(destination), 0)?;
    let expected_mark = if keeps { DEFAULT_KEEP_SOURCE_MARK } else { 0 };
    if probe.return_value != TC_ACT_UNSPEC || probe.mark != expected_mark {
        return Err(BenchError::WrongVerdict {
            case,
            size,
            expected_return: TC_ACT_UNSPEC,
            expected_mark,
            got_return: probe.return_value,
            got_mark: probe.mark,
        });
    }
    Ok(())
}

/// Times the xt_bpf filter after checking its verdict (1 keeps the source).
fn time_xt(
    filter: &SocketFilter,
    size: usize,
    destination: IpAddr,
    expected: i32,
    args: &BenchDatapathArgs,
) -> Result<CaseTiming, BenchError> {
    // The kernel hands a socket filter the frame from the network header
    // on, as xt_bpf does.
    let frame = packet::tcp_syn_to(destination);
    let once = filter
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .map_err(|source| BenchError::Program {
            case: "xt-bpf",
            source: Box::new(source),
        })?;
    if once.return_value as i32 != expected {
        return Err(BenchError::WrongVerdict {
            case: "xt-bpf",
            size,
            expected_return: expected,
            expected_mark: 0,
            got_return: once.return_value as i32,
            got_mark: 0,
        });
    }
    best_of(filter, "xt-bpf", &frame, args, destination)
}

/// The fastest of `rounds` test runs of `repeat` runs each.
fn best_of<P>(
    program: &P,
    case: &'static str,
    frame: &[u8],
    args: &BenchDatapathArgs,
    destination: IpAddr,
) -> Result<CaseTiming, BenchError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut best: Option<(Duration, Duration)> = None;
    for _ in 0..args.rounds.max(1) {
        let started = thread_cpu_time();
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: args.repeat,
                ..TestRunOptions::default()
            })
            .map_err(|source| BenchError::Program {
                case,
                source: Box::new(source),
            })?;
        let cpu = thread_cpu_time().saturating_sub(started);
        if best.is_none_or(|(fastest, _)| cpu < fastest) {
            best = Some((cpu, result.duration));
        }
    }
    let (cpu, kernel) = best.expect("at least one round");
    Ok(CaseTiming {
        destination,
        ns_per_packet: cpu.as_nanos() as f64 / f64::from(args.repeat.max(1)),
        kernel_ns_per_packet: kernel.as_nanos() as u64,
    })
}

/// CPU time the calling thread has used, user and system.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and out-pointer; this clock cannot fail on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

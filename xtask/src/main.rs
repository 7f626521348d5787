//! Project tasks: `cargo xtask setup | build-ebpf | test | fuzz | demo |
//! bench | image | k8s`.
//!
//! `test` and `demo` run `setup` first, so on a fresh machine they are the
//! only commands a person needs.

mod bench;
mod demo;
mod fuzz;
mod image;
mod k8s;
mod routed_demo;
mod setup;
mod tally;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "ip-masq project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks: nightly rust-src, bpf-linker, apt tools.
    Setup,
    /// Build the eBPF object on its own (a plain `cargo build` embeds it too).
    BuildEbpf,
    /// Run the whole suite (needs root): every test, the root tests marked
    /// `#[ignore = "needs root"]` included, then the fuzz targets.
    Test {
        /// Total fuzzing time in seconds, split 3:1 between the config and
        /// the duration parser [default: $FUZZ_SECONDS, else 60; at least 2].
        #[arg(long, value_name = "SECONDS", value_parser = fuzz::parse_seconds)]
        fuzz_seconds: Option<u64>,
        /// Leave the fuzzing out (counted as skipped; refused under CI).
        #[arg(long)]
        skip_fuzz: bool,
        /// Extra arguments for `cargo test`, e.g. `--test datapath`; those
        /// after a second `--` go to the test binaries, e.g.
        /// `--test datapath -- reload`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fuzz the config and duration parsers for a fixed time (cargo-fuzz,
    /// nightly): 45 s and 15 s by default.
    Fuzz {
        /// Total time in seconds, split 3:1 between the config and the
        /// duration parser [default: $FUZZ_SECONDS, else 60; at least 2].
        #[arg(long, value_name = "SECONDS", value_parser = fuzz::parse_seconds)]
        seconds: Option<u64>,
    },
    /// Build a namespace lab, run the agent with its default config and show
    /// which destination saw the pod IP and which saw the node IP (needs root).
    Demo {
        /// Instead: nodes announcing their pod CIDRs to a router with FRR
        /// (eBGP, then OSPF), and hosts behind it reaching pods by their IPs.
        #[arg(long)]
        routed: bool,
    },
    /// Build the runtime image (docker-archive, target/image/ip-masq.tar)
    /// from Debian's archive, without a registry or a daemon (needs root).
    Image {
        /// Package a debug build of the agent instead of a release build.
        #[arg(long)]
        debug: bool,
        /// Build the Debian base again instead of reusing the cached one.
        #[arg(long)]
        fresh: bool,
    },
    /// A one-node Kubernetes for the end-to-end tests (needs root).
    K8s {
        #[command(subcommand)]
        task: k8s::K8sTask,
    },
    /// Benchmark ip-masq against bare MASQUERADE, ip-masq-agent's per-CIDR
    /// chain, an ipset match and an nftables set, side by side (needs root;
    /// about 8 minutes).
    Bench {
        /// A smoke run of a few seconds per phase, at small sizes.
        #[arg(long)]
        quick: bool,
        /// Directory for results.md and results.json (relative to the
        /// workspace root).
        #[arg(long, value_name = "DIR", default_value = "bench")]
        output: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::setup(),
        Task::BuildEbpf => {
            setup::setup()?;
            build_ebpf()
        }
        Task::Test {
            fuzz_seconds,
            skip_fuzz,
            args,
        } => {
            let mut phases = Phases::default();
            phases.time("setup", setup::setup)?;
            let fuzz_seconds = (!skip_fuzz)
                .then(|| fuzz::total_seconds(fuzz_seconds))
                .transpose()?;
            test(&args, fuzz_seconds, &mut phases)
        }
        Task::Fuzz { seconds } => {
            setup::setup()?;
            let mut tally = tally::Tally::default();
            run_fuzz(fuzz::total_seconds(seconds)?, &mut tally);
            println!("fuzz: {} passed, {} failed", tally.passed, tally.failed);
            if tally.failed > 0 {
                bail!("fuzzing found a failing input or could not run");
            }
            Ok(())
        }
        Task::Demo { routed } => {
            setup::setup()?;
            build_agent()?;
            if routed {
                routed_demo::run()
            } else {
                demo::run()
            }
        }
        Task::Image { debug, fresh } => {
            setup::setup()?;
            image::build(&image::Options { debug, fresh }).map(drop)
        }
        Task::K8s { task } => {
            setup::setup()?;
            k8s::run_task(task)
        }
        Task::Bench { quick, output } => {
            setup::setup()?;
            // An optimised agent: a debug build would measure the compiler's
            // checks, not the agent.
            run(Command::new("cargo")
                .args([
                    "build",
                    "--release",
                    "--package",
                    "ip-masq",
                    "--bin",
                    "ip-masq",
                ])
                .args(["--package", "ip-masq-bench", "--bin", "ip-masq-bench"])
                .current_dir(workspace_root()))?;
            let agent = workspace_root().join("target/release/ip-masq");
            // SAFETY: still single-threaded here; the lab reads the variable
            // to find the agent binary.
            unsafe { std::env::set_var("IP_MASQ_BIN", agent) };
            let output = workspace_root().join(output);
            bench::run(&bench::Options { quick, output })
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_owned()
}

/// Runs a command to completion, failing on a non-zero exit.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn build_ebpf() -> anyhow::Result<()> {
    // The flags aya-build gives the build that the agent embeds: without
    // `--btf` the object has no BTF, and its BTF maps cannot be loaded.
    let rustflags = format!(
        "--cfg=bpf_target_arch=\"{}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf",
        std::env::consts::ARCH
    );
    run(Command::new("rustup")
        .args(["run", "nightly", "cargo", "build", "--release"])
        .args(["--package", "ip-masq-ebpf", "--bins"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .current_dir(workspace_root().join("ip-masq-ebpf")))?;
    println!(
        "eBPF object: {}",
        workspace_root()
            .join("target/bpfel-unknown-none/release/ip-masq-ebpf")
            .display()
    );
    Ok(())
}

fn build_agent() -> anyhow::Result<()> {
    run(Command::new("cargo")
        .args(["build", "--package", "ip-masq", "--bin", "ip-masq"])
        .args(["--package", "ip-masq-bench", "--bin", "ip-masq-bench"])
        .current_dir(workspace_root()))
}

/// Splits `cargo xtask test` arguments into cargo's and the test
/// binaries' (after `--`).
fn split_harness_args(extra: &[String]) -> (&[String], &[String]) {
    match extra.iter().position(|arg| arg == "--") {
        Some(index) => (&extra[..index], &extra[index + 1..]),
        None => (extra, &[]),
    }
}

/// Runs each fuzz target for its share of `total` seconds, counting each as
/// a test: one that cannot even be built fails too.
fn run_fuzz(total: u64, tally: &mut tally::Tally) {
    for target in fuzz::targets(total) {
        match fuzz::fuzz(target) {
            Ok(outcome) => {
                println!("{}", outcome.summary);
                tally.add_step(outcome.passed);
            }
            Err(err) => {
                println!("fuzz {}: FAILED: {err:#}", target.name);
                tally.add_step(false);
            }
        }
    }
}

/// How long each phase of `cargo xtask test` took, printed at the end.
#[derive(Default)]
struct Phases(Vec<(&'static str, Duration)>);

impl Phases {
    fn time<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        let result = f();
        self.0.push((name, started.elapsed()));
        result
    }

    fn report(&self) -> String {
        let total: Duration = self.0.iter().map(|(_, took)| *took).sum();
        let mut line = String::from("phases:");
        for (name, took) in &self.0 {
            line.push_str(&format!(" {name} {:.0} s;", took.as_secs_f64()));
        }
        line.push_str(&format!(" total {:.1} min", total.as_secs_f64() / 60.0));
        line
    }
}

/// The whole suite: `cargo test` with the root tests included, then the
/// fuzz targets (unless `fuzz_seconds` is `None`), then one closing line
/// and the time of each phase.
fn test(extra: &[String], fuzz_seconds: Option<u64>, phases: &mut Phases) -> anyhow::Result<()> {
    if !lab::is_root() {
        bail!("the suite includes root tests (namespaces, BPF, iptables): run it as root");
    }
    phases.time("agent", build_agent)?;
    // The end-to-end tests on Kubernetes need the image and the node; both
    // are cached under target/, so after the first run these only check.
    phases.time("image", || image::build(&image::Options::default()))?;
    phases.time(
        "k8s node build",
        || k8s::build(&lab::k8s::Layout::default()),
    )?;
    let cargo_test_started = Instant::now();
    let (cargo_args, harness_args) = split_harness_args(extra);
    // Output streams through as it comes; the totals close the run.
    let mut child = Command::new("cargo")
        // Every test binary runs even when an earlier one fails, so the
        // closing totals count the whole suite.
        .args([
            "test",
            "--workspace",
            "--exclude",
            "ip-masq-ebpf",
            "--no-fail-fast",
        ])
        .args(cargo_args)
        // The root tests are `#[ignore = "needs root"]`, so that a plain
        // `cargo test` passes unprivileged; here they all run.
        .args(["--", "--include-ignored"])
        .args(harness_args)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let mut tally = tally::Tally::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.context("read cargo test output")?;
        println!("{line}");
        tally.add_line(&line);
    }
    tally.finish();
    let status = child.wait().context("wait for cargo test")?;
    phases.0.push(("cargo test", cargo_test_started.elapsed()));
    match fuzz_seconds {
        Some(total) => {
            let fuzz_started = Instant::now();
            run_fuzz(total, &mut tally);
            phases.0.push(("fuzz", fuzz_started.elapsed()));
        }
        None => tally.steps_skipped += fuzz::targets(fuzz::MIN_SECONDS).len() as u64,
    }
    if let Some(details) = tally.details() {
        println!("{details}");
    }
    println!("{}", tally.closing_line());
    println!("{}", phases.report());
    if !status.success() || tally.failed > 0 {
        bail!("the suite failed (cargo test: {status})");
    }
    if tally.passed == 0 {
        bail!("the suite ran no test");
    }
    // In CI every test runs: an ignored, filtered-out or left-out one is a
    // test that silently did not run.
    if std::env::var_os("CI").is_some_and(|ci| !ci.is_empty() && ci != "false")
        && tally.skipped() > 0
    {
        bail!("{} tests did not run; CI runs every one", tally.skipped());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn test_args(argv: &[&str]) -> (Option<u64>, bool, Vec<String>) {
        match Cli::try_parse_from(argv).expect("parses").command {
            Task::Test {
                fuzz_seconds,
                skip_fuzz,
                args,
            } => (fuzz_seconds, skip_fuzz, args),
            _ => panic!("not test"),
        }
    }

    #[test]
    fn test_arguments_reach_cargo_and_the_test_binaries() {
        let (seconds, skip, args) = test_args(&[
            "xtask",
            "test",
            "--fuzz-seconds",
            "8",
            "--test",
            "datapath",
            "--",
            "reload",
        ]);
        assert_eq!((seconds, skip), (Some(8), false));
        let (cargo, harness) = split_harness_args(&args);
        assert_eq!(cargo, ["--test", "datapath"]);
        assert_eq!(harness, ["reload"]);
        let (_, skip, args) = test_args(&["xtask", "test", "--skip-fuzz"]);
        assert!(skip && args.is_empty());
    }

    #[test]
    fn fuzz_seconds_of_zero_are_refused() {
        assert!(Cli::try_parse_from(["xtask", "test", "--fuzz-seconds", "0"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "fuzz", "--seconds", "0"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "fuzz", "--seconds", "4"]).is_ok());
    }
}

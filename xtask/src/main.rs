//! Project tasks: `cargo xtask setup | build-ebpf | test | demo | bench`.
//!
//! `test` and `demo` run `setup` first, so on a fresh machine they are the
//! only commands a person needs.

mod bench;
mod demo;
mod routed_demo;
mod setup;
mod tally;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
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
    /// Run the whole test suite, root tests included (needs root).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Build a namespace lab, run the agent with its default config and show
    /// which destination saw the pod IP and which saw the node IP (needs root).
    Demo {
        /// Instead: nodes announcing their pod CIDRs to a router with FRR
        /// (eBGP, then OSPF), and hosts behind it reaching pods by their IPs.
        #[arg(long)]
        routed: bool,
    },
    /// Benchmark ip-masq against bare MASQUERADE and ip-masq-agent's
    /// per-CIDR chain, side by side (needs root; about 5½ minutes).
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
        Task::Test { args } => {
            setup::setup()?;
            test(&args)
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

fn test(extra: &[String]) -> anyhow::Result<()> {
    if !lab::is_root() {
        bail!("the suite includes root tests (namespaces, BPF, iptables): run it as root");
    }
    build_agent()?;
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
        .args(extra)
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
    let status = child.wait().context("wait for cargo test")?;
    println!("{}", tally.closing_line());
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

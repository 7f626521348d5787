//! Runs the parsers' fuzz targets (`fuzz/fuzz_targets/`) under libFuzzer
//! for a bounded time, as part of the suite: `config`, the whole config
//! parser, and `duration`, the Go duration parser behind `resyncInterval`,
//! checked against a reference reading. A panic, a hang (over `-timeout`)
//! or a memory blow-up (over `-rss_limit_mb`) on any input fails the test,
//! and libFuzzer leaves the input that did it under `fuzz/artifacts/NAME/`.
//! Needs nightly and cargo-fuzz, which `cargo xtask setup` installs.
//!
//! It has its own test binary so that its builds and its 60 s of fuzzing
//! do not share the machine with the namespace tests' timings.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Instant,
};

/// How long libFuzzer runs in all, in seconds (`FUZZ_SECONDS` overrides
/// it): three quarters for the config parser, a quarter for the duration
/// parser, which is small enough to be covered in seconds.
const DEFAULT_SECONDS: u64 = 60;

/// One fuzzer at a time: both tests are in this binary, and two at once
/// would halve each one's share of the machine.
static ONE_FUZZER: Mutex<()> = Mutex::new(());

fn total_seconds() -> u64 {
    std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// `rustup run nightly cargo fuzz ARGS…` in the workspace root, with its
/// output passed through and its stderr also returned.
fn cargo_fuzz(args: &[&str]) -> (bool, String) {
    let output = Command::new("rustup")
        .args(["run", "nightly", "cargo", "fuzz"])
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("run cargo fuzz (install it with `cargo xtask setup`)");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    print!("{}", String::from_utf8_lossy(&output.stdout));
    (output.status.success(), stderr)
}

#[test]
fn config_parser_survives_bounded_fuzzing() {
    let seconds = total_seconds() * 3 / 4;
    fuzz_for("config", "the config parser", seconds.max(1));
}

#[test]
fn duration_parser_survives_bounded_fuzzing() {
    let seconds = total_seconds() - total_seconds() * 3 / 4;
    fuzz_for("duration", "the duration parser", seconds.max(1));
}

/// Builds target `name`, fuzzes it for `seconds` from its committed seeds
/// (`fuzz/seeds/NAME`) with its dictionary (`fuzz/NAME.dict`), and fails
/// on any failing input or a run too short to mean anything.
fn fuzz_for(name: &str, what: &str, seconds: u64) {
    let _one = ONE_FUZZER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = workspace_root();
    let built = Instant::now();
    let (ok, stderr) = cargo_fuzz(&["build", "--fuzz-dir", "fuzz", name]);
    assert!(ok, "building the {name} fuzz target failed:\n{stderr}");
    let build_time = built.elapsed();

    // New inputs go to a scratch corpus; the committed seeds are read only.
    let corpus = std::env::temp_dir().join(lab::unique_name(&format!("ip-masq-fuzz-{name}-")));
    std::fs::create_dir_all(&corpus).expect("corpus dir");
    let corpus_arg = corpus.to_str().expect("utf-8 path").to_owned();
    let seeds = root.join("fuzz/seeds").join(name);
    let dict = format!("-dict={}", root.join(format!("fuzz/{name}.dict")).display());
    let max_time = format!("-max_total_time={seconds}");
    let started = Instant::now();
    let (ok, stderr) = cargo_fuzz(&[
        "run",
        "--fuzz-dir",
        "fuzz",
        name,
        &corpus_arg,
        seeds.to_str().expect("utf-8 path"),
        "--",
        &max_time,
        &dict,
        "-timeout=5",
        "-rss_limit_mb=1024",
        "-max_len=65536",
        "-print_final_stats=1",
    ]);
    let fuzz_time = started.elapsed();
    let _ = std::fs::remove_dir_all(&corpus);
    let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(ok, "the fuzzer found a failing input for {what}:\n{tail}");
    let runs = stderr
        .lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
        .map(str::trim)
        .unwrap_or("?");
    let coverage = stderr
        .lines()
        .rev()
        .find_map(|line| line.split("cov: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("?");
    println!(
        "fuzzed {what} for {fuzz_time:.0?}: {runs} inputs, {coverage} coverage points, no failure (build {build_time:.0?})"
    );
    assert!(
        runs.parse::<u64>().is_ok_and(|n| n > 1000),
        "the fuzzer barely ran:\n{tail}"
    );
}

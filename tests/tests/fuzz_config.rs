//! Runs the config parser's fuzz target (`fuzz/fuzz_targets/config.rs`)
//! under libFuzzer for a bounded time, as part of the suite: a panic, a
//! hang (over `-timeout`) or a memory blow-up (over `-rss_limit_mb`) on any
//! input fails the test, and libFuzzer leaves the input that did it under
//! `fuzz/artifacts/config/`. Needs nightly and cargo-fuzz, which
//! `cargo xtask setup` installs.
//!
//! It has its own test binary so that its build and its 60 s of fuzzing do
//! not share the machine with the namespace tests' timings.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

/// How long libFuzzer runs, in seconds (`FUZZ_SECONDS` overrides it).
const DEFAULT_SECONDS: u64 = 60;

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
    let seconds = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    let root = workspace_root();
    let built = Instant::now();
    let (ok, stderr) = cargo_fuzz(&["build", "--fuzz-dir", "fuzz", "config"]);
    assert!(ok, "building the fuzz target failed:\n{stderr}");
    let build_time = built.elapsed();

    // New inputs go to a scratch corpus; the committed seeds are read only.
    let corpus = std::env::temp_dir().join(lab::unique_name("ip-masq-fuzz-corpus-"));
    std::fs::create_dir_all(&corpus).expect("corpus dir");
    let corpus_arg = corpus.to_str().expect("utf-8 path").to_owned();
    let seeds = root.join("fuzz/seeds/config");
    let dict = format!("-dict={}", root.join("fuzz/config.dict").display());
    let max_time = format!("-max_total_time={seconds}");
    let started = Instant::now();
    let (ok, stderr) = cargo_fuzz(&[
        "run",
        "--fuzz-dir",
        "fuzz",
        "config",
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
    assert!(ok, "the fuzzer found a failing input:\n{tail}");
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
        "fuzzed the config parser for {fuzz_time:.0?}: {runs} inputs, {coverage} coverage points, no failure (build {build_time:.0?})"
    );
    assert!(
        runs.parse::<u64>().is_ok_and(|n| n > 1000),
        "the fuzzer barely ran:\n{tail}"
    );
}

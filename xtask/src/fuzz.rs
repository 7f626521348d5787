//! `cargo xtask fuzz`: runs the parsers' cargo-fuzz targets (`fuzz/`) under
//! libFuzzer for a fixed time each: `config`, the whole config parser, and
//! `duration`, the Go duration parser behind `resyncInterval`, checked
//! against a reference reading. A panic, a hang (over `-timeout`) or a
//! memory blow-up (over `-rss_limit_mb`) on any input fails the target, and
//! libFuzzer leaves the input that did it under `fuzz/artifacts/NAME/`.
//! Needs nightly and cargo-fuzz, which `cargo xtask setup` installs.
//!
//! It is a step of its own, not a `cargo test`: its build and its minute of
//! fuzzing must not share the machine with the namespace tests, and a fixed
//! time is a property of the step, not of a test binary.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::Context as _;

use crate::workspace_root;

/// Fuzzing time in all, in seconds, when neither `--seconds` nor
/// `FUZZ_SECONDS` says otherwise: 45 s for the config parser, 15 s for the
/// duration parser.
pub(crate) const DEFAULT_SECONDS: u64 = 60;

/// The least total that gives each target a second: libFuzzer reads
/// `-max_total_time=0` as "no limit", so 0 is refused rather than passed on.
pub(crate) const MIN_SECONDS: u64 = 2;

/// The environment variable that sets the total when `--seconds` is absent.
pub(crate) const SECONDS_VARIABLE: &str = "FUZZ_SECONDS";

/// Parses a total time in seconds, refusing what would not be a fixed time.
pub(crate) fn parse_seconds(text: &str) -> Result<u64, String> {
    let seconds: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of seconds"))?;
    if seconds < MIN_SECONDS {
        return Err(format!(
            "{seconds} s is too short: at least {MIN_SECONDS} (one second per target; \
             libFuzzer would read 0 as no limit)"
        ));
    }
    Ok(seconds)
}

/// The total: `--seconds` if given, else `FUZZ_SECONDS`, else the default.
pub(crate) fn total_seconds(flag: Option<u64>) -> anyhow::Result<u64> {
    if let Some(seconds) = flag {
        return Ok(seconds);
    }
    match std::env::var(SECONDS_VARIABLE) {
        Ok(text) => parse_seconds(&text)
            .map_err(|reason| anyhow::anyhow!("{SECONDS_VARIABLE}={text}: {reason}")),
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_SECONDS),
        Err(err) => Err(err).context(SECONDS_VARIABLE),
    }
}

/// One fuzz target and its share of the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub name: &'static str,
    pub what: &'static str,
    pub seconds: u64,
}

/// The targets, in the order they run: three quarters of `total` for the
/// config parser, the rest for the duration parser, which is small enough
/// to be covered in seconds.
pub(crate) fn targets(total: u64) -> [Target; 2] {
    let config = (total * 3 / 4).max(1);
    [
        Target {
            name: "config",
            what: "the config parser",
            seconds: config,
        },
        Target {
            name: "duration",
            what: "the duration parser",
            seconds: total.saturating_sub(config).max(1),
        },
    ]
}

/// What one target's run found.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub passed: bool,
    /// One line: the inputs run and the coverage, or why it failed.
    pub summary: String,
}

/// `rustup run nightly cargo fuzz ARGS…` in the workspace root: stdout
/// passes through, stderr (libFuzzer's status lines) is returned.
fn cargo_fuzz(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let output = Command::new("rustup")
        .args(["run", "nightly", "cargo", "fuzz"])
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .output()
        .context("run cargo fuzz (install it with `cargo xtask setup`)")?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// The last `count` lines of `text`.
fn tail(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// What says why a run failed: the panic and its message, libFuzzer's
/// error and summary lines, and the saved input with the command that
/// reproduces it; the last lines when none of these is there.
fn failure_excerpt(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut kept = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let after_panic = index > 0 && lines[index - 1].contains("panicked at");
        let trimmed = line.trim();
        if line.contains("panicked at")
            || after_panic
            || line.contains("ERROR: libFuzzer")
            || trimmed.starts_with("SUMMARY:")
            || trimmed.starts_with("fuzz/artifacts/")
            || trimmed.starts_with("cargo fuzz run ")
        {
            kept.push(*line);
        }
    }
    if kept.is_empty() {
        return tail(stderr, 40);
    }
    kept.dedup();
    kept.join("\n")
}

/// Builds target `name`, fuzzes it from its committed seeds
/// (`fuzz/seeds/NAME`) with its dictionary (`fuzz/NAME.dict`), and judges
/// the run: any failing input, or a run too short to mean anything, fails.
/// An error is a target that could not be built or run at all.
pub(crate) fn fuzz(target: Target) -> anyhow::Result<Outcome> {
    let Target {
        name,
        what,
        seconds,
    } = target;
    let root = workspace_root();
    println!("fuzz: building the {name} target");
    let built = Instant::now();
    let (ok, stderr) = cargo_fuzz(&["build", "--fuzz-dir", "fuzz", name])?;
    if !ok {
        anyhow::bail!(
            "building the {name} fuzz target failed:\n{}",
            tail(&stderr, 40)
        );
    }
    let build_time = built.elapsed();

    // New inputs go to a scratch corpus; the committed seeds are read only.
    let corpus = std::env::temp_dir().join(lab::unique_name(&format!("ip-masq-fuzz-{name}-")));
    std::fs::create_dir_all(&corpus).context("create the scratch corpus")?;
    let path = |path: &Path| path.to_str().map(str::to_owned).context("utf-8 path");
    let corpus_arg = path(&corpus)?;
    let seeds = path(&root.join("fuzz/seeds").join(name))?;
    let dict = format!("-dict={}", path(&root.join(format!("fuzz/{name}.dict")))?);
    let max_time = format!("-max_total_time={seconds}");
    println!("fuzz: running {what} for {seconds} s");
    let started = Instant::now();
    let result = cargo_fuzz(&[
        "run",
        "--fuzz-dir",
        "fuzz",
        name,
        &corpus_arg,
        &seeds,
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
    let (ok, stderr) = result?;
    if !ok {
        return Ok(Outcome {
            passed: false,
            summary: format!(
                "fuzz {name}: FAILED: the fuzzer found a failing input for {what} \
                 (saved under fuzz/artifacts/{name}/):\n{}",
                failure_excerpt(&stderr)
            ),
        });
    }
    let runs = stderr
        .lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|count| count.trim().parse::<u64>().ok());
    let coverage = stderr
        .lines()
        .rev()
        .find_map(|line| line.split("cov: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("?");
    // A run that executed almost nothing (the target exited at once, or
    // the machine starved it) proves nothing.
    let Some(runs) = runs.filter(|&runs| runs > 1000) else {
        return Ok(Outcome {
            passed: false,
            summary: format!(
                "fuzz {name}: FAILED: the fuzzer barely ran ({runs:?} inputs):\n{}",
                tail(&stderr, 40)
            ),
        });
    };
    Ok(Outcome {
        passed: true,
        summary: format!(
            "fuzz {name}: ok: {what} for {fuzz_time:.0?}, {runs} inputs, {coverage} coverage points, \
             no failure (build {build_time:.0?})"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_shows_the_panic_and_the_saved_input() {
        let stderr = "#1000 NEW cov: 5\n\
            thread '<unnamed>' (1) panicked at scanner.rs:1112:13:\n\
            TODO: What is expected here?\n\
            stack backtrace:\n\
            ==1== ERROR: libFuzzer: deadly signal\n\
            #0 0x55 in frame\n\
            SUMMARY: libFuzzer: deadly signal\n\
            Failing input:\n\
            \n\
            \tfuzz/artifacts/config/crash-00\n\
            Reproduce with:\n\
            \tcargo fuzz run config fuzz/artifacts/config/crash-00\n";
        let excerpt = failure_excerpt(stderr);
        for wanted in [
            "panicked at scanner.rs",
            "TODO: What is expected here?",
            "ERROR: libFuzzer: deadly signal",
            "fuzz/artifacts/config/crash-00",
            "cargo fuzz run config",
        ] {
            assert!(
                excerpt.contains(wanted),
                "{wanted:?} missing from:\n{excerpt}"
            );
        }
        assert!(!excerpt.contains("NEW cov"), "{excerpt}");
    }

    #[test]
    fn zero_and_one_second_are_refused() {
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("1").is_err());
        assert!(parse_seconds("-5").is_err());
        assert!(parse_seconds("ten").is_err());
        assert_eq!(parse_seconds("2"), Ok(2));
        assert_eq!(parse_seconds(" 60 "), Ok(60));
    }

    #[test]
    fn the_default_gives_the_config_parser_45_s_and_the_duration_parser_15_s() {
        let [config, duration] = targets(DEFAULT_SECONDS);
        assert_eq!((config.name, config.seconds), ("config", 45));
        assert_eq!((duration.name, duration.seconds), ("duration", 15));
    }

    #[test]
    fn every_target_gets_at_least_a_second() {
        for total in MIN_SECONDS..=10 {
            let shares = targets(total);
            assert!(shares.iter().all(|target| target.seconds >= 1), "{total}");
            assert_eq!(shares.iter().map(|t| t.seconds).sum::<u64>(), total);
        }
    }
}

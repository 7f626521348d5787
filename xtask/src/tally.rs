//! Totals of a `cargo test` run, printed as one closing line.
//!
//! cargo test ends with the summary of whichever test binary ran last (often
//! a doc-test binary with nothing in it); the closing line states the
//! whole suite's outcome instead, and counts every test that did not run
//! (ignored, filtered out, or a step left out) as skipped, so that nothing
//! can silently not run.

/// Counts summed over every test binary's `test result:` line, plus the
/// steps the suite runs besides cargo test (the fuzzing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub passed: u64,
    pub failed: u64,
    /// Tests marked `#[ignore]` that did not run (no `--include-ignored`).
    pub ignored: u64,
    /// Tests a name filter left out.
    pub filtered_out: u64,
    /// Other steps that were left out (fuzz targets under `--skip-fuzz`).
    pub steps_skipped: u64,
    /// Test binaries that ended without a `test result:` line (a crash, an
    /// abort): their tests that did not report `ok` count as failed.
    pub crashed_binaries: u64,
    /// The binary whose tests are being reported, until its result line.
    open: Option<Binary>,
}

/// Per-test lines of one test binary, for when it never prints a summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Binary {
    /// From `running N tests`.
    announced: u64,
    ok: u64,
    ignored: u64,
}

impl Tally {
    /// Adds one line of cargo test output; other lines are ignored.
    pub(crate) fn add_line(&mut self, line: &str) {
        let line = line.trim();
        if let Some(announced) = line
            .strip_prefix("running ")
            .and_then(|rest| rest.strip_suffix(" tests").or(rest.strip_suffix(" test")))
            .and_then(|count| count.parse().ok())
        {
            self.close_crashed();
            self.open = Some(Binary {
                announced,
                ..Binary::default()
            });
            return;
        }
        if let Some(summary) = line.strip_prefix("test result: ") {
            self.open = None;
            self.add_summary(summary);
            return;
        }
        if let (Some(binary), Some(rest)) = (self.open.as_mut(), line.strip_prefix("test "))
            && let Some((_name, outcome)) = rest.rsplit_once(" ... ")
        {
            if outcome == "ok" {
                binary.ok += 1;
            } else if outcome.starts_with("ignored") {
                binary.ignored += 1;
            }
        }
    }

    fn add_summary(&mut self, summary: &str) {
        for part in summary.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(count), Some(label)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match (label, words.next()) {
                ("passed", _) => self.passed += count,
                ("failed", _) => self.failed += count,
                ("ignored", _) => self.ignored += count,
                ("filtered", Some("out")) => self.filtered_out += count,
                _ => {}
            }
        }
    }

    /// A binary that announced its tests and ended without a summary: what
    /// reported `ok` passed, what was ignored is skipped, the rest (at least
    /// one) failed.
    fn close_crashed(&mut self) {
        let Some(binary) = self.open.take() else {
            return;
        };
        self.crashed_binaries += 1;
        self.passed += binary.ok;
        self.ignored += binary.ignored;
        self.failed += binary
            .announced
            .saturating_sub(binary.ok + binary.ignored)
            .max(1);
    }

    /// Call once the output has ended.
    pub(crate) fn finish(&mut self) {
        self.close_crashed();
    }

    /// Counts one step run outside cargo test (a fuzz target).
    pub(crate) fn add_step(&mut self, passed: bool) {
        if passed {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// Everything that did not run.
    pub(crate) fn skipped(&self) -> u64 {
        self.ignored + self.filtered_out + self.steps_skipped
    }

    /// What the skipped count is made of, and any crashed binaries; `None`
    /// when there is nothing to explain.
    pub(crate) fn details(&self) -> Option<String> {
        let mut parts = Vec::new();
        for (count, what) in [
            (self.ignored, "ignored"),
            (self.filtered_out, "filtered out"),
            (self.steps_skipped, "fuzz targets left out"),
            (
                self.crashed_binaries,
                "test binaries ended without a summary (counted as failed)",
            ),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        (!parts.is_empty()).then(|| format!("suite details: {}", parts.join(", ")))
    }

    /// The closing line: `suite: N passed, N failed, N skipped`.
    pub(crate) fn closing_line(&self) -> String {
        format!(
            "suite: {} passed, {} failed, {} skipped",
            self.passed,
            self.failed,
            self.skipped()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(lines: &[&str]) -> Tally {
        let mut tally = Tally::default();
        for line in lines {
            tally.add_line(line);
        }
        tally.finish();
        tally
    }

    #[test]
    fn sums_every_result_line() {
        let tally = tally(&[
            "running 108 tests",
            "test result: ok. 108 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.13s",
            "running 3 tests",
            "test a ... ok",
            "test result: FAILED. 7 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 4.28s",
            "running 0 tests",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "test something ... ok",
        ]);
        assert_eq!(
            (
                tally.passed,
                tally.failed,
                tally.ignored,
                tally.crashed_binaries
            ),
            (115, 2, 1, 0)
        );
        assert_eq!(
            tally.closing_line(),
            "suite: 115 passed, 2 failed, 1 skipped"
        );
    }

    #[test]
    fn filtered_out_and_ignored_tests_count_as_skipped() {
        let tally = tally(&[
            "running 2 tests",
            "test result: ok. 2 passed; 0 failed; 3 ignored; 0 measured; 40 filtered out; finished in 0.01s",
        ]);
        assert_eq!((tally.ignored, tally.filtered_out), (3, 40));
        assert_eq!(
            tally.closing_line(),
            "suite: 2 passed, 0 failed, 43 skipped"
        );
        assert_eq!(
            tally.details().as_deref(),
            Some("suite details: 3 ignored, 40 filtered out")
        );
    }

    #[test]
    fn a_binary_without_a_summary_counts_its_unfinished_tests_as_failed() {
        // A test binary that aborts (a segfault, a panic in a drop during
        // unwinding) prints no `test result:` line.
        let tally = tally(&[
            "running 5 tests",
            "test one ... ok",
            "test two ... ignored, needs root",
            "test three ... ok",
            "running 1 test",
            "test four ... ok",
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "running 2 tests",
            "test five ... ok",
            "test six ... ok",
        ]);
        assert_eq!(
            (
                tally.passed,
                tally.failed,
                tally.ignored,
                tally.crashed_binaries
            ),
            // Three of the first binary's tests never reported; the last
            // one's two passed but the binary still died.
            (2 + 1 + 2, 2 + 1, 1, 2)
        );
        assert!(tally.details().unwrap().contains("2 test binaries ended"));
    }

    #[test]
    fn steps_outside_cargo_test_are_counted() {
        let mut tally = Tally::default();
        tally.add_step(true);
        tally.add_step(false);
        tally.steps_skipped += 2;
        assert_eq!(tally.closing_line(), "suite: 1 passed, 1 failed, 2 skipped");
    }
}

//! Totals of a `cargo test` run, printed as one closing line.
//!
//! cargo test ends with the summary of whichever test binary ran last (often
//! a doc-test binary with nothing in it); the closing line states the
//! whole suite's outcome instead.

/// Passed and failed counts summed over every `test result:` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Tally {
    /// Adds one line of cargo test output; other lines are ignored.
    pub fn add_line(&mut self, line: &str) {
        let Some(summary) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in summary.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(count), Some(label)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }

    /// The closing line: `suite: N passed, N failed, N skipped`.
    pub fn closing_line(&self) -> String {
        format!(
            "suite: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_result_line() {
        let mut tally = Tally::default();
        for line in [
            "test result: ok. 108 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.13s",
            "running 3 tests",
            "test result: FAILED. 7 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 4.28s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "test something ... ok",
        ] {
            tally.add_line(line);
        }
        assert_eq!(
            tally,
            Tally {
                passed: 115,
                failed: 2,
                ignored: 1
            }
        );
        assert_eq!(
            tally.closing_line(),
            "suite: 115 passed, 2 failed, 1 skipped"
        );
    }
}

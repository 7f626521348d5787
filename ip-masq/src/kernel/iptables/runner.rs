//! Running iptables, iptables-restore and iptables-save: the only place
//! that starts them. [`Runner`] is the one side effect, so that a test can
//! stand in for the kernel and count what is run.
//!
//! Writes and listings wait for the xtables lock at most
//! [`LOCK_WAIT_SECONDS`] (`-w 5`), the bound kube-proxy and ip-masq-agent
//! use: a lock held longer (a stuck iptables elsewhere on the node) then
//! fails the command with [`RulesError::LockTimeout`], where an unbounded
//! `-w` would hang the agent's loop and its readiness check.

use std::{
    fmt, io,
    io::Write as _,
    process::{Command, Stdio},
};

use crate::kernel::iptables::RulesError;
use crate::kernel::iptables::save::Dump;
use crate::model::Family;

/// How long iptables waits for the xtables lock, in seconds.
pub(crate) const LOCK_WAIT_SECONDS: u32 = 5;

/// iptables' exit code when it gave up waiting for the lock
/// (`RESOURCE_PROBLEM`).
const RESOURCE_PROBLEM: i32 = 4;

/// What a finished command left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Output {
    /// The exit code; `None` when a signal ended it.
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Starts a program and waits for it.
pub(crate) trait Runner: fmt::Debug + Send + Sync {
    /// Runs `program` with `args`, writing `stdin` to it when given.
    ///
    /// # Errors
    /// Fails when the program cannot be started or fed.
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> io::Result<Output>;
}

/// The real thing: runs the programs found on `PATH`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct System;

impl Runner for System {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> io::Result<Output> {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        if let Some(input) = stdin {
            // Dropped at the end of the statement: the program sees EOF.
            child
                .stdin
                .take()
                .expect("stdin is piped")
                .write_all(input.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        Ok(Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs a command and returns its standard output, or why it failed. Pure
/// apart from the runner.
///
/// # Errors
/// Fails when the program cannot be run, gave up on the xtables lock, or
/// exited with an error.
pub(crate) fn checked(
    runner: &dyn Runner,
    program: &str,
    args: &[String],
    stdin: Option<&str>,
) -> Result<String, RulesError> {
    let output = runner
        .run(program, args, stdin)
        .map_err(|source| RulesError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if output.code == Some(0) {
        return Ok(output.stdout);
    }
    let command = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    if output.code == Some(RESOURCE_PROBLEM) && output.stderr.contains("xtables lock") {
        return Err(RulesError::LockTimeout {
            command,
            seconds: LOCK_WAIT_SECONDS,
        });
    }
    Err(RulesError::Failed {
        command,
        status: output.code.map_or_else(
            || "killed by a signal".to_owned(),
            |code| format!("exit status: {code}"),
        ),
        stderr: output.stderr,
    })
}

/// `-w SECONDS`, then `args`.
fn waiting(args: &[&str]) -> Vec<String> {
    ["-w".to_owned(), LOCK_WAIT_SECONDS.to_string()]
        .into_iter()
        .chain(args.iter().map(|arg| (*arg).to_owned()))
        .collect()
}

/// Runs `iptables -w 5 ARGS` (or ip6tables) and returns its output.
///
/// # Errors
/// As [`checked`].
pub(crate) fn iptables(
    runner: &dyn Runner,
    family: Family,
    args: &[&str],
) -> Result<String, RulesError> {
    checked(runner, family.iptables(), &waiting(args), None)
}

/// Feeds `input` to `iptables-restore -w 5 --noflush`: only the chains the
/// input declares are replaced.
///
/// # Errors
/// As [`checked`].
pub(crate) fn restore(runner: &dyn Runner, family: Family, input: &str) -> Result<(), RulesError> {
    checked(
        runner,
        family.iptables_restore(),
        &waiting(&["--noflush"]),
        Some(input),
    )
    .map(drop)
}

/// The nat table as `iptables -t nat -S` prints it, parsed. Listing the
/// whole table works whether or not the table or our chain exist yet, which
/// `-S CHAIN` does not with the nf_tables backend.
///
/// # Errors
/// As [`checked`].
pub(crate) fn list_nat(runner: &dyn Runner, family: Family) -> Result<Dump, RulesError> {
    let text = iptables(runner, family, &["-t", "nat", "-S"])?;
    Ok(Dump::parse_listing("nat", &text))
}

/// `PROGRAM --version`'s first line, whatever the exit code.
///
/// # Errors
/// Fails when the program cannot be run.
pub(crate) fn version(runner: &dyn Runner, program: &str) -> Result<String, RulesError> {
    let output = runner
        .run(program, &["--version".to_owned()], None)
        .map_err(|source| RulesError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    Ok(output.stdout.trim().to_owned())
}

/// Asks the installed iptables for its version.
///
/// # Errors
/// Fails when iptables cannot be run.
pub fn iptables_version(family: Family) -> Result<String, RulesError> {
    version(&System, family.iptables())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A command as run: program, arguments, standard input.
    type Call = (String, Vec<String>, Option<String>);

    /// Answers every command with one output and records the commands.
    #[derive(Debug)]
    struct Canned {
        output: Output,
        calls: Mutex<Vec<Call>>,
    }

    impl Canned {
        fn new(code: Option<i32>, stdout: &str, stderr: &str) -> Self {
            Self {
                output: Output {
                    code,
                    stdout: stdout.into(),
                    stderr: stderr.into(),
                },
                calls: Mutex::default(),
            }
        }
    }

    impl Runner for Canned {
        fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> io::Result<Output> {
            self.calls.lock().unwrap().push((
                program.to_owned(),
                args.to_vec(),
                stdin.map(str::to_owned),
            ));
            Ok(self.output.clone())
        }
    }

    /// What iptables-legacy prints when another process holds the lock
    /// past `-w` (captured from iptables v1.8.9).
    const LOCK_HELD: &str =
        "Another app is currently holding the xtables lock. Stopped waiting after 5s.";

    #[test]
    fn commands_wait_a_bounded_time_for_the_lock() {
        let runner = Canned::new(Some(0), "-P POSTROUTING ACCEPT\n", "");
        list_nat(&runner, Family::V6).unwrap();
        iptables(&runner, Family::V4, &["-t", "nat", "-F", "X"]).unwrap();
        restore(&runner, Family::V4, "*nat\nCOMMIT\n").unwrap();
        let calls = runner.calls.lock().unwrap();
        let commands: Vec<String> = calls
            .iter()
            .map(|(program, args, _)| format!("{program} {}", args.join(" ")))
            .collect();
        assert_eq!(
            commands,
            [
                "ip6tables -w 5 -t nat -S",
                "iptables -w 5 -t nat -F X",
                "iptables-restore -w 5 --noflush"
            ]
        );
        assert_eq!(calls[2].2.as_deref(), Some("*nat\nCOMMIT\n"));
        assert_eq!(calls[0].2, None);
    }

    #[test]
    fn giving_up_on_the_lock_says_so() {
        let runner = Canned::new(Some(4), "", LOCK_HELD);
        let err = list_nat(&runner, Family::V4).unwrap_err();
        assert!(
            matches!(err, RulesError::LockTimeout { seconds: 5, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "iptables -w 5 -t nat -S gave up after waiting 5 s for the xtables lock, which another program holds"
        );
        // Exit code 4 for another reason is an ordinary failure.
        let runner = Canned::new(Some(4), "", "iptables: Resource temporarily unavailable.");
        assert!(matches!(
            restore(&runner, Family::V4, "").unwrap_err(),
            RulesError::Failed { .. }
        ));
    }

    #[test]
    fn failures_carry_the_command_and_its_error() {
        let runner = Canned::new(
            Some(2),
            "",
            "iptables v1.8.9 (nf_tables): unknown option \"--bogus\"",
        );
        assert_eq!(
            iptables(&runner, Family::V4, &["--bogus"])
                .unwrap_err()
                .to_string(),
            "iptables -w 5 --bogus failed (exit status: 2): iptables v1.8.9 (nf_tables): unknown option \"--bogus\""
        );
        let runner = Canned::new(None, "", "");
        assert_eq!(
            checked(&runner, "iptables-save", &[], None)
                .unwrap_err()
                .to_string(),
            "iptables-save failed (killed by a signal): "
        );
    }

    #[test]
    fn version_ignores_the_exit_code() {
        let runner = Canned::new(Some(1), "iptables v1.8.9 (nf_tables)\n", "");
        assert_eq!(
            version(&runner, "iptables").unwrap(),
            "iptables v1.8.9 (nf_tables)"
        );
    }

    #[test]
    fn the_system_runner_feeds_stdin_and_reports_exit_codes() {
        let output = System
            .run(
                "sh",
                &["-c".into(), "cat; echo err >&2; exit 3".into()],
                Some("in\n"),
            )
            .unwrap();
        assert_eq!(
            output,
            Output {
                code: Some(3),
                stdout: "in\n".into(),
                stderr: "err".into()
            }
        );
        assert!(matches!(
            checked(&System, "/nonexistent/iptables", &[], None),
            Err(RulesError::Spawn { .. })
        ));
    }
}

//! The installer against a stand-in for iptables that keeps a nat table in
//! memory, prints it as `iptables -S` does and counts the commands.

use std::{io, path::PathBuf, sync::Mutex};

use super::*;
use crate::kernel::iptables::runner::Output;
use crate::model::{DatapathMode, ports::PortRanges};

const LOCK_HELD: &str =
    "Another app is currently holding the xtables lock. Stopped waiting after 5s.";

#[derive(Debug, Default)]
struct State {
    /// The nat table as `iptables -S` lines.
    lines: Vec<String>,
    /// Every command run, as `program args…`.
    calls: Vec<String>,
    lock_held: bool,
}

#[derive(Debug, Default)]
struct FakeIptables(Mutex<State>);

/// How `iptables -S` prints a rule given as arguments.
fn render(chain: &str, words: &[&str]) -> String {
    let words: Vec<String> = words
        .iter()
        .map(|word| {
            if word.contains(' ') {
                format!("\"{word}\"")
            } else {
                (*word).to_owned()
            }
        })
        .collect();
    format!("-A {chain} {}", words.join(" "))
}

impl Runner for FakeIptables {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> io::Result<Output> {
        let mut state = self.0.lock().unwrap();
        state.calls.push(format!("{program} {}", args.join(" ")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(args[..2], ["-w", "5"], "every command waits a bounded time");
        if state.lock_held {
            return Ok(Output {
                code: Some(4),
                stdout: String::new(),
                stderr: LOCK_HELD.into(),
            });
        }
        let mut stdout = String::new();
        match (program, &args[2..]) {
            ("iptables-restore", ["--noflush"]) => {
                for line in stdin.expect("restore input").lines() {
                    if let Some(declaration) = line.strip_prefix(':') {
                        let chain = declaration.split_whitespace().next().unwrap();
                        let new = format!("-N {chain}");
                        if !state.lines.contains(&new) {
                            state.lines.push(new);
                        }
                        let prefix = format!("-A {chain} ");
                        state.lines.retain(|line| !line.starts_with(&prefix));
                    } else if line.starts_with("-A ") {
                        state.lines.push(line.to_owned());
                    }
                }
            }
            ("iptables", ["-t", "nat", "-S"]) => {
                for line in &state.lines {
                    stdout.push_str(line);
                    stdout.push('\n');
                }
            }
            ("iptables", ["-t", "nat", "-A", chain, rule @ ..]) => {
                let line = render(chain, rule);
                state.lines.push(line);
            }
            ("iptables", ["-t", "nat", "-D", chain, rule @ ..]) => {
                let line = render(chain, rule);
                let at = state
                    .lines
                    .iter()
                    .position(|l| *l == line)
                    .expect("rule to delete");
                state.lines.remove(at);
            }
            ("iptables", ["-t", "nat", "-F", chain]) => {
                let prefix = format!("-A {chain} ");
                state.lines.retain(|line| !line.starts_with(&prefix));
            }
            ("iptables", ["-t", "nat", "-X", chain]) => {
                let new = format!("-N {chain}");
                state.lines.retain(|line| *line != new);
            }
            other => panic!("unexpected command {other:?}"),
        }
        Ok(Output {
            code: Some(0),
            stdout,
            stderr: String::new(),
        })
    }
}

impl FakeIptables {
    fn with(lines: &[&str]) -> Arc<Self> {
        let fake = Self::default();
        fake.0.lock().unwrap().lines = lines.iter().map(|line| (*line).to_owned()).collect();
        Arc::new(fake)
    }

    /// The commands run since the last call, and how many were listings.
    fn take_calls(&self) -> (Vec<String>, usize) {
        let calls = std::mem::take(&mut self.0.lock().unwrap().calls);
        let listings = calls
            .iter()
            .filter(|call| call.ends_with("-t nat -S"))
            .count();
        (calls, listings)
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().lines.clone()
    }

    fn edit(&self, edit: impl FnOnce(&mut Vec<String>)) {
        edit(&mut self.0.lock().unwrap().lines);
    }
}

fn rules() -> RuleSet {
    RuleSet {
        chain: "IP-MASQ-AGENT".into(),
        mark: 0x2000,
        random_fully: true,
        datapath: DatapathMode::Tc,
        pin_dir: PathBuf::from("/sys/fs/bpf/ip-masq"),
        to_ports: PortRanges::default(),
    }
}

const JUMP: &str = "-A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT";

fn installer(fake: &Arc<FakeIptables>) -> Installer {
    Installer::with_runner(Family::V4, rules(), fake.clone())
}

#[test]
fn ensure_lists_the_nat_table_once_per_call() {
    let fake = FakeIptables::with(&["-P POSTROUTING ACCEPT"]);
    let mut installer = installer(&fake);

    // First call: write, read back, add the jump.
    let repairs = installer.ensure().unwrap();
    assert_eq!(
        repairs,
        Repairs {
            chain_rewritten: true,
            jump_added: true,
            duplicate_jumps_removed: 0
        }
    );
    let (calls, listings) = fake.take_calls();
    assert_eq!(listings, 1, "{calls:#?}");
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert!(calls[0].starts_with("iptables-restore -w 5 --noflush"));
    assert!(fake.lines().contains(&JUMP.to_owned()));

    // Nothing changed: one listing and nothing else.
    assert!(!installer.ensure().unwrap().any());
    let (calls, listings) = fake.take_calls();
    assert_eq!((calls.len(), listings), (1, 1), "{calls:#?}");

    // Someone edits the chain and doubles the jump: one listing, one
    // rewrite, one deletion.
    fake.edit(|lines| {
        lines.retain(|line| !line.contains("-m bpf"));
        lines.push(JUMP.into());
    });
    let repairs = installer.ensure().unwrap();
    assert_eq!(
        repairs,
        Repairs {
            chain_rewritten: true,
            jump_added: false,
            duplicate_jumps_removed: 1
        }
    );
    let (calls, listings) = fake.take_calls();
    assert_eq!((calls.len(), listings), (3, 1), "{calls:#?}");

    // The rewrite put back what the first write left, so the expected
    // listing still holds.
    assert!(!installer.ensure().unwrap().any());
    assert!(installer.verify().unwrap());
}

#[test]
fn verify_lists_the_nat_table_once() {
    let fake = FakeIptables::with(&["-P POSTROUTING ACCEPT"]);
    let mut installer = installer(&fake);
    installer.ensure().unwrap();
    fake.take_calls();
    let verifier = installer.clone();

    assert!(verifier.verify().unwrap());
    assert_eq!(fake.take_calls().1, 1);

    fake.edit(|lines| lines.retain(|line| *line != JUMP));
    assert!(!verifier.verify().unwrap(), "jump missing");
    let (calls, listings) = fake.take_calls();
    assert_eq!((calls.len(), listings), (1, 1), "{calls:#?}");

    installer.ensure().unwrap();
    fake.edit(|lines| lines.push("-A IP-MASQ-AGENT -j ACCEPT".into()));
    assert!(!verifier.verify().unwrap(), "chain changed");
    fake.edit(|lines| lines.retain(|line| !line.starts_with("-A IP-MASQ-AGENT ")));
    assert!(!verifier.verify().unwrap(), "chain emptied");
}

#[test]
fn never_installed_never_verifies() {
    let fake = FakeIptables::with(&["-P POSTROUTING ACCEPT", "-N IP-MASQ-AGENT", JUMP]);
    assert!(!installer(&fake).verify().unwrap());
}

#[test]
fn takes_over_ip_masq_agents_chain_and_jump() {
    let fake = FakeIptables::with(&[
        "-P POSTROUTING ACCEPT",
        "-N IP-MASQ-AGENT",
        JUMP,
        // A jump without upstream's comment is not ours.
        "-A POSTROUTING -j IP-MASQ-AGENT",
        "-A IP-MASQ-AGENT -d 10.0.0.0/8 -m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN",
        "-A IP-MASQ-AGENT -m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE",
    ]);
    let mut installer = installer(&fake);
    let repairs = installer.ensure().unwrap();
    assert_eq!(
        repairs,
        Repairs {
            chain_rewritten: true,
            ..Repairs::default()
        }
    );
    let lines = fake.lines();
    assert!(
        !lines.iter().any(|line| line.contains("-d 10.0.0.0/8")),
        "{lines:#?}"
    );
    assert_eq!(lines.iter().filter(|line| **line == JUMP).count(), 1);
    assert!(lines.contains(&"-A POSTROUTING -j IP-MASQ-AGENT".to_owned()));
    assert!(installer.verify().unwrap());
}

#[test]
fn remove_lists_once_and_leaves_nothing() {
    let fake = FakeIptables::with(&["-P POSTROUTING ACCEPT"]);
    installer(&fake).ensure().unwrap();
    fake.edit(|lines| lines.push(JUMP.into()));
    fake.take_calls();
    let removed = installer(&fake).remove().unwrap();
    assert_eq!(
        removed,
        Removed {
            jumps: 2,
            chain: true
        }
    );
    let (calls, listings) = fake.take_calls();
    assert_eq!(listings, 1, "{calls:#?}");
    assert_eq!(
        calls.len(),
        5,
        "two deletions, a flush and a delete: {calls:#?}"
    );
    assert_eq!(fake.lines(), ["-P POSTROUTING ACCEPT"]);
    // Nothing installed: nothing to do but look, and nothing reported.
    assert_eq!(installer(&fake).remove().unwrap(), Removed::default());
    assert_eq!(fake.take_calls().0.len(), 1);
}

#[test]
fn a_held_lock_is_an_error_not_a_hang() {
    let fake = FakeIptables::with(&["-P POSTROUTING ACCEPT"]);
    let mut installer = installer(&fake);
    installer.ensure().unwrap();
    fake.0.lock().unwrap().lock_held = true;
    for err in [
        installer.ensure().unwrap_err(),
        installer.verify().unwrap_err(),
        installer.remove().unwrap_err(),
    ] {
        assert!(
            matches!(err, RulesError::LockTimeout { seconds: 5, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn a_pin_dir_iptables_cannot_name_is_refused_before_any_write() {
    let fake = FakeIptables::with(&["-P POSTROUTING ACCEPT"]);
    let mut installer = Installer::with_runner(
        Family::V4,
        RuleSet {
            pin_dir: PathBuf::from("/sys/fs/bpf/ip masq"),
            ..rules()
        },
        fake.clone(),
    );
    assert!(matches!(
        installer.ensure(),
        Err(RulesError::PinPath { .. })
    ));
    assert!(fake.take_calls().0.is_empty());
}

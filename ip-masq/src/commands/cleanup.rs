//! `ip-masq cleanup`: removes what the agent installed, and says only what
//! it really removed.

use std::{fmt::Write as _, fs, path::Path};

use crate::agent::PinDirLock;
use crate::commands::CommandError;
use crate::kernel::iptables::{Installer, Removed, RuleSet};
use crate::model::Family;
use crate::options::CleanupOptions;
use crate::serve::state;

/// `ip-masq cleanup`: removes the jump, the chain, every link pin (which
/// detaches the classifier), the map pins, the xt_bpf socket filter pins
/// and the pin directory. The chain goes first, so no rule is left naming a
/// socket filter pin that is gone.
///
/// # Errors
/// Fails when an agent still runs on the pin directory, when a removal
/// fails, or when it finds pins but none of the rules the agent installed
/// (not the node's network namespace), touching nothing then.
pub fn cleanup(args: &CleanupOptions) -> Result<String, CommandError> {
    let rules = RuleSet {
        chain: args.masq_chain.clone(),
        mark: ip_masq_common::DEFAULT_KEEP_SOURCE_MARK,
        random_fully: false,
        // Removal goes by chain name and jump only; these two do not matter.
        datapath: crate::model::DatapathMode::default(),
        pin_dir: args.pin_path.clone(),
        to_ports: crate::model::ports::PortRanges::default(),
    };
    // Refuse before touching anything while an agent still runs: it would
    // put everything back, and half a cleanup helps nobody.
    let lock = if args.pin_path.exists() {
        Some(PinDirLock::acquire(&args.pin_path)?)
    } else {
        None
    };
    let state_file = state::state_file_path(&args.state_dir, &args.pin_path);
    let last_state = state::read_state(&state_file).ok().flatten();
    // An agent that ran with IPv6 left ip6tables rules too.
    let ran_ipv6 = last_state.as_ref().is_some_and(|state| state.ipv6);
    let mut families = vec![Family::V4];
    if args.enable_ipv6 || ran_ipv6 {
        families.push(Family::V6);
    }
    let mut removed = Vec::new();
    for family in families {
        removed.push((family, Installer::new(family, rules.clone()).remove()?));
    }
    // Pins but none of the rules an agent installed: most likely not the
    // node's network namespace (a pod without hostNetwork). Removing the
    // pins now would strand the node's rules, which name the xt_bpf pins:
    // iptables-legacy re-checks every rule of the table on each change, so
    // it could then not even delete them. An agent that never installed
    // rules (a first start on a refused file) left only pins.
    let found_rules = removed
        .iter()
        .any(|(_, removed)| removed.chain || removed.jumps > 0);
    let expects_rules = last_state
        .as_ref()
        .is_none_or(|state| state.rules_installed);
    if lock.is_some() && !found_rules && expects_rules {
        return Err(CommandError::NoRulesHere {
            chain: args.masq_chain.clone(),
            pin_path: args.pin_path.display().to_string(),
        });
    }
    let pins = match lock {
        Some(lock) => {
            let count = remove_tree(&args.pin_path)?;
            drop(lock);
            Some(count)
        }
        None => None,
    };
    let state_removed = state::remove_state(&state_file)?;
    Ok(report(&Cleaned {
        rules: &removed,
        chain: &args.masq_chain,
        pin_path: &args.pin_path,
        pins,
        state_file: state_removed.then_some(state_file.as_path()),
    }))
}

/// What one cleanup found and removed.
struct Cleaned<'a> {
    rules: &'a [(Family, Removed)],
    chain: &'a str,
    pin_path: &'a Path,
    /// Pins removed, `None` when there was no pin directory.
    pins: Option<usize>,
    /// The state file, when there was one to remove.
    state_file: Option<&'a Path>,
}

/// What `cleanup` says: only what it really removed, and what it did not
/// find. Pure.
fn report(cleaned: &Cleaned<'_>) -> String {
    let mut out = String::new();
    let chain = cleaned.chain;
    let mut any_rules = false;
    for (family, removed) in cleaned.rules {
        let family = state::family_label(*family);
        any_rules |= removed.chain || removed.jumps > 0;
        let _ = match (removed.chain, removed.jumps) {
            (false, 0) => writeln!(
                out,
                "no {family} chain {chain} and no jump to it in this network namespace"
            ),
            (true, 0) => writeln!(out, "removed {family} chain {chain} (it had no jump)"),
            (false, n) => writeln!(
                out,
                "removed {n} {family} POSTROUTING jump(s) to {chain} (the chain was gone)"
            ),
            (true, 1) => writeln!(out, "removed {family} chain {chain} and its jump"),
            (true, n) => writeln!(out, "removed {family} chain {chain} and {n} jumps to it"),
        };
    }
    let pin_path = cleaned.pin_path.display();
    let _ = match cleaned.pins {
        Some(count) => writeln!(out, "removed the pin directory {pin_path} ({count} pins)"),
        None => writeln!(out, "no pin directory {pin_path}"),
    };
    let _ = match cleaned.state_file {
        Some(path) => writeln!(out, "removed state file {}", path.display()),
        None => writeln!(out, "no state file"),
    };
    if !any_rules && cleaned.pins.is_none() && cleaned.state_file.is_none() {
        let _ = writeln!(out, "nothing of ip-masq's found: nothing removed");
    }
    out
}

/// Removes a bpffs tree; returns how many pins it removed. Unpinning a link
/// detaches its program once no process holds the link open.
fn remove_tree(path: &Path) -> Result<usize, CommandError> {
    let remove_err = |source| CommandError::Remove {
        path: path.display().to_string(),
        source,
    };
    let mut count = 0;
    for entry in fs::read_dir(path).map_err(remove_err)? {
        let entry = entry.map_err(remove_err)?;
        let child = entry.path();
        if entry.file_type().map_err(remove_err)?.is_dir() {
            count += remove_tree(&child)?;
        } else {
            fs::remove_file(&child).map_err(|source| CommandError::Remove {
                path: child.display().to_string(),
                source,
            })?;
            count += 1;
        }
    }
    fs::remove_dir(path).map_err(remove_err)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(rules: &[(Family, Removed)], pins: Option<usize>, state_file: Option<&Path>) -> String {
        report(&Cleaned {
            rules,
            chain: "IP-MASQ-AGENT",
            pin_path: Path::new("/sys/fs/bpf/ip-masq"),
            pins,
            state_file,
        })
    }

    #[test]
    fn cleanup_reports_only_what_it_removed() {
        let everything = said(
            &[(
                Family::V4,
                Removed {
                    jumps: 1,
                    chain: true,
                },
            )],
            Some(7),
            Some(Path::new("/run/ip-masq/ip-masq-1.json")),
        );
        assert_eq!(
            everything,
            "removed IPv4 chain IP-MASQ-AGENT and its jump\n\
             removed the pin directory /sys/fs/bpf/ip-masq (7 pins)\n\
             removed state file /run/ip-masq/ip-masq-1.json\n"
        );
        let partial = said(
            &[
                (
                    Family::V4,
                    Removed {
                        jumps: 2,
                        chain: false,
                    },
                ),
                (
                    Family::V6,
                    Removed {
                        jumps: 0,
                        chain: true,
                    },
                ),
            ],
            Some(0),
            None,
        );
        assert!(
            partial.contains(
                "removed 2 IPv4 POSTROUTING jump(s) to IP-MASQ-AGENT (the chain was gone)\n"
            ),
            "{partial}"
        );
        assert!(
            partial.contains("removed IPv6 chain IP-MASQ-AGENT (it had no jump)\n"),
            "{partial}"
        );
        assert!(partial.contains("no state file\n"), "{partial}");
        assert!(!partial.contains("warning"), "{partial}");
    }

    #[test]
    fn cleanup_says_when_nothing_of_ours_was_found() {
        let nothing = said(&[(Family::V4, Removed::default())], None, None);
        assert_eq!(
            nothing,
            "no IPv4 chain IP-MASQ-AGENT and no jump to it in this network namespace\n\
             no pin directory /sys/fs/bpf/ip-masq\n\
             no state file\n\
             nothing of ip-masq's found: nothing removed\n"
        );
        // Only a state file left: removed, and not "nothing found".
        let state = said(
            &[(Family::V4, Removed::default())],
            None,
            Some(Path::new("/run/s.json")),
        );
        assert!(state.contains("removed state file /run/s.json"), "{state}");
        assert!(!state.contains("nothing of ip-masq's found"), "{state}");
    }
}

//! Other MASQUERADE and SNAT rules: a walk of nat POSTROUTING in order,
//! following jumps into user chains, that finds each such rule pod traffic
//! can reach and where it sits relative to our jump.

use crate::commands::doctor::marks::parse_mark_spec;
use crate::commands::doctor::vendors;
use crate::commands::doctor::{Finding, FindingKind, Inputs};
use crate::kernel::iptables::backends::Listing;
use crate::kernel::iptables::save::{Dump, Rule};

/// Where a SNAT rule sits relative to our jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Position {
    BeforeJump,
    AfterJump,
    NoJump,
    OtherBackend,
}

struct Walk<'a> {
    dump: &'a Dump,
    ours: bool,
    chain: &'a str,
    jump_seen: bool,
    found: Vec<(&'a Rule, Position, Vec<String>)>,
}

impl<'a> Walk<'a> {
    /// Walks `chain` of the nat table in order. Returns false when a rule
    /// ends nat processing for every packet (an unconditional ACCEPT).
    fn chain(&mut self, chain: &str, gated: bool, path: &mut Vec<String>, depth: usize) -> bool {
        if depth > 16 || path.iter().any(|seen| seen == chain) {
            return true;
        }
        path.push(chain.to_owned());
        let mut gated = gated;
        let rules: Vec<&'a Rule> = self.dump.chain_rules("nat", chain);
        for rule in rules {
            let Some((target, goto)) = rule.target() else {
                continue;
            };
            let matches = rule.matches();
            let mark = rule.option("--mark").and_then(|(spec, negated)| {
                let (value, mask) = parse_mark_spec(spec)?;
                Some((value & mask, negated))
            });
            // Only packets carrying some mark bits reach this rule.
            let rule_gated = gated || matches!(mark, Some((bits, false)) if bits != 0);
            let only_mark = matches.iter().all(|w| {
                matches!(*w, "-m" | "mark" | "!" | "--mark") || parse_mark_spec(w).is_some()
            });
            if self.ours && target == self.chain {
                self.jump_seen = true;
                continue;
            }
            match target {
                "MASQUERADE" | "SNAT" if !rule_gated => {
                    let position = if !self.ours {
                        Position::OtherBackend
                    } else if self.jump_seen {
                        Position::AfterJump
                    } else {
                        Position::NoJump // settled once the walk is over
                    };
                    self.found.push((rule, position, path.clone()));
                }
                "RETURN" if matches.is_empty() => break,
                "RETURN" if only_mark && matches!(mark, Some((bits, true)) if bits != 0) => {
                    // `! --mark X -j RETURN`: from here on, only marked packets.
                    gated = true;
                }
                "ACCEPT" if matches.is_empty() => {
                    path.pop();
                    return false;
                }
                _ if self.dump.has_chain("nat", target) => {
                    if !self.chain(target, rule_gated, path, depth + 1) {
                        path.pop();
                        return false;
                    }
                    if goto && matches.is_empty() {
                        break;
                    }
                }
                _ => {}
            }
        }
        path.pop();
        true
    }
}

/// The SNAT findings of one listing, and a missing jump in ours.
pub(super) fn findings(
    inputs: &Inputs,
    listing: &Listing,
    dump: &Dump,
    findings: &mut Vec<Finding>,
) {
    let chain = inputs.chain.as_str();
    let mut walk = Walk {
        dump,
        ours: listing.ours,
        chain,
        jump_seen: false,
        found: Vec::new(),
    };
    walk.chain("POSTROUTING", false, &mut Vec::new(), 0);
    let jump_seen = walk.jump_seen;
    if listing.ours && !jump_seen {
        findings.push(Finding {
            kind: FindingKind::JumpMissing,
            location: format!("{} nat POSTROUTING", listing.command),
            evidence: format!("no rule jumps to {chain}"),
            problem: format!(
                "POSTROUTING never reaches ip-masq's chain {chain}: nothing decides between keeping the source and masquerading"
            ),
            fix: "Check that the agent runs and read its log (`kubectl -n kube-system logs ds/ip-masq`); it puts the jump back at its next resync or readiness probe. `ip-masq status` shows what is missing.".into(),
        });
    }
    for (rule, position, path) in walk.found {
        let position = match position {
            Position::NoJump if jump_seen => Position::BeforeJump,
            other => other,
        };
        findings.push(vendors::classify(listing, rule, position, &path, chain));
    }
}

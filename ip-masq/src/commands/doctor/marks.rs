//! Rules that write or match the keep-source mark bit, in any table of
//! any backend.

use crate::commands::doctor::{Finding, FindingKind, Inputs};
use crate::kernel::iptables::backends::Listing;
use crate::kernel::iptables::save::{Dump, Rule};

/// Parses `0x2000`, `8192` or `0x2000/0x2000` into (value, mask).
pub(super) fn parse_mark_spec(text: &str) -> Option<(u32, u32)> {
    let number = |part: &str| {
        part.strip_prefix("0x").map_or_else(
            || part.parse().ok(),
            |hex| u32::from_str_radix(hex, 16).ok(),
        )
    };
    match text.split_once('/') {
        Some((value, mask)) => Some((number(value)?, number(mask)?)),
        None => Some((number(text)?, u32::MAX)),
    }
}

fn mark_text(mark: u32) -> String {
    format!("{mark:#x}")
}

/// Bits of `skb->mark` that a MARK or CONNMARK target may change.
fn written_bits(rule: &Rule) -> Option<u32> {
    let (target, _) = rule.target()?;
    let options = rule.target_options();
    let value_of = |name: &str| {
        let position = options.iter().position(|word| word == name)?;
        parse_mark_spec(options.get(position + 1)?)
    };
    match target {
        "MARK" => {
            if let Some((value, mask)) = value_of("--set-xmark") {
                Some(value | mask)
            } else if let Some((_, mask)) = value_of("--set-mark") {
                Some(mask)
            } else if let Some((value, _)) = value_of("--or-mark") {
                Some(value)
            } else if let Some((value, _)) = value_of("--and-mark") {
                Some(!value)
            } else if let Some((value, _)) = value_of("--xor-mark") {
                Some(value)
            } else {
                None
            }
        }
        "CONNMARK" if options.iter().any(|word| word == "--restore-mark") => {
            // The packet mark is rebuilt from the connection mark in nfmask.
            Some(value_of("--nfmask").map_or(u32::MAX, |(value, _)| value))
        }
        _ => None,
    }
}

/// The mark conflicts of one listing.
pub(super) fn findings(
    inputs: &Inputs,
    listing: &Listing,
    dump: &Dump,
    mark: u32,
    findings: &mut Vec<Finding>,
) {
    let command = &listing.command;
    for rule in &dump.rules {
        // Our chain uses the bit by design.
        if listing.ours && rule.table == "nat" && rule.chain == inputs.chain {
            continue;
        }
        let location = format!("{command} {} {}", rule.table, rule.chain);
        if let Some(bits) = written_bits(rule)
            && bits & mark != 0
        {
            findings.push(Finding {
                kind: FindingKind::MarkConflict,
                location: location.clone(),
                evidence: rule.text.clone(),
                problem: format!(
                    "this rule writes mark bit(s) {} that ip-masq uses for keep-source ({}): packets can lose the keep-source decision, or gain it without the classifier",
                    mark_text(bits & mark),
                    mark_text(mark)
                ),
                fix: "Give ip-masq a bit nobody else uses (`--mark`, e.g. 0x800; the README lists the bits other components use), or change that component's mark mask so it leaves the bit alone.".into(),
            });
            continue;
        }
        if let Some((spec, _)) = rule.option("--mark")
            && rule.words.iter().any(|w| w == "mark")
            && let Some((_, mask)) = parse_mark_spec(spec)
            && mask & mark != 0
        {
            findings.push(Finding {
                kind: FindingKind::MarkConflict,
                location,
                evidence: rule.text.clone(),
                problem: format!(
                    "this rule matches on mark bit(s) {} that ip-masq sets for keep-source ({}): its decision changes for every packet ip-masq keeps",
                    mark_text(mask & mark),
                    mark_text(mark)
                ),
                fix: "Give ip-masq a bit nobody else uses (`--mark`, e.g. 0x800), or narrow that rule's mark mask.".into(),
            });
        }
    }
}

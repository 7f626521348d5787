//! `ip-masq doctor`: finds what defeats non-masquerade on a node and says
//! how to fix each finding.
//!
//! The analysis is pure: it reads `iptables-save` text and what tcx reports
//! per interface, and returns findings. Only [`run`] touches the node, and
//! only to read: `*-save` lists tables that exist without creating any.
//!
//! What it looks for:
//! - MASQUERADE or SNAT rules that nat POSTROUTING reaches before our jump
//!   (so we never decide), or after it (our chain RETURNs keep-source
//!   packets to POSTROUTING, where the later rule still masquerades them),
//!   named specifically for Docker, flannel and kubelet;
//! - any such rule in the other iptables backend, whose hooks run too;
//! - rules that write or match our mark bit;
//! - tcx programs sharing a pod interface with the classifier, and selected
//!   pod interfaces without it;
//! - our own jump missing.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use serde::Serialize;

use crate::commands::status;
use crate::commands::status::InterfaceProbe;
use crate::commands::status::Report;
use crate::commands::status::StatusError;
use crate::commands::status::Target;
use crate::model::Family;
use crate::options::InstalledOptions;

/// What kind of problem a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// POSTROUTING has no jump to our chain.
    JumpMissing,
    /// Docker's `-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE`.
    DockerMasquerade,
    /// flannel's FLANNEL-POSTRTG chain (or its older "flanneld masq" rules).
    FlannelMasquerade,
    /// kubelet's `--non-masquerade-cidr` rule.
    KubeletMasquerade,
    /// Any other MASQUERADE or SNAT that pod traffic can reach.
    OtherSnat,
    /// A rule that writes or matches our mark bit.
    MarkConflict,
    /// Another program at tcx ingress of an interface the classifier is on.
    ForeignProgram,
    /// A selected pod interface without the classifier.
    InterfaceWithoutProgram,
}

/// One problem, where it is, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// Backend, table and chain, or the interface.
    pub location: String,
    /// The rule as `iptables-save` prints it, or the program.
    pub evidence: String,
    pub problem: String,
    pub fix: String,
}

/// One `iptables-save` dump of one family from one backend.
#[derive(Clone, Debug)]
pub struct Listing {
    /// e.g. `iptables-nft` or `ip6tables-legacy`, for messages and fixes.
    pub command: String,
    pub family: Family,
    /// Whether this is the backend the agent installs its rules with.
    pub ours: bool,
    /// The `iptables-save` text.
    pub text: String,
}

/// Everything the analysis looks at.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub chain: String,
    /// The keep-source mark, or `None` when the agent does not use one.
    pub mark: Option<u32>,
    pub listings: Vec<Listing>,
    /// Interfaces, when the agent attaches to interfaces.
    pub interfaces: Option<Vec<InterfaceProbe>>,
    /// Ids of the programs our pinned links run.
    pub our_programs: BTreeSet<u32>,
}

/// A rule split into words the way a shell would split `iptables-save` output.
#[derive(Clone, Debug)]
struct Rule {
    table: String,
    chain: String,
    text: String,
    words: Vec<String>,
}

impl Rule {
    /// The `-j`/`-g` target and whether it is a goto.
    fn target(&self) -> Option<(&str, bool)> {
        let position = self
            .words
            .iter()
            .position(|word| word == "-j" || word == "-g")?;
        let target = self.words.get(position + 1)?;
        Some((target, self.words[position] == "-g"))
    }

    /// Words after the target name: the target's options.
    fn target_options(&self) -> &[String] {
        match self
            .words
            .iter()
            .position(|word| word == "-j" || word == "-g")
        {
            Some(position) => self.words.get(position + 2..).unwrap_or(&[]),
            None => &[],
        }
    }

    /// Words before the target, without `-A CHAIN` and comments.
    fn matches(&self) -> Vec<&str> {
        let end = self
            .words
            .iter()
            .position(|word| word == "-j" || word == "-g")
            .unwrap_or(self.words.len());
        let mut out = Vec::new();
        let mut index = 2; // skip `-A CHAIN`
        while index < end {
            let word = self.words[index].as_str();
            if word == "-m" && self.words.get(index + 1).map(String::as_str) == Some("comment") {
                index += 2;
                continue;
            }
            if word == "--comment" {
                index += 2;
                continue;
            }
            out.push(word);
            index += 1;
        }
        out
    }

    fn comment(&self) -> Option<&str> {
        let position = self.words.iter().position(|word| word == "--comment")?;
        self.words.get(position + 1).map(String::as_str)
    }

    /// The value of `option`, and whether it is negated (`! option value`).
    fn option(&self, option: &str) -> Option<(&str, bool)> {
        let position = self.words.iter().position(|word| word == option)?;
        let negated = position > 0 && self.words[position - 1] == "!";
        Some((self.words.get(position + 1)?.as_str(), negated))
    }
}

/// Splits a line into words: whitespace separates, double quotes group,
/// a backslash escapes the next character.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                    in_word = true;
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

/// The tables of one `iptables-save` dump: chain names and rules in order.
#[derive(Debug, Default)]
struct Tables {
    chains: BTreeMap<String, BTreeSet<String>>,
    rules: Vec<Rule>,
}

impl Tables {
    fn parse(text: &str) -> Self {
        let mut tables = Self::default();
        let mut table = String::new();
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix('*') {
                table = name.to_owned();
                tables.chains.entry(table.clone()).or_default();
            } else if let Some(declaration) = line.strip_prefix(':') {
                if let Some(chain) = declaration.split_whitespace().next() {
                    tables
                        .chains
                        .entry(table.clone())
                        .or_default()
                        .insert(chain.to_owned());
                }
            } else if line.starts_with("-A ") {
                let words = split_words(line);
                if let Some(chain) = words.get(1) {
                    tables.rules.push(Rule {
                        table: table.clone(),
                        chain: chain.clone(),
                        text: line.to_owned(),
                        words,
                    });
                }
            }
        }
        tables
    }

    fn chain_rules(&self, table: &str, chain: &str) -> Vec<&Rule> {
        self.rules
            .iter()
            .filter(|rule| rule.table == table && rule.chain == chain)
            .collect()
    }

    fn is_chain(&self, table: &str, chain: &str) -> bool {
        self.chains
            .get(table)
            .is_some_and(|chains| chains.contains(chain))
    }
}

/// Parses `0x2000`, `8192` or `0x2000/0x2000` into (value, mask).
fn parse_mark_spec(text: &str) -> Option<(u32, u32)> {
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

/// Where a SNAT rule sits relative to our jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    BeforeJump,
    AfterJump,
    NoJump,
    OtherBackend,
}

struct Walk<'a> {
    tables: &'a Tables,
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
        let rules: Vec<&'a Rule> = self.tables.chain_rules("nat", chain);
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
                _ if self.tables.is_chain("nat", target) => {
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

fn mark_text(mark: u32) -> String {
    format!("{mark:#x}")
}

/// The findings for `inputs`. Pure.
pub fn analyze(inputs: &Inputs) -> Vec<Finding> {
    let mut findings = Vec::new();
    for listing in &inputs.listings {
        let tables = Tables::parse(&listing.text);
        snat_findings(inputs, listing, &tables, &mut findings);
        if let Some(mark) = inputs.mark {
            mark_findings(inputs, listing, &tables, mark, &mut findings);
        }
    }
    if let Some(interfaces) = &inputs.interfaces {
        interface_findings(interfaces, &inputs.our_programs, &mut findings);
    }
    findings
}

fn snat_findings(inputs: &Inputs, listing: &Listing, tables: &Tables, findings: &mut Vec<Finding>) {
    let chain = inputs.chain.as_str();
    let mut walk = Walk {
        tables,
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
        findings.push(classify_snat(listing, rule, position, &path, chain));
    }
}

fn classify_snat(
    listing: &Listing,
    rule: &Rule,
    position: Position,
    path: &[String],
    chain: &str,
) -> Finding {
    let command = &listing.command;
    let location = format!("{command} nat {}", path.join(" → "));
    let target = rule.target().map_or("MASQUERADE", |(target, _)| target);
    let when = match position {
        Position::BeforeJump => format!(
            "POSTROUTING reaches it before ip-masq's jump to {chain}, so ip-masq never decides for the packets it matches"
        ),
        Position::AfterJump => format!(
            "ip-masq's chain {chain} RETURNs keep-source packets to POSTROUTING, where this rule then applies {target} to them anyway"
        ),
        Position::NoJump => "ip-masq's jump is missing, so this rule decides alone".to_owned(),
        Position::OtherBackend => format!(
            "{command}'s tables are hooked into the kernel too, next to the ones ip-masq uses, so this rule applies {target} whatever ip-masq decides"
        ),
    };
    let comment = rule.comment().unwrap_or_default();
    let out_interface = rule.option("-o");
    let delete = format!(
        "{command} -t nat -D {}",
        rule.text.trim_start_matches("-A ").trim()
    );
    if target == "MASQUERADE"
        && rule.option("-s").is_some_and(|(_, negated)| !negated)
        && matches!(out_interface, Some((name, true)) if name == "docker0" || name.starts_with("br-"))
    {
        return Finding {
            kind: FindingKind::DockerMasquerade,
            location,
            evidence: rule.text.clone(),
            problem: format!("Docker masquerades its bridge network itself: {when}."),
            fix: format!(
                "Start dockerd with --ip-masq=false (or \"ip-masq\": false in /etc/docker/daemon.json) and restart it, then delete the rule if Docker left it: {delete}"
            ),
        };
    }
    if path.iter().any(|chain| chain == "FLANNEL-POSTRTG") || comment.contains("flanneld masq") {
        return Finding {
            kind: FindingKind::FlannelMasquerade,
            location,
            evidence: rule.text.clone(),
            problem: format!(
                "flanneld masquerades traffic leaving the pod network itself: {when}."
            ),
            fix: format!(
                "Drop --ip-masq from flanneld's arguments (kube-flannel DaemonSet: the container args), or set ipmasq=false where mk-docker-opts.sh writes Docker's options, and restart flanneld. Then remove what it left: {command} -t nat -D POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG; {command} -t nat -F FLANNEL-POSTRTG; {command} -t nat -X FLANNEL-POSTRTG"
            ),
        };
    }
    if comment.contains("kubenet: SNAT for outbound traffic from cluster")
        || (comment.contains("kubelet") && rule.option("-d").is_some_and(|(_, negated)| negated))
    {
        let cidr = rule.option("-d").map_or("?", |(cidr, _)| cidr);
        return Finding {
            kind: FindingKind::KubeletMasquerade,
            location,
            evidence: rule.text.clone(),
            problem: format!(
                "kubelet's --non-masquerade-cidr={cidr} masquerades every destination outside {cidr}: {when}."
            ),
            fix: format!(
                "Set kubelet's --non-masquerade-cidr=0.0.0.0/0 (which turns the rule off), restart kubelet, then delete the rule: {delete}"
            ),
        };
    }
    let owner = if path.iter().any(|chain| chain.starts_with("cali-")) {
        " It is Calico's natOutgoing: set `natOutgoing: false` on the IPPool (calicoctl patch ippool NAME -p '{\"spec\":{\"natOutgoing\":false}}') and let ip-masq decide."
    } else if position == Position::OtherBackend && path.iter().any(|c| c == chain) {
        " It is a left-over ip-masq-agent or ip-masq chain on the other iptables backend: delete its jump and the chain there."
    } else {
        ""
    };
    Finding {
        kind: FindingKind::OtherSnat,
        location,
        evidence: rule.text.clone(),
        problem: format!("{target} rule outside ip-masq's chain: {when}."),
        fix: format!(
            "Find the component that owns it (its comment or chain name) and turn its masquerading off, or make it RETURN for the non-masquerade destinations; to remove it by hand: {delete}.{owner}"
        ),
    }
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

fn mark_findings(
    inputs: &Inputs,
    listing: &Listing,
    tables: &Tables,
    mark: u32,
    findings: &mut Vec<Finding>,
) {
    let command = &listing.command;
    for rule in &tables.rules {
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

fn interface_findings(
    interfaces: &[InterfaceProbe],
    ours: &BTreeSet<u32>,
    findings: &mut Vec<Finding>,
) {
    for interface in interfaces {
        let our_position = interface
            .programs
            .iter()
            .position(|program| ours.contains(&program.id));
        match our_position {
            None if interface.selected => findings.push(Finding {
                kind: FindingKind::InterfaceWithoutProgram,
                location: format!("interface {}", interface.name),
                evidence: if interface.programs.is_empty() {
                    "no program at tcx ingress".into()
                } else {
                    format!(
                        "tcx ingress runs only {}",
                        interface
                            .programs
                            .iter()
                            .map(|p| format!("{} (id {})", p.name, p.id))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                problem: "a pod interface the agent should cover has no ip-masq classifier: its pods' traffic is masqueraded whatever the destination".into(),
                fix: "Check that the agent runs and read its log: it attaches on the interface's link event and at every resync. `kubectl -n kube-system rollout restart ds/ip-masq` forces a fresh scan.".into(),
            }),
            None => {}
            Some(position) => {
                for (index, program) in interface.programs.iter().enumerate() {
                    if ours.contains(&program.id) {
                        continue;
                    }
                    let before = index < position;
                    findings.push(Finding {
                        kind: FindingKind::ForeignProgram,
                        location: format!("interface {}", interface.name),
                        evidence: format!(
                            "tcx ingress program {} (id {}) runs {} ip-masq's classifier",
                            program.name,
                            program.id,
                            if before { "before" } else { "after" }
                        ),
                        problem: if before {
                            "a program ahead of the classifier can end the tcx chain (any verdict but 'next'), and then the classifier never marks the packet".into()
                        } else {
                            "a program after the classifier can rewrite skb->mark and clear the keep-source bit".into()
                        },
                        fix: "Find its owner (`bpftool prog show id ID`, `bpftool net show dev IFACE`). Another ip-masq on a different pin path or a CNI's own masquerading must be turned off; a program that must stay has to return TCX_NEXT and keep the mark bit.".into(),
                    });
                }
            }
        }
    }
}

/// Renders findings for people.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        out.push_str("no problems found: nothing on this node defeats non-masquerade\n");
        return out;
    }
    let _ = writeln!(out, "{} problem(s) found\n", findings.len());
    for (index, finding) in findings.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}. [{}] {}",
            index + 1,
            kind_name(finding.kind),
            finding.location
        );
        let _ = writeln!(out, "   rule:    {}", finding.evidence);
        let _ = writeln!(out, "   problem: {}", finding.problem);
        let _ = writeln!(out, "   fix:     {}\n", finding.fix);
    }
    out
}

fn kind_name(kind: FindingKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `ip-masq doctor`: gathers the node's rules and interfaces and reports
/// the findings; the report fails when there is any.
///
/// # Errors
/// Fails when iptables or the kernel cannot be read at all.
pub fn run(args: &InstalledOptions) -> Result<Report, StatusError> {
    let target = Target::resolve(args)?;
    let inputs = gather(&target)?;
    let findings = analyze(&inputs);
    let output = if args.json {
        serde_json::to_string_pretty(&serde_json::json!({ "findings": findings }))
            .expect("serialisable")
            + "\n"
    } else {
        render(&findings)
    };
    Ok(Report {
        output,
        problems: findings.len(),
    })
}

fn gather(target: &Target) -> Result<Inputs, StatusError> {
    let mut families = vec![Family::V4];
    if target.ipv6 {
        families.push(Family::V6);
    }
    let mut listings = Vec::new();
    for family in families {
        listings.extend(status::save_listings(family)?);
    }
    let interfaces = if target.attaches {
        Some(status::probe_interfaces(&target.selector)?)
    } else {
        None
    };
    Ok(Inputs {
        chain: target.chain.clone(),
        mark: target.attaches.then_some(target.mark),
        listings,
        interfaces,
        our_programs: status::our_program_ids(&target.pin_dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::TcxProgram;

    const JUMP: &str = "-A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT";
    const OUR_CHAIN: &str = "-A IP-MASQ-AGENT -m comment --comment \"ip-masq: destination is non-masquerade (mark set by the eBPF classifier)\" -m mark --mark 0x2000/0x2000 -j RETURN\n-A IP-MASQ-AGENT -m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE --random-fully";

    /// kube-proxy's POSTROUTING rules: a masquerade gated by its own mark.
    const KUBE_PROXY: &str = "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000";

    fn save(nat_rules: &[&str], extra_chains: &[&str], other_tables: &str) -> String {
        let mut text = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:IP-MASQ-AGENT - [0:0]\n",
        );
        for chain in ["KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
            .iter()
            .chain(extra_chains)
        {
            text.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in nat_rules {
            text.push_str(rule);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        text.push_str(other_tables);
        text
    }

    fn inputs(text: String) -> Inputs {
        Inputs {
            chain: "IP-MASQ-AGENT".into(),
            mark: Some(0x2000),
            listings: vec![Listing {
                command: "iptables-nft".into(),
                family: Family::V4,
                ours: true,
                text,
            }],
            interfaces: None,
            our_programs: BTreeSet::new(),
        }
    }

    fn kinds(findings: &[Finding]) -> Vec<FindingKind> {
        findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn clean_node_with_kube_proxy_has_no_findings() {
        let text = save(&[KUBE_PROXY, JUMP, OUR_CHAIN], &[], "");
        assert_eq!(analyze(&inputs(text)), []);
    }

    #[test]
    fn missing_jump_is_reported() {
        let text = save(&[KUBE_PROXY, OUR_CHAIN], &[], "");
        assert_eq!(kinds(&analyze(&inputs(text))), [FindingKind::JumpMissing]);
    }

    #[test]
    fn docker_rule_before_the_jump() {
        let docker = "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE";
        let text = save(&[KUBE_PROXY, docker, JUMP, OUR_CHAIN], &[], "");
        let findings = analyze(&inputs(text));
        assert_eq!(kinds(&findings), [FindingKind::DockerMasquerade]);
        assert!(
            findings[0].fix.contains("--ip-masq=false"),
            "{:?}",
            findings[0]
        );
        assert!(findings[0].problem.contains("before ip-masq's jump"));
        assert!(findings[0].fix.contains(
            "iptables-nft -t nat -D POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"
        ));
    }

    #[test]
    fn docker_user_network_after_the_jump_still_counts() {
        let docker = "-A POSTROUTING -s 172.18.0.0/16 ! -o br-0123abcd -j MASQUERADE";
        let findings = analyze(&inputs(save(&[JUMP, OUR_CHAIN, docker], &[], "")));
        assert_eq!(kinds(&findings), [FindingKind::DockerMasquerade]);
        assert!(findings[0].problem.contains("RETURNs keep-source packets"));
    }

    #[test]
    fn flannel_chain_is_followed() {
        let flannel = [
            "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG",
            "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN",
            "-A FLANNEL-POSTRTG -s 10.244.0.0/24 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN",
            "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully",
        ];
        let mut rules = flannel.to_vec();
        rules.extend([JUMP, OUR_CHAIN]);
        let findings = analyze(&inputs(save(&rules, &["FLANNEL-POSTRTG"], "")));
        assert_eq!(kinds(&findings), [FindingKind::FlannelMasquerade]);
        assert_eq!(
            findings[0].location,
            "iptables-nft nat POSTROUTING → FLANNEL-POSTRTG"
        );
        assert!(findings[0].fix.contains("--ip-masq"));
        assert!(findings[0].fix.contains("ipmasq=false"));
    }

    #[test]
    fn old_flannel_rules_by_comment() {
        let rule = "-A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE";
        let findings = analyze(&inputs(save(&[rule, JUMP, OUR_CHAIN], &[], "")));
        assert_eq!(kinds(&findings), [FindingKind::FlannelMasquerade]);
    }

    #[test]
    fn kubelet_non_masquerade_cidr_rule() {
        let rule = "-A POSTROUTING ! -d 10.0.0.0/8 -m comment --comment \"kubenet: SNAT for outbound traffic from cluster\" -m addrtype ! --dst-type LOCAL -j MASQUERADE";
        let findings = analyze(&inputs(save(&[rule, JUMP, OUR_CHAIN], &[], "")));
        assert_eq!(kinds(&findings), [FindingKind::KubeletMasquerade]);
        assert!(
            findings[0]
                .problem
                .contains("--non-masquerade-cidr=10.0.0.0/8")
        );
        assert!(findings[0].fix.contains("--non-masquerade-cidr=0.0.0.0/0"));
    }

    #[test]
    fn other_snat_in_a_user_chain_and_calico_hint() {
        let rules = [
            "-A POSTROUTING -m comment --comment \"cali:O3lYWMrLQYEMJtB5\" -j cali-POSTROUTING",
            "-A cali-POSTROUTING -j cali-nat-outgoing",
            "-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully",
            JUMP,
            OUR_CHAIN,
            "-A POSTROUTING -o eth1 -j SNAT --to-source 192.0.2.9",
        ];
        let findings = analyze(&inputs(save(
            &rules,
            &["cali-POSTROUTING", "cali-nat-outgoing"],
            "",
        )));
        assert_eq!(
            kinds(&findings),
            [FindingKind::OtherSnat, FindingKind::OtherSnat]
        );
        assert!(findings[0].fix.contains("natOutgoing"), "{:?}", findings[0]);
        assert!(findings[0].problem.contains("before"));
        assert!(findings[1].problem.contains("SNAT"));
        assert!(findings[1].problem.contains("RETURNs keep-source"));
    }

    #[test]
    fn unconditional_return_and_gates_stop_the_walk() {
        let rules = [
            "-A POSTROUTING -j SKIP",
            "-A SKIP -j RETURN",
            "-A SKIP -j MASQUERADE",
            "-A POSTROUTING -m mark --mark 0x100/0x100 -j MASQUERADE",
            JUMP,
            OUR_CHAIN,
        ];
        assert_eq!(analyze(&inputs(save(&rules, &["SKIP"], ""))), []);
    }

    #[test]
    fn the_other_backend_is_looked_at_too() {
        let mut input = inputs(save(&[JUMP, OUR_CHAIN], &[], ""));
        input.listings.push(Listing {
            command: "iptables-legacy".into(),
            family: Family::V4,
            ours: false,
            text: "*nat\n:POSTROUTING ACCEPT [0:0]\n:IP-MASQ-AGENT - [0:0]\n-A POSTROUTING -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n-A IP-MASQ-AGENT -d 10.0.0.0/8 -j RETURN\n-A IP-MASQ-AGENT -j MASQUERADE\nCOMMIT\n".into(),
        });
        let findings = analyze(&input);
        assert_eq!(kinds(&findings), [FindingKind::OtherSnat]);
        assert!(
            findings[0]
                .location
                .starts_with("iptables-legacy nat POSTROUTING → IP-MASQ-AGENT")
        );
        assert!(findings[0].fix.contains("left-over"), "{:?}", findings[0]);
    }

    #[test]
    fn mark_writers_and_readers_of_our_bit() {
        let mangle = "*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
            -A PREROUTING -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff\n\
            -A PREROUTING -j CONNMARK --restore-mark --nfmask 0xff --ctmask 0xff\n\
            -A FORWARD -j MARK --set-xmark 0x2000/0x2000\n\
            -A FORWARD -j MARK --set-xmark 0x4000/0x4000\n\
            -A FORWARD -j MARK --set-xmark 0x0/0xffffffff\n\
            -A FORWARD -m mark --mark 0x1 -j ACCEPT\n\
            -A FORWARD -m mark --mark 0x10000/0x10000 -j ACCEPT\n\
            COMMIT\n";
        let text = save(&[KUBE_PROXY, JUMP, OUR_CHAIN], &[], mangle);
        let findings = analyze(&inputs(text));
        let evidence: Vec<&str> = findings.iter().map(|f| f.evidence.as_str()).collect();
        assert_eq!(
            evidence,
            [
                "-A PREROUTING -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
                "-A FORWARD -j MARK --set-xmark 0x2000/0x2000",
                "-A FORWARD -j MARK --set-xmark 0x0/0xffffffff",
                "-A FORWARD -m mark --mark 0x1 -j ACCEPT",
            ]
        );
        assert!(findings.iter().all(|f| f.kind == FindingKind::MarkConflict));
        assert!(findings[0].location == "iptables-nft mangle PREROUTING");
    }

    #[test]
    fn no_mark_checks_without_a_mark() {
        let mangle = "*mangle\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j MARK --set-xmark 0x2000/0x2000\nCOMMIT\n";
        let mut input = inputs(save(&[JUMP, OUR_CHAIN], &[], mangle));
        input.mark = None;
        assert_eq!(analyze(&input), []);
    }

    #[test]
    fn interfaces_without_the_classifier_and_foreign_programs() {
        let program = |id, name: &str| TcxProgram {
            id,
            name: name.into(),
        };
        let mut input = inputs(save(&[JUMP, OUR_CHAIN], &[], ""));
        input.our_programs = BTreeSet::from([7]);
        input.interfaces = Some(vec![
            InterfaceProbe {
                name: "veth1".into(),
                ifindex: 3,
                selected: true,
                programs: vec![program(7, "ip_masq_classify")],
            },
            InterfaceProbe {
                name: "veth2".into(),
                ifindex: 4,
                selected: true,
                programs: vec![],
            },
            InterfaceProbe {
                name: "veth3".into(),
                ifindex: 5,
                selected: true,
                programs: vec![
                    program(9, "ip_masq_classify"),
                    program(7, "ip_masq_classify"),
                    program(11, "cil_from_container"),
                ],
            },
            InterfaceProbe {
                name: "eth0".into(),
                ifindex: 2,
                selected: false,
                programs: vec![program(12, "other")],
            },
        ]);
        let findings = analyze(&input);
        assert_eq!(
            kinds(&findings),
            [
                FindingKind::InterfaceWithoutProgram,
                FindingKind::ForeignProgram,
                FindingKind::ForeignProgram
            ]
        );
        assert_eq!(findings[0].location, "interface veth2");
        assert!(findings[1].evidence.contains("id 9) runs before"));
        assert!(findings[2].evidence.contains("id 11) runs after"));
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words(r#"-A X -m comment --comment "a \"b\" c" -j RETURN"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "RETURN"
            ]
        );
    }

    #[test]
    fn mark_specs() {
        assert_eq!(parse_mark_spec("0x2000/0x2000"), Some((0x2000, 0x2000)));
        assert_eq!(parse_mark_spec("0x1"), Some((1, u32::MAX)));
        assert_eq!(parse_mark_spec("16"), Some((16, u32::MAX)));
        assert_eq!(parse_mark_spec("zz"), None);
    }

    #[test]
    fn render_lists_each_finding_with_its_fix() {
        let text = save(
            &[
                "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
                JUMP,
                OUR_CHAIN,
            ],
            &[],
            "",
        );
        let rendered = render(&analyze(&inputs(text)));
        assert!(rendered.starts_with("1 problem(s) found"), "{rendered}");
        assert!(rendered.contains("[docker-masquerade] iptables-nft nat POSTROUTING"));
        assert!(rendered.contains("fix:     Start dockerd with --ip-masq=false"));
        assert_eq!(
            render(&[]),
            "no problems found: nothing on this node defeats non-masquerade\n"
        );
    }
}

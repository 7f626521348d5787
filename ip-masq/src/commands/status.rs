//! `ip-masq status`: what is installed on this node, read back from the
//! kernel (pins, tcx, iptables) and from the agent's state file.
//!
//! Also home to the read-only probes that `doctor` shares: iptables dumps
//! per backend, tcx programs per interface, our pinned links. The decisions
//! on what they show (rules in order, agent running, problems) are pure
//! functions with unit tests.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use aya::programs::{
    SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
};
use ip_masq_common::{MAP_NON_MASQ_V4, MAP_NON_MASQ_V6, PROGRAM_CLASSIFIER};
use serde::Serialize;
use thiserror::Error;

use crate::error::error_chain;
use crate::kernel::datapath;
use crate::kernel::netlink;
use crate::kernel::netlink::PatternError;
use crate::kernel::netlink::Selector;
use crate::model::Family;
use crate::options::InstalledOptions;
use crate::serve::state;
use crate::serve::state::AgentStatus;
use crate::serve::state::ReloadRecord;
use crate::serve::state::ReloadResult;

/// Errors of `status` and `doctor`.
#[derive(Debug, Error)]
pub enum StatusError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed: {stderr}")]
    Failed { program: String, stderr: String },
    #[error("cannot list interfaces")]
    Interfaces(#[from] netlink::InterfacesError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),
}

/// A command's text output and how many problems it found; exit code 1
/// when there is any.
#[derive(Debug)]
pub struct Report {
    pub output: String,
    pub problems: usize,
}

impl Report {
    /// Prints the output and returns the exit code.
    pub fn print(self) -> ExitCode {
        print!("{}", self.output);
        if self.problems == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// The agent installation a command looks at: flags, else the state file,
/// else defaults.
#[derive(Debug)]
pub struct Target {
    pub pin_dir: PathBuf,
    pub state_path: PathBuf,
    pub state: Option<AgentStatus>,
    pub chain: String,
    pub mark: u32,
    pub ipv6: bool,
    pub selector: Selector,
    /// Whether the agent attaches the classifier to interfaces (tc mode).
    pub attaches: bool,
}

impl Target {
    /// # Errors
    /// Fails when the state file is unreadable or a glob is invalid.
    pub fn resolve(args: &InstalledOptions) -> Result<Self, StatusError> {
        let state_path = state::state_file_path(&args.state_dir, &args.pin_path);
        let state = state::read_state(&state_path)?;
        let chain = args
            .masq_chain
            .clone()
            .or_else(|| state.as_ref().map(|s| s.chain.clone()))
            .unwrap_or_else(|| "IP-MASQ-AGENT".into());
        let mark = args
            .mark
            .or_else(|| state.as_ref().map(|s| s.mark))
            .unwrap_or(ip_masq_common::DEFAULT_KEEP_SOURCE_MARK);
        let globs = args
            .interfaces
            .clone()
            .or_else(|| state.as_ref().and_then(|s| s.interfaces_selector.clone()));
        Ok(Self {
            pin_dir: args.pin_path.clone(),
            selector: Selector::parse(globs.as_deref())?,
            ipv6: args.enable_ipv6 || state.as_ref().is_some_and(|s| s.ipv6),
            attaches: state.as_ref().is_none_or(|s| s.attaches_to_interfaces),
            state_path,
            state,
            chain,
            mark,
        })
    }
}

/// A program at tcx ingress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TcxProgram {
    pub id: u32,
    pub name: String,
}

/// An interface and the programs at its tcx ingress, in chain order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfaceProbe {
    pub name: String,
    pub ifindex: u32,
    /// Whether the agent's selector picks it.
    pub selected: bool,
    pub programs: Vec<TcxProgram>,
}

/// Lists every interface of this network namespace with its tcx ingress
/// programs.
///
/// # Errors
/// Fails when rtnetlink cannot be reached.
pub fn probe_interfaces(selector: &Selector) -> Result<Vec<InterfaceProbe>, StatusError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StatusError::Runtime)?;
    let present = runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(netlink::InterfacesError::Socket)?;
        tokio::spawn(connection);
        netlink::list(&handle).await
    })?;
    Ok(present
        .into_iter()
        .map(|interface| {
            // An interface can vanish between the dump and the query: it
            // then simply shows no programs.
            let programs = SchedClassifier::query_tcx(&interface.name, TcAttachType::Ingress)
                .map(|(_, programs)| {
                    programs
                        .iter()
                        .map(|p| TcxProgram {
                            id: p.id(),
                            name: p.name_as_str().unwrap_or_default().to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            InterfaceProbe {
                selected: selector.selects(&interface),
                name: interface.name,
                ifindex: interface.index,
                programs,
            }
        })
        .collect())
}

/// A link pinned under the pin directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinnedLinkView {
    pub ifindex: u32,
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
    pub error: Option<String>,
}

/// The links pinned under `pin_dir` and the programs they run.
pub fn pinned_links(pin_dir: &Path) -> Vec<PinnedLinkView> {
    let Ok(indexes) = datapath::pinned_ifindexes(pin_dir) else {
        return Vec::new();
    };
    indexes
        .into_iter()
        .map(|ifindex| {
            let info = PinnedLink::from_pin(datapath::link_pin_path(pin_dir, ifindex))
                .map_err(|err| error_chain(&err))
                .and_then(|link| FdLink::from(link).info().map_err(|err| error_chain(&err)));
            match info {
                Ok(info) => PinnedLinkView {
                    ifindex,
                    link_id: Some(info.id()),
                    program_id: Some(info.program_id()),
                    error: None,
                },
                Err(error) => PinnedLinkView {
                    ifindex,
                    link_id: None,
                    program_id: None,
                    error: Some(error),
                },
            }
        })
        .collect()
}

/// Ids of the programs our pinned links run.
pub fn our_program_ids(pin_dir: &Path) -> BTreeSet<u32> {
    pinned_links(pin_dir)
        .iter()
        .filter_map(|link| link.program_id)
        .collect()
}

/// The iptables commands of one family: the `-nft` and `-legacy` variants
/// where both exist (both backends' hooks run), else the plain command.
fn backends(family: Family) -> Vec<String> {
    let base = match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    let variants: Vec<String> = ["nft", "legacy"]
        .iter()
        .map(|variant| format!("{base}-{variant}"))
        .filter(|command| {
            Command::new(format!("{command}-save"))
                .arg("--version")
                .output()
                .is_ok_and(|output| output.status.success())
        })
        .collect();
    if variants.is_empty() {
        vec![base.to_owned()]
    } else {
        variants
    }
}

/// Which backend the plain `iptables` uses, from its `--version`.
fn default_backend(family: Family) -> Option<&'static str> {
    let program = match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    let output = Command::new(program).arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&output.stdout);
    if version.contains("nf_tables") {
        Some("nft")
    } else if version.contains("legacy") {
        Some("legacy")
    } else {
        None
    }
}

/// `iptables-save` dumps of every backend of `family`. Saving lists only
/// the tables that exist, so it never creates one.
///
/// # Errors
/// Fails when the backend the agent uses cannot be dumped.
pub fn save_listings(family: Family) -> Result<Vec<crate::commands::doctor::Listing>, StatusError> {
    let ours_suffix = default_backend(family);
    let mut listings = Vec::new();
    for command in backends(family) {
        let ours = match ours_suffix {
            Some(suffix) => command.ends_with(suffix),
            None => !command.contains('-'),
        };
        let program = format!("{command}-save");
        match save(&program) {
            Ok(text) => listings.push(crate::commands::doctor::Listing {
                command,
                family,
                ours,
                text,
            }),
            Err(err) if ours => return Err(err),
            // The other backend may lack kernel support; nothing runs there then.
            Err(err) => tracing::debug!(error = %error_chain(&err), "skipping {command}"),
        }
    }
    Ok(listings)
}

fn save(program: &str) -> Result<String, StatusError> {
    let output = Command::new(program)
        .output()
        .map_err(|source| StatusError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(StatusError::Failed {
            program: program.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The static rules of one family as found in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RulesView {
    pub family: String,
    pub chain_present: bool,
    pub chain_rules: Vec<String>,
    /// RETURN rules first, then only MASQUERADE rules.
    pub in_order: bool,
    pub jumps: usize,
    /// 1-based position of the first jump among POSTROUTING's rules.
    pub jump_position: Option<usize>,
    pub postrouting_rules: usize,
    pub error: Option<String>,
}

/// Reads our chain and jump out of an `iptables-save` dump. Pure.
pub fn rules_view(family: &str, save_text: &str, chain: &str) -> RulesView {
    let mut view = RulesView {
        family: family.to_owned(),
        ..RulesView::default()
    };
    let mut table = "";
    let rule_prefix = format!("-A {chain} ");
    let target = format!("-j {chain}");
    for line in save_text.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix('*') {
            table = name;
            continue;
        }
        if table != "nat" {
            continue;
        }
        if line
            .strip_prefix(':')
            .and_then(|d| d.split_whitespace().next())
            == Some(chain)
        {
            view.chain_present = true;
        } else if line.starts_with(&rule_prefix) {
            view.chain_rules.push(line.to_owned());
        } else if line.starts_with("-A POSTROUTING ") {
            view.postrouting_rules += 1;
            if line.ends_with(&target) || line.contains(&format!("{target} ")) {
                view.jumps += 1;
                view.jump_position.get_or_insert(view.postrouting_rules);
            }
        }
    }
    let targets: Vec<&str> = view
        .chain_rules
        .iter()
        .filter_map(|rule| rule.split(" -j ").nth(1)?.split_whitespace().next())
        .collect();
    // RETURN rules, then MASQUERADE rules (`--to-ports` adds per-protocol
    // ones before the final catch-all), and nothing else.
    let returns = targets.iter().take_while(|t| **t == "RETURN").count();
    view.in_order = returns >= 1
        && targets.len() > returns
        && targets[returns..].iter().all(|t| *t == "MASQUERADE");
    view
}

/// Which process holds an exclusive flock on the file with this device
/// and inode, from `/proc/locks`. Pure.
pub fn lock_holder(proc_locks: &str, major: u64, minor: u64, inode: u64) -> Option<u32> {
    let wanted = format!("{major:02x}:{minor:02x}:{inode}");
    proc_locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"; blocked
        // waiters carry a "->" marker and are skipped.
        let offset = usize::from(fields.get(1) == Some(&"->"));
        let kind = *fields.get(1 + offset)?;
        let mode = *fields.get(3 + offset)?;
        let pid = fields.get(4 + offset)?.parse().ok()?;
        let file = *fields.get(5 + offset)?;
        (offset == 0 && kind == "FLOCK" && mode == "WRITE" && file == wanted).then_some(pid)
    })
}

/// The pid of the agent holding the pin directory's lock, if one runs.
fn running_agent(pin_dir: &Path) -> Option<u32> {
    let metadata = std::fs::metadata(pin_dir).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let dev = metadata.dev();
    lock_holder(
        &locks,
        libc::major(dev).into(),
        libc::minor(dev).into(),
        metadata.ino(),
    )
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProgramView {
    id: u32,
    name: String,
    interfaces: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InterfaceView {
    name: String,
    ifindex: u32,
    selected: bool,
    carries_classifier: bool,
    /// 1-based position of the classifier in the tcx chain.
    position: Option<usize>,
    programs: Vec<TcxProgram>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MapView {
    name: &'static str,
    entries: Option<usize>,
    capacity: Option<u32>,
}

/// The TC classifier's packet counters.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PacketView {
    ipv4_seen: u64,
    ipv4_keep_source: u64,
    ipv6_seen: u64,
    ipv6_keep_source: u64,
}

/// The xt_bpf socket filters' counters: new connections the nat chain's
/// xt_bpf rule judged.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionView {
    ipv4_keep_source: u64,
    ipv4_masquerade: u64,
    ipv6_keep_source: u64,
    ipv6_masquerade: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusDocument {
    pin_dir: PathBuf,
    state_file: PathBuf,
    agent_running: bool,
    agent_pid: Option<u32>,
    programs: Vec<ProgramView>,
    links: Vec<PinnedLinkView>,
    interfaces: Vec<InterfaceView>,
    rules: Vec<RulesView>,
    config_path: Option<PathBuf>,
    last_reload: Option<ReloadRecord>,
    last_successful_reload_at: Option<f64>,
    maps: Vec<MapView>,
    packets: Option<PacketView>,
    connections: Option<ConnectionView>,
    problems: Vec<String>,
}

/// `ip-masq status`.
///
/// # Errors
/// Fails when the state file is unreadable or the node cannot be queried
/// at all; missing pieces are problems in the report, not errors.
pub fn run(args: &InstalledOptions) -> Result<Report, StatusError> {
    let target = Target::resolve(args)?;
    let mut problems = Vec::new();
    let agent_pid = running_agent(&target.pin_dir);
    if agent_pid.is_none() {
        problems.push(format!(
            "no agent runs on pin directory {} (the datapath, if any, is left as it was)",
            target.pin_dir.display()
        ));
    }

    let links = pinned_links(&target.pin_dir);
    let ours: BTreeSet<u32> = links.iter().filter_map(|l| l.program_id).collect();
    let probes = probe_interfaces(&target.selector)?;
    let mut interfaces = Vec::new();
    let mut programs: Vec<ProgramView> = Vec::new();
    for probe in probes {
        let position = probe.programs.iter().position(|p| ours.contains(&p.id));
        if let Some(index) = position {
            let program = &probe.programs[index];
            match programs.iter_mut().find(|p| p.id == program.id) {
                Some(view) => view.interfaces.push(probe.name.clone()),
                None => programs.push(ProgramView {
                    id: program.id,
                    name: program.name.clone(),
                    interfaces: vec![probe.name.clone()],
                }),
            }
        }
        if target.attaches && probe.selected && position.is_none() {
            problems.push(format!("interface {} has no classifier", probe.name));
        }
        if probe.selected || position.is_some() {
            interfaces.push(InterfaceView {
                name: probe.name,
                ifindex: probe.ifindex,
                selected: probe.selected,
                carries_classifier: position.is_some(),
                position: position.map(|p| p + 1),
                programs: probe.programs,
            });
        }
    }
    for link in &links {
        if let Some(error) = &link.error {
            problems.push(format!("link pin for ifindex {}: {error}", link.ifindex));
        }
    }

    let mut rules = Vec::new();
    let mut families = vec![Family::V4];
    if target.ipv6 {
        families.push(Family::V6);
    }
    for family in families {
        let label = state::family_label(family);
        let view = match save_listings(family) {
            Ok(listings) => match listings.iter().find(|l| l.ours) {
                Some(listing) => rules_view(label, &listing.text, &target.chain),
                None => RulesView {
                    family: label.into(),
                    error: Some("no iptables backend found".into()),
                    ..RulesView::default()
                },
            },
            Err(err) => RulesView {
                family: label.into(),
                error: Some(error_chain(&err)),
                ..RulesView::default()
            },
        };
        problems.extend(rule_problems(&view, &target.chain));
        rules.push(view);
    }

    let entries = datapath::read_pinned_entries(&target.pin_dir).ok();
    let maps: Vec<MapView> = [MAP_NON_MASQ_V4, MAP_NON_MASQ_V6]
        .into_iter()
        .map(|name| MapView {
            name,
            entries: entries.as_ref().map(|entries| {
                entries
                    .iter()
                    .filter(|(prefix, _)| prefix.addr().is_ipv4() == (name == MAP_NON_MASQ_V4))
                    .count()
            }),
            capacity: aya::maps::MapInfo::from_pin(target.pin_dir.join(name))
                .ok()
                .map(|info| info.max_entries()),
        })
        .collect();
    if entries.is_none() {
        problems.push(format!("no pinned maps under {}", target.pin_dir.display()));
    }
    let packets = datapath::read_stats(&target.pin_dir)
        .ok()
        .map(|p| PacketView {
            ipv4_seen: p.v4_seen,
            ipv4_keep_source: p.v4_kept,
            ipv6_seen: p.v6_seen,
            ipv6_keep_source: p.v6_kept,
        });
    let connections = datapath::read_connection_stats(&target.pin_dir)
        .ok()
        .map(|c| ConnectionView {
            ipv4_keep_source: c.v4_keep_source,
            ipv4_masquerade: c.v4_masquerade,
            ipv6_keep_source: c.v6_keep_source,
            ipv6_masquerade: c.v6_masquerade,
        });

    if let Some(state) = &target.state {
        if let Some(ReloadRecord {
            result: ReloadResult::Rejected { error },
            ..
        }) = &state.last_reload
        {
            problems.push(format!("last config reload failed: {error}"));
        }
        if agent_pid.is_some() {
            for failure in &state.attach_failures {
                problems.push(format!(
                    "cannot attach to {}: {}",
                    failure.interface, failure.error
                ));
            }
        }
    }

    let document = StatusDocument {
        pin_dir: target.pin_dir.clone(),
        state_file: target.state_path.clone(),
        agent_running: agent_pid.is_some(),
        agent_pid,
        programs,
        links,
        interfaces,
        rules,
        config_path: target.state.as_ref().map(|s| s.config_path.clone()),
        last_reload: target.state.as_ref().and_then(|s| s.last_reload.clone()),
        last_successful_reload_at: target
            .state
            .as_ref()
            .and_then(|s| s.last_successful_reload_at),
        maps,
        packets,
        connections,
        problems,
    };
    let output = if args.json {
        serde_json::to_string_pretty(&document).expect("serialisable") + "\n"
    } else {
        render(&document, &target)
    };
    Ok(Report {
        output,
        problems: document.problems.len(),
    })
}

/// What is wrong with one family's rules. Pure.
pub fn rule_problems(view: &RulesView, chain: &str) -> Vec<String> {
    let family = &view.family;
    if let Some(error) = &view.error {
        return vec![format!("{family} rules unreadable: {error}")];
    }
    let mut problems = Vec::new();
    if !view.chain_present {
        problems.push(format!("{family} chain {chain} is missing"));
    } else if !view.in_order {
        problems.push(format!(
            "{family} chain {chain} is not RETURN rules followed by MASQUERADE rules"
        ));
    }
    match view.jumps {
        0 => problems.push(format!("{family} POSTROUTING has no jump to {chain}")),
        1 => {}
        n => problems.push(format!("{family} POSTROUTING jumps to {chain} {n} times")),
    }
    problems
}

fn format_time(unix: f64) -> String {
    let age = state::unix_now() - unix;
    format!("{unix:.0} (unix time, {age:.0}s ago)")
}

fn render(document: &StatusDocument, target: &Target) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pin directory: {}", document.pin_dir.display());
    let _ = match document.agent_pid {
        Some(pid) => writeln!(out, "agent:         running (pid {pid})"),
        None => writeln!(out, "agent:         not running"),
    };
    if document.programs.is_empty() {
        let _ = writeln!(
            out,
            "program:       {PROGRAM_CLASSIFIER} not attached anywhere"
        );
    }
    for program in &document.programs {
        let _ = writeln!(
            out,
            "program:       {} id {} on {} interface(s), {} link pin(s)",
            program.name,
            program.id,
            program.interfaces.len(),
            document.links.len()
        );
    }
    let _ = writeln!(out, "interfaces:");
    if document.interfaces.is_empty() {
        let _ = writeln!(out, "  (none selected)");
    }
    for interface in &document.interfaces {
        let others = interface.programs.len().saturating_sub(1);
        let _ = match interface.position {
            Some(position) => writeln!(
                out,
                "  {:<16} classifier at position {position} of {}{}",
                interface.name,
                interface.programs.len(),
                if others > 0 {
                    " (see `ip-masq doctor`)"
                } else {
                    ""
                }
            ),
            None => writeln!(out, "  {:<16} NO classifier", interface.name),
        };
    }
    let _ = writeln!(out, "rules:");
    for view in &document.rules {
        let problems = rule_problems(view, &target.chain);
        if problems.is_empty() {
            let _ = writeln!(
                out,
                "  {}: chain {} in order ({} rules), jump at POSTROUTING position {} of {}",
                view.family,
                target.chain,
                view.chain_rules.len(),
                view.jump_position.unwrap_or(0),
                view.postrouting_rules
            );
        }
        for problem in problems {
            let _ = writeln!(out, "  {problem}");
        }
    }
    let _ = writeln!(
        out,
        "config:        {}",
        document.config_path.as_ref().map_or_else(
            || "unknown (no state file)".into(),
            |p| p.display().to_string()
        )
    );
    let _ = match &document.last_reload {
        Some(ReloadRecord {
            at,
            result:
                ReloadResult::Applied {
                    added,
                    removed,
                    failed,
                    elapsed_ms,
                },
        }) => writeln!(
            out,
            "last reload:   applied at {}: +{added} -{removed}, {failed} failed, {elapsed_ms:.1} ms",
            format_time(*at)
        ),
        Some(ReloadRecord {
            at,
            result: ReloadResult::Rejected { error },
        }) => writeln!(
            out,
            "last reload:   REJECTED at {}: {error}",
            format_time(*at)
        ),
        None => writeln!(
            out,
            "last reload:   none recorded ({})",
            document.state_file.display()
        ),
    };
    for map in &document.maps {
        let _ = writeln!(
            out,
            "map {:<11} {} entries of {}",
            map.name,
            map.entries.map_or_else(|| "?".into(), |n| n.to_string()),
            map.capacity.map_or_else(|| "?".into(), |n| n.to_string())
        );
    }
    if let Some(packets) = &document.packets {
        let _ = writeln!(
            out,
            "packets:       IPv4 {} seen, {} keep-source; IPv6 {} seen, {} keep-source (TC classifier, every packet)",
            packets.ipv4_seen,
            packets.ipv4_keep_source,
            packets.ipv6_seen,
            packets.ipv6_keep_source
        );
    }
    if let Some(connections) = &document.connections {
        let _ = writeln!(
            out,
            "connections:   IPv4 {} keep-source, {} masquerade; IPv6 {} keep-source, {} masquerade (xt_bpf rule, new connections)",
            connections.ipv4_keep_source,
            connections.ipv4_masquerade,
            connections.ipv6_keep_source,
            connections.ipv6_masquerade
        );
    }
    if document.problems.is_empty() {
        let _ = writeln!(out, "status:        ok");
    } else {
        let _ = writeln!(out, "problems:");
        for problem in &document.problems {
            let _ = writeln!(out, "  - {problem}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j IP-MASQ-AGENT\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:IP-MASQ-AGENT - [0:0]\n:KUBE-POSTROUTING - [0:0]\n-A POSTROUTING -j KUBE-POSTROUTING\n-A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n-A IP-MASQ-AGENT -m mark --mark 0x2000/0x2000 -j RETURN\n-A IP-MASQ-AGENT -j MASQUERADE --random-fully\nCOMMIT\n";

    #[test]
    fn rules_in_place() {
        let view = rules_view("IPv4", SAVE, "IP-MASQ-AGENT");
        assert!(view.chain_present && view.in_order);
        assert_eq!(
            (view.jumps, view.jump_position, view.postrouting_rules),
            (1, Some(2), 2)
        );
        assert_eq!(view.chain_rules.len(), 2);
        assert!(rule_problems(&view, "IP-MASQ-AGENT").is_empty());
    }

    #[test]
    fn missing_chain_and_jump() {
        let text = "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
        let view = rules_view("IPv4", text, "IP-MASQ-AGENT");
        assert_eq!(
            rule_problems(&view, "IP-MASQ-AGENT"),
            [
                "IPv4 chain IP-MASQ-AGENT is missing",
                "IPv4 POSTROUTING has no jump to IP-MASQ-AGENT"
            ]
        );
    }

    #[test]
    fn rules_out_of_order_and_duplicate_jumps() {
        let text = SAVE
            .replace(
                "-A IP-MASQ-AGENT -m mark --mark 0x2000/0x2000 -j RETURN\n-A IP-MASQ-AGENT -j MASQUERADE --random-fully\n",
                "-A IP-MASQ-AGENT -j MASQUERADE --random-fully\n-A IP-MASQ-AGENT -m mark --mark 0x2000/0x2000 -j RETURN\n",
            )
            + "*nat\n-A POSTROUTING -j IP-MASQ-AGENT\nCOMMIT\n";
        let view = rules_view("IPv6", &text, "IP-MASQ-AGENT");
        assert!(!view.in_order);
        assert_eq!(view.jumps, 2);
        assert_eq!(
            rule_problems(&view, "IP-MASQ-AGENT"),
            [
                "IPv6 chain IP-MASQ-AGENT is not RETURN rules followed by MASQUERADE rules",
                "IPv6 POSTROUTING jumps to IP-MASQ-AGENT 2 times"
            ]
        );
    }

    #[test]
    fn per_protocol_masquerade_rules_are_in_order() {
        let text = SAVE.replace(
            "-A IP-MASQ-AGENT -j MASQUERADE --random-fully\n",
            "-A IP-MASQ-AGENT -p tcp -m statistic --mode random --probability 0.5 -j MASQUERADE --to-ports 1024-29999\n-A IP-MASQ-AGENT -p tcp -j MASQUERADE --to-ports 32768-65535\n-A IP-MASQ-AGENT -j MASQUERADE --random-fully\n",
        );
        let view = rules_view("IPv4", &text, "IP-MASQ-AGENT");
        assert!(view.in_order, "{view:?}");
        let only_returns = SAVE.replace("-A IP-MASQ-AGENT -j MASQUERADE --random-fully\n", "");
        assert!(!rules_view("IPv4", &only_returns, "IP-MASQ-AGENT").in_order);
    }

    #[test]
    fn lock_holder_from_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 99 08:01:1234 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:2a:777 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 4343 00:2a:777 0 EOF\n\
                     3: FLOCK  ADVISORY  READ 5 00:2a:888 0 EOF\n";
        assert_eq!(lock_holder(locks, 0, 0x2a, 777), Some(4242));
        assert_eq!(
            lock_holder(locks, 0, 0x2a, 888),
            None,
            "shared locks are not the agent's"
        );
        assert_eq!(
            lock_holder(locks, 8, 1, 1234),
            None,
            "POSIX locks are not flocks"
        );
        assert_eq!(lock_holder(locks, 0, 0x2a, 1), None);
    }
}

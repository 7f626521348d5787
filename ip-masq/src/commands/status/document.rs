//! Gathering what `status` reports: the agent's lock, the classifier on
//! each interface, our pinned links, the rules of each family, the maps and
//! the counters, and the problems they show.

use std::{collections::BTreeSet, os::unix::fs::MetadataExt as _, path::Path, path::PathBuf};

use ip_masq_common::{MAP_NON_MASQ_V4, MAP_NON_MASQ_V6, PROGRAM_CLASSIFIER};
use serde::Serialize;

use crate::commands::installed::{InspectError, Installed};
use crate::commands::probe::{PinnedLinkView, TcxProgram, pinned_links, probe_interfaces};
use crate::commands::status::rules::{RulesView, rule_problems, rules_view};
use crate::error::error_chain;
use crate::kernel::datapath;
use crate::kernel::iptables::backends;
use crate::serve::state;
use crate::serve::state::ReloadRecord;
use crate::serve::state::ReloadResult;

/// Which process holds an exclusive flock on the file with this device
/// and inode, from `/proc/locks`. Pure.
fn lock_holder(proc_locks: &str, major: u64, minor: u64, inode: u64) -> Option<u32> {
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
pub(super) struct ProgramView {
    pub(super) id: u32,
    pub(super) name: String,
    pub(super) interfaces: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InterfaceView {
    pub(super) name: String,
    pub(super) ifindex: u32,
    pub(super) selected: bool,
    pub(super) carries_classifier: bool,
    /// 1-based position of the classifier in the tcx chain.
    pub(super) position: Option<usize>,
    pub(super) programs: Vec<TcxProgram>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MapView {
    pub(super) name: &'static str,
    pub(super) entries: Option<usize>,
    pub(super) capacity: Option<u32>,
}

/// The TC classifier's packet counters.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PacketView {
    pub(super) ipv4_seen: u64,
    pub(super) ipv4_keep_source: u64,
    pub(super) ipv6_seen: u64,
    pub(super) ipv6_keep_source: u64,
}

/// The xt_bpf socket filters' counters: new connections the nat chain's
/// xt_bpf rule judged.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConnectionView {
    pub(super) ipv4_keep_source: u64,
    pub(super) ipv4_masquerade: u64,
    pub(super) ipv6_keep_source: u64,
    pub(super) ipv6_masquerade: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusDocument {
    pub(super) pin_dir: PathBuf,
    pub(super) state_file: PathBuf,
    pub(super) agent_running: bool,
    pub(super) agent_pid: Option<u32>,
    pub(super) programs: Vec<ProgramView>,
    pub(super) links: Vec<PinnedLinkView>,
    pub(super) interfaces: Vec<InterfaceView>,
    pub(super) rules: Vec<RulesView>,
    pub(super) config_path: Option<PathBuf>,
    /// The identity of the config in force (`ip_masq_config_info`).
    pub(super) config_sha256: Option<String>,
    /// The files it came from.
    pub(super) config_sources: Vec<String>,
    /// With several files: how many entries of the table each lists.
    pub(super) entry_counts_by_source: std::collections::BTreeMap<String, usize>,
    pub(super) last_reload: Option<ReloadRecord>,
    pub(super) last_successful_reload_at: Option<f64>,
    pub(super) maps: Vec<MapView>,
    pub(super) packets: Option<PacketView>,
    pub(super) connections: Option<ConnectionView>,
    pub(super) problems: Vec<String>,
}

/// Reads everything `status` shows.
///
/// # Errors
/// Fails when the interfaces cannot be listed; missing pieces are problems
/// in the document, not errors.
pub(super) fn gather(installed: &Installed) -> Result<StatusDocument, InspectError> {
    let mut problems = Vec::new();
    let agent_pid = running_agent(&installed.pin_dir);
    if agent_pid.is_none() {
        problems.push(format!(
            "no agent runs on pin directory {} (the datapath, if any, is left as it was)",
            installed.pin_dir.display()
        ));
    }

    let links = pinned_links(&installed.pin_dir);
    let ours: BTreeSet<u32> = links.iter().filter_map(|l| l.program_id).collect();
    let probes = probe_interfaces(&installed.selector)?;
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
                    // Ours by its id, whether or not its name could be read.
                    name: PROGRAM_CLASSIFIER.to_owned(),
                    interfaces: vec![probe.name.clone()],
                }),
            }
        }
        if installed.attaches && probe.selected && position.is_none() {
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
    for family in installed.families() {
        let label = state::family_label(family);
        let view = match backends::save_listings(family) {
            Ok(listings) => match listings.iter().find(|l| l.ours) {
                Some(listing) => rules_view(label, &listing.text, &installed.chain),
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
        problems.extend(rule_problems(&view, &installed.chain));
        rules.push(view);
    }

    let entries = datapath::read_pinned_entries(&installed.pin_dir).ok();
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
            capacity: aya::maps::MapInfo::from_pin(installed.pin_dir.join(name))
                .ok()
                .map(|info| info.max_entries()),
        })
        .collect();
    if entries.is_none() {
        problems.push(format!(
            "no pinned maps under {}",
            installed.pin_dir.display()
        ));
    }
    let packets = datapath::read_stats(&installed.pin_dir)
        .ok()
        .map(|p| PacketView {
            ipv4_seen: p.v4_seen,
            ipv4_keep_source: p.v4_kept,
            ipv6_seen: p.v6_seen,
            ipv6_keep_source: p.v6_kept,
        });
    let connections = datapath::read_connection_stats(&installed.pin_dir)
        .ok()
        .map(|c| ConnectionView {
            ipv4_keep_source: c.v4_keep_source,
            ipv4_masquerade: c.v4_masquerade,
            ipv6_keep_source: c.v6_keep_source,
            ipv6_masquerade: c.v6_masquerade,
        });

    if let Some(state) = &installed.state {
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

    Ok(StatusDocument {
        pin_dir: installed.pin_dir.clone(),
        state_file: installed.state_path.clone(),
        agent_running: agent_pid.is_some(),
        agent_pid,
        programs,
        links,
        interfaces,
        rules,
        config_path: installed.state.as_ref().map(|s| s.config_path.clone()),
        config_sha256: installed
            .state
            .as_ref()
            .and_then(|s| s.config_sha256.clone()),
        config_sources: installed
            .state
            .as_ref()
            .map(|s| s.config_sources.clone())
            .unwrap_or_default(),
        entry_counts_by_source: installed
            .state
            .as_ref()
            .map(|s| {
                let mut counts = std::collections::BTreeMap::new();
                for files in s.entry_sources.values() {
                    for file in files {
                        *counts.entry(file.clone()).or_insert(0) += 1;
                    }
                }
                counts
            })
            .unwrap_or_default(),
        last_reload: installed.state.as_ref().and_then(|s| s.last_reload.clone()),
        last_successful_reload_at: installed
            .state
            .as_ref()
            .and_then(|s| s.last_successful_reload_at),
        maps,
        packets,
        connections,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! The agent's observable state: what the run loop last did, shared with the
//! HTTP handlers (`/metrics`, `/healthz`, `/readyz`) and persisted as a JSON
//! file that `ip-masq status`, a separate process, reads.
//!
//! The loop is the only writer. Handlers read snapshots and never touch the
//! kernel except for the readiness check of the iptables rules, which runs
//! [`Installer::verify`] on copies of the loop's installers: the copies hold
//! the listing the loop saw right after its last write, so any later change
//! by someone else is detected without asking the loop.
//!
//! bpffs holds no regular files, so the state file lives in a state
//! directory (`/run/ip-masq` by default), named after the pin directory so
//! that several agents on one host never share a file.
//!
//! Here: the status itself, the state file's schema ([`AgentStatus`]);
//! reading and writing the state file ([`file`]); what `/readyz` and
//! `/healthz` answer ([`readiness`]); the status shared between the loop
//! and the handlers ([`shared`]).

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::kernel::netlink::Interface;
use crate::kernel::netlink::Selector;
use crate::model::DatapathMode;
use crate::model::Family;
use crate::options::AgentOptions;

mod file;
mod readiness;
mod shared;

pub use file::StateError;
pub(crate) use file::{StatePublisher, read_state, remove_state, state_file_path};
pub(crate) use readiness::{liveness, not_ready_reasons};
pub(crate) use shared::RulesCheck;
pub use shared::Shared;

/// Default directory of state files.
pub(crate) const DEFAULT_STATE_DIR: &str = "/run/ip-masq";

/// A count per address family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerFamily {
    pub ipv4: u64,
    pub ipv6: u64,
}

impl PerFamily {
    pub(crate) fn get_mut(&mut self, family: Family) -> &mut u64 {
        match family {
            Family::V4 => &mut self.ipv4,
            Family::V6 => &mut self.ipv6,
        }
    }
}

/// What one reload of the config file did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum ReloadResult {
    /// The file (or the defaults, without a file) was applied to the maps.
    #[serde(rename_all = "camelCase")]
    Applied {
        added: usize,
        removed: usize,
        /// Map writes that failed; they are retried at the next resync.
        failed: usize,
        elapsed_ms: f64,
    },
    /// The file was refused; the previous table stays in force.
    Rejected { error: String },
}

/// The last reload and when it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadRecord {
    /// Unix time, seconds.
    pub at: f64,
    #[serde(flatten)]
    pub result: ReloadResult,
}

/// An interface that carries the classifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedInterface {
    pub name: String,
    pub ifindex: u32,
}

/// An interface the classifier could not be attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachFailure {
    pub interface: String,
    pub ifindex: u32,
    pub error: String,
}

/// Everything the loop reports; also the state file's schema.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub version: String,
    pub pid: u32,
    /// Unix time, seconds.
    pub started_at: f64,
    pub config_path: PathBuf,
    pub pin_dir: PathBuf,
    pub chain: String,
    pub mark: u32,
    pub ipv6: bool,
    /// `--interfaces` as given; `None` selects every veth.
    pub interfaces_selector: Option<String>,
    pub metrics_address: String,
    /// Whether the classifier goes on interfaces (`--datapath tc`); in
    /// xt-bpf mode interfaces carry nothing by design.
    pub attaches_to_interfaces: bool,
    /// The first reload, rule install and interface scan are done.
    pub startup_complete: bool,
    /// A reload has written the maps at least once.
    pub maps_filled: bool,
    pub last_reload: Option<ReloadRecord>,
    /// Unix time, seconds.
    pub last_successful_reload_at: Option<f64>,
    pub reloads_succeeded: u64,
    pub reloads_failed: u64,
    pub map_write_failures: u64,
    pub map_entries: PerFamily,
    pub map_capacity: PerFamily,
    pub attached: Vec<AttachedInterface>,
    pub attach_failures: Vec<AttachFailure>,
    /// The static rules were installed once; later changes are repairs.
    pub rules_installed: bool,
    /// The last attempt to install or repair the rules failed with this.
    pub rules_error: Option<String>,
    /// No config was ever valid and the maps held no earlier table: no
    /// rules are installed, so nothing is masqueraded (as ip-masq-agent,
    /// which writes no chain until its config is valid).
    #[serde(default)]
    pub rules_withheld: bool,
    pub iptables_repairs: PerFamily,
    /// The config directory is watched for changes (otherwise only each
    /// resync sees them).
    #[serde(default)]
    pub config_watched: bool,
    /// Times a running config watch stopped (a read error, or the directory
    /// removed or moved) and had to be set up again.
    #[serde(default)]
    pub config_watch_failures: u64,
    /// Interference by someone else that the agent repaired, by kind.
    #[serde(default)]
    pub repairs: RepairCounts,
    /// Conntrack entries flushed after config changes that flipped their
    /// decision.
    #[serde(default)]
    pub conntrack_flushed: u64,
    /// SHA-256 of the table in force and the flags that shape decisions
    /// and rules: the same on every node that decides alike.
    #[serde(default)]
    pub config_sha256: Option<String>,
    /// The config files the table in force came from.
    #[serde(default)]
    pub config_sources: Vec<String>,
    /// The ten destinations whose masqueraded connections hold the most
    /// source ports, from the last SNAT scan.
    #[serde(default)]
    pub snat_destinations: Vec<crate::model::DestinationUse>,
    /// conntrack's table-wide counters (`insert_failed`, `drop`, ...).
    #[serde(default)]
    pub conntrack_counters: std::collections::BTreeMap<String, u64>,
    /// conntrack entries in use and the table's size.
    #[serde(default)]
    pub conntrack_usage: Option<(u64, u64)>,
    /// How long the last SNAT scan took, in milliseconds.
    #[serde(default)]
    pub snat_scan_ms: Option<f64>,
    /// With several config files (`--config-dir`): for each CIDR of the
    /// table in force, the files that list it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub entry_sources: std::collections::BTreeMap<String, Vec<String>>,
}

/// Interference by someone else that the agent found and repaired, by what
/// was repaired. Counts only repairs after the first install.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairCounts {
    /// The nat chain was missing or changed, and was rewritten.
    pub chain: u64,
    /// The POSTROUTING jump was missing or duplicated, and was fixed.
    pub jump: u64,
    /// The classifier was detached from an interface, and re-attached.
    pub link: u64,
    /// A map pin was removed, and put back from the agent's map fd.
    pub map_pin: u64,
    /// An xt_bpf socket filter pin was removed, and put back.
    pub program_pin: u64,
    /// A map entry the agent did not write (one with an unknown action
    /// value, or a changed one) was removed, or one that went missing was
    /// put back; counted per entry.
    #[serde(default)]
    pub map_entry: u64,
}

impl RepairCounts {
    /// Each count with its metric label.
    pub(crate) fn by_kind(&self) -> [(&'static str, u64); 6] {
        [
            ("chain", self.chain),
            ("jump", self.jump),
            ("link", self.link),
            ("map_pin", self.map_pin),
            ("program_pin", self.program_pin),
            ("map_entry", self.map_entry),
        ]
    }
}

impl AgentStatus {
    /// The status of an agent that is just starting with `options`.
    pub(crate) fn for_agent(options: &AgentOptions) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started_at: unix_now(),
            config_path: options.config_path.clone(),
            pin_dir: options.pin_dir.clone(),
            chain: options.rules.chain.clone(),
            mark: options.rules.mark,
            ipv6: options.parse.enable_ipv6,
            interfaces_selector: match &options.selector {
                Selector::AllVeth => None,
                Selector::Names(patterns) => Some(
                    patterns
                        .iter()
                        .map(glob::Pattern::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            },
            metrics_address: options.metrics_address.to_string(),
            attaches_to_interfaces: options.rules.datapath == DatapathMode::Tc,
            ..Self::default()
        }
    }

    /// Counts a reload and remembers it as the last one.
    pub(crate) fn record_reload(&mut self, result: ReloadResult) {
        let at = unix_now();
        match &result {
            ReloadResult::Applied { failed, .. } => {
                self.reloads_succeeded += 1;
                self.map_write_failures += *failed as u64;
                self.last_successful_reload_at = Some(at);
                self.maps_filled = true;
            }
            ReloadResult::Rejected { .. } => self.reloads_failed += 1,
        }
        self.last_reload = Some(ReloadRecord { at, result });
    }

    /// Remembers that `interface` could not get the classifier.
    pub(crate) fn note_attach_failure(&mut self, interface: &Interface, error: String) {
        self.clear_attach_failure(interface.index);
        self.attach_failures.push(AttachFailure {
            interface: interface.name.clone(),
            ifindex: interface.index,
            error,
        });
    }

    /// Forgets an earlier attach failure: it worked, or the interface is gone.
    pub(crate) fn clear_attach_failure(&mut self, ifindex: u32) {
        self.attach_failures
            .retain(|failure| failure.ifindex != ifindex);
    }
}

/// Seconds since the Unix epoch, as Prometheus timestamps are.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `IPv4` or `IPv6`, for messages.
pub(crate) fn family_label(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_result_has_a_readable_shape() {
        let record = ReloadRecord {
            at: 5.0,
            result: ReloadResult::Rejected {
                error: "bad".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&record).unwrap(),
            serde_json::json!({"at": 5.0, "result": "rejected", "error": "bad"})
        );
    }
}

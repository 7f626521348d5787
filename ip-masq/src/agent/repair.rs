//! Putting back what someone else changed behind the agent's back: map
//! entries (read back and compared with what the agent wrote) and the pins
//! of its maps and programs.

use ip_masq_common::Action;
use ipnet::IpNet;
use tracing::{error, info, warn};

use crate::error::error_chain;
use crate::kernel::datapath::{PrefixStore, Repinned};
use ip_masq_config::table::Table;

use super::host::{Links, Maps, Rules};
use super::sync::{self, SyncError, SyncReport, WriteError};
use super::{Agent, AgentError};

/// The maps' contents as read back from the kernel.
#[derive(Debug, Default)]
pub(crate) struct ReadBack {
    /// The entries whose value is an action.
    pub(crate) table: Table,
    /// Entries whose value is no action (someone else wrote them). No
    /// program reads the record, so they decide nothing, but read back as
    /// part of the table they would be taken for the agent's own.
    pub(crate) unknown: Vec<(IpNet, u8)>,
}

impl ReadBack {
    /// Sorts entries read back from the maps by whether their value decodes.
    pub(crate) fn from_entries(entries: impl IntoIterator<Item = (IpNet, u8)>) -> Self {
        let mut unknown = Vec::new();
        let known: Vec<(IpNet, Action)> = entries
            .into_iter()
            .filter_map(|(prefix, value)| match Action::from_value(value) {
                Some(action) => Some((prefix, action)),
                None => {
                    unknown.push((prefix, value));
                    None
                }
            })
            .collect();
        Self {
            table: Table::from_map_entries(known),
            unknown,
        }
    }

    /// Whether the maps hold exactly `table`, and nothing else.
    pub(crate) fn matches(&self, table: &Table) -> bool {
        self.unknown.is_empty() && self.table.diff(table).is_empty()
    }
}

/// What [`repair`] did.
#[derive(Debug, Default)]
pub(crate) struct RepairReport {
    /// Entries with an unknown value that were removed.
    pub(crate) unknown_removed: Vec<(IpNet, u8)>,
    /// The writes that brought the known entries back, and every failed
    /// write, removals of unknown entries included.
    pub(crate) sync: SyncReport,
    /// Why the known entries could not be brought back, if so.
    pub(crate) refused: Option<SyncError>,
}

impl RepairReport {
    /// Entries put right: unknown ones removed, known ones written or removed.
    pub(crate) fn repaired(&self) -> usize {
        self.unknown_removed.len() + self.sync.added + self.sync.removed
    }
}

/// Brings maps that hold `found` to `desired`, leaving in `current` what
/// they hold afterwards. Unknown entries go first: they decide their
/// addresses as "masquerade" already, so removing one only lets the table's
/// own entries decide; one on a prefix `desired` holds is overwritten
/// instead.
pub(crate) fn repair<S: PrefixStore>(
    store: &mut S,
    current: &mut Table,
    found: ReadBack,
    desired: &Table,
) -> RepairReport {
    *current = found.table;
    let mut report = RepairReport::default();
    for (prefix, value) in found.unknown {
        if desired.get(&prefix).is_some() {
            continue;
        }
        match store.remove(prefix) {
            Ok(()) => report.unknown_removed.push((prefix, value)),
            Err(source) => report.sync.failures.push(WriteError {
                operation: "remove",
                prefix,
                source,
            }),
        }
    }
    match sync::apply(store, current, desired) {
        Ok(sync) => {
            report.sync.added = sync.added;
            report.sync.removed = sync.removed;
            report.sync.failures.extend(sync.failures);
            report.sync.published = sync.published;
            report.sync.unpublished = sync.unpublished;
        }
        Err(err) => report.refused = Some(err),
    }
    report
}

impl<K: Maps + Links, R: Rules> Agent<K, R> {
    /// Starts from what the pinned maps already hold, so that a restart
    /// writes only the difference and never empties the maps. Entries whose
    /// value is no action were written by someone else: they would win the
    /// lookup for their prefix forever, so they are removed now.
    pub(super) fn restore(&mut self) -> Result<(), AgentError> {
        let found = ReadBack::from_entries(self.datapath.read_entries()?);
        let restored = found.table.clone();
        let report = repair(&mut self.datapath, &mut self.applied, found, &restored);
        self.restored = !self.applied.is_empty();
        info!(
            pin_dir = %self.options.pin_dir.display(),
            restored_entries = self.applied.len(),
            "datapath loaded"
        );
        self.note_repair(&report);
        Ok(())
    }

    /// Puts back entries someone changed in the maps behind our back, and
    /// removes entries the agent did not write.
    pub(super) fn repair_map_drift(&mut self) {
        let entries = match self.datapath.read_entries() {
            Ok(entries) => entries,
            Err(err) => {
                error!(error = %error_chain(&err), "cannot read the maps back");
                return;
            }
        };
        let found = ReadBack::from_entries(entries);
        // What the programs read, checked against what the agent wrote;
        // a chunk that found no room last time is retried too.
        match self.datapath.repair_directory() {
            Ok(0) => {}
            Ok(chunks) => {
                warn!(
                    chunks,
                    "range directory chunks changed by someone; rewritten"
                );
                self.shared
                    .update(|status| status.repairs.map_entry += chunks as u64);
            }
            Err(err) => {
                error!(error = %error_chain(&err), "range directory not fully published; retried at next resync");
            }
        }
        if found.matches(&self.applied) {
            return;
        }
        let desired = std::mem::take(&mut self.applied);
        let report = repair(&mut self.datapath, &mut self.applied, found, &desired);
        if report.sync.added + report.sync.removed > 0 {
            warn!(
                put_back = report.sync.added,
                removed = report.sync.removed,
                "map contents drifted from the config; repaired"
            );
        }
        self.note_repair(&report);
    }

    /// Logs and counts what a repair of the maps did.
    fn note_repair(&self, report: &RepairReport) {
        if !report.unknown_removed.is_empty() {
            // A handful is enough to find who writes them.
            let shown: Vec<String> = report
                .unknown_removed
                .iter()
                .take(8)
                .map(|(prefix, value)| format!("{prefix}={value}"))
                .collect();
            warn!(
                count = report.unknown_removed.len(),
                entries = %shown.join(","),
                "map entries with an unknown action value (not written by the agent) removed"
            );
        }
        for failure in &report.sync.failures {
            error!(error = %error_chain(failure), "map repair write failed; retried at next resync");
        }
        if let Some(err) = &report.sync.unpublished {
            error!(error = %error_chain(err), "range directory not fully published; retried at next resync");
        }
        if let Some(err) = &report.refused {
            error!(error = %err, "cannot repair the maps");
        }
        let repaired = report.repaired() as u64;
        if repaired > 0 {
            self.shared
                .update(|status| status.repairs.map_entry += repaired);
        }
    }

    /// Puts back pins someone removed, from the fds the agent still holds.
    pub(super) fn repair_pins(&mut self) {
        match self.datapath.repin_missing() {
            Ok(repinned) => {
                for pin in repinned {
                    warn!(?pin, pin_dir = %self.options.pin_dir.display(), "pin was removed by someone; pinned again");
                    self.shared.update(|status| match pin {
                        Repinned::Map(_) => status.repairs.map_pin += 1,
                        Repinned::Program(_) => status.repairs.program_pin += 1,
                    });
                }
            }
            Err(err) => error!(error = %error_chain(&err), "cannot restore removed pins"),
        }
    }
}

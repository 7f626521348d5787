//! `ip-masq run`: keeps the datapath, the maps and the static rules in line
//! with the config file and the node's interfaces, until SIGTERM.
//!
//! On SIGTERM the agent exits and leaves everything in place: the pinned
//! links and maps keep classifying traffic across a rolling update.

use std::{
    collections::BTreeMap,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::error::error_chain;
use crate::options::AgentOptions;
use thiserror::Error;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::{MissedTickBehavior, interval_at},
};
use tracing::{debug, error, info, warn};

use crate::kernel::datapath::Attachment;
use crate::kernel::datapath::Datapath;
use crate::kernel::datapath::DatapathError;
use crate::kernel::datapath::LoadOptions;
use crate::kernel::datapath::Repinned;
use crate::kernel::iptables::Installer;
use crate::kernel::iptables::RulesError;
use crate::kernel::netlink;
use crate::kernel::netlink::Interface;
use crate::kernel::watch;
use crate::kernel::watch::ConfigEvent;
use crate::kernel::watch::LinkEvent;
use crate::model::DatapathMode;
use crate::model::Family;
use crate::serve::http;
use crate::serve::state::AgentStatus;
use crate::serve::state::ReloadResult;
use crate::serve::state::Shared;
use crate::serve::state::StatePublisher;
use ip_masq_config as config;
use ip_masq_config::MasqConfig;
use ip_masq_config::table::Table;

pub mod source;
pub mod sync;

/// Errors that stop the agent.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error(
        "another ip-masq agent already runs on pin directory {path} (lock held); refusing to fight over it"
    )]
    AlreadyRunning { path: PathBuf },
    #[error("cannot lock pin directory {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("cannot install the static iptables rules")]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    #[error(transparent)]
    Interfaces(#[from] netlink::InterfacesError),
    #[error("cannot install signal handler")]
    Signal(#[source] std::io::Error),
    #[error(transparent)]
    Http(#[from] http::HttpError),
}

/// An exclusive lock on the pin directory, held for the agent's lifetime.
/// bpffs holds no regular files, so the directory itself is locked.
pub struct PinDirLock {
    _dir: std::fs::File,
}

impl PinDirLock {
    /// Takes the lock without waiting.
    ///
    /// # Errors
    /// [`AgentError::AlreadyRunning`] when another process holds it.
    pub fn acquire(pin_dir: &Path) -> Result<Self, AgentError> {
        crate::kernel::datapath::prepare_pin_dir(pin_dir)?;
        let dir = std::fs::File::open(pin_dir).map_err(|source| AgentError::Lock {
            path: pin_dir.to_owned(),
            source,
        })?;
        // SAFETY: flock on a valid fd we own.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                AgentError::AlreadyRunning {
                    path: pin_dir.to_owned(),
                }
            } else {
                AgentError::Lock {
                    path: pin_dir.to_owned(),
                    source: err,
                }
            });
        }
        Ok(Self { _dir: dir })
    }
}

/// The result of the last attempt to load the config file.
#[derive(Clone, Debug)]
pub enum ReloadOutcome {
    Applied { added: usize, removed: usize },
    Rejected { error: String },
}

struct Agent {
    options: AgentOptions,
    datapath: Datapath,
    /// What the maps hold, entry by entry as writes succeeded.
    applied: Table,
    /// The config in force (the last good one).
    config: Option<MasqConfig>,
    /// The pinned maps held entries at start: an earlier agent's table,
    /// the last good config until this agent applies one of its own.
    restored: bool,
    /// "ready:" was logged.
    ready_announced: bool,
    /// Raw bytes of the last file read, to skip no-op reloads cheaply.
    last_bytes: Option<Option<Vec<u8>>>,
    /// Why the file could not be read last time, so that a file that stays
    /// unreadable is reported once rather than at every resync.
    last_read_error: Option<String>,
    installers: Vec<Installer>,
    /// Interfaces that carry the classifier, by index.
    attached: BTreeMap<u32, String>,
    /// What the HTTP handlers and `ip-masq status` see.
    shared: Shared,
    publisher: StatePublisher,
}

/// Runs the agent until SIGTERM or SIGINT.
///
/// # Errors
/// Returns an error only for problems that make running impossible:
/// another agent on the same pin directory, no BPF support, no iptables.
/// A bad config file is logged and never stops the agent.
pub async fn run(options: AgentOptions) -> Result<(), AgentError> {
    let _lock = PinDirLock::acquire(&options.pin_dir)?;
    // Listen before the slow part of the start, so that liveness probes get
    // answers and readiness says why the agent is not ready yet.
    let shared = Shared::new(AgentStatus::for_agent(&options));
    http::start(
        options.metrics_address,
        shared.clone(),
        options.pin_dir.clone(),
    )?;
    let publisher = StatePublisher::new(&options.state_dir, &options.pin_dir);
    let datapath = Datapath::load(&LoadOptions {
        pin_dir: options.pin_dir.clone(),
        mark: options.rules.mark,
        max_entries: options.max_entries,
    })?;
    let mut installers = vec![Installer::new(Family::V4, options.rules.clone())];
    if options.parse.enable_ipv6 {
        installers.push(Installer::new(Family::V6, options.rules.clone()));
    }
    let mut agent = Agent {
        options,
        datapath,
        applied: Table::default(),
        config: None,
        restored: false,
        ready_announced: false,
        last_bytes: None,
        last_read_error: None,
        installers,
        attached: BTreeMap::new(),
        shared: shared.clone(),
        publisher,
    };

    agent.restore()?;

    let (link_tx, mut link_rx) = mpsc::channel(1024);
    // xt-bpf mode attaches nothing to interfaces, so it does not follow them.
    if agent.options.rules.datapath == DatapathMode::Tc {
        watch::link_events(link_tx)?;
    }
    let (config_tx, mut config_rx) = mpsc::channel(64);
    let mut config_watched = agent.watch_config(config_tx.clone(), false);

    agent.reload();
    agent.keep_rules()?;
    let handle = netlink_handle()?;
    agent.reconcile_interfaces(&handle).await?;
    // Published before the log line, so that whoever waits for "ready:"
    // finds the state file and the endpoints in step with it.
    agent.shared.update(|status| status.startup_complete = true);
    agent.publish();
    agent.announce_ready();

    let mut terminate = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut resync_every = agent.resync_interval();
    let mut resync = interval_at(tokio::time::Instant::now() + resync_every, resync_every);
    resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Wakes the loop now and then so that `/healthz` can tell an idle loop
    // from a stalled one.
    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));

    loop {
        tokio::select! {
            _ = terminate.recv() => {
                info!("SIGTERM: exiting, datapath left in place");
                return Ok(());
            }
            _ = interrupt.recv() => {
                info!("SIGINT: exiting, datapath left in place");
                return Ok(());
            }
            Some(event) = config_rx.recv() => {
                // A ConfigMap update is a burst of events. The watch only
                // reports completed writes and renames (never a write in
                // progress), so the file is whole now: reload at once, and
                // fold the events already queued into this reload. Later
                // ones re-read the file and stop at the unchanged bytes.
                let mut lost = None;
                let mut next = Some(event);
                while let Some(event) = next {
                    if let ConfigEvent::Lost { reason } = event {
                        lost = Some(reason);
                    }
                    next = config_rx.try_recv().ok();
                }
                if let Some(reason) = lost {
                    // Set up again at once; the reload below catches what
                    // the dead watch missed. If the directory is not back
                    // yet, each resync tries again.
                    agent.note_watch_lost(&reason);
                    config_watched = agent.watch_config(config_tx.clone(), true);
                }
                agent.reload();
                agent.install_pending_rules();
            }
            Some(event) = link_rx.recv() => {
                agent.on_link_event(event);
            }
            () = shared.repair_requested() => {
                // `/readyz` found the rules missing or changed.
                if let Err(err) = agent.keep_rules() {
                    error!(error = %error_chain(&err), "cannot repair iptables rules");
                }
            }
            _ = heartbeat.tick() => {}
            _ = resync.tick() => {
                debug!("periodic resync");
                if !config_watched {
                    config_watched = agent.watch_config(config_tx.clone(), true);
                }
                // Pins first: rewriting the chain needs the xt_bpf pins.
                agent.repair_pins();
                agent.reload();
                agent.repair_map_drift();
                if let Err(err) = agent.keep_rules() {
                    error!(error = %error_chain(&err), "cannot repair iptables rules");
                }
                if let Err(err) = agent.reconcile_interfaces(&handle).await {
                    error!(error = %error_chain(&err), "cannot reconcile interfaces");
                }
            }
        }
        agent.publish();
        agent.announce_ready();
        let wanted = agent.resync_interval();
        if wanted != resync_every {
            resync_every = wanted;
            resync = interval_at(tokio::time::Instant::now() + wanted, wanted);
            resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
            info!(interval = ?wanted, "resync interval changed");
        }
    }
}

fn netlink_handle() -> Result<rtnetlink::Handle, AgentError> {
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|e| AgentError::Interfaces(netlink::InterfacesError::Socket(e)))?;
    tokio::spawn(connection);
    Ok(handle)
}

impl Agent {
    fn resync_interval(&self) -> Duration {
        self.config
            .as_ref()
            .map_or(config::DEFAULT_RESYNC_INTERVAL, |c| c.resync_interval)
    }

    /// Sets up the config watch; `again` after one was lost or could not
    /// be set up.
    fn watch_config(&self, changes: mpsc::Sender<ConfigEvent>, again: bool) -> bool {
        let watched = match watch::config_changes(&self.options.config_path, changes) {
            Ok(()) => {
                if again {
                    info!(config = %self.options.config_path.display(), "config watch set up again");
                }
                true
            }
            Err(err) => {
                warn!(error = %error_chain(&err), "config changes are picked up at each resync only");
                false
            }
        };
        self.shared.update(|status| status.config_watched = watched);
        watched
    }

    /// The config watch stopped on its own; until it is set up again only
    /// the resync sees changes.
    fn note_watch_lost(&self, reason: &str) {
        warn!(config = %self.options.config_path.display(), %reason, "config watch lost; setting it up again");
        self.shared.update(|status| {
            status.config_watched = false;
            status.config_watch_failures += 1;
        });
    }

    /// Reads, validates and applies the config file. A bad file is logged
    /// once and leaves the maps as they are.
    fn reload(&mut self) -> Option<ReloadOutcome> {
        let path = &self.options.config_path;
        let started = Instant::now();
        let bytes = match source::read_config_with_limit(path, self.options.max_config_bytes) {
            Ok(bytes) => bytes,
            Err(err) => {
                let error = error_chain(&err);
                if self.last_read_error.as_ref() == Some(&error) {
                    return None;
                }
                self.last_read_error = Some(error.clone());
                return Some(self.reject(error));
            }
        };
        self.last_read_error = None;
        // Same bytes as last time: applied already, or rejected and logged
        // already. Drift in the maps is repaired separately.
        if self.last_bytes.as_ref() == Some(&bytes) {
            return None;
        }
        let read_ms = elapsed_ms(started);
        let parsed = match &bytes {
            None => Ok(config::ParsedConfig {
                config: MasqConfig::defaults(self.options.parse),
                warnings: Vec::new(),
            }),
            Some(bytes) => {
                config::parse_with_limit(bytes, self.options.parse, self.options.max_config_bytes)
            }
        };
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                self.last_bytes = Some(bytes);
                return Some(self.reject(format!("{}: {err}", path.display())));
            }
        };
        for warning in &parsed.warnings {
            warn!(config = %path.display(), "{warning}");
        }
        let decoded_at = Instant::now();
        let decode_ms = elapsed_ms(started) - read_ms;
        let desired = Table::effective(&parsed.config, self.options.parse.enable_ipv6);
        let applied = sync::apply(&mut self.datapath, &mut self.applied, &desired);
        let sync_ms = elapsed_ms(decoded_at);
        match applied {
            Ok(report) => {
                for failure in &report.failures {
                    error!(error = %error_chain(failure), "map write failed; retried at next resync");
                }
                let (v4, v6) = self.applied.family_counts();
                info!(
                    config = %path.display(),
                    source = if bytes.is_some() { "file" } else { "defaults (no file)" },
                    added = report.added,
                    removed = report.removed,
                    failed = report.failures.len(),
                    entries_v4 = v4,
                    entries_v6 = v6,
                    elapsed_ms = elapsed_ms(started),
                    read_ms,
                    decode_ms,
                    sync_ms,
                    "config applied"
                );
                self.shared.update(|status| {
                    status.record_reload(ReloadResult::Applied {
                        added: report.added,
                        removed: report.removed,
                        failed: report.failures.len(),
                        elapsed_ms: elapsed_ms(started),
                    });
                });
                self.config = Some(parsed.config);
                self.last_bytes = if report.failures.is_empty() {
                    Some(bytes)
                } else {
                    None
                };
                Some(ReloadOutcome::Applied {
                    added: report.added,
                    removed: report.removed,
                })
            }
            Err(err) => {
                self.last_bytes = Some(bytes);
                Some(self.reject(format!("{}: {err}", path.display())))
            }
        }
    }

    fn reject(&self, error: String) -> ReloadOutcome {
        if self.config.is_some() {
            error!("config rejected, previous config stays in force: {error}");
        } else if self.restored {
            error!(
                "config rejected, the table restored from the pinned maps stays in force: {error}"
            );
        } else {
            error!(
                "config rejected and no earlier table to keep: nothing is masqueraded until a valid config arrives: {error}"
            );
        }
        self.shared.update(|status| {
            status.record_reload(ReloadResult::Rejected {
                error: error.clone(),
            });
        });
        ReloadOutcome::Rejected { error }
    }

    /// Starts from what the pinned maps already hold, so that a restart
    /// writes only the difference and never empties the maps. Entries whose
    /// value is no action were written by someone else: they would win the
    /// lookup for their prefix forever, so they are removed now.
    fn restore(&mut self) -> Result<(), AgentError> {
        let found = sync::ReadBack::from_entries(self.datapath.read_entries()?);
        let restored = found.table.clone();
        let report = sync::repair(&mut self.datapath, &mut self.applied, found, &restored);
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
    fn repair_map_drift(&mut self) {
        let entries = match self.datapath.read_entries() {
            Ok(entries) => entries,
            Err(err) => {
                error!(error = %error_chain(&err), "cannot read the maps back");
                return;
            }
        };
        let found = sync::ReadBack::from_entries(entries);
        if found.matches(&self.applied) {
            return;
        }
        let desired = std::mem::take(&mut self.applied);
        let report = sync::repair(&mut self.datapath, &mut self.applied, found, &desired);
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
    fn note_repair(&self, report: &sync::RepairReport) {
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
    fn repair_pins(&mut self) {
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

    fn ensure_rules(&mut self) -> Result<(), RulesError> {
        for installer in &mut self.installers {
            let repairs = installer.ensure()?;
            // The first install always writes; only later writes are repairs.
            let mut first_install = true;
            self.shared.update(|status| {
                first_install = !status.rules_installed;
                if status.rules_installed && repairs.any() {
                    *status.iptables_repairs.get_mut(installer.family()) += 1;
                    status.repairs.chain += u64::from(repairs.chain_rewritten);
                    status.repairs.jump +=
                        u64::from(repairs.jump_added || repairs.duplicate_jumps_removed > 0);
                }
            });
            let chain = &self.options.rules.chain;
            let family = installer.family();
            if first_install {
                if repairs.chain_rewritten {
                    info!(%chain, ?family, "masquerade chain written");
                }
            } else if repairs.chain_rewritten {
                warn!(%chain, ?family, "masquerade chain was missing or changed by someone; rewritten");
            }
            if !first_install && (repairs.jump_added || repairs.duplicate_jumps_removed > 0) {
                warn!(%chain, ?family, ?repairs, "POSTROUTING jump was missing or duplicated; repaired");
            }
        }
        Ok(())
    }

    /// Whether a table decides traffic: a config this agent applied, or
    /// the one an earlier agent left in the pinned maps.
    fn table_in_force(&self) -> bool {
        self.config.is_some() || self.restored
    }

    /// Installs the rules once a first valid config arrived after a start
    /// without any table; a failure is retried at the next resync.
    fn install_pending_rules(&mut self) {
        if self.table_in_force()
            && !self.shared.snapshot().rules_installed
            && let Err(err) = self.keep_rules()
        {
            error!(error = %error_chain(&err), "cannot install iptables rules");
        }
    }

    /// Logs "ready:" once, when the table is in force and the rules are in
    /// place for the first time.
    fn announce_ready(&mut self) {
        if self.ready_announced {
            return;
        }
        let status = self.shared.snapshot();
        if !status.startup_complete || !status.rules_installed {
            return;
        }
        self.ready_announced = true;
        if self.config.is_some() {
            info!(
                interfaces = self.attached.len(),
                "ready: maps filled, classifier attached, rules in place"
            );
        } else {
            info!(
                interfaces = self.attached.len(),
                restored_entries = self.applied.len(),
                "ready: the restored table stays in force until a valid config arrives, classifier attached, rules in place"
            );
        }
    }

    /// Installs or repairs the rules, and tells the readiness check what it
    /// should now find.
    ///
    /// Without any table in force (a first start on an invalid file, with
    /// empty maps) nothing is installed: the chain's last rule would
    /// masquerade everything, where ip-masq-agent in that state writes no
    /// chain and masquerades nothing.
    fn keep_rules(&mut self) -> Result<(), RulesError> {
        let without_table = !self.table_in_force();
        self.shared
            .update(|status| status.rules_withheld = without_table);
        if without_table {
            return Ok(());
        }
        let result = self.ensure_rules();
        match &result {
            Ok(()) => {
                self.shared.update(|status| {
                    status.rules_installed = true;
                    status.rules_error = None;
                });
                self.shared.set_verifiers(
                    self.installers
                        .iter()
                        .map(|installer| {
                            let check: std::sync::Arc<dyn crate::serve::state::RulesCheck> =
                                std::sync::Arc::new(installer.clone());
                            (installer.family(), check)
                        })
                        .collect(),
                );
            }
            Err(err) => self
                .shared
                .update(|status| status.rules_error = Some(error_chain(err))),
        }
        result
    }

    /// Copies what only the loop knows into the shared state, and writes the
    /// state file when something changed.
    fn publish(&mut self) {
        let (v4, v6) = self.applied.family_counts();
        let capacity = |cidr: &str| {
            crate::kernel::datapath::PrefixStore::capacity(
                &self.datapath,
                &cidr.parse().expect("literal"),
            ) as u64
        };
        let (capacity_v4, capacity_v6) = (capacity("0.0.0.0/0"), capacity("::/0"));
        let attached = self
            .attached
            .iter()
            .map(|(index, name)| crate::serve::state::AttachedInterface {
                name: name.clone(),
                ifindex: *index,
            })
            .collect();
        self.shared.update(|status| {
            status.map_entries.ipv4 = v4 as u64;
            status.map_entries.ipv6 = v6 as u64;
            status.map_capacity.ipv4 = capacity_v4;
            status.map_capacity.ipv6 = capacity_v6;
            status.attached = attached;
        });
        self.shared.beat();
        self.publisher.publish(&self.shared.snapshot());
    }

    /// Attaches to every selected interface that lacks the classifier and
    /// drops pins of interfaces that are gone.
    async fn reconcile_interfaces(&mut self, handle: &rtnetlink::Handle) -> Result<(), AgentError> {
        if self.options.rules.datapath == DatapathMode::XtBpf {
            // Links left by a `tc` run would keep running the classifier on
            // every packet, for nothing: this mode attaches none.
            let detached = self.datapath.detach_all()?;
            if detached > 0 {
                info!(
                    links = detached,
                    "xt-bpf datapath: detached the classifier from interfaces"
                );
            }
            return Ok(());
        }
        let present = netlink::list(handle).await?;
        let present_indexes: Vec<u32> = present.iter().map(|i| i.index).collect();
        for index in self.datapath.pinned_ifindexes()? {
            if !present_indexes.contains(&index) {
                self.forget(index);
            }
        }
        for interface in present {
            if !self.options.selector.selects(&interface) {
                continue;
            }
            let verified = self.attached.contains_key(&interface.index)
                && self.datapath.is_attached(&interface.name).unwrap_or(false);
            if !verified {
                if self.attached.remove(&interface.index).is_some() {
                    warn!(interface = %interface.name, "classifier was detached by someone; re-attaching");
                    self.shared.update(|status| status.repairs.link += 1);
                }
                self.attach(&interface);
            }
        }
        Ok(())
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Changed(interface) => {
                if self.options.selector.selects(&interface)
                    && !self.attached.contains_key(&interface.index)
                {
                    self.attach(&interface);
                }
            }
            LinkEvent::Removed { index } => self.forget(index),
        }
    }

    fn attach(&mut self, interface: &Interface) {
        match self.datapath.attach(&interface.name, interface.index) {
            Ok(how) => {
                let how = match how {
                    Attachment::Created => "attached",
                    Attachment::Adopted => "adopted pinned link",
                };
                info!(interface = %interface.name, ifindex = interface.index, "{how}");
                self.attached
                    .insert(interface.index, interface.name.clone());
                self.shared
                    .update(|status| status.clear_attach_failure(interface.index));
            }
            Err(err) => {
                error!(interface = %interface.name, error = %error_chain(&err), "cannot attach classifier");
                self.shared.update(|status| {
                    status.note_attach_failure(interface, error_chain(&err));
                });
            }
        }
    }

    fn forget(&mut self, index: u32) {
        self.shared
            .update(|status| status.clear_attach_failure(index));
        if let Some(name) = self.attached.remove(&index) {
            info!(interface = %name, ifindex = index, "interface gone");
        }
        if let Err(err) = self.datapath.forget(index) {
            error!(ifindex = index, error = %error_chain(&err), "cannot remove stale link pin");
        }
    }
}

fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

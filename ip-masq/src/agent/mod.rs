//! `ip-masq run`: keeps the datapath, the maps and the static rules in line
//! with the config file and the node's interfaces, until SIGTERM.
//!
//! On SIGTERM the agent exits and leaves everything in place: the pinned
//! links and maps keep classifying traffic across a rolling update.
//!
//! The loop itself ([`run`]) only waits for events and calls the agent's
//! decisions, which reach the kernel through three small traits
//! ([`host`]: `Maps`, `Links`, `Rules`) so that they are unit-tested against
//! fakes: reading and applying the config file ([`reload`]), putting back
//! what someone else changed in the maps and pins ([`repair`]), the iptables
//! rules ([`rules`]) and the classifier on interfaces ([`attach`]). [`sync`]
//! brings the maps to a table in a safe order, [`source`] reads the file,
//! and [`lock`] keeps a second agent off the pin directory.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use thiserror::Error;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::{MissedTickBehavior, interval_at},
};
use tracing::{debug, error, info, warn};

use crate::error::error_chain;
use crate::kernel::datapath::Datapath;
use crate::kernel::datapath::DatapathError;
use crate::kernel::datapath::LoadOptions;
use crate::kernel::iptables::Installer;
use crate::kernel::iptables::RulesError;
use crate::kernel::netlink;
use crate::kernel::watch;
use crate::kernel::watch::ConfigEvent;
use crate::kernel::watch::LinkEvent;
use crate::model::DatapathMode;
use crate::model::Family;
use crate::options::AgentOptions;
use crate::serve::http;
use crate::serve::state::AgentStatus;
use crate::serve::state::AttachedInterface;
use crate::serve::state::Shared;
use crate::serve::state::StatePublisher;
use ip_masq_config as config;
use ip_masq_config::MasqConfig;
use ip_masq_config::table::Table;

use host::{Links, Maps, Rules};

mod attach;
pub mod flush;
mod host;
mod lock;
mod reload;
mod repair;
mod rules;
pub mod snat;
pub mod source;
pub mod sync;
#[cfg(test)]
mod tests;

pub(crate) use lock::PinDirLock;

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

/// What the loop knows between turns, over the maps and links `K` and one
/// rules installer `R` per family.
struct Agent<K, R> {
    options: AgentOptions,
    datapath: K,
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
    last_bytes: Option<source::SourceFiles>,
    /// Why the file could not be read last time, so that a file that stays
    /// unreadable is reported once rather than at every resync.
    last_read_error: Option<String>,
    installers: Vec<R>,
    /// Interfaces that carry the classifier, by index.
    attached: BTreeMap<u32, String>,
    /// Interfaces default routes left through at the last reconcile: the
    /// uplinks, which the default selection leaves alone.
    default_routes: BTreeSet<u32>,
    /// What the HTTP handlers and `ip-masq status` see.
    shared: Shared,
    publisher: StatePublisher,
    /// The conntrack table, when the change flush is on and it opened.
    connections: Option<Box<dyn host::Connections>>,
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
    let mut agent = Agent::new(options, datapath, installers, shared.clone(), publisher);
    // For the change flush and the SNAT scan.
    match crate::kernel::conntrack::Conntrack::open() {
        Ok(table) => agent.connections = Some(Box::new(table)),
        Err(err) => warn!(
            error = %error_chain(&err),
            "conntrack unavailable: no SNAT metrics, and flows alive across a config change keep their old decision"
        ),
    }

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
    agent.finish_startup();

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
                agent.on_config_change();
            }
            Some(event) = link_rx.recv() => {
                if event == LinkEvent::DefaultRouteChanged {
                    // The uplink may have moved: routes and links read again.
                    if let Err(err) = agent.reconcile_interfaces(&handle).await {
                        error!(error = %error_chain(&err), "cannot reconcile interfaces");
                    }
                } else {
                    agent.on_link_event(event);
                }
            }
            () = shared.repair_requested() => {
                // `/readyz` found the rules missing or changed.
                agent.repair_rules();
            }
            _ = heartbeat.tick() => {}
            _ = resync.tick() => {
                debug!("periodic resync");
                if !config_watched {
                    config_watched = agent.watch_config(config_tx.clone(), true);
                }
                agent.resync();
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

impl<K: Maps + Links, R: Rules> Agent<K, R> {
    fn new(
        options: AgentOptions,
        datapath: K,
        installers: Vec<R>,
        shared: Shared,
        publisher: StatePublisher,
    ) -> Self {
        Self {
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
            default_routes: BTreeSet::new(),
            shared,
            publisher,
            connections: None,
        }
    }

    /// The first reload, rule install and interface scan are done.
    fn finish_startup(&mut self) {
        // Published before the log line, so that whoever waits for "ready:"
        // finds the state file and the endpoints in step with it.
        self.shared.update(|status| status.startup_complete = true);
        self.publish();
        self.announce_ready();
    }

    /// The config file changed.
    fn on_config_change(&mut self) {
        self.reload();
        self.install_pending_rules();
    }

    /// `/readyz` found the rules missing or changed.
    fn repair_rules(&mut self) {
        if let Err(err) = self.keep_rules() {
            error!(error = %error_chain(&err), "cannot repair iptables rules");
        }
    }

    /// The periodic resync, but for the interfaces: puts back what someone
    /// else changed and reads the file again in case a change was missed.
    fn resync(&mut self) {
        // Pins first: rewriting the chain needs the xt_bpf pins.
        self.repair_pins();
        self.reload();
        self.repair_map_drift();
        self.repair_rules();
        self.scan_snat();
    }

    /// Counts masqueraded connections per destination for the
    /// `ip_masq_snat_*` metrics: once per resync, the ten fullest kept.
    fn scan_snat(&mut self) {
        let Some(connections) = self.connections.as_mut() else {
            return;
        };
        let started = std::time::Instant::now();
        let entries = match connections.list() {
            Ok(entries) => entries,
            Err(err) => {
                debug!(error = %error_chain(&err), "cannot list conntrack entries");
                return;
            }
        };
        let available = snat::ports_available(Some(&self.options.rules.to_ports)).unwrap_or(0);
        let fullest = snat::utilization(&entries, available, 10);
        let counters = crate::kernel::conntrack::statistics().unwrap_or_default();
        let usage = crate::kernel::conntrack::usage().ok();
        let scan_ms = started.elapsed().as_secs_f64() * 1000.0;
        debug!(entries = entries.len(), scan_ms, "SNAT scan");
        self.shared.update(|status| {
            status.snat_destinations = fullest;
            status.conntrack_counters = counters.into_iter().collect();
            status.conntrack_usage = usage;
            status.snat_scan_ms = Some(scan_ms);
        });
    }

    /// Follows the interfaces: rtnetlink lists them, [`Agent::reconcile`]
    /// decides.
    async fn reconcile_interfaces(&mut self, handle: &rtnetlink::Handle) -> Result<(), AgentError> {
        if self.options.rules.datapath == DatapathMode::XtBpf {
            return self.detach_everywhere();
        }
        let present = netlink::list(handle).await?;
        self.reconcile(present)
    }

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

    /// Copies what only the loop knows into the shared state, and writes the
    /// state file when something changed.
    fn publish(&mut self) {
        let (v4, v6) = self.applied.family_counts();
        let capacity = |cidr: &str| self.datapath.capacity(&cidr.parse().expect("literal")) as u64;
        let (capacity_v4, capacity_v6) = (capacity("0.0.0.0/0"), capacity("::/0"));
        let attached = self
            .attached
            .iter()
            .map(|(index, name)| AttachedInterface {
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
}

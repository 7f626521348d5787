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

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Notify;

use crate::kernel::iptables::Installer;
use crate::kernel::netlink::Interface;
use crate::kernel::netlink::Selector;
use crate::model::DatapathMode;
use crate::model::Family;
use crate::options::AgentOptions;

/// Default directory of state files.
pub const DEFAULT_STATE_DIR: &str = "/run/ip-masq";

/// How long a readiness verdict on the iptables rules is reused, so that a
/// burst of probes costs at most one `iptables -S` per family per second.
pub const RULES_CHECK_CACHE: Duration = Duration::from_secs(1);

/// After startup, a loop that has not beaten for this long is reported dead
/// by `/healthz`, so that the kubelet restarts it. Far above the longest
/// legitimate pause (a reload of millions of entries takes seconds).
pub const LIVENESS_STALL_LIMIT: Duration = Duration::from_secs(120);

/// Errors reading or writing the state file.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot write state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A count per address family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerFamily {
    pub ipv4: u64,
    pub ipv6: u64,
}

impl PerFamily {
    pub fn get_mut(&mut self, family: Family) -> &mut u64 {
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
    pub fn by_kind(&self) -> [(&'static str, u64); 6] {
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
    pub fn for_agent(options: &AgentOptions) -> Self {
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
    pub fn record_reload(&mut self, result: ReloadResult) {
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
    pub fn note_attach_failure(&mut self, interface: &Interface, error: String) {
        self.clear_attach_failure(interface.index);
        self.attach_failures.push(AttachFailure {
            interface: interface.name.clone(),
            ifindex: interface.index,
            error,
        });
    }

    /// Forgets an earlier attach failure: it worked, or the interface is gone.
    pub fn clear_attach_failure(&mut self, ifindex: u32) {
        self.attach_failures
            .retain(|failure| failure.ifindex != ifindex);
    }
}

/// Keeps the state file in line with the shared status, writing it only
/// when something changed.
pub struct StatePublisher {
    path: PathBuf,
    written: Option<AgentStatus>,
    /// A failing write is logged once, not at every loop turn.
    failing: bool,
}

impl StatePublisher {
    pub fn new(state_dir: &Path, pin_dir: &Path) -> Self {
        Self {
            path: state_file_path(state_dir, pin_dir),
            written: None,
            failing: false,
        }
    }

    /// Writes `status` unless the file already holds it. The state file is
    /// for humans and `status`; failing to write it never stops the agent.
    pub fn publish(&mut self, status: &AgentStatus) {
        if self.written.as_ref() == Some(status) {
            return;
        }
        match write_state(&self.path, status) {
            Ok(()) => {
                self.written = Some(status.clone());
                if std::mem::take(&mut self.failing) {
                    tracing::info!(path = %self.path.display(), "state file written again");
                }
            }
            Err(err) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        error = %crate::error::error_chain(&err),
                        "`ip-masq status` will not see this agent's state"
                    );
                }
            }
        }
    }
}

/// Seconds since the Unix epoch, as Prometheus timestamps are.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Why the agent is not ready; empty when it is. Pure: `rule_problems` is
/// the outcome of a live check of the iptables rules.
pub fn not_ready_reasons(status: &AgentStatus, rule_problems: &[String]) -> Vec<String> {
    let mut reasons = Vec::new();
    if !status.startup_complete {
        reasons.push(
            "starting: loading the datapath, filling the maps and installing the rules".into(),
        );
        return reasons;
    }
    if status.rules_withheld {
        reasons.push(
            "config rejected and no earlier table to keep: no masquerade rules installed, nothing is masqueraded until a valid config arrives".into(),
        );
    }
    match &status.last_reload {
        Some(ReloadRecord {
            result: ReloadResult::Rejected { error },
            ..
        }) => reasons.push(format!("last config reload failed: {error}")),
        _ if !status.maps_filled => reasons.push("maps not filled yet".into()),
        _ => {}
    }
    if let Some(error) = &status.rules_error {
        reasons.push(format!("cannot install the iptables rules: {error}"));
    }
    reasons.extend(rule_problems.iter().cloned());
    for failure in &status.attach_failures {
        reasons.push(format!(
            "classifier not attached to {}: {}",
            failure.interface, failure.error
        ));
    }
    reasons
}

/// Whether the loop is alive: during startup always (startup can be long
/// and is bounded by its own errors); afterwards, while it beats.
pub fn liveness(startup_complete: bool, since_last_beat: Duration) -> Result<(), String> {
    if startup_complete && since_last_beat > LIVENESS_STALL_LIMIT {
        return Err(format!(
            "agent loop stalled: no progress for {}s",
            since_last_beat.as_secs()
        ));
    }
    Ok(())
}

/// The state shared between the run loop and the HTTP handlers.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Mutex<Inner>>,
    repair: Arc<Notify>,
}

struct Inner {
    status: AgentStatus,
    /// Copies of the loop's installers, taken after each successful ensure.
    verifiers: Vec<(Family, Installer)>,
    last_beat: Instant,
    rules_check: Option<(Instant, Vec<String>)>,
}

impl Shared {
    pub fn new(status: AgentStatus) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                status,
                verifiers: Vec::new(),
                last_beat: Instant::now(),
                rules_check: None,
            })),
            repair: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A handler that panicked mid-read leaves nothing half-written that
        // matters: every field is replaced whole.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the status.
    pub fn update<T>(&self, change: impl FnOnce(&mut AgentStatus) -> T) -> T {
        change(&mut self.lock().status)
    }

    pub fn snapshot(&self) -> AgentStatus {
        self.lock().status.clone()
    }

    /// Records that the loop made progress.
    pub fn beat(&self) {
        self.lock().last_beat = Instant::now();
    }

    pub fn since_last_beat(&self) -> Duration {
        self.lock().last_beat.elapsed()
    }

    /// Hands the readiness check copies of the installers as they are right
    /// after a successful ensure, and drops any cached verdict.
    pub fn set_verifiers(&self, verifiers: Vec<(Family, Installer)>) {
        let mut inner = self.lock();
        inner.verifiers = verifiers;
        inner.rules_check = None;
    }

    /// Checks the live iptables rules against what the loop installed.
    /// Blocking: runs `iptables -S`. When rules are missing or changed it
    /// also asks the loop to repair them at once.
    pub fn check_rules(&self) -> Vec<String> {
        let verifiers = {
            let inner = self.lock();
            if let Some((at, problems)) = &inner.rules_check
                && at.elapsed() < RULES_CHECK_CACHE
            {
                return problems.clone();
            }
            if !inner.status.rules_installed {
                // Nothing to compare with yet; the status says why.
                return Vec::new();
            }
            (inner.verifiers.clone(), inner.status.chain.clone())
        };
        let (verifiers, chain) = verifiers;
        let mut problems = Vec::new();
        let mut damaged = false;
        for (family, installer) in &verifiers {
            match installer.verify() {
                Ok(true) => {}
                Ok(false) => {
                    damaged = true;
                    problems.push(format!(
                        "{} rules missing or changed (chain {} or its POSTROUTING jump); repair requested",
                        family_label(*family),
                        chain
                    ));
                }
                Err(err) => problems.push(format!(
                    "cannot list {} rules: {}",
                    family_label(*family),
                    crate::error::error_chain(&err)
                )),
            }
        }
        if damaged {
            self.repair.notify_one();
        }
        self.lock().rules_check = Some((Instant::now(), problems.clone()));
        problems
    }

    /// Resolves when a handler asked for the rules to be repaired.
    pub async fn repair_requested(&self) {
        self.repair.notified().await;
    }
}

/// `IPv4` or `IPv6`, for messages.
pub fn family_label(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Where the state of the agent using `pin_dir` is kept under `state_dir`:
/// `<last component of pin_dir>-<FNV-1a of the whole path>.json`.
pub fn state_file_path(state_dir: &Path, pin_dir: &Path) -> PathBuf {
    // Lexical normalisation, so `/a/b/` and `/a/b` name the same file.
    let normalised: PathBuf = pin_dir.components().collect();
    let bytes = normalised.as_os_str().as_encoded_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let stem = normalised
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("root");
    state_dir.join(format!("{stem}-{hash:016x}.json"))
}

/// Writes the state file atomically (a temporary file, then a rename), so
/// that a reader never sees half a document.
///
/// # Errors
/// Fails when the directory cannot be created or the file written.
pub fn write_state(path: &Path, status: &AgentStatus) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(write_err)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let text = serde_json::to_string_pretty(status).expect("the status is serialisable");
    fs::write(&temporary, text + "\n").map_err(write_err)?;
    fs::rename(&temporary, path).map_err(write_err)
}

/// Reads the state file; `Ok(None)` when there is none.
///
/// # Errors
/// Fails when the file exists but cannot be read or parsed.
pub fn read_state(path: &Path) -> Result<Option<AgentStatus>, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| StateError::Parse {
            path: path.to_owned(),
            source,
        })
}

/// Removes the state file; an absent file is not an error.
///
/// # Errors
/// Fails when the file exists and cannot be removed.
pub fn remove_state(path: &Path) -> Result<bool, StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StateError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_status() -> AgentStatus {
        AgentStatus {
            startup_complete: true,
            maps_filled: true,
            rules_installed: true,
            last_reload: Some(ReloadRecord {
                at: 1.0,
                result: ReloadResult::Applied {
                    added: 4,
                    removed: 0,
                    failed: 0,
                    elapsed_ms: 0.5,
                },
            }),
            ..AgentStatus::default()
        }
    }

    #[test]
    fn ready_when_everything_is_in_place() {
        assert!(not_ready_reasons(&ready_status(), &[]).is_empty());
    }

    #[test]
    fn starting_is_not_ready_and_says_so_alone() {
        let status = AgentStatus::default();
        let reasons = not_ready_reasons(&status, &["ignored".into()]);
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].starts_with("starting"), "{reasons:?}");
    }

    #[test]
    fn failed_reload_is_not_ready_until_a_good_one() {
        let mut status = ready_status();
        status.last_reload = Some(ReloadRecord {
            at: 2.0,
            result: ReloadResult::Rejected {
                error: "/etc/config/ip-masq-agent: bad CIDR".into(),
            },
        });
        assert_eq!(
            not_ready_reasons(&status, &[]),
            ["last config reload failed: /etc/config/ip-masq-agent: bad CIDR"]
        );
        status.last_reload = ready_status().last_reload;
        assert!(not_ready_reasons(&status, &[]).is_empty());
    }

    #[test]
    fn withheld_rules_are_a_reason_of_their_own() {
        let mut status = ready_status();
        status.rules_installed = false;
        status.maps_filled = false;
        status.rules_withheld = true;
        status.last_reload = Some(ReloadRecord {
            at: 2.0,
            result: ReloadResult::Rejected {
                error: "bad CIDR".into(),
            },
        });
        assert_eq!(
            not_ready_reasons(&status, &[]),
            [
                "config rejected and no earlier table to keep: no masquerade rules installed, nothing is masqueraded until a valid config arrives",
                "last config reload failed: bad CIDR",
            ]
        );
    }

    #[test]
    fn empty_maps_rules_and_attach_failures_are_reported() {
        let mut status = ready_status();
        status.maps_filled = false;
        status.last_reload = None;
        status.rules_error = Some("iptables-restore failed".into());
        status.attach_failures.push(AttachFailure {
            interface: "veth1".into(),
            ifindex: 4,
            error: "EPERM".into(),
        });
        let reasons = not_ready_reasons(&status, &["IPv4 rules missing".into()]);
        assert_eq!(
            reasons,
            [
                "maps not filled yet",
                "cannot install the iptables rules: iptables-restore failed",
                "IPv4 rules missing",
                "classifier not attached to veth1: EPERM",
            ]
        );
    }

    #[test]
    fn liveness_tolerates_startup_but_not_a_stalled_loop() {
        assert!(liveness(false, Duration::from_secs(3600)).is_ok());
        assert!(liveness(true, Duration::from_secs(5)).is_ok());
        let err = liveness(true, LIVENESS_STALL_LIMIT + Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("stalled"), "{err}");
    }

    #[test]
    fn state_file_is_named_after_the_pin_dir() {
        let dir = Path::new("/run/ip-masq");
        let a = state_file_path(dir, Path::new("/sys/fs/bpf/ip-masq"));
        assert_eq!(a, state_file_path(dir, Path::new("/sys/fs/bpf/ip-masq/")));
        assert_eq!(a, state_file_path(dir, Path::new("/sys/fs/bpf/./ip-masq")));
        assert_ne!(a, state_file_path(dir, Path::new("/tmp/bpf/ip-masq")));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("ip-masq-") && name.ends_with(".json"),
            "{name}"
        );
        // FNV-1a, checked independently: stable across builds and versions.
        assert_eq!(name, "ip-masq-7b01bdf952c54f69.json");
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("ip-masq-state-test-{}", std::process::id()));
        let path = dir.join("x.json");
        let mut status = ready_status();
        status.attached.push(AttachedInterface {
            name: "veth1".into(),
            ifindex: 4,
        });
        status.iptables_repairs.ipv4 = 2;
        write_state(&path, &status).unwrap();
        assert_eq!(read_state(&path).unwrap(), Some(status));
        assert!(remove_state(&path).unwrap());
        assert_eq!(read_state(&path).unwrap(), None);
        assert!(!remove_state(&path).unwrap());
        fs::remove_dir(&dir).unwrap();
    }

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

//! The status shared between the run loop, its only writer, and the HTTP
//! handlers, which read snapshots and check the iptables rules.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::kernel::iptables::{Installer, RulesError};
use crate::model::Family;

use super::{AgentStatus, family_label};

/// How long a readiness verdict on the iptables rules is reused, so that a
/// burst of probes costs at most one `iptables -S` per family per second.
const RULES_CHECK_CACHE: Duration = Duration::from_secs(1);

/// A live check of one family's iptables rules against what the loop
/// installed, for `/readyz`. The loop hands over one per family after each
/// successful install, taken as the rules stood right after its last write.
pub(crate) trait RulesCheck: Send + Sync {
    /// Whether the rules are still as the loop left them.
    ///
    /// # Errors
    /// Fails when the rules cannot be listed.
    fn verify(&self) -> Result<bool, RulesError>;
}

/// A copy of the loop's installer holds the listing it saw after its last
/// write, so any later change by someone else is detected.
impl RulesCheck for Installer {
    fn verify(&self) -> Result<bool, RulesError> {
        Installer::verify(self)
    }
}

/// The state shared between the run loop and the HTTP handlers.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Mutex<Inner>>,
    repair: Arc<Notify>,
}

struct Inner {
    status: AgentStatus,
    /// The loop's rule checks, taken after each successful ensure.
    verifiers: Vec<(Family, Arc<dyn RulesCheck>)>,
    last_beat: Instant,
    rules_check: Option<(Instant, Vec<String>)>,
}

impl Shared {
    pub(crate) fn new(status: AgentStatus) -> Self {
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
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the status.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut AgentStatus) -> T) -> T {
        change(&mut self.lock().status)
    }

    pub(crate) fn snapshot(&self) -> AgentStatus {
        self.lock().status.clone()
    }

    /// Records that the loop made progress.
    pub(crate) fn beat(&self) {
        self.lock().last_beat = Instant::now();
    }

    pub(crate) fn since_last_beat(&self) -> Duration {
        self.lock().last_beat.elapsed()
    }

    /// Hands the readiness check the rule checks as they are right after a
    /// successful ensure, and drops any cached verdict.
    pub(crate) fn set_verifiers(&self, verifiers: Vec<(Family, Arc<dyn RulesCheck>)>) {
        let mut inner = self.lock();
        inner.verifiers = verifiers;
        inner.rules_check = None;
    }

    /// Checks the live iptables rules against what the loop installed.
    /// Blocking: runs `iptables -S`. When rules are missing or changed it
    /// also asks the loop to repair them at once.
    pub(crate) fn check_rules(&self) -> Vec<String> {
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
    pub(crate) async fn repair_requested(&self) {
        self.repair.notified().await;
    }
}

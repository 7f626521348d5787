//! The static iptables rules: installed once a table is in force, kept in
//! place, and withheld while there is none; and when the agent is ready.

use tracing::{error, info, warn};

use crate::error::error_chain;
use crate::kernel::iptables::RulesError;
use crate::serve::state::not_ready_reasons;

use super::Agent;
use super::host::{Links, Maps, Rules};

impl<K: Maps + Links, R: Rules> Agent<K, R> {
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
    pub(super) fn install_pending_rules(&mut self) {
        if self.table_in_force()
            && !self.shared.snapshot().rules_installed
            && let Err(err) = self.keep_rules()
        {
            error!(error = %error_chain(&err), "cannot install iptables rules");
        }
    }

    /// Logs "ready:" once, when `/readyz` would first answer 200: a table
    /// in force, the rules in place, the last reload applied and every
    /// selected interface attached. A restart on a refused file keeps the
    /// restored table but is not ready (its own log line says why), so the
    /// log and `/readyz` never disagree.
    pub(super) fn announce_ready(&mut self) {
        if self.ready_announced {
            return;
        }
        let status = self.shared.snapshot();
        if !status.startup_complete
            || !status.rules_installed
            || !not_ready_reasons(&status, &[]).is_empty()
        {
            return;
        }
        self.ready_announced = true;
        info!(
            interfaces = self.attached.len(),
            "ready: maps filled, classifier attached, rules in place"
        );
    }

    /// Installs or repairs the rules, and tells the readiness check what it
    /// should now find.
    ///
    /// Without any table in force (a first start on an invalid file, with
    /// empty maps) nothing is installed: the chain's last rule would
    /// masquerade everything, where ip-masq-agent in that state writes no
    /// chain and masquerades nothing.
    pub(super) fn keep_rules(&mut self) -> Result<(), RulesError> {
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
                        .map(|installer| (installer.family(), installer.check()))
                        .collect(),
                );
            }
            Err(err) => self
                .shared
                .update(|status| status.rules_error = Some(error_chain(err))),
        }
        result
    }
}

//! Making the kernel hold one family's rule set, and checking that it still
//! does. Each call reads the nat table once (`iptables -t nat -S`) and
//! writes only what that listing shows missing.

use std::sync::Arc;

use crate::kernel::iptables::{
    RulesError,
    rules::{RuleSet, validate_pin_path},
    runner::{self, Runner, System},
};
use crate::model::Family;

/// What [`Installer::ensure`] had to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// The chain was (re)written because it was missing or not as we left it.
    pub(crate) chain_rewritten: bool,
    /// The POSTROUTING jump was missing and added.
    pub(crate) jump_added: bool,
    /// Duplicate jumps removed.
    pub(crate) duplicate_jumps_removed: usize,
}

impl Repairs {
    /// Whether anything was written.
    pub(crate) fn any(&self) -> bool {
        self.chain_rewritten || self.jump_added || self.duplicate_jumps_removed > 0
    }
}

/// What [`Installer::remove`] found and removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// POSTROUTING jumps to the chain.
    pub jumps: usize,
    /// Whether the chain existed.
    pub chain: bool,
}

/// What one listing of the nat table shows of our rules.
struct Found {
    /// Our chain's rules as listed, `None` when the chain does not exist.
    chain: Option<Vec<String>>,
    /// Copies of our POSTROUTING jump.
    jumps: usize,
}

/// Installs one family's rule set and keeps it installed. Cloned for the
/// readiness check, which verifies against the same expected listing.
#[derive(Clone, Debug)]
pub struct Installer {
    family: Family,
    rules: RuleSet,
    runner: Arc<dyn Runner>,
    /// Our chain as `iptables -S` printed it right after our first write:
    /// any difference later means someone else changed it. The rule set
    /// never changes, so neither does how the kernel prints it, and a
    /// rewrite need not read it back again.
    expected_listing: Option<Vec<String>>,
}

impl Installer {
    /// An installer that runs the system's iptables.
    pub(crate) fn new(family: Family, rules: RuleSet) -> Self {
        Self::with_runner(family, rules, Arc::new(System))
    }

    /// An installer that runs its commands through `runner`.
    pub(crate) fn with_runner(family: Family, rules: RuleSet, runner: Arc<dyn Runner>) -> Self {
        Self {
            family,
            rules,
            runner,
            expected_listing: None,
        }
    }

    /// The address family this installer manages.
    pub(crate) fn family(&self) -> Family {
        self.family
    }

    /// Makes the kernel hold exactly our chain and one jump to it. The first
    /// call always writes the chain, which also takes over a chain left by
    /// ip-masq-agent, and then reads it back; later calls read first and
    /// write only what differs. Either way the nat table is listed once.
    ///
    /// # Errors
    /// Fails when iptables cannot be run or refuses a command.
    pub(crate) fn ensure(&mut self) -> Result<Repairs, RulesError> {
        let mut repairs = Repairs::default();
        let found = match &self.expected_listing {
            None => {
                self.restore_chain()?;
                repairs.chain_rewritten = true;
                let found = self.look()?;
                self.expected_listing.clone_from(&found.chain);
                found
            }
            Some(expected) => {
                let found = self.look()?;
                if found.chain.as_ref() != Some(expected) {
                    // `--noflush` with only our chain declared leaves
                    // POSTROUTING alone, so the listing's jumps still hold.
                    self.restore_chain()?;
                    repairs.chain_rewritten = true;
                }
                found
            }
        };
        if found.jumps == 0 {
            self.jump("-A")?;
            repairs.jump_added = true;
        }
        for _ in 1..found.jumps {
            self.jump("-D")?;
            repairs.duplicate_jumps_removed += 1;
        }
        Ok(repairs)
    }

    /// Whether the rules are in place, without changing anything.
    ///
    /// # Errors
    /// Fails when iptables cannot be run.
    pub(crate) fn verify(&self) -> Result<bool, RulesError> {
        let found = self.look()?;
        Ok(found.chain.is_some() && found.chain == self.expected_listing && found.jumps == 1)
    }

    /// Removes the jump and the chain.
    ///
    /// # Errors
    /// Fails when iptables refuses to delete what exists.
    pub(crate) fn remove(&self) -> Result<Removed, RulesError> {
        let found = self.look()?;
        for _ in 0..found.jumps {
            self.jump("-D")?;
        }
        if found.chain.is_some() {
            let chain = self.rules.chain.as_str();
            runner::iptables(&*self.runner, self.family, &["-t", "nat", "-F", chain])?;
            runner::iptables(&*self.runner, self.family, &["-t", "nat", "-X", chain])?;
        }
        Ok(Removed {
            jumps: found.jumps,
            chain: found.chain.is_some(),
        })
    }

    /// Lists the nat table and picks out our chain and jumps.
    fn look(&self) -> Result<Found, RulesError> {
        let dump = runner::list_nat(&*self.runner, self.family)?;
        let chain = &self.rules.chain;
        Ok(Found {
            chain: dump.has_chain("nat", chain).then(|| {
                dump.chain_rules("nat", chain)
                    .iter()
                    .map(|rule| rule.text.clone())
                    .collect()
            }),
            jumps: dump
                .chain_rules("nat", "POSTROUTING")
                .iter()
                .filter(|rule| self.rules.is_jump(rule))
                .count(),
        })
    }

    /// Appends (`-A`) or deletes (`-D`) one copy of our POSTROUTING jump.
    fn jump(&self, action: &str) -> Result<(), RulesError> {
        let jump = self.rules.jump_args();
        let mut args = vec!["-t", "nat", action, "POSTROUTING"];
        args.extend(jump.iter().map(String::as_str));
        runner::iptables(&*self.runner, self.family, &args).map(drop)
    }

    fn restore_chain(&self) -> Result<(), RulesError> {
        validate_pin_path(&self.rules.pin_dir).map_err(|reason| RulesError::PinPath {
            path: self.rules.pin_dir.clone(),
            reason,
        })?;
        runner::restore(
            &*self.runner,
            self.family,
            &self.rules.chain_restore_input(self.family),
        )
    }
}

#[cfg(test)]
mod tests;

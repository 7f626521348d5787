//! iptables, in one place:
//!
//! - `rules`: the rule set the flags fix, as iptables-restore input and
//!   as the POSTROUTING jump (pure);
//! - `save`: the only parser of `iptables-save` and `iptables -S` output
//!   (pure);
//! - `runner`: the only code that runs iptables, iptables-restore and
//!   iptables-save, each waiting a bounded time for the xtables lock;
//! - `installer`: making the kernel hold the rule set, and checking that
//!   it still does, with one listing of the nat table each time;
//! - `backends`: the dumps of every iptables backend that `status` and
//!   `doctor` read.

use std::{io, path::PathBuf};

use thiserror::Error;

pub(crate) mod backends;
mod installer;
mod rules;
pub(crate) mod runner;
pub(crate) mod save;

pub use installer::{Installer, Removed, Repairs};
pub use rules::{RuleSet, supports_random_fully};
pub(crate) use rules::{validate_chain_name, validate_pin_path};
pub use runner::iptables_version;

/// Errors of the iptables layer.
#[derive(Debug, Error)]
pub enum RulesError {
    #[error("pin directory {path} cannot be named in an xt_bpf rule: it {reason}")]
    PinPath { path: PathBuf, reason: String },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{command} gave up after waiting {seconds} s for the xtables lock, which another program holds"
    )]
    LockTimeout { command: String, seconds: u32 },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

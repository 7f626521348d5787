//! What `status` and `doctor` look at: the agent installation on this node,
//! resolved from their flags, else the agent's state file, else the
//! defaults; the report they print; and their errors.

use std::{io, path::PathBuf, process::ExitCode};

use thiserror::Error;

use crate::kernel::iptables::RulesError;
use crate::kernel::netlink;
use crate::kernel::netlink::PatternError;
use crate::kernel::netlink::Selector;
use crate::model::Family;
use crate::options::InstalledOptions;
use crate::serve::state;
use crate::serve::state::AgentStatus;

/// Errors of `status` and `doctor`.
#[derive(Debug, Error)]
pub enum InspectError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("cannot list interfaces")]
    Interfaces(#[from] netlink::InterfacesError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),
}

/// A command's text output and how many problems it found; exit code 1
/// when there is any.
#[derive(Debug)]
pub struct Report {
    pub(crate) output: String,
    pub(crate) problems: usize,
}

impl Report {
    /// Prints the output and returns the exit code.
    pub fn print(self) -> ExitCode {
        print!("{}", self.output);
        if self.problems == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// The agent installation a command looks at: flags, else the state file,
/// else defaults.
#[derive(Debug)]
pub(crate) struct Installed {
    pub(crate) pin_dir: PathBuf,
    pub(crate) state_path: PathBuf,
    pub(crate) state: Option<AgentStatus>,
    pub(crate) chain: String,
    pub(crate) mark: u32,
    pub(crate) ipv6: bool,
    pub(crate) selector: Selector,
    /// Whether the agent attaches the classifier to interfaces (tc mode).
    pub(crate) attaches: bool,
}

impl Installed {
    /// # Errors
    /// Fails when the state file is unreadable or a glob is invalid.
    pub(crate) fn resolve(args: &InstalledOptions) -> Result<Self, InspectError> {
        let state_path = state::state_file_path(&args.state_dir, &args.pin_path);
        let state = state::read_state(&state_path)?;
        let chain = args
            .masq_chain
            .clone()
            .or_else(|| state.as_ref().map(|s| s.chain.clone()))
            .unwrap_or_else(|| "IP-MASQ-AGENT".into());
        let mark = args
            .mark
            .or_else(|| state.as_ref().map(|s| s.mark))
            .unwrap_or(ip_masq_common::DEFAULT_KEEP_SOURCE_MARK);
        let globs = args
            .interfaces
            .clone()
            .or_else(|| state.as_ref().and_then(|s| s.interfaces_selector.clone()));
        Ok(Self {
            pin_dir: args.pin_path.clone(),
            selector: Selector::parse(globs.as_deref())?,
            ipv6: args.enable_ipv6 || state.as_ref().is_some_and(|s| s.ipv6),
            attaches: state.as_ref().is_none_or(|s| s.attaches_to_interfaces),
            state_path,
            state,
            chain,
            mark,
        })
    }

    /// The address families whose rules the agent installs.
    pub(crate) fn families(&self) -> Vec<Family> {
        let mut families = vec![Family::V4];
        if self.ipv6 {
            families.push(Family::V6);
        }
        families
    }
}

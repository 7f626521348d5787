//! What the command line decided, resolved and validated, apart from any
//! side effect: the agent and the commands take these, never clap's types.

use std::path::PathBuf;

use ip_masq_config::ParseOptions;

use crate::kernel::{iptables::RuleSet, netlink::Selector};

/// Everything `run` needs, decided from the command line.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub config_path: PathBuf,
    pub parse: ParseOptions,
    pub rules: RuleSet,
    pub selector: Selector,
    pub pin_dir: PathBuf,
    pub max_entries: u32,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub metrics_address: std::net::SocketAddr,
    /// Directory of the state file that `ip-masq status` reads.
    pub state_dir: PathBuf,
    /// Largest config file accepted (`--max-config-bytes`).
    pub max_config_bytes: usize,
    /// Which conntrack entries a config change flushes.
    pub flush: crate::model::FlushScope,
    /// `--config-dir`: also read every `ip-masq*` file of this directory
    /// (empty: the config file's) and merge them.
    pub config_dir: Option<PathBuf>,
}

/// How to read a config file (`run` and `check`).
#[derive(Clone, Debug)]
pub struct ConfigOptions {
    /// The config file's path.
    pub config: PathBuf,
    /// `--enable-ipv6`.
    pub enable_ipv6: bool,
    /// `--nomasq-all-reserved-ranges`.
    pub nomasq_all_reserved_ranges: bool,
    /// `--max-cidrs`: capacity of each map.
    pub max_cidrs: u32,
    /// `--max-config-bytes`.
    pub max_config_bytes: u64,
    /// `--config-dir`: merge the directory's `ip-masq*` files too.
    pub config_dir: Option<PathBuf>,
}

impl ConfigOptions {
    /// The flags that change how the file is read.
    pub fn parse_options(&self) -> ParseOptions {
        ParseOptions {
            enable_ipv6: self.enable_ipv6,
            nomasq_all_reserved_ranges: self.nomasq_all_reserved_ranges,
        }
    }
}

/// `ip-masq check`.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub config: ConfigOptions,
    /// Print the stable JSON document.
    pub json: bool,
}

/// `ip-masq dump`.
#[derive(Clone, Debug)]
pub struct DumpOptions {
    pub pin_path: PathBuf,
    /// Where the agent's state file is, for each entry's config files.
    pub state_dir: PathBuf,
    pub json: bool,
}

/// `ip-masq cleanup`.
#[derive(Clone, Debug)]
pub struct CleanupOptions {
    pub pin_path: PathBuf,
    pub masq_chain: String,
    pub enable_ipv6: bool,
    pub state_dir: PathBuf,
}

/// Where to find an installed agent (`status`, `doctor`); what is left out
/// comes from the agent's state file, else the defaults.
#[derive(Clone, Debug)]
pub struct InstalledOptions {
    pub pin_path: PathBuf,
    pub state_dir: PathBuf,
    pub masq_chain: Option<String>,
    pub mark: Option<u32>,
    pub interfaces: Option<String>,
    pub enable_ipv6: bool,
    pub json: bool,
}

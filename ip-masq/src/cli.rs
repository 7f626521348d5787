//! Command-line interface: one definition drives parsing, `--help` and the
//! README's flag table.
//!
//! Flags shared with ip-masq-agent keep its names and meaning, so a
//! DaemonSet's `args:` carry over unchanged.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum, builder::PossibleValue};

use crate::{
    model::{DatapathMode, FlushScope},
    options::{CheckOptions, CleanupOptions, ConfigOptions, DumpOptions, InstalledOptions},
};

/// Upstream's config path, so the same ConfigMap mount works.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/config/ip-masq-agent";
/// Default address of the metrics and health listener.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9483";
/// Default bpffs directory for pinned maps and links.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/ip-masq";

/// Decides which pod traffic is masqueraded, with an eBPF classifier and
/// three static iptables rules instead of one rule per CIDR.
///
/// Exit codes: 0 success; 1 a check found problems (`check`: the file is
/// invalid); 2 usage or runtime error (`check`: the file cannot be read).
#[derive(Debug, Parser)]
#[command(name = "ip-masq", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log verbosity like ip-masq-agent's -v: 0 warnings and errors,
    /// 1-2 info, 3-4 debug, 5+ trace. RUST_LOG overrides it.
    #[arg(
        short = 'v',
        long = "v",
        global = true,
        default_value_t = 2,
        value_name = "N"
    )]
    pub verbosity: u8,

    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: load and attach the classifier, keep the maps in sync
    /// with the config file and the iptables rules in place.
    Run(RunArgs),
    /// Validate a config file as `run` would and print the effective table.
    Check(CheckArgs),
    /// Print the CIDRs held by the pinned maps, with their actions.
    Dump(DumpArgs),
    /// Remove everything ip-masq installed: links, pins, chain and jump.
    Cleanup(CleanupArgs),
    /// Show what is installed: program, interfaces, rules, last reload, maps.
    /// Exits 1 when something is missing.
    Status(StatusArgs),
    /// Show how full masquerading is: the destinations whose masqueraded
    /// connections hold the most source ports, with the pods holding them,
    /// and conntrack's failure counters.
    Snat(SnatArgs),
    /// Look for what defeats non-masquerade on this node (other SNAT rules,
    /// mark bit clashes, pod interfaces without the classifier) and say how
    /// to fix each. Exits 1 when it finds anything.
    Doctor(DoctorArgs),
}

impl ValueEnum for FlushScope {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Off, Self::Connectionless, Self::All]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Off => PossibleValue::new("off"),
            Self::Connectionless => PossibleValue::new("connectionless"),
            Self::All => PossibleValue::new("all"),
        })
    }
}

// The flag's values, kept here so that the model type carries no clap.
impl ValueEnum for DatapathMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Tc, Self::XtBpf]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Tc => PossibleValue::new("tc")
                .help("a TC classifier on every pod interface marks pod traffic per packet"),
            Self::XtBpf => PossibleValue::new("xt-bpf")
                .help("the xt_bpf match judges each connection's first packet in the nat chain"),
        })
    }
}

/// Flags that change how the config file is interpreted.
#[derive(Clone, Debug, Args)]
pub struct ConfigArgs {
    /// Path of the config file (YAML or JSON, ip-masq-agent's format).
    #[arg(long = "config", value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// Also read every file whose name starts with `ip-masq` in DIR (without
    /// a value: the config file's directory) and merge them with the config
    /// file, as ip-masq-agent-v2 does: lists are unions, booleans OR'd, the
    /// shortest resyncInterval and the smallest cidrLimit win.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub config_dir: Option<Option<PathBuf>>,

    /// Also handle IPv6: IPv6 CIDRs, fe80::/10 and ip6tables rules.
    #[arg(long)]
    pub enable_ipv6: bool,

    /// With no nonMasqueradeCIDRs key, keep the source for every IPv4 range
    /// reserved by RFCs, not just RFC 1918.
    #[arg(long)]
    pub nomasq_all_reserved_ranges: bool,

    /// Capacity of each LPM map (per address family). Replaces upstream's
    /// 64-CIDR limit; a config over it is rejected whole.
    #[arg(long, value_name = "N", default_value_t = ip_masq_common::DEFAULT_MAP_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_cidrs: u32,

    /// Largest config file accepted, in bytes. The default, 1 MiB, is also
    /// the most a ConfigMap holds; a list delivered another way (a hostPath
    /// file) may need more: 100,000 CIDRs take about 2 MiB.
    #[arg(long, value_name = "BYTES", default_value_t = ip_masq_config::MAX_CONFIG_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_config_bytes: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Name of the nat chain holding the static rules.
    #[arg(long, value_name = "NAME", default_value = "IP-MASQ-AGENT",
          value_parser = parse_chain_name)]
    pub masq_chain: String,

    /// Mark bit(s) the classifier sets on keep-source packets (hex or decimal).
    #[arg(long, value_name = "HEX", default_value = "0x1000", value_parser = parse_mark)]
    pub mark: u32,

    /// Comma-separated interface name globs to attach to (e.g. `cni0` or
    /// `cali*`); by default every veth but one a default route leaves
    /// through.
    #[arg(long, value_name = "GLOBS")]
    pub interfaces: Option<String>,

    /// bpffs directory for pinned maps, links and the xt_bpf programs
    /// (an absolute path without spaces or quotes: iptables rules name it).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH,
          value_parser = parse_pin_path)]
    pub pin_path: PathBuf,

    /// Who judges pod traffic: `xt-bpf` runs the lookup in the nat chain
    /// (first packet of a connection only) and attaches nothing to
    /// interfaces; `tc` also marks it with a classifier on every pod
    /// interface (Linux 6.6+). Traffic the node sends itself is judged by
    /// xt_bpf in both.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = DatapathMode::XtBpf)]
    pub datapath: DatapathMode,

    /// Add --random-fully to MASQUERADE (ignored when iptables is older than 1.6.2).
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub random_fully: bool,

    /// Address of the HTTP listener for /metrics, /healthz and /readyz.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDRESS)]
    pub metrics_address: std::net::SocketAddr,

    /// Directory of the state file that `ip-masq status` reads (bpffs holds
    /// no regular files).
    #[arg(long, value_name = "DIR", default_value = crate::serve::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Which conntrack entries a config change flushes, so that flows alive
    /// across the change (or reusing its ports) are decided anew: `off`,
    /// `connectionless` (UDP and all but TCP and SCTP) or `all` (which
    /// breaks established TCP connections towards changed ranges).
    #[arg(long, value_enum, value_name = "SCOPE", default_value_t = FlushScope::Connectionless)]
    pub flush_conntrack: FlushScope,

    /// Source-port ranges for MASQUERADE, e.g. `1024-29999,32768-65535`:
    /// new TCP, UDP and SCTP connections are spread over them in proportion
    /// to their sizes.
    #[arg(long, value_name = "RANGES")]
    pub to_ports: Option<crate::model::ports::PortRanges>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,

    /// Preview a change instead: the ranges whose decision differs between
    /// OLD and NEW, both ways, with their sizes, and warnings for changes
    /// that commonly break egress.
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with = "against_running")]
    pub diff: Option<Vec<PathBuf>>,

    /// Preview NEW against what the running agent's pinned maps hold.
    #[arg(long, value_name = "NEW")]
    pub against_running: Option<PathBuf>,

    /// bpffs directory of the running agent's maps (for --against-running).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,
}

#[derive(Debug, Args)]
pub struct SnatArgs {
    /// The agent's `--to-ports`, when it has them [default: the
    /// namespace's net.ipv4.ip_local_port_range].
    #[arg(long, value_name = "RANGES")]
    pub to_ports: Option<crate::model::ports::PortRanges>,

    /// How many destinations to show, fullest first.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// bpffs directory of the pinned maps.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,

    /// Directory of the agent's state file, which names the config file of
    /// each entry when the agent merges several (`--config-dir`).
    #[arg(long, value_name = "DIR", default_value = crate::serve::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// bpffs directory of the pinned maps and links.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,

    /// Name of the nat chain to remove.
    #[arg(long, value_name = "NAME", default_value = "IP-MASQ-AGENT",
          value_parser = parse_chain_name)]
    pub masq_chain: String,

    /// Also remove the ip6tables chain and jump.
    #[arg(long)]
    pub enable_ipv6: bool,

    /// Directory of the agent's state file, which is removed too.
    #[arg(long, value_name = "DIR", default_value = crate::serve::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// Where to find an installed agent, for `status` and `doctor`. Settings
/// left out are taken from the agent's state file, else their defaults.
#[derive(Clone, Debug, Args)]
pub struct InstalledArgs {
    /// bpffs directory of the pinned maps and links.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,

    /// Directory of the agent's state file.
    #[arg(long, value_name = "DIR", default_value = crate::serve::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Name of the agent's nat chain [default: the agent's, else IP-MASQ-AGENT].
    #[arg(long, value_name = "NAME", value_parser = parse_chain_name)]
    pub masq_chain: Option<String>,

    /// Mark bit(s) the classifier sets [default: the agent's, else 0x1000].
    #[arg(long, value_name = "HEX", value_parser = parse_mark)]
    pub mark: Option<u32>,

    /// Interface globs the agent attaches to [default: the agent's, else every veth].
    #[arg(long, value_name = "GLOBS")]
    pub interfaces: Option<String>,

    /// Also look at IPv6 (ip6tables) [default: as the agent runs].
    #[arg(long)]
    pub enable_ipv6: bool,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub installed: InstalledArgs,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub installed: InstalledArgs,
}

impl From<&ConfigArgs> for ConfigOptions {
    fn from(args: &ConfigArgs) -> Self {
        Self {
            config: args.config.clone(),
            enable_ipv6: args.enable_ipv6,
            nomasq_all_reserved_ranges: args.nomasq_all_reserved_ranges,
            max_cidrs: args.max_cidrs,
            max_config_bytes: args.max_config_bytes,
            // An empty path stands for the config file's own directory.
            config_dir: args.config_dir.clone().map(Option::unwrap_or_default),
        }
    }
}

impl From<&CheckArgs> for CheckOptions {
    fn from(args: &CheckArgs) -> Self {
        Self {
            config: (&args.config).into(),
            json: args.json,
        }
    }
}

impl From<&DumpArgs> for DumpOptions {
    fn from(args: &DumpArgs) -> Self {
        Self {
            pin_path: args.pin_path.clone(),
            state_dir: args.state_dir.clone(),
            json: args.json,
        }
    }
}

impl From<&CleanupArgs> for CleanupOptions {
    fn from(args: &CleanupArgs) -> Self {
        Self {
            pin_path: args.pin_path.clone(),
            masq_chain: args.masq_chain.clone(),
            enable_ipv6: args.enable_ipv6,
            state_dir: args.state_dir.clone(),
        }
    }
}

impl From<&InstalledArgs> for InstalledOptions {
    fn from(args: &InstalledArgs) -> Self {
        Self {
            pin_path: args.pin_path.clone(),
            state_dir: args.state_dir.clone(),
            masq_chain: args.masq_chain.clone(),
            mark: args.mark,
            interfaces: args.interfaces.clone(),
            enable_ipv6: args.enable_ipv6,
            json: args.json,
        }
    }
}

fn parse_pin_path(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    crate::kernel::iptables::validate_pin_path(&path)
        .map(|()| path)
        .map_err(|reason| format!("pin path {value:?} {reason}"))
}

fn parse_chain_name(value: &str) -> Result<String, String> {
    crate::kernel::iptables::validate_chain_name(value)
        .map(|()| value.to_owned())
        .map_err(|reason| format!("chain name {value:?} {reason}"))
}

/// Parses a mark: `0x2000`, `0X2000` or `8192`; zero is refused because it
/// would mark nothing.
fn parse_mark(value: &str) -> Result<u32, String> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => value.parse(),
    }
    .map_err(|_| format!("mark {value:?} is not a 32-bit number"))?;
    if parsed == 0 {
        return Err("mark must have at least one bit set".into());
    }
    Ok(parsed)
}

/// The README's flag table and synopses checked against these definitions.
#[cfg(test)]
mod readme;

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_match_upstream() {
        let cli = Cli::try_parse_from(["ip-masq", "run"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(
            run.config.config,
            PathBuf::from("/etc/config/ip-masq-agent")
        );
        assert_eq!(run.masq_chain, "IP-MASQ-AGENT");
        assert_eq!(run.mark, 0x1000);
        assert_eq!(run.mark, ip_masq_common::DEFAULT_KEEP_SOURCE_MARK);
        assert!(run.random_fully);
        assert!(!run.config.enable_ipv6);
        assert_eq!(run.pin_path, PathBuf::from("/sys/fs/bpf/ip-masq"));
        assert_eq!(run.config.max_cidrs, 65_536);
    }

    #[test]
    fn random_fully_takes_go_style_values() {
        for (args, expected) in [
            (vec!["--random-fully=false"], false),
            (vec!["--random-fully"], true),
            (vec!["--random-fully=true"], true),
            (vec!["--random-fully", "false"], false),
        ] {
            let cli =
                Cli::try_parse_from(["ip-masq", "run"].into_iter().chain(args.clone())).unwrap();
            let Command::Run(run) = cli.command else {
                panic!()
            };
            assert_eq!(run.random_fully, expected, "{args:?}");
        }
    }

    #[test]
    fn mark_parsing() {
        assert_eq!(parse_mark("0x4000"), Ok(0x4000));
        assert_eq!(parse_mark("8192"), Ok(0x2000));
        assert!(parse_mark("0").is_err());
        assert!(parse_mark("0xzz").is_err());
        assert!(Cli::try_parse_from(["ip-masq", "run", "--mark", "0"]).is_err());
    }

    #[test]
    fn datapath_defaults_to_xt_bpf_and_takes_tc() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["ip-masq", "run"].iter().chain(args)).unwrap();
            let Command::Run(run) = cli.command else {
                panic!("expected run")
            };
            run.datapath
        };
        assert_eq!(parse(&[]), DatapathMode::XtBpf);
        assert_eq!(parse(&["--datapath", "tc"]), DatapathMode::Tc);
        assert_eq!(parse(&["--datapath=xt-bpf"]), DatapathMode::XtBpf);
        assert!(Cli::try_parse_from(["ip-masq", "run", "--datapath", "xdp"]).is_err());
    }

    #[test]
    fn run_pin_path_must_fit_an_iptables_rule() {
        assert!(Cli::try_parse_from(["ip-masq", "run", "--pin-path", "/run/bpf/x"]).is_ok());
        assert!(Cli::try_parse_from(["ip-masq", "run", "--pin-path", "rel/x"]).is_err());
        assert!(Cli::try_parse_from(["ip-masq", "run", "--pin-path", "/a b"]).is_err());
    }

    #[test]
    fn config_size_limit_defaults_to_one_mib_and_is_bounded() {
        let limit = |args: &[&str]| {
            let cli = Cli::try_parse_from(["ip-masq", "check"].iter().chain(args))?;
            let Command::Check(check) = cli.command else {
                panic!("expected check")
            };
            Ok::<_, clap::Error>(check.config.max_config_bytes)
        };
        assert_eq!(limit(&[]).unwrap(), 1024 * 1024);
        assert_eq!(
            limit(&["--max-config-bytes", "4194304"]).unwrap(),
            4 * 1024 * 1024
        );
        assert!(limit(&["--max-config-bytes", "100"]).is_err());
        assert!(limit(&["--max-config-bytes", "68719476736"]).is_err());
    }

    #[test]
    fn chain_name_is_validated() {
        assert!(Cli::try_parse_from(["ip-masq", "run", "--masq-chain", "A B"]).is_err());
        assert!(Cli::try_parse_from(["ip-masq", "run", "--masq-chain", "MY-CHAIN"]).is_ok());
    }

    #[test]
    fn verbosity_flag_is_upstreams() {
        let cli = Cli::try_parse_from(["ip-masq", "-v", "4", "run"]).unwrap();
        assert_eq!(cli.verbosity, 4);
        let cli = Cli::try_parse_from(["ip-masq", "run", "--v=0"]).unwrap();
        assert_eq!(cli.verbosity, 0);
    }

    #[test]
    fn every_flag_is_documented() {
        fn walk(command: &clap::Command) {
            for arg in command.get_arguments() {
                if arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{} --{} has no help text",
                    command.get_name(),
                    arg.get_id()
                );
            }
            for sub in command.get_subcommands() {
                assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
                walk(sub);
            }
        }
        walk(&Cli::command());
    }
}

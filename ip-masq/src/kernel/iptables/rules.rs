//! The rule set (pure): the chain's text as iptables-restore reads it, the
//! POSTROUTING jump, and the checks on the flags that name them.
//!
//! No text from the config file ever reaches these rules: the rule set
//! depends only on command-line flags, so a ConfigMap change never touches
//! iptables.
//!
//! The chain, in order:
//! 1. `tc` mode only: RETURN packets the TC classifier marked (pod traffic),
//!    unless the connection was DNATed. The classifier runs at the pod
//!    interface, before kube-proxy's DNAT in PREROUTING, so for a Service it
//!    looked up the ClusterIP, not the endpoint; ip-masq-agent decides in
//!    POSTROUTING on the translated destination, and so must we. A DNATed
//!    connection falls through to rule 2, which sees the translated address;
//! 2. RETURN packets the pinned socket filter matches (`-m bpf`, xt_bpf):
//!    the same destination lookup, for every new connection the classifier
//!    did not mark. In `tc` mode that is traffic that never crossed a pod
//!    interface (the node's own, and connections from outside into pods,
//!    which enter on the uplink) and pod traffic to masqueraded
//!    destinations, which the lookup confirms. The nat table sees only a
//!    connection's first packet, so this costs one lookup per such
//!    connection, and decisions match ip-masq-agent's, which go by
//!    destination whatever the source;
//! 3. MASQUERADE.

use std::path::{Path, PathBuf};

use crate::model::ports::PortRanges;

use crate::{
    kernel::datapath::xt_bpf_pin_path,
    kernel::iptables::save::Rule,
    model::{DatapathMode, Family},
};

/// Comment on the POSTROUTING jump. It is upstream ip-masq-agent's text, so
/// that on a node migrating from ip-masq-agent the existing jump is
/// recognised as ours and not duplicated.
fn jump_comment(chain: &str) -> String {
    format!(
        "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom {chain} chain"
    )
}
const KEEP_COMMENT: &str =
    "ip-masq: destination is non-masquerade (mark set by the eBPF classifier)";
const NODE_KEEP_COMMENT: &str = "ip-masq: destination is non-masquerade, for traffic the classifier did not mark (eBPF xt_bpf lookup)";
const XT_BPF_KEEP_COMMENT: &str = "ip-masq: destination is non-masquerade (eBPF xt_bpf lookup)";
/// Longest path xt_bpf accepts, without its terminating NUL (`XT_BPF_PATH_MAX - 1`).
const XT_BPF_PATH_MAX: usize = 511;
const MASQ_COMMENT: &str =
    "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)";

/// The rule set, fixed by command-line flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    pub chain: String,
    pub mark: u32,
    pub random_fully: bool,
    /// Which datapath decides keep-source, and so which RETURN rules the
    /// chain holds.
    pub datapath: DatapathMode,
    /// The pin directory (`--pin-path`), where the xt_bpf rules find their
    /// socket filters. It must pass `validate_pin_path`.
    pub pin_dir: PathBuf,
    /// `--to-ports`: per-protocol MASQUERADE rules over these source ports.
    pub to_ports: PortRanges,
}

impl RuleSet {
    /// Arguments of the POSTROUTING jump, after `-t nat -A POSTROUTING`.
    pub(crate) fn jump_args(&self) -> Vec<String> {
        [
            "-m",
            "comment",
            "--comment",
            &jump_comment(&self.chain),
            "-m",
            "addrtype",
            "!",
            "--dst-type",
            "LOCAL",
            "-j",
            &self.chain,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Whether `rule` (of the nat table) is our POSTROUTING jump: ours by
    /// its comment (upstream's text, so ip-masq-agent's jump counts too) and
    /// jumping to our chain with nothing after the target.
    pub(crate) fn is_jump(&self, rule: &Rule) -> bool {
        rule.chain == "POSTROUTING"
            && rule.comment() == Some(jump_comment(&self.chain).as_str())
            && rule.target() == Some((self.chain.as_str(), false))
            && rule.target_options().is_empty()
    }

    /// iptables-restore input that atomically replaces `family`'s chain
    /// contents (with `--noflush`, declaring the chain flushes only that
    /// chain).
    pub(crate) fn chain_restore_input(&self, family: Family) -> String {
        let chain = &self.chain;
        let program = xt_bpf_pin_path(&self.pin_dir, family);
        let program = program.display();
        let random_fully = if self.random_fully {
            " --random-fully"
        } else {
            ""
        };
        let keep_rules = match self.datapath {
            DatapathMode::Tc => {
                let mark = format!("{:#x}/{:#x}", self.mark, self.mark);
                format!(
                    "-A {chain} -m comment --comment \"{KEEP_COMMENT}\" -m mark --mark {mark} -m conntrack ! --ctstate DNAT -j RETURN\n\
                     -A {chain} -m comment --comment \"{NODE_KEEP_COMMENT}\" -m bpf --object-pinned {program} -j RETURN\n"
                )
            }
            DatapathMode::XtBpf => format!(
                "-A {chain} -m comment --comment \"{XT_BPF_KEEP_COMMENT}\" -m bpf --object-pinned {program} -j RETURN\n"
            ),
        };
        // --to-ports needs a protocol with ports; each protocol spreads its
        // new connections over the ranges in proportion to their sizes.
        let mut port_rules = String::new();
        for protocol in ["tcp", "udp", "sctp"] {
            for (range, probability) in self.to_ports.spread() {
                let statistic = probability
                    // Shortest round-trip digits, as upstream's FormatFloat(p, 'f', -1, 64).
                    .map(|p| format!(" -m statistic --mode random --probability {p}"))
                    .unwrap_or_default();
                port_rules.push_str(&format!(
                    "-A {chain} -p {protocol} -m comment --comment \"{MASQ_COMMENT}\"{statistic} -j MASQUERADE --to-ports {range}{random_fully}\n"
                ));
            }
        }
        format!(
            "*nat\n\
             :{chain} - [0:0]\n\
             {keep_rules}\
             {port_rules}\
             -A {chain} -m comment --comment \"{MASQ_COMMENT}\" -j MASQUERADE{random_fully}\n\
             COMMIT\n"
        )
    }
}

/// Whether `iptables --version` output supports `--random-fully` (1.6.2+).
pub fn supports_random_fully(version_output: &str) -> bool {
    let Some(version) = version_output
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))
    else {
        return false;
    };
    let parts: Vec<u32> = version
        .split('.')
        .map_while(|part| part.parse().ok())
        .collect();
    parts.as_slice() >= [1, 6, 2].as_slice()
}

/// Checks that a pin directory can be named in an xt_bpf rule: an absolute
/// path (iptables resolves it, not the agent) that iptables-restore reads
/// as one word and whose socket filter paths fit xt_bpf's limit.
///
/// # Errors
/// Returns why the path is unusable.
pub(crate) fn validate_pin_path(pin_dir: &Path) -> Result<(), String> {
    let Some(text) = pin_dir.to_str() else {
        return Err("is not valid UTF-8".into());
    };
    if !pin_dir.is_absolute() {
        return Err("is not an absolute path".into());
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\'))
    {
        return Err(format!(
            "contains {c:?}, which iptables-restore would split or unquote"
        ));
    }
    let longest = [Family::V4, Family::V6]
        .map(|family| xt_bpf_pin_path(pin_dir, family).as_os_str().len())
        .into_iter()
        .max()
        .unwrap_or_default();
    if longest > XT_BPF_PATH_MAX {
        return Err(format!(
            "makes program paths of {longest} bytes, over xt_bpf's {XT_BPF_PATH_MAX}"
        ));
    }
    Ok(())
}

/// Checks a `--masq-chain` value against iptables' rules for chain names.
///
/// # Errors
/// Returns why the name is unusable.
pub(crate) fn validate_chain_name(name: &str) -> Result<(), String> {
    const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
    const TARGETS: [&str; 6] = ["ACCEPT", "DROP", "RETURN", "QUEUE", "MASQUERADE", "SNAT"];
    if name.is_empty() || name.len() > 28 {
        return Err("must be 1 to 28 characters long".into());
    }
    if name.starts_with('-') || name.starts_with('!') {
        return Err("must not start with '-' or '!'".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may contain only letters, digits, '-', '_' and '.'".into());
    }
    if BUILTIN.contains(&name) || TARGETS.contains(&name) {
        return Err("is a built-in chain or target".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RuleSet {
        RuleSet {
            chain: "IP-MASQ-AGENT".into(),
            mark: 0x2000,
            random_fully: true,
            datapath: DatapathMode::Tc,
            pin_dir: PathBuf::from("/sys/fs/bpf/ip-masq"),
            to_ports: PortRanges::default(),
        }
    }

    #[test]
    fn restore_input_is_the_static_chain() {
        assert_eq!(
            rules().chain_restore_input(Family::V4),
            "*nat\n\
             :IP-MASQ-AGENT - [0:0]\n\
             -A IP-MASQ-AGENT -m comment --comment \"ip-masq: destination is non-masquerade (mark set by the eBPF classifier)\" -m mark --mark 0x2000/0x2000 -m conntrack ! --ctstate DNAT -j RETURN\n\
             -A IP-MASQ-AGENT -m comment --comment \"ip-masq: destination is non-masquerade, for traffic the classifier did not mark (eBPF xt_bpf lookup)\" -m bpf --object-pinned /sys/fs/bpf/ip-masq/xt_bpf_v4 -j RETURN\n\
             -A IP-MASQ-AGENT -m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE --random-fully\n\
             COMMIT\n"
        );
    }

    #[test]
    fn ipv6_chain_runs_the_ipv6_program() {
        let input = rules().chain_restore_input(Family::V6);
        assert!(input.contains("-m bpf --object-pinned /sys/fs/bpf/ip-masq/xt_bpf_v6 -j RETURN\n"));
        assert!(!input.contains("xt_bpf_v4"));
    }

    #[test]
    fn xt_bpf_mode_is_one_unrestricted_lookup_then_masquerade() {
        let rules = RuleSet {
            datapath: DatapathMode::XtBpf,
            ..rules()
        };
        assert_eq!(
            rules.chain_restore_input(Family::V4),
            "*nat\n\
             :IP-MASQ-AGENT - [0:0]\n\
             -A IP-MASQ-AGENT -m comment --comment \"ip-masq: destination is non-masquerade (eBPF xt_bpf lookup)\" -m bpf --object-pinned /sys/fs/bpf/ip-masq/xt_bpf_v4 -j RETURN\n\
             -A IP-MASQ-AGENT -m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE --random-fully\n\
             COMMIT\n"
        );
        let v6 = rules.chain_restore_input(Family::V6);
        assert!(v6.contains("-m bpf --object-pinned /sys/fs/bpf/ip-masq/xt_bpf_v6 -j RETURN\n"));
        assert!(!v6.contains("--mark"));
        assert!(!v6.contains("addrtype"));
    }

    #[test]
    fn program_path_follows_the_pin_dir() {
        let input = RuleSet {
            pin_dir: PathBuf::from("/run/bpf/other"),
            ..rules()
        }
        .chain_restore_input(Family::V4);
        assert!(input.contains("--object-pinned /run/bpf/other/xt_bpf_v4 -j RETURN"));
        assert!(!input.contains("/sys/fs/bpf"));
    }

    #[test]
    fn random_fully_can_be_left_out() {
        for datapath in [DatapathMode::Tc, DatapathMode::XtBpf] {
            let input = RuleSet {
                random_fully: false,
                datapath,
                ..rules()
            }
            .chain_restore_input(Family::V4);
            assert!(input.contains("-j MASQUERADE\n"));
            assert!(!input.contains("random-fully"));
        }
    }

    #[test]
    fn mark_and_chain_follow_the_flags() {
        let input = RuleSet {
            chain: "MY-CHAIN".into(),
            mark: 0x40000,
            ..rules()
        }
        .chain_restore_input(Family::V4);
        assert!(input.contains(":MY-CHAIN - [0:0]"));
        assert!(input.contains("--mark 0x40000/0x40000 -m conntrack ! --ctstate DNAT -j RETURN"));
        assert!(input.contains("-A MY-CHAIN -m comment"));
        assert!(!input.contains("IP-MASQ-AGENT"));
    }

    #[test]
    fn pin_paths_usable_in_rules() {
        assert_eq!(validate_pin_path(Path::new("/sys/fs/bpf/ip-masq")), Ok(()));
        assert_eq!(
            validate_pin_path(Path::new("/tmp/ip-masq-bpffs-12x3/ip-masq")),
            Ok(())
        );
        for bad in [
            "relative/ip-masq",
            "/sys/fs/bpf/ip masq",
            "/sys/fs/bpf/ip\tmasq",
            "/sys/fs/bpf/\"ip-masq\"",
            "/sys/fs/bpf/ip'masq",
            "/sys/fs/bpf/ip\\masq",
        ] {
            assert!(validate_pin_path(Path::new(bad)).is_err(), "{bad:?}");
        }
        // 511 bytes is xt_bpf's limit for the program path, "/xt_bpf_v4" included.
        let fits = format!("/{}", "a".repeat(511 - 1 - "/xt_bpf_v4".len()));
        assert_eq!(validate_pin_path(Path::new(&fits)), Ok(()));
        let too_long = format!("{fits}a");
        assert!(validate_pin_path(Path::new(&too_long)).is_err());
    }

    #[test]
    fn to_ports_adds_per_protocol_spread_rules_before_the_final_masquerade() {
        let input = RuleSet {
            to_ports: "1024-29999,32768-65535".parse().unwrap(),
            ..rules()
        }
        .chain_restore_input(Family::V4);
        let lines: Vec<&str> = input.lines().collect();
        // *nat, chain, two RETURNs, 3 protocols x 2 ranges, MASQUERADE, COMMIT
        assert_eq!(lines.len(), 2 + 2 + 6 + 1 + 1, "{input}");
        for (index, protocol) in ["tcp", "udp", "sctp"].into_iter().enumerate() {
            let first = lines[4 + 2 * index];
            let second = lines[5 + 2 * index];
            assert!(first.contains(&format!("-p {protocol} ")), "{first}");
            assert!(
                first.ends_with("-m statistic --mode random --probability 0.469292562840114 -j MASQUERADE --to-ports 1024-29999 --random-fully"),
                "{first}"
            );
            assert!(second.contains(&format!("-p {protocol} ")), "{second}");
            assert!(
                second.ends_with("-j MASQUERADE --to-ports 32768-65535 --random-fully"),
                "{second}"
            );
            assert!(!second.contains("statistic"));
        }
        assert!(lines[10].ends_with("-j MASQUERADE --random-fully"));
        assert_eq!(lines[11], "COMMIT");
    }

    #[test]
    fn jump_matches_upstream() {
        let args = rules().jump_args();
        assert_eq!(
            args.join(" "),
            "-m comment --comment ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT"
        );
    }

    #[test]
    fn random_fully_version_gate() {
        assert!(supports_random_fully("iptables v1.8.9 (nf_tables)"));
        assert!(supports_random_fully("iptables v1.6.2"));
        assert!(!supports_random_fully("iptables v1.6.1"));
        assert!(!supports_random_fully("iptables v1.4.21"));
        assert!(supports_random_fully("iptables v1.10.0 (legacy)"));
        assert!(!supports_random_fully("garbage"));
    }

    #[test]
    fn chain_names() {
        assert!(validate_chain_name("IP-MASQ-AGENT").is_ok());
        assert!(validate_chain_name("").is_err());
        assert!(validate_chain_name(&"A".repeat(29)).is_err());
        assert!(validate_chain_name("-X").is_err());
        assert!(validate_chain_name("A B").is_err());
        assert!(validate_chain_name("A;rm").is_err());
        assert!(validate_chain_name("POSTROUTING").is_err());
        assert!(validate_chain_name("MASQUERADE").is_err());
    }
}

//! The benchmark's test bed: a lab with one routed pod, and the contenders
//! that decide masquerading in its node namespace. Each contender is set up
//! and torn down completely around its measurement, and the bed checks that
//! nothing of the previous one is left, so that contenders never share a
//! rule or a program.

use std::{
    fmt,
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, ensure};
use lab::{
    Agent, AgentBuilder, Lab, LabOptions, Netns,
    topology::{EXTERNAL_INSIDE_V4, EXTERNAL_OUTSIDE_V4, NODE_UPLINK_V4, try_observed_source},
};

/// Name of the ip-masq-agent-equivalent chain; not the agent's own chain
/// name, so that the agent never takes it over.
pub(super) const CHAIN_B: &str = "BENCH-MASQ-AGENT";
const CHAIN_B_JUMP_COMMENT: &str = "bench: ip-masq-agent equivalent";
const MASQ_M_COMMENT: &str = "bench: bare masquerade";
/// ip-masq-agent's own comments, so the chain is byte for byte what it writes.
const UPSTREAM_RETURN_COMMENT: &str = "ip-masq-agent: local traffic is not subject to MASQUERADE";
const UPSTREAM_MASQ_COMMENT: &str =
    "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)";

/// Who decides masquerading in the node namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub(super) enum Contender {
    /// (a) No SNAT rule at all.
    None,
    /// (m) One bare MASQUERADE: the cost of NAT itself.
    Masquerade,
    /// (b) ip-masq-agent's chain: one RETURN per CIDR, then MASQUERADE.
    Chain,
    /// (c) ip-masq, TC classifier.
    IpMasq,
    /// (x) ip-masq `--datapath xt-bpf`.
    XtBpf,
    /// (s) an iptables RETURN on an ipset `hash:net` match, then
    /// MASQUERADE.
    IpSet,
    /// (n) a native nftables nat chain: RETURN on an interval set, then
    /// masquerade.
    NftSet,
}

impl Contender {
    /// The one-letter label the issue uses.
    pub(super) fn letter(self) -> &'static str {
        match self {
            Self::None => "a",
            Self::Masquerade => "m",
            Self::Chain => "b",
            Self::IpMasq => "c",
            Self::XtBpf => "x",
            Self::IpSet => "s",
            Self::NftSet => "n",
        }
    }

    pub(super) fn description(self) -> &'static str {
        match self {
            Self::None => "no SNAT rules",
            Self::Masquerade => "one bare MASQUERADE",
            Self::Chain => "ip-masq-agent chain (RETURN per CIDR)",
            Self::IpMasq => "ip-masq, tc classifier",
            Self::XtBpf => "ip-masq, --datapath xt-bpf",
            Self::IpSet => "iptables + ipset hash:net",
            Self::NftSet => "nftables interval set",
        }
    }

    /// Whether traffic to the flow destination is masqueraded.
    pub(super) fn masquerades(self) -> bool {
        self != Self::None
    }

    /// Whether the contender honours the CIDR list (the inside address
    /// keeps its source).
    pub(super) fn has_exclusions(self) -> bool {
        matches!(
            self,
            Self::Chain | Self::IpMasq | Self::XtBpf | Self::IpSet | Self::NftSet
        )
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) {}", self.letter(), self.description())
    }
}

/// What the agent binary supports, read from its `--help`.
#[derive(Clone, Copy, Debug)]
pub(super) struct AgentFeatures {
    /// `run --datapath xt-bpf` exists.
    pub xt_bpf: bool,
    /// `run --max-config-bytes` exists.
    pub max_config_bytes: bool,
}

impl AgentFeatures {
    pub(super) fn probe() -> anyhow::Result<Self> {
        let output = Command::new(lab::agent::agent_binary())
            .args(["run", "--help"])
            .output()
            .context("run ip-masq run --help")?;
        let help = String::from_utf8_lossy(&output.stdout);
        Ok(Self {
            xt_bpf: help.contains("--datapath") && help.contains("xt-bpf"),
            max_config_bytes: help.contains("--max-config-bytes"),
        })
    }
}

/// iptables-restore input for the (b) chain: link-local first, as
/// ip-masq-agent writes it by default, then one RETURN per CIDR.
pub(super) fn chain_b_restore_input(cidrs: &[String]) -> String {
    let mut input = String::with_capacity(96 * (cidrs.len() + 4));
    input.push_str("*nat\n");
    input.push_str(&format!(":{CHAIN_B} - [0:0]\n"));
    for cidr in std::iter::once("169.254.0.0/16").chain(cidrs.iter().map(String::as_str)) {
        input.push_str(&format!(
            "-A {CHAIN_B} -d {cidr} -m comment --comment \"{UPSTREAM_RETURN_COMMENT}\" -j RETURN\n"
        ));
    }
    input.push_str(&format!(
        "-A {CHAIN_B} -m comment --comment \"{UPSTREAM_MASQ_COMMENT}\" -j MASQUERADE --random-fully\n"
    ));
    input.push_str("COMMIT\n");
    input
}

fn chain_b_jump() -> Vec<String> {
    [
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        CHAIN_B_JUMP_COMMENT,
        "-m",
        "addrtype",
        "!",
        "--dst-type",
        "LOCAL",
        "-j",
        CHAIN_B,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn masquerade_rule() -> Vec<String> {
    [
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        MASQ_M_COMMENT,
        "-j",
        "MASQUERADE",
        "--random-fully",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A command that runs inside `netns`: the child enters it between fork
/// and exec, so nothing else (mounts, /sys) changes, unlike `ip netns exec`.
pub(super) fn command_in(netns: &Netns, program: &str) -> anyhow::Result<Command> {
    let file =
        File::open(netns.path()).with_context(|| format!("open {}", netns.path().display()))?;
    let mut command = Command::new(program);
    // SAFETY: setns is async-signal-safe; the fd was opened before fork and
    // stays open in the child until exec (it is then closed by CLOEXEC).
    unsafe {
        command.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
}

/// Loading the (b) chain may not take longer than this; the issue allows
/// skipping it where a run would take over a minute.
pub(super) const CHAIN_B_LIMIT: Duration = Duration::from_secs(60);

/// The bed: the lab, its one pod, and the running agent when (c) or (x)
/// is on.
pub(super) struct Bed {
    pub lab: Lab,
    pub features: AgentFeatures,
    agent: Option<Agent>,
    /// Whether the (b) chain is loaded.
    chain_b_loaded: bool,
    /// Capacity the agent is started with; enough for the largest list.
    max_cidrs: u32,
    /// Size of the config file the agent must accept.
    config_bytes: usize,
}

impl Bed {
    pub(super) fn new(features: AgentFeatures, max_cidrs: u32) -> anyhow::Result<Self> {
        let lab = Lab::new(LabOptions {
            routed_pods: 1,
            bridged_pods: 0,
            ipv6: false,
        });
        let bed = Self {
            lab,
            features,
            agent: None,
            chain_b_loaded: false,
            max_cidrs,
            config_bytes: 0,
        };
        // Connection tracking for every contender, (a) included, as on a
        // real node, where kube-proxy's rules always load it; this is
        // kube-proxy's own rule. Without it, (a) would skip conntrack while
        // the others pay for it.
        bed.iptables(&[
            "-t",
            "filter",
            "-A",
            "FORWARD",
            "-m",
            "conntrack",
            "--ctstate",
            "INVALID",
            "-j",
            "DROP",
        ])?;
        // The generator binds source ports from 1024 up.
        bed.lab
            .pods
            .first()
            .context("lab has a pod")?
            .netns
            .sysctl("net.ipv4.ip_local_port_range", "1024 65535");
        Ok(bed)
    }

    pub(super) fn pod_netns(&self) -> &Netns {
        &self.lab.pods[0].netns
    }

    pub(super) fn pod_ip(&self) -> IpAddr {
        self.lab.pods[0].ipv4
    }

    pub(super) fn pod_interface(&self) -> &str {
        &self.lab.pods[0].host_interface
    }

    pub(super) fn destination() -> Ipv4Addr {
        EXTERNAL_OUTSIDE_V4.parse().expect("constant")
    }

    /// Runs iptables inside the node namespace.
    pub(super) fn iptables(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-w"];
        all.extend_from_slice(args);
        self.run_in_node("iptables", &all).map(drop)
    }

    fn iptables_owned(&self, prefix: &[&str], args: &[String]) -> anyhow::Result<()> {
        let mut all: Vec<&str> = prefix.to_vec();
        all.extend(args.iter().map(String::as_str));
        self.iptables(&all)
    }

    /// `iptables -t nat -S CHAIN` in the node namespace.
    pub(super) fn nat_listing(&self, chain: &str) -> anyhow::Result<String> {
        self.run_in_node("iptables", &["-w", "-t", "nat", "-S", chain])
    }

    /// Loads (or replaces) the (b) chain, unreferenced until (b) is
    /// activated, and returns how long iptables-restore took.
    ///
    /// (b) gets a bed of its own: with 100,000 rules in a namespace's nat
    /// table every nftables commit there takes seconds, and freeing them
    /// keeps a kernel worker busy for a while; neither may slow the other
    /// contenders.
    pub(super) fn load_chain_b(
        &mut self,
        cidrs: &[String],
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let took = self.feed(
            "iptables-restore",
            &["-w", "--noflush"],
            &chain_b_restore_input(cidrs),
            timeout,
        )?;
        self.chain_b_loaded = true;
        Ok(took)
    }

    /// Removes the (b) chain.
    pub(super) fn drop_chain_b(&mut self) -> anyhow::Result<()> {
        if self.nat_listing(CHAIN_B).is_ok() {
            self.iptables(&["-t", "nat", "-F", CHAIN_B])?;
            self.iptables(&["-t", "nat", "-X", CHAIN_B])?;
        }
        self.chain_b_loaded = false;
        Ok(())
    }

    /// Writes the agent's config file for the next (c)/(x) start.
    pub(super) fn write_config(&mut self, text: &str) {
        self.config_bytes = text.len();
        self.lab.write_config(text);
    }

    /// Makes the agent accept config files of `bytes` from its next start.
    pub(super) fn expect_config_bytes(&mut self, bytes: usize) {
        self.config_bytes = bytes;
    }

    /// Whether the agent can take the current config file: over the
    /// agent's default 1 MiB cap it needs `--max-config-bytes`.
    pub(super) fn agent_can_load_config(&self) -> bool {
        self.config_bytes <= DEFAULT_MAX_CONFIG_BYTES || self.features.max_config_bytes
    }

    /// The agent's command line for contender (c) or (x).
    pub(super) fn agent_builder(&self, contender: Contender) -> AgentBuilder {
        let max_cidrs = self.max_cidrs.to_string();
        let mut extra = vec!["--max-cidrs", &max_cidrs, "--interfaces", "vpod*"];
        let max_bytes = (self.config_bytes + 1)
            .max(DEFAULT_MAX_CONFIG_BYTES)
            .to_string();
        if self.features.max_config_bytes && self.config_bytes > DEFAULT_MAX_CONFIG_BYTES {
            extra.extend(["--max-config-bytes", &max_bytes]);
        }
        if contender == Contender::XtBpf {
            extra.extend(["--datapath", "xt-bpf"]);
        }
        self.lab.agent(&extra)
    }

    /// Sets `contender` up and checks that it decides as it should.
    pub(super) fn activate(&mut self, contender: Contender) -> anyhow::Result<()> {
        match contender {
            Contender::None => {}
            Contender::Masquerade => {
                self.iptables_owned(&["-t", "nat", "-A"], &masquerade_rule())?;
            }
            Contender::Chain => {
                ensure!(self.chain_b_loaded, "the (b) chain is not loaded");
                self.iptables_owned(&["-t", "nat", "-A"], &chain_b_jump())?;
            }
            Contender::IpMasq | Contender::XtBpf => self.start_agent(contender)?,
            Contender::IpSet => self.activate_ipset()?,
            Contender::NftSet => self.activate_nft()?,
        }
        self.check_decisions(contender)
    }

    /// Tears `contender` down completely and checks that nothing is left.
    pub(super) fn deactivate(&mut self, contender: Contender) -> anyhow::Result<()> {
        match contender {
            Contender::None => {}
            Contender::Masquerade => {
                self.iptables_owned(&["-t", "nat", "-D"], &masquerade_rule())?;
            }
            Contender::Chain => {
                // The jump is missing when the activation failed half-way.
                if self.nat_listing("POSTROUTING")?.contains(CHAIN_B) {
                    self.iptables_owned(&["-t", "nat", "-D"], &chain_b_jump())?;
                }
            }
            Contender::IpMasq | Contender::XtBpf => self.stop_agent()?,
            Contender::IpSet => self.deactivate_ipset()?,
            Contender::NftSet => self.deactivate_nft()?,
        }
        self.check_clean()
    }

    /// The running agent's process id.
    pub(super) fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Agent::pid)
    }

    pub(super) fn agent(&self) -> Option<&Agent> {
        self.agent.as_ref()
    }

    /// Starts the agent as `contender` would run it and waits until it is ready.
    pub(super) fn start_agent(&mut self, contender: Contender) -> anyhow::Result<()> {
        ensure!(self.agent.is_none(), "an agent already runs");
        let agent = self.agent_builder(contender).spawn();
        let ready = lab::wait_until(Duration::from_secs(60), || agent.log().contains("ready:"));
        let log = agent.log();
        // Kept even when not ready, so that the guard kills it.
        self.agent = Some(agent);
        ensure!(
            ready,
            "{contender}: the agent did not get ready; its log:\n{log}"
        );
        Ok(())
    }

    /// SIGTERM (the datapath stays), then `ip-masq cleanup`, which removes
    /// it: links, pins, chain and jump.
    pub(super) fn stop_agent(&mut self) -> anyhow::Result<()> {
        if let Some(mut agent) = self.agent.take() {
            let status = agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
            ensure!(status.is_some(), "agent did not exit on SIGTERM");
        }
        let pin_dir = self.lab.bpffs.pin_dir();
        let state_dir = self.lab.state_dir();
        let mut cleanup = AgentBuilder::new(
            &self.lab.node.path(),
            &[
                "cleanup",
                "--pin-path",
                pin_dir.to_str().context("utf-8 pin path")?,
                "--state-dir",
                state_dir.to_str().context("utf-8 state dir")?,
            ],
        )
        .spawn();
        let status = cleanup
            .wait_exit(Duration::from_secs(20))
            .context("ip-masq cleanup did not finish")?;
        ensure!(
            status.success(),
            "ip-masq cleanup failed: {}",
            cleanup.log()
        );
        Ok(())
    }

    /// Nothing but the policy in POSTROUTING and no program on the pod
    /// interface.
    fn check_clean(&self) -> anyhow::Result<()> {
        let postrouting = self.nat_listing("POSTROUTING")?;
        let rules: Vec<&str> = postrouting
            .lines()
            .filter(|line| line.starts_with("-A "))
            .collect();
        ensure!(rules.is_empty(), "POSTROUTING still holds {rules:?}");
        ensure!(
            !self.nft_chain_active()?,
            "the nftables contender's chain is still hooked in"
        );
        let programs = self.lab.node.tcx_ingress_programs(self.pod_interface());
        ensure!(
            programs.is_empty(),
            "{} still runs {programs:?}",
            self.pod_interface()
        );
        Ok(())
    }

    /// The flow destination must see the node's address under every
    /// contender but (a); the inside address must keep the pod's address
    /// wherever the CIDR list is honoured.
    fn check_decisions(&self, contender: Contender) -> anyhow::Result<()> {
        let node: IpAddr = NODE_UPLINK_V4.parse()?;
        let pod = self.pod_ip();
        let cases = [
            (
                EXTERNAL_OUTSIDE_V4,
                if contender.masquerades() { node } else { pod },
            ),
            (
                EXTERNAL_INSIDE_V4,
                if contender.has_exclusions() || !contender.masquerades() {
                    pod
                } else {
                    node
                },
            ),
        ];
        for (destination, expected) in cases {
            let seen = try_observed_source(
                self.pod_netns(),
                &self.lab.external,
                destination.parse()?,
                Duration::from_secs(5),
            )
            .with_context(|| format!("{contender}: connection to {destination}"))?;
            ensure!(
                seen == expected,
                "{contender}: {destination} saw {seen}, expected {expected}"
            );
        }
        Ok(())
    }

    /// Forgets every conntrack entry in the node namespace, so that the next
    /// measurement starts from an empty table.
    pub(super) fn flush_conntrack(&self) -> anyhow::Result<()> {
        let output = command_in(&self.lab.node, "conntrack")?
            .arg("-F")
            .output()
            .context("run conntrack -F")?;
        // conntrack exits non-zero on an already empty table.
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.success() || stderr.contains("0 flow entries"),
            "conntrack -F failed: {}",
            stderr.trim()
        );
        Ok(())
    }

    pub(super) fn config_path(&self) -> std::path::PathBuf {
        self.lab.config_path()
    }
}

/// The agent's default cap on the config file size (`MAX_CONFIG_BYTES`).
pub(super) const DEFAULT_MAX_CONFIG_BYTES: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_b_is_upstreams_chain() {
        let input = chain_b_restore_input(&["172.16.0.0/12".into(), "1.2.3.0/24".into()]);
        let lines: Vec<&str> = input.lines().collect();
        assert_eq!(lines[0], "*nat");
        assert_eq!(lines[1], ":BENCH-MASQ-AGENT - [0:0]");
        assert!(lines[2].starts_with("-A BENCH-MASQ-AGENT -d 169.254.0.0/16 "));
        assert!(lines[3].starts_with("-A BENCH-MASQ-AGENT -d 172.16.0.0/12 "));
        assert!(lines[4].contains("-d 1.2.3.0/24") && lines[4].ends_with("-j RETURN"));
        assert!(lines[5].ends_with("-j MASQUERADE --random-fully"));
        assert_eq!(lines[6], "COMMIT");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn letters_and_decisions() {
        let all = [
            Contender::None,
            Contender::Masquerade,
            Contender::Chain,
            Contender::IpMasq,
            Contender::XtBpf,
            Contender::IpSet,
            Contender::NftSet,
        ];
        let letters: Vec<&str> = all.iter().map(|c| c.letter()).collect();
        assert_eq!(letters, ["a", "m", "b", "c", "x", "s", "n"]);
        assert!(Contender::IpSet.has_exclusions() && Contender::NftSet.masquerades());
        assert!(!Contender::None.masquerades());
        assert!(!Contender::Masquerade.has_exclusions());
        assert!(Contender::XtBpf.has_exclusions());
    }
}

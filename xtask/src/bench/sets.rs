//! The set-based contenders a user could pick instead of ip-masq: (s) an
//! iptables RETURN on an ipset `hash:net` match and (n) a native nftables
//! nat chain with an interval set. Each keeps the same CIDRs as the others
//! (link-local first, as ip-masq-agent does) and masquerades the rest, with
//! `--random-fully` as the others do.
//!
//! The sets are loaded once per list size, unreferenced, and each
//! contender's rules are added and removed around its measurement, as the
//! (b) chain is.

use std::{
    io::Write as _,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::node::{Bed, command_in};

/// The (s) contender's ipset.
pub(super) const IPSET_S: &str = "BENCH-KEEP";
/// The (s) contender's chain: RETURN on a set match, then MASQUERADE.
pub(super) const CHAIN_S: &str = "BENCH-SET-MASQ";
/// The (n) contender's nftables table; its set is `keep`, its chain
/// `postrouting`.
pub(super) const TABLE_N: &str = "bench_masq";
const JUMP_S_COMMENT: &str = "bench: ipset contender";

/// What each set took to load, as its tool reported success.
#[derive(Clone, Copy, Debug)]
pub(super) struct SetLoads {
    pub ipset: Duration,
    pub nft: Duration,
}

/// The destinations a contender keeps: link-local, then the list.
fn kept(cidrs: &[String]) -> impl Iterator<Item = &str> {
    std::iter::once("169.254.0.0/16").chain(cidrs.iter().map(String::as_str))
}

/// `ipset restore` input for the (s) set. `hash:net` stores each prefix as
/// given and looks a destination up once per prefix length it holds, so a
/// miss in a list of mixed lengths is its worst case.
pub(super) fn ipset_restore_input(cidrs: &[String]) -> String {
    let mut input = String::with_capacity(32 * (cidrs.len() + 2));
    let capacity = (cidrs.len() + 1).next_power_of_two().max(65_536);
    input.push_str(&format!(
        "create {IPSET_S} hash:net family inet hashsize {} maxelem {capacity}\n",
        capacity / 4
    ));
    for cidr in kept(cidrs) {
        input.push_str(&format!("add {IPSET_S} {cidr}\n"));
    }
    input
}

/// `nft -f` input for the (n) table with its set and no chain yet.
/// `auto-merge` folds nested and adjacent prefixes into intervals, which an
/// interval set needs (it refuses overlapping elements otherwise).
pub(super) fn nft_set_input(cidrs: &[String]) -> String {
    let mut input = String::with_capacity(24 * (cidrs.len() + 2) + 128);
    input.push_str(&format!(
        "table ip {TABLE_N} {{\n  set keep {{\n    type ipv4_addr\n    flags interval\n    auto-merge\n    elements = {{ "
    ));
    let mut first = true;
    for cidr in kept(cidrs) {
        if !first {
            input.push_str(", ");
        }
        first = false;
        input.push_str(cidr);
    }
    input.push_str(" }\n  }\n}\n");
    input
}

/// `nft -f` input that hooks the (n) chain in: local destinations are left
/// alone (`addrtype ! --dst-type LOCAL` in the iptables contenders), kept
/// ones return, the rest is masqueraded.
pub(super) fn nft_chain_input() -> String {
    format!(
        "add chain ip {TABLE_N} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         add rule ip {TABLE_N} postrouting fib daddr type local return\n\
         add rule ip {TABLE_N} postrouting ip daddr @keep return\n\
         add rule ip {TABLE_N} postrouting masquerade fully-random\n"
    )
}

/// The rule in POSTROUTING that sends traffic to the (s) chain.
pub(super) fn ipset_jump() -> Vec<String> {
    [
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        JUMP_S_COMMENT,
        "-m",
        "addrtype",
        "!",
        "--dst-type",
        "LOCAL",
        "-j",
        CHAIN_S,
    ]
    .map(str::to_owned)
    .to_vec()
}

impl Bed {
    /// Runs `program` in the node namespace with `input` on its stdin, and
    /// returns how long it took; fails past `timeout`.
    pub(super) fn feed(
        &self,
        program: &str,
        args: &[&str],
        input: &str,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut child = command_in(&self.lab.node, program)?
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {program}"))?;
        child
            .stdin
            .take()
            .context("stdin piped")?
            .write_all(input.as_bytes())
            .with_context(|| format!("feed {program}"))?;
        loop {
            if let Some(status) = child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                ensure!(
                    status.success(),
                    "{program} {} failed: {status}: {}",
                    args.join(" "),
                    stderr.trim()
                );
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{program} {} took over {timeout:?}", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `program` in the node namespace and fails on a non-zero exit;
    /// returns its output.
    pub(super) fn run_in_node(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = command_in(&self.lab.node, program)?
            .args(args)
            .output()
            .with_context(|| format!("run {program}"))?;
        ensure!(
            output.status.success(),
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Loads the (s) and (n) sets for `cidrs`, replacing earlier ones.
    pub(super) fn load_sets(
        &mut self,
        cidrs: &[String],
        timeout: Duration,
    ) -> anyhow::Result<SetLoads> {
        self.drop_sets()?;
        let ipset = self.feed("ipset", &["restore"], &ipset_restore_input(cidrs), timeout)?;
        let nft = self.feed("nft", &["-f", "-"], &nft_set_input(cidrs), timeout)?;
        Ok(SetLoads { ipset, nft })
    }

    /// Removes the (s) set and the (n) table, when there.
    pub(super) fn drop_sets(&mut self) -> anyhow::Result<()> {
        let sets = self.run_in_node("ipset", &["list", "-n"])?;
        if sets.lines().any(|name| name == IPSET_S) {
            self.run_in_node("ipset", &["destroy", IPSET_S])?;
        }
        if self.nft_table_exists()? {
            self.run_in_node("nft", &["delete", "table", "ip", TABLE_N])?;
        }
        Ok(())
    }

    fn nft_table_exists(&self) -> anyhow::Result<bool> {
        let tables = self.run_in_node("nft", &["list", "tables"])?;
        Ok(tables
            .lines()
            .any(|line| line.trim() == format!("table ip {TABLE_N}")))
    }

    /// Whether the (n) chain is hooked in.
    pub(super) fn nft_chain_active(&self) -> anyhow::Result<bool> {
        if !self.nft_table_exists()? {
            return Ok(false);
        }
        let table = self.run_in_node("nft", &["list", "table", "ip", TABLE_N])?;
        Ok(table.contains("chain postrouting"))
    }

    pub(super) fn activate_ipset(&mut self) -> anyhow::Result<()> {
        self.iptables(&["-t", "nat", "-N", CHAIN_S])?;
        self.iptables(&[
            "-t",
            "nat",
            "-A",
            CHAIN_S,
            "-m",
            "set",
            "--match-set",
            IPSET_S,
            "dst",
            "-j",
            "RETURN",
        ])?;
        self.iptables(&[
            "-t",
            "nat",
            "-A",
            CHAIN_S,
            "-j",
            "MASQUERADE",
            "--random-fully",
        ])?;
        let jump = ipset_jump();
        let mut args = vec!["-t", "nat", "-A"];
        args.extend(jump.iter().map(String::as_str));
        self.iptables(&args)
    }

    pub(super) fn deactivate_ipset(&mut self) -> anyhow::Result<()> {
        // Parts are missing when the activation failed half-way.
        if self.nat_listing("POSTROUTING")?.contains(CHAIN_S) {
            let jump = ipset_jump();
            let mut args = vec!["-t", "nat", "-D"];
            args.extend(jump.iter().map(String::as_str));
            self.iptables(&args)?;
        }
        if self.nat_listing(CHAIN_S).is_ok() {
            self.iptables(&["-t", "nat", "-F", CHAIN_S])?;
            self.iptables(&["-t", "nat", "-X", CHAIN_S])?;
        }
        Ok(())
    }

    pub(super) fn activate_nft(&mut self) -> anyhow::Result<()> {
        self.feed(
            "nft",
            &["-f", "-"],
            &nft_chain_input(),
            Duration::from_secs(30),
        )
        .map(drop)
    }

    pub(super) fn deactivate_nft(&mut self) -> anyhow::Result<()> {
        if self.nft_chain_active()? {
            self.run_in_node("nft", &["delete", "chain", "ip", TABLE_N, "postrouting"])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Vec<String> {
        vec!["172.16.0.0/12".into(), "1.2.3.0/24".into()]
    }

    #[test]
    fn the_ipset_holds_link_local_and_the_list() {
        let input = ipset_restore_input(&list());
        let lines: Vec<&str> = input.lines().collect();
        assert_eq!(
            lines[0],
            "create BENCH-KEEP hash:net family inet hashsize 16384 maxelem 65536"
        );
        assert_eq!(
            &lines[1..],
            [
                "add BENCH-KEEP 169.254.0.0/16",
                "add BENCH-KEEP 172.16.0.0/12",
                "add BENCH-KEEP 1.2.3.0/24"
            ]
        );
    }

    #[test]
    fn the_nft_set_holds_link_local_and_the_list() {
        let input = nft_set_input(&list());
        assert!(input.starts_with("table ip bench_masq {"));
        assert!(input.contains("flags interval"));
        assert!(input.contains("elements = { 169.254.0.0/16, 172.16.0.0/12, 1.2.3.0/24 }"));
        let chain = nft_chain_input();
        let rules: Vec<&str> = chain.lines().collect();
        assert!(rules[0].contains("type nat hook postrouting priority srcnat"));
        assert!(rules[1].ends_with("fib daddr type local return"));
        assert!(rules[2].ends_with("ip daddr @keep return"));
        assert!(rules[3].ends_with("masquerade fully-random"));
    }
}

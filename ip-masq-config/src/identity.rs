//! A config's identity: one hash of what the node does, so that a rollout
//! can be checked across nodes with one query (`ip_masq_config_info`).
//!
//! The hash covers the effective table (every prefix and its action, in
//! prefix order) and the flags that change decisions or rules, each as
//! `name=value`, sorted. It covers nothing else: not the file's spelling,
//! comments or key order, not the node's name, not the time. So two nodes
//! that decide alike show the same hash, and a restart keeps it.

use std::fmt::Write as _;

use ip_masq_common::Action;
use sha2::{Digest as _, Sha256};

use crate::table::Table;

/// Lowercase hex SHA-256 of the table and `flags` (pairs of name and value).
pub fn config_identity(table: &Table, flags: &[(&str, String)]) -> String {
    let mut canonical = String::from("ip-masq config identity 1\n");
    for (prefix, entry) in table.iter() {
        let action = match entry.action {
            Action::KeepSource => "keep-source",
            Action::Masquerade => "masquerade",
        };
        let _ = writeln!(canonical, "{prefix} {action}");
    }
    let mut flags: Vec<&(&str, String)> = flags.iter().collect();
    flags.sort();
    for (name, value) in flags {
        let _ = writeln!(canonical, "--{name}={value}");
    }
    let digest = Sha256::digest(canonical.as_bytes());
    digest
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ParseOptions, parse};

    fn table(text: &str) -> Table {
        Table::effective(
            &parse(text.as_bytes(), ParseOptions::default())
                .unwrap()
                .config,
            false,
        )
    }

    #[test]
    fn same_decisions_same_identity_whatever_the_spelling() {
        let flags = [("datapath", "tc".to_owned()), ("mark", "0x1000".to_owned())];
        let yaml = table("nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n# a comment\n");
        let json =
            table(r#"{"nonMasqueradeCIDRs": ["192.168.0.0/16", "10.0.0.0/8", "10.0.0.0/8"]}"#);
        let reordered = [flags[1].clone(), flags[0].clone()];
        assert_eq!(
            config_identity(&yaml, &flags),
            config_identity(&json, &reordered)
        );
        assert_eq!(config_identity(&yaml, &flags).len(), 64);
    }

    #[test]
    fn a_changed_decision_or_flag_changes_the_identity() {
        let flags = [("datapath", "tc".to_owned())];
        let base = config_identity(&table("nonMasqueradeCIDRs: [10.0.0.0/8]"), &flags);
        assert_ne!(
            base,
            config_identity(&table("nonMasqueradeCIDRs: [10.0.0.0/9]"), &flags)
        );
        assert_ne!(
            base,
            config_identity(
                &table("nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true"),
                &flags
            )
        );
        assert_ne!(
            base,
            config_identity(
                &table("nonMasqueradeCIDRs: [10.0.0.0/8]"),
                &[("datapath", "xt-bpf".to_owned())]
            )
        );
    }
}

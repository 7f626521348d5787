//! Reloads: applied, unchanged, retried after failed writes, and rejected
//! with the table in force kept (or, with none, no rules at all).

use ip_masq_config::MasqConfig;

use super::*;
use crate::serve::state::{ReloadResult, not_ready_reasons};

fn last_result(harness: &Harness) -> ReloadResult {
    harness.status().last_reload.expect("a reload").result
}

#[test]
fn a_valid_file_is_applied_to_the_maps() {
    let mut harness = Harness::new("applied");
    harness.write_config(TEN_AND_OTHERS);
    harness.agent.reload();
    let expected = harness.expected(TEN_AND_OTHERS);
    assert_eq!(harness.maps(), expected);
    assert!(
        matches!(
            last_result(&harness),
            ReloadResult::Applied { added, removed: 0, failed: 0, .. } if added == expected.len()
        ),
        "{:?}",
        last_result(&harness)
    );
    let status = harness.status();
    assert_eq!((status.reloads_succeeded, status.reloads_failed), (1, 0));
    assert!(status.maps_filled);
    harness.agent.publish();
    assert_eq!(harness.status().map_entries.ipv4, expected.len() as u64);
    assert_eq!(harness.status().map_capacity.ipv4, 64);
}

#[test]
fn a_missing_file_applies_the_defaults() {
    let mut harness = Harness::new("defaults");
    harness.agent.reload();
    let defaults: Vec<(IpNet, u8)> =
        Table::effective(&MasqConfig::defaults(ParseOptions::default()), false)
            .iter()
            .map(|(prefix, entry)| (*prefix, entry.action as u8))
            .collect();
    assert!(defaults.len() > 1);
    assert_eq!(harness.maps(), defaults);
    assert!(matches!(
        last_result(&harness),
        ReloadResult::Applied { .. }
    ));
}

#[test]
fn a_changed_file_writes_only_the_difference() {
    let mut harness = Harness::new("changed");
    harness.write_config(TEN_AND_OTHERS);
    harness.agent.reload();
    harness.kernel().log.clear();
    harness.write_config(TEN);
    harness.agent.reload();
    assert_eq!(harness.kernel().log, ["-192.168.0.0/16"]);
    // The programs' directory is published after the write.
    assert_eq!(harness.kernel().published_after.last(), Some(&1));
    assert_eq!(harness.maps(), harness.expected(TEN));
    assert!(matches!(
        last_result(&harness),
        ReloadResult::Applied {
            added: 0,
            removed: 1,
            failed: 0,
            ..
        }
    ));
}

#[test]
fn unchanged_bytes_are_not_applied_again() {
    let mut harness = Harness::new("unchanged");
    harness.write_config(TEN);
    harness.agent.reload();
    harness.kernel().log.clear();
    // The file rewritten with the same bytes, then a resync reading it.
    harness.write_config(TEN);
    harness.agent.reload();
    harness.agent.reload();
    assert!(
        harness.kernel().log.is_empty(),
        "{:?}",
        harness.kernel().log
    );
    assert_eq!(harness.status().reloads_succeeded, 1);
}

#[test]
fn failed_map_writes_are_retried_at_the_next_reload() {
    let mut harness = Harness::new("retried");
    harness.kernel().failing.insert(net("10.0.0.0/8"));
    harness.write_config(TEN);
    harness.agent.reload();
    assert!(
        !harness.kernel().entries.contains_key(&net("10.0.0.0/8")),
        "a failed write is not there"
    );
    assert!(matches!(
        last_result(&harness),
        ReloadResult::Applied { failed: 1, .. }
    ));
    assert_eq!(harness.status().map_write_failures, 1);
    // The same bytes: the write is tried again, and fails again.
    harness.agent.reload();
    assert_eq!(harness.status().map_write_failures, 2);
    harness.kernel().failing.clear();
    harness.agent.reload();
    assert_eq!(harness.maps(), harness.expected(TEN));
    assert!(matches!(
        last_result(&harness),
        ReloadResult::Applied {
            added: 1,
            failed: 0,
            ..
        }
    ));
    // All written now: the same bytes stop at the comparison.
    harness.kernel().log.clear();
    harness.agent.reload();
    assert!(harness.kernel().log.is_empty());
    assert_eq!(harness.status().reloads_succeeded, 3);
}

#[test]
fn a_bad_file_leaves_the_previous_table_in_force() {
    let mut harness = Harness::new("rejected");
    harness.write_config(TEN);
    harness.agent.reload();
    harness.agent.keep_rules().unwrap();
    harness.agent.finish_startup();
    assert!(harness.agent.ready_announced);
    let before = harness.maps();

    harness.write_config(BAD);
    harness.agent.reload();
    assert_eq!(harness.maps(), before);
    let ReloadResult::Rejected { error } = last_result(&harness) else {
        panic!("{:?}", last_result(&harness));
    };
    let path = harness.agent.options.config_path.display().to_string();
    assert!(error.starts_with(&path), "{error}");
    assert_eq!(harness.status().reloads_failed, 1);
    // The rules stay; readiness says why the agent is not ready.
    harness.agent.repair_rules();
    assert!(harness.status().rules_installed);
    assert!(!harness.status().rules_withheld);
    assert_eq!(
        not_ready_reasons(&harness.status(), &[]),
        [format!("last config reload failed: {error}")]
    );
    // The same bad bytes are not rejected (nor logged) again.
    harness.agent.reload();
    assert_eq!(harness.status().reloads_failed, 1);

    harness.write_config(TEN_AND_OTHERS);
    harness.agent.on_config_change();
    assert_eq!(harness.maps(), harness.expected(TEN_AND_OTHERS));
    assert!(not_ready_reasons(&harness.status(), &[]).is_empty());
}

#[test]
fn a_first_start_on_a_bad_file_installs_no_rules_until_a_valid_one() {
    let mut harness = Harness::new("withheld");
    harness.agent.restore().unwrap();
    assert!(!harness.agent.restored);
    harness.write_config(BAD);
    harness.agent.reload();
    harness.agent.keep_rules().unwrap();
    harness.agent.finish_startup();
    assert!(harness.maps().is_empty());
    assert_eq!(
        harness.rules().ensures,
        0,
        "no chain: its last rule would masquerade everything"
    );
    let status = harness.status();
    assert!(status.rules_withheld && !status.rules_installed);
    let reasons = not_ready_reasons(&status, &[]);
    assert!(
        reasons[0].starts_with("config rejected and no earlier table to keep"),
        "{reasons:?}"
    );
    assert!(!harness.agent.ready_announced);
    // Resyncs change nothing while the file stays bad.
    harness.agent.resync();
    harness.agent.announce_ready();
    assert_eq!(harness.rules().ensures, 0);
    assert!(!harness.agent.ready_announced);

    harness.write_config(TEN);
    harness.agent.on_config_change();
    assert_eq!(harness.maps(), harness.expected(TEN));
    assert_eq!(harness.rules().ensures, 1);
    let status = harness.status();
    assert!(status.rules_installed && !status.rules_withheld);
    harness.agent.announce_ready();
    assert!(harness.agent.ready_announced);
    assert!(not_ready_reasons(&harness.status(), &[]).is_empty());
}

#[test]
fn a_restored_table_stays_in_force_over_a_bad_file() {
    let mut kernel = FakeKernel::default();
    kernel
        .entries
        .insert(net("10.0.0.0/8"), Action::KeepSource as u8);
    let mut harness = Harness::with("restored", kernel, Selector::AllVeth);
    harness.agent.restore().unwrap();
    assert!(harness.agent.restored);
    harness.write_config(BAD);
    harness.agent.reload();
    harness.agent.keep_rules().unwrap();
    harness.agent.finish_startup();
    assert_eq!(
        harness.maps(),
        [(net("10.0.0.0/8"), Action::KeepSource as u8)]
    );
    assert_eq!(harness.rules().ensures, 1, "the restored table decides");
    assert!(harness.status().rules_installed);
    // In force but not ready (the file was refused): no "ready:" while
    // /readyz says 503.
    assert!(!not_ready_reasons(&harness.status(), &[]).is_empty());
    assert!(!harness.agent.ready_announced);
    harness.write_config(TEN);
    harness.agent.on_config_change();
    harness.agent.announce_ready();
    assert!(not_ready_reasons(&harness.status(), &[]).is_empty());
    assert!(harness.agent.ready_announced);
}

#[test]
fn an_unreadable_file_is_rejected_once() {
    let mut harness = Harness::new("unreadable");
    fs::create_dir(&harness.agent.options.config_path).unwrap();
    harness.agent.reload();
    harness.agent.reload();
    assert_eq!(harness.status().reloads_failed, 1);
    let ReloadResult::Rejected { error } = last_result(&harness) else {
        panic!("{:?}", last_result(&harness));
    };
    assert!(error.contains("is a directory"), "{error}");
    fs::remove_dir(&harness.agent.options.config_path).unwrap();
    harness.write_config(TEN);
    harness.agent.reload();
    assert_eq!(harness.maps(), harness.expected(TEN));
}

/// A conntrack table that records deletions.
struct FakeConnections {
    entries: Vec<crate::kernel::conntrack::Entry>,
    deleted: std::rc::Rc<std::cell::RefCell<Vec<(u8, crate::kernel::conntrack::Flow)>>>,
}

impl crate::agent::host::Connections for FakeConnections {
    fn list(
        &mut self,
    ) -> Result<Vec<crate::kernel::conntrack::Entry>, crate::kernel::conntrack::ConntrackError>
    {
        Ok(self.entries.clone())
    }

    fn delete(
        &mut self,
        protocol: u8,
        flow: &crate::kernel::conntrack::Flow,
    ) -> Result<(), crate::kernel::conntrack::ConntrackError> {
        self.deleted.borrow_mut().push((protocol, *flow));
        Ok(())
    }
}

#[test]
fn a_change_flushes_the_flows_it_flips_and_only_those() {
    use crate::kernel::conntrack::{Entry, Flow};
    let flow = |protocol: u8, destination: &str| Entry {
        protocol,
        original: Flow {
            source: "10.244.1.10".parse().unwrap(),
            destination: destination.parse().unwrap(),
            source_port: 4000,
            destination_port: 53,
        },
        reply: Flow {
            source: destination.parse().unwrap(),
            destination: "192.0.2.1".parse().unwrap(),
            source_port: 53,
            destination_port: 4000,
        },
        source_nat: true,
    };
    let mut harness = Harness::new("flush");
    harness.write_config("nonMasqueradeCIDRs: [172.16.0.0/12]\n");
    harness.agent.reload();
    let deleted = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    harness.agent.connections = Some(Box::new(FakeConnections {
        entries: vec![
            flow(17, "203.0.113.5"),
            flow(17, "198.51.100.7"),
            flow(6, "203.0.113.5"),
            flow(17, "172.16.5.5"),
        ],
        deleted: deleted.clone(),
    }));
    harness.write_config("nonMasqueradeCIDRs: [172.16.0.0/12, 203.0.113.0/24]\n");
    harness.agent.reload();
    let destinations: Vec<(u8, String)> = deleted
        .borrow()
        .iter()
        .map(|(p, f)| (*p, f.destination.to_string()))
        .collect();
    assert_eq!(
        destinations,
        [(17, "203.0.113.5".to_owned())],
        "only the UDP flow into the flipped range"
    );
    assert_eq!(harness.status().conntrack_flushed, 1);
    // The same bytes again: no change, nothing flushed.
    harness.agent.reload();
    assert_eq!(deleted.borrow().len(), 1);
}

#[test]
fn the_config_identity_follows_the_table_not_the_file() {
    let mut first = Harness::new("identity-a");
    first.write_config("nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\n");
    first.agent.reload();
    let mut second = Harness::new("identity-b");
    second.write_config("{\"nonMasqueradeCIDRs\": [\"172.16.0.0/12\", \"10.0.0.0/8\"]}");
    second.agent.reload();
    let identity = first
        .status()
        .config_sha256
        .expect("an identity once applied");
    assert_eq!(
        second.status().config_sha256.as_deref(),
        Some(identity.as_str()),
        "another file, another path, the same decisions"
    );
    second.write_config("nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    second.agent.reload();
    assert_ne!(
        second.status().config_sha256.as_deref(),
        Some(identity.as_str())
    );
    assert_eq!(first.status().config_sources.len(), 1);
}

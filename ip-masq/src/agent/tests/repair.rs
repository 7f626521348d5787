//! Repairs of what someone else changed: map entries, pins and the rules.

use ip_masq_common::{MAP_NON_MASQ_V4, MAP_STATS, PROGRAM_XT_BPF_V4};

use super::*;
use crate::agent::repair::{ReadBack, repair};
use crate::agent::sync;
use crate::serve::state::not_ready_reasons;

fn table(prefixes: &[&str]) -> Table {
    Table::from_map_entries(prefixes.iter().map(|p| (net(p), Action::KeepSource)))
}

/// The classifier's decision for `destination`: the longest match,
/// "masquerade" on a miss or a value that is no action.
fn decide(entries: &BTreeMap<IpNet, u8>, destination: &str) -> Action {
    let destination: std::net::IpAddr = destination.parse().unwrap();
    entries
        .iter()
        .filter(|(prefix, _)| prefix.contains(&destination))
        .max_by_key(|(prefix, _)| prefix.prefix_len())
        .and_then(|(_, value)| Action::from_value(*value))
        .unwrap_or(Action::Masquerade)
}

#[test]
fn unknown_values_are_removed_and_known_entries_put_back() {
    let mut store = FakeKernel::default();
    let mut current = Table::default();
    let desired = table(&["10.0.0.0/8", "192.168.0.0/16"]);
    sync::apply(&mut store, &mut current, &desired).unwrap();
    // A stray entry inside a kept range, one over a kept prefix, and a
    // kept entry gone.
    store.entries.insert(net("10.1.0.0/16"), 7);
    store.entries.insert(net("192.168.0.0/16"), 0);
    store.entries.remove(&net("10.0.0.0/8"));
    assert_eq!(decide(&store.entries, "10.1.0.1"), Action::Masquerade);
    store.log.clear();
    let found = ReadBack::from_entries(store.entries.clone());
    assert_eq!(found.unknown.len(), 2);
    assert!(!found.matches(&desired));
    let report = repair(&mut store, &mut current, found, &desired);
    assert!(report.refused.is_none());
    assert!(report.sync.failures.is_empty());
    let removed: Vec<String> = report
        .unknown_removed
        .iter()
        .map(|(prefix, value)| format!("{prefix}={value}"))
        .collect();
    assert_eq!(removed, ["10.1.0.0/16=7"]);
    assert_eq!(report.repaired(), 3);
    assert_eq!(
        store.log,
        ["-10.1.0.0/16", "+192.168.0.0/16", "+10.0.0.0/8"]
    );
    assert_eq!(current, desired);
    assert!(ReadBack::from_entries(store.entries.clone()).matches(&desired));
    assert_eq!(decide(&store.entries, "10.1.0.1"), Action::KeepSource);
    assert_eq!(decide(&store.entries, "192.168.0.1"), Action::KeepSource);
}

#[test]
fn restoring_drops_unknown_values_and_keeps_the_rest() {
    let mut store = FakeKernel::default();
    store.entries.insert(net("10.0.0.0/8"), 1);
    store.entries.insert(net("10.1.0.0/16"), 7);
    let found = ReadBack::from_entries(store.entries.clone());
    let restored = found.table.clone();
    let mut current = Table::default();
    let report = repair(&mut store, &mut current, found, &restored);
    assert_eq!(report.unknown_removed.len(), 1);
    assert_eq!(store.log, ["-10.1.0.0/16"]);
    assert_eq!(current, table(&["10.0.0.0/8"]));
}

#[test]
fn a_start_keeps_the_pinned_table_but_not_entries_of_unknown_action() {
    let mut kernel = FakeKernel::default();
    kernel.entries.insert(net("10.0.0.0/8"), 1);
    kernel.entries.insert(net("10.1.0.0/16"), 7);
    let mut harness = Harness::with("restore", kernel, Selector::AllVeth);
    harness.agent.restore().unwrap();
    assert!(harness.agent.restored);
    assert_eq!(harness.maps(), [(net("10.0.0.0/8"), 1)]);
    assert_eq!(harness.agent.applied.len(), 1);
    assert_eq!(harness.status().repairs.map_entry, 1);
    // The first reload writes only the difference.
    harness.kernel().log.clear();
    harness.write_config(TEN_AND_OTHERS);
    harness.agent.reload();
    assert_eq!(harness.kernel().log, ["+192.168.0.0/16", "+169.254.0.0/16"]);
}

#[test]
fn map_drift_is_repaired_and_counted_per_entry() {
    let mut harness = Harness::new("drift");
    harness.write_config(TEN_AND_OTHERS);
    harness.agent.reload();
    let expected = harness.expected(TEN_AND_OTHERS);
    // A stray entry of unknown action, one of a known action the agent
    // did not write, and one of the agent's removed.
    let kernel = harness.kernel();
    kernel.entries.insert(net("10.1.0.0/16"), 7);
    kernel
        .entries
        .insert(net("10.2.0.0/16"), Action::Masquerade as u8);
    kernel.entries.remove(&net("192.168.0.0/16"));
    kernel.log.clear();
    harness.agent.repair_map_drift();
    assert_eq!(harness.maps(), expected);
    assert_eq!(harness.status().repairs.map_entry, 3);
    // In step again: nothing is written, nothing counted.
    harness.kernel().log.clear();
    harness.agent.repair_map_drift();
    assert!(harness.kernel().log.is_empty());
    assert_eq!(harness.status().repairs.map_entry, 3);
}

#[test]
fn maps_that_cannot_be_read_back_are_left_alone() {
    let mut harness = Harness::new("unreadable-maps");
    harness.write_config(TEN);
    harness.agent.reload();
    harness.kernel().entries.remove(&net("10.0.0.0/8"));
    harness.kernel().unreadable = true;
    harness.kernel().log.clear();
    harness.agent.repair_map_drift();
    assert!(harness.kernel().log.is_empty());
    assert_eq!(harness.status().repairs.map_entry, 0);
}

#[test]
fn removed_pins_are_put_back_and_counted_by_kind() {
    let mut harness = Harness::new("pins");
    harness.kernel().removed_pins = vec![
        Repinned::Map(MAP_NON_MASQ_V4),
        Repinned::Program(PROGRAM_XT_BPF_V4),
        Repinned::Map(MAP_STATS),
    ];
    harness.agent.repair_pins();
    let repairs = harness.status().repairs;
    assert_eq!((repairs.map_pin, repairs.program_pin), (2, 1));
    assert!(harness.kernel().removed_pins.is_empty());
    // Nothing missing any more: nothing counted.
    harness.agent.repair_pins();
    assert_eq!(harness.status().repairs, repairs);
    // A kernel that refuses leaves the counts as they are.
    harness.kernel().removed_pins = vec![Repinned::Map(MAP_NON_MASQ_V4)];
    harness.kernel().repin_fails = true;
    harness.agent.repair_pins();
    assert_eq!(harness.status().repairs, repairs);
}

#[test]
fn changed_rules_are_found_by_readiness_rewritten_and_counted() {
    let mut harness = Harness::new("rules");
    harness.write_config(TEN);
    harness.agent.reload();
    harness.agent.keep_rules().unwrap();
    let status = harness.status();
    assert!(status.rules_installed);
    // The first install is no repair.
    assert_eq!((status.repairs.chain, status.iptables_repairs.ipv4), (0, 0));
    harness.rules().damaged.store(true, Ordering::SeqCst);
    let problems = harness.agent.shared.check_rules();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("IPv4 rules missing or changed"));
    harness.agent.repair_rules();
    let status = harness.status();
    assert_eq!((status.repairs.chain, status.iptables_repairs.ipv4), (1, 1));
    // Fresh checks after the repair, not a cached verdict.
    assert!(harness.agent.shared.check_rules().is_empty());
}

#[test]
fn a_failing_rules_install_is_reported_and_retried_at_the_resync() {
    let mut harness = Harness::new("rules-fail");
    harness.write_config(TEN);
    harness.agent.reload();
    harness.agent.installers[0].fails = true;
    assert!(harness.agent.keep_rules().is_err());
    harness.agent.finish_startup();
    let status = harness.status();
    assert!(!status.rules_installed);
    let reasons = not_ready_reasons(&status, &[]);
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("cannot install the iptables rules:")),
        "{reasons:?}"
    );
    assert!(!harness.agent.ready_announced);
    harness.agent.installers[0].fails = false;
    harness.agent.resync();
    harness.agent.announce_ready();
    let status = harness.status();
    assert!(status.rules_installed && status.rules_error.is_none());
    assert!(harness.agent.ready_announced);
}

#[test]
fn one_resync_puts_back_pins_entries_and_rules() {
    let mut harness = Harness::new("resync");
    harness.write_config(TEN);
    harness.agent.reload();
    harness.agent.keep_rules().unwrap();
    harness.kernel().removed_pins = vec![Repinned::Map(MAP_NON_MASQ_V4)];
    harness.kernel().entries.clear();
    harness.rules().damaged.store(true, Ordering::SeqCst);
    harness.agent.resync();
    assert_eq!(harness.maps(), harness.expected(TEN));
    let repairs = harness.status().repairs;
    assert_eq!(
        (repairs.map_pin, repairs.map_entry, repairs.chain),
        (1, 2, 1)
    );
}

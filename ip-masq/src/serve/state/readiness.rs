//! What `/readyz` and `/healthz` answer, decided from the status alone.

use std::time::Duration;

use super::{AgentStatus, ReloadRecord, ReloadResult};

/// After startup, a loop that has not beaten for this long is reported dead
/// by `/healthz`, so that the kubelet restarts it. Far above the longest
/// legitimate pause (a reload of millions of entries takes seconds).
const LIVENESS_STALL_LIMIT: Duration = Duration::from_secs(120);

/// Why the agent is not ready; empty when it is. Pure: `rule_problems` is
/// the outcome of a live check of the iptables rules.
pub(crate) fn not_ready_reasons(status: &AgentStatus, rule_problems: &[String]) -> Vec<String> {
    let mut reasons = Vec::new();
    if !status.startup_complete {
        reasons.push(
            "starting: loading the datapath, filling the maps and installing the rules".into(),
        );
        return reasons;
    }
    if status.rules_withheld {
        reasons.push(
            "config rejected and no earlier table to keep: no masquerade rules installed, nothing is masqueraded until a valid config arrives".into(),
        );
    }
    match &status.last_reload {
        Some(ReloadRecord {
            result: ReloadResult::Rejected { error },
            ..
        }) => reasons.push(format!("last config reload failed: {error}")),
        _ if !status.maps_filled => reasons.push("maps not filled yet".into()),
        _ => {}
    }
    if let Some(error) = &status.rules_error {
        reasons.push(format!("cannot install the iptables rules: {error}"));
    }
    reasons.extend(rule_problems.iter().cloned());
    for failure in &status.attach_failures {
        reasons.push(format!(
            "classifier not attached to {}: {}",
            failure.interface, failure.error
        ));
    }
    reasons
}

/// Whether the loop is alive: during startup always (startup can be long
/// and is bounded by its own errors); afterwards, while it beats.
pub(crate) fn liveness(startup_complete: bool, since_last_beat: Duration) -> Result<(), String> {
    if startup_complete && since_last_beat > LIVENESS_STALL_LIMIT {
        return Err(format!(
            "agent loop stalled: no progress for {}s",
            since_last_beat.as_secs()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::state::AttachFailure;

    fn ready_status() -> AgentStatus {
        AgentStatus {
            startup_complete: true,
            maps_filled: true,
            rules_installed: true,
            last_reload: Some(ReloadRecord {
                at: 1.0,
                result: ReloadResult::Applied {
                    added: 4,
                    removed: 0,
                    failed: 0,
                    elapsed_ms: 0.5,
                },
            }),
            ..AgentStatus::default()
        }
    }

    #[test]
    fn ready_when_everything_is_in_place() {
        assert!(not_ready_reasons(&ready_status(), &[]).is_empty());
    }

    #[test]
    fn starting_is_not_ready_and_says_so_alone() {
        let status = AgentStatus::default();
        let reasons = not_ready_reasons(&status, &["ignored".into()]);
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].starts_with("starting"), "{reasons:?}");
    }

    #[test]
    fn failed_reload_is_not_ready_until_a_good_one() {
        let mut status = ready_status();
        status.last_reload = Some(ReloadRecord {
            at: 2.0,
            result: ReloadResult::Rejected {
                error: "/etc/config/ip-masq-agent: bad CIDR".into(),
            },
        });
        assert_eq!(
            not_ready_reasons(&status, &[]),
            ["last config reload failed: /etc/config/ip-masq-agent: bad CIDR"]
        );
        status.last_reload = ready_status().last_reload;
        assert!(not_ready_reasons(&status, &[]).is_empty());
    }

    #[test]
    fn withheld_rules_are_a_reason_of_their_own() {
        let mut status = ready_status();
        status.rules_installed = false;
        status.maps_filled = false;
        status.rules_withheld = true;
        status.last_reload = Some(ReloadRecord {
            at: 2.0,
            result: ReloadResult::Rejected {
                error: "bad CIDR".into(),
            },
        });
        assert_eq!(
            not_ready_reasons(&status, &[]),
            [
                "config rejected and no earlier table to keep: no masquerade rules installed, nothing is masqueraded until a valid config arrives",
                "last config reload failed: bad CIDR",
            ]
        );
    }

    #[test]
    fn empty_maps_rules_and_attach_failures_are_reported() {
        let mut status = ready_status();
        status.maps_filled = false;
        status.last_reload = None;
        status.rules_error = Some("iptables-restore failed".into());
        status.attach_failures.push(AttachFailure {
            interface: "veth1".into(),
            ifindex: 4,
            error: "EPERM".into(),
        });
        let reasons = not_ready_reasons(&status, &["IPv4 rules missing".into()]);
        assert_eq!(
            reasons,
            [
                "maps not filled yet",
                "cannot install the iptables rules: iptables-restore failed",
                "IPv4 rules missing",
                "classifier not attached to veth1: EPERM",
            ]
        );
    }

    #[test]
    fn liveness_tolerates_startup_but_not_a_stalled_loop() {
        assert!(liveness(false, Duration::from_secs(3600)).is_ok());
        assert!(liveness(true, Duration::from_secs(5)).is_ok());
        let err = liveness(true, LIVENESS_STALL_LIMIT + Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("stalled"), "{err}");
    }
}

//! The pod interfaces: selected ones without the classifier, and other
//! programs sharing tcx ingress with it.

use std::collections::BTreeSet;

use crate::commands::doctor::{Finding, FindingKind};
use crate::commands::probe::InterfaceProbe;

/// The findings of every interface.
pub(super) fn findings(
    interfaces: &[InterfaceProbe],
    ours: &BTreeSet<u32>,
    findings: &mut Vec<Finding>,
) {
    for interface in interfaces {
        let our_position = interface
            .programs
            .iter()
            .position(|program| ours.contains(&program.id));
        match our_position {
            None if interface.selected => findings.push(Finding {
                kind: FindingKind::InterfaceWithoutProgram,
                location: format!("interface {}", interface.name),
                evidence: if interface.programs.is_empty() {
                    "no program at tcx ingress".into()
                } else {
                    format!(
                        "tcx ingress runs only {}",
                        interface
                            .programs
                            .iter()
                            .map(|p| format!("{} (id {})", p.name, p.id))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                problem: "a pod interface the agent should cover has no ip-masq classifier: its pods' traffic is masqueraded whatever the destination".into(),
                fix: "Check that the agent runs and read its log: it attaches on the interface's link event and at every resync. `kubectl -n kube-system rollout restart ds/ip-masq` forces a fresh scan.".into(),
            }),
            None => {}
            Some(position) => {
                for (index, program) in interface.programs.iter().enumerate() {
                    if ours.contains(&program.id) {
                        continue;
                    }
                    let before = index < position;
                    findings.push(Finding {
                        kind: FindingKind::ForeignProgram,
                        location: format!("interface {}", interface.name),
                        evidence: format!(
                            "tcx ingress program {} (id {}) runs {} ip-masq's classifier",
                            program.name,
                            program.id,
                            if before { "before" } else { "after" }
                        ),
                        problem: if before {
                            "a program ahead of the classifier can end the tcx chain (any verdict but 'next'), and then the classifier never marks the packet".into()
                        } else {
                            "a program after the classifier can rewrite skb->mark and clear the keep-source bit".into()
                        },
                        fix: "Find its owner (`bpftool prog show id ID`, `bpftool net show dev IFACE`). Another ip-masq on a different pin path or a CNI's own masquerading must be turned off; a program that must stay has to return TCX_NEXT and keep the mark bit.".into(),
                    });
                }
            }
        }
    }
}

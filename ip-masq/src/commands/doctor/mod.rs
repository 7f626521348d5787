//! `ip-masq doctor`: finds what defeats non-masquerade on a node and says
//! how to fix each finding.
//!
//! The analysis is pure: it reads `iptables-save` text and what tcx reports
//! per interface, and returns findings. Only [`run`] touches the node, and
//! only to read: `*-save` lists tables that exist without creating any.
//!
//! What it looks for:
//! - MASQUERADE or SNAT rules that nat POSTROUTING reaches before our jump
//!   (so we never decide), or after it (our chain RETURNs keep-source
//!   packets to POSTROUTING, where the later rule still masquerades them),
//!   named specifically for Docker, flannel and kubelet;
//! - any such rule in the other iptables backend, whose hooks run too;
//! - rules that write or match our mark bit;
//! - tcx programs sharing a pod interface with the classifier, and selected
//!   pod interfaces without it;
//! - our own jump missing;
//! - `masquerade`/`snat` statements of the native nftables ruleset on
//!   postrouting, which a RETURN in our chain cannot stop (`nftables`).
//!
//! `snat` walks nat POSTROUTING for other SNAT rules, `vendors` names
//! the components that wrote them, `marks` finds rules on our mark bit,
//! `tcx` looks at the pod interfaces, and `render` prints for people.

mod marks;
pub mod nftables;
mod render;
mod snat;
mod tcx;
mod vendors;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::commands::installed::{InspectError, Installed, Report};
use crate::commands::probe::{self, InterfaceProbe};
use crate::kernel::iptables::backends::{self, Listing};
use crate::kernel::iptables::save::Dump;
use crate::options::InstalledOptions;

/// What kind of problem a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FindingKind {
    /// POSTROUTING has no jump to our chain.
    JumpMissing,
    /// Docker's `-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE`.
    DockerMasquerade,
    /// flannel's FLANNEL-POSTRTG chain (or its older "flanneld masq" rules).
    FlannelMasquerade,
    /// kubelet's `--non-masquerade-cidr` rule.
    KubeletMasquerade,
    /// The CNI bridge or ptp plugin's `ipMasq: true` (a `CNI-…` chain per
    /// pod, commented with the network's name).
    CniMasquerade,
    /// Any other MASQUERADE or SNAT that pod traffic can reach.
    OtherSnat,
    /// A rule that writes or matches our mark bit.
    MarkConflict,
    /// Another program at tcx ingress of an interface the classifier is on.
    ForeignProgram,
    /// A selected pod interface without the classifier.
    InterfaceWithoutProgram,
    /// A masquerade or SNAT statement in another nftables table.
    NftablesSnat,
}

/// One problem, where it is, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
    pub(crate) kind: FindingKind,
    /// Backend, table and chain, or the interface.
    pub(crate) location: String,
    /// The rule as `iptables-save` prints it, or the program.
    pub(crate) evidence: String,
    pub(crate) problem: String,
    pub(crate) fix: String,
}

/// Everything the analysis looks at.
#[derive(Clone, Debug)]
pub(crate) struct Inputs {
    pub(crate) chain: String,
    /// The keep-source mark, or `None` when the agent does not use one.
    pub(crate) mark: Option<u32>,
    pub(crate) listings: Vec<Listing>,
    /// Interfaces, when the agent attaches to interfaces.
    pub(crate) interfaces: Option<Vec<InterfaceProbe>>,
    /// Ids of the programs our pinned links run.
    pub(crate) our_programs: BTreeSet<u32>,
    /// Masquerade/SNAT statements of the native nftables ruleset; `None`
    /// when `nft` is not there to ask.
    pub(crate) nftables: Option<Vec<nftables::NftSnat>>,
}

/// The findings for `inputs`. Pure.
pub(crate) fn analyze(inputs: &Inputs) -> Vec<Finding> {
    let mut findings = Vec::new();
    for listing in &inputs.listings {
        let dump = Dump::parse_save(&listing.text);
        snat::findings(inputs, listing, &dump, &mut findings);
        if let Some(mark) = inputs.mark {
            marks::findings(inputs, listing, &dump, mark, &mut findings);
        }
    }
    if let Some(interfaces) = &inputs.interfaces {
        tcx::findings(interfaces, &inputs.our_programs, &mut findings);
    }
    if let Some(statements) = &inputs.nftables {
        nftables::findings(statements, &mut findings);
    }
    findings
}

/// `ip-masq doctor`: gathers the node's rules and interfaces and reports
/// the findings; the report fails when there is any.
///
/// # Errors
/// Fails when iptables or the kernel cannot be read at all.
pub fn run(args: &InstalledOptions) -> Result<Report, InspectError> {
    let installed = Installed::resolve(args)?;
    let inputs = gather(&installed)?;
    let findings = analyze(&inputs);
    let output = if args.json {
        render::json(&findings)
    } else {
        render::render(&findings)
    };
    Ok(Report {
        output,
        problems: findings.len(),
    })
}

/// The findings that `status` reports too, one line each: all but the
/// missing jump and interfaces without the classifier, which status finds
/// itself. Pure.
pub(crate) fn defeats(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|finding| {
            !matches!(
                finding.kind,
                FindingKind::JumpMissing | FindingKind::InterfaceWithoutProgram
            )
        })
        .map(|finding| {
            format!(
                "[{}] {}: {} (`ip-masq doctor` says how to fix it)",
                render::kind_name(finding.kind),
                finding.location,
                finding.problem.trim_end_matches('.')
            )
        })
        .collect()
}

/// Reads what the analysis needs from the node.
pub(crate) fn gather(installed: &Installed) -> Result<Inputs, InspectError> {
    let mut listings = Vec::new();
    for family in installed.families() {
        listings.extend(backends::save_listings(family)?);
    }
    let interfaces = if installed.attaches {
        Some(probe::probe_interfaces(&installed.selector)?)
    } else {
        None
    };
    Ok(Inputs {
        chain: installed.chain.clone(),
        mark: installed.attaches.then_some(installed.mark),
        listings,
        interfaces,
        our_programs: probe::our_program_ids(&installed.pin_dir),
        nftables: crate::kernel::nftables::ruleset()
            .ok()
            .map(|ruleset| nftables::snat_statements(&ruleset)),
    })
}

#[cfg(test)]
mod tests;

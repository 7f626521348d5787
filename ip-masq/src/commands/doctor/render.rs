//! Findings for people (numbered, each with its rule, problem and fix)
//! and for programs (`--json`).

use std::fmt::Write as _;

use crate::commands::doctor::{Finding, FindingKind};

/// The findings as `--json` prints them: `{"findings": [...]}`.
pub(super) fn json(findings: &[Finding]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({ "findings": findings }))
        .expect("serialisable")
        + "\n"
}

/// Renders findings for people.
pub(super) fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        out.push_str("no problems found: nothing on this node defeats non-masquerade\n");
        return out;
    }
    let _ = writeln!(out, "{} problem(s) found\n", findings.len());
    for (index, finding) in findings.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}. [{}] {}",
            index + 1,
            kind_name(finding.kind),
            finding.location
        );
        let _ = writeln!(out, "   rule:    {}", finding.evidence);
        let _ = writeln!(out, "   problem: {}", finding.problem);
        let _ = writeln!(out, "   fix:     {}\n", finding.fix);
    }
    out
}

pub(super) fn kind_name(kind: FindingKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

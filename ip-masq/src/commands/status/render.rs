//! `status` for people (one line per piece, then the problems) and for
//! programs (`--json`: the document itself).

use std::fmt::Write as _;

use ip_masq_common::PROGRAM_CLASSIFIER;

use crate::commands::status::document::StatusDocument;
use crate::commands::status::rules::rule_problems;
use crate::serve::state;
use crate::serve::state::ReloadRecord;
use crate::serve::state::ReloadResult;

/// The document as `--json` prints it.
pub(super) fn json(document: &StatusDocument) -> String {
    serde_json::to_string_pretty(document).expect("serialisable") + "\n"
}

fn format_time(unix: f64) -> String {
    let age = state::unix_now() - unix;
    format!("{} ({age:.0}s ago)", utc_date(unix))
}

/// A Unix time as an RFC 3339 date in UTC, to the second.
fn utc_date(unix: f64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_seconds(at).to_string()
}

pub(super) fn render(document: &StatusDocument, chain: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pin directory: {}", document.pin_dir.display());
    let _ = match document.agent_pid {
        Some(pid) => writeln!(out, "agent:         running (pid {pid})"),
        None => writeln!(out, "agent:         not running"),
    };
    if document.programs.is_empty() {
        let _ = writeln!(
            out,
            "program:       {PROGRAM_CLASSIFIER} not attached anywhere"
        );
    }
    for program in &document.programs {
        let _ = writeln!(
            out,
            "program:       {} id {} on {} interface(s), {} link pin(s)",
            program.name,
            program.id,
            program.interfaces.len(),
            document.links.len()
        );
    }
    let _ = writeln!(out, "interfaces:");
    if document.interfaces.is_empty() {
        let _ = writeln!(out, "  (none selected)");
    }
    for interface in &document.interfaces {
        let others = interface.programs.len().saturating_sub(1);
        let _ = match interface.position {
            Some(position) => writeln!(
                out,
                "  {:<16} classifier at position {position} of {}{}",
                interface.name,
                interface.programs.len(),
                if others > 0 {
                    " (see `ip-masq doctor`)"
                } else {
                    ""
                }
            ),
            None => writeln!(out, "  {:<16} NO classifier", interface.name),
        };
    }
    let _ = writeln!(out, "rules:");
    for view in &document.rules {
        let problems = rule_problems(view, chain);
        if problems.is_empty() {
            let _ = writeln!(
                out,
                "  {}: chain {} in order ({} rules), jump at POSTROUTING position {} of {}",
                view.family,
                chain,
                view.chain_rules.len(),
                view.jump_position.unwrap_or(0),
                view.postrouting_rules
            );
        }
        for problem in problems {
            let _ = writeln!(out, "  {problem}");
        }
    }
    let _ = writeln!(
        out,
        "config:        {}",
        document.config_path.as_ref().map_or_else(
            || "unknown (no state file)".into(),
            |p| p.display().to_string()
        )
    );
    if !document.entry_counts_by_source.is_empty() {
        let counts: Vec<String> = document
            .entry_counts_by_source
            .iter()
            .map(|(file, count)| format!("{file} {count}"))
            .collect();
        let _ = writeln!(out, "entries by file: {}", counts.join(", "));
    }
    if let Some(sha256) = &document.config_sha256 {
        let _ = writeln!(
            out,
            "config sha256: {sha256} (from {})",
            document.config_sources.join(", ")
        );
    }
    let _ = match &document.last_reload {
        Some(ReloadRecord {
            at,
            result:
                ReloadResult::Applied {
                    added,
                    removed,
                    failed,
                    elapsed_ms,
                },
        }) => writeln!(
            out,
            "last reload:   applied at {}: +{added} -{removed}, {failed} failed, {elapsed_ms:.1} ms",
            format_time(*at)
        ),
        Some(ReloadRecord {
            at,
            result: ReloadResult::Rejected { error },
        }) => writeln!(
            out,
            "last reload:   REJECTED at {}: {error}",
            format_time(*at)
        ),
        None => writeln!(
            out,
            "last reload:   none recorded ({})",
            document.state_file.display()
        ),
    };
    for map in &document.maps {
        let _ = writeln!(
            out,
            "map {:<11} {} entries of {}",
            map.name,
            map.entries.map_or_else(|| "?".into(), |n| n.to_string()),
            map.capacity.map_or_else(|| "?".into(), |n| n.to_string())
        );
    }
    if let Some(packets) = &document.packets {
        let _ = writeln!(
            out,
            "packets:       IPv4 {} seen, {} keep-source; IPv6 {} seen, {} keep-source (TC classifier, every packet)",
            packets.ipv4_seen,
            packets.ipv4_keep_source,
            packets.ipv6_seen,
            packets.ipv6_keep_source
        );
    }
    if let Some(connections) = &document.connections {
        let _ = writeln!(
            out,
            "connections:   IPv4 {} keep-source, {} masquerade; IPv6 {} keep-source, {} masquerade (xt_bpf rule, new connections)",
            connections.ipv4_keep_source,
            connections.ipv4_masquerade,
            connections.ipv6_keep_source,
            connections.ipv6_masquerade
        );
    }
    if document.problems.is_empty() {
        let _ = writeln!(out, "status:        ok");
    } else {
        let _ = writeln!(out, "problems:");
        for problem in &document.problems {
            let _ = writeln!(out, "  - {problem}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{format_time, utc_date};

    #[test]
    fn times_are_shown_as_utc_dates() {
        assert_eq!(utc_date(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(951_782_400.5), "2000-02-29T00:00:00Z");
        assert_eq!(utc_date(1_796_119_779.2), "2026-12-01T10:09:39Z");
        assert_eq!(utc_date(4_102_444_799.0), "2099-12-31T23:59:59Z");
        assert!(format_time(1_796_119_779.0).starts_with("2026-12-01T10:09:39Z ("));
    }
}

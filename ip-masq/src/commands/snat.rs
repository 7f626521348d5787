//! `ip-masq snat`: the destinations whose masqueraded connections hold the
//! most source ports, and conntrack's use and failure counters. Reads
//! conntrack (through the agent's counting, [`crate::agent::snat`]).

use std::{collections::BTreeMap, fmt::Write as _};

use super::CommandError;
use crate::{
    agent::snat::{ports_available, utilization},
    kernel::conntrack::{self, Conntrack},
    model::ports::PortRanges,
};

/// `ip-masq snat`: the fullest destinations, as text or JSON.
///
/// # Errors
/// Conntrack or the port range cannot be read.
pub fn run(to_ports: Option<&PortRanges>, top: usize, json: bool) -> Result<String, CommandError> {
    let entries = Conntrack::open()
        .and_then(|mut table| table.list())
        .map_err(CommandError::Conntrack)?;
    let available = ports_available(to_ports).map_err(|source| CommandError::Sysctl {
        path: "/proc/sys/net/ipv4/ip_local_port_range",
        source,
    })?;
    let uses = utilization(&entries, available, top);
    let counters = conntrack::statistics().map_err(CommandError::Conntrack)?;
    let (in_use, size) = conntrack::usage().map_err(CommandError::Conntrack)?;
    if json {
        let document = serde_json::json!({
            "format": 1,
            "ports_available": available,
            "conntrack": { "entries": in_use, "max": size, "counters": counters.iter().cloned().collect::<BTreeMap<_, _>>() },
            "destinations": uses,
        });
        return Ok(serde_json::to_string_pretty(&document).expect("serialisable") + "\n");
    }
    let mut out = String::new();
    let _ = writeln!(out, "conntrack: {in_use} of {size} entries in use");
    let _ = writeln!(
        out,
        "{}",
        counters
            .iter()
            .filter(|(name, _)| matches!(
                name.as_str(),
                "insert_failed"
                    | "drop"
                    | "early_drop"
                    | "clash_resolve"
                    | "clashres"
                    | "search_restart"
            ))
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        out,
        "MASQUERADE has {available} source ports per destination"
    );
    if uses.is_empty() {
        let _ = writeln!(out, "no masqueraded connections");
    }
    for dest in &uses {
        let sources: Vec<String> = dest
            .top_sources
            .iter()
            .map(|(pod, n)| format!("{pod} ({n})"))
            .collect();
        let _ = writeln!(
            out,
            "{}:{}/{}: {} connections, {} of {} ports ({:.1} %); most: {}",
            dest.destination,
            dest.port,
            dest.protocol,
            dest.connections,
            dest.ports_in_use,
            dest.ports_available,
            dest.utilization * 100.0,
            sources.join(", ")
        );
    }
    Ok(out)
}

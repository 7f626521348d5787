//! `ip-masq check --diff OLD NEW` and `check --against-running NEW`: what
//! a config change does to the decisions before it is applied, and
//! warnings for changes that commonly break egress. Reads files, the pinned
//! maps, the node's routes and resolv.conf; changes nothing.

use std::{fmt::Write as _, fs, net::IpAddr, path::Path};

use ip_masq_common::Action;
use ip_masq_config::{
    preview::{self, DecisionChange, SensitiveAddress, Warning},
    table::Table,
};

use super::{CommandError, read_table};
use crate::{kernel::datapath, options::CheckOptions};

/// What a preview compares.
#[derive(Clone, Debug)]
pub enum Comparison<'a> {
    /// Two files.
    Files {
        /// The config in force today.
        old: &'a Path,
        /// The one to apply.
        new: &'a Path,
    },
    /// A file against what the running agent's pinned maps hold.
    Running {
        /// The one to apply.
        new: &'a Path,
        /// The agent's pin directory.
        pin_path: &'a Path,
    },
}

/// Runs the preview; the text or JSON to print.
///
/// # Errors
/// Either file invalid (`Invalid`, exit 1) or unreadable, or the maps not
/// pinned where named (exit 2).
pub fn preview(
    options: &CheckOptions,
    comparison: &Comparison<'_>,
) -> Result<String, CommandError> {
    let (old_name, old, new_path) = match comparison {
        Comparison::Files { old, new } => {
            (old.display().to_string(), read_table(options, old)?, *new)
        }
        Comparison::Running { new, pin_path } => {
            let entries =
                datapath::read_pinned_entries(pin_path).map_err(|source| CommandError::Pins {
                    path: pin_path.display().to_string(),
                    source,
                })?;
            let old = Table::from_map_entries(entries.into_iter().filter_map(|(prefix, value)| {
                Action::from_value(value).map(|action| (prefix, action))
            }));
            (format!("the maps under {}", pin_path.display()), old, *new)
        }
    };
    let new = read_table(options, new_path)?;
    let changes = preview::decision_changes(&old, &new);
    let warnings = preview::warnings(&old, &new, &node_sensitive_addresses());
    Ok(if options.json {
        render_json(&old_name, new_path, &changes, &warnings)
    } else {
        render_text(&old_name, new_path, &changes, &warnings)
    })
}

fn render_text(old: &str, new: &Path, changes: &[DecisionChange], warnings: &[Warning]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "from {old} to {}:", new.display());
    if changes.is_empty() {
        let _ = writeln!(out, "no decision changes");
    }
    for change in changes {
        let _ = writeln!(out, "  {change}");
    }
    for warning in warnings {
        let _ = writeln!(out, "warning [{}]: {}", warning.kind, warning.message);
    }
    out
}

fn render_json(old: &str, new: &Path, changes: &[DecisionChange], warnings: &[Warning]) -> String {
    let document = serde_json::json!({
        "format": super::CHECK_JSON_FORMAT,
        "old": old,
        "new": new.display().to_string(),
        "changes": changes,
        "warnings": warnings,
    });
    serde_json::to_string_pretty(&document).expect("serialisable") + "\n"
}

/// The node's default gateways (`/proc/net/route`, `/proc/net/ipv6_route`)
/// and DNS servers (`/etc/resolv.conf`): addresses whose traffic a change
/// to "keep source" would break. What cannot be read is left out.
fn node_sensitive_addresses() -> Vec<SensitiveAddress> {
    let mut found = Vec::new();
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    for address in default_gateways_v4(&read("/proc/net/route")) {
        found.push(SensitiveAddress {
            address,
            role: "the default gateway".into(),
        });
    }
    for address in default_gateways_v6(&read("/proc/net/ipv6_route")) {
        found.push(SensitiveAddress {
            address,
            role: "the default gateway".into(),
        });
    }
    for address in name_servers(&read("/etc/resolv.conf")) {
        found.push(SensitiveAddress {
            address,
            role: "a DNS server in /etc/resolv.conf".into(),
        });
    }
    found
}

/// Gateways of `/proc/net/route`'s default routes (destination and mask 0).
fn default_gateways_v4(table: &str) -> Vec<IpAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (destination, gateway, mask) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
            if *destination != "00000000" || *mask != "00000000" {
                return None;
            }
            // Little-endian hex, as the kernel prints it.
            let gateway = u32::from_str_radix(gateway, 16).ok()?;
            (gateway != 0).then(|| IpAddr::V4(std::net::Ipv4Addr::from(gateway.swap_bytes())))
        })
        .collect()
}

/// Gateways of `/proc/net/ipv6_route`'s default routes (`::/0`).
fn default_gateways_v6(table: &str) -> Vec<IpAddr> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first()? != &"00000000000000000000000000000000" || fields.get(1)? != &"00" {
                return None;
            }
            let gateway = u128::from_str_radix(fields.get(4)?, 16).ok()?;
            (gateway != 0).then(|| IpAddr::V6(gateway.into()))
        })
        .collect()
}

/// `nameserver` lines of resolv.conf.
fn name_servers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.split('%').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_default_gateways_and_name_servers() {
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            default_gateways_v4(route),
            ["10.0.2.1".parse::<IpAddr>().unwrap()]
        );
        let route6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                      fd000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(
            default_gateways_v6(route6),
            ["fe80::1".parse::<IpAddr>().unwrap()]
        );
        let resolv = "# comment\nsearch cluster.local\nnameserver 10.96.0.10\nnameserver fe80::53%eth0\noptions ndots:5\n";
        assert_eq!(
            name_servers(resolv),
            [
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fe80::53".parse().unwrap()
            ]
        );
    }
}

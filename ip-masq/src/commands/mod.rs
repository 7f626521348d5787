//! The one-shot subcommands: `check` and `dump` here; `cleanup`, `status`
//! and `doctor` in their own modules, on what `installed` resolves and
//! `probe` reads.

use std::{fmt::Write as _, io};

use ip_masq_common::Action;
use ipnet::IpNet;
use serde::Serialize;
use thiserror::Error;

use crate::agent::source;
use crate::agent::source::ReadError;
use crate::kernel::datapath;
use crate::kernel::datapath::DatapathError;
use crate::kernel::iptables::RulesError;
use crate::options::{CheckOptions, DumpOptions};
use ip_masq_config as config;
use ip_masq_config::MasqConfig;
use ip_masq_config::table::Origin;
use ip_masq_config::table::Table;

pub mod cleanup;
pub mod doctor;
pub mod installed;
pub mod preview;
pub(crate) mod probe;
pub mod snat;
pub mod status;

/// Errors of the one-shot commands.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{path}: {source}")]
    Invalid {
        path: String,
        #[source]
        source: config::ConfigError,
    },
    #[error("cannot read the pinned maps under {path} (is the agent installed there?)")]
    Pins {
        path: String,
        #[source]
        source: DatapathError,
    },
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    State(#[from] crate::serve::state::StateError),
    #[error(transparent)]
    Merge(#[from] ip_masq_config::sources::MergeError),
    #[error(transparent)]
    Conntrack(#[from] crate::kernel::conntrack::ConntrackError),
    #[error("cannot read {path}")]
    Sysctl {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "no chain {chain} and no jump to it in this network namespace, but pins under {pin_path}: run cleanup in the node's network namespace (in a pod: hostNetwork: true). Nothing removed: with the pins gone first, iptables-legacy could not delete rules that name them. If the node has no rules of ip-masq's left, remove the pins with `rm -r {pin_path}`"
    )]
    NoRulesHere { chain: String, pin_path: String },
    #[error("cannot remove {path}")]
    Remove {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl CommandError {
    /// Whether the error is about the file's contents (`check` exits 1):
    /// invalid as the agent would judge it, over `--max-cidrs`, or over
    /// `--max-config-bytes`. Anything else (the file cannot be read: a
    /// directory, a dangling symlink, an I/O error) is an error (exit 2).
    pub fn is_invalid_config(&self) -> bool {
        matches!(
            self,
            Self::Invalid { .. } | Self::Merge(_) | Self::Read(ReadError::TooLarge { .. })
        )
    }
}

#[derive(Serialize)]
struct TableRow {
    cidr: String,
    family: &'static str,
    action: &'static str,
    origin: Origin,
    /// The files that list the CIDR, with `--config-dir`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sources: Vec<String>,
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::KeepSource => "keep-source",
        Action::Masquerade => "masquerade",
    }
}

fn family_name(prefix: &IpNet) -> &'static str {
    match prefix {
        IpNet::V4(_) => "ipv4",
        IpNet::V6(_) => "ipv6",
    }
}

/// Version of `check --json`'s document; raised only when a field changes
/// meaning or goes away (new fields may be added without it).
pub const CHECK_JSON_FORMAT: u32 = 1;

/// `check --json`'s document for a file that is invalid: `accepted` false
/// and every problem in `errors`, the same fields as an accepted file's
/// otherwise, so that a reader needs one parser for both.
pub fn check_rejection_json(args: &CheckOptions, err: &CommandError) -> String {
    let errors: Vec<String> = match err {
        CommandError::Invalid {
            source: config::ConfigError::Invalid(problems),
            ..
        } => problems.iter().map(ToString::to_string).collect(),
        CommandError::Invalid { source, .. } => vec![source.to_string()],
        CommandError::Merge(source) => vec![source.to_string()],
        other => vec![crate::error::error_chain(other)],
    };
    let document = serde_json::json!({
        "format": CHECK_JSON_FORMAT,
        "config": args.config.config.display().to_string(),
        "source": "file",
        "accepted": false,
        "errors": errors,
        "warnings": [],
        "settings": null,
        "entries": [],
    });
    serde_json::to_string_pretty(&document).expect("serialisable") + "\n"
}

/// Reads and validates one file as `run` would (no file: the defaults) and
/// returns its effective table.
///
/// # Errors
/// The read error, or the file invalid (`Invalid`).
pub(crate) fn read_table(
    options: &CheckOptions,
    path: &std::path::Path,
) -> Result<Table, CommandError> {
    let parse = options.config.parse_options();
    let max_bytes = options.config.max_config_bytes as usize;
    let config = match source::read_config_with_limit(path, max_bytes)? {
        None => MasqConfig::defaults(parse),
        Some(bytes) => {
            config::parse_with_limit(&bytes, parse, max_bytes)
                .map_err(|source| CommandError::Invalid {
                    path: path.display().to_string(),
                    source,
                })?
                .config
        }
    };
    Ok(Table::effective(&config, parse.enable_ipv6))
}

/// `ip-masq check`: validates the file as `run` would and renders the
/// effective table. Returns the text to print.
///
/// # Errors
/// The read or validation error, listing every bad value.
pub fn check(args: &CheckOptions) -> Result<String, CommandError> {
    let options = args.config.parse_options();
    let path = args.config.config.display().to_string();
    let max_bytes = args.config.max_config_bytes as usize;
    let mut origins = std::collections::BTreeMap::new();
    let read = match &args.config.config_dir {
        Some(dir) => {
            let files: Vec<(String, Vec<u8>)> =
                source::read_sources(&args.config.config, dir, max_bytes)?
                    .into_iter()
                    .filter_map(|(name, bytes)| Some((name, bytes?)))
                    .collect();
            if files.is_empty() {
                None
            } else {
                let merged = ip_masq_config::sources::parse_sources(&files, options, max_bytes)
                    .map_err(|err| match err {
                        ip_masq_config::sources::MergeError::Invalid { file, source } => {
                            CommandError::Invalid { path: file, source }
                        }
                        other => CommandError::Merge(other),
                    })?;
                origins = merged.origins;
                Some(config::ParsedConfig {
                    config: merged.config,
                    warnings: merged.warnings,
                })
            }
        }
        None => match source::read_config_with_limit(&args.config.config, max_bytes)? {
            None => None,
            Some(bytes) => Some(
                config::parse_with_limit(&bytes, options, max_bytes).map_err(|source| {
                    CommandError::Invalid {
                        path: path.clone(),
                        source,
                    }
                })?,
            ),
        },
    };
    let (parsed, from_file) = match read {
        None => (
            config::ParsedConfig {
                config: MasqConfig::defaults(options),
                warnings: Vec::new(),
            },
            false,
        ),
        Some(parsed) => (parsed, true),
    };
    let table = Table::effective(&parsed.config, options.enable_ipv6);
    let (v4, v6) = table.family_counts();
    let capacity = args.config.max_cidrs as usize;
    if v4 > capacity || v6 > capacity {
        return Err(CommandError::Invalid {
            path,
            source: config::ConfigError::Invalid(vec![config::Problem {
                key: "nonMasqueradeCIDRs",
                value: None,
                reason: format!("{v4} IPv4 and {v6} IPv6 entries exceed --max-cidrs {capacity}"),
            }]),
        });
    }
    let rows: Vec<TableRow> = table
        .iter()
        .map(|(prefix, entry)| TableRow {
            cidr: prefix.to_string(),
            family: family_name(prefix),
            action: action_name(entry.action),
            origin: entry.origin,
            sources: origins.get(prefix).cloned().unwrap_or_default(),
        })
        .collect();
    if args.json {
        let config = &parsed.config;
        let document = serde_json::json!({
            "format": CHECK_JSON_FORMAT,
            "config": path,
            "source": if from_file { "file" } else { "defaults" },
            "accepted": true,
            "errors": [],
            "warnings": parsed.warnings,
            "settings": {
                "masqLinkLocal": config.masq_link_local,
                "masqLinkLocalIPv6": config.masq_link_local_ipv6,
                "resyncInterval": format!("{:?}", config.resync_interval),
                "resyncIntervalNanos": config.resync_interval.as_nanos() as u64,
                "cidrLimit": config.cidr_limit,
            },
            // Kept for readers of the first format.
            "resyncInterval": format!("{:?}", config.resync_interval),
            "entries": rows,
        });
        return Ok(serde_json::to_string_pretty(&document).expect("serialisable") + "\n");
    }
    let mut out = String::new();
    let source = if from_file {
        "file"
    } else {
        "defaults, no file"
    };
    let _ = writeln!(out, "{path}: valid ({source})");
    for warning in &parsed.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let _ = writeln!(
        out,
        "resync interval: {:?}; entries: {v4} IPv4, {v6} IPv6; anything else is masqueraded",
        parsed.config.resync_interval
    );
    let _ = writeln!(
        out,
        "{:<44} {:<6} {:<12} ORIGIN",
        "CIDR", "FAMILY", "ACTION"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<44} {:<6} {:<12} {}",
            row.cidr, row.family, row.action, row.origin
        );
    }
    Ok(out)
}

/// `ip-masq dump`: the entries of the pinned maps.
///
/// # Errors
/// Fails when the maps are not pinned under the pin path.
pub fn dump(args: &DumpOptions) -> Result<String, CommandError> {
    let mut entries =
        datapath::read_pinned_entries(&args.pin_path).map_err(|source| CommandError::Pins {
            path: args.pin_path.display().to_string(),
            source,
        })?;
    entries.sort();
    // With several config files the agent names each entry's files.
    let state = crate::serve::state::state_file_path(&args.state_dir, &args.pin_path);
    let sources = crate::serve::state::read_state(&state)
        .ok()
        .flatten()
        .map(|state| state.entry_sources)
        .unwrap_or_default();
    #[derive(Serialize)]
    struct Row {
        cidr: String,
        family: &'static str,
        action: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        sources: Vec<String>,
    }
    let rows: Vec<Row> = entries
        .iter()
        .map(|(prefix, value)| Row {
            cidr: prefix.to_string(),
            family: family_name(prefix),
            action: Action::from_value(*value).map_or_else(
                || format!("unknown({value})"),
                |a| action_name(a).to_owned(),
            ),
            sources: sources
                .get(&prefix.to_string())
                .cloned()
                .unwrap_or_default(),
        })
        .collect();
    if args.json {
        return Ok(serde_json::to_string_pretty(&rows).expect("serialisable") + "\n");
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<44} {:<6} {:<12} SOURCES",
        "CIDR", "FAMILY", "ACTION"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<44} {:<6} {:<12} {}",
            row.cidr,
            row.family,
            row.action,
            row.sources.join(",")
        );
    }
    Ok(out)
}

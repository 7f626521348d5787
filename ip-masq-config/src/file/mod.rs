//! The ip-masq-agent ConfigMap file: parsing and validation. Pure: no I/O.
//!
//! The file is read exactly as upstream ip-masq-agent reads it (its
//! `syncConfig`): when the first non-space character is `{` the bytes go
//! straight to Go's `encoding/json`, otherwise YAML 1.1 is converted to JSON
//! as `sigs.k8s.io/yaml` does ([`yaml`]); then `encoding/json.Unmarshal`
//! fills a struct that already holds the defaults ([`gojson`] and
//! [`fill`]): keys match with Unicode simple case folding, unknown keys are
//! ignored, `null` leaves a flag or number unchanged and empties a list,
//! and the last of duplicate keys wins while an invalid earlier one still
//! fails the file; finally each CIDR must parse as Go's `net.ParseCIDR`
//! parses it and be aligned. The README's "Differences from ip-masq-agent"
//! lists what ip-masq does differently on purpose: no 64-CIDR default
//! limit, masquerade exceptions (`masqueradeCIDRs`), warnings for unknown
//! keys, every problem reported at once, resync intervals below one second
//! raised to it, and the file size limit.

use std::{fmt, time::Duration};

use ipnet::IpNet;
use thiserror::Error;

mod cidr;
mod fill;
mod gojson;
mod yaml;

use fill::fill;

/// Largest config file the agent reads; anything bigger is a mistake or an attack.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// Shortest resync interval; shorter values are raised to it with a warning.
pub const MIN_RESYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Upstream's default resync interval.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// RFC 1918 ranges: upstream's default `nonMasqueradeCIDRs`.
pub const RFC1918_CIDRS: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
/// Added to the defaults by `--nomasq-all-reserved-ranges`.
pub const RESERVED_CIDRS: [&str; 8] = [
    "100.64.0.0/10",   // RFC 6598
    "192.0.0.0/24",    // RFC 6890
    "192.0.2.0/24",    // RFC 5737
    "192.88.99.0/24",  // RFC 7526
    "198.18.0.0/15",   // RFC 6815
    "198.51.100.0/24", // RFC 5737
    "203.0.113.0/24",  // RFC 5737
    "240.0.0.0/4",     // RFC 5735
];
/// Non-masquerade unless `masqLinkLocal: true`.
pub const LINK_LOCAL_V4: &str = "169.254.0.0/16";
/// Non-masquerade unless `masqLinkLocalIPv6: true` (only with `--enable-ipv6`).
pub const LINK_LOCAL_V6: &str = "fe80::/10";

/// Flags that change how a config file is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// `--enable-ipv6`: without it an IPv6 CIDR is a validation error.
    pub enable_ipv6: bool,
    /// `--nomasq-all-reserved-ranges`: widens the default `nonMasqueradeCIDRs`.
    pub nomasq_all_reserved_ranges: bool,
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasqConfig {
    /// Destinations that keep the pod source address (duplicates merged, in file order).
    pub non_masquerade_cidrs: Vec<IpNet>,
    /// Whether `nonMasqueradeCIDRs` came from the defaults rather than the file.
    pub non_masquerade_cidrs_defaulted: bool,
    /// Destinations masqueraded even inside a non-masquerade range.
    pub masquerade_cidrs: Vec<IpNet>,
    /// `masqLinkLocal`: masquerade 169.254.0.0/16 too.
    pub masq_link_local: bool,
    /// `masqLinkLocalIPv6`: masquerade fe80::/10 too.
    pub masq_link_local_ipv6: bool,
    /// `resyncInterval`, raised to [`MIN_RESYNC_INTERVAL`] when below it.
    pub resync_interval: Duration,
    /// Upstream's `cidrLimit` when the file sets it; `None` means the map
    /// capacity is the only limit (upstream's default is 64).
    pub cidr_limit: Option<i64>,
}

impl MasqConfig {
    /// The configuration used when the file is missing or empty.
    pub fn defaults(options: ParseOptions) -> Self {
        let mut cidrs: Vec<&str> = RFC1918_CIDRS.to_vec();
        if options.nomasq_all_reserved_ranges {
            cidrs.extend(RESERVED_CIDRS);
        }
        Self {
            non_masquerade_cidrs: cidrs
                .into_iter()
                .map(|cidr| cidr.parse().expect("built-in CIDR"))
                .collect(),
            non_masquerade_cidrs_defaulted: true,
            masquerade_cidrs: Vec::new(),
            masq_link_local: false,
            masq_link_local_ipv6: false,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            cidr_limit: None,
        }
    }
}

/// A parsed configuration with the warnings found on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedConfig {
    /// The configuration.
    pub config: MasqConfig,
    /// Unknown keys and raised intervals, one sentence each.
    pub warnings: Vec<String>,
}

/// One rejected value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The config key, as upstream spells it.
    pub key: &'static str,
    /// The offending value, as JSON text (a string in quotes), when there is one.
    pub value: Option<String>,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}: {}: {}", self.key, value, self.reason),
            None => write!(f, "{}: {}", self.key, self.reason),
        }
    }
}

/// Why a config file was rejected as a whole.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Over the size limit.
    #[error("config is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The file's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A YAML file that is not UTF-8 (go-yaml refuses it too).
    #[error("config is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// Where the first bad byte is.
        offset: usize,
    },
    /// Not YAML or JSON as upstream's decoders read them.
    #[error("config is not valid {format}: {message}")]
    Syntax {
        /// `YAML` or `JSON`: which decoder upstream would use for the file.
        format: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A list, a string or a number where the settings belong.
    #[error("config must be a mapping of keys to values, found {found}")]
    NotAMapping {
        /// The JSON type found.
        found: &'static str,
    },
    /// Values of the wrong type or that fail validation, all of them.
    #[error("{} invalid value(s): {}", .0.len(), join_problems(.0))]
    Invalid(Vec<Problem>),
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The keys we understand, spelled as upstream documents them.
pub(crate) const KEY_NON_MASQUERADE_CIDRS: &str = "nonMasqueradeCIDRs";
pub(crate) const KEY_MASQUERADE_CIDRS: &str = "masqueradeCIDRs";
pub(crate) const KEY_MASQ_LINK_LOCAL: &str = "masqLinkLocal";
pub(crate) const KEY_MASQ_LINK_LOCAL_IPV6: &str = "masqLinkLocalIPv6";
pub(crate) const KEY_RESYNC_INTERVAL: &str = "resyncInterval";
pub(crate) const KEY_CIDR_LIMIT: &str = "cidrLimit";
pub(crate) const KNOWN_KEYS: [&str; 6] = [
    KEY_NON_MASQUERADE_CIDRS,
    KEY_MASQUERADE_CIDRS,
    KEY_MASQ_LINK_LOCAL,
    KEY_MASQ_LINK_LOCAL_IPV6,
    KEY_RESYNC_INTERVAL,
    KEY_CIDR_LIMIT,
];

/// Parses and validates the bytes of a config file.
///
/// Empty input (or a document that is only comments or `null`) gives the
/// defaults, as a missing file does.
///
/// # Errors
/// Returns [`ConfigError`]; `Invalid` lists every bad value, not just the first.
pub fn parse(bytes: &[u8], options: ParseOptions) -> Result<ParsedConfig, ConfigError> {
    parse_with_limit(bytes, options, MAX_CONFIG_BYTES)
}

/// [`parse`] with a size limit other than [`MAX_CONFIG_BYTES`]
/// (`--max-config-bytes`).
///
/// # Errors
/// As [`parse`]; `TooLarge` is judged against `max_bytes`.
pub fn parse_with_limit(
    bytes: &[u8],
    options: ParseOptions,
    max_bytes: usize,
) -> Result<ParsedConfig, ConfigError> {
    if bytes.len() > max_bytes {
        return Err(ConfigError::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    let json = if has_json_prefix(bytes) {
        // Go's JSON decoder reads invalid UTF-8 inside strings as U+FFFD
        // and refuses it elsewhere; a lossy conversion does the same.
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        // go-yaml reads UTF-16 when a byte-order mark says so, and
        // refuses invalid UTF-8 otherwise.
        if !matches!(bytes, [0xff, 0xfe, ..] | [0xfe, 0xff, ..]) {
            std::str::from_utf8(bytes).map_err(|err| ConfigError::NotUtf8 {
                offset: err.valid_up_to(),
            })?;
        }
        yaml::to_json(bytes).map_err(|message| ConfigError::Syntax {
            format: "YAML",
            message,
        })?
    };
    let entries = match gojson::top_level(&json).map_err(|message| ConfigError::Syntax {
        format: "JSON",
        message,
    })? {
        gojson::TopLevel::Null => Vec::new(),
        gojson::TopLevel::Other(found) => return Err(ConfigError::NotAMapping { found }),
        gojson::TopLevel::Object(entries) => entries,
    };
    fill(entries, options)
}

/// `k8s.io/apimachinery`'s `IsJSONBuffer`: the first character that is not
/// Unicode white space is `{`.
fn has_json_prefix(bytes: &[u8]) -> bool {
    let valid = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => std::str::from_utf8(&bytes[..err.valid_up_to()]).unwrap_or_default(),
    };
    valid
        .trim_start_matches(char::is_whitespace)
        .starts_with('{')
}

#[cfg(test)]
mod tests;

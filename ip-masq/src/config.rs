//! The ip-masq-agent ConfigMap file: parsing and validation. Pure: no I/O.
//!
//! Semantics follow upstream ip-masq-agent, which decodes YAML through Go's
//! `encoding/json`: keys match case-insensitively, unknown keys are ignored,
//! and a key that is present replaces only its own default. On top of that,
//! every bad entry is reported at once, unknown keys produce a warning, and
//! the optional `masqueradeCIDRs` key carves exceptions out of the
//! non-masquerade ranges.

use std::{collections::BTreeSet, fmt, time::Duration};

use ipnet::IpNet;
use serde_json::Value;
use thiserror::Error;

use crate::duration::parse_go_duration;

// Spelled out so that the fuzz target, which compiles this file through
// `#[path]`, finds the module too.
#[path = "config/decode.rs"]
mod decode;

use decode::{Document, Field};

/// Largest config file the agent reads; anything bigger is a mistake or an attack.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// Nesting deeper than this cannot be a valid config and is refused before decoding.
pub const MAX_NESTING_DEPTH: usize = 32;
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
    pub masq_link_local: bool,
    pub masq_link_local_ipv6: bool,
    pub resync_interval: Duration,
    /// Upstream's `cidrLimit`; `None` means the map capacity is the only limit.
    pub cidr_limit: Option<usize>,
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
    pub config: MasqConfig,
    pub warnings: Vec<String>,
}

/// One rejected value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The config key, as upstream spells it.
    pub key: &'static str,
    /// The offending value as written, when there is one.
    pub value: Option<String>,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}: {:?}: {}", self.key, value, self.reason),
            None => write!(f, "{}: {}", self.key, self.reason),
        }
    }
}

/// Why a config file was rejected as a whole.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("config is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("config nests deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("config is neither valid YAML nor JSON: {message}")]
    Syntax { message: String },
    #[error("config must be a mapping of keys to values, found {found}")]
    NotAMapping { found: &'static str },
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
const KEY_NON_MASQUERADE_CIDRS: &str = "nonMasqueradeCIDRs";
const KEY_MASQUERADE_CIDRS: &str = "masqueradeCIDRs";
const KEY_MASQ_LINK_LOCAL: &str = "masqLinkLocal";
const KEY_MASQ_LINK_LOCAL_IPV6: &str = "masqLinkLocalIPv6";
const KEY_RESYNC_INTERVAL: &str = "resyncInterval";
const KEY_CIDR_LIMIT: &str = "cidrLimit";
const KNOWN_KEYS: [&str; 6] = [
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
    let text = std::str::from_utf8(bytes).map_err(|err| ConfigError::NotUtf8 {
        offset: err.valid_up_to(),
    })?;
    if nesting_depth(text) > MAX_NESTING_DEPTH {
        return Err(ConfigError::TooDeep {
            max: MAX_NESTING_DEPTH,
        });
    }
    let document =
        decode::decode(text, options).map_err(|message| ConfigError::Syntax { message })?;
    let mut config = MasqConfig::defaults(options);
    let mut warnings = Vec::new();
    let fields = match document {
        Document::Null => return Ok(ParsedConfig { config, warnings }),
        Document::NotAMapping(found) => return Err(ConfigError::NotAMapping { found }),
        Document::Fields(fields) => fields,
    };

    let mut problems = Vec::new();
    for (key, field) in fields {
        let (known, value) = match field {
            Field::Unknown => {
                let hint = closest_known_key(&key)
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                warnings.push(format!("unknown key {key:?} ignored{hint}"));
                continue;
            }
            Field::Cidrs(key, list) => {
                problems.extend(list.problems);
                if let Some(cidrs) = list.cidrs {
                    if key == KEY_NON_MASQUERADE_CIDRS {
                        config.non_masquerade_cidrs = cidrs;
                        config.non_masquerade_cidrs_defaulted = false;
                    } else {
                        config.masquerade_cidrs = cidrs;
                    }
                }
                continue;
            }
            Field::Value(known, value) => (known, value),
        };
        match known {
            KEY_MASQ_LINK_LOCAL => {
                if let Some(flag) = boolean(known, &value, &mut problems) {
                    config.masq_link_local = flag;
                }
            }
            KEY_MASQ_LINK_LOCAL_IPV6 => {
                if let Some(flag) = boolean(known, &value, &mut problems) {
                    config.masq_link_local_ipv6 = flag;
                }
            }
            KEY_RESYNC_INTERVAL => {
                if let Some(interval) = resync_interval(&value, &mut warnings, &mut problems) {
                    config.resync_interval = interval;
                }
            }
            KEY_CIDR_LIMIT => match &value {
                Value::Null => {}
                Value::Number(n) if n.as_u64().is_some() => {
                    config.cidr_limit = n.as_u64().map(|n| n as usize);
                }
                other => problems.push(Problem {
                    key: KEY_CIDR_LIMIT,
                    value: Some(other.to_string()),
                    reason: "expected a non-negative whole number".into(),
                }),
            },
            _ => unreachable!("every known key is handled"),
        }
    }

    cross_check(&config, &mut problems);
    if problems.is_empty() {
        Ok(ParsedConfig { config, warnings })
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Checks that need the whole config: the CIDR limit and contradictions.
fn cross_check(config: &MasqConfig, problems: &mut Vec<Problem>) {
    if let Some(limit) = config.cidr_limit
        && config.non_masquerade_cidrs.len() > limit
    {
        problems.push(Problem {
            key: KEY_NON_MASQUERADE_CIDRS,
            value: None,
            reason: format!(
                "{} CIDRs (excluding link-local) exceed cidrLimit {limit}",
                config.non_masquerade_cidrs.len()
            ),
        });
    }
    let keep: BTreeSet<&IpNet> = config.non_masquerade_cidrs.iter().collect();
    for cidr in &config.masquerade_cidrs {
        if keep.contains(cidr) {
            problems.push(Problem {
                key: KEY_MASQUERADE_CIDRS,
                value: Some(cidr.to_string()),
                reason: "also listed in nonMasqueradeCIDRs; a CIDR cannot be both".into(),
            });
        }
    }
}

/// An upper bound on the nesting depth of flow (`[`, `{`) and block
/// (indentation) structure, computed without decoding, so that a hostile
/// document cannot exhaust the stack or memory of the decoder.
fn nesting_depth(text: &str) -> usize {
    let mut flow_depth = 0usize;
    let mut max_flow = 0usize;
    let mut max_indent = 0usize;
    for line in text.lines() {
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        if !line.trim().is_empty() {
            max_indent = max_indent.max(indent / 2);
        }
        // Bytes, not chars: the brackets are ASCII, and UTF-8 never hides
        // an ASCII byte inside a multi-byte character.
        for byte in line.bytes() {
            match byte {
                b'[' | b'{' => {
                    flow_depth += 1;
                    max_flow = max_flow.max(flow_depth);
                }
                b']' | b'}' => flow_depth = flow_depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    max_flow.max(max_indent)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Validates one CIDR the way upstream does: it must parse and be aligned
/// (no host bits set), and IPv6 needs `--enable-ipv6`.
fn validate_cidr(text: &str, options: ParseOptions) -> Result<IpNet, String> {
    let cidr: IpNet = text
        .parse()
        .map_err(|_| "not a CIDR (expected ADDRESS/PREFIX, e.g. 10.0.0.0/8)".to_owned())?;
    if cidr.addr() != cidr.network() {
        return Err(format!(
            "not aligned to its prefix: host bits are set (did you mean {}?)",
            cidr.trunc()
        ));
    }
    if matches!(cidr, IpNet::V6(_)) && !options.enable_ipv6 {
        return Err("IPv6 CIDR given but IPv6 is not enabled (use --enable-ipv6)".to_owned());
    }
    Ok(cidr)
}

fn boolean(key: &'static str, value: &Value, problems: &mut Vec<Problem>) -> Option<bool> {
    match value {
        // Go's json leaves a bool untouched on null.
        Value::Null => None,
        Value::Bool(flag) => Some(*flag),
        other => {
            problems.push(Problem {
                key,
                value: Some(other.to_string()),
                reason: format!("expected true or false, found {}", kind_of(other)),
            });
            None
        }
    }
}

fn resync_interval(
    value: &Value,
    warnings: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    let text = match value {
        Value::String(text) => text,
        other => {
            problems.push(Problem {
                key: KEY_RESYNC_INTERVAL,
                value: Some(other.to_string()),
                reason: "expected a duration string such as \"60s\" or \"1m30s\"".into(),
            });
            return None;
        }
    };
    match parse_go_duration(text) {
        Ok(interval) if interval < MIN_RESYNC_INTERVAL => {
            warnings.push(format!(
                "resyncInterval {text:?} is below {}s; using {}s",
                MIN_RESYNC_INTERVAL.as_secs(),
                MIN_RESYNC_INTERVAL.as_secs()
            ));
            Some(MIN_RESYNC_INTERVAL)
        }
        Ok(interval) => Some(interval),
        Err(err) => {
            problems.push(Problem {
                key: KEY_RESYNC_INTERVAL,
                value: Some(text.clone()),
                reason: err.to_string(),
            });
            None
        }
    }
}

/// The known key an unknown one most likely meant, for the warning.
fn closest_known_key(unknown: &str) -> Option<&'static str> {
    let unknown = unknown.to_ascii_lowercase();
    KNOWN_KEYS
        .iter()
        .map(|known| (edit_distance(&unknown, &known.to_ascii_lowercase()), *known))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, known)| known)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous_diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous_diagonal + usize::from(ca != *cb);
            previous_diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_ONLY: ParseOptions = ParseOptions {
        enable_ipv6: false,
        nomasq_all_reserved_ranges: false,
    };
    const WITH_V6: ParseOptions = ParseOptions {
        enable_ipv6: true,
        nomasq_all_reserved_ranges: false,
    };

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn problems(result: Result<ParsedConfig, ConfigError>) -> Vec<Problem> {
        match result {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected invalid values, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_comment_only_files_give_defaults() {
        for text in ["", "   \n", "# nothing here\n", "null", "~"] {
            let parsed = parse(text.as_bytes(), V4_ONLY).unwrap();
            assert_eq!(parsed.config, MasqConfig::defaults(V4_ONLY), "{text:?}");
        }
    }

    #[test]
    fn defaults_are_upstreams() {
        let config = MasqConfig::defaults(V4_ONLY);
        assert_eq!(config.non_masquerade_cidrs, nets(&RFC1918_CIDRS));
        assert!(!config.masq_link_local);
        assert!(!config.masq_link_local_ipv6);
        assert_eq!(config.resync_interval, Duration::from_secs(60));
        assert_eq!(config.cidr_limit, None);
    }

    #[test]
    fn reserved_ranges_flag_extends_defaults_only() {
        let options = ParseOptions {
            nomasq_all_reserved_ranges: true,
            ..V4_ONLY
        };
        let config = parse(b"", options).unwrap().config;
        assert_eq!(config.non_masquerade_cidrs.len(), 11);
        assert!(
            config
                .non_masquerade_cidrs
                .contains(&"240.0.0.0/4".parse().unwrap())
        );
        let config = parse(b"nonMasqueradeCIDRs: [10.0.0.0/8]", options)
            .unwrap()
            .config;
        assert_eq!(config.non_masquerade_cidrs, nets(&["10.0.0.0/8"]));
    }

    #[test]
    fn yaml_and_json_parse_the_same() {
        let yaml = "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 198.51.100.0/24\nmasqLinkLocal: true\nresyncInterval: 30s\n";
        let json = "{\n\t\"nonMasqueradeCIDRs\": [\"10.0.0.0/8\", \"198.51.100.0/24\"],\n\t\"masqLinkLocal\": true,\n\t\"resyncInterval\": \"30s\"\n}";
        let from_yaml = parse(yaml.as_bytes(), V4_ONLY).unwrap();
        let from_json = parse(json.as_bytes(), V4_ONLY).unwrap();
        assert_eq!(from_yaml, from_json);
        assert_eq!(
            from_yaml.config.non_masquerade_cidrs,
            nets(&["10.0.0.0/8", "198.51.100.0/24"])
        );
        assert!(from_yaml.config.masq_link_local);
        assert_eq!(from_yaml.config.resync_interval, Duration::from_secs(30));
    }

    #[test]
    fn present_key_replaces_only_its_default() {
        let config = parse(b"nonMasqueradeCIDRs: []", V4_ONLY).unwrap().config;
        assert!(config.non_masquerade_cidrs.is_empty());
        assert!(!config.non_masquerade_cidrs_defaulted);
        assert!(!config.masq_link_local);
        let config = parse(b"masqLinkLocal: true", V4_ONLY).unwrap().config;
        assert_eq!(config.non_masquerade_cidrs, nets(&RFC1918_CIDRS));
        assert!(config.non_masquerade_cidrs_defaulted);
        assert!(config.masq_link_local);
    }

    #[test]
    fn null_list_means_empty_list() {
        let config = parse(b"nonMasqueradeCIDRs: null", V4_ONLY).unwrap().config;
        assert!(config.non_masquerade_cidrs.is_empty());
    }

    #[test]
    fn keys_match_case_insensitively() {
        let parsed = parse(
            b"nonmasqueradecidrs: [192.168.0.0/16]\nMASQLINKLOCAL: true\nResyncInterval: 5s",
            V4_ONLY,
        )
        .unwrap();
        assert_eq!(
            parsed.config.non_masquerade_cidrs,
            nets(&["192.168.0.0/16"])
        );
        assert!(parsed.config.masq_link_local);
        assert_eq!(parsed.config.resync_interval, Duration::from_secs(5));
        assert!(parsed.warnings.is_empty());
    }

    #[test]
    fn unknown_keys_warn_with_a_suggestion() {
        let parsed = parse(b"nonMasqueradeCidr: [10.0.0.0/8]\nfoo: 1", V4_ONLY).unwrap();
        assert_eq!(parsed.config, MasqConfig::defaults(V4_ONLY));
        assert_eq!(parsed.warnings.len(), 2);
        assert!(parsed.warnings[0].contains("\"nonMasqueradeCidr\""));
        assert!(parsed.warnings[0].contains("did you mean \"nonMasqueradeCIDRs\""));
        assert!(parsed.warnings[1].contains("\"foo\""));
        assert!(!parsed.warnings[1].contains("did you mean"));
    }

    #[test]
    fn every_bad_cidr_is_reported() {
        let found = problems(parse(
            b"nonMasqueradeCIDRs: [10.0.0.1/8, not-a-cidr, 10.0.0.0/33, 192.168.0.0/16, 7]",
            V4_ONLY,
        ));
        let values: Vec<_> = found.iter().map(|p| p.value.clone().unwrap()).collect();
        assert_eq!(values, ["10.0.0.1/8", "not-a-cidr", "10.0.0.0/33", "7"]);
        assert!(found[0].reason.contains("did you mean 10.0.0.0/8"));
        let message = ConfigError::Invalid(found).to_string();
        assert!(message.starts_with("4 invalid value(s)"), "{message}");
        assert!(message.contains("10.0.0.1/8") && message.contains("not-a-cidr"));
    }

    #[test]
    fn duplicates_are_merged() {
        let config = parse(
            b"nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12]",
            V4_ONLY,
        )
        .unwrap()
        .config;
        assert_eq!(
            config.non_masquerade_cidrs,
            nets(&["10.0.0.0/8", "172.16.0.0/12"])
        );
    }

    #[test]
    fn ipv6_needs_the_flag() {
        let text = b"nonMasqueradeCIDRs: [10.0.0.0/8, 2001:db8::/32]";
        let found = problems(parse(text, V4_ONLY));
        assert_eq!(found.len(), 1);
        assert!(found[0].reason.contains("--enable-ipv6"));
        let config = parse(text, WITH_V6).unwrap().config;
        assert_eq!(
            config.non_masquerade_cidrs,
            nets(&["10.0.0.0/8", "2001:db8::/32"])
        );
    }

    #[test]
    fn resync_interval_rules() {
        let found = problems(parse(b"resyncInterval: 60", V4_ONLY));
        assert_eq!(found[0].key, "resyncInterval");
        let found = problems(parse(b"resyncInterval: \"60\"", V4_ONLY));
        assert!(found[0].reason.contains("missing unit"));
        let parsed = parse(b"resyncInterval: 100ms", V4_ONLY).unwrap();
        assert_eq!(parsed.config.resync_interval, MIN_RESYNC_INTERVAL);
        assert_eq!(parsed.warnings.len(), 1);
        let parsed = parse(b"resyncInterval: 1m30s", V4_ONLY).unwrap();
        assert_eq!(parsed.config.resync_interval, Duration::from_secs(90));
    }

    #[test]
    fn cidr_limit_is_enforced_only_when_set() {
        let many: Vec<String> = (0..100).map(|i| format!("10.{i}.0.0/16")).collect();
        let text = format!("nonMasqueradeCIDRs: [{}]", many.join(", "));
        assert_eq!(
            parse(text.as_bytes(), V4_ONLY)
                .unwrap()
                .config
                .non_masquerade_cidrs
                .len(),
            100
        );
        let limited = format!("{text}\ncidrLimit: 64");
        let found = problems(parse(limited.as_bytes(), V4_ONLY));
        assert!(found[0].reason.contains("exceed cidrLimit 64"));
        let raised = format!("{text}\ncidrLimit: 100");
        assert!(parse(raised.as_bytes(), V4_ONLY).is_ok());
        let found = problems(parse(b"cidrLimit: -1", V4_ONLY));
        assert_eq!(found[0].key, "cidrLimit");
    }

    #[test]
    fn masquerade_exceptions() {
        let config = parse(
            b"nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.200.0.0/16]",
            V4_ONLY,
        )
        .unwrap()
        .config;
        assert_eq!(config.masquerade_cidrs, nets(&["10.200.0.0/16"]));
        let found = problems(parse(
            b"nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.0.0.0/8, 10.1.0.1/16]",
            V4_ONLY,
        ));
        assert_eq!(found.len(), 2);
        assert!(found.iter().any(|p| p.reason.contains("cannot be both")));
    }

    #[test]
    fn wrong_types_are_reported_together() {
        let found = problems(parse(
            b"nonMasqueradeCIDRs: 10.0.0.0/8\nmasqLinkLocal: yes-please\ncidrLimit: many",
            V4_ONLY,
        ));
        let keys: BTreeSet<_> = found.iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["nonMasqueradeCIDRs", "masqLinkLocal", "cidrLimit"])
        );
    }

    #[test]
    fn broken_documents_are_rejected() {
        assert!(matches!(
            parse(b"nonMasqueradeCIDRs: [10.0.0.0/8", V4_ONLY),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            parse(b"- a\n- b\n", V4_ONLY),
            Err(ConfigError::NotAMapping { found: "a list" })
        ));
        assert!(matches!(
            parse(b"\xff\xfe", V4_ONLY),
            Err(ConfigError::NotUtf8 { offset: 0 })
        ));
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            parse(deep.as_bytes(), V4_ONLY),
            Err(ConfigError::TooDeep { .. })
        ));
        let huge = vec![b'#'; MAX_CONFIG_BYTES + 1];
        assert!(matches!(
            parse(&huge, V4_ONLY),
            Err(ConfigError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_raised_size_limit_admits_a_larger_file_and_no_more() {
        let mut large = b"nonMasqueradeCIDRs: [10.0.0.0/8]\n".to_vec();
        large.resize(MAX_CONFIG_BYTES + 100, b'#');
        let parsed = parse_with_limit(&large, V4_ONLY, MAX_CONFIG_BYTES + 100).unwrap();
        assert_eq!(
            parsed.config.non_masquerade_cidrs,
            ["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            parse_with_limit(&large, V4_ONLY, MAX_CONFIG_BYTES + 99),
            Err(ConfigError::TooLarge {
                size: MAX_CONFIG_BYTES + 100,
                max: MAX_CONFIG_BYTES + 99
            })
        );
    }

    #[test]
    fn alias_bombs_are_rejected_quickly() {
        let bomb = "a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n\
                    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
                    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n\
                    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
                    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n\
                    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n\
                    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n\
                    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n\
                    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
        assert!(matches!(
            parse(bomb.as_bytes(), V4_ONLY),
            Err(ConfigError::Syntax { .. })
        ));
    }
}

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

use std::{collections::BTreeSet, fmt, time::Duration};

use ipnet::IpNet;
use thiserror::Error;

use crate::duration::parse_go_duration_signed;

mod gojson;
mod yaml;

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
    pub masq_link_local: bool,
    pub masq_link_local_ipv6: bool,
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
    pub config: MasqConfig,
    pub warnings: Vec<String>,
}

/// One rejected value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The config key, as upstream spells it.
    pub key: &'static str,
    /// The offending value, as JSON text (a string in quotes), when there is one.
    pub value: Option<String>,
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
    #[error("config is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("config is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("config is not valid {format}: {message}")]
    Syntax {
        /// `YAML` or `JSON`: which decoder upstream would use for the file.
        format: &'static str,
        message: String,
    },
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

/// A Go `[]string` as `encoding/json` decodes into it: an array reuses the
/// slice's backing array, so a `null` item keeps whatever that slot held
/// (a default, or an item of an earlier duplicate key), and slots past the
/// capacity start empty. Upstream's lists start as its defaults.
#[derive(Clone, Debug, Default)]
struct GoStringSlice {
    /// The backing array; its length is the slice's capacity.
    backing: Vec<String>,
    len: usize,
    /// Whether the file set the key (with an array or `null`).
    set: bool,
}

impl GoStringSlice {
    /// A slice literal of these items (length and capacity alike), grown by
    /// `append` with `more` as Go grows it.
    fn literal(items: &[&str], more: &[&str]) -> Self {
        let mut slice = Self {
            backing: items.iter().map(|&item| item.to_owned()).collect(),
            len: items.len(),
            set: false,
        };
        if !more.is_empty() {
            slice.grow_to(slice.len + more.len());
            for item in more {
                slice.backing[slice.len] = (*item).to_owned();
                slice.len += 1;
            }
        }
        slice
    }

    fn items(&self) -> &[String] {
        &self.backing[..self.len]
    }

    /// Go's `growslice` for 16-byte elements: double below 256, then by
    /// about a quarter, rounded up to the allocator's size class.
    fn grow_to(&mut self, needed: usize) {
        let old = self.backing.len();
        let mut capacity = if needed > 2 * old {
            needed
        } else if old < 256 {
            2 * old
        } else {
            let mut capacity = old;
            while capacity < needed {
                capacity += (capacity + 3 * 256) >> 2;
            }
            capacity
        };
        capacity = round_up_to_size_class(capacity * 16) / 16;
        let mut backing = vec![String::new(); capacity];
        backing[..self.len].clone_from_slice(&self.backing[..self.len]);
        self.backing = backing;
    }
}

/// The Go allocator's size classes up to 32 KiB; larger sizes take whole
/// 8 KiB pages.
fn round_up_to_size_class(size: usize) -> usize {
    const CLASSES: [usize; 67] = [
        8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320,
        352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792,
        2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472,
        9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264,
        28672, 32768,
    ];
    match CLASSES.iter().find(|&&class| class >= size) {
        Some(&class) => class,
        None => size.div_ceil(8192) * 8192,
    }
}

/// `encoding/json.Unmarshal` into upstream's struct, entry by entry, then
/// `validate()`.
fn fill(entries: Vec<gojson::Entry>, options: ParseOptions) -> Result<ParsedConfig, ConfigError> {
    let mut config = MasqConfig::defaults(options);
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    let mut keep = if options.nomasq_all_reserved_ranges {
        GoStringSlice::literal(&RFC1918_CIDRS, &RESERVED_CIDRS)
    } else {
        GoStringSlice::literal(&RFC1918_CIDRS, &[])
    };
    let mut masquerade = GoStringSlice::default();
    for (key, raw) in entries {
        let raw = raw.get();
        let Some(known) = KNOWN_KEYS.iter().find(|known| **known == key).or_else(|| {
            KNOWN_KEYS
                .iter()
                .find(|known| gojson::fold_equal(&key, known))
        }) else {
            let hint = closest_known_key(&key)
                .map(|k| format!(" (did you mean {k:?}?)"))
                .unwrap_or_default();
            warnings.push(format!("unknown key {key:?} ignored{hint}"));
            continue;
        };
        match *known {
            KEY_NON_MASQUERADE_CIDRS => string_list(known, raw, &mut keep, &mut problems),
            KEY_MASQUERADE_CIDRS => string_list(known, raw, &mut masquerade, &mut problems),
            KEY_MASQ_LINK_LOCAL => boolean(known, raw, &mut config.masq_link_local, &mut problems),
            KEY_MASQ_LINK_LOCAL_IPV6 => {
                boolean(known, raw, &mut config.masq_link_local_ipv6, &mut problems);
            }
            KEY_RESYNC_INTERVAL => resync_interval(
                raw,
                &mut config.resync_interval,
                &mut warnings,
                &mut problems,
            ),
            KEY_CIDR_LIMIT => cidr_limit(raw, &mut config.cidr_limit, &mut problems),
            _ => unreachable!("every known key is handled"),
        }
    }

    if keep.set {
        let items = keep.items();
        // Upstream counts the list as written, duplicates included.
        if let Some(limit) = config.cidr_limit
            && items.len() as i64 > limit
        {
            problems.push(Problem {
                key: KEY_CIDR_LIMIT,
                value: Some(limit.to_string()),
                reason: format!(
                    "{} CIDRs in nonMasqueradeCIDRs (excluding link-local) exceed cidrLimit {limit}",
                    items.len()
                ),
            });
        }
        config.non_masquerade_cidrs =
            validate_list(KEY_NON_MASQUERADE_CIDRS, items, options, &mut problems);
        config.non_masquerade_cidrs_defaulted = false;
    } else if let Some(limit) = config.cidr_limit
        && (config.non_masquerade_cidrs.len() as i64) > limit
    {
        problems.push(Problem {
            key: KEY_CIDR_LIMIT,
            value: Some(limit.to_string()),
            reason: format!(
                "the {} default CIDRs exceed cidrLimit {limit}",
                config.non_masquerade_cidrs.len()
            ),
        });
    }
    if masquerade.set {
        let items = masquerade.items();
        config.masquerade_cidrs =
            validate_list(KEY_MASQUERADE_CIDRS, items, options, &mut problems);
    }
    let kept: BTreeSet<&IpNet> = config.non_masquerade_cidrs.iter().collect();
    for cidr in &config.masquerade_cidrs {
        if kept.contains(cidr) {
            problems.push(Problem {
                key: KEY_MASQUERADE_CIDRS,
                value: Some(format!("{:?}", cidr.to_string())),
                reason: "also listed in nonMasqueradeCIDRs; a CIDR cannot be both".into(),
            });
        }
    }
    if problems.is_empty() {
        Ok(ParsedConfig { config, warnings })
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

fn first_byte(raw: &str) -> u8 {
    raw.as_bytes().first().copied().unwrap_or(b'n')
}

fn type_problem(key: &'static str, raw: &str, expected: &str) -> Problem {
    Problem {
        key,
        value: Some(shorten(raw)),
        reason: format!(
            "expected {expected}, found {}",
            match gojson::kind_of_first_byte(first_byte(raw)) {
                "array" => "a list",
                "object" => "a mapping",
                "bool" => "a boolean",
                "null" => "null",
                kind =>
                    if kind == "string" {
                        "a string"
                    } else {
                        "a number"
                    },
            }
        ),
    }
}

/// Long values (a whole list given where a flag belongs) are cut in messages.
fn shorten(raw: &str) -> String {
    const MAX: usize = 120;
    if raw.len() <= MAX {
        return raw.to_owned();
    }
    let mut end = MAX;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &raw[..end])
}

/// A `[]string` field: `null` empties it, an array is decoded into it in
/// place (see [`GoStringSlice`]), anything else is a type error and leaves it.
fn string_list(
    key: &'static str,
    raw: &str,
    slice: &mut GoStringSlice,
    problems: &mut Vec<Problem>,
) {
    match first_byte(raw) {
        b'n' => {
            *slice = GoStringSlice {
                set: true,
                ..GoStringSlice::default()
            };
        }
        b'[' => {
            let items: Vec<&serde_json::value::RawValue> =
                serde_json::from_str(raw).expect("validated JSON array");
            slice.set = true;
            if items.is_empty() {
                // Go makes a new, empty slice.
                slice.backing.clear();
                slice.len = 0;
                return;
            }
            for (index, item) in items.iter().enumerate() {
                if index >= slice.backing.len() {
                    slice.grow_to(index + 1);
                }
                slice.len = slice.len.max(index + 1);
                let item = item.get();
                match first_byte(item) {
                    b'"' => {
                        slice.backing[index] =
                            serde_json::from_str::<String>(item).expect("validated JSON string");
                    }
                    // null leaves the slot as it was.
                    b'n' => {}
                    _ => problems.push(type_problem(key, item, "a CIDR string")),
                }
            }
            slice.len = items.len();
        }
        _ => problems.push(type_problem(key, raw, "a list of CIDRs")),
    }
}

fn boolean(key: &'static str, raw: &str, field: &mut bool, problems: &mut Vec<Problem>) {
    match raw {
        "true" => *field = true,
        "false" => *field = false,
        // Go's json leaves a bool untouched on null.
        "null" => {}
        _ => problems.push(type_problem(key, raw, "true or false")),
    }
}

/// An `int` field: `null` leaves it; a number must be written as a whole
/// number (Go's `strconv.ParseInt` on the JSON text, so `64.0` fails).
fn cidr_limit(raw: &str, field: &mut Option<i64>, problems: &mut Vec<Problem>) {
    match first_byte(raw) {
        b'n' => {}
        b'-' | b'0'..=b'9' => match raw.parse::<i64>() {
            Ok(limit) => *field = Some(limit),
            Err(_) => problems.push(Problem {
                key: KEY_CIDR_LIMIT,
                value: Some(shorten(raw)),
                reason: "expected a whole number that fits in 64 bits".into(),
            }),
        },
        _ => problems.push(type_problem(KEY_CIDR_LIMIT, raw, "a whole number")),
    }
}

/// metav1.Duration: its UnmarshalJSON wants a JSON string, so `null` fails
/// too (it becomes the empty duration), then Go's `time.ParseDuration`.
fn resync_interval(
    raw: &str,
    field: &mut Duration,
    warnings: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) {
    let text = match first_byte(raw) {
        b'"' => serde_json::from_str::<String>(raw).expect("validated JSON string"),
        b'n' => String::new(),
        _ => {
            problems.push(type_problem(
                KEY_RESYNC_INTERVAL,
                raw,
                "a duration string such as \"60s\" or \"1m30s\"",
            ));
            return;
        }
    };
    match parse_go_duration_signed(&text) {
        Ok(interval) => match interval.to_std() {
            Some(interval) if interval >= MIN_RESYNC_INTERVAL => *field = interval,
            // Upstream takes negative intervals too (its loop then sleeps
            // no time); like values below one second, they are raised to it.
            _ => {
                warnings.push(format!(
                    "resyncInterval {text:?} is below {}s; using {}s",
                    MIN_RESYNC_INTERVAL.as_secs(),
                    MIN_RESYNC_INTERVAL.as_secs()
                ));
                *field = MIN_RESYNC_INTERVAL;
            }
        },
        Err(err) => problems.push(Problem {
            key: KEY_RESYNC_INTERVAL,
            value: Some(format!("{text:?}")),
            reason: err.to_string(),
        }),
    }
}

/// Validates each CIDR as upstream does; returns the valid ones with
/// duplicates merged, in file order.
fn validate_list(
    key: &'static str,
    items: &[String],
    options: ParseOptions,
    problems: &mut Vec<Problem>,
) -> Vec<IpNet> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut cidrs = Vec::with_capacity(items.len());
    for text in items {
        match validate_cidr(text, options) {
            Ok(cidr) => {
                if seen.insert(cidr) {
                    cidrs.push(cidr);
                }
            }
            Err(reason) => problems.push(Problem {
                key,
                value: Some(format!("{text:?}")),
                reason,
            }),
        }
    }
    cidrs
}

/// Validates one CIDR the way upstream does: Go's `net.ParseCIDR` (which
/// refuses leading zeros in IPv4 octets and zones, and takes leading zeros
/// in the prefix length), then alignment; IPv6 needs `--enable-ipv6`.
fn validate_cidr(text: &str, options: ParseOptions) -> Result<IpNet, String> {
    const EXPECTED: &str = "not a CIDR (expected ADDRESS/PREFIX, e.g. 10.0.0.0/8)";
    let (address, prefix_len) = text.split_once('/').ok_or(EXPECTED)?;
    let address: std::net::IpAddr = address.parse().map_err(|_| {
        if address
            .split('.')
            .any(|octet| octet.len() > 1 && octet.starts_with('0'))
        {
            "not a CIDR: an IPv4 octet has a leading zero (Go reads none)".to_owned()
        } else {
            EXPECTED.to_owned()
        }
    })?;
    let max_len = if address.is_ipv4() { 32 } else { 128 };
    // Go's dtoi: one or more decimal digits, leading zeros allowed.
    let prefix_len: u8 = (!prefix_len.is_empty()
        && prefix_len.len() <= 10
        && prefix_len.bytes().all(|b| b.is_ascii_digit()))
    .then(|| prefix_len.parse::<u32>().ok())
    .flatten()
    .filter(|len| *len <= max_len)
    .and_then(|len| u8::try_from(len).ok())
    .ok_or_else(|| format!("not a CIDR: the prefix length must be 0 to {max_len}"))?;
    if let std::net::IpAddr::V6(v6) = address
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Err(format!(
            "an IPv4-mapped IPv6 CIDR: ip-masq-agent writes it into its IPv4 chain, where iptables refuses it; write the IPv4 range instead (e.g. {v4}/{})",
            prefix_len.saturating_sub(96)
        ));
    }
    let cidr = IpNet::new(address, prefix_len).expect("prefix length checked");
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

/// The known key an unknown one most likely meant, for the warning.
fn closest_known_key(unknown: &str) -> Option<&'static str> {
    let unknown = unknown.to_ascii_lowercase();
    KNOWN_KEYS
        .iter()
        .map(|known| {
            (
                strsim::levenshtein(&unknown, &known.to_ascii_lowercase()),
                *known,
            )
        })
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, known)| known)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

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

    fn config(text: &str) -> MasqConfig {
        parse(text.as_bytes(), V4_ONLY)
            .unwrap_or_else(|err| panic!("{text:?}: {err}"))
            .config
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
        // YAML keys reach the JSON step sorted, so "foo" comes first.
        assert!(parsed.warnings[1].contains("\"nonMasqueradeCidr\""));
        assert!(parsed.warnings[1].contains("did you mean \"nonMasqueradeCIDRs\""));
        assert!(parsed.warnings[0].contains("\"foo\""));
        assert!(!parsed.warnings[0].contains("did you mean"));
    }

    #[test]
    fn every_bad_cidr_is_reported() {
        let found = problems(parse(
            b"nonMasqueradeCIDRs: [10.0.0.1/8, not-a-cidr, 10.0.0.0/33, 192.168.0.0/16, 7]",
            V4_ONLY,
        ));
        let values: Vec<_> = found.iter().map(|p| p.value.clone().unwrap()).collect();
        assert_eq!(
            values,
            [
                "7",
                "\"10.0.0.1/8\"",
                "\"not-a-cidr\"",
                "\"10.0.0.0/33\"",
                "\"\""
            ]
        );
        assert!(found[1].reason.contains("did you mean 10.0.0.0/8"));
        let message = ConfigError::Invalid(found).to_string();
        assert!(message.starts_with("5 invalid value(s)"), "{message}");
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
        // A negative limit is a valid number upstream; no list fits under it.
        let found = problems(parse(b"cidrLimit: -1", V4_ONLY));
        assert_eq!(found[0].key, "cidrLimit");
        assert!(parse(b"cidrLimit: 0\nnonMasqueradeCIDRs: []", V4_ONLY).is_ok());
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
            Err(ConfigError::Syntax { format: "YAML", .. })
        ));
        assert!(matches!(
            parse(b"- a\n- b\n", V4_ONLY),
            Err(ConfigError::NotAMapping { found: "array" })
        ));
        assert!(matches!(
            parse(b"\xff\xff", V4_ONLY),
            Err(ConfigError::NotUtf8 { offset: 0 })
        ));
        let huge = vec![b'#'; MAX_CONFIG_BYTES + 1];
        assert!(matches!(
            parse(&huge, V4_ONLY),
            Err(ConfigError::TooLarge { .. })
        ));
    }

    #[test]
    fn yaml_1_1_values_fill_fields_as_upstream() {
        assert!(config("masqLinkLocal: yes").masq_link_local);
        assert!(config("masqLinkLocal: On").masq_link_local);
        assert_eq!(config("cidrLimit: 0100").cidr_limit, Some(64));
        assert_eq!(config("cidrLimit: 1_000").cidr_limit, Some(1000));
        assert_eq!(config("cidrLimit: 64.0").cidr_limit, Some(64));
        assert_eq!(config("cidrLimit: 1e2").cidr_limit, Some(100));
        let found = problems(parse(b"masqLinkLocal: \"yes\"", V4_ONLY));
        // The value is shown once, as JSON: no doubled quotes.
        assert_eq!(
            found[0].to_string(),
            "masqLinkLocal: \"yes\": expected true or false, found a string"
        );
        for text in ["cidrLimit: .nan", "masqLinkLocal: .inf", "foo: -.Inf"] {
            assert!(
                matches!(
                    parse(text.as_bytes(), V4_ONLY),
                    Err(ConfigError::Syntax { .. })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn json_files_are_strict_and_number_text_matters() {
        assert_eq!(config(r#"{"cidrLimit": 64}"#).cidr_limit, Some(64));
        assert_eq!(
            config(r#"{"cidrLimit": -0, "nonMasqueradeCIDRs": []}"#).cidr_limit,
            Some(0)
        );
        for text in [r#"{"cidrLimit": 64.0}"#, r#"{"cidrLimit": 1e2}"#] {
            assert!(parse(text.as_bytes(), V4_ONLY).is_err(), "{text}");
        }
        for text in [
            "{\"masqLinkLocal\": true,}",
            "{'masqLinkLocal': true}",
            "{\"masqLinkLocal\": true} # c",
        ] {
            assert!(
                matches!(
                    parse(text.as_bytes(), V4_ONLY),
                    Err(ConfigError::Syntax { format: "JSON", .. })
                ),
                "{text}"
            );
        }
        // A byte-order mark is not white space: the file is YAML then.
        assert!(config("\u{feff}{\"masqLinkLocal\": true,}").masq_link_local);
    }

    #[test]
    fn duplicate_keys_last_wins_but_an_earlier_invalid_value_still_fails() {
        assert!(!config("masqLinkLocal: true\nmasqLinkLocal: false").masq_link_local);
        // YAML: a Go map, so an earlier duplicate is gone before JSON sees it.
        assert!(config("masqLinkLocal: nope\nmasqLinkLocal: true").masq_link_local);
        // JSON: every entry is decoded.
        assert!(
            parse(
                br#"{"masqLinkLocal": "nope", "masqLinkLocal": true}"#,
                V4_ONLY
            )
            .is_err()
        );
        assert!(config(r#"{"masqLinkLocal": false, "MASQLINKLOCAL": true}"#).masq_link_local);
        // YAML keys come out sorted: "MasqLinkLocal" < "masqLinkLocal".
        assert!(config("masqLinkLocal: true\nMasqLinkLocal: false").masq_link_local);
    }

    #[test]
    fn null_items_keep_what_the_slot_held() {
        assert_eq!(
            config("nonMasqueradeCIDRs: [null]").non_masquerade_cidrs,
            nets(&["10.0.0.0/8"])
        );
        assert_eq!(
            config("nonMasqueradeCIDRs: [192.168.0.0/16, null, 10.0.0.0/8]").non_masquerade_cidrs,
            nets(&["192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8"])
        );
        assert!(parse(b"nonMasqueradeCIDRs: [null, null, null, null]", V4_ONLY).is_err());
    }

    #[test]
    fn cidrs_parse_as_go_parses_them() {
        for bad in [
            "010.0.0.0/8",
            "10.01.0.0/16",
            "10.0.0.0/+8",
            "10.0.0.0/33",
            "fe80::%eth0/64",
            "10.0.0.0",
        ] {
            assert!(validate_cidr(bad, WITH_V6).is_err(), "{bad}");
        }
        assert_eq!(
            validate_cidr("10.0.0.0/08", V4_ONLY),
            Ok("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            validate_cidr("FD00::/8", WITH_V6),
            Ok("fd00::/8".parse().unwrap())
        );
        assert!(
            validate_cidr("::ffff:10.0.0.0/104", WITH_V6)
                .unwrap_err()
                .contains("IPv4-mapped")
        );
    }

    #[test]
    fn resync_intervals_below_a_second_or_negative_are_raised() {
        for text in [
            "resyncInterval: 100ms",
            "resyncInterval: -1s",
            "resyncInterval: -0s",
        ] {
            let parsed = parse(text.as_bytes(), V4_ONLY).unwrap();
            assert_eq!(parsed.config.resync_interval, MIN_RESYNC_INTERVAL, "{text}");
            assert_eq!(parsed.warnings.len(), 1, "{text}");
        }
        assert_eq!(
            config("resyncInterval: 0.999999999999999999999999999999m").resync_interval,
            Duration::from_nanos(59_999_999_999)
        );
        assert!(parse(b"resyncInterval: null", V4_ONLY).is_err());
        assert!(parse(b"resyncInterval:", V4_ONLY).is_err());
    }

    #[test]
    fn deep_but_valid_nesting_is_read() {
        assert!(
            parse(
                format!("{}nonMasqueradeCIDRs: [10.0.0.0/8]\n", " ".repeat(70)).as_bytes(),
                V4_ONLY
            )
            .is_ok()
        );
        let deep = format!("unknown: {}{}\n", "[".repeat(50), "]".repeat(50));
        assert!(parse(deep.as_bytes(), V4_ONLY).is_ok());
        let flow = format!("{}{}", "{\"a\": [".repeat(4000), "]}".repeat(4000));
        assert!(parse(flow.as_bytes(), V4_ONLY).is_ok());
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
        let error = parse(bomb.as_bytes(), V4_ONLY).unwrap_err();
        assert!(error.to_string().contains("excessive aliasing"), "{error}");
    }
}

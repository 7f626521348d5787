//! `encoding/json.Unmarshal` into upstream's struct, as ip-masq-agent fills
//! it: a struct that already holds the defaults, filled entry by entry,
//! then `validate()` ([`super::cidr`]).

use std::{collections::BTreeSet, time::Duration};

use ipnet::IpNet;

use super::{
    ConfigError, KEY_CIDR_LIMIT, KEY_MASQ_LINK_LOCAL, KEY_MASQ_LINK_LOCAL_IPV6,
    KEY_MASQUERADE_CIDRS, KEY_NON_MASQUERADE_CIDRS, KEY_RESYNC_INTERVAL, KNOWN_KEYS,
    MIN_RESYNC_INTERVAL, MasqConfig, ParseOptions, ParsedConfig, Problem, RESERVED_CIDRS,
    RFC1918_CIDRS, cidr::validate_list, gojson,
};
use crate::duration::parse_go_duration_signed;

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
pub(super) fn fill(
    entries: Vec<gojson::Entry>,
    options: ParseOptions,
) -> Result<ParsedConfig, ConfigError> {
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

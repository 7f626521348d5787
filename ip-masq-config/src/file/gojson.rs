//! The JSON that upstream's `encoding/json.Unmarshal` reads: either the
//! file itself (when its first non-space character is `{`) or what the
//! YAML step made of it.
//!
//! Go's decoder is reproduced where it decides an outcome:
//! - strict JSON (serde_json is as strict), nothing after the object;
//! - at most 10,000 levels of nesting, no lower limit;
//! - invalid UTF-8 and unpaired surrogate escapes inside strings become
//!   U+FFFD instead of errors;
//! - every top-level entry is seen in order, duplicates included, so the
//!   last valid value of a key wins while an earlier invalid one still
//!   fails the file;
//! - a number is judged by its text (`64` fills an int, `64.0` and `1e2`
//!   do not), so each value is kept as its raw JSON text.

use std::fmt;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;

/// `encoding/json`'s `maxNestingDepth`.
const MAX_DEPTH: usize = 10_000;

/// One top-level entry: the key as written and its value's raw JSON text.
pub(super) type Entry = (String, Box<RawValue>);

/// What the top level held.
#[derive(Debug)]
pub(super) enum TopLevel {
    /// JSON `null`: nothing to fill, the defaults stand.
    Null,
    /// Any other non-object value, named as Go's type error names it.
    Other(&'static str),
    /// An object's entries in order.
    Object(Vec<Entry>),
}

/// Decodes JSON text as Go's `json.Unmarshal` into a struct would see it.
pub(super) fn top_level(text: &str) -> Result<TopLevel, String> {
    let repaired = repair_surrogates(text);
    let text = repaired.as_deref().unwrap_or(text);
    if nesting_depth(text) > MAX_DEPTH {
        return Err(format!("exceeded max depth of {MAX_DEPTH}"));
    }
    let first = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .as_bytes()
        .first()
        .copied();
    match first {
        Some(b'{') => {}
        Some(_) | None => {
            // Validate the whole text first, so a syntax error wins over a
            // type error as in Go.
            let value: Box<RawValue> = serde_json::from_str(text).map_err(|err| err.to_string())?;
            return Ok(match value.get().as_bytes()[0] {
                b'n' => TopLevel::Null,
                other => TopLevel::Other(kind_of_first_byte(other)),
            });
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let entries = deserializer
        .deserialize_map(EntriesVisitor)
        .map_err(|err| err.to_string())?;
    deserializer.end().map_err(|err| err.to_string())?;
    Ok(TopLevel::Object(entries))
}

/// The JSON type of a value from its first byte, as Go names it in
/// "cannot unmarshal X into ...".
pub(super) fn kind_of_first_byte(byte: u8) -> &'static str {
    match byte {
        b'"' => "string",
        b't' | b'f' => "bool",
        b'[' => "array",
        b'{' => "object",
        b'n' => "null",
        _ => "number",
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<Entry>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Entry>, A::Error> {
        let mut entries = Vec::new();
        // next_key/next_value see every entry, duplicates included; raw
        // values are validated without recursion, so depth costs no stack.
        while let Some(key) = map.next_key::<String>()? {
            entries.push((key, map.next_value::<Box<RawValue>>()?));
        }
        Ok(entries)
    }
}

/// Deepest nesting of `[` and `{` outside strings. Exact for valid JSON;
/// for invalid JSON the parser reports the syntax error anyway.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Go decodes an unpaired UTF-16 surrogate escape (`\ud800`) as U+FFFD;
/// serde_json refuses it. Rewrites each unpaired one as `\ufffd`, or
/// returns `None` when there is none.
fn repair_surrogates(text: &str) -> Option<String> {
    if !text.contains("\\u") && !text.contains("\\U") {
        return None;
    }
    let bytes = text.as_bytes();
    let hex_at = |at: usize| -> Option<u16> {
        let digits = text.get(at..at + 4)?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut out: Option<String> = None;
    let mut copied_up_to = 0;
    let (mut in_string, mut at) = (false, 0);
    while at < bytes.len() {
        let byte = bytes[at];
        if !in_string {
            in_string = byte == b'"';
            at += 1;
            continue;
        }
        match byte {
            b'"' => {
                in_string = false;
                at += 1;
            }
            b'\\' if bytes.get(at + 1) == Some(&b'u') => {
                let Some(unit) = hex_at(at + 2) else {
                    at += 2;
                    continue;
                };
                let paired = (0xd800..0xdc00).contains(&unit)
                    && bytes.get(at + 6) == Some(&b'\\')
                    && bytes.get(at + 7) == Some(&b'u')
                    && hex_at(at + 8).is_some_and(|low| (0xdc00..0xe000).contains(&low));
                if paired {
                    at += 12;
                } else if (0xd800..0xe000).contains(&unit) {
                    let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                    out.push_str(&text[copied_up_to..at]);
                    out.push_str("\\ufffd");
                    at += 6;
                    copied_up_to = at;
                } else {
                    at += 6;
                }
            }
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
    out.map(|mut out| {
        out.push_str(&text[copied_up_to..]);
        out
    })
}

/// Go's `foldName`: Unicode simple case folding, which for the ASCII key
/// names of this file means ASCII case plus the two non-ASCII letters that
/// fold onto ASCII ones, KELVIN SIGN (K) and LATIN SMALL LETTER LONG S (s).
pub(super) fn fold_equal(key: &str, name: &str) -> bool {
    let fold = |c: char| match c {
        '\u{212a}' => 'K',
        '\u{17f}' => 'S',
        c => c.to_ascii_uppercase(),
    };
    key.chars().map(fold).eq(name.chars().map(fold))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        match top_level(text).unwrap() {
            TopLevel::Object(entries) => entries.into_iter().map(|(key, _)| key).collect(),
            _ => panic!("not an object: {text}"),
        }
    }

    #[test]
    fn duplicates_are_kept_in_order() {
        assert_eq!(keys(r#"{"a": 1, "b": 2, "a": 3}"#), ["a", "b", "a"]);
    }

    #[test]
    fn strict_json_like_go() {
        for bad in [
            r#"{"a": 1,}"#,
            "{\"a\": 1} # comment",
            "{'a': 1}",
            "{a: 1}",
            r#"{"a": 1} x"#,
            "{\"a\": 1}\u{a0}",
        ] {
            assert!(top_level(bad).is_err(), "{bad}");
        }
        assert!(top_level("{\"a\": 1}\n\t \r").is_ok());
    }

    #[test]
    fn depth_is_bounded_at_go_s_limit() {
        let ok = format!("{{\"a\": {}{}}}", "[".repeat(9999), "]".repeat(9999));
        assert!(top_level(&ok).is_ok());
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(top_level(&deep).unwrap_err().contains("max depth"));
        assert!(top_level(r#"{"a": "[[[[[[[[[[[["}"#).is_ok());
    }

    #[test]
    fn unpaired_surrogates_become_replacement_characters() {
        assert_eq!(
            repair_surrogates(r#"{"a": "x\ud800y", "b": "\ud83d\ude00", "c": "\\ud800"}"#).unwrap(),
            r#"{"a": "x\ufffdy", "b": "\ud83d\ude00", "c": "\\ud800"}"#
        );
        assert!(top_level(r#"{"k\udc00": 1}"#).is_ok());
        assert_eq!(repair_surrogates(r#"{"a": "\u0041"}"#), None);
    }

    #[test]
    fn keys_fold_as_go_folds_them() {
        assert!(fold_equal("MASQLINKLOCAL", "masqLinkLocal"));
        assert!(fold_equal("masqLin\u{212a}Local", "masqLinkLocal"));
        assert!(fold_equal("nonMasqueradeCIDR\u{17f}", "nonMasqueradeCIDRs"));
        assert!(!fold_equal("masqLinkLocalIPv6", "masqLinkLocal"));
        assert!(!fold_equal("masq_link_local", "masqLinkLocal"));
    }
}

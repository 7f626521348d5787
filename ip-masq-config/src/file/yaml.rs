//! YAML as ip-masq-agent reads it, turned into the JSON text that its
//! `encoding/json` step then sees.
//!
//! Upstream converts YAML with `sigs.k8s.io/yaml`, which decodes the first
//! document with go-yaml v2 into Go values and marshals them with
//! `encoding/json`. Every step leaves its mark on the outcome, so each is
//! reproduced here:
//! - go-yaml v2 is a port of libyaml, so the events come from a port of
//!   libyaml too (`libyaml-safer`); go-yaml's own limits are added on top:
//!   only `%YAML 1.1` documents, and at most 10,000 levels of nesting;
//! - plain scalars resolve by YAML 1.1 rules (`yes`/`off` are booleans,
//!   `0100` is octal, `1_000` an integer, `.nan` a float, ...), quoted ones
//!   stay strings, and explicit tags must agree with the value;
//! - aliases are expanded, with go-yaml's bound on the share of work that
//!   alias expansion may cause (which stops "billion laughs"), and merge
//!   keys (`<<`) fill a mapping, later keys overriding earlier ones;
//! - a mapping is a Go map: of two equal keys the later wins, and the JSON
//!   object comes out with its keys sorted, as `encoding/json` writes maps;
//! - keys become strings (`true`, `1`), a null key is an error, and NaN or
//!   an infinity anywhere is an error, because JSON cannot hold them;
//! - only the first document counts: what follows its end is never read.

use std::{collections::HashMap, fmt::Write as _};

use libyaml_safer::{Encoding, EventData, MappingStyle, Parser, ScalarStyle, SequenceStyle};

/// go-yaml's `max_flow_level` and `max_indents`.
pub(super) const MAX_DEPTH: usize = 10_000;

const TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// Converts YAML text to the JSON text upstream would unmarshal. `Ok(None)`
/// is a stream with no document at all (empty, or only comments), which
/// upstream reads as JSON `null`.
pub(super) fn to_json(bytes: &[u8]) -> Result<String, String> {
    let document = parse_first_document(bytes)?;
    let Some(root) = document.root else {
        return Ok("null".into());
    };
    let mut decoder = Decoder {
        nodes: &document.nodes,
        decode_count: 0,
        alias_count: 0,
        alias_depth: 0,
        expanding: Vec::new(),
    };
    let value = decoder.unmarshal(root)?;
    let mut json = String::with_capacity(bytes.len() + 16);
    write_json(&value, &mut json)?;
    Ok(json)
}

/// A node of the document, as go-yaml's parser builds it.
#[derive(Debug)]
enum Node {
    Scalar {
        value: String,
        tag: String,
        /// Untagged plain scalar (or the non-specific `!` tag): resolved by
        /// its text. A quoted or block scalar without a tag is a string.
        implicit: bool,
    },
    Sequence(Vec<usize>),
    Mapping(Vec<(usize, usize)>),
    Alias {
        anchor: String,
        target: usize,
    },
}

struct Document {
    nodes: Vec<Node>,
    root: Option<usize>,
}

/// An open collection while the events are read.
enum Open {
    Sequence {
        index: usize,
        items: Vec<usize>,
        flow: bool,
    },
    Mapping {
        index: usize,
        pairs: Vec<(usize, usize)>,
        pending_key: Option<usize>,
        flow: bool,
    },
}

fn parse_first_document(bytes: &[u8]) -> Result<Document, String> {
    // UTF-16 (selected by a byte-order mark, as in libyaml) is decoded
    // here, and the encoding is named rather than left to libyaml-safer's
    // detection, which takes any UTF-8 text starting with byte 0xEF (a
    // fullwidth letter, say) for a broken byte-order mark.
    let utf16 = |rest: &[u8], decode: fn([u8; 2]) -> u16| {
        let units: Vec<u16> = rest
            .chunks(2)
            .map(|pair| decode([pair[0], *pair.get(1).unwrap_or(&0)]))
            .collect();
        String::from_utf16(&units).map_err(|_| "invalid UTF-16 text".to_owned())
    };
    let decoded;
    let mut input: &[u8] = match bytes {
        [0xff, 0xfe, rest @ ..] => {
            decoded = utf16(rest, u16::from_le_bytes)?;
            decoded.as_bytes()
        }
        [0xfe, 0xff, rest @ ..] => {
            decoded = utf16(rest, u16::from_be_bytes)?;
            decoded.as_bytes()
        }
        [0xef, 0xbb, 0xbf, rest @ ..] => rest,
        _ => bytes,
    };
    // libyaml-safer 0.3 panics on a backslash at the very end of the input
    // inside a double-quoted scalar (it reads the escape's next character
    // without checking for the end). A final newline makes that the
    // escaped line break libyaml reads there, then the "unexpected end of
    // stream" error go-yaml gives too. No valid value of this file ends in
    // a backslash, so no outcome changes.
    let padded;
    if input.last() == Some(&b'\\') {
        padded = [input, b"\n"].concat();
        input = &padded;
    }
    let mut parser = Parser::new();
    parser.set_encoding(Encoding::Utf8);
    parser.set_input_string(&mut input);
    let mut nodes: Vec<Node> = Vec::new();
    let mut anchors: HashMap<String, usize> = HashMap::new();
    let mut open: Vec<Open> = Vec::new();
    let (mut flow_depth, mut block_depth) = (0usize, 0usize);
    let mut root = None;
    loop {
        // A panic inside the parser (a bug of the library's, as above) is a
        // refused file, never a dead agent. Under fuzzing, libfuzzer's panic
        // hook aborts first, so such bugs are still found.
        let event = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parser.parse()))
            .map_err(|_| "the YAML parser failed on this input".to_owned())?
            .map_err(|err| err.to_string())?;
        let node = match event.data {
            EventData::StreamStart { .. } => continue,
            EventData::StreamEnd => return Ok(Document { nodes, root: None }),
            EventData::DocumentStart {
                version_directive, ..
            } => {
                // go-yaml v2 reads YAML 1.1 only; libyaml also takes 1.2.
                if let Some(version) = version_directive
                    && (version.major, version.minor) != (1, 1)
                {
                    return Err(format!(
                        "found incompatible YAML document (%YAML {}.{}; only 1.1 is read)",
                        version.major, version.minor
                    ));
                }
                continue;
            }
            EventData::DocumentEnd { .. } => {
                // The first document is all that counts.
                return Ok(Document { nodes, root });
            }
            EventData::Alias { anchor } => {
                let Some(&target) = anchors.get(&anchor) else {
                    return Err(format!("unknown anchor '{anchor}' referenced"));
                };
                nodes.push(Node::Alias { anchor, target });
                nodes.len() - 1
            }
            EventData::Scalar {
                anchor,
                tag,
                value,
                plain_implicit,
                style,
                ..
            } => {
                // The non-specific tag `!` stays a tag go-yaml cannot
                // resolve, so the value is a string whatever its text.
                let tag = tag.unwrap_or_default();
                let implicit = plain_implicit && style == ScalarStyle::Plain && tag.is_empty();
                nodes.push(Node::Scalar {
                    value,
                    tag,
                    implicit,
                });
                let index = nodes.len() - 1;
                if let Some(anchor) = anchor {
                    anchors.insert(anchor, index);
                }
                index
            }
            EventData::SequenceStart { anchor, style, .. } => {
                let flow = style == SequenceStyle::Flow;
                enter(&mut flow_depth, &mut block_depth, flow)?;
                nodes.push(Node::Sequence(Vec::new()));
                let index = nodes.len() - 1;
                // Registered before the children, as go-yaml does, so that
                // an alias inside the node refers to the node itself.
                if let Some(anchor) = anchor {
                    anchors.insert(anchor, index);
                }
                open.push(Open::Sequence {
                    index,
                    items: Vec::new(),
                    flow,
                });
                continue;
            }
            EventData::MappingStart { anchor, style, .. } => {
                let flow = style == MappingStyle::Flow;
                enter(&mut flow_depth, &mut block_depth, flow)?;
                nodes.push(Node::Mapping(Vec::new()));
                let index = nodes.len() - 1;
                if let Some(anchor) = anchor {
                    anchors.insert(anchor, index);
                }
                open.push(Open::Mapping {
                    index,
                    pairs: Vec::new(),
                    pending_key: None,
                    flow,
                });
                continue;
            }
            EventData::SequenceEnd | EventData::MappingEnd => {
                let closed = open.pop().ok_or("unbalanced YAML events")?;
                let (index, flow) = match closed {
                    Open::Sequence { index, items, flow } => {
                        nodes[index] = Node::Sequence(items);
                        (index, flow)
                    }
                    Open::Mapping {
                        index, pairs, flow, ..
                    } => {
                        nodes[index] = Node::Mapping(pairs);
                        (index, flow)
                    }
                };
                if flow {
                    flow_depth -= 1;
                } else {
                    block_depth -= 1;
                }
                index
            }
        };
        match open.last_mut() {
            None => root = Some(node),
            Some(Open::Sequence { items, .. }) => items.push(node),
            Some(Open::Mapping {
                pairs, pending_key, ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => pairs.push((key, node)),
            },
        }
    }
}

fn enter(flow_depth: &mut usize, block_depth: &mut usize, flow: bool) -> Result<(), String> {
    let depth = if flow { flow_depth } else { block_depth };
    *depth += 1;
    if *depth > MAX_DEPTH {
        return Err(format!("exceeded max depth of {MAX_DEPTH}"));
    }
    Ok(())
}

/// A decoded Go value (`interface{}` as go-yaml v2 fills it).
#[derive(Clone, Debug)]
enum GoValue {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Seq(Vec<GoValue>),
    /// A Go map: keys unique by Go's equality, in first-insertion order.
    Map(Vec<(GoValue, GoValue)>),
}

impl GoValue {
    /// Go's `==` on two interface values holding map keys.
    fn same_key(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Null, Self::Null) => true,
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::Int(a), Self::Int(b)) => a == b,
            (Self::Uint(a), Self::Uint(b)) => a == b,
            // NaN is never equal, and 0.0 == -0.0, as in Go.
            (Self::Float(a), Self::Float(b)) => a == b,
            (Self::Str(a), Self::Str(b)) => a == b,
            _ => false,
        }
    }
}

fn map_insert(map: &mut Vec<(GoValue, GoValue)>, key: GoValue, value: GoValue) {
    match map.iter_mut().find(|(existing, _)| existing.same_key(&key)) {
        Some(slot) => slot.1 = value,
        None => map.push((key, value)),
    }
}

/// go-yaml v2's decoder, reduced to decoding into `interface{}`.
struct Decoder<'a> {
    nodes: &'a [Node],
    decode_count: u64,
    alias_count: u64,
    alias_depth: usize,
    /// Alias nodes being expanded, to refuse an anchor that contains itself.
    expanding: Vec<usize>,
}

impl Decoder<'_> {
    /// Counts one decode step and refuses documents whose work comes
    /// mostly from alias expansion, with go-yaml's own thresholds.
    fn count(&mut self) -> Result<(), String> {
        self.decode_count += 1;
        if self.alias_depth > 0 {
            self.alias_count += 1;
        }
        if self.alias_count > 100
            && self.decode_count > 1000
            && self.alias_count as f64 / self.decode_count as f64
                > allowed_alias_ratio(self.decode_count)
        {
            return Err("document contains excessive aliasing".into());
        }
        Ok(())
    }

    fn unmarshal(&mut self, index: usize) -> Result<GoValue, String> {
        // Nesting is bounded by MAX_DEPTH, and aliases add to it; grow the
        // stack rather than bound it lower than upstream does.
        stacker::maybe_grow(64 * 1024, 4 * 1024 * 1024, || self.unmarshal_node(index))
    }

    fn unmarshal_node(&mut self, index: usize) -> Result<GoValue, String> {
        self.count()?;
        match &self.nodes[index] {
            Node::Alias { anchor, target } => {
                if self.expanding.contains(&index) {
                    return Err(format!("anchor '{anchor}' value contains itself"));
                }
                self.expanding.push(index);
                self.alias_depth += 1;
                let value = self.unmarshal(*target);
                self.alias_depth -= 1;
                self.expanding.pop();
                value
            }
            Node::Scalar {
                value,
                tag,
                implicit,
            } => scalar(value, tag, *implicit),
            Node::Sequence(items) => {
                let mut values = Vec::with_capacity(items.len());
                for &item in items {
                    values.push(self.unmarshal(item)?);
                }
                Ok(GoValue::Seq(values))
            }
            Node::Mapping(pairs) => {
                let mut map = Vec::with_capacity(pairs.len());
                self.fill_mapping(pairs, &mut map)?;
                Ok(GoValue::Map(map))
            }
        }
    }

    fn fill_mapping(
        &mut self,
        pairs: &[(usize, usize)],
        map: &mut Vec<(GoValue, GoValue)>,
    ) -> Result<(), String> {
        for &(key, value) in pairs {
            if self.is_merge(key) {
                self.merge(value, map)?;
                continue;
            }
            let key = self.unmarshal(key)?;
            if matches!(key, GoValue::Seq(_) | GoValue::Map(_)) {
                return Err("invalid map key: a list or mapping cannot be a key".into());
            }
            let value = self.unmarshal(value)?;
            map_insert(map, key, value);
        }
        Ok(())
    }

    fn is_merge(&self, index: usize) -> bool {
        matches!(&self.nodes[index], Node::Scalar { value, tag, implicit }
            if value == "<<" && (*implicit || tag == &format!("{TAG_PREFIX}merge")))
    }

    /// A merge key's value: a mapping, an alias of one, or a list of those,
    /// where earlier entries take precedence.
    fn merge(&mut self, index: usize, map: &mut Vec<(GoValue, GoValue)>) -> Result<(), String> {
        const WANT_MAP: &str = "map merge requires map or sequence of maps as the value";
        match &self.nodes[index] {
            Node::Mapping(_) | Node::Alias { .. } => self.merge_one(index, map),
            Node::Sequence(items) => {
                for &item in items.iter().rev() {
                    let is_map = match &self.nodes[item] {
                        Node::Mapping(_) => true,
                        Node::Alias { target, .. } => {
                            matches!(self.nodes[*target], Node::Mapping(_))
                        }
                        _ => false,
                    };
                    if !is_map {
                        return Err(WANT_MAP.into());
                    }
                    self.merge_one(item, map)?;
                }
                Ok(())
            }
            Node::Scalar { .. } => Err(WANT_MAP.into()),
        }
    }

    /// Decodes a mapping (or an alias of one) into an existing map, as
    /// go-yaml's `unmarshal(n, out)` does with a map already in `out`.
    fn merge_one(&mut self, index: usize, map: &mut Vec<(GoValue, GoValue)>) -> Result<(), String> {
        self.count()?;
        match &self.nodes[index] {
            Node::Mapping(pairs) => self.fill_mapping(pairs, map),
            Node::Alias { anchor, target } => {
                if !matches!(self.nodes[*target], Node::Mapping(_)) {
                    return Err("map merge requires map or sequence of maps as the value".into());
                }
                if self.expanding.contains(&index) {
                    return Err(format!("anchor '{anchor}' value contains itself"));
                }
                self.expanding.push(index);
                self.alias_depth += 1;
                let result = stacker::maybe_grow(64 * 1024, 4 * 1024 * 1024, || {
                    self.merge_one(*target, map)
                });
                self.alias_depth -= 1;
                self.expanding.pop();
                result
            }
            _ => Err("map merge requires map or sequence of maps as the value".into()),
        }
    }
}

/// go-yaml v2's `allowedAliasRatio`: 99 % of the work may come from alias
/// expansion in small documents, falling to 10 % between 400,000 and
/// 4,000,000 decode steps.
fn allowed_alias_ratio(decode_count: u64) -> f64 {
    const LOW: u64 = 400_000;
    const HIGH: u64 = 4_000_000;
    if decode_count <= LOW {
        0.99
    } else if decode_count >= HIGH {
        0.10
    } else {
        0.99 - 0.89 * ((decode_count - LOW) as f64 / (HIGH - LOW) as f64)
    }
}

/// One scalar, decoded into `interface{}`.
fn scalar(value: &str, tag: &str, implicit: bool) -> Result<GoValue, String> {
    if tag.is_empty() && !implicit {
        return Ok(GoValue::Str(value.to_owned()));
    }
    let tag = tag.strip_prefix(TAG_PREFIX).map_or(tag, |short| short);
    // Tags go-yaml does not resolve (`!foo`, `!!set`) leave the text as is.
    if !matches!(
        tag,
        "" | "str" | "bool" | "int" | "float" | "null" | "timestamp" | "binary"
    ) {
        return Ok(GoValue::Str(value.to_owned()));
    }
    if tag == "binary" {
        use base64::Engine as _;
        let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| "!!binary value contains invalid base64 data".to_owned())?;
        return Ok(GoValue::Str(String::from_utf8_lossy(&bytes).into_owned()));
    }
    let (resolved_tag, resolved) = resolve(value, tag);
    if tag.is_empty() || tag == resolved_tag || tag == "str" {
        return Ok(resolved);
    }
    if tag == "float"
        && let GoValue::Int(int) = resolved
    {
        return Ok(GoValue::Float(int as f64));
    }
    Err(format!(
        "cannot decode !!{resolved_tag} `{value}` as a !!{tag}"
    ))
}

/// go-yaml v2's `resolve` for an untagged or core-tagged scalar: the YAML
/// 1.1 meaning of its text, and the short tag of that meaning.
fn resolve(text: &str, tag: &str) -> (&'static str, GoValue) {
    if tag == "str" {
        return ("str", GoValue::Str(text.to_owned()));
    }
    let hint = match text.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => 0,
    };
    if hint == 0 {
        return ("str", GoValue::Str(text.to_owned()));
    }
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return ("bool", GoValue::Bool(true));
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return ("bool", GoValue::Bool(false));
        }
        "" | "~" | "null" | "Null" | "NULL" => return ("null", GoValue::Null),
        ".nan" | ".NaN" | ".NAN" => return ("float", GoValue::Float(f64::NAN)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return ("float", GoValue::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return ("float", GoValue::Float(f64::NEG_INFINITY)),
        "<<" => return ("merge", GoValue::Str(text.to_owned())),
        _ => {}
    }
    match hint {
        b'.' => {
            if let Some(float) = go_parse_float(text) {
                return ("float", GoValue::Float(float));
            }
        }
        b'D' | b'S' => {
            if (tag.is_empty() || tag == "timestamp") && looks_like_timestamp(text) {
                // Decoded into interface{}, a timestamp stays its text.
                return ("timestamp", GoValue::Str(text.to_owned()));
            }
            let plain = text.replace('_', "");
            if let Some(int) = go_parse_int(&plain) {
                return ("int", int);
            }
            if is_yaml_style_float(&plain)
                && let Some(float) = go_parse_float(&plain)
            {
                return ("float", GoValue::Float(float));
            }
            if let Some(digits) = plain.strip_prefix("0b") {
                if let Ok(int) = i64::from_str_radix(digits, 2)
                    && !digits.starts_with(['+', '-'])
                {
                    return ("int", GoValue::Int(int));
                }
                if let Ok(uint) = u64::from_str_radix(digits, 2)
                    && !digits.starts_with('+')
                {
                    return ("int", GoValue::Uint(uint));
                }
            } else if let Some(digits) = plain.strip_prefix("-0b")
                && !digits.starts_with(['+', '-'])
                && let Ok(int) = i64::from_str_radix(&format!("-{digits}"), 2)
            {
                return ("int", GoValue::Int(int));
            }
        }
        _ => {}
    }
    ("str", GoValue::Str(text.to_owned()))
}

/// `strconv.ParseInt(s, 0, 64)`, then `ParseUint(s, 0, 64)`: an optional
/// sign, then `0x`/`0o`/`0b` or a leading `0` (octal) or decimal digits.
fn go_parse_int(text: &str) -> Option<GoValue> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'+' => (false, &text[1..]),
        b'-' => (true, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(rest) = unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        (16, rest)
    } else if let Some(rest) = unsigned
        .strip_prefix("0o")
        .or_else(|| unsigned.strip_prefix("0O"))
    {
        (8, rest)
    } else if let Some(rest) = unsigned
        .strip_prefix("0b")
        .or_else(|| unsigned.strip_prefix("0B"))
    {
        (2, rest)
    } else if unsigned.len() > 1 && unsigned.starts_with('0') {
        (8, &unsigned[1..])
    } else {
        (10, unsigned)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        if magnitude <= i64::MAX as u64 + 1 {
            return Some(GoValue::Int((magnitude as i64).wrapping_neg()));
        }
        return None;
    }
    if magnitude <= i64::MAX as u64 {
        Some(GoValue::Int(magnitude as i64))
    } else if !text.starts_with('+') || magnitude > 0 {
        // ParseUint refuses a sign.
        (!text.starts_with('+')).then_some(GoValue::Uint(magnitude))
    } else {
        None
    }
}

/// go-yaml's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_style_float(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut at = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let digits = |at: &mut usize| {
        let start = *at;
        while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
            *at += 1;
        }
        *at - start
    };
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        if digits(&mut at) == 0 {
            return false;
        }
    } else {
        if digits(&mut at) == 0 {
            return false;
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            digits(&mut at);
        }
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        if digits(&mut at) == 0 {
            return false;
        }
    }
    at == bytes.len()
}

/// `strconv.ParseFloat(s, 64)` for the decimal forms YAML reaches it with;
/// out-of-range values fail, as in Go.
fn go_parse_float(text: &str) -> Option<f64> {
    // Go also reads hex floats, "inf" and "nan" here, but go-yaml only
    // calls it on text that starts with '.', a digit or a sign and, for the
    // latter, matches `is_yaml_style_float`; of the rest, ".5e3"-like forms
    // are all that matter.
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    value.is_finite().then_some(value)
}

/// go-yaml's quick check before `time.Parse`: four digits and a dash, then
/// one of the accepted layouts (date only, or date and time).
fn looks_like_timestamp(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() < 5 || !bytes[..4].iter().all(u8::is_ascii_digit) || bytes[4] != b'-' {
        return false;
    }
    let (date, time) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let (Some(year), Some(month), Some(day), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let number = |s: &str, max_len: usize| {
        !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !(year.len() == 4 && number(month, 2) && number(day, 2)) {
        return false;
    }
    let (Ok(month), Ok(day)) = (month.parse::<u32>(), day.parse::<u32>()) else {
        return false;
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return false;
    }
    match time {
        None => true,
        // Times are rare in this file; a value with one is kept as text
        // either way (a timestamp decodes to its text), so only its shape
        // matters for telling it from an integer or float, which it never is.
        Some(time) => time.contains(':'),
    }
}

/// `encoding/json.Marshal` of the converted value: objects with sorted keys.
fn write_json(value: &GoValue, out: &mut String) -> Result<(), String> {
    stacker::maybe_grow(64 * 1024, 4 * 1024 * 1024, || match value {
        GoValue::Null => {
            out.push_str("null");
            Ok(())
        }
        GoValue::Bool(flag) => {
            out.push_str(if *flag { "true" } else { "false" });
            Ok(())
        }
        GoValue::Int(int) => {
            let _ = write!(out, "{int}");
            Ok(())
        }
        GoValue::Uint(uint) => {
            let _ = write!(out, "{uint}");
            Ok(())
        }
        GoValue::Float(float) => {
            out.push_str(&go_json_float(*float)?);
            Ok(())
        }
        GoValue::Str(text) => {
            out.push_str(&serde_json::to_string(text).map_err(|err| err.to_string())?);
            Ok(())
        }
        GoValue::Seq(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_json(item, out)?;
            }
            out.push(']');
            Ok(())
        }
        GoValue::Map(pairs) => {
            // sigs.k8s.io/yaml turns keys into strings; a later key that
            // becomes the same string replaces the earlier (upstream picks
            // one at random: Go's map order).
            let mut object: Vec<(String, &GoValue)> = Vec::with_capacity(pairs.len());
            for (key, value) in pairs {
                let key = json_key(key)?;
                match object.iter_mut().find(|(existing, _)| *existing == key) {
                    Some(slot) => slot.1 = value,
                    None => object.push((key, value)),
                }
            }
            object.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (position, (key, value)) in object.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).map_err(|err| err.to_string())?);
                out.push(':');
                write_json(value, out)?;
            }
            out.push('}');
            Ok(())
        }
    })
}

/// A map key as sigs.k8s.io/yaml turns it into a JSON object key.
fn json_key(key: &GoValue) -> Result<String, String> {
    match key {
        GoValue::Str(text) => Ok(text.clone()),
        GoValue::Int(int) => Ok(int.to_string()),
        GoValue::Bool(flag) => Ok(flag.to_string()),
        GoValue::Float(float) if float.is_nan() => Ok(".nan".into()),
        GoValue::Float(float) if float.is_infinite() => {
            Ok(if *float > 0.0 { ".inf" } else { "-.inf" }.into())
        }
        // FormatFloat(f, 'g', -1, 32); only matters should such a key
        // collide with a written one.
        GoValue::Float(float) => Ok(format!("{}", *float as f32)),
        GoValue::Null => Err("unsupported map key: null".into()),
        GoValue::Uint(uint) => Err(format!("unsupported map key of type uint64: {uint}")),
        GoValue::Seq(_) | GoValue::Map(_) => Err("invalid map key".into()),
    }
}

/// `encoding/json`'s float format: shortest digits, plain below 1e21 and
/// from 1e-6 up, exponent form outside; NaN and infinities are errors.
fn go_json_float(value: f64) -> Result<String, String> {
    if value.is_nan() {
        return Err("json: unsupported value: NaN".into());
    }
    if value.is_infinite() {
        return Err(format!(
            "json: unsupported value: {}Inf",
            if value > 0.0 { "+" } else { "-" }
        ));
    }
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        return Ok(format!("{value:e}"));
    }
    Ok(format!("{value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> String {
        to_json(text.as_bytes()).unwrap_or_else(|err| panic!("{text:?}: {err}"))
    }

    #[test]
    fn yaml_1_1_scalars_resolve_as_go_yaml_v2_resolves_them() {
        for (yaml, expected) in [
            ("a: yes", r#"{"a":true}"#),
            ("a: Off", r#"{"a":false}"#),
            ("a: y", r#"{"a":true}"#),
            ("a: 'yes'", r#"{"a":"yes"}"#),
            ("a: 0100", r#"{"a":64}"#),
            ("a: 0o100", r#"{"a":64}"#),
            ("a: 0x40", r#"{"a":64}"#),
            ("a: 0b101", r#"{"a":5}"#),
            ("a: -0b101", r#"{"a":-5}"#),
            ("a: 1_000", r#"{"a":1000}"#),
            ("a: +64", r#"{"a":64}"#),
            ("a: 08", r#"{"a":8}"#),
            ("a: 64.0", r#"{"a":64}"#),
            ("a: 1e2", r#"{"a":100}"#),
            ("a: 6.4e1", r#"{"a":64}"#),
            ("a: 1e21", r#"{"a":1e21}"#),
            ("a: .5", r#"{"a":0.5}"#),
            ("a: 1e400", r#"{"a":"1e400"}"#),
            ("a: 9223372036854775808", r#"{"a":9223372036854775808}"#),
            ("a: 2001-12-14", r#"{"a":"2001-12-14"}"#),
            ("a: ~", r#"{"a":null}"#),
            ("a:", r#"{"a":null}"#),
            ("a: !!str 64", r#"{"a":"64"}"#),
            ("a: !!float 64", r#"{"a":64}"#),
            ("a: !!binary aGVsbG8=", r#"{"a":"hello"}"#),
            ("a: +inf", r#"{"a":"+inf"}"#),
            ("a: 10.0.0.0/8", r#"{"a":"10.0.0.0/8"}"#),
        ] {
            assert_eq!(json(yaml), expected, "{yaml}");
        }
    }

    #[test]
    fn nan_and_infinities_cannot_become_json() {
        for yaml in ["a: .nan", "a: -.Inf", "a: [.inf]", "unknown: {x: .NaN}"] {
            assert!(
                to_json(yaml.as_bytes())
                    .unwrap_err()
                    .contains("unsupported value"),
                "{yaml}"
            );
        }
    }

    #[test]
    fn keys_are_a_go_map_sorted_on_output() {
        assert_eq!(json("b: 1\na: 2\nb: 3"), r#"{"a":2,"b":3}"#);
        assert_eq!(json("yes: 1\n1: 2"), r#"{"1":2,"true":1}"#);
        assert!(to_json("~: 1".as_bytes()).is_err());
        assert!(to_json("18446744073709551615: 1".as_bytes()).is_err());
        assert!(to_json("[a]: 1".as_bytes()).is_err());
    }

    #[test]
    fn merge_keys_follow_go_yaml_precedence() {
        let base = "base: &b {p: 1, q: 1}\n";
        assert_eq!(
            json(&format!("{base}m:\n  p: 2\n  <<: *b\n")),
            r#"{"base":{"p":1,"q":1},"m":{"p":1,"q":1}}"#
        );
        assert_eq!(
            json(&format!("{base}m:\n  <<: *b\n  p: 2\n")),
            r#"{"base":{"p":1,"q":1},"m":{"p":2,"q":1}}"#
        );
        assert_eq!(
            json("a: &a {p: 1}\nb: &b {p: 2, q: 2}\nm:\n  <<: [*a, *b]\n"),
            r#"{"a":{"p":1},"b":{"p":2,"q":2},"m":{"p":1,"q":2}}"#
        );
        assert!(to_json("m:\n  <<: 1\n".as_bytes()).is_err());
        assert_eq!(json("m:\n  '<<': 1\n"), r#"{"m":{"<<":1}}"#);
    }

    #[test]
    fn only_the_first_document_counts() {
        assert_eq!(json("a: 1\n---\na: 2\n"), r#"{"a":1}"#);
        assert_eq!(json("a: 1\n...\n"), r#"{"a":1}"#);
        assert_eq!(json("a: 1\n---\n"), r#"{"a":1}"#);
        assert_eq!(json(""), "null");
        assert_eq!(json("# only a comment\n"), "null");
    }

    #[test]
    fn a_backslash_at_the_end_of_a_quoted_scalar_is_an_error_not_a_panic() {
        // Found by the config fuzz target.
        assert!(to_json(b"\"OMN{\\").unwrap_err().contains("end of stream"));
        assert!(to_json(b"a: \"x\\").is_err());
    }

    #[test]
    fn only_yaml_1_1_documents_are_read() {
        assert_eq!(json("%YAML 1.1\n---\na: 1\n"), r#"{"a":1}"#);
        assert!(
            to_json("%YAML 1.2\n---\na: 1\n".as_bytes())
                .unwrap_err()
                .contains("incompatible")
        );
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        assert_eq!(json("a: &x [1]\nb: *x\n"), r#"{"a":[1],"b":[1]}"#);
        let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x]\n");
        for (name, previous) in ["b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
        {
            bomb.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{previous}"); 9].join(",")
            ));
        }
        assert_eq!(
            to_json(bomb.as_bytes()).unwrap_err(),
            "document contains excessive aliasing"
        );
        assert!(to_json("a: *nowhere\n".as_bytes()).is_err());
    }

    #[test]
    fn nesting_is_bounded_at_go_yamls_depth_not_lower() {
        let deep_ok = format!("a: {}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(to_json(deep_ok.as_bytes()).is_ok());
        let too_deep = format!(
            "a: {}{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert!(
            to_json(too_deep.as_bytes())
                .unwrap_err()
                .contains("max depth")
        );
        // Indentation and brackets in comments or strings are not nesting.
        assert!(
            to_json(
                format!(
                    "{}a: [1]\n# {}\nb: \"{}\"\n",
                    " ".repeat(70),
                    "[".repeat(40),
                    "[".repeat(40)
                )
                .as_bytes()
            )
            .is_ok()
        );
    }
}

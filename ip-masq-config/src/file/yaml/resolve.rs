//! go-yaml v2's `resolve`: what a scalar's text means under YAML 1.1.

use super::{TAG_PREFIX, decode::GoValue};

/// One scalar, decoded into `interface{}`.
pub(super) fn scalar(value: &str, tag: &str, implicit: bool) -> Result<GoValue, String> {
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
    if let Ok(int) = i64::try_from(magnitude) {
        Some(GoValue::Int(int))
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

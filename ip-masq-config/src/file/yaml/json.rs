//! sigs.k8s.io/yaml's conversion and `encoding/json.Marshal` of the result.

use std::fmt::Write as _;

use super::decode::GoValue;

/// `encoding/json.Marshal` of the converted value: objects with sorted keys.
pub(super) fn write_json(value: &GoValue, out: &mut String) -> Result<(), String> {
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

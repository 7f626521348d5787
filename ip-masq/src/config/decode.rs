//! Decodes a config document in one pass. The CIDR lists are parsed and
//! validated while they are read, so a list of 100k entries never exists as
//! a tree of generic values: a reload of a large file costs the parser's
//! time and the resulting `Vec<IpNet>`, nothing more.
//!
//! Nothing here fails on a bad value: problems are collected, so that the
//! caller can report every bad entry in one message. Only syntax errors from
//! the YAML or JSON parser abort the decode.

use std::{collections::HashSet, fmt, net::Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{KEY_MASQUERADE_CIDRS, KEY_NON_MASQUERADE_CIDRS, KNOWN_KEYS, ParseOptions, Problem};

/// A decoded config document.
#[derive(Debug)]
pub(super) enum Document {
    /// An empty document, or one that is only `null`.
    Null,
    /// Anything but a mapping at the top: what it was, for the error.
    NotAMapping(&'static str),
    /// The top-level entries in file order, keys as written.
    Fields(Vec<(String, Field)>),
}

/// The value of one top-level entry.
#[derive(Debug)]
pub(super) enum Field {
    /// A CIDR list key (spelled as upstream documents it), already validated.
    Cidrs(&'static str, CidrField),
    /// Any other known key (spelled as upstream documents it), left for the
    /// caller to judge.
    Value(&'static str, Value),
    /// A key we do not know; its value was decoded and dropped.
    Unknown,
}

/// A decoded CIDR list.
#[derive(Debug)]
pub(super) struct CidrField {
    /// The valid entries, duplicates merged, in file order; `None` when the
    /// value was not a list at all.
    pub cidrs: Option<Vec<IpNet>>,
    pub problems: Vec<Problem>,
}

/// Decodes `text` as JSON when it looks like JSON and parses as such, and as
/// YAML otherwise, so that JSON-only syntax (tabs, for one) is not judged by
/// YAML's rules.
pub(super) fn decode(text: &str, options: ParseOptions) -> Result<Document, String> {
    if text.trim().is_empty() {
        return Ok(Document::Null);
    }
    if text.trim_start().starts_with('{') {
        let mut json = serde_json::Deserializer::from_str(text);
        let seed = DocumentSeed { options };
        if let Ok(document) = seed.deserialize(&mut json)
            && json.end().is_ok()
        {
            return Ok(document);
        }
    }
    DocumentSeed { options }
        .deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|err| err.to_string())
}

/// The `visit_*` methods for booleans and numbers, which every visitor here
/// treats alike: as a value of the wrong kind, handed to its `scalar`.
macro_rules! non_string_scalars {
    ($output:ty) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<$output, E> {
            Ok(self.scalar(&Value::Bool(v)))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<$output, E> {
            Ok(self.scalar(&Value::from(v)))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<$output, E> {
            Ok(self.scalar(&Value::from(v)))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<$output, E> {
            Ok(self.scalar(&Value::from(v)))
        }
    };
}

/// Each seed here is its own visitor, and takes whatever the document holds.
macro_rules! seed_is_its_own_visitor {
    ($($seed:ty),*) => {$(
        impl<'de> DeserializeSeed<'de> for $seed {
            type Value = <$seed as Visitor<'de>>::Value;

            fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
                deserializer.deserialize_any(self)
            }
        }
    )*};
}

seed_is_its_own_visitor!(DocumentSeed, CidrListSeed, CidrItemSeed);

struct DocumentSeed {
    options: ParseOptions,
}

impl DocumentSeed {
    fn scalar(self, value: &Value) -> Document {
        Document::NotAMapping(super::kind_of(value))
    }
}

impl<'de> Visitor<'de> for DocumentSeed {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of config keys to values")
    }

    non_string_scalars!(Document);

    fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Document, E> {
        Ok(Document::NotAMapping("a string"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        // Decoded, not skipped, so that an alias bomb is refused here as
        // everywhere else rather than passed over.
        while seq.next_element::<Value>()?.is_some() {}
        Ok(Document::NotAMapping("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let known = KNOWN_KEYS.iter().find(|k| k.eq_ignore_ascii_case(&key));
            let field = match known {
                Some(&list @ (KEY_NON_MASQUERADE_CIDRS | KEY_MASQUERADE_CIDRS)) => {
                    let seed = CidrListSeed {
                        key: list,
                        options: self.options,
                    };
                    Field::Cidrs(list, map.next_value_seed(seed)?)
                }
                Some(&known) => Field::Value(known, map.next_value()?),
                None => {
                    // Decoded, not skipped: see `visit_seq`.
                    map.next_value::<Value>()?;
                    Field::Unknown
                }
            };
            fields.push((key, field));
        }
        Ok(Document::Fields(fields))
    }
}

struct CidrListSeed {
    key: &'static str,
    options: ParseOptions,
}

impl CidrListSeed {
    fn scalar(self, value: &Value) -> CidrField {
        self.not_a_list(value.clone())
    }

    fn not_a_list(&self, value: Value) -> CidrField {
        CidrField {
            cidrs: None,
            problems: vec![Problem {
                key: self.key,
                reason: format!("expected a list of CIDRs, found {}", super::kind_of(&value)),
                value: Some(value.to_string()),
            }],
        }
    }
}

impl<'de> Visitor<'de> for CidrListSeed {
    type Value = CidrField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of CIDRs")
    }

    non_string_scalars!(CidrField);

    // Go's json sets a slice to nil on null: an empty list.
    fn visit_unit<E: de::Error>(self) -> Result<CidrField, E> {
        Ok(CidrField {
            cidrs: Some(Vec::new()),
            problems: Vec::new(),
        })
    }

    fn visit_none<E: de::Error>(self) -> Result<CidrField, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<CidrField, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<CidrField, E> {
        Ok(self.not_a_list(Value::String(v.to_owned())))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CidrField, A::Error> {
        Ok(self.not_a_list(Value::Object(collect_map(map)?)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CidrField, A::Error> {
        let expected = seq.size_hint().unwrap_or(0);
        // foldhash: several times faster than SipHash on keys this small,
        // and seeded per process, so a crafted list cannot force collisions.
        let mut seen =
            HashSet::with_capacity_and_hasher(expected, foldhash::fast::RandomState::default());
        let mut cidrs = Vec::with_capacity(expected);
        let mut problems = Vec::new();
        while let Some(item) = seq.next_element_seed(CidrItemSeed)? {
            let validated = match item {
                CidrItem::Aligned4(cidr) => Ok(cidr),
                CidrItem::Text(text) => {
                    super::validate_cidr(&text, self.options).map_err(|reason| Problem {
                        key: self.key,
                        value: Some(text),
                        reason,
                    })
                }
                CidrItem::Other(value) => Err(Problem {
                    key: self.key,
                    reason: format!("expected a CIDR string, found {}", super::kind_of(&value)),
                    value: Some(value.to_string()),
                }),
            };
            match validated {
                Ok(cidr) => {
                    if seen.insert(cidr) {
                        cidrs.push(cidr);
                    }
                }
                Err(problem) => problems.push(problem),
            }
        }
        // The valid entries are kept even when some are bad, so that the
        // cross-checks can report their problems in the same message.
        Ok(CidrField {
            cidrs: Some(cidrs),
            problems,
        })
    }
}

/// One list item as read.
enum CidrItem {
    /// An aligned IPv4 CIDR: valid whatever the flags, and by far the most
    /// common item, so it is taken without copying its text.
    Aligned4(IpNet),
    /// Any other string, kept as written for validation and its message.
    Text(String),
    /// Not a string at all.
    Other(Box<Value>),
}

struct CidrItemSeed;

impl CidrItemSeed {
    fn scalar(self, value: &Value) -> CidrItem {
        CidrItem::Other(Box::new(value.clone()))
    }

    /// An aligned IPv4 CIDR in canonical spelling (decimal octets and
    /// prefix length, no leading zeros, no sign), read with the standard
    /// library's address parser, which is several times faster than the
    /// general one. Anything else, valid or not, is left to
    /// [`super::validate_cidr`], so both paths accept exactly the same texts.
    fn from_text(text: &str) -> Option<IpNet> {
        let (address, prefix_len) = text.split_once('/')?;
        let canonical_prefix = !prefix_len.is_empty()
            && prefix_len.len() <= 2
            && prefix_len.bytes().all(|b| b.is_ascii_digit())
            && !(prefix_len.len() == 2 && prefix_len.starts_with('0'));
        if !canonical_prefix {
            return None;
        }
        let address: Ipv4Addr = address.parse().ok()?;
        let net = Ipv4Net::new(address, prefix_len.parse().ok()?).ok()?;
        (net.addr() == net.network()).then_some(IpNet::V4(net))
    }
}

impl<'de> Visitor<'de> for CidrItemSeed {
    type Value = CidrItem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CIDR string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<CidrItem, E> {
        Ok(Self::from_text(v).map_or_else(|| CidrItem::Text(v.to_owned()), CidrItem::Aligned4))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<CidrItem, E> {
        Ok(Self::from_text(&v).map_or(CidrItem::Text(v), CidrItem::Aligned4))
    }

    non_string_scalars!(CidrItem);

    fn visit_unit<E: de::Error>(self) -> Result<CidrItem, E> {
        Ok(CidrItem::Other(Box::new(Value::Null)))
    }

    fn visit_none<E: de::Error>(self) -> Result<CidrItem, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<CidrItem, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CidrItem, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(CidrItem::Other(Box::new(Value::Array(items))))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CidrItem, A::Error> {
        Ok(CidrItem::Other(Box::new(Value::Object(collect_map(map)?))))
    }
}

fn collect_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Map<String, Value>, A::Error> {
    let mut object = Map::new();
    while let Some((key, value)) = map.next_entry::<String, Value>()? {
        object.insert(key, value);
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_accepts_only_what_validation_accepts() {
        let options = ParseOptions::default();
        let canonical = [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "255.255.255.255/32",
            "192.168.4.0/22",
        ];
        for text in canonical {
            let fast = CidrItemSeed::from_text(text);
            assert!(fast.is_some(), "{text} should take the fast path");
            assert_eq!(
                fast,
                super::super::validate_cidr(text, options).ok(),
                "{text}"
            );
        }
        let others = [
            "010.0.0.0/8",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "10.0.0.0/33",
            "10.0.0.0/100",
            "10.0.0.1/8",
            "10.0.0.0/",
            "10.0.0/8",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0",
            "2001:db8::/32",
            "::ffff:10.0.0.0/104",
        ];
        for text in others {
            assert_eq!(CidrItemSeed::from_text(text), None, "{text}");
        }
    }

    #[test]
    fn a_large_list_decodes_the_same_in_yaml_and_json() {
        let cidrs: Vec<String> = (0..2000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let yaml = format!(
            "nonMasqueradeCIDRs:\n{}",
            cidrs
                .iter()
                .map(|c| format!("  - {c}\n"))
                .collect::<String>()
        );
        let json = serde_json::json!({ "nonMasqueradeCIDRs": cidrs }).to_string();
        let decoded = |text: &str| match decode(text, ParseOptions::default()) {
            Ok(Document::Fields(mut fields)) => match fields.pop() {
                Some((_, Field::Cidrs(_, list))) => list.cidrs.expect("a list"),
                other => panic!("unexpected field {other:?}"),
            },
            other => panic!("unexpected document {other:?}"),
        };
        let from_yaml = decoded(&yaml);
        assert_eq!(from_yaml.len(), 2000);
        assert_eq!(from_yaml, decoded(&json));
        assert_eq!(from_yaml[1999].to_string(), "10.7.207.0/24");
    }
}

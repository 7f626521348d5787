//! go-yaml v2's decoder into `interface{}`: aliases expanded with its bound
//! on alias-driven work, merge keys, Go map semantics for keys.

use super::{Node, TAG_PREFIX, resolve::scalar};

/// A decoded Go value (`interface{}` as go-yaml v2 fills it).
#[derive(Clone, Debug)]
pub(super) enum GoValue {
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
pub(super) struct Decoder<'a> {
    pub(super) nodes: &'a [Node],
    pub(super) decode_count: u64,
    pub(super) alias_count: u64,
    pub(super) alias_depth: usize,
    /// Alias nodes being expanded, to refuse an anchor that contains itself.
    pub(super) expanding: Vec<usize>,
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

    pub(super) fn unmarshal(&mut self, index: usize) -> Result<GoValue, String> {
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

//! One family's prefixes, and the ranges they cut each chunk into.

use std::collections::BTreeMap;

use ip_masq_common::{CHUNK_BITS, DIRECTORY_SLOTS};

use crate::Family;

/// The ranges of one chunk: sorted starts, the first at the chunk's first
/// address, neighbours deciding differently.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Ranges {
    /// Whether the first range keeps the source; the others alternate.
    pub first_keeps: bool,
    /// Each range's first address, ascending.
    pub starts: Vec<u128>,
}

impl Ranges {
    /// A chunk decided as a whole.
    pub fn uniform(keeps: bool, chunk_start: u128) -> Self {
        Self {
            first_keeps: keeps,
            starts: vec![chunk_start],
        }
    }

    /// Whether `address` (inside the chunk) keeps its source.
    pub fn decide(&self, address: u128) -> bool {
        let position = self.starts.partition_point(|&start| start <= address);
        let position = u32::try_from(position.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_keeps ^ (position & 1 == 1)
    }
}

/// One family's prefixes: network (as a number) and length, and whether
/// the source is kept.
#[derive(Clone, Debug)]
pub struct FamilyTable {
    family: Family,
    entries: BTreeMap<(u128, u8), bool>,
}

impl FamilyTable {
    /// An empty table: every destination masqueraded.
    pub fn new(family: Family) -> Self {
        Self {
            family,
            entries: BTreeMap::new(),
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets `network/len` to `keeps`; `network` must have no host bits.
    pub fn insert(&mut self, network: u128, len: u8, keeps: bool) {
        debug_assert_eq!(network & !self.mask(len), 0, "host bits set");
        self.entries.insert((network, len), keeps);
    }

    /// Every prefix: network, length and whether it keeps the source.
    pub fn prefixes(&self) -> impl Iterator<Item = (u128, u8, bool)> + '_ {
        self.entries
            .iter()
            .map(|(&(network, len), &keeps)| (network, len, keeps))
    }

    /// Removes `network/len`.
    pub fn remove(&mut self, network: u128, len: u8) {
        self.entries.remove(&(network, len));
    }

    fn mask(&self, len: u8) -> u128 {
        let width = self.family.width();
        let len = u32::from(len);
        if len == 0 {
            0
        } else {
            (u128::MAX >> (128 - width)) & !((1u128 << (width - len)) - 1)
        }
    }

    /// The chunks whose ranges `network/len` takes part in.
    pub fn chunks_of(&self, network: u128, len: u8) -> std::ops::RangeInclusive<u32> {
        let family = self.family;
        let last = network | (!self.mask(len) & (u128::MAX >> (128 - family.width())));
        family.chunk_of(network)..=family.chunk_of(last)
    }

    /// Exactly what a longest-prefix lookup answers for `address`: the
    /// reference the directory is checked against.
    pub fn longest_match(&self, address: u128) -> bool {
        (0..=self.family.width())
            .rev()
            .find_map(|len| {
                let len = u8::try_from(len).expect("at most 128");
                self.entries.get(&(address & self.mask(len), len)).copied()
            })
            .unwrap_or(false)
    }

    /// The ranges of `chunk`.
    pub fn chunk_ranges(&self, chunk: u32) -> Ranges {
        let family = self.family;
        let start = family.chunk_start(chunk);
        let outer = (0..=CHUNK_BITS)
            .rev()
            .find_map(|len| {
                let len = u8::try_from(len).expect("at most 16");
                self.entries.get(&(start & self.mask(len), len)).copied()
            })
            .unwrap_or(false);
        let inner = self
            .entries
            .range((start, 0)..=(family.chunk_end(chunk), u8::MAX))
            .filter(|((_, len), _)| u32::from(*len) > CHUNK_BITS)
            .map(|(&(network, len), &keeps)| (network, len, keeps));
        self.sweep(chunk, outer, inner)
    }

    /// The ranges of every chunk, in chunk order: one pass over the table,
    /// for a first start and for checking an adopted directory.
    pub fn all_chunk_ranges(&self) -> Vec<Ranges> {
        let family = self.family;
        let mut outer = vec![false; DIRECTORY_SLOTS as usize];
        // Shorter prefixes first, so that a longer one paints over them.
        let mut covering: Vec<_> = self
            .entries
            .iter()
            .filter(|((_, len), _)| u32::from(*len) <= CHUNK_BITS)
            .collect();
        covering.sort_by_key(|((_, len), _)| *len);
        for (&(network, len), &keeps) in covering {
            for chunk in self.chunks_of(network, len) {
                outer[chunk as usize] = keeps;
            }
        }
        let mut inner_by_chunk: BTreeMap<u32, Vec<(u128, u8, bool)>> = BTreeMap::new();
        for (&(network, len), &keeps) in &self.entries {
            if u32::from(len) > CHUNK_BITS {
                inner_by_chunk
                    .entry(family.chunk_of(network))
                    .or_default()
                    .push((network, len, keeps));
            }
        }
        (0..DIRECTORY_SLOTS)
            .map(|chunk| {
                let inner = inner_by_chunk.remove(&chunk).unwrap_or_default();
                self.sweep(chunk, outer[chunk as usize], inner.into_iter())
            })
            .collect()
    }

    /// The ranges of `chunk` from the decision of the prefix around it and
    /// the prefixes inside it, in key order (network, then length: an
    /// outer prefix before the inner ones that share its start). Prefixes
    /// nest or are disjoint, so a stack of the open ones gives each address
    /// its innermost prefix.
    fn sweep(
        &self,
        chunk: u32,
        outer: bool,
        inner: impl Iterator<Item = (u128, u8, bool)>,
    ) -> Ranges {
        let family = self.family;
        let mut ranges = Ranges {
            first_keeps: outer,
            starts: Vec::new(),
        };
        let mut push = |start: u128, keeps: bool| {
            if ranges.starts.is_empty() {
                ranges.first_keeps = keeps;
                ranges.starts.push(start);
            } else if (ranges.first_keeps ^ ranges.starts.len().is_multiple_of(2)) != keeps {
                ranges.starts.push(start);
            }
        };
        // Open prefixes: last address and decision; the chunk's own first.
        let mut open: Vec<(u128, bool)> = vec![(family.chunk_end(chunk), outer)];
        // The first address not yet given a range; None past the end.
        let mut cursor = Some(family.chunk_start(chunk));
        for (network, len, keeps) in inner {
            let last = network | (!self.mask(len) & (u128::MAX >> (128 - family.width())));
            while let Some(&(end, decision)) = open.last() {
                if end >= network {
                    break;
                }
                open.pop();
                if let Some(at) = cursor.filter(|&at| at <= end) {
                    push(at, decision);
                    cursor = end.checked_add(1);
                }
            }
            if let Some(at) = cursor.filter(|&at| at < network) {
                let (_, decision) = *open.last().expect("the chunk stays open");
                push(at, decision);
            }
            cursor = Some(network);
            open.push((last, keeps));
        }
        while let Some((end, decision)) = open.pop() {
            if let Some(at) = cursor.filter(|&at| at <= end) {
                push(at, decision);
                cursor = end.checked_add(1);
            }
        }
        ranges
    }
}

//! YAML as ip-masq-agent reads it, turned into the JSON text that its
//! `encoding/json` step then sees.
//!
//! Upstream converts YAML with `sigs.k8s.io/yaml`, which decodes the first
//! document with go-yaml v2 into Go values and marshals them with
//! `encoding/json`. Every step leaves its mark on the outcome, so each is
//! reproduced here:
//! - go-yaml v2 is a port of libyaml, so the events come from libyaml too
//!   (`unsafe-libyaml`, see [`libyaml`]); go-yaml's own limits are added on top:
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

use std::collections::HashMap;

use decode::Decoder;
use libyaml::{Event, Events};

mod decode;
mod json;
mod libyaml;
mod resolve;
#[cfg(test)]
mod tests;

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
    json::write_json(&value, &mut json)?;
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
    let mut events = Events::new(bytes);
    let mut nodes: Vec<Node> = Vec::new();
    let mut anchors: HashMap<String, usize> = HashMap::new();
    let mut open: Vec<Open> = Vec::new();
    let (mut flow_depth, mut block_depth) = (0usize, 0usize);
    let mut root = None;
    loop {
        // A panic inside the parser would be a bug of the library's; it is
        // a refused file, never a dead agent. Under fuzzing, libfuzzer's
        // panic hook aborts first, so such bugs are still found.
        let event = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| events.next_event()))
            .map_err(|_| "the YAML parser failed on this input".to_owned())??;
        let node = match event {
            Event::StreamStart => continue,
            Event::StreamEnd => return Ok(Document { nodes, root: None }),
            Event::DocumentStart { version } => {
                // go-yaml v2 reads YAML 1.1 only; libyaml also takes 1.2.
                if let Some((major, minor)) = version
                    && (major, minor) != (1, 1)
                {
                    return Err(format!(
                        "found incompatible YAML document (%YAML {major}.{minor}; only 1.1 is read)"
                    ));
                }
                continue;
            }
            Event::DocumentEnd => {
                // The first document is all that counts.
                return Ok(Document { nodes, root });
            }
            Event::Alias { anchor } => {
                let Some(&target) = anchors.get(&anchor) else {
                    return Err(format!("unknown anchor '{anchor}' referenced"));
                };
                nodes.push(Node::Alias { anchor, target });
                nodes.len() - 1
            }
            Event::Scalar {
                anchor,
                tag,
                value,
                plain_implicit,
                plain,
            } => {
                // The non-specific tag `!` stays a tag go-yaml cannot
                // resolve, so the value is a string whatever its text.
                let tag = tag.unwrap_or_default();
                let implicit = plain_implicit && plain && tag.is_empty();
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
            Event::SequenceStart { anchor, flow } => {
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
            Event::MappingStart { anchor, flow } => {
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
            Event::SequenceEnd | Event::MappingEnd => {
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

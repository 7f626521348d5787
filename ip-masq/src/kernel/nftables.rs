//! The native nftables ruleset (`nft -j list ruleset`), read as JSON with
//! serde: the tables, chains and rules that `iptables-save` never shows,
//! such as kube-proxy's nftables mode or a CNI's own masquerade table.
//!
//! Only reading; the types keep what a finding needs and leave the rest of
//! each expression as JSON.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

/// Errors reading the ruleset.
#[derive(Debug, Error)]
pub enum NftablesError {
    /// `nft` could not be run.
    #[error("cannot run nft")]
    Spawn(#[source] std::io::Error),
    /// `nft` failed.
    #[error("nft -j list ruleset failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: String,
        /// What it printed.
        stderr: String,
    },
    /// Its output was not the JSON schema expected.
    #[error("unreadable nft JSON")]
    Json(#[source] serde_json::Error),
}

/// A base or regular chain.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Chain {
    /// `ip`, `ip6`, `inet`, ...
    pub family: String,
    /// The table's name.
    pub table: String,
    /// The chain's name.
    pub name: String,
    /// `nat`, `filter`, ... for a base chain.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `postrouting`, ... for a base chain.
    pub hook: Option<String>,
    /// The hook priority of a base chain (numbers; nft prints keywords as
    /// numbers in JSON).
    pub prio: Option<i64>,
}

/// One rule with its expressions.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Rule {
    /// `ip`, `ip6`, `inet`, ...
    pub family: String,
    /// The table's name.
    pub table: String,
    /// The chain's name.
    pub chain: String,
    /// The rule's handle (`nft delete rule ... handle N`).
    pub handle: u64,
    /// Its expressions, as nft's JSON.
    #[serde(default)]
    pub expr: Vec<Value>,
}

/// The whole ruleset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ruleset {
    /// Every chain.
    pub chains: Vec<Chain>,
    /// Every rule, in order.
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Listing {
    nftables: Vec<Value>,
}

/// Reads `nft -j list ruleset` output.
///
/// # Errors
/// The text is not nft's JSON.
pub fn parse(json: &str) -> Result<Ruleset, NftablesError> {
    let listing: Listing = serde_json::from_str(json).map_err(NftablesError::Json)?;
    let mut ruleset = Ruleset::default();
    for object in listing.nftables {
        if let Some(chain) = object.get("chain") {
            ruleset
                .chains
                .push(serde_json::from_value(chain.clone()).map_err(NftablesError::Json)?);
        } else if let Some(rule) = object.get("rule") {
            ruleset
                .rules
                .push(serde_json::from_value(rule.clone()).map_err(NftablesError::Json)?);
        }
    }
    Ok(ruleset)
}

/// Runs `nft -j list ruleset` in the caller's network namespace.
///
/// # Errors
/// `nft` is missing or fails, or prints something else than its JSON.
pub fn ruleset() -> Result<Ruleset, NftablesError> {
    let output = Command::new("nft")
        .args(["-j", "list", "ruleset"])
        .output()
        .map_err(NftablesError::Spawn)?;
    if !output.status.success() {
        return Err(NftablesError::Failed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    parse(&String::from_utf8_lossy(&output.stdout))
}

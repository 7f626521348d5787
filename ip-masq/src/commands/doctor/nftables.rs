//! Which masquerade and SNAT statements of the native nftables ruleset can
//! reach pod traffic, for `doctor`.
//!
//! nftables runs every base chain registered on a hook, in priority order,
//! and each decides for itself: a RETURN in ip-masq's chain (iptables-nft's
//! `ip nat` table, postrouting at priority 100, `srcnat`) ends only that
//! chain, so a `masquerade` in another table's postrouting chain still
//! applies. Each nat base chain on postrouting is walked, jumps and gotos
//! followed, and every `masquerade`/`snat` found is reported with the mark
//! that gates it, if a `meta mark & M == 0 return` before it lets only
//! marked packets through (kube-proxy's way: it masquerades only what it
//! marked itself, which is benign).

use serde::Serialize;
use serde_json::Value;

use super::{Finding, FindingKind};
use crate::kernel::nftables::{Chain, Rule, Ruleset};

/// kube-proxy's masquerade mark (`masqueradeBit` 14).
const KUBE_PROXY_MARK: u64 = 0x4000;

/// One reachable masquerade or SNAT statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NftSnat {
    /// `ip`, `ip6` or `inet`.
    pub family: String,
    /// The table.
    pub table: String,
    /// The chain that holds the statement.
    pub chain: String,
    /// The base chain the walk started from.
    pub base_chain: String,
    /// That base chain's hook priority.
    pub priority: i64,
    /// The rule's handle.
    pub handle: u64,
    /// `masquerade` or `snat`.
    pub statement: &'static str,
    /// Only packets carrying these mark bits reach it, if a mark gates it.
    pub only_marked: Option<u64>,
}

impl NftSnat {
    /// kube-proxy's own masquerade, which only takes packets it marked.
    pub fn is_kube_proxy(&self) -> bool {
        self.table == "kube-proxy" && self.only_marked == Some(KUBE_PROXY_MARK)
    }

    /// The command that deletes the rule.
    pub fn delete_command(&self) -> String {
        format!(
            "nft delete rule {} {} {} handle {}",
            self.family, self.table, self.chain, self.handle
        )
    }
}

/// The findings for the statements that can masquerade pod traffic:
/// every one but kube-proxy's own, which takes only packets it marked.
pub(crate) fn findings(statements: &[NftSnat], findings: &mut Vec<Finding>) {
    for statement in statements.iter().filter(|s| !s.is_kube_proxy()) {
        let gate = statement.only_marked.map_or_else(String::new, |mark| {
            format!(" It takes only packets carrying mark {mark:#x}; check that nothing marks pod traffic so.")
        });
        findings.push(Finding {
            kind: FindingKind::NftablesSnat,
            location: format!(
                "nftables {} {} {} (from base chain {}, postrouting priority {})",
                statement.family, statement.table, statement.chain, statement.base_chain, statement.priority
            ),
            evidence: format!("rule handle {}: {}", statement.handle, statement.statement),
            problem: format!(
                "nftables runs every base chain on postrouting, each on its own: a RETURN in ip-masq's chain (iptables-nft's table ip nat, priority 100) ends only that chain, so this {} still applies to the pod traffic it matches.{gate}",
                statement.statement
            ),
            fix: format!(
                "Turn off the component's own masquerading, or delete the rule: {}",
                statement.delete_command()
            ),
        });
    }
}

/// Every masquerade/SNAT statement that a nat postrouting base chain of
/// `ruleset` can reach. iptables-nft's own `nat` tables are left out: they
/// are iptables' rules, which `doctor` reads from iptables-save.
pub fn snat_statements(ruleset: &Ruleset) -> Vec<NftSnat> {
    let mut found = Vec::new();
    for base in ruleset.chains.iter().filter(|chain| {
        chain.kind.as_deref() == Some("nat")
            && chain.hook.as_deref() == Some("postrouting")
            && !(chain.table == "nat" && matches!(chain.family.as_str(), "ip" | "ip6"))
    }) {
        let mut path = Vec::new();
        walk(ruleset, base, &base.name, None, &mut path, &mut found);
    }
    found
}

fn walk(
    ruleset: &Ruleset,
    base: &Chain,
    chain: &str,
    mut gate: Option<u64>,
    path: &mut Vec<String>,
    found: &mut Vec<NftSnat>,
) {
    if path.len() > 16 || path.iter().any(|seen| seen == chain) {
        return;
    }
    path.push(chain.to_owned());
    let rules = ruleset.rules.iter().filter(|rule| {
        rule.family == base.family && rule.table == base.table && rule.chain == chain
    });
    for rule in rules {
        let matches = rule
            .expr
            .iter()
            .filter(|e| e.get("match").is_some())
            .count();
        for expression in &rule.expr {
            if expression.get("return").is_some() {
                match (matches, zero_mark_match(rule)) {
                    (0, _) => {
                        path.pop();
                        return;
                    }
                    (1, Some(mask)) => gate = Some(gate.map_or(mask, |g| g | mask)),
                    _ => {}
                }
            } else if let Some(statement) = ["masquerade", "snat"]
                .into_iter()
                .find(|s| expression.get(*s).is_some())
            {
                found.push(NftSnat {
                    family: rule.family.clone(),
                    table: rule.table.clone(),
                    chain: chain.to_owned(),
                    base_chain: base.name.clone(),
                    priority: base.prio.unwrap_or_default(),
                    handle: rule.handle,
                    statement,
                    only_marked: gate,
                });
            } else if let Some(target) = ["jump", "goto"]
                .into_iter()
                .find_map(|verb| expression.get(verb)?.get("target")?.as_str())
            {
                walk(ruleset, base, target, gate, path, found);
            }
        }
    }
    path.pop();
}

/// The mask of a rule's `meta mark & M == 0` match, if that is its match.
fn zero_mark_match(rule: &Rule) -> Option<u64> {
    rule.expr.iter().find_map(|expression| {
        let matched = expression.get("match")?;
        if matched.get("op")?.as_str()? != "==" || matched.get("right")?.as_u64()? != 0 {
            return None;
        }
        let and = matched.get("left")?.get("&")?.as_array()?;
        let is_mark = and.iter().any(|side| {
            side.get("meta")
                .and_then(|m| m.get("key"))
                .and_then(Value::as_str)
                == Some("mark")
        });
        is_mark
            .then(|| and.iter().find_map(Value::as_u64))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::nftables::parse;

    /// `nft -j list ruleset` of a namespace with a Docker-like table, a
    /// kube-proxy-like table and a flannel-like inet table (nft 1.0.6).
    const RULESET: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
      {"table": {"family": "ip", "name": "dockerlike", "handle": 1}},
      {"chain": {"family": "ip", "table": "dockerlike", "name": "POSTROUTING", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "dockerlike", "chain": "POSTROUTING", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "172.17.0.0", "len": 16}}}}, {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "docker0"}}, {"masquerade": null}]}},
      {"table": {"family": "ip", "name": "kube-proxy", "handle": 2}},
      {"chain": {"family": "ip", "table": "kube-proxy", "name": "masquerading", "handle": 1}},
      {"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-postrouting", "handle": 2, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "kube-proxy", "chain": "masquerading", "handle": 3, "expr": [{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16384]}, "right": 0}}, {"return": null}]}},
      {"rule": {"family": "ip", "table": "kube-proxy", "chain": "masquerading", "handle": 4, "expr": [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"^": [{"meta": {"key": "mark"}}, 16384]}}}]}},
      {"rule": {"family": "ip", "table": "kube-proxy", "chain": "masquerading", "handle": 5, "expr": [{"masquerade": {"flags": "fully-random"}}]}},
      {"rule": {"family": "ip", "table": "kube-proxy", "chain": "nat-postrouting", "handle": 6, "expr": [{"jump": {"target": "masquerading"}}]}},
      {"table": {"family": "inet", "name": "flannel", "handle": 3}},
      {"chain": {"family": "inet", "table": "flannel", "name": "post", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
      {"rule": {"family": "inet", "table": "flannel", "chain": "post", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}}, {"snat": {"family": "ip", "addr": "192.0.2.1"}}]}},
      {"table": {"family": "ip", "name": "nat", "handle": 4}},
      {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "nat", "chain": "POSTROUTING", "handle": 2, "expr": [{"masquerade": null}]}}
    ]}"#;

    #[test]
    fn finds_each_reachable_statement_with_its_gate() {
        let found = snat_statements(&parse(RULESET).unwrap());
        let summary: Vec<(String, u64, &str, Option<u64>, bool)> = found
            .iter()
            .map(|f| {
                (
                    format!("{} {} {}", f.family, f.table, f.chain),
                    f.handle,
                    f.statement,
                    f.only_marked,
                    f.is_kube_proxy(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "ip dockerlike POSTROUTING".to_owned(),
                    2,
                    "masquerade",
                    None,
                    false
                ),
                (
                    "ip kube-proxy masquerading".to_owned(),
                    5,
                    "masquerade",
                    Some(0x4000),
                    true
                ),
                ("inet flannel post".to_owned(), 2, "snat", None, false),
            ],
            "iptables-nft's own ip nat table is left to iptables-save"
        );
        assert_eq!(
            found[0].delete_command(),
            "nft delete rule ip dockerlike POSTROUTING handle 2"
        );
        assert_eq!(found[0].priority, 100);
    }

    #[test]
    fn an_unconditional_return_ends_the_walk() {
        let json = RULESET.replace(
            r#"{"rule": {"family": "ip", "table": "dockerlike", "chain": "POSTROUTING", "handle": 2,"#,
            r#"{"rule": {"family": "ip", "table": "dockerlike", "chain": "POSTROUTING", "handle": 9, "expr": [{"return": null}]}},
               {"rule": {"family": "ip", "table": "dockerlike", "chain": "POSTROUTING", "handle": 2,"#,
        );
        let found = snat_statements(&parse(&json).unwrap());
        assert!(!found.iter().any(|f| f.table == "dockerlike"), "{found:?}");
    }
}

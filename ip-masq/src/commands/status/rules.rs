//! One family's rules as `status` sees them: our chain and its jump read
//! out of an `iptables-save` dump, and what is wrong with them. Pure.

use serde::Serialize;

use crate::kernel::iptables::save::Dump;

/// The static rules of one family as found in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RulesView {
    pub(crate) family: String,
    pub(crate) chain_present: bool,
    pub(crate) chain_rules: Vec<String>,
    /// RETURN rules first, then only MASQUERADE rules.
    pub(crate) in_order: bool,
    pub(crate) jumps: usize,
    /// 1-based position of the first jump among POSTROUTING's rules.
    pub(crate) jump_position: Option<usize>,
    pub(crate) postrouting_rules: usize,
    pub(crate) error: Option<String>,
}

/// Reads our chain and jump out of an `iptables-save` dump. Pure.
pub(crate) fn rules_view(family: &str, save_text: &str, chain: &str) -> RulesView {
    let dump = Dump::parse_save(save_text);
    let rules = dump.chain_rules("nat", chain);
    let postrouting = dump.chain_rules("nat", "POSTROUTING");
    let jumps: Vec<usize> = postrouting
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.target() == Some((chain, false)))
        .map(|(index, _)| index + 1)
        .collect();
    let targets: Vec<&str> = rules
        .iter()
        .filter_map(|rule| rule.target().map(|(target, _)| target))
        .collect();
    // RETURN rules, then MASQUERADE rules (`--to-ports` adds per-protocol
    // ones before the final catch-all), and nothing else.
    let returns = targets.iter().take_while(|t| **t == "RETURN").count();
    RulesView {
        family: family.to_owned(),
        chain_present: dump.has_chain("nat", chain),
        chain_rules: rules.iter().map(|rule| rule.text.clone()).collect(),
        in_order: returns >= 1
            && targets.len() > returns
            && targets[returns..].iter().all(|t| *t == "MASQUERADE"),
        jumps: jumps.len(),
        jump_position: jumps.first().copied(),
        postrouting_rules: postrouting.len(),
        error: None,
    }
}

/// What is wrong with one family's rules. Pure.
pub(crate) fn rule_problems(view: &RulesView, chain: &str) -> Vec<String> {
    let family = &view.family;
    if let Some(error) = &view.error {
        return vec![format!("{family} rules unreadable: {error}")];
    }
    let mut problems = Vec::new();
    if !view.chain_present {
        problems.push(format!("{family} chain {chain} is missing"));
    } else if !view.in_order {
        problems.push(format!(
            "{family} chain {chain} is not RETURN rules followed by MASQUERADE rules"
        ));
    }
    match view.jumps {
        0 => problems.push(format!("{family} POSTROUTING has no jump to {chain}")),
        1 => {}
        n => problems.push(format!("{family} POSTROUTING jumps to {chain} {n} times")),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j IP-MASQ-AGENT\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:IP-MASQ-AGENT - [0:0]\n:KUBE-POSTROUTING - [0:0]\n-A POSTROUTING -j KUBE-POSTROUTING\n-A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n-A IP-MASQ-AGENT -m mark --mark 0x2000/0x2000 -j RETURN\n-A IP-MASQ-AGENT -j MASQUERADE --random-fully\nCOMMIT\n";

    #[test]
    fn rules_in_place() {
        let view = rules_view("IPv4", SAVE, "IP-MASQ-AGENT");
        assert!(view.chain_present && view.in_order);
        assert_eq!(
            (view.jumps, view.jump_position, view.postrouting_rules),
            (1, Some(2), 2)
        );
        assert_eq!(view.chain_rules.len(), 2);
        assert!(rule_problems(&view, "IP-MASQ-AGENT").is_empty());
    }

    #[test]
    fn missing_chain_and_jump() {
        let text = "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
        let view = rules_view("IPv4", text, "IP-MASQ-AGENT");
        assert_eq!(
            rule_problems(&view, "IP-MASQ-AGENT"),
            [
                "IPv4 chain IP-MASQ-AGENT is missing",
                "IPv4 POSTROUTING has no jump to IP-MASQ-AGENT"
            ]
        );
    }

    #[test]
    fn rules_out_of_order_and_duplicate_jumps() {
        let text = SAVE
            .replace(
                "-A IP-MASQ-AGENT -m mark --mark 0x2000/0x2000 -j RETURN\n-A IP-MASQ-AGENT -j MASQUERADE --random-fully\n",
                "-A IP-MASQ-AGENT -j MASQUERADE --random-fully\n-A IP-MASQ-AGENT -m mark --mark 0x2000/0x2000 -j RETURN\n",
            )
            + "*nat\n-A POSTROUTING -j IP-MASQ-AGENT\nCOMMIT\n";
        let view = rules_view("IPv6", &text, "IP-MASQ-AGENT");
        assert!(!view.in_order);
        assert_eq!(view.jumps, 2);
        assert_eq!(
            rule_problems(&view, "IP-MASQ-AGENT"),
            [
                "IPv6 chain IP-MASQ-AGENT is not RETURN rules followed by MASQUERADE rules",
                "IPv6 POSTROUTING jumps to IP-MASQ-AGENT 2 times"
            ]
        );
    }

    #[test]
    fn per_protocol_masquerade_rules_are_in_order() {
        let text = SAVE.replace(
            "-A IP-MASQ-AGENT -j MASQUERADE --random-fully\n",
            "-A IP-MASQ-AGENT -p tcp -m statistic --mode random --probability 0.5 -j MASQUERADE --to-ports 1024-29999\n-A IP-MASQ-AGENT -p tcp -j MASQUERADE --to-ports 32768-65535\n-A IP-MASQ-AGENT -j MASQUERADE --random-fully\n",
        );
        let view = rules_view("IPv4", &text, "IP-MASQ-AGENT");
        assert!(view.in_order, "{view:?}");
        let only_returns = SAVE.replace("-A IP-MASQ-AGENT -j MASQUERADE --random-fully\n", "");
        assert!(!rules_view("IPv4", &only_returns, "IP-MASQ-AGENT").in_order);
    }

    #[test]
    fn a_jump_named_in_a_comment_is_no_jump() {
        let text = SAVE.replace(
            "-A POSTROUTING -j KUBE-POSTROUTING\n",
            "-A POSTROUTING -m comment --comment \"see -j IP-MASQ-AGENT below\" -j KUBE-POSTROUTING\n",
        );
        let view = rules_view("IPv4", &text, "IP-MASQ-AGENT");
        assert_eq!((view.jumps, view.jump_position), (1, Some(2)), "{view:?}");
    }
}

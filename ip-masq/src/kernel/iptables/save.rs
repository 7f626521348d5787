//! The one parser of iptables' own listings: `iptables-save` (tables under
//! `*TABLE` headers, chains declared as `:CHAIN POLICY [packets:bytes]`)
//! and `iptables -t TABLE -S` (one table, chains declared as `-P CHAIN
//! POLICY` and `-N CHAIN`). Both print rules as `-A CHAIN …`, which are
//! split into words the way iptables-restore reads them back. Pure.

/// A chain a listing declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chain {
    pub(crate) table: String,
    pub(crate) name: String,
    /// The policy of a built-in chain (`ACCEPT`, `DROP`); `None` for a
    /// user-defined chain.
    pub(crate) policy: Option<String>,
}

/// One `-A CHAIN …` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) table: String,
    pub(crate) chain: String,
    /// The line as the listing printed it, without trailing whitespace.
    pub(crate) text: String,
    /// The line split into words, `-A` and the chain included.
    pub(crate) words: Vec<String>,
}

impl Rule {
    fn target_position(&self) -> Option<usize> {
        self.words
            .iter()
            .position(|word| word == "-j" || word == "-g")
    }

    /// The `-j`/`-g` target and whether it is a goto.
    pub(crate) fn target(&self) -> Option<(&str, bool)> {
        let position = self.target_position()?;
        let target = self.words.get(position + 1)?;
        Some((target, self.words[position] == "-g"))
    }

    /// Words after the target name: the target's options.
    pub(crate) fn target_options(&self) -> &[String] {
        match self.target_position() {
            Some(position) => self.words.get(position + 2..).unwrap_or(&[]),
            None => &[],
        }
    }

    /// Words before the target, without `-A CHAIN` and comments.
    pub(crate) fn matches(&self) -> Vec<&str> {
        let end = self.target_position().unwrap_or(self.words.len());
        let mut out = Vec::new();
        let mut index = 2; // skip `-A CHAIN`
        while index < end {
            let word = self.words[index].as_str();
            if word == "-m" && self.words.get(index + 1).map(String::as_str) == Some("comment") {
                index += 2;
                continue;
            }
            if word == "--comment" {
                index += 2;
                continue;
            }
            out.push(word);
            index += 1;
        }
        out
    }

    /// The text of the rule's (first) `--comment`, unquoted.
    pub(crate) fn comment(&self) -> Option<&str> {
        let position = self.words.iter().position(|word| word == "--comment")?;
        self.words.get(position + 1).map(String::as_str)
    }

    /// The value of `option`, and whether it is negated (`! option value`).
    pub(crate) fn option(&self, option: &str) -> Option<(&str, bool)> {
        let position = self.words.iter().position(|word| word == option)?;
        let negated = position > 0 && self.words[position - 1] == "!";
        Some((self.words.get(position + 1)?.as_str(), negated))
    }
}

/// The chains and rules of a listing, in the order printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dump {
    pub(crate) chains: Vec<Chain>,
    pub(crate) rules: Vec<Rule>,
}

impl Dump {
    /// Parses `iptables-save` output: every table it holds.
    pub(crate) fn parse_save(text: &str) -> Self {
        let mut dump = Self::default();
        let mut table = String::new();
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix('*') {
                name.clone_into(&mut table);
            } else if let Some(declaration) = line.strip_prefix(':') {
                let mut fields = declaration.split_whitespace();
                if let Some(name) = fields.next() {
                    let policy = fields.next().filter(|policy| *policy != "-");
                    dump.declare(&table, name, policy);
                }
            } else {
                dump.rule(&table, line);
            }
        }
        dump
    }

    /// Parses `iptables -t TABLE -S` output.
    pub(crate) fn parse_listing(table: &str, text: &str) -> Self {
        let mut dump = Self::default();
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(declaration) = line.strip_prefix("-P ") {
                let mut fields = declaration.split_whitespace();
                if let Some(name) = fields.next() {
                    dump.declare(table, name, fields.next());
                }
            } else if let Some(declaration) = line.strip_prefix("-N ") {
                if let Some(name) = declaration.split_whitespace().next() {
                    dump.declare(table, name, None);
                }
            } else {
                dump.rule(table, line);
            }
        }
        dump
    }

    fn declare(&mut self, table: &str, name: &str, policy: Option<&str>) {
        self.chains.push(Chain {
            table: table.to_owned(),
            name: name.to_owned(),
            policy: policy.map(str::to_owned),
        });
    }

    fn rule(&mut self, table: &str, line: &str) {
        if !line.starts_with("-A ") {
            return;
        }
        let words = split_words(line);
        if let Some(chain) = words.get(1).cloned() {
            self.rules.push(Rule {
                table: table.to_owned(),
                chain,
                text: line.to_owned(),
                words,
            });
        }
    }

    /// Whether `table` declares `chain`.
    pub(crate) fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.chains
            .iter()
            .any(|declared| declared.table == table && declared.name == chain)
    }

    /// The rules of `table`'s `chain`, in order.
    pub(crate) fn chain_rules(&self, table: &str, chain: &str) -> Vec<&Rule> {
        self.rules
            .iter()
            .filter(|rule| rule.table == table && rule.chain == chain)
            .collect()
    }
}

/// Splits a rule line into words as iptables-restore reads it back.
///
/// iptables prints a value that needs quoting (a comment, a log prefix) in
/// double quotes, with `"`, `\` and `'` escaped by a backslash. That is
/// shell quoting, except that a shell keeps the backslash of `\'` inside
/// double quotes; iptables escapes a `'` only there (any value holding one
/// is quoted), so that escape is dropped first. A line a shell cannot
/// split (an unclosed quote, which iptables never prints) falls back to
/// whitespace, so that its rule is still seen.
pub(crate) fn split_words(line: &str) -> Vec<String> {
    shlex::split(&line.replace("\\'", "'"))
        .unwrap_or_else(|| line.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_iptables_restore() {
        assert_eq!(
            split_words(r#"-A X -m comment --comment "a \"b\" c" -j RETURN"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "a \"b\" c",
                "-j",
                "RETURN"
            ]
        );
        // iptables-save's escapes inside quotes: \" \\ and \'.
        assert_eq!(
            split_words(r#"-A X -m comment --comment "it\'s a \\ \"test\"" -j RETURN"#)[5],
            r#"it's a \ "test""#
        );
        assert_eq!(
            split_words(r#"-A X -m comment --comment "back\\\'slash" -j RETURN"#)[5],
            r"back\'slash"
        );
        // Runs of spaces inside quotes are kept, between words they are not.
        assert_eq!(
            split_words("-A X  -m comment --comment \"two  spaces\"   -j RETURN"),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "two  spaces",
                "-j",
                "RETURN"
            ]
        );
        // A quote iptables would never leave open: split on whitespace.
        assert_eq!(
            split_words("-A X --comment \"open -j RETURN"),
            ["-A", "X", "--comment", "\"open", "-j", "RETURN"]
        );
    }

    #[test]
    fn negation_belongs_to_the_option_after_it() {
        let dump = Dump::parse_listing(
            "nat",
            "-A POSTROUTING ! -d 10.0.0.0/8 -s 10.1.0.0/16 ! -o docker0 -m mark ! --mark 0x4000/0x4000 -j MASQUERADE\n",
        );
        let rule = &dump.rules[0];
        assert_eq!(rule.option("-d"), Some(("10.0.0.0/8", true)));
        assert_eq!(rule.option("-s"), Some(("10.1.0.0/16", false)));
        assert_eq!(rule.option("-o"), Some(("docker0", true)));
        assert_eq!(rule.option("--mark"), Some(("0x4000/0x4000", true)));
        assert_eq!(rule.option("-p"), None);
        assert_eq!(rule.target(), Some(("MASQUERADE", false)));
    }

    #[test]
    fn comments_with_spaces_and_quotes_are_one_word() {
        let text = "-A POSTROUTING -m comment --comment \"say \\\"hi\\\" to -j X\" -s 1.2.3.4/32 -j SNAT --to-source 192.0.2.1 --random\n";
        let dump = Dump::parse_listing("nat", text);
        let rule = &dump.rules[0];
        assert_eq!(rule.comment(), Some("say \"hi\" to -j X"));
        // The -j inside the comment is no target.
        assert_eq!(rule.target(), Some(("SNAT", false)));
        assert_eq!(
            rule.target_options(),
            ["--to-source", "192.0.2.1", "--random"]
        );
        assert_eq!(rule.matches(), ["-s", "1.2.3.4/32"]);
        assert_eq!(rule.text, text.trim_end());
    }

    #[test]
    fn goto_and_rules_without_target() {
        let dump = Dump::parse_listing("nat", "-A A -g B\n-A A -s 10.0.0.0/8\n");
        assert_eq!(dump.rules[0].target(), Some(("B", true)));
        assert_eq!(dump.rules[1].target(), None);
        assert!(dump.rules[1].target_options().is_empty());
        assert_eq!(dump.rules[1].matches(), ["-s", "10.0.0.0/8"]);
    }

    #[test]
    fn listing_declares_chains_with_p_and_n() {
        let text = "-P PREROUTING ACCEPT\n-P POSTROUTING DROP\n-N IP-MASQ-AGENT\n-N OTHER\n-A POSTROUTING -j IP-MASQ-AGENT\n-A IP-MASQ-AGENT -d 10.0.0.0/8 -j RETURN\n-A OTHER -j MASQUERADE\n";
        let dump = Dump::parse_listing("nat", text);
        assert_eq!(
            dump.chains,
            [
                ("PREROUTING", Some("ACCEPT")),
                ("POSTROUTING", Some("DROP")),
                ("IP-MASQ-AGENT", None),
                ("OTHER", None)
            ]
            .map(|(name, policy)| Chain {
                table: "nat".into(),
                name: name.into(),
                policy: policy.map(str::to_owned),
            })
        );
        assert!(dump.has_chain("nat", "IP-MASQ-AGENT"));
        assert!(!dump.has_chain("nat", "IP-MASQ"));
        assert!(!dump.has_chain("filter", "OTHER"));
        let texts: Vec<&str> = dump
            .chain_rules("nat", "IP-MASQ-AGENT")
            .iter()
            .map(|rule| rule.text.as_str())
            .collect();
        assert_eq!(texts, ["-A IP-MASQ-AGENT -d 10.0.0.0/8 -j RETURN"]);
        assert!(dump.rules.iter().all(|rule| rule.table == "nat"));
    }

    #[test]
    fn save_keeps_tables_apart() {
        let text = "# Generated by iptables-save v1.8.9 on Mon Jan  1 00:00:00 2024\n\
            *filter\n:INPUT ACCEPT [10:20]\n:KUBE - [0:0]\n-A INPUT -j KUBE\nCOMMIT\n\
            *nat\n:POSTROUTING ACCEPT [0:0]\n:KUBE - [0:0]\n-A POSTROUTING -j KUBE\n-A KUBE -j MASQUERADE  \nCOMMIT\n\
            # Completed on Mon Jan  1 00:00:00 2024\n";
        let dump = Dump::parse_save(text);
        assert!(dump.has_chain("filter", "INPUT"));
        assert!(!dump.has_chain("filter", "POSTROUTING"));
        assert!(dump.has_chain("nat", "KUBE"));
        assert_eq!(
            dump.chains
                .iter()
                .find(|c| c.name == "INPUT")
                .unwrap()
                .policy
                .as_deref(),
            Some("ACCEPT")
        );
        assert_eq!(
            dump.chains
                .iter()
                .find(|c| c.name == "KUBE")
                .unwrap()
                .policy,
            None
        );
        let nat: Vec<&str> = dump
            .chain_rules("nat", "KUBE")
            .iter()
            .map(|rule| rule.text.as_str())
            .collect();
        assert_eq!(nat, ["-A KUBE -j MASQUERADE"], "trailing spaces trimmed");
        assert_eq!(dump.chain_rules("filter", "INPUT").len(), 1);
        assert_eq!(dump.chain_rules("filter", "KUBE").len(), 0);
        // Comments, COMMIT and headers are no rules.
        assert_eq!(dump.rules.len(), 3);
    }
}

//! The `iptables-save` dumps of every iptables backend of a family, for
//! `status` and `doctor`: both backends' hooks run, so rules in the one the
//! agent does not use still act on its traffic. Saving lists only the
//! tables that exist, so it never creates one.

use crate::error::error_chain;
use crate::kernel::iptables::{
    RulesError,
    runner::{self, Runner, System},
};
use crate::model::Family;

/// One `iptables-save` dump of one family from one backend.
#[derive(Clone, Debug)]
pub(crate) struct Listing {
    /// e.g. `iptables-nft` or `ip6tables-legacy`, for messages and fixes.
    pub(crate) command: String,
    /// Whether this is the backend the agent installs its rules with.
    pub(crate) ours: bool,
    /// The `iptables-save` text.
    pub(crate) text: String,
}

/// The iptables commands of one family: the `-nft` and `-legacy` variants
/// where both exist, else the plain command.
fn commands(runner: &dyn Runner, family: Family) -> Vec<String> {
    let base = family.iptables();
    let variants: Vec<String> = ["nft", "legacy"]
        .iter()
        .map(|variant| format!("{base}-{variant}"))
        .filter(|command| {
            runner::checked(
                runner,
                &format!("{command}-save"),
                &["--version".into()],
                None,
            )
            .is_ok()
        })
        .collect();
    if variants.is_empty() {
        vec![base.to_owned()]
    } else {
        variants
    }
}

/// Which backend the plain `iptables` uses, from its `--version`. Pure.
fn backend_of(version: &str) -> Option<&'static str> {
    if version.contains("nf_tables") {
        Some("nft")
    } else if version.contains("legacy") {
        Some("legacy")
    } else {
        None
    }
}

/// Whether `command` is the backend the plain `iptables` runs. Pure.
fn is_ours(command: &str, backend: Option<&str>) -> bool {
    match backend {
        Some(suffix) => command.ends_with(suffix),
        None => !command.contains('-'),
    }
}

/// `iptables-save` dumps of every backend of `family`, through `runner`.
///
/// # Errors
/// Fails when the backend the agent uses cannot be dumped.
pub(crate) fn save_listings_with(
    runner: &dyn Runner,
    family: Family,
) -> Result<Vec<Listing>, RulesError> {
    let backend = runner::version(runner, family.iptables())
        .ok()
        .and_then(|version| backend_of(&version));
    let mut listings = Vec::new();
    for command in commands(runner, family) {
        let ours = is_ours(&command, backend);
        match runner::checked(runner, &format!("{command}-save"), &[], None) {
            Ok(text) => listings.push(Listing {
                command,
                ours,
                text,
            }),
            Err(err) if ours => return Err(err),
            // The other backend may lack kernel support; nothing runs there then.
            Err(err) => tracing::debug!(error = %error_chain(&err), "skipping {command}"),
        }
    }
    Ok(listings)
}

/// `iptables-save` dumps of every backend of `family`.
///
/// # Errors
/// Fails when the backend the agent uses cannot be dumped.
pub(crate) fn save_listings(family: Family) -> Result<Vec<Listing>, RulesError> {
    save_listings_with(&System, family)
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::kernel::iptables::runner::Output;

    /// A node where `present` commands exist, and plain `iptables` says
    /// `version`; `broken` saves fail.
    #[derive(Debug)]
    struct Node {
        present: &'static [&'static str],
        version: &'static str,
        broken: &'static [&'static str],
    }

    impl Runner for Node {
        fn run(&self, program: &str, args: &[String], _: Option<&str>) -> io::Result<Output> {
            if !self.present.contains(&program) {
                return Err(io::ErrorKind::NotFound.into());
            }
            let stdout = if args.is_empty() {
                format!("# {program}\n*nat\nCOMMIT\n")
            } else if program.ends_with("tables") {
                self.version.to_owned()
            } else {
                "v1.8.9".to_owned()
            };
            let code = i32::from(args.is_empty() && self.broken.contains(&program));
            Ok(Output {
                code: Some(code),
                stdout,
                stderr: String::new(),
            })
        }
    }

    fn summary(listings: &[Listing]) -> Vec<(String, bool)> {
        listings
            .iter()
            .map(|listing| (listing.command.clone(), listing.ours))
            .collect()
    }

    #[test]
    fn both_backends_with_the_default_marked_ours() {
        let node = Node {
            present: &["iptables", "iptables-nft-save", "iptables-legacy-save"],
            version: "iptables v1.8.9 (legacy)",
            broken: &[],
        };
        let listings = save_listings_with(&node, Family::V4).unwrap();
        assert_eq!(
            summary(&listings),
            [
                ("iptables-nft".into(), false),
                ("iptables-legacy".into(), true)
            ]
        );
        assert_eq!(listings[0].text, "# iptables-nft-save\n*nat\nCOMMIT\n");
    }

    #[test]
    fn plain_command_when_no_variant_exists() {
        let node = Node {
            present: &["ip6tables", "ip6tables-save"],
            version: "ip6tables v1.4.21",
            broken: &[],
        };
        let listings = save_listings_with(&node, Family::V6).unwrap();
        assert_eq!(summary(&listings), [("ip6tables".into(), true)]);
    }

    #[test]
    fn only_our_backends_failure_is_an_error() {
        let mut node = Node {
            present: &["iptables", "iptables-nft-save", "iptables-legacy-save"],
            version: "iptables v1.8.9 (nf_tables)",
            broken: &["iptables-legacy-save"],
        };
        assert_eq!(
            summary(&save_listings_with(&node, Family::V4).unwrap()),
            [("iptables-nft".into(), true)]
        );
        node.broken = &["iptables-nft-save"];
        assert!(matches!(
            save_listings_with(&node, Family::V4),
            Err(RulesError::Failed { .. })
        ));
    }
}

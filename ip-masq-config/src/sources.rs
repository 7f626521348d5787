//! Several config files read as one, as Azure's ip-masq-agent-v2 reads
//! every `ip-masq*` file of its config directory: typically a platform
//! ConfigMap and a team one projected into one volume.
//!
//! Each file is read on its own exactly as upstream reads one file, then:
//! - `nonMasqueradeCIDRs` and `masqueradeCIDRs` are unions, in file order
//!   (a file that does not set a list adds nothing to it; when no file sets
//!   `nonMasqueradeCIDRs`, its defaults apply);
//! - the booleans are OR'd, `resyncInterval` is the smallest, and the
//!   smallest `cidrLimit` any file sets applies to the merged list;
//! - a CIDR that one file keeps and another masquerades is an error naming
//!   both files, and any file invalid on its own fails the merge, named.
//!
//! One file merges to exactly what [`crate::parse`] gives for it.

use std::collections::BTreeMap;

use ipnet::IpNet;
use thiserror::Error;

use crate::{ConfigError, MasqConfig, ParseOptions, ParsedConfig, parse_with_limit};

/// One file's name (as shown to people) and what it holds.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name, e.g. `ip-masq-platform`.
    pub name: String,
    /// The file, parsed on its own.
    pub parsed: ParsedConfig,
}

/// The merged configuration and where each CIDR came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergedConfig {
    /// The configuration the files make together.
    pub config: MasqConfig,
    /// Each file's warnings, prefixed with its name.
    pub warnings: Vec<String>,
    /// For every CIDR of either list, the files that list it.
    pub origins: BTreeMap<IpNet, Vec<String>>,
}

/// Why the files cannot be used together.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MergeError {
    /// One file is invalid on its own.
    #[error("{file}: {source}")]
    Invalid {
        /// The file's name.
        file: String,
        /// Why.
        #[source]
        source: ConfigError,
    },
    /// A CIDR both kept and masqueraded.
    #[error(
        "{cidr} is kept by {keep_file} (nonMasqueradeCIDRs) and masqueraded by {masquerade_file} (masqueradeCIDRs); a CIDR cannot be both"
    )]
    Conflict {
        /// The CIDR.
        cidr: IpNet,
        /// The file that keeps it.
        keep_file: String,
        /// The file that masquerades it.
        masquerade_file: String,
    },
    /// The merged list is over the smallest `cidrLimit` a file sets.
    #[error(
        "the files list {count} CIDRs in nonMasqueradeCIDRs together, over cidrLimit {limit} set by {file}"
    )]
    OverLimit {
        /// CIDRs in the merged list.
        count: usize,
        /// The limit.
        limit: i64,
        /// The file that sets it.
        file: String,
    },
    /// No file at all.
    #[error("no config file to read")]
    NoFiles,
}

/// Parses each `(name, bytes)` file and merges them.
///
/// # Errors
/// The first file that is invalid on its own, else as [`merge`].
pub fn parse_sources(
    files: &[(String, Vec<u8>)],
    options: ParseOptions,
    max_bytes: usize,
) -> Result<MergedConfig, MergeError> {
    let parsed = files
        .iter()
        .map(|(name, bytes)| {
            parse_with_limit(bytes, options, max_bytes)
                .map(|parsed| SourceFile {
                    name: name.clone(),
                    parsed,
                })
                .map_err(|source| MergeError::Invalid {
                    file: name.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    merge(&parsed, options)
}

/// Merges files parsed on their own.
///
/// # Errors
/// [`MergeError::Conflict`], [`MergeError::OverLimit`], or no files.
pub fn merge(files: &[SourceFile], options: ParseOptions) -> Result<MergedConfig, MergeError> {
    let first = files.first().ok_or(MergeError::NoFiles)?;
    let mut config = MasqConfig::defaults(options);
    config.resync_interval = first.parsed.config.resync_interval;
    let mut origins: BTreeMap<IpNet, Vec<String>> = BTreeMap::new();
    let mut keep: Vec<IpNet> = Vec::new();
    let mut keep_set = false;
    let mut masquerade: Vec<IpNet> = Vec::new();
    let mut limit: Option<(i64, &str)> = None;
    let mut warnings = Vec::new();
    for file in files {
        let own = &file.parsed.config;
        warnings.extend(
            file.parsed
                .warnings
                .iter()
                .map(|w| format!("{}: {w}", file.name)),
        );
        if !own.non_masquerade_cidrs_defaulted {
            keep_set = true;
            for cidr in &own.non_masquerade_cidrs {
                add(&mut keep, &mut origins, *cidr, &file.name);
            }
        }
        for cidr in &own.masquerade_cidrs {
            add(&mut masquerade, &mut origins, *cidr, &file.name);
        }
        config.masq_link_local |= own.masq_link_local;
        config.masq_link_local_ipv6 |= own.masq_link_local_ipv6;
        config.resync_interval = config.resync_interval.min(own.resync_interval);
        if let Some(own_limit) = own.cidr_limit
            && limit.is_none_or(|(smallest, _)| own_limit < smallest)
        {
            limit = Some((own_limit, &file.name));
        }
    }
    if keep_set {
        config.non_masquerade_cidrs = keep;
        config.non_masquerade_cidrs_defaulted = false;
    } else {
        for cidr in &config.non_masquerade_cidrs {
            origins.entry(*cidr).or_default().push("defaults".into());
        }
    }
    config.masquerade_cidrs = masquerade;
    for cidr in &config.masquerade_cidrs {
        if config.non_masquerade_cidrs.contains(cidr) {
            let listed_by = |list: fn(&MasqConfig) -> &Vec<IpNet>| {
                files
                    .iter()
                    .find(|file| list(&file.parsed.config).contains(cidr))
                    .map_or_else(String::new, |file| file.name.clone())
            };
            return Err(MergeError::Conflict {
                cidr: *cidr,
                keep_file: listed_by(|c| &c.non_masquerade_cidrs),
                masquerade_file: listed_by(|c| &c.masquerade_cidrs),
            });
        }
    }
    config.cidr_limit = limit.map(|(limit, _)| limit);
    if let Some((limit, file)) = limit
        && config.non_masquerade_cidrs.len() as i64 > limit
    {
        return Err(MergeError::OverLimit {
            count: config.non_masquerade_cidrs.len(),
            limit,
            file: file.to_owned(),
        });
    }
    Ok(MergedConfig {
        config,
        warnings,
        origins,
    })
}

fn add(list: &mut Vec<IpNet>, origins: &mut BTreeMap<IpNet, Vec<String>>, cidr: IpNet, file: &str) {
    let files = origins.entry(cidr).or_default();
    if !files.iter().any(|f| f == file) {
        files.push(file.to_owned());
    }
    if !list.contains(&cidr) {
        list.push(cidr);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::parse;

    fn files(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(name, text)| ((*name).to_owned(), text.as_bytes().to_vec()))
            .collect()
    }

    fn merged(list: &[(&str, &str)]) -> Result<MergedConfig, MergeError> {
        parse_sources(
            &files(list),
            ParseOptions::default(),
            crate::MAX_CONFIG_BYTES,
        )
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn one_file_merges_to_what_it_parses_to() {
        for text in [
            "",
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\nresyncInterval: 5s",
            "cidrLimit: 3",
        ] {
            let alone = parse(text.as_bytes(), ParseOptions::default()).unwrap();
            assert_eq!(
                merged(&[("ip-masq-agent", text)]).unwrap().config,
                alone.config,
                "{text:?}"
            );
        }
    }

    #[test]
    fn lists_are_unions_flags_or_and_the_shortest_interval_wins() {
        let result = merged(&[
            ("ip-masq-platform", "nonMasqueradeCIDRs: [10.0.0.0/8, 100.64.0.0/10]\nresyncInterval: 30s"),
            ("ip-masq-team", "nonMasqueradeCIDRs: [192.168.0.0/16, 10.0.0.0/8]\nmasqueradeCIDRs: [10.200.0.0/16]\nmasqLinkLocal: true\nresyncInterval: 1m"),
        ])
        .unwrap();
        assert_eq!(
            result.config.non_masquerade_cidrs,
            nets(&["10.0.0.0/8", "100.64.0.0/10", "192.168.0.0/16"])
        );
        assert_eq!(result.config.masquerade_cidrs, nets(&["10.200.0.0/16"]));
        assert!(result.config.masq_link_local);
        assert_eq!(result.config.resync_interval, Duration::from_secs(30));
        assert_eq!(
            result.origins[&"10.0.0.0/8".parse().unwrap()],
            ["ip-masq-platform", "ip-masq-team"]
        );
        assert_eq!(
            result.origins[&"10.200.0.0/16".parse().unwrap()],
            ["ip-masq-team"]
        );
    }

    #[test]
    fn a_file_without_the_list_adds_nothing_and_defaults_need_no_file_setting_it() {
        let result = merged(&[
            ("ip-masq-a", "nonMasqueradeCIDRs: [10.0.0.0/8]"),
            ("ip-masq-b", "masqLinkLocal: true"),
        ])
        .unwrap();
        assert_eq!(result.config.non_masquerade_cidrs, nets(&["10.0.0.0/8"]));
        let result = merged(&[("ip-masq-a", "masqLinkLocal: true"), ("ip-masq-b", "")]).unwrap();
        assert!(result.config.non_masquerade_cidrs_defaulted);
        assert_eq!(
            result.origins[&"172.16.0.0/12".parse().unwrap()],
            ["defaults"]
        );
    }

    #[test]
    fn a_conflict_names_both_files() {
        let error = merged(&[
            ("ip-masq-platform", "nonMasqueradeCIDRs: [10.0.0.0/8]"),
            (
                "ip-masq-team",
                "nonMasqueradeCIDRs: [192.168.0.0/16]\nmasqueradeCIDRs: [10.0.0.0/8]",
            ),
        ])
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "10.0.0.0/8 is kept by ip-masq-platform (nonMasqueradeCIDRs) and masqueraded by ip-masq-team (masqueradeCIDRs); a CIDR cannot be both"
        );
    }

    #[test]
    fn an_invalid_file_fails_the_merge_with_its_name() {
        let error = merged(&[
            ("ip-masq-ok", "masqLinkLocal: true"),
            ("ip-masq-bad", "nonMasqueradeCIDRs: [10.0.0.1/8]"),
        ])
        .unwrap_err();
        assert!(
            matches!(&error, MergeError::Invalid { file, .. } if file == "ip-masq-bad"),
            "{error}"
        );
        assert!(error.to_string().starts_with("ip-masq-bad: "), "{error}");
    }

    #[test]
    fn the_smallest_limit_applies_to_the_merged_list() {
        let error = merged(&[
            (
                "ip-masq-a",
                "nonMasqueradeCIDRs: [10.0.0.0/8]\ncidrLimit: 1",
            ),
            (
                "ip-masq-b",
                "nonMasqueradeCIDRs: [192.168.0.0/16]\ncidrLimit: 5",
            ),
        ])
        .unwrap_err();
        assert_eq!(
            error,
            MergeError::OverLimit {
                count: 2,
                limit: 1,
                file: "ip-masq-a".into()
            }
        );
    }
}

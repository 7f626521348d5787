//! ip-masq reads every file of the upstream corpus as the real
//! ip-masq-agent read it (`tests/compat/upstream-cases.json`, recorded from
//! upstream's own code; see `tests/compat/README.md`), except where the
//! README's "Differences from ip-masq-agent" says otherwise. Each such
//! difference is a named rule below; any other disagreement fails the test.

use std::{net::IpAddr, time::Duration};

use base64::Engine as _;
use ip_masq_config::{self as config, MasqConfig, ParseOptions};
use serde_json::Value;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/compat/upstream-cases.json"
);

struct Case {
    name: String,
    bytes: Vec<u8>,
    options: ParseOptions,
    upstream: Value,
}

fn corpus() -> Vec<Case> {
    let text = std::fs::read_to_string(CORPUS).expect("read the corpus");
    let cases: Vec<Value> = serde_json::from_str(&text).expect("corpus is JSON");
    cases
        .into_iter()
        .map(|case| Case {
            name: case["name"].as_str().expect("name").to_owned(),
            bytes: base64::engine::general_purpose::STANDARD
                .decode(case["content_b64"].as_str().expect("content"))
                .expect("base64"),
            options: ParseOptions {
                enable_ipv6: case["flags"]["enable_ipv6"].as_bool().expect("flag"),
                nomasq_all_reserved_ranges: case["flags"]["nomasq_all_reserved_ranges"]
                    .as_bool()
                    .expect("flag"),
            },
            upstream: case["upstream"].clone(),
        })
        .collect()
}

/// A CIDR as upstream kept it, in canonical spelling (upstream keeps the
/// text as written: `FD00::/8`, `10.0.0.0/08`).
fn canonical(text: &str) -> String {
    let (address, prefix) = text.split_once('/').expect("upstream validated it");
    let address: IpAddr = address.parse().expect("upstream validated it");
    let prefix: u8 = prefix.parse().expect("upstream validated it");
    format!("{address}/{prefix}")
}

/// Why a disagreement is one the README documents, if it is.
fn documented_difference(
    case: &Case,
    ours: &Result<config::ParsedConfig, config::ConfigError>,
) -> Option<&'static str> {
    let error = case.upstream["error"].as_str().unwrap_or_default();
    match ours {
        // No 64-CIDR default limit: upstream refuses before it looks at
        // the CIDRs, so whatever ip-masq decides on them stands.
        _ if error.contains("the daemon can only accept up to 64 CIDRs") => {
            Some("no 64-CIDR limit")
        }
        Err(err) if err.to_string().contains("IPv4-mapped") => Some("IPv4-mapped CIDRs refused"),
        // A byte-order mark at the start of a later line: go-yaml keeps it
        // in the key, libyaml (which ip-masq's YAML parser follows) skips
        // it and then finds the key out of place.
        Err(config::ConfigError::Syntax { .. })
            if String::from_utf8_lossy(&case.bytes)
                .trim_start_matches('\u{feff}')
                .contains('\u{feff}') =>
        {
            Some("byte-order mark inside the file")
        }
        // Masquerade exceptions: a key upstream does not know, validated here.
        Err(config::ConfigError::Invalid(problems))
            if problems
                .iter()
                .all(|problem| problem.key == "masqueradeCIDRs") =>
        {
            Some("masqueradeCIDRs is validated")
        }
        _ => None,
    }
}

fn compare(case: &Case, ours: &MasqConfig) -> Result<(), String> {
    let expected = &case.upstream["config"];
    let mut wanted: Vec<String> = Vec::new();
    for cidr in expected["nonMasqueradeCIDRs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let cidr = canonical(cidr.as_str().expect("string"));
        if !wanted.contains(&cidr) {
            wanted.push(cidr);
        }
    }
    let got: Vec<String> = ours
        .non_masquerade_cidrs
        .iter()
        .map(ToString::to_string)
        .collect();
    if got != wanted {
        return Err(format!("nonMasqueradeCIDRs {got:?}, upstream {wanted:?}"));
    }
    if ours.masq_link_local != expected["masqLinkLocal"].as_bool().expect("bool") {
        return Err(format!("masqLinkLocal {}", ours.masq_link_local));
    }
    if ours.masq_link_local_ipv6 != expected["masqLinkLocalIPv6"].as_bool().expect("bool") {
        return Err(format!("masqLinkLocalIPv6 {}", ours.masq_link_local_ipv6));
    }
    // Intervals below one second, negative ones included, are raised to it.
    let nanos = expected["resyncInterval"].as_i64().expect("nanoseconds");
    let interval =
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)).max(config::MIN_RESYNC_INTERVAL);
    if ours.resync_interval != interval {
        return Err(format!(
            "resyncInterval {:?}, upstream {nanos}ns",
            ours.resync_interval
        ));
    }
    let limit = expected["cidrLimit"].as_i64().expect("int");
    if ours.cidr_limit.unwrap_or(64) != limit {
        return Err(format!("cidrLimit {:?}, upstream {limit}", ours.cidr_limit));
    }
    Ok(())
}

#[test]
fn every_corpus_file_is_read_as_upstream_reads_it() {
    let cases = corpus();
    assert!(cases.len() >= 300, "the corpus has {} cases", cases.len());
    let mut disagreements = Vec::new();
    let mut documented = std::collections::BTreeMap::<&str, usize>::new();
    for case in &cases {
        let ours = config::parse(&case.bytes, case.options);
        let accepted = case.upstream["accepted"].as_bool().expect("accepted");
        if let Some(reason) = documented_difference(case, &ours) {
            *documented.entry(reason).or_default() += 1;
            continue;
        }
        let outcome = match (&ours, accepted) {
            (Ok(parsed), true) => compare(case, &parsed.config),
            (Err(_), false) => Ok(()),
            (Ok(parsed), false) => Err(format!(
                "accepted ({:?}), upstream refused: {}",
                parsed.config.non_masquerade_cidrs, case.upstream["error"]
            )),
            (Err(err), true) => Err(format!("refused ({err}), upstream accepted")),
        };
        if let Err(why) = outcome {
            disagreements.push(format!("{}: {why}", case.name));
        }
    }
    println!(
        "{} cases, documented differences: {documented:?}",
        cases.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree with upstream:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}

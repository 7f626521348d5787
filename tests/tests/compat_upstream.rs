//! Every file of the upstream corpus (`tests/compat/upstream-cases.json`,
//! recorded from ip-masq-agent's own code, see `tests/compat/README.md`)
//! as a user meets it: written to disk and run through `ip-masq check
//! --json`, then, for the files upstream accepted, loaded into a running
//! agent's maps. The table must hold exactly the destinations upstream's
//! chain RETURNs (from the iptables-restore text upstream wrote), unless a
//! difference the README documents applies. Root (for the agent part).

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use base64::Engine as _;
use lab::{Lab, LabOptions, agent::agent_binary, agent::dump_maps, unique_name, wait_until};
use serde_json::Value;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/upstream-cases.json");

struct Case {
    name: String,
    bytes: Vec<u8>,
    enable_ipv6: bool,
    reserved: bool,
    upstream: Value,
}

fn corpus() -> Vec<Case> {
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(CORPUS).expect("corpus")).expect("JSON");
    cases
        .into_iter()
        .map(|case| Case {
            name: case["name"].as_str().expect("name").to_owned(),
            bytes: base64::engine::general_purpose::STANDARD
                .decode(case["content_b64"].as_str().expect("content"))
                .expect("base64"),
            enable_ipv6: case["flags"]["enable_ipv6"].as_bool().expect("flag"),
            reserved: case["flags"]["nomasq_all_reserved_ranges"]
                .as_bool()
                .expect("flag"),
            upstream: case["upstream"].clone(),
        })
        .collect()
}

impl Case {
    fn flags(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        if self.enable_ipv6 {
            flags.push("--enable-ipv6");
        }
        if self.reserved {
            flags.push("--nomasq-all-reserved-ranges");
        }
        flags
    }

    /// The destinations upstream's chains RETURN, canonical, as
    /// `CIDR keep-source`.
    fn upstream_table(&self) -> BTreeSet<String> {
        let mut table = BTreeSet::new();
        for rules in ["rules_v4", "rules_v6"] {
            let Some(text) = self.upstream[rules].as_str() else {
                continue;
            };
            for line in text.lines().filter(|line| line.ends_with("-j RETURN")) {
                let words: Vec<&str> = line.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "-d").expect("-d CIDR");
                let (address, prefix) = words[at + 1].split_once('/').expect("CIDR");
                let address: IpAddr = address.parse().expect("address");
                let prefix: u8 = prefix.parse().expect("prefix");
                table.insert(format!("{address}/{prefix} keep-source"));
            }
        }
        table
    }

    /// A difference the README documents, if one applies to this file.
    fn documented_difference(&self, ours: &Value) -> Option<&'static str> {
        let error = self.upstream["error"].as_str().unwrap_or_default();
        let our_errors = ours["errors"].to_string();
        if error.contains("the daemon can only accept up to 64 CIDRs") {
            return Some("no 64-CIDR limit");
        }
        if our_errors.contains("IPv4-mapped") {
            return Some("IPv4-mapped CIDRs refused");
        }
        if ours["accepted"] == false
            && ours["errors"].as_array().is_some_and(|errors| {
                errors.iter().all(|e| {
                    e.as_str()
                        .unwrap_or_default()
                        .starts_with("masqueradeCIDRs")
                })
            })
        {
            return Some("masqueradeCIDRs is validated");
        }
        if ours["accepted"] == false
            && String::from_utf8_lossy(&self.bytes)
                .trim_start_matches('\u{feff}')
                .contains('\u{feff}')
        {
            return Some("byte-order mark inside the file");
        }
        None
    }
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn check_json(path: &Path, flags: &[&str]) -> (i32, Value) {
    let output = Command::new(agent_binary())
        .args(["check", "--json", "--max-cidrs", "65536", "--config"])
        .arg(path)
        .args(flags)
        .output()
        .expect("run ip-masq check");
    let document = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "check --json printed no JSON ({err}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().expect("exit code"), document)
}

/// Keep-source rows of `check --json`, as `CIDR keep-source`; masquerade
/// exceptions apart (an ip-masq extension upstream ignores).
fn keep_rows(document: &Value) -> (BTreeSet<String>, usize) {
    let mut keep = BTreeSet::new();
    let mut masquerade = 0;
    for row in document["entries"].as_array().expect("entries") {
        let line = format!(
            "{} {}",
            row["cidr"].as_str().unwrap(),
            row["action"].as_str().unwrap()
        );
        if row["action"] == "keep-source" {
            keep.insert(line);
        } else {
            masquerade += 1;
        }
    }
    (keep, masquerade)
}

fn mentions_masquerade_cidrs(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes)
        .to_lowercase()
        .contains("masqueradecidrs")
        && String::from_utf8_lossy(bytes)
            .to_lowercase()
            .replace("nonmasqueradecidrs", "")
            .contains("masqueradecidrs")
}

#[test]
fn check_json_agrees_with_upstream_on_every_corpus_file() {
    let cases = corpus();
    assert!(cases.len() >= 300);
    let dir = std::env::temp_dir().join(unique_name("ip-masq-corpus-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut disagreements = Vec::new();
    let mut documented = std::collections::BTreeMap::<&str, usize>::new();
    for case in &cases {
        let file = TempFile(dir.join(&case.name));
        std::fs::write(&file.0, &case.bytes).expect("write case");
        let (code, ours) = check_json(&file.0, &case.flags());
        let accepted = case.upstream["accepted"].as_bool().expect("accepted");
        assert_eq!(ours["format"], 1, "{}", case.name);
        assert_eq!(
            code,
            if ours["accepted"] == true { 0 } else { 1 },
            "{}: exit code {code} for {ours}",
            case.name
        );
        if let Some(reason) = case.documented_difference(&ours) {
            *documented.entry(reason).or_default() += 1;
            continue;
        }
        let problem = match (ours["accepted"].as_bool().expect("accepted"), accepted) {
            (true, true) => {
                let (keep, masquerade) = keep_rows(&ours);
                let wanted = case.upstream_table();
                if keep != wanted {
                    Some(format!("table {keep:?}, upstream RETURNs {wanted:?}"))
                } else if masquerade > 0 && !mentions_masquerade_cidrs(&case.bytes) {
                    Some("masquerade entries without masqueradeCIDRs".to_owned())
                } else {
                    None
                }
            }
            (false, false) => None,
            (true, false) => Some(format!(
                "accepted, upstream refused: {}",
                case.upstream["error"]
            )),
            (false, true) => Some(format!("refused ({}), upstream accepted", ours["errors"])),
        };
        if let Some(problem) = problem {
            disagreements.push(format!("{}: {problem}", case.name));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} files, documented differences: {documented:?}",
        cases.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

/// The files upstream accepted, applied by a running agent one after the
/// other: after each, the pinned maps hold exactly upstream's RETURN
/// destinations. A marker table written in between proves each file was
/// read (a file with the same table as the one before would otherwise
/// pass unread).
#[test]
#[ignore = "needs root"]
fn the_loaded_datapath_holds_upstreams_table_for_every_accepted_file() {
    let cases: Vec<Case> = corpus()
        .into_iter()
        .filter(|case| case.upstream["accepted"] == true && !mentions_masquerade_cidrs(&case.bytes))
        .collect();
    let lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    });
    lab.write_config("nonMasqueradeCIDRs: [198.18.0.0/24]\n");
    let _agent = lab.start_agent(&["--enable-ipv6", "--max-config-bytes", "4194304"]);
    let pin_dir = lab.bpffs.pin_dir();
    let mut checked = 0;
    let mut disagreements = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        // Flags are per agent; the IPv4-only cases of the corpus are read
        // with --enable-ipv6 here, which adds only fe80::/10.
        if case.reserved {
            continue;
        }
        // Files whose refusal the README documents stay out.
        let probe = TempFile(lab.config_dir().join(format!("probe-{index}")));
        std::fs::write(&probe.0, &case.bytes).expect("write probe");
        let (_, ours) = check_json(&probe.0, &["--enable-ipv6"]);
        if ours["accepted"] == false && case.documented_difference(&ours).is_some() {
            continue;
        }
        let marker = format!("198.18.{}.0/24", index % 250 + 1);
        lab.write_config(&format!(
            "nonMasqueradeCIDRs: [{marker}]\nmasqLinkLocal: true\nmasqLinkLocalIPv6: true\n"
        ));
        let marker_table = BTreeSet::from([format!("{marker} keep-source")]);
        assert!(
            wait_until(Duration::from_secs(5), || dump_maps(&pin_dir).ok().as_ref()
                == Some(&marker_table)),
            "{}: marker table not applied",
            case.name
        );
        std::fs::write(lab.config_path().with_extension("tmp"), &case.bytes).expect("write");
        std::fs::rename(lab.config_path().with_extension("tmp"), lab.config_path())
            .expect("rename");
        let mut wanted = case.upstream_table();
        if !case.enable_ipv6
            && !case.upstream["config"]["masqLinkLocalIPv6"]
                .as_bool()
                .unwrap_or(false)
        {
            wanted.insert("fe80::/10 keep-source".to_owned());
        }
        let mut last = None;
        let reached = wait_until(Duration::from_secs(5), || {
            last = dump_maps(&pin_dir).ok();
            last.as_ref() == Some(&wanted)
        });
        if !reached {
            disagreements.push(format!("{}: maps {last:?}, upstream {wanted:?}", case.name));
        }
        checked += 1;
    }
    println!("{checked} accepted files loaded into the maps");
    assert!(checked >= 300, "only {checked} files checked");
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

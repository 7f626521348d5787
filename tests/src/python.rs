//! Python tools the tests call as real, independent checkers: the
//! Prometheus text parser and the Kubernetes manifest validator.
//!
//! They live in a virtualenv under the target directory, which
//! `cargo xtask setup` creates (`python3 -m venv target/python-venv`, then
//! `pip install kubernetes-validate prometheus-client`). A missing tool
//! fails the test that needs it with that instruction: a checker that is
//! silently skipped checks nothing.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The virtualenv: `$IP_MASQ_PYTHON_VENV`, else `target/python-venv` in the
/// workspace.
pub fn venv() -> PathBuf {
    if let Some(path) = std::env::var_os("IP_MASQ_PYTHON_VENV") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the lab crate sits in the workspace")
        .join("target")
        .join("python-venv")
}

const SETUP_HINT: &str = "run `cargo xtask setup`, or: python3 -m venv target/python-venv && target/python-venv/bin/pip install kubernetes-validate prometheus-client";

/// A tool installed in the virtualenv's `bin`, panicking when it is missing.
pub fn venv_tool(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing; {SETUP_HINT}",
        path.display()
    );
    path
}

/// The first Python that can import `module`: the virtualenv's, else the
/// system's (Debian's python3-prometheus-client, for example).
pub fn python_with(module: &str) -> PathBuf {
    let candidates = [
        venv().join("bin").join("python"),
        PathBuf::from("/usr/bin/python3"),
        PathBuf::from("python3"),
    ];
    candidates
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", &format!("import {module}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .unwrap_or_else(|| panic!("no Python can import {module}; {SETUP_HINT}"))
}

/// One sample of a scrape: metric name (with its `_total` or `_info`
/// suffix), labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

const PARSE_OPENMETRICS: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        out.append([sample.name, sorted(sample.labels.items()), sample.value])
print(json.dumps(out))
"#;

/// Parses OpenMetrics text with `prometheus_client`'s strict parser, which
/// rejects anything a Prometheus server would.
pub fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let python = python_with("prometheus_client.openmetrics.parser");
    let mut child = Command::new(python)
        .args(["-c", PARSE_OPENMETRICS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("write metrics to python");
    let output = child.wait_with_output().expect("python output");
    assert!(
        output.status.success(),
        "prometheus_client rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_rows(&output.stdout)
        .into_iter()
        .map(|(name, labels, value)| Sample {
            name,
            labels,
            value,
        })
        .collect()
}

/// One row as the parser script prints it: name, label pairs, value.
type Row = (String, Vec<(String, String)>, f64);

fn parse_rows(json: &[u8]) -> Vec<Row> {
    serde_json::from_slice(json).expect("the parser script prints JSON rows")
}

/// The value of the sample `name{labels}`, if the scrape has it.
pub fn sample_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|sample| {
            sample.name == name
                && sample.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|sample| sample.value)
}

//! `deploy/monitoring/prometheus-rules.yaml`: a PrometheusRule whose every
//! alert has the fields Prometheus needs, and whose expressions name only
//! metrics a running agent exports. Root (for the running agent).

use std::collections::BTreeSet;

use lab::{Lab, LabOptions, python};
use serde_json::Value;

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/monitoring/prometheus-rules.yaml"
);

fn rules() -> Value {
    let output = std::process::Command::new(python::python_with("yaml"))
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            RULES,
        ])
        .output()
        .expect("run python");
    serde_json::from_slice(&output.stdout).expect("YAML as JSON")
}

/// `ip_masq_…` names in a PromQL expression.
fn metric_names(expression: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expression;
    while let Some(at) = rest.find("ip_masq_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
#[ignore = "needs root"]
fn every_alert_is_complete_and_names_exported_metrics() {
    let document = rules();
    assert_eq!(document["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(document["kind"], "PrometheusRule");
    let mut used = BTreeSet::new();
    let mut alerts = 0;
    for group in document["spec"]["groups"].as_array().expect("groups") {
        assert!(group["name"].is_string());
        for rule in group["rules"].as_array().expect("rules") {
            alerts += 1;
            assert!(
                rule["alert"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("IpMasq")),
                "{rule}"
            );
            assert!(rule["labels"]["severity"].is_string(), "{rule}");
            assert!(rule["annotations"]["summary"].is_string(), "{rule}");
            let expression = rule["expr"].as_str().expect("expr");
            let names = metric_names(expression);
            assert!(!names.is_empty(), "{expression}");
            used.extend(names);
        }
    }
    assert!(alerts >= 5);

    let lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 0,
        ipv6: false,
    });
    lab.write_config("resyncInterval: 1s\n");
    let _agent = lab.start_agent(&[]);
    // After a resync the SNAT and conntrack series exist too.
    let exported = lab::wait_until(std::time::Duration::from_secs(10), || {
        let (_, body) = lab.node.http_get("127.0.0.1:9483", "/metrics");
        body.contains("ip_masq_conntrack_max")
    });
    assert!(exported, "conntrack metrics after a resync");
    let (_, body) = lab.node.http_get("127.0.0.1:9483", "/metrics");
    let families: BTreeSet<String> = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .flat_map(|family| [family.to_owned(), format!("{family}_total")])
        .collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !families.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics the rules name but the agent does not export: {missing:?}"
    );
}

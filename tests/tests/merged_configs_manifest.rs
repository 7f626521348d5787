//! The `deploy/merged-configs/` overlay: its JSON patch applied to the
//! base DaemonSet gives a DaemonSet that validates against the Kubernetes
//! schemas, projects the three ConfigMaps into /etc/config and passes
//! `--config-dir`; its two sample files pass `ip-masq check --config-dir`.

use std::{path::PathBuf, process::Command};

use lab::{agent::agent_binary, python, unique_name};
use serde_json::Value;

fn deploy() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"))
}

fn yaml_documents(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    let python = python::python_with("yaml");
    let output = Command::new(python)
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run python");
    serde_json::from_slice(&output.stdout).expect("YAML as JSON")
}

#[test]
fn the_overlay_patches_the_daemonset_into_a_valid_merged_config_setup() {
    let base = yaml_documents(&deploy().join("base/ip-masq.yaml"));
    let mut daemonset = base
        .into_iter()
        .find(|object| object["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let patch = yaml_documents(&deploy().join("merged-configs/daemonset-patch.yaml"));
    let operations = patch[0].as_array().expect("a JSON patch");
    let spec = &mut daemonset["spec"]["template"]["spec"];
    assert_eq!(
        spec["volumes"][0]["name"], "config",
        "the patch replaces the config volume"
    );
    assert_eq!(spec["containers"][0]["name"], "ip-masq");
    for operation in operations {
        match (operation["op"].as_str(), operation["path"].as_str()) {
            (Some("replace"), Some("/spec/template/spec/volumes/0")) => {
                spec["volumes"][0] = operation["value"].clone();
            }
            (Some("add"), Some("/spec/template/spec/containers/0/args/-")) => {
                spec["containers"][0]["args"]
                    .as_array_mut()
                    .expect("args")
                    .push(operation["value"].clone());
            }
            other => panic!("unexpected patch operation {other:?}"),
        }
    }
    let sources = spec["volumes"][0]["projected"]["sources"]
        .as_array()
        .expect("projected sources");
    let names: Vec<&str> = sources
        .iter()
        .map(|s| s["configMap"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ip-masq-agent", "ip-masq-platform", "ip-masq-team"]);
    assert!(
        spec["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--config-dir")
    );

    let file = std::env::temp_dir()
        .join(unique_name("ip-masq-merged-ds-"))
        .with_extension("json");
    std::fs::write(&file, serde_json::to_string(&daemonset).unwrap()).unwrap();
    for version in ["1.29", "1.37"] {
        let output = Command::new(python::venv_tool("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file)
            .output()
            .expect("run kubernetes-validate");
        assert!(
            output.status.success(),
            "{version}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let _ = std::fs::remove_file(&file);

    let dir = deploy().join("merged-configs");
    let output = Command::new(agent_binary())
        .args(["check", "--json", "--config"])
        .arg(dir.join("ip-masq-agent"))
        .arg("--config-dir")
        .arg(&dir)
        .output()
        .expect("run check");
    let document: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(document["accepted"], true, "{document}");
    let sources: Vec<String> = document["entries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["sources"].as_array().cloned().unwrap_or_default())
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert!(
        sources.contains(&"ip-masq-platform".to_owned())
            && sources.contains(&"ip-masq-team".to_owned()),
        "{document}"
    );
}

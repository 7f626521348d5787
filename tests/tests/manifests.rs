//! The Kubernetes manifests under deploy/: every object, and what each
//! kustomization renders (with kubectl 1.20's kustomize, the oldest
//! supported, from `cargo xtask k8s build`), validates against the
//! Kubernetes OpenAPI schemas (strict, so unknown fields fail) with the
//! `kubernetes-validate` tool, and the DaemonSet agrees with the binary on
//! paths, ports and flags. The validator and kubectl are required: without
//! them these tests fail with the command that installs them. The real
//! v1.20 API server's validation is in `kubernetes.rs`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use lab::{agent::agent_binary, python};
use serde_json::Value;

/// Oldest and newest Kubernetes versions the manifests must validate for.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("deploy")
}

fn validate(path: &Path, version: &str) -> Output {
    Command::new(python::venv_tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", version])
        .arg(path)
        .output()
        .expect("run kubernetes-validate")
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The YAML files directly in `dir`.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("deploy/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect()
}

/// Every YAML file of deploy/ and deploy/base/ that holds Kubernetes API
/// objects: not the kustomizations (kustomize's, not the API server's).
/// The overlays' patches are fragments: what each kustomization renders is
/// checked whole instead (`KUSTOMIZATIONS`).
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = yaml_files(&deploy_dir())
        .into_iter()
        .chain(yaml_files(&deploy_dir().join("base")))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name != "kustomization.yaml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests under deploy/");
    files
}

/// The kustomizations a user applies with `kubectl apply -k`.
const KUSTOMIZATIONS: [&str; 4] = [".", "least-privilege", "merged-configs", "tc"];

/// kubectl 1.20, the node's, which `cargo xtask k8s build` builds.
fn kubectl() -> PathBuf {
    let kubectl = lab::k8s::Layout::default().kubectl();
    assert!(
        kubectl.is_file(),
        "{} is missing: run `cargo xtask k8s build`",
        kubectl.display()
    );
    kubectl
}

/// What `kubectl kustomize DIR` (kubectl 1.20) renders, in a file.
fn rendered(dir: &str) -> PathBuf {
    let output = Command::new(kubectl())
        .arg("kustomize")
        .arg(deploy_dir().join(dir))
        .output()
        .expect("run kubectl kustomize");
    assert!(output.status.success(), "{}", describe(&output));
    let path = std::env::temp_dir()
        .join(lab::unique_name(&format!(
            "ip-masq-rendered-{}-",
            if dir == "." { "default" } else { dir }.replace('/', "-")
        )))
        .with_extension("yaml");
    std::fs::write(&path, &output.stdout).expect("write");
    path
}

/// Loads every document of a YAML file as JSON, through PyYAML (which
/// `kubernetes-validate` brings along).
fn load_yaml(path: &Path) -> Vec<Value> {
    let python = python::python_with("yaml");
    let output = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path)
        .output()
        .expect("run python");
    assert!(output.status.success(), "{}", describe(&output));
    serde_json::from_slice(&output.stdout).expect("JSON documents")
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let overlays: Vec<PathBuf> = KUSTOMIZATIONS.iter().map(|dir| rendered(dir)).collect();
    for manifest in manifests().into_iter().chain(overlays.iter().cloned()) {
        for version in KUBERNETES_VERSIONS {
            let output = validate(&manifest, version);
            assert!(
                output.status.success(),
                "{} is invalid for Kubernetes {version}: {}",
                manifest.display(),
                describe(&output)
            );
            let documents = load_yaml(&manifest).len();
            let passed = String::from_utf8_lossy(&output.stdout)
                .matches(" passed for resource ")
                .count()
                + String::from_utf8_lossy(&output.stderr)
                    .matches(" passed for resource ")
                    .count();
            assert_eq!(
                passed,
                documents,
                "every document of {} is checked against a schema: {}",
                manifest.display(),
                describe(&output)
            );
        }
    }
    for overlay in overlays {
        std::fs::remove_file(overlay).expect("remove");
    }
}

#[test]
fn the_validator_rejects_a_broken_manifest() {
    // Proves the check above can fail: an unknown field and a wrong type.
    let original = std::fs::read_to_string(deploy_dir().join("base/ip-masq.yaml")).expect("read");
    let broken = original
        .replacen(
            "hostNetwork: true",
            "hostNetwork: true\n      hostNetworking: true",
            1,
        )
        .replacen("periodSeconds: 10", "periodSeconds: ten", 1);
    assert_ne!(broken, original);
    let path = std::env::temp_dir()
        .join(lab::unique_name("ip-masq-broken-"))
        .with_extension("yaml");
    std::fs::write(&path, broken).expect("write");
    let output = validate(&path, KUBERNETES_VERSIONS[1]);
    std::fs::remove_file(&path).expect("remove");
    assert!(!output.status.success(), "{}", describe(&output));
}

#[test]
fn the_sample_configmap_validates_and_the_agent_accepts_its_config() {
    let sample = deploy_dir()
        .join("base")
        .join("agent-config")
        .join("config");
    let config = std::fs::read_to_string(&sample).expect("sample config");
    // What `kubectl create configmap ip-masq-agent --from-file=deploy/base/agent-config` makes.
    let configmap = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ip-masq-agent", "namespace": "kube-system"},
        "data": {"config": config},
    });
    let path = std::env::temp_dir()
        .join(lab::unique_name("ip-masq-configmap-"))
        .with_extension("yaml");
    // JSON is YAML.
    std::fs::write(&path, configmap.to_string()).expect("write");
    let output = validate(&path, KUBERNETES_VERSIONS[1]);
    std::fs::remove_file(&path).expect("remove");
    assert!(output.status.success(), "{}", describe(&output));

    let check = Command::new(agent_binary())
        .args(["check", "--config"])
        .arg(&sample)
        .output()
        .expect("run ip-masq check");
    assert!(check.status.success(), "{}", describe(&check));
    assert!(String::from_utf8_lossy(&check.stdout).contains("valid (file)"));
}

#[test]
fn the_kustomizations_list_every_manifest_and_their_files_exist() {
    let base = &load_yaml(&deploy_dir().join("base/kustomization.yaml"))[0];
    assert_eq!(base["kind"], "Kustomization");
    assert_eq!(base["namespace"], "kube-system");
    let resources: Vec<PathBuf> = base["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| deploy_dir().join("base").join(r.as_str().expect("path")))
        .collect();
    // Every manifest is in the base, but the cleanup DaemonSet, which runs
    // only after the uninstall.
    let expected: Vec<PathBuf> = manifests()
        .into_iter()
        .filter(|path| path != &deploy_dir().join("cleanup.yaml"))
        .collect();
    assert_eq!(resources, expected);
    let generator = &base["configMapGenerator"][0];
    assert_eq!(generator["name"], "ip-masq-agent");
    for file in generator["files"].as_array().expect("files") {
        let file = file.as_str().expect("path");
        // The key is the file name, `config`, as the DaemonSet's items expect.
        assert!(file.ends_with("/config"), "{file}");
        assert!(
            deploy_dir().join("base").join(file).is_file(),
            "{file} missing"
        );
    }
    assert_eq!(base["generatorOptions"]["disableNameSuffixHash"], true);
    // deploy/ and the overlay build on the base, as kubectl 1.20 reads a
    // directory: under `bases`.
    let top = &load_yaml(&deploy_dir().join("kustomization.yaml"))[0];
    assert_eq!(top["bases"], serde_json::json!(["base"]));
    let overlay = &load_yaml(&deploy_dir().join("least-privilege/kustomization.yaml"))[0];
    assert_eq!(overlay["bases"], serde_json::json!(["../base"]));
    for patch in overlay["patchesStrategicMerge"]
        .as_array()
        .expect("patches")
    {
        assert!(
            deploy_dir()
                .join("least-privilege")
                .join(patch.as_str().expect("path"))
                .is_file()
        );
    }
}

/// The container spec of the DaemonSet in a rendered kustomization.
fn rendered_daemonset(dir: &str) -> Value {
    let path = rendered(dir);
    let documents = load_yaml(&path);
    std::fs::remove_file(&path).expect("remove");
    documents
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet")
}

/// The overlay drops privileged: true for the measured capabilities, and
/// changes nothing else but what that needs.
#[test]
fn the_least_privilege_overlay_runs_unprivileged() {
    let default = rendered_daemonset(".");
    let overlay = rendered_daemonset("least-privilege");
    let spec = &overlay["spec"]["template"]["spec"];
    let context = &spec["containers"][0]["securityContext"];
    assert_eq!(context["privileged"], false);
    assert_eq!(context["allowPrivilegeEscalation"], false);
    assert_eq!(context["readOnlyRootFilesystem"], true);
    assert_eq!(context["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(context["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        context["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW", "BPF"])
    );
    // No privileged init container: the host provides the bpffs.
    assert!(
        spec["initContainers"].as_array().is_none_or(Vec::is_empty),
        "{spec:#}"
    );
    // Everything else as in deploy/: args, probes, mounts but the links dir.
    let (a, b) = (
        &default["spec"]["template"]["spec"]["containers"][0],
        &spec["containers"][0],
    );
    for field in [
        "args",
        "image",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
        "ports",
        "resources",
    ] {
        assert_eq!(a[field], b[field], "{field}");
    }
    let mounts = |c: &Value| -> Vec<String> {
        c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| m["mountPath"].as_str().expect("path").to_owned())
            .collect()
    };
    let mut expected = mounts(a);
    expected.push("/usr/local/sbin".into());
    expected.sort();
    let mut got = mounts(b);
    got.sort();
    assert_eq!(got, expected);
}

/// The agent's DaemonSet in deploy/base/ip-masq.yaml.
fn agent_daemonset() -> Value {
    load_yaml(&deploy_dir().join("base/ip-masq.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("the agent's DaemonSet")
}

/// A container's args, checked to be ones the binary accepts (`--help`
/// after them parses them first).
fn parsed_args(container: &Value) -> Vec<String> {
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect();
    let output = Command::new(agent_binary())
        .args(&args)
        .arg("--help")
        .output()
        .expect("run ip-masq");
    assert!(output.status.success(), "{}", describe(&output));
    args
}

/// The DaemonSet and the binary agree: probes hit the metrics listener's
/// health paths, the config lands at the default config path, pins and
/// state at their default directories, and the args parse.
#[test]
fn the_daemonset_matches_the_binary() {
    let documents = load_yaml(&deploy_dir().join("base/ip-masq.yaml"));
    let daemonset = &agent_daemonset();
    let service_account = documents
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .expect("a ServiceAccount");
    assert_eq!(daemonset["metadata"]["namespace"], "kube-system");
    let spec = &daemonset["spec"]["template"]["spec"];
    assert_eq!(
        spec["serviceAccountName"],
        service_account["metadata"]["name"]
    );
    assert_eq!(
        spec["automountServiceAccountToken"], false,
        "no API access needed"
    );
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(
        spec["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    let container = &spec["containers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());

    let args = parsed_args(container);
    assert_eq!(args[0], "run");
    let address = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics-address="))
        .expect("--metrics-address");
    let port: u64 = address
        .rsplit_once(':')
        .expect("host:port")
        .1
        .parse()
        .expect("port");
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], port, "{probe}");
        assert_eq!(
            get["host"], "127.0.0.1",
            "{probe}: the listener is on loopback"
        );
    }
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    let volumes = spec["volumes"].as_array().expect("volumes");
    let mount_of = |path: &str| {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("volume of the mount")
            .clone()
    };
    let config = mount_of("/etc/config");
    assert_eq!(config["configMap"]["name"], "ip-masq-agent");
    assert_eq!(config["configMap"]["optional"], true);
    assert_eq!(
        config["configMap"]["items"],
        serde_json::json!([{"key": "config", "path": "ip-masq-agent"}]),
        "the file lands at the default --config, /etc/config/ip-masq-agent"
    );
    assert_eq!(mount_of("/sys/fs/bpf")["hostPath"]["path"], "/sys/fs/bpf");
    assert_eq!(
        mount_of("/run/xtables.lock")["hostPath"]["path"],
        "/run/xtables.lock"
    );
    assert_eq!(mount_of("/run/ip-masq")["hostPath"]["path"], "/run/ip-masq");
    // Nothing in the image loads kernel modules: no /lib/modules, which
    // would keep the pod from starting on a host without it.
    for volume in volumes {
        assert_ne!(volume["hostPath"]["path"], "/lib/modules", "{volume:#}");
    }

    let defaults = Command::new(agent_binary())
        .args(["run", "--help"])
        .output()
        .expect("help");
    let defaults = String::from_utf8_lossy(&defaults.stdout);
    for default in [
        "/etc/config/ip-masq-agent",
        "/sys/fs/bpf/ip-masq",
        "/run/ip-masq",
    ] {
        assert!(
            defaults.contains(default),
            "`run --help` shows {default}:\n{defaults}"
        );
    }
}

/// The cleanup DaemonSet runs `ip-masq cleanup` where the agent's rules
/// and pins are: the node's network namespace and the agent's own hostPath
/// mounts.
#[test]
fn the_cleanup_daemonset_reaches_what_the_agent_installed() {
    let agent = agent_daemonset();
    let cleanup = load_yaml(&deploy_dir().join("cleanup.yaml"));
    assert_eq!(cleanup.len(), 1);
    let cleanup = &cleanup[0];
    assert_eq!(cleanup["kind"], "DaemonSet");
    assert_eq!(cleanup["metadata"]["namespace"], "kube-system");
    let spec = &cleanup["spec"]["template"]["spec"];
    assert_eq!(
        spec["hostNetwork"], true,
        "the rules live in the node's netns"
    );
    assert_eq!(
        spec["tolerations"],
        serde_json::json!([{"operator": "Exists"}]),
        "every node the agent ran on"
    );
    let container = &spec["initContainers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    assert_eq!(parsed_args(container)[0], "cleanup");

    // The same host paths at the same mount points as the agent.
    let host_paths = |spec: &Value, container: &Value| -> Vec<(String, String)> {
        let volumes = spec["volumes"].as_array().expect("volumes");
        let mut paths: Vec<(String, String)> = container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|mount| {
                let volume = volumes.iter().find(|v| v["name"] == mount["name"])?;
                let host = volume["hostPath"]["path"].as_str()?;
                Some((mount["mountPath"].as_str()?.to_owned(), host.to_owned()))
            })
            .collect();
        paths.sort();
        paths
    };
    let agent_spec = &agent["spec"]["template"]["spec"];
    assert_eq!(
        host_paths(spec, container),
        host_paths(agent_spec, &agent_spec["containers"][0]),
    );
}

/// The image's entry point links `iptables` to the backend the node uses.
/// Run for real inside fresh network namespaces, linking into a temporary
/// directory instead of the image's /usr/local/sbin. Needs root.
#[test]
#[ignore = "needs root"]
fn the_image_entrypoint_picks_the_nodes_iptables_backend() {
    let wrapper = deploy_dir().join("image").join("iptables-wrapper");
    let pick = |setup: &[&[&str]]| -> String {
        let netns = lab::Netns::new("ipm-wrap-");
        for command in setup {
            netns.exec_ok(command[0], &command[1..]);
        }
        let bin_dir = std::env::temp_dir().join(lab::unique_name("ip-masq-wrapper-"));
        std::fs::create_dir_all(&bin_dir).expect("bin dir");
        let link = bin_dir.join("iptables");
        let output = netns.exec(
            "env",
            &[
                &format!("IPTABLES_WRAPPER_BIN_DIR={}", bin_dir.display()),
                "sh",
                wrapper.to_str().expect("utf-8"),
                "readlink",
                link.to_str().expect("utf-8"),
            ],
        );
        for name in ["ip6tables", "ip6tables-restore", "iptables-save"] {
            assert!(bin_dir.join(name).is_symlink(), "{name} linked too");
        }
        std::fs::remove_dir_all(&bin_dir).expect("remove bin dir");
        assert!(output.status.success(), "{}", describe(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    // Nothing anywhere: nf_tables, the default of current distributions.
    assert_eq!(pick(&[]), "/usr/sbin/iptables-nft");
    // Only legacy holds rules: a node whose kubelet and kube-proxy use legacy.
    let legacy_rules: &[&[&str]] = &[
        &[
            "iptables-legacy",
            "-w",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "10.0.0.0/8",
            "-j",
            "RETURN",
        ],
        &[
            "iptables-legacy",
            "-w",
            "-t",
            "filter",
            "-A",
            "FORWARD",
            "-j",
            "ACCEPT",
        ],
    ];
    assert_eq!(pick(legacy_rules), "/usr/sbin/iptables-legacy");
    // kube-proxy's hint chain in nf_tables wins over a larger legacy table.
    let mut hinted = legacy_rules.to_vec();
    hinted.push(&[
        "iptables-nft",
        "-w",
        "-t",
        "mangle",
        "-N",
        "KUBE-IPTABLES-HINT",
    ]);
    assert_eq!(pick(&hinted), "/usr/sbin/iptables-nft");
}

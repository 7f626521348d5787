//! End to end on a real Kubernetes node: deploy/ as the README tells a
//! user (`kubectl apply -k deploy/`, nothing substituted), on a one-node
//! v1.20.2 cluster with kube-proxy (iptables mode), containerd and the CNI
//! bridge and portmap plugins, built from Debian's archive by `cargo xtask
//! k8s build` (see `lab::k8s`). An external namespace beside the node
//! answers every connection with the source it sees.
//!
//! The cases share one node and run in order, each leaving the node as
//! the next expects; the default install first, then the least-privilege
//! overlay, then the migration from ip-masq-agent. The node is started
//! here unless one already runs (`cargo xtask k8s up`), and stopped at the
//! end if it was started here, with a check that nothing is left behind.
//!
//! A custom harness (`harness = false`): filters and `--list` work as
//! with libtest, and the summary line has libtest's format.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use lab::k8s::{
    EXTERNAL_GATEWAY, EXTERNAL_KEEP, EXTERNAL_MASQ, Layout, NODE_IP, NODE_SECONDARY_IP, Node,
    POD_GATEWAY,
    external::{EXTERNAL_PORT, External, Seen},
    kubectl::{flows, in_external, observed_source, tool_pod},
};
use serde_json::{Value, json};

const NS: &str = "kube-system";
const AGENT_SELECTOR: &str = "app.kubernetes.io/name=ip-masq";
const METRICS: &str = "127.0.0.1:9483";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

fn deploy(relative: &str) -> String {
    workspace()
        .join("deploy")
        .join(relative)
        .display()
        .to_string()
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn keep_target() -> SocketAddr {
    SocketAddr::new(ip(EXTERNAL_KEEP), EXTERNAL_PORT)
}

fn masq_target() -> SocketAddr {
    SocketAddr::new(ip(EXTERNAL_MASQ), EXTERNAL_PORT)
}

/// Which kustomization is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// `deploy/`: privileged, the default datapath (xt-bpf).
    Default,
    /// `deploy/least-privilege/`.
    LeastPrivilege,
    /// `deploy/tc/`: the TC classifier on every pod interface.
    Tc,
}

impl Variant {
    fn dir(self) -> String {
        match self {
            Self::Default => deploy(""),
            Self::LeastPrivilege => deploy("least-privilege"),
            Self::Tc => deploy("tc"),
        }
    }

    /// Whether the agent attaches the classifier (`--datapath tc`).
    fn classifies(self) -> bool {
        self == Self::Tc
    }
}

struct Suite {
    node: Node,
    external: External,
    tools: PathBuf,
    installed: Option<Variant>,
    figures: Vec<String>,
}

impl Suite {
    fn figure(&mut self, text: String) {
        println!("figure: {text}");
        self.figures.push(text);
    }

    /// The agent's pod (the DaemonSet has one on the one node).
    fn agent_pod(&self) -> String {
        let pods = self.node.pods(NS, AGENT_SELECTOR);
        assert_eq!(pods.len(), 1, "one agent pod: {pods:?}");
        pods[0].clone()
    }

    fn agent(&self, command: &[&str]) -> std::process::Output {
        let mut full = vec!["ip-masq"];
        full.extend_from_slice(command);
        self.node.exec_in(NS, "ds/ip-masq", &full)
    }

    fn agent_logs(&self) -> String {
        self.node
            .kubectl_ok(&["-n", NS, "logs", "ds/ip-masq", "-c", "ip-masq"])
    }

    /// Installs a variant the README's way and waits for the rollout.
    /// Returns the time from `kubectl apply` to the pod's Ready condition.
    fn install(&mut self, variant: Variant) -> Duration {
        if self.installed == Some(variant) {
            return Duration::ZERO;
        }
        if self.installed.is_some() {
            self.uninstall();
        }
        let started = Instant::now();
        self.node.kubectl_ok(&["apply", "-k", &variant.dir()]);
        self.node.kubectl_ok(&[
            "-n",
            NS,
            "rollout",
            "status",
            "ds/ip-masq",
            "--timeout=120s",
        ]);
        let pod = self.agent_pod();
        self.node
            .wait_pod_ready(NS, &pod, true, Duration::from_secs(120));
        let elapsed = started.elapsed();
        self.installed = Some(variant);
        elapsed
    }

    /// The README's uninstall: delete the DaemonSet, run
    /// deploy/cleanup.yaml at once (it retries while the agent's pod is
    /// still going), delete the rest; returns the cleanup's log.
    fn uninstall(&mut self) -> String {
        self.node
            .kubectl_ok(&["-n", NS, "delete", "ds", "ip-masq", "--ignore-not-found"]);
        let log = self.run_cleanup();
        let dir = self.installed.unwrap_or(Variant::Default).dir();
        self.node
            .kubectl_ok(&["delete", "-k", &dir, "--ignore-not-found"]);
        self.node
            .wait_no_pods(NS, AGENT_SELECTOR, Duration::from_secs(60));
        self.installed = None;
        log
    }

    fn run_cleanup(&self) -> String {
        let cleanup = deploy("cleanup.yaml");
        self.node.kubectl_ok(&["apply", "-f", &cleanup]);
        self.node.kubectl_ok(&[
            "-n",
            NS,
            "rollout",
            "status",
            "ds/ip-masq-cleanup",
            "--timeout=180s",
        ]);
        let log = self.node.kubectl_ok(&[
            "-n",
            NS,
            "logs",
            "-l",
            "app.kubernetes.io/name=ip-masq-cleanup",
            "-c",
            "cleanup",
        ]);
        self.node
            .kubectl_ok(&["delete", "-f", &cleanup, "--wait=true"]);
        self.node.wait_no_pods(
            NS,
            "app.kubernetes.io/name=ip-masq-cleanup",
            Duration::from_secs(60),
        );
        log
    }

    /// Starts a pod running the traffic tool and waits until it runs.
    fn start_tool_pod(&self, name: &str, command: &[&str], host_network: bool) -> Value {
        let pod = tool_pod(name, &self.tools, command, host_network);
        self.node.apply(&pod.to_string());
        self.node
            .wait_pod_ready("default", name, true, Duration::from_secs(60));
        pod
    }

    fn delete_pod(&self, pod: &Value) {
        self.delete_all(&[pod]);
    }

    /// Deletes objects in one `kubectl delete`: the kubelet removes pods
    /// at its next sync, so one wait instead of one per pod.
    fn delete_all(&self, objects: &[&Value]) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.node.delete(&list.to_string());
    }

    /// A prober pod: a new connection to both external hosts every
    /// `every_ms`, forever.
    fn start_prober(&self, name: &str, every_ms: u32) -> (Value, String) {
        let every = every_ms.to_string();
        let keep = keep_target().to_string();
        let masq = masq_target().to_string();
        let pod = self.start_tool_pod(
            name,
            &[&flows(), "run", "--every-ms", &every, &keep, &masq],
            false,
        );
        let pod_ip = self.node.pod_ip("default", name);
        (pod, pod_ip)
    }

    /// The prober's latest totals (it prints them once a second).
    fn prober_report(&self, name: &str) -> Value {
        let logs = self
            .node
            .kubectl_ok(&["-n", "default", "logs", name, "--tail=1"]);
        serde_json::from_str(logs.trim())
            .unwrap_or_else(|err| panic!("prober report {logs:?}: {err}"))
    }

    /// What the source of a pod's connection to `target` was, as the
    /// server reported it (`ipm-flows get` in the pod).
    fn source_from(&self, pod: &str, target: SocketAddr, bind: Option<&str>) -> String {
        let target = target.to_string();
        let mut command = vec![flows(), "get".into(), target];
        if let Some(bind) = bind {
            command.extend(["--bind".into(), bind.to_owned()]);
        }
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        let output = self.node.exec_in("default", pod, &command);
        assert!(
            output.status.success(),
            "{pod} → {command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn readyz(&self) -> (u16, String) {
        self.node
            .http_get(METRICS.parse().expect("address"), "/readyz")
            .expect("the agent's metrics listener answers")
    }

    /// Replaces the ip-masq-agent ConfigMap with `config`, as the README
    /// says: `kubectl create configmap --dry-run=client -o yaml | kubectl
    /// apply -f -`.
    fn set_config(&self, config: &str) {
        let file = self.node.layout().run().join("config-under-test");
        std::fs::write(&file, config).expect("write config");
        let from = format!("--from-file=config={}", file.display());
        let manifest = self.node.kubectl_ok(&[
            "-n",
            NS,
            "create",
            "configmap",
            "ip-masq-agent",
            &from,
            "--dry-run=client",
            "-o",
            "yaml",
        ]);
        self.node.apply(&manifest);
    }

    /// The chain and jump of ours on the node, in both iptables backends.
    fn our_rules(&self) -> Vec<String> {
        self.our_rules_named("IP-MASQ-AGENT")
    }

    /// Lines naming `chain` in the nat table of either backend.
    fn our_rules_named(&self, chain: &str) -> Vec<String> {
        let mut found = Vec::new();
        for save in ["iptables-nft-save", "iptables-legacy-save"] {
            let output = self.node.exec(save, &["-t", "nat"]).expect("iptables-save");
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                if line.contains(chain) {
                    found.push(format!("{save}: {line}"));
                }
            }
        }
        found
    }
}

/// Counts the external hosts' connections from `pod_ip` since `since`, and
/// the wrong ones: to the keep host with any other source, to the
/// masquerade host with any source but the node's.
fn tally(seen: &[Seen], pod_ip: &str, node_ip: &str) -> (u64, Vec<Seen>) {
    let keep = ip(EXTERNAL_KEEP);
    let mut total = 0;
    let mut wrong = Vec::new();
    for s in seen {
        let from_pod = s.source.to_string() == pod_ip;
        let from_node = s.source.to_string() == node_ip;
        if !from_pod && !from_node {
            continue;
        }
        total += 1;
        let right = if s.destination == keep {
            from_pod
        } else {
            from_node
        };
        if !right {
            wrong.push(*s);
        }
    }
    (total, wrong)
}

/// The longest stretch of `[from, to]` without a connection to one of
/// the external hosts.
fn largest_gap(seen: &[Seen], from: SystemTime, to: SystemTime) -> Duration {
    let mut largest = Duration::ZERO;
    for host in [ip(EXTERNAL_KEEP), ip(EXTERNAL_MASQ)] {
        let mut last = from;
        for s in seen.iter().filter(|s| s.destination == host) {
            largest = largest.max(s.at.duration_since(last).unwrap_or_default());
            last = s.at;
        }
        largest = largest.max(to.duration_since(last).unwrap_or_default());
    }
    largest
}

fn secs(since: SystemTime, at: SystemTime) -> f64 {
    at.duration_since(since).map_or(0.0, |d| d.as_secs_f64())
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// --- the cases -------------------------------------------------------------

/// 3.1: Ready through its own probes; status and doctor clean.
fn daemonset_becomes_ready_through_its_probes(suite: &mut Suite, variant: Variant) {
    if suite.installed.is_some() {
        suite.uninstall();
    }
    let to_ready = suite.install(variant);
    suite.figure(format!(
        "{variant:?}: kubectl apply -k to the pod's Ready condition: {:.1} s",
        to_ready.as_secs_f64()
    ));
    let pod = suite.agent_pod();
    let spec = suite.node.get_json(&["-n", NS, "pod", &pod]);
    let container = &spec["spec"]["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert!(
            container[probe]["httpGet"].is_object(),
            "{probe} in the pod: {container:#}"
        );
    }
    let status = &spec["status"]["containerStatuses"][0];
    assert_eq!(status["ready"], true, "{status:#}");
    assert_eq!(status["restartCount"], 0, "{status:#}");
    // Ready as the kubelet saw it is what /readyz says, and the log agrees.
    let (code, body) = suite.readyz();
    assert_eq!(code, 200, "{body}");
    let logs = suite.agent_logs();
    assert_eq!(logs.matches("ready:").count(), 1, "{logs}");
    assert!(!logs.contains("ERROR"), "{logs}");
    // No float noise in the reload line.
    let applied = logs
        .lines()
        .find(|l| l.contains("config applied"))
        .unwrap_or_else(|| panic!("no reload line: {logs}"));
    for field in applied.split_whitespace().filter(|w| w.contains("_ms=")) {
        let value = field.split_once('=').expect("field").1;
        let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "{field} in {applied}");
    }

    let status = suite.agent(&["status"]);
    assert_eq!(
        status.status.code(),
        Some(0),
        "status: {}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("status:        ok"), "{text}");
    // Dates, not raw Unix times.
    assert!(text.contains("applied at 20"), "{text}");
    let doctor = suite.agent(&["doctor"]);
    assert_eq!(
        doctor.status.code(),
        Some(0),
        "doctor: {}",
        String::from_utf8_lossy(&doctor.stdout)
    );
}

/// 3.2: pods on the CNI bridge and host-network clients get the table's
/// decisions.
fn pods_and_host_network_clients_get_the_right_sources(suite: &mut Suite, variant: Variant) {
    suite.install(variant);
    let serve = [flows(), "serve".into(), "8080".into()];
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    let pod = suite.start_tool_pod("ipm-client", &serve, false);
    let host = suite.start_tool_pod("ipm-host-client", &serve, true);
    let pod_ip = suite.node.pod_ip("default", "ipm-client");
    let since = SystemTime::now();
    assert_eq!(suite.source_from("ipm-client", keep_target(), None), pod_ip);
    assert_eq!(
        suite.source_from("ipm-client", masq_target(), None),
        NODE_IP
    );
    // A host-network client on a second node address: kept as itself for
    // a non-masquerade destination, masqueraded to the node IP otherwise.
    let bind = Some(NODE_SECONDARY_IP);
    assert_eq!(
        suite.source_from("ipm-host-client", keep_target(), bind),
        NODE_SECONDARY_IP
    );
    assert_eq!(
        suite.source_from("ipm-host-client", masq_target(), bind),
        NODE_IP
    );
    // The external hosts saw exactly these.
    let seen: BTreeSet<(String, String)> = suite
        .external
        .seen_since(since)
        .iter()
        .map(|s| (s.destination.to_string(), s.source.to_string()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        (EXTERNAL_KEEP, pod_ip.as_str()),
        (EXTERNAL_MASQ, NODE_IP),
        (EXTERNAL_KEEP, NODE_SECONDARY_IP),
    ]
    .iter()
    .map(|(d, s)| ((*d).to_owned(), (*s).to_owned()))
    .collect();
    assert_eq!(seen, expected);
    suite.delete_all(&[&pod, &host]);
}

const SAMPLE_CONFIG: &str = "deploy/base/agent-config/config";

/// 3.3: a ConfigMap edit through the real kubelet changes the decisions;
/// an invalid one keeps them, with the pod Running and not Ready, and one
/// clear error.
fn configmap_changes_reach_the_agent_through_the_kubelet(suite: &mut Suite, variant: Variant) {
    suite.install(variant);
    let (prober, pod_ip) = suite.start_prober("ipm-prober", 50);
    // Both hosts flip: 172.16.0.0/12 leaves the list, 203.0.113.0/24 joins.
    let flipped = "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 203.0.113.0/24\nresyncInterval: 60s\n";
    let applied_at = SystemTime::now();
    suite.set_config(flipped);
    let flipped_ok = |s: &Seen| {
        let source = s.source.to_string();
        if s.destination == ip(EXTERNAL_KEEP) {
            source == NODE_IP
        } else {
            source == pod_ip
        }
    };
    // The new behaviour: from some connection on, every connection.
    let deadline = Instant::now() + Duration::from_secs(90);
    let changed_at = loop {
        let seen = suite.external.seen_since(applied_at);
        let first_wrong_from_end = seen.iter().rposition(|s| !flipped_ok(s));
        let settled = match first_wrong_from_end {
            None => seen.first().copied(),
            Some(index) => seen.get(index + 1).copied(),
        };
        // Settled, and held for at least a second of connections.
        if let Some(first) = settled
            && seen
                .last()
                .is_some_and(|last| secs(first.at, last.at) >= 1.0)
        {
            break first.at;
        }
        assert!(
            Instant::now() < deadline,
            "the new ConfigMap never took effect: {:?}",
            seen.last()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let logs = suite.agent_logs();
    suite.figure(format!(
        "{variant:?}: ConfigMap apply to the new decisions: {:.1} s (the kubelet's syncFrequency is {})",
        secs(applied_at, changed_at),
        lab::k8s::SYNC_FREQUENCY
    ));
    assert!(logs.matches("config applied").count() >= 2, "{logs}");

    // An invalid file: rejected once, the previous table stays.
    let rejected_at = SystemTime::now();
    suite.set_config("nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - not-a-cidr\n");
    let pod = suite.agent_pod();
    suite
        .node
        .wait_pod_ready(NS, &pod, false, Duration::from_secs(90));
    let (code, body) = suite.readyz();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("last config reload failed"), "{body}");
    assert!(body.contains("not-a-cidr"), "{body}");
    let after: Vec<Seen> = suite.external.seen_since(rejected_at);
    assert!(after.len() > 20, "traffic went on: {}", after.len());
    let wrong: Vec<&Seen> = after.iter().filter(|s| !flipped_ok(s)).collect();
    assert!(
        wrong.is_empty(),
        "the refused file changed decisions: {wrong:?}"
    );
    let spec = suite.node.get_json(&["-n", NS, "pod", &pod]);
    assert_eq!(spec["status"]["phase"], "Running");
    assert_eq!(spec["status"]["containerStatuses"][0]["restartCount"], 0);
    let logs = suite.agent_logs();
    let errors: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("config rejected"))
        .collect();
    assert_eq!(errors.len(), 1, "one clear error: {logs}");
    assert!(errors[0].contains("not-a-cidr"), "{}", errors[0]);

    // Back to the sample; Ready again.
    let sample = std::fs::read_to_string(workspace().join(SAMPLE_CONFIG)).expect("sample");
    suite.set_config(&sample);
    suite
        .node
        .wait_pod_ready(NS, &pod, true, Duration::from_secs(90));
    suite.delete_pod(&prober);
}

/// 3.4: `kubectl rollout restart` under a new flow every 20 ms per host:
/// no wrong source, no failed connection, and in tc mode the same tcx
/// links (in xt-bpf mode, none at all).
fn rollout_restart_under_continuous_flows(suite: &mut Suite, variant: Variant) {
    suite.install(variant);
    let links = |suite: &Suite| -> BTreeSet<u64> {
        let output = suite.agent(&["status", "--json"]);
        let status: Value = serde_json::from_slice(&output.stdout).expect("status --json");
        status["links"]
            .as_array()
            .expect("links")
            .iter()
            .filter_map(|l| l["linkId"].as_u64())
            .collect()
    };
    let (prober, pod_ip) = suite.start_prober("ipm-rollout-prober", 20);
    // Wait for the prober's own interface to carry the classifier, and
    // for its first report.
    std::thread::sleep(Duration::from_millis(1500));
    let before = links(suite);
    assert_eq!(!before.is_empty(), variant.classifies(), "{before:?}");
    let old_pod = suite.agent_pod();
    let restart_at = SystemTime::now();
    suite
        .node
        .kubectl_ok(&["-n", NS, "rollout", "restart", "ds/ip-masq"]);
    suite.node.kubectl_ok(&[
        "-n",
        NS,
        "rollout",
        "status",
        "ds/ip-masq",
        "--timeout=120s",
    ]);
    let new_pod = suite.agent_pod();
    assert_ne!(old_pod, new_pod);
    suite
        .node
        .wait_pod_ready(NS, &new_pod, true, Duration::from_secs(60));
    let rolled_at = SystemTime::now();
    // Flows after the new pod is Ready count too.
    std::thread::sleep(Duration::from_secs(2));
    let report = suite.prober_report("ipm-rollout-prober");
    // Adopted, not attached anew: the links the prober's interface had.
    let after = links(suite);
    suite.delete_pod(&prober);
    assert!(
        report["started"].as_f64().expect("started") < unix(restart_at),
        "{report}"
    );
    assert!(
        report["at"].as_f64().expect("at") > unix(rolled_at),
        "{report}"
    );
    let seen = suite.external.seen_since(restart_at);
    let window: Vec<Seen> = seen.into_iter().filter(|s| s.at <= rolled_at).collect();
    let (flows_in_rollout, wrong) = tally(&window, &pod_ip, NODE_IP);
    let mut failed = 0;
    let mut attempts = 0;
    for target in report["targets"].as_object().expect("targets").values() {
        failed += target["failed"].as_u64().expect("failed");
        attempts += target["attempts"].as_u64().expect("attempts");
        assert!(
            target["translated"]
                .as_object()
                .is_some_and(|t| t.len() <= 1),
            "{report}"
        );
    }
    suite.figure(format!(
        "{variant:?}: rollout restart took {:.1} s: {flows_in_rollout} new flows during it, {} with a wrong source, {failed} failed (of {attempts} over the prober's life)",
        secs(restart_at, rolled_at),
        wrong.len()
    ));
    assert!(wrong.is_empty(), "wrong sources: {wrong:?}");
    assert_eq!(failed, 0, "{report}");
    // The flows covered the whole rollout: no pause in which a wrong
    // decision could have gone unseen.
    let gap = largest_gap(&window, restart_at, rolled_at);
    suite.figure(format!(
        "{variant:?}: largest pause between flows to one host during the rollout: {:.0} ms",
        gap.as_secs_f64() * 1000.0
    ));
    assert!(
        gap < Duration::from_secs(1),
        "the prober paused for {gap:?}"
    );
    assert_eq!(after, before, "the same tcx links: {}", suite.agent_logs());
}

/// 3.5: kube-proxy coexistence: Services pod to pod, kube-proxy's own
/// masquerade (hairpin, NodePort), Services with external endpoints decided
/// on the endpoint, hostPort; doctor raises nothing for kube-proxy's or
/// portmap's rules.
fn kube_proxy_services_nodeports_and_hostports_coexist(suite: &mut Suite, variant: Variant) {
    suite.install(variant);
    let serve = [flows(), "serve".into(), "8080".into()];
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    let echo = suite.start_tool_pod("ipm-echo", &serve, false);
    let client = suite.start_tool_pod("ipm-svc-client", &serve, false);
    let mut hostport = tool_pod("ipm-hostport", &suite.tools, &serve, false);
    hostport["spec"]["containers"][0]["ports"] =
        json!([{"containerPort": 8080, "hostPort": 30082, "protocol": "TCP"}]);
    suite.node.apply(&hostport.to_string());
    suite
        .node
        .wait_pod_ready("default", "ipm-hostport", true, Duration::from_secs(60));
    let services = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "ipm-echo", "namespace": "default"},
             "spec": {"type": "NodePort", "selector": {"app": "ipm-echo"},
                      "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30081}]}},
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "ipm-ext-masq", "namespace": "default"},
             "spec": {"ports": [{"port": 80, "targetPort": EXTERNAL_PORT}]}},
            {"apiVersion": "v1", "kind": "Endpoints",
             "metadata": {"name": "ipm-ext-masq", "namespace": "default"},
             "subsets": [{"addresses": [{"ip": EXTERNAL_MASQ}], "ports": [{"port": EXTERNAL_PORT}]}]},
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "ipm-ext-keep", "namespace": "default"},
             "spec": {"ports": [{"port": 80, "targetPort": EXTERNAL_PORT}]}},
            {"apiVersion": "v1", "kind": "Endpoints",
             "metadata": {"name": "ipm-ext-keep", "namespace": "default"},
             "subsets": [{"addresses": [{"ip": EXTERNAL_KEEP}], "ports": [{"port": EXTERNAL_PORT}]}]},
        ],
    });
    suite.node.apply(&services.to_string());
    let cluster_ip = |name: &str| -> SocketAddr {
        let ip = suite.node.kubectl_ok(&[
            "-n",
            "default",
            "get",
            "svc",
            name,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        format!("{ip}:80").parse().expect("ClusterIP")
    };
    let client_ip = suite.node.pod_ip("default", "ipm-svc-client");
    // kube-proxy programs each Service once its endpoints reach it (the
    // manual Endpoints through the EndpointSlice mirroring controller, a
    // little later): wait for each one's first answer.
    let answering = |service: &str| -> SocketAddr {
        let address = cluster_ip(service);
        let target = address.to_string();
        assert!(
            lab::wait_until(Duration::from_secs(30), || {
                suite
                    .node
                    .exec_in("default", "ipm-svc-client", &[&flows(), "get", &target])
                    .status
                    .success()
            }),
            "Service {service} never answered"
        );
        address
    };
    let echo_service = answering("ipm-echo");
    let ext_masq = answering("ipm-ext-masq");
    let ext_keep = answering("ipm-ext-keep");
    // Pod → Service → pod: the client's own address.
    assert_eq!(
        suite.source_from("ipm-svc-client", echo_service, None),
        client_ip
    );
    // Hairpin (the pod reaching itself through its Service): kube-proxy
    // marks it and masquerades it, ip-masq or not.
    assert_eq!(
        suite.source_from("ipm-echo", echo_service, None),
        POD_GATEWAY
    );
    // NodePort from outside: kube-proxy masquerades it too.
    let node_port: SocketAddr = format!("{NODE_IP}:30081").parse().expect("address");
    assert_eq!(
        in_external(move || observed_source(node_port)).as_deref(),
        Ok(POD_GATEWAY)
    );
    // A Service in front of external endpoints is decided on the endpoint.
    assert_eq!(suite.source_from("ipm-svc-client", ext_masq, None), NODE_IP);
    assert_eq!(
        suite.source_from("ipm-svc-client", ext_keep, None),
        client_ip
    );
    // hostPort from outside: DNATed by portmap to the pod, which keeps the
    // client's address (the pod IP is a non-masquerade destination).
    let host_port: SocketAddr = format!("{NODE_IP}:30082").parse().expect("address");
    assert_eq!(
        in_external(move || observed_source(host_port)).as_deref(),
        Ok(EXTERNAL_GATEWAY)
    );
    // With portmap's rules in place (its 0x2000 masquerade mark), kept
    // traffic stays kept.
    let nat = suite
        .node
        .exec_ok("iptables-save", &["-t", "nat"])
        .expect("iptables-save");
    assert!(nat.contains("CNI-HOSTPORT-MASQ"), "portmap's rules: {nat}");
    assert_eq!(
        suite.source_from("ipm-svc-client", keep_target(), None),
        client_ip
    );
    let doctor = suite.agent(&["doctor"]);
    assert_eq!(
        doctor.status.code(),
        Some(0),
        "doctor: {}",
        String::from_utf8_lossy(&doctor.stdout)
    );
    let status = suite.agent(&["status"]);
    assert_eq!(
        status.status.code(),
        Some(0),
        "status: {}",
        String::from_utf8_lossy(&status.stdout)
    );

    let mut objects: Vec<&Value> = services["items"]
        .as_array()
        .expect("items")
        .iter()
        .collect();
    objects.extend([&hostport, &echo, &client]);
    suite.delete_all(&objects);
}

/// Issue items 5 and 6: the CNI bridge plugin's own `ipMasq: true`, run
/// for a scratch sandbox on a second bridge, defeats ip-masq; status says
/// so and doctor names the plugin's network.
fn a_cni_bridge_masquerade_is_reported_by_status_and_named_by_doctor(
    suite: &mut Suite,
    variant: Variant,
) {
    suite.install(variant);
    let layout = suite.node.layout().clone();
    let config = r#"{"cniVersion": "0.4.0", "name": "ipm-defeat", "type": "bridge", "bridge": "cni9", "isGateway": true, "ipMasq": true,
 "ipam": {"type": "host-local", "dataDir": "/run/ipm-defeat-ipam", "ranges": [[{"subnet": "10.245.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}"#;
    let plugin = |command: &str| {
        let mut child = suite
            .node
            .exec_command(layout.cni_bin().join("bridge"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "ipm-defeat")
            .env("CNI_NETNS", "/run/netns/ipm-defeat")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", layout.cni_bin())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the bridge plugin");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(config.as_bytes())
            .expect("config");
        let output = child.wait_with_output().expect("plugin output");
        assert!(
            output.status.success(),
            "bridge {command}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    };
    suite
        .node
        .exec_ok("ip", &["netns", "add", "ipm-defeat"])
        .expect("netns");
    plugin("ADD");
    let tool = suite.tools.join("ipm-flows").display().to_string();
    let target = keep_target().to_string();
    let seen = suite
        .node
        .exec_ok(
            "ip",
            &["netns", "exec", "ipm-defeat", &tool, "get", &target],
        )
        .expect("connection from the sandbox");
    // The defeat is real: a non-masquerade destination sees the node.
    assert_eq!(seen.trim(), NODE_IP);
    let status = suite.agent(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    let doctor = suite.agent(&["doctor", "--json"]);
    let findings: Value = serde_json::from_slice(&doctor.stdout).expect("doctor --json");
    plugin("DEL");
    suite
        .node
        .exec_ok("ip", &["netns", "del", "ipm-defeat"])
        .expect("netns del");
    suite
        .node
        .exec_ok("ip", &["link", "del", "cni9"])
        .expect("bridge del");

    assert_eq!(status.status.code(), Some(1), "{text}");
    assert!(text.contains("[cni-masquerade]"), "{text}");
    assert!(text.contains("ip-masq doctor"), "{text}");
    assert_eq!(doctor.status.code(), Some(1), "{findings:#}");
    let finding = &findings["findings"][0];
    assert_eq!(finding["kind"], "cni-masquerade", "{findings:#}");
    assert!(
        finding["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("\"ipm-defeat\""),
        "{finding:#}"
    );
    assert!(
        finding["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("\"ipMasq\": false"),
        "{finding:#}"
    );
    // Gone with the sandbox: clean again.
    let status = suite.agent(&["status"]);
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
}

/// 3.6: uninstall as the README says leaves no chain, jump, pin, tcx link
/// or state file. With `wrong_namespace_first`, a cleanup from a pod
/// without hostNetwork runs before: it finds no rules, refuses, says so,
/// and leaves the node's rules and pins for the right one.
fn uninstall_leaves_nothing(suite: &mut Suite, variant: Variant, wrong_namespace_first: bool) {
    suite.install(variant);
    assert!(!suite.our_rules().is_empty());
    // The README's steps, with no waiting in between.
    suite
        .node
        .kubectl_ok(&["-n", NS, "delete", "ds", "ip-masq"]);
    suite.installed = None;
    if wrong_namespace_first {
        // Cleanup would refuse while the agent still holds the pins.
        suite
            .node
            .wait_no_pods(NS, AGENT_SELECTOR, Duration::from_secs(60));
        // The same mounts as deploy/cleanup.yaml's, but no hostNetwork.
        let cleanup = std::fs::read_to_string(deploy("cleanup.yaml")).expect("cleanup.yaml");
        let rendered = suite.node.kubectl_stdin(
            &["create", "--dry-run=client", "-o", "json", "-f", "-"],
            &cleanup,
        );
        let documents: Value =
            serde_json::from_slice(&rendered.stdout).expect("cleanup.yaml as JSON");
        let template = &documents["spec"]["template"]["spec"];
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "ipm-cleanup-pod-network", "namespace": NS},
            "spec": {
                "restartPolicy": "Never",
                "containers": [template["initContainers"][0]],
                "volumes": template["volumes"],
            },
        });
        suite.node.apply(&pod.to_string());
        let phase = || {
            suite.node.kubectl_ok(&[
                "-n",
                NS,
                "get",
                "pod",
                "ipm-cleanup-pod-network",
                "-o",
                "jsonpath={.status.phase}",
            ])
        };
        assert!(
            lab::wait_until(Duration::from_secs(60), || matches!(
                phase().as_str(),
                "Succeeded" | "Failed"
            )),
            "the pod-network cleanup did not finish"
        );
        let ended = phase();
        let log = suite
            .node
            .kubectl_ok(&["-n", NS, "logs", "ipm-cleanup-pod-network"]);
        suite.node.delete(&pod.to_string());
        // It refuses (exit 2), says why and where to run it, and claims
        // nothing.
        assert_eq!(ended, "Failed", "{log}");
        assert!(
            log.contains("no chain IP-MASQ-AGENT and no jump to it in this network namespace"),
            "{log}"
        );
        assert!(log.contains("hostNetwork: true"), "{log}");
        assert!(log.contains("Nothing removed"), "{log}");
        assert!(!log.contains("removed IPv4 chain"), "{log}");
        // Truthful: the node's rules and pins are all still there.
        assert!(!suite.our_rules().is_empty());
        let pins = suite.node.exec("ls", &["/sys/fs/bpf/ip-masq"]).expect("ls");
        assert!(String::from_utf8_lossy(&pins.stdout).contains("NON_MASQ_V4"));
    }
    let log = suite.run_cleanup();
    suite
        .node
        .kubectl_ok(&["delete", "-k", &variant.dir(), "--ignore-not-found"]);
    assert!(
        log.contains("removed IPv4 chain IP-MASQ-AGENT and its jump"),
        "{log}"
    );
    assert!(
        log.contains("removed the pin directory /sys/fs/bpf/ip-masq"),
        "{log}"
    );
    assert!(log.contains("removed state file"), "{log}");
    assert_eq!(suite.our_rules(), Vec::<String>::new());
    let pins = suite.node.exec("ls", &["/sys/fs/bpf"]).expect("ls");
    assert!(
        !String::from_utf8_lossy(&pins.stdout).contains("ip-masq"),
        "pins left"
    );
    let state = suite.node.exec("ls", &["-A", "/run/ip-masq"]).expect("ls");
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "",
        "state left"
    );
    // No tcx program on any interface of the node.
    let links = suite
        .node
        .exec_ok("ip", &["-o", "link", "show"])
        .expect("links");
    for name in links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
    {
        let programs = tcx_programs(&name);
        assert!(programs.is_empty(), "{name} still runs {programs:?}");
    }
}

/// Program ids at tcx ingress of an interface of the node.
fn tcx_programs(interface: &str) -> Vec<u32> {
    let interface = interface.to_owned();
    std::thread::spawn(move || {
        lab::netns::enter_netns(&Path::new("/run/netns").join(lab::k8s::NODE_NETNS));
        match aya::programs::SchedClassifier::query_tcx(
            &interface,
            aya::programs::TcAttachType::Ingress,
        ) {
            Ok((_, programs)) => programs
                .iter()
                .map(aya::programs::ProgramInfo::id)
                .collect(),
            Err(_) => Vec::new(),
        }
    })
    .join()
    .expect("query thread")
}

/// 3.7: from ip-masq-agent (its manifest, a stand-in writing its exact
/// rules) to ip-masq as the README's migration says, under traffic: no
/// failed connection, no wrong source.
fn migration_from_ip_masq_agent_under_traffic(suite: &mut Suite) {
    if suite.installed.is_some() {
        suite.uninstall();
    }
    std::fs::copy(
        workspace().join("tests/k8s/ip-masq-agent-standin.sh"),
        suite.tools.join("ip-masq-agent-standin.sh"),
    )
    .expect("stand-in script");
    let upstream = std::fs::read_to_string(workspace().join("tests/k8s/ip-masq-agent.yaml"))
        .expect("upstream manifest")
        .replace("TOOLS_DIR", &suite.tools.display().to_string());
    // The ConfigMap upstream's README has users create.
    let sample = workspace().join("deploy/base/agent-config");
    let from = format!("--from-file={}", sample.display());
    let configmap = suite.node.kubectl_ok(&[
        "-n",
        NS,
        "create",
        "configmap",
        "ip-masq-agent",
        &from,
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    suite.node.apply(&configmap);
    suite.node.apply(&upstream);
    assert!(
        lab::wait_until(Duration::from_secs(60), || suite
            .our_rules()
            .iter()
            .any(|r| r.contains("-d 10.0.0.0/8"))),
        "the stand-in wrote no chain: {:?}",
        suite.our_rules()
    );
    let (prober, pod_ip) = suite.start_prober("ipm-migration-prober", 20);
    std::thread::sleep(Duration::from_secs(2));
    let swap_at = SystemTime::now();
    // The README's step 3.
    suite
        .node
        .kubectl_ok(&["-n", NS, "delete", "ds", "ip-masq-agent"]);
    let to_ready = suite.install(Variant::Default);
    let done_at = SystemTime::now();
    std::thread::sleep(Duration::from_secs(2));
    let report = suite.prober_report("ipm-migration-prober");
    suite.delete_pod(&prober);
    let window: Vec<Seen> = suite
        .external
        .seen_since(swap_at)
        .into_iter()
        .filter(|s| s.at <= done_at)
        .collect();
    let (flows_in_swap, wrong) = tally(&window, &pod_ip, NODE_IP);
    let failed: u64 = report["targets"]
        .as_object()
        .expect("targets")
        .values()
        .map(|t| t["failed"].as_u64().expect("failed"))
        .sum();
    suite.figure(format!(
        "migration: swap took {:.1} s (ip-masq Ready {:.1} s after its apply): {flows_in_swap} new flows, {} with a wrong source, {failed} failed",
        secs(swap_at, done_at),
        to_ready.as_secs_f64(),
        wrong.len()
    ));
    assert!(wrong.is_empty(), "{wrong:?}");
    assert_eq!(failed, 0, "{report}");
    let gap = largest_gap(&window, swap_at, done_at);
    assert!(
        gap < Duration::from_secs(1),
        "the prober paused for {gap:?}"
    );
    // ip-masq's chain replaced upstream's; upstream's jump kept, once.
    suite
        .node
        .wait_no_pods(NS, "k8s-app=ip-masq-agent", Duration::from_secs(60));
    let rules = suite.our_rules();
    assert!(
        !rules.iter().any(|r| r.contains("-d 10.0.0.0/8")),
        "{rules:?}"
    );
    assert_eq!(
        rules
            .iter()
            .filter(|r| r.contains("-A POSTROUTING"))
            .count(),
        1,
        "{rules:?}"
    );
    let doctor = suite.agent(&["doctor"]);
    assert_eq!(
        doctor.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&doctor.stdout)
    );
    suite.uninstall();
}

/// The least-privilege overlay runs without privileged: true, with the
/// capabilities it declares and no others.
fn least_privilege_runs_unprivileged(suite: &mut Suite) {
    suite.install(Variant::LeastPrivilege);
    let pod = suite.agent_pod();
    let spec = suite.node.get_json(&["-n", NS, "pod", &pod]);
    let context = &spec["spec"]["containers"][0]["securityContext"];
    assert_eq!(context["privileged"], false, "{context:#}");
    assert_eq!(context["allowPrivilegeEscalation"], false, "{context:#}");
    assert_eq!(context["readOnlyRootFilesystem"], true, "{context:#}");
    assert_eq!(
        context["seccompProfile"]["type"], "RuntimeDefault",
        "{context:#}"
    );
    // What the kernel gave the process: exactly the declared capabilities.
    let status = suite
        .node
        .exec_in(NS, "ds/ip-masq", &["cat", "/proc/1/status"]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let field = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {status}"));
        u64::from_str_radix(line.split_whitespace().nth(1).expect("value"), 16).expect("hex")
    };
    const NET_ADMIN: u64 = 1 << 12;
    const NET_RAW: u64 = 1 << 13;
    const BPF: u64 = 1 << 39;
    assert_eq!(field("CapEff:"), NET_ADMIN | NET_RAW | BPF, "{status}");
    assert_eq!(field("CapBnd:"), NET_ADMIN | NET_RAW | BPF, "{status}");
    assert_eq!(field("NoNewPrivs:"), 1, "{status}");
    assert_eq!(field("Seccomp:"), 2, "filtered: {status}");
}

/// The overlay's capabilities are each needed: the agent started with one
/// of them dropped does not become ready (measured on the node, the same
/// way the list was found).
fn each_least_privilege_capability_is_needed(suite: &mut Suite) {
    let mut measured = BTreeMap::new();
    for (dropped, backend) in [
        ("NET_ADMIN", "nft"),
        ("BPF", "nft"),
        ("NET_RAW", "legacy"),
        ("", "nft"),
        ("", "legacy"),
    ] {
        let ready = run_agent_with_caps(suite, dropped, backend);
        measured.insert(
            format!(
                "without {} ({backend})",
                if dropped.is_empty() {
                    "nothing"
                } else {
                    dropped
                }
            ),
            ready,
        );
    }
    suite.figure(format!(
        "least privilege: agent ready with the overlay's capabilities minus one: {measured:?}"
    ));
    assert!(measured["without nothing (nft)"], "{measured:?}");
    assert!(measured["without nothing (legacy)"], "{measured:?}");
    assert!(!measured["without NET_ADMIN (nft)"], "{measured:?}");
    assert!(!measured["without BPF (nft)"], "{measured:?}");
    assert!(!measured["without NET_RAW (legacy)"], "{measured:?}");
}

/// Runs the agent in a pod shaped like the least-privilege overlay's, on
/// a pin path and chain of its own, minus one capability, with the given
/// iptables backend; whether it became ready.
fn run_agent_with_caps(suite: &Suite, dropped: &str, backend: &str) -> bool {
    let caps: Vec<&str> = ["NET_ADMIN", "NET_RAW", "BPF"]
        .into_iter()
        .filter(|c| *c != dropped)
        .collect();
    let name = format!(
        "ipm-caps-{}-{backend}",
        if dropped.is_empty() {
            "all".to_owned()
        } else {
            dropped.to_lowercase().replace('_', "-")
        }
    );
    let iptables = format!("/usr/sbin/iptables-{backend}");
    let script = format!(
        "mkdir -p /tmp/bin && for c in iptables iptables-save iptables-restore; do ln -s ${{c/iptables/{iptables}}} /tmp/bin/$c; done; \
         PATH=/tmp/bin:$PATH exec /usr/local/bin/ip-masq run --pin-path /sys/fs/bpf/{name} --masq-chain IPM-CAPS --state-dir /tmp --metrics-address 127.0.0.1:9484 --config /nonexistent"
    );
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "hostNetwork": true,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "agent",
                "image": "ip-masq:latest",
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/bash", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": caps},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "readinessProbe": {"httpGet": {"host": "127.0.0.1", "path": "/readyz", "port": 9484}, "periodSeconds": 1},
                "volumeMounts": [{"name": "bpffs", "mountPath": "/sys/fs/bpf", "mountPropagation": "HostToContainer"}],
            }],
            "volumes": [{"name": "bpffs", "hostPath": {"path": "/sys/fs/bpf", "type": "Directory"}}],
        },
    });
    suite.node.apply(&pod.to_string());
    // Ready, or gone: the agent exits at once when the kernel refuses it
    // something it needs.
    let phase = |suite: &Suite| {
        suite
            .node
            .kubectl(&[
                "-n",
                NS,
                "get",
                "pod",
                &name,
                "-o",
                "jsonpath={.status.phase}",
            ])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    lab::wait_until(Duration::from_secs(30), || {
        suite.node.pod_ready(NS, &name) == Some(true)
            || matches!(phase(suite).as_str(), "Failed" | "Succeeded")
    });
    let ready = suite.node.pod_ready(NS, &name) == Some(true);
    let logs = suite
        .node
        .kubectl(&["-n", NS, "logs", &name])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    println!(
        "  {name}: ready={ready}: {}",
        logs.lines()
            .filter(|l| l.contains("ERROR") || l.contains("error"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    suite.node.delete(&pod.to_string());
    // Its own cleanup, privileged, so that nothing of it stays.
    let cleanup = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{name}-cleanup"), "namespace": NS},
        "spec": {
            "hostNetwork": true,
            "restartPolicy": "Never",
            "containers": [{
                "name": "cleanup",
                "image": "ip-masq:latest",
                "imagePullPolicy": "IfNotPresent",
                // With the agent's backend. An agent that never got its
                // rules in (the capability it lacks) left only pins, and
                // cleanup, finding no rules, refuses to touch them.
                "command": ["/bin/bash", "-c", format!(
                    "mkdir -p /tmp/bin && for c in iptables iptables-save iptables-restore; do ln -s ${{c/iptables/{iptables}}} /tmp/bin/$c; done; \
                     PATH=/tmp/bin:$PATH /usr/local/bin/ip-masq cleanup --pin-path /sys/fs/bpf/{name} --masq-chain IPM-CAPS --state-dir /tmp \
                     || rm -r /sys/fs/bpf/{name}")],
                "securityContext": {"privileged": true},
                "volumeMounts": [{"name": "bpffs", "mountPath": "/sys/fs/bpf", "mountPropagation": "HostToContainer"}],
            }],
            "volumes": [{"name": "bpffs", "hostPath": {"path": "/sys/fs/bpf", "type": "Directory"}}],
        },
    });
    suite.node.apply(&cleanup.to_string());
    let cleanup_name = format!("{name}-cleanup");
    let done = lab::wait_until(Duration::from_secs(30), || {
        suite
            .node
            .kubectl(&[
                "-n",
                NS,
                "get",
                "pod",
                &cleanup_name,
                "-o",
                "jsonpath={.status.phase}",
            ])
            .is_ok_and(|o| o.stdout == b"Succeeded")
    });
    assert!(
        done,
        "cleanup of {name}: {:?}",
        suite
            .node
            .kubectl(&["-n", NS, "logs", &cleanup_name])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    );
    suite.node.delete(&cleanup.to_string());
    let left: Vec<String> = suite
        .our_rules_named("IPM-CAPS")
        .into_iter()
        .chain(
            suite
                .node
                .exec("ls", &["/sys/fs/bpf"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&name))
                .map(str::to_owned),
        )
        .collect();
    assert!(left.is_empty(), "{name} left: {left:?}");
    ready
}

/// Every manifest passes the v1.20 API server's own validation (kubectl
/// 1.20 checks each field against the server's schema, the server admits
/// the objects without storing them), and a manifest with an unknown field
/// does not: the check can fail.
fn manifests_pass_the_1_20_api_servers_validation(suite: &mut Suite) {
    for (flag, path) in [
        ("-k", deploy("")),
        ("-k", deploy("least-privilege")),
        ("-k", deploy("tc")),
        ("-f", deploy("cleanup.yaml")),
    ] {
        let output = suite
            .node
            .kubectl(&["apply", "--dry-run=server", "--validate=true", flag, &path])
            .expect("kubectl");
        assert!(
            output.status.success(),
            "{path}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let original = std::fs::read_to_string(deploy("base/ip-masq.yaml")).expect("manifest");
    let broken = original.replacen(
        "hostNetwork: true",
        "hostNetwork: true\n      hostNetworking: true",
        1,
    );
    assert_ne!(broken, original);
    let output = suite.node.kubectl_stdin(
        &["apply", "--dry-run=server", "--validate=true", "-f", "-"],
        &broken,
    );
    assert!(!output.status.success(), "an unknown field passed");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("hostNetworking"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// --- the harness -----------------------------------------------------------

type CaseFn = Box<dyn Fn(&mut Suite)>;
/// A case that runs for one install variant.
type VariantCase = fn(&mut Suite, Variant);

/// The cases that run once for each variant, in order, named
/// `default::NAME`, `least_privilege::NAME` and `tc::NAME`.
const PER_VARIANT: [(&str, VariantCase); 6] = [
    (
        "daemonset_becomes_ready_through_its_probes",
        daemonset_becomes_ready_through_its_probes,
    ),
    (
        "pods_and_host_network_clients_get_the_right_sources",
        pods_and_host_network_clients_get_the_right_sources,
    ),
    (
        "configmap_changes_reach_the_agent_through_the_kubelet",
        configmap_changes_reach_the_agent_through_the_kubelet,
    ),
    (
        "rollout_restart_under_continuous_flows",
        rollout_restart_under_continuous_flows,
    ),
    (
        "kube_proxy_services_nodeports_and_hostports_coexist",
        kube_proxy_services_nodeports_and_hostports_coexist,
    ),
    (
        "a_cni_bridge_masquerade_is_reported_by_status_and_named_by_doctor",
        a_cni_bridge_masquerade_is_reported_by_status_and_named_by_doctor,
    ),
];

fn per_variant(prefix: &str, variant: Variant) -> impl Iterator<Item = (String, CaseFn)> + '_ {
    PER_VARIANT.into_iter().map(move |(name, case)| {
        let run: CaseFn = Box::new(move |suite| case(suite, variant));
        (format!("{prefix}::{name}"), run)
    })
}

fn cases() -> Vec<(String, CaseFn)> {
    let single = |name: &str, case: CaseFn| (name.to_owned(), case);
    let mut cases = vec![single(
        "manifests_pass_the_1_20_api_servers_validation",
        Box::new(manifests_pass_the_1_20_api_servers_validation),
    )];
    cases.extend(per_variant("default", Variant::Default));
    cases.push(single(
        "default::uninstall_leaves_nothing",
        Box::new(|s| uninstall_leaves_nothing(s, Variant::Default, false)),
    ));
    cases.push(single(
        "least_privilege::runs_unprivileged",
        Box::new(least_privilege_runs_unprivileged),
    ));
    cases.push(single(
        "least_privilege::each_capability_is_needed",
        Box::new(each_least_privilege_capability_is_needed),
    ));
    cases.extend(per_variant("least_privilege", Variant::LeastPrivilege));
    cases.push(single(
        "least_privilege::uninstall_from_the_pod_network_then_as_the_readme_says",
        Box::new(|s| uninstall_leaves_nothing(s, Variant::LeastPrivilege, true)),
    ));
    cases.extend(per_variant("tc", Variant::Tc));
    cases.push(single(
        "tc::uninstall_leaves_nothing",
        Box::new(|s| uninstall_leaves_nothing(s, Variant::Tc, false)),
    ));
    cases.push(single(
        "migration_from_ip_masq_agent_under_traffic",
        Box::new(migration_from_ip_masq_agent_under_traffic),
    ));
    cases
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".into())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let exact = args.iter().any(|a| a == "--exact");
    let all = cases();
    let selected: Vec<&(String, CaseFn)> = all
        .iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| if exact { name == f } else { name.contains(f) })
        })
        .collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filtered_out = all.len() - selected.len();
    let started = Instant::now();
    println!(
        "\nrunning {} tests",
        selected.len() + usize::from(!selected.is_empty())
    );
    if selected.is_empty() {
        println!(
            "\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in 0.00s\n"
        );
        return ExitCode::SUCCESS;
    }
    assert!(
        lab::is_root(),
        "the Kubernetes tests run a node in namespaces: run them as root"
    );
    let layout = Layout::default();
    let mut failed = Vec::new();
    let mut passed = 0;
    let node_start = Instant::now();
    let node = match Node::start_or_attach(&layout) {
        Ok(node) => node,
        Err(err) => {
            println!("test node_starts ... FAILED\n\n{err}\n");
            println!(
                "\ntest result: FAILED. 0 passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
                selected.len() + 1,
                started.elapsed().as_secs_f64()
            );
            return ExitCode::FAILURE;
        }
    };
    let owned = node.is_owned();
    let image = workspace().join("target/image/ip-masq.tar");
    let prepared = (|| -> Result<Suite, String> {
        if !image.is_file() {
            return Err(format!(
                "{} is missing: run `cargo xtask image`",
                image.display()
            ));
        }
        node.import_image(&image).map_err(|e| e.to_string())?;
        let tools = node.install_tools(Path::new(env!("CARGO_BIN_EXE_ipm-flows")));
        let external =
            External::start(&[ip(EXTERNAL_KEEP), ip(EXTERNAL_MASQ)]).map_err(|e| e.to_string())?;
        Ok(Suite {
            node,
            external,
            tools,
            installed: None,
            figures: Vec::new(),
        })
    })();
    let mut suite = match prepared {
        Ok(suite) => suite,
        Err(err) => {
            println!("test node_starts ... FAILED\n\n{err}\n");
            return ExitCode::FAILURE;
        }
    };
    let up = node_start.elapsed();
    suite.figure(format!(
        "node start and image import: {:.1} s",
        up.as_secs_f64()
    ));
    // Whatever a previous run left installed goes first.
    let leftover = suite
        .node
        .kubectl_ok(&["-n", NS, "get", "ds", "-o", "name"]);
    if leftover.contains("ip-masq") {
        suite.installed = Some(Variant::Default);
        suite.node.kubectl_ok(&[
            "-n",
            NS,
            "delete",
            "ds",
            "ip-masq-agent",
            "ip-masq-cleanup",
            "--ignore-not-found",
        ]);
        suite.uninstall();
    }
    for (name, case) in selected {
        let case_started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| case(&mut suite)));
        match result {
            Ok(()) => {
                passed += 1;
                println!(
                    "test {name} ... ok ({:.1} s)",
                    case_started.elapsed().as_secs_f64()
                );
            }
            Err(payload) => {
                println!(
                    "test {name} ... FAILED ({:.1} s)",
                    case_started.elapsed().as_secs_f64()
                );
                failed.push((name.to_owned(), panic_message(&*payload)));
                // The next case starts from a fresh install.
                let _ = suite.node.kubectl(&[
                    "delete",
                    "pods",
                    "-n",
                    "default",
                    "-l",
                    "ipm-test=true",
                    "--wait=true",
                ]);
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    suite.installed = Some(Variant::Default);
                    suite.uninstall();
                }));
            }
        }
    }
    let figures = std::mem::take(&mut suite.figures);
    let Suite { node, external, .. } = suite;
    drop(external);
    // Stopping the node is a test of its own: nothing may be left.
    if owned {
        match node.stop() {
            Ok(_) => {
                passed += 1;
                println!("test the_node_leaves_nothing_behind ... ok");
            }
            Err(err) => {
                println!("test the_node_leaves_nothing_behind ... FAILED");
                failed.push(("the_node_leaves_nothing_behind".to_owned(), err.to_string()));
            }
        }
    } else {
        node.detach();
        passed += 1;
        println!(
            "test the_node_leaves_nothing_behind ... ok (node started elsewhere: left running)"
        );
    }
    println!();
    for figure in &figures {
        println!("figure: {figure}");
    }
    if !failed.is_empty() {
        println!("\nfailures:\n");
        for (name, message) in &failed {
            println!("---- {name} ----\n{message}\n");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

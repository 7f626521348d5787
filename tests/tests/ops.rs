//! Operations on the real kernel: the metrics and health endpoints, and the
//! `status`, `dump`, `doctor` and `cleanup` commands, each against an agent
//! running in a lab's node namespace. Needs root.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Output,
    time::{Duration, Instant},
};

use lab::{
    Lab, LabOptions, Netns, Pod,
    agent::{dump_maps, ip_masq_in},
    python::{self, Sample, sample_value},
    topology::{EXTERNAL_INSIDE_V4, EXTERNAL_OUTSIDE_V4, NODE_UPLINK_V4},
    wait_until,
};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9483";
/// The classifier's name as the kernel reports it.
const CLASSIFIER: &str = "ipmasq_classify";
/// Keeps the periodic resync out of the way, so that only what a test does
/// repairs anything.
const SLOW_RESYNC: &str = "resyncInterval: 1h\n";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// How long a change may take to show: generous, since tests run in
/// parallel on a small machine.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an agent may take to exit on SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `ip-masq ARGS…` inside `netns` (setns, without `ip netns exec`'s
/// remount of /sys) and returns its output.
fn ip_masq(netns: &Netns, args: &[&str]) -> Output {
    ip_masq_in(netns, args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The flags that point a one-shot command at the lab's agent.
fn installed_args(lab: &Lab) -> Vec<String> {
    vec![
        "--pin-path".into(),
        lab.bpffs.pin_dir().display().to_string(),
        "--state-dir".into(),
        lab.state_dir().display().to_string(),
    ]
}

fn command_in(lab: &Lab, command: &str, extra: &[&str]) -> Output {
    let mut args = vec![command.to_owned()];
    args.extend(installed_args(lab));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ip_masq(&lab.node, &args)
}

/// `cleanup` succeeded and said each of `said` and none of `not_said`.
fn assert_cleanup_said(output: &Output, said: &[&str], not_said: &[&str]) {
    assert!(output.status.success(), "{}", describe(output));
    let text = stdout(output);
    for line in said {
        assert!(
            text.contains(line),
            "missing {line:?}: {}",
            describe(output)
        );
    }
    for line in not_said {
        assert!(
            !text.contains(line),
            "unexpected {line:?}: {}",
            describe(output)
        );
    }
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}", describe(output)))
}

/// `GET path` on the agent's listener, from inside the node namespace.
/// Returns the status code and the body.
fn http_get(node: &Netns, path: &str) -> (u16, String) {
    node.http_get(METRICS, path)
}

/// Deletes the agent's POSTROUTING jump by hand, as an operator or another
/// tool would, and returns it as `iptables -S` printed it.
fn delete_our_jump(node: &Netns) -> String {
    let jump = node
        .iptables_save("iptables", "nat")
        .lines()
        .find(|line| line.starts_with("-A POSTROUTING") && line.ends_with("-j IP-MASQ-AGENT"))
        .expect("our jump")
        .to_owned();
    let delete = format!("iptables -w -t nat -D {}", jump.trim_start_matches("-A "));
    node.exec_ok("sh", &["-c", &delete]);
    jump
}

fn scrape(lab: &Lab) -> Vec<Sample> {
    let (code, body) = http_get(&lab.node, "/metrics");
    assert_eq!(code, 200, "{body}");
    python::parse_openmetrics(&body)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    sample_value(samples, name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape: {samples:?}"))
}

/// Sends `count` UDP datagrams from `pod` to `destination`, one at a time,
/// each received by a server in the external namespace before the next
/// leaves. Returns the source address the server saw.
fn send_udp(lab: &Lab, pod: &Pod, destination: &str, count: usize) -> IpAddr {
    let destination = ip(destination);
    let server = lab
        .external
        .enter(move || UdpSocket::bind(SocketAddr::new(destination, 0)))
        .expect("bind UDP server");
    server
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let target = server.local_addr().expect("server address");
    let client = pod
        .netns
        .enter(|| UdpSocket::bind("0.0.0.0:0"))
        .expect("bind UDP client");
    let mut seen = None;
    for index in 0..count {
        client
            .send_to(format!("datagram {index}").as_bytes(), target)
            .expect("send datagram");
        let mut buffer = [0u8; 64];
        let (_, source) = server
            .recv_from(&mut buffer)
            .unwrap_or_else(|err| panic!("datagram {index} to {target} lost: {err}"));
        seen = Some(source.ip());
    }
    seen.expect("at least one datagram")
}

#[test]
#[ignore = "needs root"]
fn metrics_count_exactly_the_packets_sent() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config(SLOW_RESYNC);
    let _agent = lab.start_agent(&[]);
    let pod = &lab.pods[0];

    let before = scrape(&lab);
    let v4 = [("family", "ipv4")];
    assert_eq!(
        value(
            &before,
            "ip_masq_config_reloads_total",
            &[("result", "success")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &before,
            "ip_masq_config_reloads_total",
            &[("result", "failure")]
        ),
        0.0
    );
    // RFC 1918 and link-local.
    assert_eq!(value(&before, "ip_masq_map_entries", &v4), 4.0);
    assert_eq!(value(&before, "ip_masq_map_capacity", &v4), 65_536.0);
    // The two pod veths; not the uplink, a veth too, which holds the
    // default route.
    assert_eq!(value(&before, "ip_masq_interfaces_attached", &[]), 2.0);
    assert_eq!(value(&before, "ip_masq_iptables_repairs_total", &v4), 0.0);
    assert_eq!(
        value(
            &before,
            "ip_masq_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let reloaded_at = value(
        &before,
        "ip_masq_last_successful_reload_timestamp_seconds",
        &[],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 120.0..=now).contains(&reloaded_at),
        "{reloaded_at} vs {now}"
    );

    const KEPT: usize = 37;
    const MASQUERADED: usize = 11;
    assert_eq!(send_udp(&lab, pod, EXTERNAL_INSIDE_V4, KEPT), pod.ipv4);
    assert_eq!(
        send_udp(&lab, pod, EXTERNAL_OUTSIDE_V4, MASQUERADED),
        ip(NODE_UPLINK_V4)
    );

    let get_started = std::time::Instant::now();
    let (code, body) = http_get(&lab.node, "/metrics");
    println!("GET /metrics took {:?}", get_started.elapsed());
    assert_eq!(code, 200);
    let after = python::parse_openmetrics(&body);
    let delta = |name: &str| value(&after, name, &v4) - value(&before, name, &v4);
    assert_eq!(delta("ip_masq_packets_keep_source_total"), KEPT as f64);
    assert_eq!(
        delta("ip_masq_packets_seen_total"),
        (KEPT + MASQUERADED) as f64
    );
}

#[test]
#[ignore = "needs root"]
fn readyz_flips_when_the_chain_is_deleted_and_back_after_repair() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config(SLOW_RESYNC);
    let _agent = lab.start_agent(&[]);
    assert_eq!(http_get(&lab.node, "/healthz"), (200, "ok\n".into()));
    assert!(
        wait_until(CHANGE_TIMEOUT, || http_get(&lab.node, "/readyz").0 == 200),
        "never ready: {:?}",
        http_get(&lab.node, "/readyz")
    );

    // By hand, as an operator or another tool would: jump first, then chain.
    let jump = delete_our_jump(&lab.node);
    lab.node
        .exec_ok("iptables", &["-w", "-t", "nat", "-F", "IP-MASQ-AGENT"]);
    lab.node
        .exec_ok("iptables", &["-w", "-t", "nat", "-X", "IP-MASQ-AGENT"]);

    let mut last = (0, String::new());
    assert!(
        wait_until(CHANGE_TIMEOUT, || {
            last = http_get(&lab.node, "/readyz");
            last.0 == 503
        }),
        "readyz stayed {last:?} with the chain gone"
    );
    assert!(
        last.1
            .contains("IPv4 rules missing or changed (chain IP-MASQ-AGENT"),
        "reason names the rules: {}",
        last.1
    );
    // The failed probe asked the loop for a repair; nothing else would
    // repair within the hour-long resync.
    let detected = std::time::Instant::now();
    assert!(
        wait_until(CHANGE_TIMEOUT, || {
            last = http_get(&lab.node, "/readyz");
            last.0 == 200
        }),
        "readyz stayed {last:?} after the repair"
    );
    // The repair drops the cached verdict, so the next probe checks afresh.
    println!("ready again {:?} after the first 503", detected.elapsed());
    let nat = lab.node.iptables_save("iptables", "nat");
    assert!(nat.contains(&jump), "jump back:\n{nat}");
    assert!(nat.contains("-A IP-MASQ-AGENT"), "chain back:\n{nat}");
    let samples = scrape(&lab);
    assert_eq!(
        value(
            &samples,
            "ip_masq_iptables_repairs_total",
            &[("family", "ipv4")]
        ),
        1.0
    );
}

#[test]
#[ignore = "needs root"]
fn readyz_reports_a_rejected_config_until_a_good_one() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config(SLOW_RESYNC);
    let _agent = lab.start_agent(&[]);
    assert!(wait_until(CHANGE_TIMEOUT, || http_get(
        &lab.node, "/readyz"
    )
    .0 == 200));

    lab.write_config("nonMasqueradeCIDRs: [not-a-cidr]\nresyncInterval: 1h\n");
    let mut last = (0, String::new());
    assert!(
        wait_until(CHANGE_TIMEOUT, || {
            last = http_get(&lab.node, "/readyz");
            last.0 == 503
        }),
        "{last:?}"
    );
    assert!(last.1.contains("last config reload failed"), "{}", last.1);
    assert!(last.1.contains("not-a-cidr"), "{}", last.1);
    let samples = scrape(&lab);
    assert_eq!(
        value(
            &samples,
            "ip_masq_config_reloads_total",
            &[("result", "failure")]
        ),
        1.0
    );
    // Liveness is unaffected: restarting would not fix a bad ConfigMap.
    assert_eq!(http_get(&lab.node, "/healthz").0, 200);

    lab.write_config("nonMasqueradeCIDRs: [10.0.0.0/8]\nresyncInterval: 1h\n");
    assert!(
        wait_until(CHANGE_TIMEOUT, || {
            last = http_get(&lab.node, "/readyz");
            last.0 == 200
        }),
        "{last:?}"
    );
    assert_eq!(http_get(&lab.node, "/nope").0, 404);
}

#[test]
#[ignore = "needs root"]
fn status_and_dump_show_what_is_installed() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config(SLOW_RESYNC);
    let _agent = lab.start_agent(&[]);

    let output = command_in(&lab, "status", &["--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let status = json_of(&output);
    assert_eq!(status["agentRunning"], true, "{status:#}");
    assert_eq!(status["problems"], serde_json::json!([]), "{status:#}");
    assert_eq!(status["programs"][0]["name"], CLASSIFIER);
    let carried: BTreeSet<String> = status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["carriesClassifier"] == true && i["position"] == 1)
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    for pod in &lab.pods {
        assert!(carried.contains(&pod.host_interface), "{status:#}");
    }
    let rules = &status["rules"][0];
    assert_eq!(rules["family"], "IPv4");
    assert_eq!(
        (rules["chainPresent"].clone(), rules["inOrder"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(rules["jumps"], 1);
    assert_eq!(status["lastReload"]["result"], "applied", "{status:#}");
    assert_eq!(status["lastReload"]["added"], 4);
    assert_eq!(status["maps"][0]["entries"], 4);
    assert_eq!(status["maps"][0]["capacity"], 65_536);
    assert_eq!(
        status["configPath"],
        lab.config_path().display().to_string()
    );

    // The text form says the same for people.
    let text = stdout(&command_in(&lab, "status", &[]));
    assert!(text.contains("status:        ok"), "{text}");

    // `dump` and the README's bpftool command agree on the map contents.
    let dump = json_of(&ip_masq(
        &lab.node,
        &[
            "dump",
            "--json",
            "--pin-path",
            lab.bpffs.pin_dir().to_str().unwrap(),
        ],
    ));
    let dumped: BTreeSet<String> = dump
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            format!(
                "{} {}",
                row["cidr"].as_str().unwrap(),
                row["action"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        dumped,
        BTreeSet::from([
            "10.0.0.0/8 keep-source".to_owned(),
            "169.254.0.0/16 keep-source".into(),
            "172.16.0.0/12 keep-source".into(),
            "192.168.0.0/16 keep-source".into(),
        ])
    );
    let pin = lab.bpffs.pin_dir().join("NON_MASQ_V4");
    let bpftool = lab.node.exec_ok(
        "bpftool",
        &["--json", "map", "dump", "pinned", pin.to_str().unwrap()],
    );
    assert_eq!(bpftool_lpm_entries(&bpftool), dumped, "{bpftool}");

    // A missing jump is a problem, with exit code 1.
    delete_our_jump(&lab.node);
    let output = command_in(&lab, "status", &["--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(
        json_of(&output)["problems"],
        serde_json::json!(["IPv4 POSTROUTING has no jump to IP-MASQ-AGENT"])
    );
}

/// Reads `bpftool --json map dump` of an LPM trie into "cidr action" lines.
/// With BTF, bpftool prints each entry `formatted` as
/// `{"key": {"prefix_len": N, "data": [a, b, c, d]}, "value": V}`.
fn bpftool_lpm_entries(json: &str) -> BTreeSet<String> {
    let entries: Value = serde_json::from_str(json).expect("bpftool JSON");
    entries
        .as_array()
        .expect("array")
        .iter()
        .map(|entry| {
            let formatted = &entry["formatted"];
            let key = &formatted["key"];
            let octets: Vec<String> = key["data"]
                .as_array()
                .expect("key data")
                .iter()
                .map(|octet| octet.as_u64().expect("octet").to_string())
                .collect();
            let action = match formatted["value"].as_u64() {
                Some(1) => "keep-source",
                Some(2) => "masquerade",
                other => panic!("unexpected value {other:?}"),
            };
            format!("{}/{} {action}", octets.join("."), key["prefix_len"])
        })
        .collect()
}

/// One doctor case: rules to add in the node namespace (iptables argument
/// lists), what doctor must find, and how to take the rules away.
struct Case {
    name: &'static str,
    setup: &'static [&'static [&'static str]],
    expected: &'static [&'static str],
    teardown: &'static [&'static [&'static str]],
}

/// What the CNI bridge plugin writes for a pod of a network with
/// `"ipMasq": true`: a chain per pod, jumped to after our jump.
const CNI_IP_MASQ: &str = r#"
iptables -w -t nat -N CNI-499dbcdc1e6dee0bf6d9702d
iptables -w -t nat -A CNI-499dbcdc1e6dee0bf6d9702d -d 10.244.0.0/24 -m comment --comment 'name: "cbr0" id: "4f1c"' -j ACCEPT
iptables -w -t nat -A CNI-499dbcdc1e6dee0bf6d9702d ! -d 224.0.0.0/4 -m comment --comment 'name: "cbr0" id: "4f1c"' -j MASQUERADE
iptables -w -t nat -A POSTROUTING -s 10.244.0.5/32 -m comment --comment 'name: "cbr0" id: "4f1c"' -j CNI-499dbcdc1e6dee0bf6d9702d
"#;
const CNI_IP_MASQ_REMOVED: &str = r#"
iptables -w -t nat -D POSTROUTING -s 10.244.0.5/32 -m comment --comment 'name: "cbr0" id: "4f1c"' -j CNI-499dbcdc1e6dee0bf6d9702d
iptables -w -t nat -F CNI-499dbcdc1e6dee0bf6d9702d
iptables -w -t nat -X CNI-499dbcdc1e6dee0bf6d9702d
"#;

const DOCKER: &[&str] = &[
    "POSTROUTING",
    "-s",
    "172.17.0.0/16",
    "!",
    "-o",
    "docker0",
    "-j",
    "MASQUERADE",
];
const FLANNEL_JUMP: &[&str] = &[
    "POSTROUTING",
    "-m",
    "comment",
    "--comment",
    "flanneld masq",
    "-j",
    "FLANNEL-POSTRTG",
];
const KUBENET: &[&str] = &[
    "POSTROUTING",
    "-m",
    "comment",
    "--comment",
    "kubenet: SNAT for outbound traffic from cluster",
    "-m",
    "addrtype",
    "!",
    "--dst-type",
    "LOCAL",
    "!",
    "-d",
    "10.0.0.0/8",
    "-j",
    "MASQUERADE",
];
const SNAT: &[&str] = &[
    "POSTROUTING",
    "-o",
    "uplink0",
    "-j",
    "SNAT",
    "--to-source",
    "192.0.2.1",
];
const OR_MARK: &[&str] = &["FORWARD", "-j", "MARK", "--or-mark", "0x1000"];
const RESTORE_MARK: &[&str] = &["PREROUTING", "-j", "CONNMARK", "--restore-mark"];

const CASES: &[Case] = &[
    Case {
        name: "docker",
        setup: &[&["-t", "nat", "-I"], DOCKER],
        expected: &["docker-masquerade"],
        teardown: &[&["-t", "nat", "-D"], DOCKER],
    },
    Case {
        name: "flannel",
        setup: &[
            &["-t", "nat", "-N", "FLANNEL-POSTRTG"],
            &[
                "-t",
                "nat",
                "-A",
                "FLANNEL-POSTRTG",
                "-m",
                "mark",
                "--mark",
                "0x4000/0x4000",
                "-m",
                "comment",
                "--comment",
                "flanneld masq",
                "-j",
                "RETURN",
            ],
            &[
                "-t",
                "nat",
                "-A",
                "FLANNEL-POSTRTG",
                "-s",
                "10.244.0.0/16",
                "!",
                "-d",
                "224.0.0.0/4",
                "-m",
                "comment",
                "--comment",
                "flanneld masq",
                "-j",
                "MASQUERADE",
                "--random-fully",
            ],
            &["-t", "nat", "-I"],
            FLANNEL_JUMP,
        ],
        expected: &["flannel-masquerade"],
        teardown: &[
            &["-t", "nat", "-D"],
            FLANNEL_JUMP,
            &["-t", "nat", "-F", "FLANNEL-POSTRTG"],
            &["-t", "nat", "-X", "FLANNEL-POSTRTG"],
        ],
    },
    Case {
        name: "kubelet --non-masquerade-cidr",
        setup: &[&["-t", "nat", "-A"], KUBENET],
        expected: &["kubelet-masquerade"],
        teardown: &[&["-t", "nat", "-D"], KUBENET],
    },
    Case {
        name: "other SNAT before the jump",
        setup: &[&["-t", "nat", "-I"], SNAT],
        expected: &["other-snat"],
        teardown: &[&["-t", "nat", "-D"], SNAT],
    },
    Case {
        name: "mark writers",
        setup: &[
            &["-t", "mangle", "-A"],
            OR_MARK,
            &["-t", "mangle", "-A"],
            RESTORE_MARK,
        ],
        expected: &["mark-conflict", "mark-conflict"],
        teardown: &[
            &["-t", "mangle", "-D"],
            OR_MARK,
            &["-t", "mangle", "-D"],
            RESTORE_MARK,
        ],
    },
];

/// Runs the commands of a case: a list that ends in `-A`, `-I` or `-D` is
/// an operation whose rule is the next list.
fn apply_case(netns: &Netns, commands: &[&[&str]]) {
    let mut index = 0;
    while index < commands.len() {
        let mut args = vec!["-w"];
        args.extend_from_slice(commands[index]);
        if matches!(commands[index].last(), Some(&"-A" | &"-I" | &"-D")) {
            index += 1;
            args.extend_from_slice(commands[index]);
        }
        netns.exec_ok("iptables", &args);
        index += 1;
    }
}

fn doctor_kinds(lab: &Lab) -> (Option<i32>, Vec<String>, Value) {
    let output = command_in(lab, "doctor", &["--json"]);
    let report = json_of(&output);
    let mut kinds: Vec<String> = report["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", describe(&output)))
        .iter()
        .map(|finding| {
            assert!(
                !finding["fix"].as_str().unwrap_or_default().is_empty(),
                "every finding says how to fix it: {finding:#}"
            );
            finding["kind"].as_str().unwrap().to_owned()
        })
        .collect();
    kinds.sort();
    (output.status.code(), kinds, report)
}

#[test]
#[ignore = "needs root"]
fn doctor_finds_each_conflict_in_real_rules() {
    let mut lab = Lab::new(LabOptions::default());
    lab.write_config(SLOW_RESYNC);
    let mut agent = lab.start_agent(&[]);

    let (code, kinds, report) = doctor_kinds(&lab);
    assert_eq!(
        (code, kinds.as_slice()),
        (Some(0), &[][..]),
        "clean lab: {report:#}"
    );
    let text = stdout(&command_in(&lab, "doctor", &[]));
    assert!(text.starts_with("no problems found"), "{text}");
    let status = command_in(&lab, "status", &[]);
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));

    for case in CASES {
        apply_case(&lab.node, case.setup);
        let (code, kinds, report) = doctor_kinds(&lab);
        assert_eq!(code, Some(1), "{}: {report:#}", case.name);
        assert_eq!(kinds, case.expected, "{}: {report:#}", case.name);
        // status fails on the same defeat, and points to doctor.
        let status = command_in(&lab, "status", &["--json"]);
        assert_eq!(status.status.code(), Some(1), "{}", describe(&status));
        let problems = json_of(&status)["problems"].clone();
        for kind in case.expected {
            assert!(
                problems.as_array().unwrap().iter().any(|problem| {
                    problem.as_str().is_some_and(|p| {
                        p.starts_with(&format!("[{kind}]")) && p.contains("ip-masq doctor")
                    })
                }),
                "{}: {kind} not in status problems {problems:#}",
                case.name
            );
        }
        apply_case(&lab.node, case.teardown);
        assert_eq!(
            doctor_kinds(&lab).1,
            Vec::<String>::new(),
            "{} cleaned up",
            case.name
        );
    }

    // The CNI bridge plugin's own masquerade, named with its network.
    lab.node.exec_ok("sh", &["-ec", CNI_IP_MASQ]);
    let (code, kinds, report) = doctor_kinds(&lab);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(kinds, ["cni-masquerade"], "{report:#}");
    let problem = report["findings"][0]["problem"]
        .as_str()
        .unwrap_or_default();
    assert!(problem.contains("\"cbr0\""), "{report:#}");
    let status = command_in(&lab, "status", &[]);
    assert_eq!(status.status.code(), Some(1), "{}", describe(&status));
    assert!(
        stdout(&status).contains("[cni-masquerade]"),
        "{}",
        describe(&status)
    );
    lab.node.exec_ok("sh", &["-ec", CNI_IP_MASQ_REMOVED]);
    assert_eq!(doctor_kinds(&lab).1, Vec::<String>::new());

    // Our own jump gone.
    let jump = delete_our_jump(&lab.node);
    assert_eq!(doctor_kinds(&lab).1, ["jump-missing"]);
    lab.node.exec_ok(
        "sh",
        &[
            "-c",
            &format!("iptables -w -t nat -A {}", jump.trim_start_matches("-A ")),
        ],
    );

    // A second agent with its own pins, chain and listener, on one pod
    // interface: its program runs before ours there, its chain matches our
    // mark, and its MASQUERADE comes after our jump.
    let pod = lab.pods[0].host_interface.clone();
    let other_bpffs = lab::Bpffs::new();
    let other_pins = other_bpffs.pin_dir();
    let other_state = lab.config_dir().join("other-state");
    let mut other = lab::AgentBuilder::new(&lab.node.path(), &["run", "--datapath", "tc"])
        .arg("--config")
        .arg(lab.config_path().to_str().unwrap())
        .arg("--pin-path")
        .arg(other_pins.to_str().unwrap())
        .arg("--state-dir")
        .arg(other_state.to_str().unwrap())
        .arg("--interfaces")
        .arg(pod.clone())
        .arg("--masq-chain")
        .arg("OTHER-MASQ")
        .arg("--metrics-address")
        .arg("127.0.0.1:9484")
        .spawn();
    other.wait_ready();
    let (code, kinds, report) = doctor_kinds(&lab);
    assert_eq!(code, Some(1));
    assert_eq!(
        kinds,
        ["foreign-program", "mark-conflict", "other-snat"],
        "{report:#}"
    );
    let foreign = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "foreign-program")
        .unwrap();
    assert_eq!(foreign["location"], format!("interface {pod}"));
    assert!(
        foreign["evidence"]
            .as_str()
            .unwrap()
            .contains("runs before"),
        "{foreign:#}"
    );
    other
        .signal_and_wait(libc::SIGTERM, EXIT_TIMEOUT)
        .expect("second agent exits");
    let cleanup = ip_masq(
        &lab.node,
        &[
            "cleanup",
            "--pin-path",
            other_pins.to_str().unwrap(),
            "--state-dir",
            other_state.to_str().unwrap(),
            "--masq-chain",
            "OTHER-MASQ",
        ],
    );
    assert!(cleanup.status.success(), "{}", describe(&cleanup));
    // Unpinning drops the last reference to the other agent's link; the
    // kernel detaches it from a workqueue, a moment later on a loaded
    // machine.
    wait_until(Duration::from_secs(10), || doctor_kinds(&lab).1.is_empty());
    assert_eq!(doctor_kinds(&lab).1, Vec::<String>::new());

    // A pod interface that appears while no agent runs has no classifier.
    agent
        .signal_and_wait(libc::SIGTERM, EXIT_TIMEOUT)
        .expect("agent exits");
    let new_pod = lab.add_pod(7, false, false).host_interface.clone();
    let (code, kinds, report) = doctor_kinds(&lab);
    assert_eq!(
        (code, kinds.as_slice()),
        (Some(1), &["interface-without-program".to_owned()][..])
    );
    assert_eq!(
        report["findings"][0]["location"],
        format!("interface {new_pod}")
    );
}

/// Kernel ids of the pinned links, as `status --json` lists them.
fn link_ids(status: &Value) -> BTreeSet<u64> {
    status["links"]
        .as_array()
        .unwrap_or_else(|| panic!("no links: {status:#}"))
        .iter()
        .map(|link| link["linkId"].as_u64().expect("link id"))
        .collect()
}

/// SIGTERM stops the agent and leaves the datapath in place: the rules, the
/// maps, the pinned links (the same kernel ids) and the classifier on every
/// interface stay, and pods' traffic is still decided, and counted, while
/// no agent runs; `status` then reports only that no agent runs. The next
/// agent adopts all of it: its first reload writes nothing, and the links
/// are the same ones.
#[test]
#[ignore = "needs root"]
fn sigterm_leaves_the_datapath_and_the_next_agent_adopts_it() {
    let lab = Lab::new(LabOptions::default());
    lab.write_config(SLOW_RESYNC);
    let mut agent = lab.start_agent(&[]);
    let pod = &lab.pods[1];
    let node = ip(NODE_UPLINK_V4);
    let interfaces: Vec<&str> = lab
        .pods
        .iter()
        .map(|pod| pod.host_interface.as_str())
        .collect();
    let before = json_of(&command_in(&lab, "status", &["--json"]));
    let rules = lab.node.iptables_save("iptables", "nat");
    let entries = dump_maps(&lab.bpffs.pin_dir()).expect("dump");
    let links = link_ids(&before);
    // Not the uplink: the default route leaves through it.
    assert_eq!(links.len(), 2, "the two pods: {before:#}");

    let signalled = Instant::now();
    let status = agent
        .signal_and_wait(libc::SIGTERM, EXIT_TIMEOUT)
        .expect("agent exits on SIGTERM");
    println!("SIGTERM to exit: {:.0?}", signalled.elapsed());
    assert!(status.success(), "clean exit: {status:?}\n{}", agent.log());
    assert!(
        agent
            .log()
            .contains("SIGTERM: exiting, datapath left in place"),
        "{}",
        agent.log()
    );

    // Everything stays, and keeps deciding and counting.
    assert_eq!(lab.node.iptables_save("iptables", "nat"), rules);
    assert_eq!(dump_maps(&lab.bpffs.pin_dir()).expect("dump"), entries);
    for interface in &interfaces {
        assert_eq!(lab.node.tcx_ingress_programs(interface), [CLASSIFIER]);
    }
    const SENT: usize = 9;
    assert_eq!(send_udp(&lab, pod, EXTERNAL_INSIDE_V4, SENT), pod.ipv4);
    assert_eq!(send_udp(&lab, pod, EXTERNAL_OUTSIDE_V4, 2), node);
    let output = command_in(&lab, "status", &["--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let after = json_of(&output);
    assert_eq!(after["agentRunning"], false);
    let problems = after["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "only the agent is missing: {after:#}");
    assert!(problems[0].as_str().unwrap().starts_with("no agent runs"));
    let kept = |doc: &Value| doc["packets"]["ipv4KeepSource"].as_u64().unwrap();
    assert_eq!(kept(&after) - kept(&before), SENT as u64);
    assert_eq!(link_ids(&after), links, "links left as they were");

    // The next agent adopts it: the maps as they are, the same links.
    let restarted = lab.start_agent(&[]);
    let state = restarted.wait_state("the first reload", CHANGE_TIMEOUT, |state| {
        state["lastReload"]["result"] == "applied"
    });
    assert_eq!(
        (
            &state["lastReload"]["added"],
            &state["lastReload"]["removed"]
        ),
        (&0.into(), &0.into()),
        "the restart rewrote the maps: {state:#}"
    );
    assert_eq!(state["mapEntries"]["ipv4"], entries.len(), "{state:#}");
    let output = command_in(&lab, "status", &["--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(link_ids(&json_of(&output)), links, "links adopted");
    for interface in &interfaces {
        assert_eq!(
            lab.node.tcx_ingress_programs(interface),
            [CLASSIFIER],
            "exactly one attachment on {interface}"
        );
    }
    assert_eq!(lab.node.iptables_save("iptables", "nat"), rules);
    assert_eq!(send_udp(&lab, pod, EXTERNAL_INSIDE_V4, 1), pod.ipv4);
    assert_eq!(send_udp(&lab, pod, EXTERNAL_OUTSIDE_V4, 1), node);
}

#[test]
#[ignore = "needs root"]
fn cleanup_leaves_nothing_behind() {
    let lab = Lab::new(LabOptions::default());
    let mut agent = lab.start_agent(&[]);
    let status = json_of(&command_in(&lab, "status", &["--json"]));
    let link_ids: BTreeSet<u64> = status["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|link| link["linkId"].as_u64().expect("link id"))
        .collect();
    assert_eq!(link_ids.len(), 2, "the two pods: {status:#}");
    let state_files = || std::fs::read_dir(lab.state_dir()).map_or(0, Iterator::count);
    assert_eq!(state_files(), 1);

    // cleanup refuses while the agent holds the pins.
    let refused = command_in(&lab, "cleanup", &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    agent
        .signal_and_wait(libc::SIGTERM, EXIT_TIMEOUT)
        .expect("agent exits");

    assert_cleanup_said(
        &command_in(&lab, "cleanup", &[]),
        &[
            "removed IPv4 chain IP-MASQ-AGENT and its jump\n",
            "removed the pin directory ",
            "removed state file ",
        ],
        &["warning"],
    );

    let nat = lab.node.iptables_save("iptables", "nat");
    assert!(!nat.contains("IP-MASQ-AGENT"), "rules left:\n{nat}");
    let live_links = || -> BTreeSet<u64> {
        let links: Value =
            serde_json::from_str(&lab.node.exec_ok("bpftool", &["--json", "link", "show"]))
                .expect("bpftool JSON");
        links
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|link| link["id"].as_u64())
            .collect()
    };
    // Unpinning drops a link's last reference; the kernel frees (detaches)
    // it from a workqueue, a moment later on a loaded machine.
    wait_until(Duration::from_secs(10), || {
        live_links().is_disjoint(&link_ids)
    });
    let live = live_links();
    assert!(
        live.is_disjoint(&link_ids),
        "links left: {:?}",
        live.intersection(&link_ids)
    );
    for pod in &lab.pods {
        assert_eq!(
            lab.node.tcx_ingress_programs(&pod.host_interface),
            Vec::<String>::new()
        );
    }
    assert_eq!(
        lab.node.tcx_ingress_programs("uplink0"),
        Vec::<String>::new()
    );
    assert!(!lab.bpffs.pin_dir().exists(), "pin directory left");
    // The kernel's bpf_preload puts maps.debug and progs.debug in every
    // bpffs it mounts; anything else would be ours.
    let left: Vec<_> = std::fs::read_dir(lab.bpffs.root())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_none_or(|ext| ext != "debug"))
        .collect();
    assert!(left.is_empty(), "bpffs not empty: {left:?}");
    assert_eq!(state_files(), 0, "state file left");

    // With nothing installed, the pods' traffic is not masqueraded at all.
    let pod = &lab.pods[0];
    assert_eq!(send_udp(&lab, pod, EXTERNAL_OUTSIDE_V4, 1), pod.ipv4);

    // A second cleanup finds nothing and says so.
    assert_cleanup_said(
        &command_in(&lab, "cleanup", &[]),
        &["nothing of ip-masq's found: nothing removed"],
        &["removed IPv4"],
    );
}

/// Rules live in a network namespace, pins on a bpffs every namespace
/// sees: a cleanup run outside the node's network namespace (a pod without
/// hostNetwork) finds the pins but not the rules. It refuses and touches
/// nothing, instead of removing the pins and stranding the node's rules,
/// which name them. In the node's namespace it then removes everything.
#[test]
#[ignore = "needs root"]
fn cleanup_outside_the_nodes_network_namespace_touches_nothing() {
    let lab = Lab::new(LabOptions::default());
    let mut agent = lab.start_agent(&[]);
    agent
        .signal_and_wait(libc::SIGTERM, EXIT_TIMEOUT)
        .expect("agent exits");
    let elsewhere = Netns::new("ipm-other-");
    let mut args = vec!["cleanup".to_owned()];
    args.extend(installed_args(&lab));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = ip_masq(&elsewhere, &args);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("no chain IP-MASQ-AGENT and no jump to it in this network namespace"),
        "{}",
        describe(&refused)
    );
    assert!(
        error.contains("hostNetwork: true"),
        "{}",
        describe(&refused)
    );
    assert!(
        !stdout(&refused).contains("removed"),
        "{}",
        describe(&refused)
    );
    assert!(
        lab.bpffs.pin_dir().join("NON_MASQ_V4").exists(),
        "the pins went"
    );
    let nat = lab.node.iptables_save("iptables", "nat");
    assert!(
        nat.contains("-A IP-MASQ-AGENT") && nat.contains("-j IP-MASQ-AGENT"),
        "the node's rules went:\n{nat}"
    );

    // In the node's namespace the rules and the pins are found and removed.
    assert_cleanup_said(
        &command_in(&lab, "cleanup", &[]),
        &[
            "removed IPv4 chain IP-MASQ-AGENT and its jump\n",
            "removed the pin directory ",
        ],
        &[],
    );
    let nat = lab.node.iptables_save("iptables", "nat");
    assert!(!nat.contains("IP-MASQ-AGENT"), "rules left:\n{nat}");
    assert!(!lab.bpffs.pin_dir().exists(), "pin directory left");
}

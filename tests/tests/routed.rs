//! Routed pod networks, end to end on the real kernel with real FRR: two
//! nodes announce their pod CIDRs to a router (eBGP in one test, OSPF in
//! the other), the agent on each node keeps pod IPs towards 10.0.0.0/8 and
//! masquerades the rest, and hosts behind the router see what a network
//! engineer expects. Also loads every example in deploy/routing into FRR.
//!
//! Needs root and Debian's `frr` package (`cargo xtask setup` installs
//! it); without FRR these tests fail, they do not skip.

use std::{
    io::ErrorKind,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use lab::{
    Netns,
    routed::{
        Frr, Protocol, RouteState, RoutedLab, RoutedLabOptions, lab_node, lab_rack, node_config,
        router_config,
    },
    topology::try_observed_source,
    unique_name,
};

/// Bound on a protocol learning or dropping a route. BGP takes about a
/// second here, OSPF a few (DR election waits one dead interval, 3 s).
const CONVERGENCE: Duration = Duration::from_secs(30);
/// Connect timeout of a probe that is expected to fail.
const FAILING_PROBE: Duration = Duration::from_secs(1);

fn ip(address: impl Into<IpAddr>) -> IpAddr {
    address.into()
}

fn routed_scenario(options: &RoutedLabOptions) {
    let protocol = options.protocol;
    // Names the variant in messages: the protocol and the agent's flags.
    let label = format!("{protocol} [{}]", options.agent_args.join(" "));
    let mut lab = RoutedLab::new(options);
    let residue = lab.residue();

    // (a) The router learned both pod CIDRs from the nodes: FRR selected
    // and installed a route of this protocol via each node's address, and
    // the kernel holds it with that protocol and gateway.
    for node in &lab.nodes {
        let took = lab
            .wait_for_route(node, CONVERGENCE, RouteState::learned)
            .unwrap_or_else(|state| {
                panic!(
                    "{label}: router did not learn {} from {} within {CONVERGENCE:?}: {state:#?}\n{}",
                    node.routing.pod_cidr,
                    node.routing.hostname,
                    lab.router_frr.logs()
                )
            });
        eprintln!(
            "{label}: router learned {} via {} after {took:?}",
            node.routing.pod_cidr, node.routing.address
        );
    }

    for node in &lab.nodes {
        for pod in &node.pods {
            // (b) Pod to enterprise host: the host sees the pod's own IP,
            // and its answer comes back through the route the node announced.
            let seen = lab
                .pod_to_enterprise(pod)
                .unwrap_or_else(|err| panic!("{label}: {} -> enterprise: {err}", pod.ipv4));
            assert_eq!(
                seen, pod.ipv4,
                "{label}: enterprise host saw {seen} from pod {}",
                pod.ipv4
            );
            // (c) The enterprise host opens a connection to the pod's IP,
            // and the pod sees the client's own IP.
            let seen = lab
                .enterprise_to_pod(pod)
                .unwrap_or_else(|err| panic!("{label}: enterprise -> {}: {err}", pod.ipv4));
            assert_eq!(
                seen,
                ip(lab::routed::ENTERPRISE_HOST_V4),
                "{label}: pod {} saw {seen} from the enterprise host",
                pod.ipv4
            );
            // (d) Pod to internet host: masqueraded to the node's address.
            let seen = lab
                .pod_to_internet(pod)
                .unwrap_or_else(|err| panic!("{label}: {} -> internet: {err}", pod.ipv4));
            assert_eq!(
                seen,
                ip(node.routing.address),
                "{label}: internet host saw {seen} from pod {}",
                pod.ipv4
            );
        }
    }

    // (e) Withdrawing node-1's announcement removes the route from FRR and
    // the kernel; node-2's stays. Without it the pod is unreachable both
    // ways: the return path really was the announced route.
    let (first, second) = (&lab.nodes[0], &lab.nodes[1]);
    first.withdraw();
    let took = lab
        .wait_for_route(first, CONVERGENCE, RouteState::gone)
        .unwrap_or_else(|state| {
            panic!("{label}: route still there after `no network`: {state:#?}")
        });
    eprintln!(
        "{label}: withdrawal of {} took {took:?}",
        first.routing.pod_cidr
    );
    let state = lab.route_state(second);
    assert!(
        state.learned(),
        "{label}: node-2's route went too: {state:#?}"
    );
    let pod = &first.pods[0];
    let enterprise = ip(lab::routed::ENTERPRISE_HOST_V4);
    // The router answers the enterprise host's SYN with "unreachable".
    let error = try_observed_source(&lab.enterprise, &pod.netns, pod.ipv4, FAILING_PROBE)
        .expect_err("enterprise host reached a pod whose route was withdrawn");
    assert!(
        matches!(
            error.kind(),
            ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable
        ),
        "{label}: enterprise -> withdrawn {}: {error}",
        pod.ipv4
    );
    // The pod's SYN still gets out, but the answer has no way back.
    let error = try_observed_source(&pod.netns, &lab.enterprise, enterprise, FAILING_PROBE)
        .expect_err("pod got answers with no return route");
    assert_eq!(
        error.kind(),
        ErrorKind::TimedOut,
        "{label}: withdrawn {} -> enterprise: {error}",
        pod.ipv4
    );

    // Announcing again restores route and reachability.
    first.announce();
    lab.wait_for_route(first, CONVERGENCE, RouteState::learned)
        .unwrap_or_else(|state| panic!("{label}: not relearned: {state:#?}"));
    assert_eq!(
        lab.enterprise_to_pod(pod)
            .expect("enterprise -> pod after re-announce"),
        enterprise
    );

    // A node whose routing daemon dies does not leave a stale route behind.
    lab.nodes[1].stop_routing_daemon();
    let second = &lab.nodes[1];
    let took = lab
        .wait_for_route(second, CONVERGENCE, RouteState::gone)
        .unwrap_or_else(|state| {
            panic!(
                "{label}: route stayed after {} stopped: {state:#?}",
                protocol.daemon()
            )
        });
    eprintln!(
        "{label}: {}'s route gone {took:?} after its {} stopped",
        second.routing.hostname,
        protocol.daemon()
    );

    // Teardown leaves no namespaces, daemons, agents or directories.
    drop(lab);
    let leftovers = residue.leftovers();
    assert!(leftovers.is_empty(), "left after teardown: {leftovers:#?}");
}

#[test]
#[ignore = "needs root"]
fn bgp_routed_pod_network() {
    routed_scenario(&RoutedLabOptions::new(Protocol::Bgp));
}

#[test]
#[ignore = "needs root"]
fn ospf_routed_pod_network() {
    routed_scenario(&RoutedLabOptions::new(Protocol::Ospf));
}

/// The tc datapath too: the classifier marks pod traffic at the pod
/// interfaces, and the enterprise host's connections into pods, which
/// enter on the uplink, are decided by the chain's xt_bpf rule.
#[test]
#[ignore = "needs root"]
fn bgp_routed_pod_network_with_tc_datapath() {
    routed_scenario(&RoutedLabOptions {
        agent_args: vec!["--datapath".into(), "tc".into()],
        ..RoutedLabOptions::new(Protocol::Bgp)
    });
}

fn deploy_routing_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .join("deploy/routing")
}

/// `vtysh --dryrun`: the syntax check vtysh applies to frr.conf.
fn assert_dryrun_passes(path: &Path) {
    let output = Command::new(lab::routed::VTYSH)
        .args(["--dryrun", "-f"])
        .arg(path)
        .output()
        .expect("run vtysh (FRR missing? run `cargo xtask setup`)");
    assert!(
        output.status.success(),
        "vtysh --dryrun rejects {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Loads `config` into fresh zebra + `daemon` in a scratch namespace and
/// returns the running config they report.
fn load_into_frr(daemon: &'static str, config: &str) -> String {
    let netns = Netns::new("ipm-frrchk-");
    let dir = std::env::temp_dir().join(unique_name("ip-masq-frrchk-"));
    let frr = Frr::start(&netns, &dir, daemon, config);
    let running = frr.show("show running-config");
    drop(frr);
    assert!(!dir.exists(), "{} left behind", dir.display());
    running
}

/// Lines of an example that FRR applies but never prints back as written.
fn echoed_differently(line: &str) -> bool {
    // `frr version` prints the full version; `hostname` is shown from
    // vtysh's own state (the machine's name); `bgp log-neighbor-changes`
    // is the datacenter profile's default, so running-config omits it.
    line.starts_with("frr version")
        || line.starts_with("hostname ")
        || line == "bgp log-neighbor-changes"
}

#[test]
#[ignore = "needs root"]
fn deploy_examples_load_into_frr() {
    let mut examples = Vec::new();
    for (subdir, daemon) in [("bgp", "bgpd"), ("ospf", "ospfd")] {
        let dir = deploy_routing_dir().join(subdir);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|ext| ext == "conf") {
                examples.push((path, daemon));
            }
        }
    }
    examples.sort();
    assert_eq!(
        examples.len(),
        4,
        "node and router examples for each protocol: {examples:?}"
    );
    for (path, daemon) in examples {
        assert_dryrun_passes(&path);
        let text = std::fs::read_to_string(&path).expect("read example");
        let running = load_into_frr(daemon, &text);
        let running_lines: Vec<&str> = running.lines().map(str::trim).collect();
        // Every statement took effect: FRR prints it back in its running
        // config (comments, `!` and `exit` aside).
        for line in text.lines().map(str::trim) {
            if line.is_empty()
                || line.starts_with('!')
                || line == "exit"
                || echoed_differently(line)
            {
                continue;
            }
            assert!(
                running_lines.contains(&line),
                "{}: `{line}` is not in FRR's running config:\n{running}",
                path.display()
            );
        }
    }
}

#[test]
fn lab_configs_pass_vtysh_dryrun() {
    let rack = lab_rack();
    let dir = std::env::temp_dir().join(unique_name("ip-masq-frrdry-"));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for protocol in [Protocol::Bgp, Protocol::Ospf] {
        let configs = [
            ("router", router_config(protocol, &rack, "tor")),
            ("node-1", node_config(protocol, &rack, &lab_node(1))),
            ("node-2", node_config(protocol, &rack, &lab_node(2))),
        ];
        for (name, config) in configs {
            let path = dir.join(format!("{}-{name}.conf", protocol.daemon()));
            std::fs::write(&path, config).expect("write config");
            assert_dryrun_passes(&path);
        }
    }
    std::fs::remove_dir_all(&dir).expect("remove scratch dir");
}

#[test]
fn routing_readme_snippets_pass_vtysh_dryrun() {
    let readme = std::fs::read_to_string(deploy_routing_dir().join("README.md"))
        .expect("deploy/routing/README.md");
    let dir = std::env::temp_dir().join(unique_name("ip-masq-frrdoc-"));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let mut snippets = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```frr\n") {
        let body = &rest[start + "```frr\n".len()..];
        let end = body.find("```").expect("closed code block");
        let path = dir.join(format!("snippet-{snippets}.conf"));
        std::fs::write(&path, &body[..end]).expect("write snippet");
        assert_dryrun_passes(&path);
        snippets += 1;
        rest = &body[end + 3..];
    }
    std::fs::remove_dir_all(&dir).expect("remove scratch dir");
    assert!(
        snippets > 0,
        "the README shows FRR statements in ```frr blocks"
    );
}

/// The teardown check is only worth something if it sees what is left.
#[test]
#[ignore = "needs root"]
fn residue_reports_live_namespaces_processes_and_directories() {
    let netns = Netns::new("ipm-residue-");
    let dir = std::env::temp_dir().join(unique_name("ip-masq-residue-"));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let residue = lab::routed::Residue {
        namespaces: vec![netns.name().to_owned()],
        pids: vec![std::process::id()],
        workdir: dir.clone(),
    };
    let leftovers = residue.leftovers();
    assert_eq!(leftovers.len(), 3, "{leftovers:#?}");
    assert!(leftovers[0].contains(netns.name()));
    assert!(leftovers[1].starts_with(&format!("process {}:", std::process::id())));
    assert!(leftovers[2].contains(&*dir.to_string_lossy()));
    drop(netns);
    std::fs::remove_dir_all(&dir).expect("remove scratch dir");
    let residue = lab::routed::Residue {
        pids: Vec::new(),
        ..residue
    };
    assert!(residue.leftovers().is_empty(), "{:#?}", residue.leftovers());
}

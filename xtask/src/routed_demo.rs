//! `cargo xtask demo --routed`: the routed lab for a person to watch. Two
//! nodes announce their pod CIDRs to a top-of-rack router, first with
//! eBGP and then with OSPF (real FRR daemons in each namespace). The demo
//! prints the routes the router learned and a table of who saw which
//! source address, withdraws one node's route, and tears everything down.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, bail};
use lab::routed::{
    ENTERPRISE_HOST_V4, INTERNET_HOST_V4, Protocol, RouteState, RoutedLab, RoutedLabOptions,
    RoutedNode,
};

/// Bound on a protocol learning or dropping a route.
const CONVERGENCE: Duration = Duration::from_secs(30);

pub(crate) fn run() -> anyhow::Result<()> {
    if !lab::is_root() {
        bail!(
            "the routed demo builds network namespaces and starts routing daemons: run it as root"
        );
    }
    let missing = lab::routed::missing_frr(&["zebra", "bgpd", "ospfd"]);
    if !missing.is_empty() {
        bail!(
            "FRR is not installed (missing: {}); run `cargo xtask setup`",
            missing.join(", ")
        );
    }
    let mut failures = Vec::new();
    for protocol in [Protocol::Bgp, Protocol::Ospf] {
        let wrong = run_protocol(protocol).with_context(|| format!("{protocol} lab"))?;
        failures.extend(wrong.into_iter().map(|row| format!("{protocol}: {row}")));
    }
    if !failures.is_empty() {
        bail!("unexpected source addresses:\n  {}", failures.join("\n  "));
    }
    println!("\nevery host saw the expected source address, for both protocols");
    Ok(())
}

/// Runs the lab with `protocol`; returns the table rows that went wrong.
fn run_protocol(protocol: Protocol) -> anyhow::Result<Vec<String>> {
    println!("\n=== {protocol}: nodes announce their pod CIDRs to the top-of-rack router ===");
    let options = RoutedLabOptions::new(protocol);
    let agent_args = options.agent_args.join(" ");
    let lab = RoutedLab::new(&options);
    println!(
        "router {} | enterprise host {} ({ENTERPRISE_HOST_V4}) | internet host {} ({INTERNET_HOST_V4})",
        lab.router.name(),
        lab.enterprise.name(),
        lab.internet.name()
    );
    for node in &lab.nodes {
        println!(
            "{} {} ({}, AS {}) pod CIDR {} | pods {} | agent: nonMasqueradeCIDRs [10.0.0.0/8], {agent_args}",
            node.routing.hostname,
            node.netns.name(),
            node.routing.address,
            node.routing.asn,
            node.routing.pod_cidr,
            node.pods
                .iter()
                .map(|pod| pod.ipv4.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }

    for node in &lab.nodes {
        let took = wait_route(&lab, node, RouteState::learned, "learn")?;
        println!(
            "router learned {} via {} after {:.1} s",
            node.routing.pod_cidr,
            node.routing.address,
            took.as_secs_f64()
        );
    }
    print_routes(&lab);

    let wrong = print_source_table(&lab);

    let first = &lab.nodes[0];
    println!(
        "\n{}: withdrawing {} (vtysh: {})",
        first.routing.hostname,
        first.routing.pod_cidr,
        lab::routed::withdraw_commands(protocol, &first.routing).join(" / ")
    );
    first.withdraw();
    let took = wait_route(&lab, first, RouteState::gone, "drop")?;
    println!(
        "router dropped {} after {:.2} s",
        first.routing.pod_cidr,
        took.as_secs_f64()
    );
    let pod = &first.pods[0];
    match lab.enterprise_to_pod(pod) {
        Ok(seen) => println!(
            "enterprise host -> {}: still connected (pod saw {seen}), NOT expected",
            pod.ipv4
        ),
        Err(err) => println!(
            "enterprise host -> {}: {err} (expected: no route)",
            pod.ipv4
        ),
    }
    first.announce();
    let took = wait_route(&lab, first, RouteState::learned, "relearn")?;
    println!(
        "{} announced again; router relearned it after {:.1} s",
        first.routing.hostname,
        took.as_secs_f64()
    );

    let residue = lab.residue();
    drop(lab);
    let leftovers = residue.leftovers();
    if !leftovers.is_empty() {
        bail!("teardown left: {}", leftovers.join("; "));
    }
    println!("lab removed: no namespaces, FRR daemons, agents or files left");
    Ok(wrong)
}

/// Waits until the router's view of `node`'s prefix satisfies `want`.
fn wait_route(
    lab: &RoutedLab,
    node: &RoutedNode,
    want: impl Fn(&RouteState) -> bool,
    what: &str,
) -> anyhow::Result<Duration> {
    lab.wait_for_route(node, CONVERGENCE, want)
        .or_else(|state| {
            bail!(
                "router did not {what} {} within {CONVERGENCE:?}; it holds {state:#?}\n{}",
                node.routing.pod_cidr,
                lab.router_frr.logs()
            )
        })
}

fn print_routes(lab: &RoutedLab) {
    let protocol = lab.protocol().route_protocol();
    println!("\nrouter, FRR (vtysh -c 'show ip route {protocol}'):");
    print!(
        "{}",
        indent(&lab.router_frr.show(&format!("show ip route {protocol}")))
    );
    println!("router, kernel (ip route show proto {protocol}):");
    let kernel = lab.router.ip(&["route", "show", "proto", protocol]);
    print!("{}", indent(&String::from_utf8_lossy(&kernel.stdout)));
}

fn indent(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("    {line}\n"))
        .collect()
}

/// Connects along every path of interest and prints who saw which source.
/// Returns the rows whose source was not the expected one.
fn print_source_table(lab: &RoutedLab) -> Vec<String> {
    let enterprise = IpAddr::V4(ENTERPRISE_HOST_V4);
    let internet = IpAddr::V4(INTERNET_HOST_V4);
    println!(
        "\n{:<25} {:<23} {:<14} {:<16} {:<16} OK",
        "FROM", "TO", "SERVER SAW", "WHICH IS", "EXPECTED"
    );
    let mut wrong = Vec::new();
    for node in &lab.nodes {
        let node_ip = IpAddr::V4(node.routing.address);
        let name_of = |address: IpAddr| -> String {
            if node.pods.iter().any(|pod| pod.ipv4 == address) {
                "the pod's IP".into()
            } else if address == node_ip {
                "the node's IP".into()
            } else if address == enterprise {
                "the client's IP".into()
            } else {
                "something else".into()
            }
        };
        for pod in &node.pods {
            let pod_label = format!("pod {} ({})", pod.ipv4, node.routing.hostname);
            let rows = [
                (
                    pod_label.clone(),
                    format!("enterprise {enterprise}"),
                    lab.pod_to_enterprise(pod),
                    pod.ipv4,
                    "pod IP (routed)",
                ),
                (
                    format!("enterprise {enterprise}"),
                    format!("pod {}", pod.ipv4),
                    lab.enterprise_to_pod(pod),
                    enterprise,
                    "client IP",
                ),
                (
                    pod_label,
                    format!("internet {internet}"),
                    lab.pod_to_internet(pod),
                    node_ip,
                    "node IP (masq)",
                ),
            ];
            for (from, to, result, expected, expected_label) in rows {
                let (seen, which, ok) = match result {
                    Ok(seen) => (seen.to_string(), name_of(seen), seen == expected),
                    Err(err) => ("-".into(), format!("failed: {err}"), false),
                };
                println!(
                    "{from:<25} {to:<23} {seen:<14} {which:<16} {expected_label:<16} {}",
                    if ok { "yes" } else { "NO" }
                );
                if !ok {
                    wrong.push(format!(
                        "{from} -> {to}: {which} ({seen}), expected {expected}"
                    ));
                }
            }
        }
    }
    wrong
}

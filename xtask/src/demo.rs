//! `cargo xtask demo`: the agent on its embedded defaults in a namespace
//! lab (a node, a routed pod, a pod behind the `cni0` bridge and an external
//! host), and a table of which destination saw which source address.

use std::{net::IpAddr, process::Command};

use anyhow::{Context as _, bail};
use lab::{
    Lab, LabOptions,
    topology::{EXTERNAL_INSIDE_V4, EXTERNAL_LINK_LOCAL_V4, EXTERNAL_OUTSIDE_V4, NODE_UPLINK_V4},
};

pub(crate) fn run() -> anyhow::Result<()> {
    if !lab::is_root() {
        bail!("the demo builds network namespaces: run it as root");
    }
    let lab = Lab::new(LabOptions::default());
    println!(
        "lab: node {} | pods {} | external {}",
        lab.node.name(),
        lab.pods
            .iter()
            .map(|p| format!("{} ({}, via {})", p.netns.name(), p.ipv4, p.host_interface))
            .collect::<Vec<_>>()
            .join(", "),
        lab.external.name()
    );
    println!("agent: ip-masq run with no config file, i.e. ip-masq-agent's defaults");
    let agent = lab.start_agent(&[]);

    let node: IpAddr = NODE_UPLINK_V4.parse()?;
    let destinations = [
        (
            EXTERNAL_INSIDE_V4,
            "172.16.0.0/12 (default non-masquerade)",
            true,
        ),
        (EXTERNAL_LINK_LOCAL_V4, "169.254.0.0/16 (link-local)", true),
        (
            EXTERNAL_OUTSIDE_V4,
            "outside every non-masquerade range",
            false,
        ),
    ];
    println!();
    println!(
        "{:<22} {:<15} {:<40} {:<15} {:<10} OK",
        "POD", "DESTINATION", "WHY", "SEEN SOURCE", "MEANS"
    );
    let mut all_ok = true;
    for pod in &lab.pods {
        for (destination, why, keep) in destinations {
            let seen = lab.observed_source(pod, destination.parse()?);
            let means = if seen == pod.ipv4 {
                "pod IP"
            } else if seen == node {
                "node IP"
            } else {
                "other"
            };
            let ok = (keep && seen == pod.ipv4) || (!keep && seen == node);
            all_ok &= ok;
            println!(
                "{:<22} {:<15} {:<40} {:<15} {:<10} {}",
                format!("{} ({})", pod.host_interface, pod.ipv4),
                destination,
                why,
                seen,
                means,
                if ok { "yes" } else { "NO" }
            );
        }
    }

    let pin_dir = lab.bpffs.pin_dir();
    println!(
        "\nmaps, as `ip-masq dump --pin-path {}` reads them:",
        pin_dir.display()
    );
    let dump = Command::new(lab::agent::agent_binary())
        .args(["dump", "--pin-path"])
        .arg(&pin_dir)
        .output()
        .context("run ip-masq dump")?;
    print!("{}", String::from_utf8_lossy(&dump.stdout));
    println!(
        "(the same with bpftool: bpftool map dump pinned {}/NON_MASQ_V4)",
        pin_dir.display()
    );
    println!(
        "\nnat rules in the node namespace:\n{}",
        lab.node.iptables_save("iptables", "nat")
    );
    drop(agent);
    drop(lab);
    if !all_ok {
        bail!("some destinations saw the wrong source address");
    }
    println!("all destinations saw the expected source; lab removed");
    Ok(())
}

//! The routed lab: pod networks that the rest of the network reaches by
//! the pods' own addresses, because each node announces its pod CIDR to a
//! router with BGP or OSPF (FRR), and the agent leaves traffic to the
//! routed ranges unmasqueraded.
//!
//! ```text
//!  pods 10.244.1.10, .11          pods 10.244.2.10
//!    cni0 10.244.1.1/24             cni0 10.244.2.1/24
//!  node-1 eth0 192.168.10.11      node-2 eth0 192.168.10.12
//!  (agent, zebra + bgpd/ospfd)    (agent, zebra + bgpd/ospfd)
//!           \                        /
//!            rack0 192.168.10.1/24 (bridge)
//!            router (zebra + bgpd/ospfd)
//!           /                        \
//!  ent0 10.50.0.1/24               inet0 203.0.113.1/24
//!  enterprise host 10.50.0.10      internet host 203.0.113.5
//! ```
//!
//! The agent on each node runs with `nonMasqueradeCIDRs: [10.0.0.0/8]`,
//! which covers the pod range and the enterprise range (10.50.0.0/16) but
//! not the internet host.
//!
//! Every namespace, daemon, agent, bpffs and directory is owned by a guard
//! and removed on drop; [`Residue`] checks afterwards that nothing is left.

mod config;
mod frr;
mod routes;

pub use config::{
    BACKBONE_AREA, LAB_TIMERS, NODE_AREA, NodeRouting, Prefix, Protocol, Rack, Timers,
    announce_commands, node_config, router_config, withdraw_commands,
};
pub use frr::{DAEMON_DIR, FRR_USER, Frr, VTYSH, missing as missing_frr, require as require_frr};
pub use routes::{
    FrrRoute, KernelRoute, RouteParseError, frr_learned, kernel_has, kernel_learned,
    parse_frr_routes, parse_kernel_routes,
};

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    Agent, AgentBuilder, Bpffs, Netns, Pod, netns::run_ok, topology::try_observed_source,
    unique_name, wait_until,
};

/// The router's address on the rack subnet.
pub const ROUTER_RACK_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 1);
/// The router's AS number; node `i` (from 1) uses `ROUTER_ASN + i`.
pub const ROUTER_ASN: u32 = 65010;
/// The enterprise host, behind the router, inside a non-masquerade range.
pub const ENTERPRISE_HOST_V4: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 10);
/// The enterprise range the host sits in; inside the agent's 10.0.0.0/8.
pub const ENTERPRISE_RANGE: &str = "10.50.0.0/16";
/// The internet host, behind the router, outside every non-masquerade range.
pub const INTERNET_HOST_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
/// The agent config on every node.
pub const AGENT_CONFIG: &str = "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n";
/// How long a probe connection may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The lab's rack: the addressing plan every FRR config is rendered from.
pub fn lab_rack() -> Rack {
    Rack {
        router_address: ROUTER_RACK_V4,
        subnet: Prefix::new(ROUTER_RACK_V4, 24),
        router_asn: ROUTER_ASN,
        pod_range: Prefix::new(Ipv4Addr::new(10, 244, 0, 0), 16),
        node_block_len: 24,
        backbone: Prefix::new(Ipv4Addr::new(10, 50, 0, 0), 24),
        rack_interface: "rack0".into(),
        backbone_interface: "ent0".into(),
        timers: LAB_TIMERS,
    }
}

/// The routing identity of node `index` (from 1): 192.168.10.(10+i),
/// AS 65010+i, pod CIDR 10.244.i.0/24 on `cni0`.
pub fn lab_node(index: u8) -> NodeRouting {
    NodeRouting {
        hostname: format!("node-{index}"),
        address: Ipv4Addr::new(192, 168, 10, 10 + index),
        asn: ROUTER_ASN + u32::from(index),
        pod_cidr: Prefix::new(Ipv4Addr::new(10, 244, index, 0), 24),
        uplink: "eth0".into(),
        bridge: "cni0".into(),
    }
}

/// Options of the routed lab.
#[derive(Clone, Debug)]
pub struct RoutedLabOptions {
    pub protocol: Protocol,
    /// Pods on each node; its length is the number of nodes.
    pub pods_per_node: Vec<usize>,
    /// Arguments of `ip-masq run` after the config and pin path.
    pub agent_args: Vec<String>,
}

impl RoutedLabOptions {
    /// Two nodes, with two pods and one pod; the agent runs with its
    /// defaults (the xt-bpf datapath). Connections the enterprise host
    /// opens into pods are decided by the chain's xt_bpf rule by
    /// destination, as pod traffic is.
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            pods_per_node: vec![2, 1],
            agent_args: Vec::new(),
        }
    }
}

/// One node: its namespace, pods, agent and routing daemons.
#[derive(Debug)]
pub struct RoutedNode {
    // Field order is drop order: daemons and agent first, then pods, the
    // namespace, and the bpffs the agent pinned into.
    pub frr: Frr,
    pub agent: Agent,
    pub pods: Vec<Pod>,
    pub netns: Netns,
    pub bpffs: Bpffs,
    pub routing: NodeRouting,
    protocol: Protocol,
}

impl RoutedNode {
    /// Stops announcing the pod CIDR (`no network …` through vtysh).
    pub fn withdraw(&self) {
        self.frr
            .configure(&withdraw_commands(self.protocol, &self.routing));
    }

    /// Announces the pod CIDR again.
    pub fn announce(&self) {
        self.frr
            .configure(&announce_commands(self.protocol, &self.routing));
    }

    /// Stops the node's bgpd or ospfd, as a crash would; zebra stays.
    pub fn stop_routing_daemon(&mut self) {
        self.frr.stop_daemon(self.protocol.daemon());
    }
}

/// What the router knows of one node's pod CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteState {
    pub prefix: String,
    /// FRR's routes to the prefix, whatever their origin.
    pub frr: Vec<FrrRoute>,
    /// The kernel's routes to the prefix, whatever their origin.
    pub kernel: Vec<KernelRoute>,
    learned_in_frr: bool,
    learned_in_kernel: bool,
}

impl RouteState {
    /// FRR selected and installed a route from the node's protocol via the
    /// node, and the kernel holds it.
    pub fn learned(&self) -> bool {
        self.learned_in_frr && self.learned_in_kernel
    }

    /// Neither FRR nor the kernel has any route to the prefix.
    pub fn gone(&self) -> bool {
        self.frr.is_empty() && self.kernel.is_empty()
    }
}

/// Removes the lab's scratch directory on drop.
#[derive(Debug)]
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("ip-masq-routed-"));
        fs::create_dir_all(&path).unwrap_or_else(|err| panic!("create {}: {err}", path.display()));
        Self(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The whole routed lab; dropping it removes everything it made.
#[derive(Debug)]
pub struct RoutedLab {
    // Field order is drop order: nodes (their daemons, agents, pods), the
    // router's daemons, then the namespaces, and the scratch dir last.
    pub nodes: Vec<RoutedNode>,
    pub router_frr: Frr,
    pub router: Netns,
    pub enterprise: Netns,
    pub internet: Netns,
    workdir: WorkDir,
    rack: Rack,
    protocol: Protocol,
}

impl RoutedLab {
    /// Builds the namespaces and links, starts the agent and FRR on every
    /// node and FRR on the router. Returns without waiting for the
    /// protocol to converge: see [`RoutedLab::wait_for_route`].
    ///
    /// # Panics
    /// If FRR is not installed (the lab fails rather than skips), or any
    /// step fails; everything made so far is removed.
    pub fn new(options: &RoutedLabOptions) -> Self {
        let protocol = options.protocol;
        frr::require(&["zebra", protocol.daemon()]);
        let workdir = WorkDir::new();
        let rack = lab_rack();
        let router = Netns::new("ipm-rtr-");
        let enterprise = Netns::new("ipm-ent-");
        let internet = Netns::new("ipm-inet-");
        build_router(&router, &enterprise, &internet, &rack);
        let mut nodes = Vec::new();
        for (index, pods) in (1..).zip(&options.pods_per_node) {
            nodes.push(build_node(
                lab_node(index),
                *pods,
                &options.agent_args,
                &router,
                &rack,
                protocol,
                &workdir.0,
            ));
        }
        // The router starts last: the nodes' bgpd retry every second until
        // it listens, and OSPF does not care about the order.
        let router_frr = Frr::start(
            &router,
            &workdir.0.join("frr-router"),
            protocol.daemon(),
            &router_config(protocol, &rack, "tor"),
        );
        Self {
            nodes,
            router_frr,
            router,
            enterprise,
            internet,
            workdir,
            rack,
            protocol,
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn rack(&self) -> &Rack {
        &self.rack
    }

    /// The router's RIB, from FRR (`show ip route json`).
    pub fn router_frr_routes(&self) -> Vec<FrrRoute> {
        let json = self.router_frr.show("show ip route json");
        parse_frr_routes(&json).unwrap_or_else(|err| panic!("{err}: {json}"))
    }

    /// The router's kernel table (`ip -j route show`).
    pub fn router_kernel_routes(&self) -> Vec<KernelRoute> {
        let output = self.router.ip(&["-j", "route", "show"]);
        let json = String::from_utf8_lossy(&output.stdout);
        parse_kernel_routes(&json).unwrap_or_else(|err| panic!("{err}: {json}"))
    }

    /// What the router knows of `node`'s pod CIDR, in FRR and the kernel.
    pub fn route_state(&self, node: &RoutedNode) -> RouteState {
        let prefix = node.routing.pod_cidr.to_string();
        let protocol = self.protocol.route_protocol();
        let next_hop = node.routing.address;
        let frr = self.router_frr_routes();
        let kernel = self.router_kernel_routes();
        RouteState {
            learned_in_frr: frr_learned(&frr, &prefix, protocol, next_hop).is_some(),
            learned_in_kernel: kernel_learned(&kernel, &prefix, protocol, next_hop).is_some(),
            frr: frr.into_iter().filter(|r| r.prefix == prefix).collect(),
            kernel: kernel.into_iter().filter(|r| r.dst == prefix).collect(),
            prefix,
        }
    }

    /// Polls the router until `node`'s route satisfies `want` (e.g.
    /// [`RouteState::learned`]). Returns how long it took, or the last
    /// state seen when `timeout` passed.
    pub fn wait_for_route(
        &self,
        node: &RoutedNode,
        timeout: Duration,
        want: impl Fn(&RouteState) -> bool,
    ) -> Result<Duration, RouteState> {
        let started = Instant::now();
        let mut last = None;
        let reached = wait_until(timeout, || {
            let state = self.route_state(node);
            let done = want(&state);
            last = Some(state);
            done
        });
        match (reached, last) {
            (true, _) => Ok(started.elapsed()),
            (false, Some(state)) => Err(state),
            (false, None) => Err(self.route_state(node)),
        }
    }

    /// A TCP connection from `pod` to the enterprise host: the source the
    /// host saw. The exchange runs both ways (the host answers with what
    /// it saw), so it needs the routed return path.
    pub fn pod_to_enterprise(&self, pod: &Pod) -> std::io::Result<IpAddr> {
        try_observed_source(
            &pod.netns,
            &self.enterprise,
            IpAddr::V4(ENTERPRISE_HOST_V4),
            CONNECT_TIMEOUT,
        )
    }

    /// A TCP connection the enterprise host opens to `pod`'s own address:
    /// the source the pod saw.
    pub fn enterprise_to_pod(&self, pod: &Pod) -> std::io::Result<IpAddr> {
        try_observed_source(&self.enterprise, &pod.netns, pod.ipv4, CONNECT_TIMEOUT)
    }

    /// A TCP connection from `pod` to the internet host: the source it saw.
    pub fn pod_to_internet(&self, pod: &Pod) -> std::io::Result<IpAddr> {
        try_observed_source(
            &pod.netns,
            &self.internet,
            IpAddr::V4(INTERNET_HOST_V4),
            CONNECT_TIMEOUT,
        )
    }

    /// What to look for once the lab is dropped.
    pub fn residue(&self) -> Residue {
        let mut namespaces = vec![
            self.router.name().to_owned(),
            self.enterprise.name().to_owned(),
            self.internet.name().to_owned(),
        ];
        let mut pids = self.router_frr.pids();
        for node in &self.nodes {
            namespaces.push(node.netns.name().to_owned());
            namespaces.extend(node.pods.iter().map(|pod| pod.netns.name().to_owned()));
            pids.extend(node.frr.pids());
            pids.push(node.agent.pid());
        }
        Residue {
            namespaces,
            pids,
            workdir: self.workdir.0.clone(),
        }
    }
}

/// The router, the enterprise and internet hosts, and the links between.
fn build_router(router: &Netns, enterprise: &Netns, internet: &Netns, rack: &Rack) {
    let bridge = rack.rack_interface.as_str();
    router.ip(&["link", "add", bridge, "type", "bridge"]);
    router.ip(&[
        "addr",
        "add",
        &format!("{}/{}", rack.router_address, rack.subnet.prefix_len()),
        "dev",
        bridge,
    ]);
    router.ip(&["link", "set", bridge, "up"]);
    let gateway = Ipv4Addr::from(u32::from(rack.backbone.network()) + 1);
    for (host, interface, host_address, gateway, len) in [
        (
            enterprise,
            rack.backbone_interface.as_str(),
            ENTERPRISE_HOST_V4,
            gateway,
            rack.backbone.prefix_len(),
        ),
        (
            internet,
            "inet0",
            INTERNET_HOST_V4,
            Ipv4Addr::new(203, 0, 113, 1),
            24,
        ),
    ] {
        router.add_veth(interface, host, "eth0");
        router.ip(&["addr", "add", &format!("{gateway}/{len}"), "dev", interface]);
        router.ip(&["link", "set", interface, "up"]);
        host.ip(&[
            "addr",
            "add",
            &format!("{host_address}/{len}"),
            "dev",
            "eth0",
        ]);
        host.ip(&["link", "set", "eth0", "up"]);
        host.ip(&["route", "add", "default", "via", &gateway.to_string()]);
    }
    router.sysctl("net.ipv4.ip_forward", "1");
}

/// A node on the rack with `pods` pods on its `cni0` bridge, its agent
/// (ready) and its FRR (started, not yet converged).
fn build_node(
    routing: NodeRouting,
    pods: usize,
    agent_args: &[String],
    router: &Netns,
    rack: &Rack,
    protocol: Protocol,
    workdir: &Path,
) -> RoutedNode {
    let netns = Netns::new("ipm-rnode-");
    let rack_port = format!("rk-{}", routing.hostname);
    router.add_veth(&rack_port, &netns, &routing.uplink);
    router.ip(&["link", "set", &rack_port, "master", &rack.rack_interface]);
    router.ip(&["link", "set", &rack_port, "up"]);
    netns.ip(&[
        "addr",
        "add",
        &format!("{}/{}", routing.address, rack.subnet.prefix_len()),
        "dev",
        &routing.uplink,
    ]);
    netns.ip(&["link", "set", &routing.uplink, "up"]);
    // The node's own default gateway is static, as on a real node; the
    // routing protocol only carries the pod CIDR.
    netns.ip(&[
        "route",
        "add",
        "default",
        "via",
        &rack.router_address.to_string(),
    ]);
    let cidr = routing.pod_cidr;
    let pod_gateway = Ipv4Addr::from(u32::from(cidr.network()) + 1);
    netns.ip(&["link", "add", &routing.bridge, "type", "bridge"]);
    netns.ip(&[
        "addr",
        "add",
        &format!("{pod_gateway}/{}", cidr.prefix_len()),
        "dev",
        &routing.bridge,
    ]);
    netns.ip(&["link", "set", &routing.bridge, "up"]);
    netns.sysctl("net.ipv4.ip_forward", "1");

    let mut pod_list = Vec::new();
    for index in 1..=pods {
        let pod = Netns::new("ipm-rpod-");
        let host_interface = format!("veth{index}");
        netns.add_veth(&host_interface, &pod, "eth0");
        netns.ip(&["link", "set", &host_interface, "master", &routing.bridge]);
        netns.ip(&["link", "set", &host_interface, "up"]);
        let address = Ipv4Addr::from(u32::from(cidr.network()) + 9 + index as u32);
        pod.ip(&[
            "addr",
            "add",
            &format!("{address}/{}", cidr.prefix_len()),
            "dev",
            "eth0",
        ]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["route", "add", "default", "via", &pod_gateway.to_string()]);
        pod_list.push(Pod {
            netns: pod,
            ipv4: IpAddr::V4(address),
            ipv6: None,
            host_interface,
        });
    }

    let bpffs = Bpffs::new();
    let agent_dir = workdir.join(format!("agent-{}", routing.hostname));
    fs::create_dir_all(&agent_dir).expect("create agent config dir");
    let agent_config = agent_dir.join("ip-masq-agent");
    fs::write(&agent_config, AGENT_CONFIG).expect("write agent config");
    let pin_dir = bpffs.pin_dir();
    // Its own state directory: the default, /run/ip-masq, is the host's.
    let state_dir = agent_dir.join("state");
    let agent = agent_args
        .iter()
        .fold(
            AgentBuilder::new(
                &netns.path(),
                &[
                    "run",
                    "--config",
                    agent_config.to_str().expect("utf-8 path"),
                    "--pin-path",
                    pin_dir.to_str().expect("utf-8 path"),
                    "--state-dir",
                    state_dir.to_str().expect("utf-8 path"),
                ],
            ),
            |builder, arg| builder.arg(arg.as_str()),
        )
        .spawn();
    agent.wait_ready();

    let frr = Frr::start(
        &netns,
        &workdir.join(format!("frr-{}", routing.hostname)),
        protocol.daemon(),
        &node_config(protocol, rack, &routing),
    );
    RoutedNode {
        frr,
        agent,
        pods: pod_list,
        netns,
        bpffs,
        routing,
        protocol,
    }
}

/// What a dropped lab must not leave behind: its namespaces, its daemons
/// and agents, its scratch directory.
#[derive(Clone, Debug)]
pub struct Residue {
    pub namespaces: Vec<String>,
    pub pids: Vec<u32>,
    pub workdir: PathBuf,
}

impl Residue {
    /// Everything still there, described; empty when teardown was complete.
    /// A process counts if it is one of the recorded pids or if its
    /// command line names the scratch directory (every FRR daemon's does,
    /// through its pid file and sockets, and every agent's, through its
    /// config path).
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let listing = run_ok("ip", &["netns", "list"]);
        let listing = String::from_utf8_lossy(&listing.stdout);
        for name in listing
            .lines()
            .filter_map(|line| line.split_whitespace().next())
        {
            if self.namespaces.iter().any(|ours| ours == name) {
                left.push(format!("namespace {name}"));
            }
        }
        let workdir = self.workdir.to_string_lossy().into_owned();
        if let Ok(entries) = fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if self.pids.contains(&pid) || cmdline.contains(&workdir) {
                    left.push(format!("process {pid}: {}", cmdline.trim()));
                }
            }
        }
        if self.workdir.exists() {
            left.push(format!("directory {}", self.workdir.display()));
        }
        left
    }
}

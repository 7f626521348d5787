//! FRR configuration text for the routed lab, rendered from the lab's
//! addressing plan (pure: no I/O).
//!
//! The statements are the ones in `deploy/routing/`: eBGP from each node
//! to the top-of-rack router with prefix-list route-maps on both ends, or
//! the nodes' pod CIDRs as stub networks in a stub OSPF area with the
//! router as area border router. Only the timers differ, shortened so the
//! lab converges in seconds.

use std::{fmt, net::Ipv4Addr};

/// OSPF area of the rack: the nodes and the router's rack interface.
pub const NODE_AREA: &str = "0.0.0.1";
/// OSPF backbone area, where the router's enterprise side sits.
pub const BACKBONE_AREA: &str = "0.0.0.0";

/// An IPv4 prefix in `a.b.c.d/len` form, host bits clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    network: Ipv4Addr,
    len: u8,
}

impl Prefix {
    /// The prefix of length `len` holding `address` (host bits cleared).
    ///
    /// # Panics
    /// If `len` is over 32: prefixes here are compile-time lab constants.
    pub fn new(address: Ipv4Addr, len: u8) -> Self {
        assert!(len <= 32, "prefix length {len} over 32");
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Self {
            network: Ipv4Addr::from(u32::from(address) & mask),
            len,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `address` is inside the prefix.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        Self::new(address, self.len).network == self.network
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// Which routing protocol carries the pod CIDRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Bgp,
    Ospf,
}

impl Protocol {
    /// The FRR daemon that speaks it (next to zebra).
    pub fn daemon(self) -> &'static str {
        match self {
            Self::Bgp => "bgpd",
            Self::Ospf => "ospfd",
        }
    }

    /// How FRR's JSON and the kernel (`ip route … proto X`) name routes
    /// learned by this protocol.
    pub fn route_protocol(self) -> &'static str {
        match self {
            Self::Bgp => "bgp",
            Self::Ospf => "ospf",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bgp => "BGP",
            Self::Ospf => "OSPF",
        })
    }
}

/// Protocol timers. Production keeps FRR's defaults (or BFD); the lab
/// shortens them so sessions come up and failures show in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub bgp_keepalive: u16,
    pub bgp_hold: u16,
    /// Seconds between a node's attempts to open its BGP session.
    pub bgp_connect_retry: u16,
    pub ospf_hello: u16,
    pub ospf_dead: u16,
    /// Least time between two originations of the same LSA (`timers
    /// throttle lsa all`), and between accepting two copies of one
    /// (`timers lsa min-arrival`). FRR's 5 s and 1 s would add up to six
    /// seconds to every withdrawal.
    pub ospf_lsa_interval_ms: u32,
    pub ospf_lsa_min_arrival_ms: u32,
    /// SPF delay, initial hold and maximum hold (`timers throttle spf`).
    pub ospf_spf_ms: [u32; 3],
}

/// The lab's timers: BGP keepalive 1 s, hold 3 s, retry 1 s; OSPF hello
/// 1 s, dead 3 s, LSAs and SPF without throttling.
pub const LAB_TIMERS: Timers = Timers {
    bgp_keepalive: 1,
    bgp_hold: 3,
    bgp_connect_retry: 1,
    ospf_hello: 1,
    ospf_dead: 3,
    ospf_lsa_interval_ms: 0,
    ospf_lsa_min_arrival_ms: 0,
    ospf_spf_ms: [0, 50, 500],
};

/// The `timers` lines of a `router ospf` block.
fn ospf_throttle(timers: &Timers) -> String {
    let [delay, hold, max_hold] = timers.ospf_spf_ms;
    format!(
        " timers throttle lsa all {}\n timers lsa min-arrival {}\n timers throttle spf {delay} {hold} {max_hold}\n",
        timers.ospf_lsa_interval_ms, timers.ospf_lsa_min_arrival_ms
    )
}

/// What every config of the rack shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rack {
    /// The router's address on the rack subnet: router-id and BGP peer.
    pub router_address: Ipv4Addr,
    /// The subnet the nodes and the router share.
    pub subnet: Prefix,
    pub router_asn: u32,
    /// The cluster's pod range; each node owns one block of it.
    pub pod_range: Prefix,
    /// Length of each node's block (its podCIDR).
    pub node_block_len: u8,
    /// The router's link on the backbone side (area 0 in OSPF).
    pub backbone: Prefix,
    /// Router interface on the rack subnet.
    pub rack_interface: String,
    /// Router interface on the backbone side; passive in OSPF, since the
    /// enterprise host there speaks no OSPF.
    pub backbone_interface: String,
    pub timers: Timers,
}

/// One node's routing identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRouting {
    pub hostname: String,
    /// The node's address on the rack subnet: router-id, BGP source, and
    /// what masqueraded pod traffic shows.
    pub address: Ipv4Addr,
    pub asn: u32,
    /// The node's podCIDR, held by its CNI bridge.
    pub pod_cidr: Prefix,
    /// The node's interface on the rack subnet.
    pub uplink: String,
    /// The CNI bridge holding the pods' gateway address.
    pub bridge: String,
}

/// The lines every frr.conf starts with.
fn header(hostname: &str) -> String {
    format!(
        "frr version 8.4\nfrr defaults datacenter\nhostname {hostname}\nservice integrated-vtysh-config\n!\n"
    )
}

/// An OSPF interface on the rack subnet: its DR priority and the timers.
fn ospf_rack_interface(name: &str, priority: u8, timers: &Timers) -> String {
    format!(
        "interface {name}\n ip ospf priority {priority}\n ip ospf hello-interval {}\n ip ospf dead-interval {}\nexit\n!\n",
        timers.ospf_hello, timers.ospf_dead
    )
}

/// The node's frr.conf: announce the pod CIDR, and only it.
pub fn node_config(protocol: Protocol, rack: &Rack, node: &NodeRouting) -> String {
    match protocol {
        Protocol::Bgp => node_bgp(rack, node),
        Protocol::Ospf => node_ospf(rack, node),
    }
}

/// The router's frr.conf: accept per-node blocks of the pod range.
pub fn router_config(protocol: Protocol, rack: &Rack, hostname: &str) -> String {
    match protocol {
        Protocol::Bgp => router_bgp(rack, hostname),
        Protocol::Ospf => router_ospf(rack, hostname),
    }
}

fn node_bgp(rack: &Rack, node: &NodeRouting) -> String {
    let NodeRouting {
        hostname,
        address,
        asn,
        pod_cidr,
        ..
    } = node;
    let router = rack.router_address;
    let router_asn = rack.router_asn;
    let Timers {
        bgp_keepalive,
        bgp_hold,
        bgp_connect_retry,
        ..
    } = rack.timers;
    format!(
        "{header}\
ip prefix-list POD-CIDR seq 10 permit {pod_cidr}
!
route-map TOR-OUT permit 10
 match ip address prefix-list POD-CIDR
exit
!
route-map TOR-IN deny 10
exit
!
router bgp {asn}
 bgp router-id {address}
 bgp log-neighbor-changes
 timers bgp {bgp_keepalive} {bgp_hold}
 neighbor {router} remote-as {router_asn}
 neighbor {router} description top-of-rack
 neighbor {router} ttl-security hops 1
 neighbor {router} timers connect {bgp_connect_retry}
 !
 address-family ipv4 unicast
  network {pod_cidr}
  neighbor {router} route-map TOR-IN in
  neighbor {router} route-map TOR-OUT out
 exit-address-family
exit
!
",
        header = header(hostname),
    )
}

fn router_bgp(rack: &Rack, hostname: &str) -> String {
    let Rack {
        router_address,
        subnet,
        router_asn,
        pod_range,
        node_block_len,
        timers,
        ..
    } = rack;
    let Timers {
        bgp_keepalive,
        bgp_hold,
        ..
    } = timers;
    format!(
        "{header}\
ip prefix-list NODE-PODS seq 10 permit {pod_range} ge {node_block_len} le {node_block_len}
!
route-map NODES-IN permit 10
 match ip address prefix-list NODE-PODS
exit
!
route-map NODES-OUT deny 10
exit
!
router bgp {router_asn}
 bgp router-id {router_address}
 bgp log-neighbor-changes
 timers bgp {bgp_keepalive} {bgp_hold}
 neighbor NODES peer-group
 neighbor NODES remote-as external
 neighbor NODES description kubernetes nodes
 neighbor NODES ttl-security hops 1
 bgp listen range {subnet} peer-group NODES
 bgp listen limit 200
 !
 address-family ipv4 unicast
  neighbor NODES route-map NODES-IN in
  neighbor NODES route-map NODES-OUT out
  neighbor NODES maximum-prefix 8
 exit-address-family
exit
!
",
        header = header(hostname),
    )
}

fn node_ospf(rack: &Rack, node: &NodeRouting) -> String {
    let NodeRouting {
        hostname,
        address,
        pod_cidr,
        uplink,
        bridge,
        ..
    } = node;
    let subnet = rack.subnet;
    format!(
        "{header}{uplink_stanza}\
interface {bridge}
 ip ospf passive
exit
!
router ospf
 ospf router-id {address}
 network {subnet} area {NODE_AREA}
 network {pod_cidr} area {NODE_AREA}
 area {NODE_AREA} stub
{throttle}exit
!
",
        header = header(hostname),
        uplink_stanza = ospf_rack_interface(uplink, 0, &rack.timers),
        throttle = ospf_throttle(&rack.timers),
    )
}

fn router_ospf(rack: &Rack, hostname: &str) -> String {
    let Rack {
        router_address,
        subnet,
        pod_range,
        node_block_len,
        backbone,
        rack_interface,
        backbone_interface,
        timers,
        ..
    } = rack;
    format!(
        "{header}\
ip prefix-list RACK-OUT seq 10 permit {pod_range} ge {node_block_len} le {node_block_len}
ip prefix-list RACK-OUT seq 20 permit {subnet}
!
{rack_stanza}\
interface {backbone_interface}
 ip ospf passive
exit
!
router ospf
 ospf router-id {router_address}
 network {subnet} area {NODE_AREA}
 network {backbone} area {BACKBONE_AREA}
 area {NODE_AREA} stub
 area {NODE_AREA} filter-list prefix RACK-OUT out
{throttle}exit
!
",
        header = header(hostname),
        rack_stanza = ospf_rack_interface(rack_interface, 200, timers),
        throttle = ospf_throttle(timers),
    )
}

/// vtysh commands (one `-c` each) that stop `node` announcing its pod
/// CIDR, as an operator draining the node would type them.
pub fn withdraw_commands(protocol: Protocol, node: &NodeRouting) -> Vec<String> {
    let mut commands = announce_commands(protocol, node);
    let last = commands
        .pop()
        .expect("announce commands end with the statement");
    commands.push(format!("no {last}"));
    commands
}

/// vtysh commands that make `node` announce its pod CIDR again.
pub fn announce_commands(protocol: Protocol, node: &NodeRouting) -> Vec<String> {
    let cidr = node.pod_cidr;
    match protocol {
        Protocol::Bgp => vec![
            "configure terminal".into(),
            format!("router bgp {}", node.asn),
            "address-family ipv4 unicast".into(),
            format!("network {cidr}"),
        ],
        Protocol::Ospf => vec![
            "configure terminal".into(),
            "router ospf".into(),
            format!("network {cidr} area {NODE_AREA}"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rack() -> Rack {
        crate::routed::lab_rack()
    }

    fn node() -> NodeRouting {
        crate::routed::lab_node(1)
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().map(str::trim).collect()
    }

    #[test]
    fn prefix_clears_host_bits_and_tests_membership() {
        let prefix = Prefix::new(Ipv4Addr::new(10, 244, 1, 77), 24);
        assert_eq!(prefix.to_string(), "10.244.1.0/24");
        assert!(prefix.contains(Ipv4Addr::new(10, 244, 1, 200)));
        assert!(!prefix.contains(Ipv4Addr::new(10, 244, 2, 1)));
        assert_eq!(
            Prefix::new(Ipv4Addr::new(1, 2, 3, 4), 0).to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            Prefix::new(Ipv4Addr::new(1, 2, 3, 4), 32).to_string(),
            "1.2.3.4/32"
        );
    }

    #[test]
    fn bgp_node_announces_only_its_pod_cidr_to_the_router() {
        let config = node_config(Protocol::Bgp, &rack(), &node());
        let lines = lines(&config);
        assert!(lines.contains(&"ip prefix-list POD-CIDR seq 10 permit 10.244.1.0/24"));
        assert!(lines.contains(&"network 10.244.1.0/24"));
        assert!(lines.contains(&"neighbor 192.168.10.1 remote-as 65010"));
        assert!(lines.contains(&"neighbor 192.168.10.1 route-map TOR-OUT out"));
        assert!(lines.contains(&"timers bgp 1 3"));
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("network ")).count(),
            1
        );
    }

    #[test]
    fn bgp_router_accepts_node_blocks_from_the_rack_subnet() {
        let config = router_config(Protocol::Bgp, &rack(), "tor");
        let lines = lines(&config);
        assert!(
            lines.contains(&"ip prefix-list NODE-PODS seq 10 permit 10.244.0.0/16 ge 24 le 24")
        );
        assert!(lines.contains(&"bgp listen range 192.168.10.0/24 peer-group NODES"));
        assert!(lines.contains(&"neighbor NODES route-map NODES-IN in"));
    }

    #[test]
    fn ospf_node_puts_bridge_subnet_in_the_stub_area_passively() {
        let config = node_config(Protocol::Ospf, &rack(), &node());
        let lines = lines(&config);
        assert!(lines.contains(&"network 10.244.1.0/24 area 0.0.0.1"));
        assert!(lines.contains(&"network 192.168.10.0/24 area 0.0.0.1"));
        assert!(lines.contains(&"area 0.0.0.1 stub"));
        let bridge = config.find("interface cni0").expect("bridge stanza");
        assert!(config[bridge..].lines().nth(1) == Some(" ip ospf passive"));
    }

    #[test]
    fn ospf_router_is_border_between_rack_area_and_backbone() {
        let config = router_config(Protocol::Ospf, &rack(), "tor");
        let lines = lines(&config);
        assert!(lines.contains(&"network 10.50.0.0/24 area 0.0.0.0"));
        assert!(lines.contains(&"area 0.0.0.1 stub"));
        assert!(lines.contains(&"area 0.0.0.1 filter-list prefix RACK-OUT out"));
        assert!(lines.contains(&"ip prefix-list RACK-OUT seq 20 permit 192.168.10.0/24"));
    }

    #[test]
    fn withdraw_negates_the_statement_that_announces() {
        for protocol in [Protocol::Bgp, Protocol::Ospf] {
            let config = node_config(protocol, &rack(), &node());
            let announce = announce_commands(protocol, &node());
            let withdraw = withdraw_commands(protocol, &node());
            let statement = announce.last().unwrap();
            // The announcing statement is one the rendered config holds, so
            // re-announcing restores exactly the configured state.
            assert!(lines(&config).contains(&statement.as_str()), "{protocol}");
            assert_eq!(withdraw.last().unwrap(), &format!("no {statement}"));
            assert_eq!(
                announce[..announce.len() - 1],
                withdraw[..withdraw.len() - 1]
            );
            assert_eq!(withdraw[0], "configure terminal");
        }
    }
}

//! Which host interfaces face pods (pure), and reading them, with the
//! routes that make one an uplink, from rtnetlink.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt as _;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteType};
use rtnetlink::RouteMessageBuilder;
use thiserror::Error;

/// A network interface as the agent needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    /// rtnetlink's link kind (`veth`, `bridge`, ...), when the kernel reports one.
    pub kind: Option<String>,
    /// Whether frames start with an Ethernet header, which the classifier parses.
    pub ethernet: bool,
    /// Whether a default route (IPv4 or IPv6) leaves through it: the node's
    /// uplink, even when it is a veth (kind and other container-based
    /// nodes).
    pub default_route: bool,
}

impl Interface {
    /// Reads an interface from an rtnetlink link message.
    pub fn from_message(message: &LinkMessage) -> Option<Self> {
        let mut name = None;
        let mut kind = None;
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(value) => name = Some(value.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    kind = infos.iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind_name(kind)),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        Some(Self {
            index: message.header.index,
            name: name?,
            kind,
            ethernet: message.header.link_layer_type == LinkLayerType::Ether,
            default_route: false,
        })
    }
}

/// Whether a route message is a default route (`0.0.0.0/0` or `::/0`) that
/// forwards packets, in any table but `local`; routing policy can send the
/// node's traffic through any table, so every one counts.
pub fn is_default_route(route: &RouteMessage) -> bool {
    const RT_TABLE_LOCAL: u8 = 255;
    route.header.destination_prefix_length == 0
        && route.header.kind == RouteType::Unicast
        && route.header.table != RT_TABLE_LOCAL
}

/// The interfaces that default routes leave through, multipath next hops
/// included.
pub fn default_route_interfaces<'a>(
    routes: impl IntoIterator<Item = &'a RouteMessage>,
) -> BTreeSet<u32> {
    let mut interfaces = BTreeSet::new();
    for route in routes.into_iter().filter(|route| is_default_route(route)) {
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Oif(index) => {
                    interfaces.insert(*index);
                }
                RouteAttribute::MultiPath(hops) => {
                    interfaces.extend(hops.iter().map(|hop| hop.interface_index));
                }
                _ => {}
            }
        }
    }
    interfaces
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Veth => "veth".into(),
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Other(other) => other.clone(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// Why a `--interfaces` value was refused.
#[derive(Debug, Error)]
#[error("invalid interface pattern {pattern:?}")]
pub struct PatternError {
    pattern: String,
    #[source]
    source: glob::PatternError,
}

/// Which interfaces get the classifier.
#[derive(Clone, Debug)]
pub enum Selector {
    /// Every veth: the host side of each pod's interface pair.
    AllVeth,
    /// Interfaces whose name matches one of the globs (`--interfaces`).
    Names(Vec<glob::Pattern>),
}

impl Selector {
    /// Parses `--interfaces GLOB[,GLOB…]`; `None` selects every veth.
    ///
    /// # Errors
    /// Returns the first pattern that is not a valid glob.
    pub fn parse(globs: Option<&str>) -> Result<Self, PatternError> {
        let Some(globs) = globs else {
            return Ok(Self::AllVeth);
        };
        let patterns = globs
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(|pattern| {
                glob::Pattern::new(pattern).map_err(|source| PatternError {
                    pattern: pattern.to_owned(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::Names(patterns))
    }

    /// Whether the classifier belongs on `interface`. Only Ethernet-framed
    /// interfaces qualify: the classifier reads an Ethernet header. The
    /// default never takes an interface a default route leaves through: on
    /// a container-based node the uplink is a veth too, and classifying it
    /// would run the classifier on all the node's inbound traffic; only
    /// `--interfaces` can name it.
    pub fn selects(&self, interface: &Interface) -> bool {
        if !interface.ethernet {
            return false;
        }
        match self {
            Self::AllVeth => interface.kind.as_deref() == Some("veth") && !interface.default_route,
            Self::Names(patterns) => patterns.iter().any(|p| p.matches(&interface.name)),
        }
    }
}

/// Errors reading interfaces.
#[derive(Debug, Error)]
pub enum InterfacesError {
    #[error("cannot open an rtnetlink socket")]
    Socket(#[source] std::io::Error),
    #[error("rtnetlink link dump failed")]
    Dump(#[source] rtnetlink::Error),
    #[error("rtnetlink route dump failed")]
    RouteDump(#[source] rtnetlink::Error),
}

/// Every interface in the current network namespace, each marked when a
/// default route leaves through it.
///
/// # Errors
/// Fails when rtnetlink cannot be reached.
pub async fn list(handle: &rtnetlink::Handle) -> Result<Vec<Interface>, InterfacesError> {
    let messages: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(InterfacesError::Dump)?;
    let uplinks = default_route_interfaces(&routes(handle).await?);
    Ok(messages
        .iter()
        .filter_map(Interface::from_message)
        .map(|mut interface| {
            interface.default_route = uplinks.contains(&interface.index);
            interface
        })
        .collect())
}

/// Every IPv4 and IPv6 route, of every table (a dump is not filtered by
/// table).
async fn routes(handle: &rtnetlink::Handle) -> Result<Vec<RouteMessage>, InterfacesError> {
    let mut routes: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(InterfacesError::RouteDump)?;
    let v6: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(InterfacesError::RouteDump)?;
    routes.extend(v6);
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, kind: Option<&str>, ethernet: bool) -> Interface {
        Interface {
            index: 7,
            name: name.into(),
            kind: kind.map(Into::into),
            ethernet,
            default_route: false,
        }
    }

    fn route(prefix: &str, kind: RouteType, table: u32, oif: u32) -> RouteMessage {
        let net: ipnet::IpNet = prefix.parse().unwrap();
        RouteMessageBuilder::<std::net::IpAddr>::new()
            .destination_prefix(net.addr(), net.prefix_len())
            .unwrap()
            .kind(kind)
            .table_id(table)
            .output_interface(oif)
            .build()
    }

    #[test]
    fn the_default_never_selects_the_interface_of_a_default_route() {
        let selector = Selector::parse(None).unwrap();
        let mut uplink = iface("eth0", Some("veth"), true);
        assert!(selector.selects(&uplink));
        uplink.default_route = true;
        assert!(!selector.selects(&uplink));
        // Named, it is taken.
        assert!(Selector::parse(Some("eth0")).unwrap().selects(&uplink));
    }

    #[test]
    fn default_routes_are_found_in_every_table_and_next_hop() {
        use netlink_packet_route::route::RouteNextHop;
        let mut multipath = route("::/0", RouteType::Unicast, 254, 0);
        multipath
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        let hop = |interface_index| {
            let mut hop = RouteNextHop::default();
            hop.interface_index = interface_index;
            hop
        };
        multipath
            .attributes
            .push(RouteAttribute::MultiPath(vec![hop(11), hop(12)]));
        let routes = [
            route("0.0.0.0/0", RouteType::Unicast, 254, 2),
            // A policy table's default route, as an ENI's on AWS.
            route("0.0.0.0/0", RouteType::Unicast, 100, 3),
            // Not default routes, or ones that forward nothing.
            route("10.244.1.5/32", RouteType::Unicast, 254, 4),
            route("0.0.0.0/0", RouteType::Unreachable, 254, 5),
            route("0.0.0.0/0", RouteType::Unicast, 255, 6),
            route("0.0.0.0/1", RouteType::Unicast, 254, 7),
            multipath,
        ];
        assert_eq!(
            default_route_interfaces(&routes),
            BTreeSet::from([2, 3, 11, 12])
        );
    }

    #[test]
    fn default_selects_every_veth_only() {
        let selector = Selector::parse(None).unwrap();
        assert!(selector.selects(&iface("veth1234", Some("veth"), true)));
        assert!(selector.selects(&iface("cali0ab", Some("veth"), true)));
        assert!(!selector.selects(&iface("cni0", Some("bridge"), true)));
        assert!(!selector.selects(&iface("eth0", None, true)));
        assert!(!selector.selects(&iface("lo", None, false)));
    }

    #[test]
    fn globs_select_by_name() {
        let selector = Selector::parse(Some("cni0, cali*")).unwrap();
        assert!(selector.selects(&iface("cni0", Some("bridge"), true)));
        assert!(selector.selects(&iface("cali12", Some("veth"), true)));
        assert!(!selector.selects(&iface("veth1", Some("veth"), true)));
        assert!(!selector.selects(&iface("cni01", Some("bridge"), true)));
    }

    #[test]
    fn non_ethernet_interfaces_are_never_selected() {
        let selector = Selector::parse(Some("*")).unwrap();
        assert!(!selector.selects(&iface("wg0", Some("wireguard"), false)));
        assert!(selector.selects(&iface("eth0", None, true)));
    }

    #[test]
    fn bad_glob_is_refused() {
        let err = Selector::parse(Some("veth[")).unwrap_err();
        assert!(err.to_string().contains("veth["));
    }
}

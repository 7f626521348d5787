//! Reading routing tables: FRR's `show ip route json` and the kernel's
//! `ip -j route show`, parsed into plain values (pure: no I/O), and the
//! question the lab asks of them: did the router learn this prefix from
//! that node?

use std::net::Ipv4Addr;

use serde_json::Value;
use thiserror::Error;

/// Why a route listing could not be read.
#[derive(Debug, Error)]
pub enum RouteParseError {
    #[error("route listing is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// JSON, but not shaped like the listing (names what was expected).
    #[error("unexpected route listing: expected {0}")]
    Shape(&'static str),
}

/// One route of FRR's RIB, as `show ip route json` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrrRoute {
    pub prefix: String,
    /// `bgp`, `ospf`, `connected`, `kernel`, …
    pub protocol: String,
    /// Chosen as the best route for the prefix.
    pub selected: bool,
    /// Pushed into the kernel's table.
    pub installed: bool,
    /// Gateways of the active next hops (none for connected routes).
    pub next_hops: Vec<Ipv4Addr>,
}

/// One route of the kernel's main table, as `ip -j route show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRoute {
    /// `a.b.c.d/len`, a bare address for a /32, or `default`.
    pub dst: String,
    pub gateway: Option<Ipv4Addr>,
    pub dev: Option<String>,
    /// `kernel`, `boot`, `bgp`, `ospf`, …
    pub protocol: String,
}

/// Parses `show ip route json`: an object mapping each prefix to the list
/// of its routes.
pub fn parse_frr_routes(json: &str) -> Result<Vec<FrrRoute>, RouteParseError> {
    let value: Value = serde_json::from_str(json).map_err(RouteParseError::Json)?;
    let prefixes = value
        .as_object()
        .ok_or(RouteParseError::Shape("an object keyed by prefix"))?;
    let mut routes = Vec::new();
    for (prefix, entries) in prefixes {
        let entries = entries
            .as_array()
            .ok_or(RouteParseError::Shape("a list of routes per prefix"))?;
        for entry in entries {
            let flag = |name: &str| entry.get(name).and_then(Value::as_bool).unwrap_or(false);
            let next_hops = entry
                .get("nexthops")
                .and_then(Value::as_array)
                .map(|hops| {
                    hops.iter()
                        .filter(|hop| hop.get("active").and_then(Value::as_bool) == Some(true))
                        .filter_map(|hop| hop.get("ip")?.as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            routes.push(FrrRoute {
                prefix: prefix.clone(),
                protocol: entry
                    .get("protocol")
                    .and_then(Value::as_str)
                    .ok_or(RouteParseError::Shape("a protocol on every route"))?
                    .to_owned(),
                selected: flag("selected"),
                installed: flag("installed"),
                next_hops,
            });
        }
    }
    Ok(routes)
}

/// Parses `ip -j route show`: a list of route objects.
pub fn parse_kernel_routes(json: &str) -> Result<Vec<KernelRoute>, RouteParseError> {
    let value: Value = serde_json::from_str(json).map_err(RouteParseError::Json)?;
    let entries = value
        .as_array()
        .ok_or(RouteParseError::Shape("a list of routes"))?;
    entries
        .iter()
        .map(|entry| {
            let text = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
            Ok(KernelRoute {
                dst: text("dst").ok_or(RouteParseError::Shape("a dst on every route"))?,
                gateway: text("gateway").and_then(|g| g.parse().ok()),
                dev: text("dev"),
                // iproute2 omits the protocol of routes added without one.
                protocol: text("protocol").unwrap_or_else(|| "boot".into()),
            })
        })
        .collect()
}

/// The route to `prefix` that `protocol` learned via `next_hop`, if FRR
/// selected it and installed it in the kernel.
pub fn frr_learned<'a>(
    routes: &'a [FrrRoute],
    prefix: &str,
    protocol: &str,
    next_hop: Ipv4Addr,
) -> Option<&'a FrrRoute> {
    routes.iter().find(|route| {
        route.prefix == prefix
            && route.protocol == protocol
            && route.selected
            && route.installed
            && route.next_hops.contains(&next_hop)
    })
}

/// The kernel route to `prefix` through `next_hop` that `protocol`'s
/// daemon installed.
pub fn kernel_learned<'a>(
    routes: &'a [KernelRoute],
    prefix: &str,
    protocol: &str,
    next_hop: Ipv4Addr,
) -> Option<&'a KernelRoute> {
    routes.iter().find(|route| {
        route.dst == prefix && route.protocol == protocol && route.gateway == Some(next_hop)
    })
}

/// Whether any route to `prefix`, however learned, is in the listing.
pub fn kernel_has(routes: &[KernelRoute], prefix: &str) -> bool {
    routes.iter().any(|route| route.dst == prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `show ip route json` of FRR 8.4.4: a BGP route
    /// and a connected one.
    const FRR_JSON: &str = r#"{
      "10.244.1.0/24":[{"prefix":"10.244.1.0/24","prefixLen":24,"protocol":"bgp",
        "vrfId":0,"selected":true,"destSelected":true,"distance":20,"metric":0,
        "installed":true,"table":254,
        "nexthops":[{"flags":3,"fib":true,"ip":"192.168.10.11","afi":"ipv4",
          "interfaceIndex":2,"interfaceName":"rack0","active":true,"weight":1}]}],
      "10.50.0.0/24":[{"prefix":"10.50.0.0/24","protocol":"connected","selected":true,
        "installed":true,"nexthops":[{"flags":3,"fib":true,"directlyConnected":true,
          "interfaceIndex":3,"interfaceName":"ent0","active":true}]}],
      "10.244.2.0/24":[{"prefix":"10.244.2.0/24","protocol":"ospf","selected":false,
        "installed":false,"nexthops":[{"ip":"192.168.10.12","active":false}]}]
    }"#;

    /// As `ip -j route show` prints it (iproute2 6.1).
    const KERNEL_JSON: &str = r#"[
      {"dst":"default","gateway":"203.0.113.1","dev":"inet0","flags":[]},
      {"dst":"10.244.1.0/24","nhid":6,"gateway":"192.168.10.11","dev":"rack0",
       "protocol":"bgp","metric":20,"flags":[]},
      {"dst":"192.168.10.0/24","dev":"rack0","protocol":"kernel","scope":"link",
       "prefsrc":"192.168.10.1","flags":[]}
    ]"#;

    #[test]
    fn frr_listing_parses_protocol_state_and_active_next_hops() {
        let routes = parse_frr_routes(FRR_JSON).unwrap();
        assert_eq!(routes.len(), 3);
        let bgp = routes.iter().find(|r| r.prefix == "10.244.1.0/24").unwrap();
        assert_eq!(bgp.protocol, "bgp");
        assert!(bgp.selected && bgp.installed);
        assert_eq!(bgp.next_hops, [Ipv4Addr::new(192, 168, 10, 11)]);
        let connected = routes.iter().find(|r| r.prefix == "10.50.0.0/24").unwrap();
        assert!(connected.next_hops.is_empty());
        // An inactive next hop is not a next hop.
        let ospf = routes.iter().find(|r| r.prefix == "10.244.2.0/24").unwrap();
        assert!(ospf.next_hops.is_empty());
    }

    #[test]
    fn learned_needs_protocol_selection_installation_and_next_hop() {
        let routes = parse_frr_routes(FRR_JSON).unwrap();
        let node1 = Ipv4Addr::new(192, 168, 10, 11);
        let node2 = Ipv4Addr::new(192, 168, 10, 12);
        assert!(frr_learned(&routes, "10.244.1.0/24", "bgp", node1).is_some());
        assert!(frr_learned(&routes, "10.244.1.0/24", "ospf", node1).is_none());
        assert!(frr_learned(&routes, "10.244.1.0/24", "bgp", node2).is_none());
        // Present but neither selected nor installed.
        assert!(frr_learned(&routes, "10.244.2.0/24", "ospf", node2).is_none());
    }

    #[test]
    fn kernel_listing_parses_and_defaults_missing_protocol_to_boot() {
        let routes = parse_kernel_routes(KERNEL_JSON).unwrap();
        assert_eq!(routes[0].protocol, "boot");
        assert_eq!(routes[0].dst, "default");
        let node1 = Ipv4Addr::new(192, 168, 10, 11);
        let learned = kernel_learned(&routes, "10.244.1.0/24", "bgp", node1).unwrap();
        assert_eq!(learned.dev.as_deref(), Some("rack0"));
        assert!(kernel_learned(&routes, "10.244.1.0/24", "ospf", node1).is_none());
        assert!(kernel_has(&routes, "192.168.10.0/24"));
        assert!(!kernel_has(&routes, "10.244.2.0/24"));
    }

    #[test]
    fn malformed_listings_are_errors() {
        assert!(matches!(
            parse_frr_routes("not json"),
            Err(RouteParseError::Json(_))
        ));
        assert!(matches!(
            parse_frr_routes("[]"),
            Err(RouteParseError::Shape(_))
        ));
        assert!(matches!(
            parse_kernel_routes("{}"),
            Err(RouteParseError::Shape(_))
        ));
        assert!(matches!(
            parse_kernel_routes(r#"[{"gateway":"1.2.3.4"}]"#),
            Err(RouteParseError::Shape(_))
        ));
        // An empty table is valid, and FRR prints `{}` for an empty RIB.
        assert!(parse_kernel_routes("[]").unwrap().is_empty());
        assert!(parse_frr_routes("{}").unwrap().is_empty());
    }
}

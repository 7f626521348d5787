//! Which host interfaces face pods (pure), and reading them from rtnetlink.

use futures::TryStreamExt as _;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkLayerType, LinkMessage};
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
        })
    }
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
    /// interfaces qualify: the classifier reads an Ethernet header.
    pub fn selects(&self, interface: &Interface) -> bool {
        if !interface.ethernet {
            return false;
        }
        match self {
            Self::AllVeth => interface.kind.as_deref() == Some("veth"),
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
}

/// Every interface in the current network namespace.
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
    Ok(messages
        .iter()
        .filter_map(Interface::from_message)
        .collect())
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
        }
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

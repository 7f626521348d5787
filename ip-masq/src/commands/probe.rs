//! Read-only probes of what the agent left in the kernel, shared by
//! `status` and `doctor`: the programs at each interface's tcx ingress and
//! the links pinned under the pin directory.

use std::{collections::BTreeSet, path::Path};

use aya::programs::{
    SchedClassifier, TcAttachType,
    links::{FdLink, PinnedLink},
};
use serde::Serialize;

use crate::commands::installed::InspectError;
use crate::error::error_chain;
use crate::kernel::datapath;
use crate::kernel::netlink;
use crate::kernel::netlink::Selector;

/// A program at tcx ingress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct TcxProgram {
    pub(crate) id: u32,
    pub(crate) name: String,
}

/// An interface and the programs at its tcx ingress, in chain order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct InterfaceProbe {
    pub(crate) name: String,
    pub(crate) ifindex: u32,
    /// Whether the agent's selector picks it.
    pub(crate) selected: bool,
    pub(crate) programs: Vec<TcxProgram>,
}

/// Lists every interface of this network namespace with its tcx ingress
/// programs.
///
/// # Errors
/// Fails when rtnetlink cannot be reached.
pub(crate) fn probe_interfaces(selector: &Selector) -> Result<Vec<InterfaceProbe>, InspectError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(InspectError::Runtime)?;
    let present = runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(netlink::InterfacesError::Socket)?;
        tokio::spawn(connection);
        netlink::list(&handle).await
    })?;
    Ok(present
        .into_iter()
        .map(|interface| {
            // An interface can vanish between the dump and the query: it
            // then simply shows no programs.
            let programs = SchedClassifier::query_tcx(&interface.name, TcAttachType::Ingress)
                .map(|(_, programs)| {
                    programs
                        .iter()
                        .map(|p| TcxProgram {
                            id: p.id(),
                            name: p.name_as_str().unwrap_or_default().to_owned(),
                        })
                        .collect()
                })
                // Without CAP_SYS_ADMIN (a pod granted only NET_ADMIN and BPF)
                // a program's name cannot be read, only its id.
                .or_else(|_| {
                    datapath::tcx_ingress_ids(interface.index).map(|ids| {
                        ids.into_iter()
                            .map(|id| TcxProgram {
                                id,
                                name: "(name needs CAP_SYS_ADMIN)".into(),
                            })
                            .collect()
                    })
                })
                .unwrap_or_default();
            InterfaceProbe {
                selected: selector.selects(&interface),
                name: interface.name,
                ifindex: interface.index,
                programs,
            }
        })
        .collect())
}

/// A link pinned under the pin directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PinnedLinkView {
    pub(crate) ifindex: u32,
    pub(crate) link_id: Option<u32>,
    pub(crate) program_id: Option<u32>,
    pub(crate) error: Option<String>,
}

/// The links pinned under `pin_dir` and the programs they run.
pub(crate) fn pinned_links(pin_dir: &Path) -> Vec<PinnedLinkView> {
    let Ok(indexes) = datapath::pinned_ifindexes(pin_dir) else {
        return Vec::new();
    };
    indexes
        .into_iter()
        .map(|ifindex| {
            let info = PinnedLink::from_pin(datapath::link_pin_path(pin_dir, ifindex))
                .map_err(|err| error_chain(&err))
                .and_then(|link| FdLink::from(link).info().map_err(|err| error_chain(&err)));
            match info {
                Ok(info) => PinnedLinkView {
                    ifindex,
                    link_id: Some(info.id()),
                    program_id: Some(info.program_id()),
                    error: None,
                },
                Err(error) => PinnedLinkView {
                    ifindex,
                    link_id: None,
                    program_id: None,
                    error: Some(error),
                },
            }
        })
        .collect()
}

/// Ids of the programs our pinned links run.
pub(crate) fn our_program_ids(pin_dir: &Path) -> BTreeSet<u32> {
    pinned_links(pin_dir)
        .iter()
        .filter_map(|link| link.program_id)
        .collect()
}

//! The classifier on interfaces: one tcx link per interface, pinned under
//! `links/` so that it outlives the agent, adopted by the next run.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use aya::programs::{
    LinkOrder, TcAttachType,
    links::{FdLink, LinkError, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
};

use super::{Attachment, Datapath, DatapathError, LINKS_DIR, tcx_ingress_ids};

impl Datapath {
    /// Makes sure `interface` carries exactly one instance of the classifier
    /// at tcx ingress, first in the chain.
    ///
    /// A link pinned by an earlier run that is still attached to this
    /// interface is switched to this run's program with `BPF_LINK_UPDATE`,
    /// which is atomic: no packet goes unclassified, and no second copy is
    /// attached. A pin whose link no longer serves this interface is removed.
    ///
    /// # Errors
    /// Fails when the kernel refuses the attachment or the pin.
    pub(crate) fn attach(
        &mut self,
        interface: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        let pin = self.link_pin(ifindex);
        if let Some(link) = self.live_pinned_link(&pin, interface)? {
            let link = SchedClassifierLink::try_from(FdLink::from(link)).map_err(|source| {
                DatapathError::Link {
                    path: pin.clone(),
                    source: Box::new(source),
                }
            })?;
            let program = self.program()?;
            let id = program.attach_to_link(link)?;
            // The pin keeps the link alive; dropping our handle only closes our fd.
            let _handle = program.take_link(id)?;
            return Ok(Attachment::Adopted);
        }
        let program = self.program()?;
        let id = program.attach_with_options(
            interface,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::first()),
        )?;
        let link: FdLink =
            program
                .take_link(id)?
                .try_into()
                .map_err(|source| DatapathError::Link {
                    path: pin.clone(),
                    source: Box::new(source),
                })?;
        link.pin(&pin).map_err(|source| DatapathError::PinLink {
            path: pin.clone(),
            source: Box::new(source),
        })?;
        Ok(Attachment::Created)
    }

    /// Opens the link pinned for this interface if it is still attached
    /// there; removes the pin if it is stale.
    fn live_pinned_link(
        &self,
        pin: &Path,
        interface: &str,
    ) -> Result<Option<PinnedLink>, DatapathError> {
        let link = match PinnedLink::from_pin(pin) {
            Ok(link) => link,
            Err(LinkError::SyscallError(err)) if err.io_error.kind() == io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(source) => {
                return Err(DatapathError::Link {
                    path: pin.to_owned(),
                    source: Box::new(source),
                });
            }
        };
        let fd_link = FdLink::from(link);
        let program_id = fd_link
            .info()
            .map_err(|source| DatapathError::Link {
                path: pin.to_owned(),
                source: Box::new(source),
            })?
            .program_id();
        let attached = attached_program_ids(interface)?;
        if program_id != 0 && attached.contains(&program_id) {
            // Re-open from the pin: `FdLink` has no way back to `PinnedLink`.
            drop(fd_link);
            return PinnedLink::from_pin(pin)
                .map(Some)
                .map_err(|source| DatapathError::Link {
                    path: pin.to_owned(),
                    source: Box::new(source),
                });
        }
        fs::remove_file(pin).map_err(|source| DatapathError::Unpin {
            path: pin.to_owned(),
            source,
        })?;
        Ok(None)
    }

    /// Forgets an interface that went away: the kernel already detached the
    /// link, only its pin remains.
    ///
    /// # Errors
    /// Fails when the pin exists but cannot be removed.
    pub(crate) fn forget(&self, ifindex: u32) -> Result<(), DatapathError> {
        let pin = self.link_pin(ifindex);
        match fs::remove_file(&pin) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DatapathError::Unpin { path: pin, source }),
        }
    }

    /// Removes every link pin, which detaches the classifier from every
    /// interface: the pin is a tcx link's last reference. `--datapath
    /// xt-bpf` attaches nothing and uses this to take over from a `tc` run,
    /// whose links would otherwise keep running on every packet. Returns
    /// how many links went.
    ///
    /// # Errors
    /// Fails when the links directory cannot be read or a pin removed.
    pub(crate) fn detach_all(&self) -> Result<usize, DatapathError> {
        let indexes = self.pinned_ifindexes()?;
        for &index in &indexes {
            self.forget(index)?;
        }
        Ok(indexes.len())
    }

    /// Interface indexes that have a link pin.
    ///
    /// # Errors
    /// Fails when the links directory cannot be read.
    pub(crate) fn pinned_ifindexes(&self) -> Result<Vec<u32>, DatapathError> {
        pinned_ifindexes(&self.pin_dir)
    }

    /// Whether this run's program is attached to `interface`.
    ///
    /// # Errors
    /// Fails when the kernel cannot be queried.
    pub(crate) fn is_attached(&mut self, interface: &str) -> Result<bool, DatapathError> {
        let own_id = self.program()?.info()?.id();
        Ok(attached_program_ids(interface)?.contains(&own_id))
    }

    fn link_pin(&self, ifindex: u32) -> PathBuf {
        link_pin_path(&self.pin_dir, ifindex)
    }
}

/// Program ids attached at tcx ingress of `interface`, in chain order: by
/// id only, so that an agent with CAP_NET_ADMIN but not CAP_SYS_ADMIN
/// (which aya's query needs to open each program) still adopts its pinned
/// links.
///
/// # Errors
/// Fails when the interface does not exist or the kernel cannot be queried.
fn attached_program_ids(interface: &str) -> Result<Vec<u32>, DatapathError> {
    let query_err = |source| DatapathError::TcxQuery {
        interface: interface.to_owned(),
        source,
    };
    let name = CString::new(interface)
        .map_err(|_| query_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
    // SAFETY: a valid NUL-terminated name, which outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(query_err(io::Error::last_os_error()));
    }
    tcx_ingress_ids(ifindex).map_err(query_err)
}

/// Where the link for interface `ifindex` is pinned.
pub(crate) fn link_pin_path(pin_dir: &Path, ifindex: u32) -> PathBuf {
    pin_dir
        .join(LINKS_DIR)
        .join(format!("tcx_ingress_{ifindex}"))
}

/// Interface indexes with a link pin under `pin_dir`.
///
/// # Errors
/// Fails when the links directory exists but cannot be read.
pub(crate) fn pinned_ifindexes(pin_dir: &Path) -> Result<Vec<u32>, DatapathError> {
    let dir = pin_dir.join(LINKS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(DatapathError::PinDir { path: dir, source }),
    };
    let mut indexes: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("tcx_ingress_")?
                .parse()
                .ok()
        })
        .collect();
    indexes.sort_unstable();
    Ok(indexes)
}

//! The classifier on interfaces: attached to every selected one, put back
//! where someone detached it, and the pins of interfaces that are gone
//! dropped. The interfaces come from the caller (rtnetlink in the loop), so
//! that these decisions are plain calls.

use tracing::{error, info, warn};

use crate::error::error_chain;
use crate::kernel::datapath::Attachment;
use crate::kernel::netlink::Interface;
use crate::kernel::watch::LinkEvent;

use super::host::{Links, Maps, Rules};
use super::{Agent, AgentError};

impl<K: Maps + Links, R: Rules> Agent<K, R> {
    /// `--datapath xt-bpf`: takes the classifier off every interface.
    ///
    /// Links left by a `tc` run would keep running the classifier on every
    /// packet, for nothing: this mode attaches none.
    pub(super) fn detach_everywhere(&mut self) -> Result<(), AgentError> {
        let detached = self.datapath.detach_all()?;
        if detached > 0 {
            info!(
                links = detached,
                "xt-bpf datapath: detached the classifier from interfaces"
            );
        }
        Ok(())
    }

    /// Attaches to every selected interface of `present` that lacks the
    /// classifier, takes it off present interfaces that are no longer
    /// selected (one a default route now leaves through, or a link left by
    /// a run with other `--interfaces`), and drops pins of interfaces that
    /// are gone.
    pub(super) fn reconcile(&mut self, present: Vec<Interface>) -> Result<(), AgentError> {
        self.default_routes = present
            .iter()
            .filter(|interface| interface.default_route)
            .map(|interface| interface.index)
            .collect();
        let present_indexes: Vec<u32> = present.iter().map(|i| i.index).collect();
        let pinned = self.datapath.pinned_ifindexes()?;
        for &index in &pinned {
            if !present_indexes.contains(&index) {
                self.forget(index);
            }
        }
        for interface in present {
            if !self.options.selector.selects(&interface) {
                if self.attached.contains_key(&interface.index) || pinned.contains(&interface.index)
                {
                    self.detach(&interface);
                }
                continue;
            }
            let verified = self.attached.contains_key(&interface.index)
                && self.datapath.is_attached(&interface.name).unwrap_or(false);
            if !verified {
                if self.attached.remove(&interface.index).is_some() {
                    warn!(interface = %interface.name, "classifier was detached by someone; re-attaching");
                    self.shared.update(|status| status.repairs.link += 1);
                }
                self.attach(&interface);
            }
        }
        Ok(())
    }

    /// Follows a link event. A default route that changed needs the routes
    /// read again, which the caller does with [`Agent::reconcile`].
    pub(super) fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Changed(mut interface) => {
                interface.default_route = self.default_routes.contains(&interface.index);
                if self.options.selector.selects(&interface)
                    && !self.attached.contains_key(&interface.index)
                {
                    self.attach(&interface);
                }
            }
            LinkEvent::Removed { index } => self.forget(index),
            LinkEvent::DefaultRouteChanged => {}
        }
    }

    /// Takes the classifier off an interface the selector no longer picks:
    /// its pin is the link's last reference.
    fn detach(&mut self, interface: &Interface) {
        self.attached.remove(&interface.index);
        self.shared
            .update(|status| status.clear_attach_failure(interface.index));
        match self.datapath.forget(interface.index) {
            Ok(()) => info!(
                interface = %interface.name,
                ifindex = interface.index,
                default_route = interface.default_route,
                "detached: the interface is not selected"
            ),
            Err(err) => {
                error!(interface = %interface.name, error = %error_chain(&err), "cannot detach the classifier");
            }
        }
    }

    fn attach(&mut self, interface: &Interface) {
        match self.datapath.attach(&interface.name, interface.index) {
            Ok(how) => {
                let how = match how {
                    Attachment::Created => "attached",
                    Attachment::Adopted => "adopted pinned link",
                };
                info!(interface = %interface.name, ifindex = interface.index, "{how}");
                self.attached
                    .insert(interface.index, interface.name.clone());
                self.shared
                    .update(|status| status.clear_attach_failure(interface.index));
            }
            Err(err) => {
                error!(interface = %interface.name, error = %error_chain(&err), "cannot attach classifier");
                self.shared.update(|status| {
                    status.note_attach_failure(interface, error_chain(&err));
                });
            }
        }
    }

    fn forget(&mut self, index: u32) {
        self.shared
            .update(|status| status.clear_attach_failure(index));
        if let Some(name) = self.attached.remove(&index) {
            info!(interface = %name, ifindex = index, "interface gone");
        }
        if let Err(err) = self.datapath.forget(index) {
            error!(ifindex = index, error = %error_chain(&err), "cannot remove stale link pin");
        }
    }
}

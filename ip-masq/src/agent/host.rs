//! The kernel as the agent's decisions see it: three small traits, so that
//! reload, repair and attach run against fakes in unit tests. The real
//! kernel types implement them here, each method a plain call through.

use std::sync::Arc;

use ipnet::IpNet;

use crate::kernel::conntrack::{Conntrack, ConntrackError, Entry, Flow};
use crate::kernel::datapath::{Attachment, Datapath, DatapathError, PrefixStore, Repinned};
use crate::kernel::iptables::{Installer, Repairs, RulesError};
use crate::model::Family;
use crate::serve::state::RulesCheck;

/// The LPM maps (written through [`PrefixStore`]) and the pins of the
/// agent's maps and programs.
pub(crate) trait Maps: PrefixStore {
    /// Every entry of both maps, with its raw value.
    fn read_entries(&self) -> Result<Vec<(IpNet, u8)>, DatapathError>;
    /// Puts back the pins someone removed; returns what it pinned again.
    fn repin_missing(&mut self) -> Result<Vec<Repinned>, DatapathError>;
    /// Rewrites the range directory's chunks someone changed in place, and
    /// publishes what is still due; returns how many had changed.
    fn repair_directory(&mut self) -> Result<usize, ip_masq_lookup::LookupError>;
}

/// The classifier's tcx links, one per interface, each pinned by ifindex.
pub(crate) trait Links {
    /// Makes sure `interface` carries this run's classifier.
    fn attach(&mut self, interface: &str, ifindex: u32) -> Result<Attachment, DatapathError>;
    /// Whether this run's classifier is attached to `interface`.
    fn is_attached(&mut self, interface: &str) -> Result<bool, DatapathError>;
    /// Drops the link pin of an interface that is gone.
    fn forget(&mut self, ifindex: u32) -> Result<(), DatapathError>;
    /// Interface indexes that have a link pin.
    fn pinned_ifindexes(&self) -> Result<Vec<u32>, DatapathError>;
    /// Removes every link pin, which detaches the classifier everywhere;
    /// returns how many there were.
    fn detach_all(&mut self) -> Result<usize, DatapathError>;
}

/// One family's static iptables rules.
pub(crate) trait Rules {
    /// The family these rules are for.
    fn family(&self) -> Family;
    /// Installs the rules, or repairs what someone changed, and says what
    /// had to be written.
    fn ensure(&mut self) -> Result<Repairs, RulesError>;
    /// A check for `/readyz` of the rules as they stand now, right after a
    /// successful [`Rules::ensure`].
    fn check(&self) -> Arc<dyn RulesCheck>;
}

/// The conntrack table, for flushing the entries a change flips.
pub(crate) trait Connections {
    /// Every entry.
    fn list(&mut self) -> Result<Vec<Entry>, ConntrackError>;
    /// Deletes the entry whose original direction is `flow`.
    fn delete(&mut self, protocol: u8, flow: &Flow) -> Result<(), ConntrackError>;
}

impl Connections for Conntrack {
    fn list(&mut self) -> Result<Vec<Entry>, ConntrackError> {
        Conntrack::list(self)
    }

    fn delete(&mut self, protocol: u8, flow: &Flow) -> Result<(), ConntrackError> {
        Conntrack::delete(self, protocol, flow)
    }
}

impl Maps for Datapath {
    fn read_entries(&self) -> Result<Vec<(IpNet, u8)>, DatapathError> {
        Datapath::read_entries(self)
    }

    fn repin_missing(&mut self) -> Result<Vec<Repinned>, DatapathError> {
        Datapath::repin_missing(self)
    }

    fn repair_directory(&mut self) -> Result<usize, ip_masq_lookup::LookupError> {
        Datapath::repair_directory(self)
    }
}

impl Links for Datapath {
    fn attach(&mut self, interface: &str, ifindex: u32) -> Result<Attachment, DatapathError> {
        Datapath::attach(self, interface, ifindex)
    }

    fn is_attached(&mut self, interface: &str) -> Result<bool, DatapathError> {
        Datapath::is_attached(self, interface)
    }

    fn forget(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        Datapath::forget(self, ifindex)
    }

    fn pinned_ifindexes(&self) -> Result<Vec<u32>, DatapathError> {
        Datapath::pinned_ifindexes(self)
    }

    fn detach_all(&mut self) -> Result<usize, DatapathError> {
        Datapath::detach_all(self)
    }
}

impl Rules for Installer {
    fn family(&self) -> Family {
        Installer::family(self)
    }

    fn ensure(&mut self) -> Result<Repairs, RulesError> {
        Installer::ensure(self)
    }

    fn check(&self) -> Arc<dyn RulesCheck> {
        // The copy holds the listing seen right after the last write, so
        // that any later change by someone else shows.
        Arc::new(self.clone())
    }
}

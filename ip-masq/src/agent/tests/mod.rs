//! The agent's decisions against fakes of the kernel: no root, no bpffs,
//! no iptables. Each test drives the loop's plain methods as the run loop
//! would and checks the state they leave (the fake maps, links and rules,
//! and the status that `/readyz` and `ip-masq status` see), not log text.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use ip_masq_common::Action;
use ip_masq_config::{MAX_CONFIG_BYTES, ParseOptions, table::Table};
use ipnet::IpNet;

use super::Agent;
use super::host::{Links, Maps, Rules};
use crate::kernel::datapath::{Attachment, DatapathError, PrefixStore, Repinned};
use crate::kernel::iptables::{Repairs, RuleSet, RulesError};
use crate::kernel::netlink::{Interface, Selector};
use crate::model::{DatapathMode, Family};
use crate::options::AgentOptions;
use crate::serve::state::{AgentStatus, RulesCheck, Shared, StatePublisher};

mod attach;
mod reload;
mod repair;

/// The maps and links of a kernel, in memory.
#[derive(Debug)]
struct FakeKernel {
    /// Raw values, as the kernel holds them.
    entries: BTreeMap<IpNet, u8>,
    /// Every successful map write, in order: `+prefix` or `-prefix`.
    log: Vec<String>,
    /// For each directory publish, how many writes of `log` came before it.
    published_after: Vec<usize>,
    capacity: usize,
    /// Prefixes whose writes fail.
    failing: BTreeSet<IpNet>,
    /// Reading the maps back fails.
    unreadable: bool,
    /// Pins someone removed, which the next `repin_missing` puts back.
    removed_pins: Vec<Repinned>,
    /// Pinning again fails.
    repin_fails: bool,
    /// Interfaces (by name) that carry this run's classifier.
    carrying: BTreeSet<String>,
    /// Link pins, by ifindex.
    link_pins: BTreeSet<u32>,
    /// Interfaces (by name) the kernel refuses to attach to.
    refuses: BTreeSet<String>,
    /// Every attach asked for, by interface name.
    attach_calls: Vec<String>,
}

impl Default for FakeKernel {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            log: Vec::new(),
            published_after: Vec::new(),
            capacity: 64,
            failing: BTreeSet::new(),
            unreadable: false,
            removed_pins: Vec::new(),
            repin_fails: false,
            carrying: BTreeSet::new(),
            link_pins: BTreeSet::new(),
            refuses: BTreeSet::new(),
            attach_calls: Vec::new(),
        }
    }
}

fn refused(what: &str) -> DatapathError {
    DatapathError::PinLookup {
        path: PathBuf::from(what),
        source: io::Error::from_raw_os_error(libc::EPERM),
    }
}

impl PrefixStore for FakeKernel {
    fn upsert(&mut self, prefix: IpNet, action: Action) -> Result<(), io::Error> {
        if self.failing.contains(&prefix) {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        self.entries.insert(prefix, action as u8);
        self.log.push(format!("+{prefix}"));
        Ok(())
    }

    fn remove(&mut self, prefix: IpNet) -> Result<(), io::Error> {
        if self.failing.contains(&prefix) {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        self.entries.remove(&prefix);
        self.log.push(format!("-{prefix}"));
        Ok(())
    }

    fn capacity(&self, _prefix: &IpNet) -> usize {
        self.capacity
    }

    fn publish(&mut self) -> Result<ip_masq_lookup::PublishReport, ip_masq_lookup::LookupError> {
        self.published_after.push(self.log.len());
        Ok(ip_masq_lookup::PublishReport::default())
    }
}

impl Maps for FakeKernel {
    fn read_entries(&self) -> Result<Vec<(IpNet, u8)>, DatapathError> {
        if self.unreadable {
            return Err(refused("NON_MASQ_V4"));
        }
        Ok(self.entries.iter().map(|(p, v)| (*p, *v)).collect())
    }

    fn repair_directory(&mut self) -> Result<usize, ip_masq_lookup::LookupError> {
        self.published_after.push(self.log.len());
        Ok(0)
    }

    fn repin_missing(&mut self) -> Result<Vec<Repinned>, DatapathError> {
        if self.repin_fails {
            return Err(refused("NON_MASQ_V4"));
        }
        Ok(std::mem::take(&mut self.removed_pins))
    }
}

impl Links for FakeKernel {
    fn attach(&mut self, interface: &str, ifindex: u32) -> Result<Attachment, DatapathError> {
        self.attach_calls.push(interface.to_owned());
        if self.refuses.contains(interface) {
            return Err(refused(interface));
        }
        // As the kernel: a pinned link still on the interface is adopted.
        let adopted = self.link_pins.contains(&ifindex) && self.carrying.contains(interface);
        self.carrying.insert(interface.to_owned());
        self.link_pins.insert(ifindex);
        Ok(if adopted {
            Attachment::Adopted
        } else {
            Attachment::Created
        })
    }

    fn is_attached(&mut self, interface: &str) -> Result<bool, DatapathError> {
        Ok(self.carrying.contains(interface))
    }

    fn forget(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        self.link_pins.remove(&ifindex);
        Ok(())
    }

    fn pinned_ifindexes(&self) -> Result<Vec<u32>, DatapathError> {
        Ok(self.link_pins.iter().copied().collect())
    }

    fn detach_all(&mut self) -> Result<usize, DatapathError> {
        let count = self.link_pins.len();
        self.link_pins.clear();
        self.carrying.clear();
        Ok(count)
    }
}

/// One family's rules in a fake nat table.
struct FakeRules {
    family: Family,
    installed: bool,
    /// Someone changed the chain since the last ensure; shared with the
    /// checks handed to `/readyz`.
    damaged: Arc<AtomicBool>,
    ensures: usize,
    fails: bool,
}

impl FakeRules {
    fn new(family: Family) -> Self {
        Self {
            family,
            installed: false,
            damaged: Arc::new(AtomicBool::new(false)),
            ensures: 0,
            fails: false,
        }
    }
}

struct FakeCheck(Arc<AtomicBool>);

impl RulesCheck for FakeCheck {
    fn verify(&self) -> Result<bool, RulesError> {
        Ok(!self.0.load(Ordering::SeqCst))
    }
}

impl Rules for FakeRules {
    fn family(&self) -> Family {
        self.family
    }

    fn ensure(&mut self) -> Result<Repairs, RulesError> {
        self.ensures += 1;
        if self.fails {
            return Err(RulesError::Failed {
                command: "iptables-restore -w 5 --noflush".into(),
                status: "exit status: 4".into(),
                stderr: "resource problem".into(),
            });
        }
        let rewritten = !self.installed || self.damaged.swap(false, Ordering::SeqCst);
        let first = !self.installed;
        self.installed = true;
        Ok(Repairs {
            chain_rewritten: rewritten,
            jump_added: first,
            duplicate_jumps_removed: 0,
        })
    }

    fn check(&self) -> Arc<dyn RulesCheck> {
        Arc::new(FakeCheck(self.damaged.clone()))
    }
}

/// An agent over fakes, with its config file and state file in a scratch
/// directory of its own that goes when the test ends.
struct Harness {
    agent: Agent<FakeKernel, FakeRules>,
    dir: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    /// An agent on the default selector (every veth), in `tc` mode, with
    /// empty maps, before its first reload.
    fn new(name: &str) -> Self {
        Self::with(name, FakeKernel::default(), Selector::AllVeth)
    }

    fn with(name: &str, kernel: FakeKernel, selector: Selector) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ip-masq-agent-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let pin_dir = dir.join("pins");
        let options = AgentOptions {
            config_path: dir.join("config"),
            parse: ParseOptions::default(),
            rules: RuleSet {
                chain: "IP-MASQ".into(),
                mark: 0x0400_0000,
                random_fully: false,
                datapath: DatapathMode::Tc,
                pin_dir: pin_dir.clone(),
                to_ports: crate::model::ports::PortRanges::default(),
            },
            selector,
            pin_dir,
            max_entries: 64,
            metrics_address: "127.0.0.1:0".parse().unwrap(),
            state_dir: dir.join("state"),
            max_config_bytes: MAX_CONFIG_BYTES,
            flush: crate::model::FlushScope::Connectionless,
            config_dir: None,
        };
        let shared = Shared::new(AgentStatus::for_agent(&options));
        let publisher = StatePublisher::new(&options.state_dir, &options.pin_dir);
        let agent = Agent::new(
            options,
            kernel,
            vec![FakeRules::new(Family::V4)],
            shared,
            publisher,
        );
        Self { agent, dir }
    }

    /// Writes the config file.
    fn write_config(&self, text: &str) {
        fs::write(&self.agent.options.config_path, text).unwrap();
    }

    fn status(&self) -> AgentStatus {
        self.agent.shared.snapshot()
    }

    fn kernel(&mut self) -> &mut FakeKernel {
        &mut self.agent.datapath
    }

    fn rules(&self) -> &FakeRules {
        &self.agent.installers[0]
    }

    /// The entries the maps should hold for the config `text`, with their
    /// raw values.
    fn expected(&self, text: &str) -> Vec<(IpNet, u8)> {
        let parsed = ip_masq_config::parse(text.as_bytes(), self.agent.options.parse).unwrap();
        Table::effective(&parsed.config, false)
            .iter()
            .map(|(prefix, entry)| (*prefix, entry.action as u8))
            .collect()
    }

    /// What the maps hold, with raw values.
    fn maps(&self) -> Vec<(IpNet, u8)> {
        self.agent
            .datapath
            .entries
            .iter()
            .map(|(prefix, value)| (*prefix, *value))
            .collect()
    }
}

fn net(prefix: &str) -> IpNet {
    prefix.parse().unwrap()
}

fn veth(index: u32, name: &str) -> Interface {
    Interface {
        index,
        name: name.into(),
        kind: Some("veth".into()),
        ethernet: true,
        default_route: false,
    }
}

const TEN: &str = "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n";
const TEN_AND_OTHERS: &str = "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 192.168.0.0/16\n";
const BAD: &str = "nonMasqueradeCIDRs:\n  - not-a-cidr\n";

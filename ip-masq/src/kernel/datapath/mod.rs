//! The kernel side: loads the classifier, pins its maps and per-interface
//! tcx links under the pin directory, attaches it, and reads and writes the
//! LPM maps. It also loads and pins the socket filters that the nat
//! chain's xt_bpf rules run ([`xt_bpf`]).
//!
//! Pins are what make the datapath outlive the agent: while the agent is
//! down or restarting, the pinned links keep the program attached and the
//! pinned maps keep the table.

use std::{
    collections::BTreeMap,
    fs, io,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, TestRun as _, TestRunOptions,
    maps::{IterableMap as _, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{
        LinkOrder, ProgramError, SchedClassifier, SocketFilter, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
    },
};
use ip_masq_common::{
    Action, GLOBAL_KEEP_SOURCE_MARK, MAP_NON_MASQ_V4, MAP_NON_MASQ_V6, MAP_STATS, MAP_XT_BPF_STATS,
    PROGRAM_CLASSIFIER, PROGRAM_XT_BPF_V4, PROGRAM_XT_BPF_V6, STAT_SLOTS, StatCounter,
    XT_STAT_SLOTS,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use thiserror::Error;

mod xt_bpf;
pub use xt_bpf::xt_bpf_pin_path;

/// The LPM maps as the agent's sync loop sees them: one door, so that
/// unit tests run the whole loop against a fake.
pub trait PrefixStore {
    /// Inserts or overwrites one prefix.
    ///
    /// # Errors
    /// Returns the kernel's error for that write.
    fn upsert(&mut self, prefix: IpNet, action: Action) -> Result<(), std::io::Error>;
    /// Removes one prefix; removing an absent prefix is not an error.
    ///
    /// # Errors
    /// Returns the kernel's error for that write.
    fn remove(&mut self, prefix: IpNet) -> Result<(), std::io::Error>;
    /// Capacity of the map that holds `prefix`'s family.
    fn capacity(&self, prefix: &IpNet) -> usize;
}

/// The eBPF object (classifier and socket filters), built by build.rs from
/// the `ip-masq-ebpf` binary.
pub static CLASSIFIER_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("IP_MASQ_EBPF_OBJECT"));

/// Sub-directory of the pin directory that holds one link pin per interface.
const LINKS_DIR: &str = "links";

/// Errors of the datapath layer.
#[derive(Debug, Error)]
pub enum DatapathError {
    #[error("cannot create pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not on a bpf filesystem (mount one: `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs { path: PathBuf },
    #[error("cannot load the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("eBPF program error")]
    Program(#[source] Box<ProgramError>),
    #[error("eBPF map error")]
    Map(#[source] Box<MapError>),
    #[error("pinned link {path}")]
    Link {
        path: PathBuf,
        #[source]
        source: Box<LinkError>,
    },
    #[error("cannot pin link at {path}")]
    PinLink {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("cannot look up pin {path}")]
    PinLookup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot pin map at {path}")]
    PinMap {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("cannot pin program at {path}")]
    PinProgram {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("cannot move pin {from} over {to}")]
    ReplacePin {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove stale pin {path}")]
    Unpin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "pinned map {name} has {found} entries of capacity but {expected} were asked for; run `ip-masq cleanup` to recreate it"
    )]
    CapacityMismatch {
        name: &'static str,
        found: u32,
        expected: u32,
    },
}

impl From<ProgramError> for DatapathError {
    fn from(err: ProgramError) -> Self {
        Self::Program(Box::new(err))
    }
}

impl From<MapError> for DatapathError {
    fn from(err: MapError) -> Self {
        Self::Map(Box::new(err))
    }
}

/// Options for [`Datapath::load`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub pin_dir: PathBuf,
    /// Bit(s) ORed into `skb->mark` for keep-source packets.
    pub mark: u32,
    /// Capacity of each LPM map when it is created.
    pub max_entries: u32,
}

/// How an interface came to carry the classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// A new tcx link was created and pinned.
    Created,
    /// A pinned link from an earlier run was found on the interface and
    /// switched atomically to this run's program.
    Adopted,
}

/// `sizeof(struct __sk_buff)` on this kernel generation, and where `mark` sits in it.
const SK_BUFF_SIZE: usize = 192;
const SK_BUFF_MARK_OFFSET: usize = 8;

/// What the classifier did to one test frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The program's verdict; the classifier always answers `TC_ACT_UNSPEC` (-1).
    pub return_value: i32,
    /// `skb->mark` after the program ran.
    pub mark: u32,
}

/// The TC classifier's packet counters (`STATS`), summed over CPUs: every
/// packet of every flow it sees at a pod interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketStats {
    pub v4_seen: u64,
    pub v4_kept: u64,
    pub v6_seen: u64,
    pub v6_kept: u64,
}

/// The xt_bpf socket filters' counters (`XT_BPF_STATS`), summed over CPUs:
/// one per run, which is one per new connection that reaches the nat
/// chain's xt_bpf rule, by the rule's family and the filter's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    pub v4_keep_source: u64,
    pub v4_masquerade: u64,
    pub v6_keep_source: u64,
    pub v6_masquerade: u64,
}

/// The loaded datapath.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    v4: LpmTrie<MapData, [u8; 4], u8>,
    v6: LpmTrie<MapData, [u8; 16], u8>,
    capacity_v4: usize,
    capacity_v6: usize,
}

impl Datapath {
    /// Loads the classifier, reusing maps already pinned under the pin
    /// directory (a restart) or creating and pinning them (a first start),
    /// and pins the xt_bpf socket filters over those of an earlier run.
    ///
    /// # Errors
    /// Fails when bpffs is missing, the kernel refuses the object, or pinned
    /// maps do not have the requested capacity.
    pub fn load(options: &LoadOptions) -> Result<Self, DatapathError> {
        let pin_dir = &options.pin_dir;
        prepare_pin_dir(pin_dir)?;
        fs::create_dir_all(pin_dir.join(LINKS_DIR)).map_err(|source| DatapathError::PinDir {
            path: pin_dir.clone(),
            source,
        })?;
        let v4_pin = pin_dir.join(MAP_NON_MASQ_V4);
        let v6_pin = pin_dir.join(MAP_NON_MASQ_V6);
        let stats_pin = pin_dir.join(MAP_STATS);
        let xt_stats_pin = pin_dir.join(MAP_XT_BPF_STATS);
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_KEEP_SOURCE_MARK, &options.mark, true)
            .map_max_entries(MAP_NON_MASQ_V4, options.max_entries)
            .map_max_entries(MAP_NON_MASQ_V6, options.max_entries)
            .map_pin_path(MAP_NON_MASQ_V4, v4_pin.as_path())
            .map_pin_path(MAP_NON_MASQ_V6, v6_pin.as_path())
            .map_pin_path(MAP_STATS, stats_pin.as_path())
            .map_pin_path(MAP_XT_BPF_STATS, xt_stats_pin.as_path())
            .load(CLASSIFIER_OBJECT)
            .map_err(|err| DatapathError::Load(Box::new(err)))?;

        let v4: LpmTrie<MapData, [u8; 4], u8> = LpmTrie::try_from(
            ebpf.take_map(MAP_NON_MASQ_V4)
                .ok_or(DatapathError::Missing(MAP_NON_MASQ_V4))?,
        )?;
        let v6: LpmTrie<MapData, [u8; 16], u8> = LpmTrie::try_from(
            ebpf.take_map(MAP_NON_MASQ_V6)
                .ok_or(DatapathError::Missing(MAP_NON_MASQ_V6))?,
        )?;
        let capacity_v4 = checked_capacity(&v4_pin, MAP_NON_MASQ_V4, options.max_entries)?;
        let capacity_v6 = checked_capacity(&v6_pin, MAP_NON_MASQ_V6, options.max_entries)?;

        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM_CLASSIFIER)
            .ok_or(DatapathError::Missing(PROGRAM_CLASSIFIER))?
            .try_into()?;
        program.load()?;
        xt_bpf::load_and_pin(&mut ebpf, pin_dir)?;
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.clone(),
            v4,
            v6,
            capacity_v4,
            capacity_v6,
        })
    }

    fn program(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM_CLASSIFIER)
            .ok_or(DatapathError::Missing(PROGRAM_CLASSIFIER))?
            .try_into()?)
    }

    /// The program, for BPF_PROG_TEST_RUN in tests and benchmarks.
    ///
    /// # Errors
    /// Only if the object lost its program, which cannot happen after `load`.
    pub fn classifier(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        self.program()
    }

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
    pub fn attach(&mut self, interface: &str, ifindex: u32) -> Result<Attachment, DatapathError> {
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
    pub fn forget(&self, ifindex: u32) -> Result<(), DatapathError> {
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
    pub fn detach_all(&self) -> Result<usize, DatapathError> {
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
    pub fn pinned_ifindexes(&self) -> Result<Vec<u32>, DatapathError> {
        pinned_ifindexes(&self.pin_dir)
    }

    /// Whether this run's program is attached to `interface`.
    ///
    /// # Errors
    /// Fails when the kernel cannot be queried.
    pub fn is_attached(&mut self, interface: &str) -> Result<bool, DatapathError> {
        let own_id = self.program()?.info()?.id();
        Ok(attached_program_ids(interface)?.contains(&own_id))
    }

    fn link_pin(&self, ifindex: u32) -> PathBuf {
        link_pin_path(&self.pin_dir, ifindex)
    }

    /// Reads every entry of both LPM maps back.
    ///
    /// # Errors
    /// Fails when the kernel refuses to iterate a map.
    pub fn read_entries(&self) -> Result<Vec<(IpNet, u8)>, DatapathError> {
        read_entries(&self.v4, &self.v6)
    }

    /// Runs the loaded classifier on `frame` with `skb->mark` preset to
    /// `mark_in` (BPF_PROG_TEST_RUN) and returns what it did. This asks the
    /// kernel program itself, not a re-implementation of its lookup.
    ///
    /// # Errors
    /// Fails when the kernel refuses the test run.
    pub fn probe(&mut self, frame: &[u8], mark_in: u32) -> Result<Probe, DatapathError> {
        let mut context = [0u8; SK_BUFF_SIZE];
        context[SK_BUFF_MARK_OFFSET..SK_BUFF_MARK_OFFSET + 4]
            .copy_from_slice(&mark_in.to_ne_bytes());
        let mut context_out = [0u8; SK_BUFF_SIZE];
        let result = self.program()?.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&context),
            ctx_out: Some(&mut context_out),
            repeat: 1,
            ..TestRunOptions::default()
        })?;
        let mark = u32::from_ne_bytes(
            context_out[SK_BUFF_MARK_OFFSET..SK_BUFF_MARK_OFFSET + 4]
                .try_into()
                .expect("four bytes"),
        );
        Ok(Probe {
            return_value: result.return_value as i32,
            mark,
        })
    }

    /// The classifier's per-CPU packet counters, summed.
    ///
    /// # Errors
    /// Fails when the stats map cannot be read.
    pub fn stats(&self) -> Result<PacketStats, DatapathError> {
        read_stats(&self.pin_dir)
    }

    /// The socket filters' per-CPU connection counters, summed.
    ///
    /// # Errors
    /// Fails when the stats map cannot be read.
    pub fn connection_stats(&self) -> Result<ConnectionStats, DatapathError> {
        read_connection_stats(&self.pin_dir)
    }

    /// Runs the loaded xt_bpf socket filter of `family` on the Ethernet
    /// `frame` through BPF_PROG_TEST_RUN and returns its answer: non-zero is
    /// a match, "keep source". The kernel hands a socket filter the frame
    /// from the IP header on, as xt_bpf does.
    ///
    /// # Errors
    /// Fails when the kernel refuses the test run.
    pub fn probe_xt_bpf(
        &mut self,
        family: crate::model::Family,
        frame: &[u8],
    ) -> Result<u32, DatapathError> {
        let name = match family {
            crate::model::Family::V4 => PROGRAM_XT_BPF_V4,
            crate::model::Family::V6 => PROGRAM_XT_BPF_V6,
        };
        let program: &mut SocketFilter = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::Missing(name))?
            .try_into()?;
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::default()
        })?;
        Ok(result.return_value)
    }

    /// Puts back the pins of this run's maps and socket filters that someone
    /// removed, and returns what it re-pinned.
    ///
    /// The agent holds their file descriptors, so the objects outlive a
    /// removed pin, and the classifier keeps working. But without the pins
    /// the next agent would create empty maps, `dump` would see nothing, and
    /// the nat chain's xt_bpf rules could not be written again.
    ///
    /// # Errors
    /// Fails when a pin is missing and the kernel refuses to pin it again.
    pub fn repin_missing(&mut self) -> Result<Vec<Repinned>, DatapathError> {
        let mut repinned = Vec::new();
        let maps: [(&'static str, &MapData); 2] = [
            (MAP_NON_MASQ_V4, self.v4.map()),
            (MAP_NON_MASQ_V6, self.v6.map()),
        ];
        for (name, map) in maps {
            let pin = self.pin_dir.join(name);
            if pin_missing(&pin)? {
                map.pin(&pin).map_err(|source| DatapathError::PinMap {
                    path: pin.clone(),
                    source: Box::new(source),
                })?;
                repinned.push(Repinned::Map(name));
            }
        }
        for name in [MAP_STATS, MAP_XT_BPF_STATS] {
            let pin = self.pin_dir.join(name);
            if pin_missing(&pin)? {
                self.ebpf
                    .map(name)
                    .ok_or(DatapathError::Missing(name))?
                    .pin(&pin)
                    .map_err(|source| DatapathError::PinMap {
                        path: pin.clone(),
                        source: Box::new(source),
                    })?;
                repinned.push(Repinned::Map(name));
            }
        }
        for (name, family) in [
            (PROGRAM_XT_BPF_V4, crate::model::Family::V4),
            (PROGRAM_XT_BPF_V6, crate::model::Family::V6),
        ] {
            let pin = xt_bpf_pin_path(&self.pin_dir, family);
            if pin_missing(&pin)? {
                let program: &mut SocketFilter = self
                    .ebpf
                    .program_mut(name)
                    .ok_or(DatapathError::Missing(name))?
                    .try_into()?;
                program
                    .pin(&pin)
                    .map_err(|source| DatapathError::PinProgram {
                        path: pin.clone(),
                        source: Box::new(source),
                    })?;
                repinned.push(Repinned::Program(name));
            }
        }
        Ok(repinned)
    }
}

/// A pin that [`Datapath::repin_missing`] put back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repinned {
    /// A map, by name.
    Map(&'static str),
    /// An xt_bpf socket filter, by program name.
    Program(&'static str),
}

/// Whether nothing is pinned at `pin` (a symlink or any other file there
/// counts as present: it is not ours to replace).
fn pin_missing(pin: &Path) -> Result<bool, DatapathError> {
    match fs::symlink_metadata(pin) {
        Ok(_) => Ok(false),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(DatapathError::PinLookup {
            path: pin.to_owned(),
            source,
        }),
    }
}

/// The agent's table as the agent's sync (`agent::sync::apply`) writes it.
impl PrefixStore for Datapath {
    fn upsert(&mut self, prefix: IpNet, action: Action) -> Result<(), io::Error> {
        let value = action as u8;
        let result = match prefix {
            IpNet::V4(net) => self.v4.insert(
                &Key::new(net.prefix_len().into(), net.network().octets()),
                value,
                0,
            ),
            IpNet::V6(net) => self.v6.insert(
                &Key::new(net.prefix_len().into(), net.network().octets()),
                value,
                0,
            ),
        };
        result.map_err(map_io_error)
    }

    fn remove(&mut self, prefix: IpNet) -> Result<(), io::Error> {
        let result = match prefix {
            IpNet::V4(net) => self
                .v4
                .remove(&Key::new(net.prefix_len().into(), net.network().octets())),
            IpNet::V6(net) => self
                .v6
                .remove(&Key::new(net.prefix_len().into(), net.network().octets())),
        };
        match result {
            Err(MapError::KeyNotFound) => Ok(()),
            other => other.map_err(map_io_error),
        }
    }

    fn capacity(&self, prefix: &IpNet) -> usize {
        match prefix {
            IpNet::V4(_) => self.capacity_v4,
            IpNet::V6(_) => self.capacity_v6,
        }
    }
}

fn map_io_error(err: MapError) -> io::Error {
    match err {
        MapError::SyscallError(err) => err.io_error,
        other => io::Error::other(other.to_string()),
    }
}

fn checked_capacity(pin: &Path, name: &'static str, expected: u32) -> Result<usize, DatapathError> {
    let info = aya::maps::MapInfo::from_pin(pin)?;
    let found = info.max_entries();
    if found != expected {
        return Err(DatapathError::CapacityMismatch {
            name,
            found,
            expected,
        });
    }
    Ok(found as usize)
}

/// Creates the pin directory after checking that it lies on a bpf
/// filesystem, so that a missing bpffs mount is named as such.
///
/// # Errors
/// [`DatapathError::NotBpffs`] when the nearest existing ancestor is not on
/// bpffs; [`DatapathError::PinDir`] when the directory cannot be created.
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<(), DatapathError> {
    let existing = pin_dir
        .ancestors()
        .find(|ancestor| ancestor.exists())
        .unwrap_or(Path::new("/"));
    ensure_bpffs(existing).map_err(|_| DatapathError::NotBpffs {
        path: pin_dir.to_owned(),
    })?;
    fs::create_dir_all(pin_dir).map_err(|source| DatapathError::PinDir {
        path: pin_dir.to_owned(),
        source,
    })
}

fn ensure_bpffs(path: &Path) -> Result<(), DatapathError> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        DatapathError::NotBpffs {
            path: path.to_owned(),
        }
    })?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and a zeroed out-parameter.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 || stat.f_type as i64 != BPF_FS_MAGIC {
        return Err(DatapathError::NotBpffs {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Program ids attached at tcx ingress of `interface`, in chain order.
///
/// # Errors
/// Fails when the interface does not exist or the kernel cannot be queried.
pub fn attached_program_ids(interface: &str) -> Result<Vec<u32>, DatapathError> {
    let (_revision, programs) = SchedClassifier::query_tcx(interface, TcAttachType::Ingress)?;
    Ok(programs
        .iter()
        .map(aya::programs::ProgramInfo::id)
        .collect())
}

/// Names of the programs attached at tcx ingress of `interface`, in chain order.
///
/// # Errors
/// Fails when the interface does not exist or the kernel cannot be queried.
pub fn attached_program_names(interface: &str) -> Result<Vec<String>, DatapathError> {
    let (_revision, programs) = SchedClassifier::query_tcx(interface, TcAttachType::Ingress)?;
    Ok(programs
        .iter()
        .map(|p| p.name_as_str().unwrap_or_default().to_owned())
        .collect())
}

/// Where the link for interface `ifindex` is pinned.
pub fn link_pin_path(pin_dir: &Path, ifindex: u32) -> PathBuf {
    pin_dir
        .join(LINKS_DIR)
        .join(format!("tcx_ingress_{ifindex}"))
}

/// Interface indexes with a link pin under `pin_dir`.
///
/// # Errors
/// Fails when the links directory exists but cannot be read.
pub fn pinned_ifindexes(pin_dir: &Path) -> Result<Vec<u32>, DatapathError> {
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

/// Opens the pinned LPM maps without loading anything, for `dump`.
///
/// # Errors
/// Fails when the maps are not pinned under `pin_dir`.
pub fn read_pinned_entries(pin_dir: &Path) -> Result<Vec<(IpNet, u8)>, DatapathError> {
    let v4: LpmTrie<MapData, [u8; 4], u8> = LpmTrie::try_from(aya::maps::Map::LpmTrie(
        MapData::from_pin(pin_dir.join(MAP_NON_MASQ_V4))?,
    ))?;
    let v6: LpmTrie<MapData, [u8; 16], u8> = LpmTrie::try_from(aya::maps::Map::LpmTrie(
        MapData::from_pin(pin_dir.join(MAP_NON_MASQ_V6))?,
    ))?;
    read_entries(&v4, &v6)
}

fn read_entries(
    v4: &LpmTrie<MapData, [u8; 4], u8>,
    v6: &LpmTrie<MapData, [u8; 16], u8>,
) -> Result<Vec<(IpNet, u8)>, DatapathError> {
    let mut entries = Vec::new();
    for item in v4.iter() {
        let (key, value) = item?;
        let net =
            Ipv4Net::new(Ipv4Addr::from(key.data()), key.prefix_len() as u8).map_err(|_| {
                MapError::InvalidKeySize {
                    size: 0,
                    expected: 4,
                }
            })?;
        entries.push((IpNet::V4(net), value));
    }
    for item in v6.iter() {
        let (key, value) = item?;
        let net =
            Ipv6Net::new(Ipv6Addr::from(key.data()), key.prefix_len() as u8).map_err(|_| {
                MapError::InvalidKeySize {
                    size: 0,
                    expected: 16,
                }
            })?;
        entries.push((IpNet::V6(net), value));
    }
    Ok(entries)
}

/// Each slot of the per-CPU counter map pinned as `pin_dir/name`, summed
/// over CPUs.
fn read_counters(
    pin_dir: &Path,
    name: &str,
    slots: u32,
) -> Result<BTreeMap<u32, u64>, DatapathError> {
    let stats: PerCpuArray<MapData, StatCounter> = PerCpuArray::try_from(
        aya::maps::Map::PerCpuArray(MapData::from_pin(pin_dir.join(name))?),
    )?;
    let mut sums = BTreeMap::new();
    for slot in 0..slots {
        let values = stats.get(&slot, 0)?;
        sums.insert(slot, values.iter().sum::<u64>());
    }
    Ok(sums)
}

/// Reads the classifier's pinned per-CPU packet counters.
///
/// # Errors
/// Fails when the stats map is not pinned under `pin_dir`.
pub fn read_stats(pin_dir: &Path) -> Result<PacketStats, DatapathError> {
    let sums = read_counters(pin_dir, MAP_STATS, STAT_SLOTS)?;
    Ok(PacketStats {
        v4_seen: sums[&ip_masq_common::STAT_V4_SEEN],
        v4_kept: sums[&ip_masq_common::STAT_V4_KEPT],
        v6_seen: sums[&ip_masq_common::STAT_V6_SEEN],
        v6_kept: sums[&ip_masq_common::STAT_V6_KEPT],
    })
}

/// Reads the socket filters' pinned per-CPU connection counters.
///
/// # Errors
/// Fails when the map is not pinned under `pin_dir` (an agent older than
/// these counters pinned the rest).
pub fn read_connection_stats(pin_dir: &Path) -> Result<ConnectionStats, DatapathError> {
    let sums = read_counters(pin_dir, MAP_XT_BPF_STATS, XT_STAT_SLOTS)?;
    Ok(ConnectionStats {
        v4_keep_source: sums[&ip_masq_common::XT_STAT_V4_KEEP_SOURCE],
        v4_masquerade: sums[&ip_masq_common::XT_STAT_V4_MASQUERADE],
        v6_keep_source: sums[&ip_masq_common::XT_STAT_V6_KEEP_SOURCE],
        v6_masquerade: sums[&ip_masq_common::XT_STAT_V6_MASQUERADE],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_pin_is_missing() {
        let dir = std::env::temp_dir().join(format!("ip-masq-pins-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let pin = dir.join("NON_MASQ_V4");
        assert!(pin_missing(&pin).unwrap());
        fs::write(&pin, "").unwrap();
        assert!(!pin_missing(&pin).unwrap());
        // Something someone else put there is not ours to replace.
        let dangling = dir.join("NON_MASQ_V6");
        std::os::unix::fs::symlink("nowhere", &dangling).unwrap();
        assert!(!pin_missing(&dangling).unwrap());
        fs::remove_dir_all(dir).unwrap();
    }
}

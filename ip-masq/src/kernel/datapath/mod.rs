//! The kernel side: loads the classifier, pins its maps and per-interface
//! tcx links under the pin directory, attaches it, and reads and writes the
//! LPM maps. It also loads and pins the socket filters that the nat
//! chain's xt_bpf rules run ([`xt_bpf`]).
//!
//! Pins are what make the datapath outlive the agent: while the agent is
//! down or restarting, the pinned links keep the program attached and the
//! pinned maps keep the table.
//!
//! Here: the object, [`Datapath::load`] and the [`PrefixStore`] door; the
//! error type ([`error`]); tcx links on interfaces ([`links`]); reading and
//! writing the LPM maps ([`maps`]); the pin directory and pin repair
//! ([`pins`]); test runs of the programs ([`probe`]); their counters
//! ([`stats`]); the ids at an interface's tcx ingress ([`tcx`]).

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{LpmTrie, MapData},
    programs::SchedClassifier,
};
use ip_masq_common::{
    Action, GLOBAL_KEEP_SOURCE_MARK, MAP_NON_MASQ_V4, MAP_NON_MASQ_V6, MAP_RANGES_V4,
    MAP_RANGES_V6, MAP_STATS, MAP_XT_BPF_STATS, PROGRAM_CLASSIFIER, range_capacity, range_words_v4,
};
use ip_masq_lookup::{LookupError, PublishReport};
use ipnet::IpNet;

mod directory;
mod error;
mod links;
mod maps;
mod pins;
mod probe;
mod shared;
mod stats;
mod tcx;
mod xt_bpf;

pub use error::DatapathError;
pub use probe::Probe;
pub use stats::{ConnectionStats, PacketStats};

pub(crate) use links::{link_pin_path, pinned_ifindexes};
pub(crate) use maps::read_pinned_entries;
pub use maps::{MapMemory, pinned_map_memory};
pub(crate) use pins::{Repinned, prepare_pin_dir};
pub(crate) use stats::{read_connection_stats, read_stats};
pub(crate) use tcx::tcx_ingress_ids;
pub(crate) use xt_bpf::xt_bpf_pin_path;

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
    /// Makes the programs decide as the maps hold the table now: the range
    /// directory's chunks that the writes since the last call touched are
    /// rewritten, each switched in one store. Cheap when nothing changed.
    ///
    /// # Errors
    /// A chunk that found no room; it keeps deciding as before and is
    /// tried again at the next call.
    fn publish(&mut self) -> Result<PublishReport, LookupError>;
}

/// The eBPF object (classifier and socket filters), built by build.rs from
/// the `ip-masq-ebpf` binary.
pub static CLASSIFIER_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("IP_MASQ_EBPF_OBJECT"));

/// Sub-directory of the pin directory that holds one link pin per interface.
const LINKS_DIR: &str = "links";

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
pub(crate) enum Attachment {
    /// A new tcx link was created and pinned.
    Created,
    /// A pinned link from an earlier run was found on the interface and
    /// switched atomically to this run's program.
    Adopted,
}

/// The loaded datapath.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    v4: LpmTrie<MapData, [u8; 4], u8>,
    v6: LpmTrie<MapData, [u8; 16], u8>,
    capacity_v4: usize,
    capacity_v6: usize,
    directory: directory::Directory,
    /// What the load's publish of the directory wrote.
    adopted: PublishReport,
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
        let range_slots = [
            range_capacity(options.max_entries),
            range_capacity(options.max_entries),
        ];
        let mut loader = EbpfLoader::new();
        loader
            .override_global(GLOBAL_KEEP_SOURCE_MARK, &options.mark, true)
            .map_max_entries(MAP_NON_MASQ_V4, options.max_entries)
            .map_max_entries(MAP_NON_MASQ_V6, options.max_entries)
            .map_max_entries(MAP_RANGES_V4, range_words_v4(range_slots[0]))
            .map_max_entries(MAP_RANGES_V6, range_slots[1]);
        for name in ip_masq_common::DIRECTORY_MAPS {
            loader.map_pin_path(name, pin_dir.join(name));
        }
        let mut ebpf = loader
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
        checked_capacity(
            &pin_dir.join(MAP_RANGES_V4),
            MAP_RANGES_V4,
            range_words_v4(range_slots[0]),
        )?;
        checked_capacity(&pin_dir.join(MAP_RANGES_V6), MAP_RANGES_V6, range_slots[1])?;
        // Before the socket filters are pinned over an earlier run's: from
        // then on they decide with the directory, which must hold the
        // record's table (an upgrade from an agent without it finds it
        // empty, which would masquerade everything).
        let record = maps::read_entries(&v4, &v6)?;
        let (directory, adopted) = directory::Directory::load(&mut ebpf, range_slots, &record)?;

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
            directory,
            adopted,
        })
    }

    /// What loading wrote into the range directory: nothing when it was
    /// adopted from an earlier run that held the same table.
    pub fn adopted(&self) -> PublishReport {
        self.adopted
    }

    /// Rewrites the directory's chunks someone changed in the arrays, and
    /// publishes what is still due; returns how many had changed.
    ///
    /// # Errors
    /// A chunk that could not be rewritten.
    pub fn repair_directory(&mut self) -> Result<usize, LookupError> {
        self.directory.repair()
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

//! Reading and writing the LPM maps: the agent's table, entry by entry.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::maps::{LpmTrie, MapData, MapError, lpm_trie::Key};
use ip_masq_common::{Action, MAP_NON_MASQ_V4, MAP_NON_MASQ_V6};
use ip_masq_lookup::{LookupError, PublishReport};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{Datapath, DatapathError, PrefixStore};

impl Datapath {
    /// Reads every entry of both LPM maps back.
    ///
    /// # Errors
    /// Fails when the kernel refuses to iterate a map.
    pub(crate) fn read_entries(&self) -> Result<Vec<(IpNet, u8)>, DatapathError> {
        read_entries(&self.v4, &self.v6)
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
        result.map_err(map_io_error)?;
        self.directory.note(&prefix, Some(action));
        Ok(())
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
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(other) => return Err(map_io_error(other)),
        }
        self.directory.note(&prefix, None);
        Ok(())
    }

    fn capacity(&self, prefix: &IpNet) -> usize {
        match prefix {
            IpNet::V4(_) => self.capacity_v4,
            IpNet::V6(_) => self.capacity_v6,
        }
    }

    fn publish(&mut self) -> Result<PublishReport, LookupError> {
        self.directory.publish()
    }
}

fn map_io_error(err: MapError) -> io::Error {
    match err {
        MapError::SyscallError(err) => err.io_error,
        other => io::Error::other(other.to_string()),
    }
}

/// Opens the pinned LPM maps without loading anything, for `dump`.
///
/// # Errors
/// Fails when the maps are not pinned under `pin_dir`.
pub(crate) fn read_pinned_entries(pin_dir: &Path) -> Result<Vec<(IpNet, u8)>, DatapathError> {
    let v4: LpmTrie<MapData, [u8; 4], u8> = LpmTrie::try_from(aya::maps::Map::LpmTrie(
        MapData::from_pin(pin_dir.join(MAP_NON_MASQ_V4))?,
    ))?;
    let v6: LpmTrie<MapData, [u8; 16], u8> = LpmTrie::try_from(aya::maps::Map::LpmTrie(
        MapData::from_pin(pin_dir.join(MAP_NON_MASQ_V6))?,
    ))?;
    read_entries(&v4, &v6)
}

pub(super) fn read_entries(
    v4: &LpmTrie<MapData, [u8; 4], u8>,
    v6: &LpmTrie<MapData, [u8; 16], u8>,
) -> Result<Vec<(IpNet, u8)>, DatapathError> {
    let mut entries = Vec::new();
    for item in v4 {
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
    for item in v6 {
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

/// Kernel memory charged to one pinned map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapMemory {
    pub name: &'static str,
    /// The kernel's `memlock` figure for the map (what `bpftool map show`
    /// prints): its allocation, whether or not the entries are used.
    pub bytes: u64,
}

/// The memory of every map the agent pins under `pin_dir`, from each
/// map's `/proc/self/fdinfo` entry.
///
/// # Errors
/// Fails when a map is not pinned or its fdinfo cannot be read.
pub fn pinned_map_memory(pin_dir: &Path) -> Result<Vec<MapMemory>, DatapathError> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    [MAP_NON_MASQ_V4, MAP_NON_MASQ_V6]
        .into_iter()
        .chain(ip_masq_common::DIRECTORY_MAPS)
        .chain([ip_masq_common::MAP_STATS, ip_masq_common::MAP_XT_BPF_STATS])
        .map(|name| {
            let map = MapData::from_pin(pin_dir.join(name))?;
            let fd = map.fd().as_fd().as_raw_fd();
            let path = format!("/proc/self/fdinfo/{fd}");
            let text =
                std::fs::read_to_string(&path).map_err(|source| DatapathError::PinLookup {
                    path: path.clone().into(),
                    source,
                })?;
            let bytes = text
                .lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            Ok(MapMemory { name, bytes })
        })
        .collect()
}

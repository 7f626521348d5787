//! The pin directory: that it lies on bpffs, and putting back pins that
//! someone removed while the agent runs.

use std::{fs, io, path::Path};

use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use aya::{
    maps::{IterableMap as _, MapData},
    programs::SocketFilter,
};
use ip_masq_common::{
    MAP_NON_MASQ_V4, MAP_NON_MASQ_V6, MAP_STATS, MAP_XT_BPF_STATS, PROGRAM_XT_BPF_V4,
    PROGRAM_XT_BPF_V6,
};

use super::{Datapath, DatapathError, xt_bpf_pin_path};

impl Datapath {
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
    pub(crate) fn repin_missing(&mut self) -> Result<Vec<Repinned>, DatapathError> {
        let mut repinned = Vec::new();
        let records: [(&'static str, &MapData); 2] = [
            (MAP_NON_MASQ_V4, self.v4.map()),
            (MAP_NON_MASQ_V6, self.v6.map()),
        ];
        for (name, map) in records.into_iter().chain(self.directory.maps()) {
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
pub(crate) enum Repinned {
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

/// Creates the pin directory after checking that it lies on a bpf
/// filesystem, so that a missing bpffs mount is named as such.
///
/// # Errors
/// [`DatapathError::NotBpffs`] when the nearest existing ancestor is not on
/// bpffs; [`DatapathError::PinDir`] when the directory cannot be created.
pub(crate) fn prepare_pin_dir(pin_dir: &Path) -> Result<(), DatapathError> {
    let existing = pin_dir
        .ancestors()
        .find(|ancestor| ancestor.exists())
        .unwrap_or(Path::new("/"));
    if !on_bpffs(existing) {
        return Err(DatapathError::NotBpffs {
            path: pin_dir.to_owned(),
        });
    }
    fs::create_dir_all(pin_dir).map_err(|source| DatapathError::PinDir {
        path: pin_dir.to_owned(),
        source,
    })
}

/// Whether `path` lies on a bpf filesystem; a path that cannot be examined
/// does not.
fn on_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|stat| stat.filesystem_type() == BPF_FS_MAGIC)
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

    #[test]
    fn a_pin_dir_off_bpffs_is_refused_and_not_created() {
        let dir = std::env::temp_dir().join(format!("ip-masq-not-bpffs-{}", std::process::id()));
        let pin_dir = dir.join("ip-masq");
        let err = prepare_pin_dir(&pin_dir).unwrap_err();
        assert!(
            matches!(&err, DatapathError::NotBpffs { path } if path == &pin_dir),
            "{err:?}"
        );
        assert!(!dir.exists());
    }
}

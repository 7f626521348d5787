//! The socket filters behind the iptables `bpf` match (xt_bpf): they are
//! loaded from the classifier's object, so they read the very maps the
//! classifier reads, and pinned where the nat chain's rules name them.
//!
//! The pins are replaced atomically on every start. iptables rules name the
//! pinned *path* (`-m bpf --object-pinned PATH`), and the kernel resolves it
//! each time such a rule is inserted: by the agent, or by any tool that
//! saves and restores the nat table. With a rename over the old pin the
//! path always names a loaded program, never nothing and never a half
//! replaced one. A rule inserted earlier keeps the program it resolved,
//! which reads the same pinned maps; the agent rewrites its chain at start,
//! which moves its rules to this run's program.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{Ebpf, programs::SocketFilter};
use ip_masq_common::{PIN_XT_BPF_V4, PIN_XT_BPF_V6, PROGRAM_XT_BPF_V4, PROGRAM_XT_BPF_V6};

use super::DatapathError;
use crate::model::Family;

/// Where the socket filter for `family` is pinned under `pin_dir`.
pub(crate) fn xt_bpf_pin_path(pin_dir: &Path, family: Family) -> PathBuf {
    pin_dir.join(match family {
        Family::V4 => PIN_XT_BPF_V4,
        Family::V6 => PIN_XT_BPF_V6,
    })
}

/// Loads both socket filters of `ebpf` and pins each over its previous pin.
///
/// # Errors
/// Fails when the kernel refuses a program, the pin or the rename.
pub(super) fn load_and_pin(ebpf: &mut Ebpf, pin_dir: &Path) -> Result<(), DatapathError> {
    for (name, family) in [
        (PROGRAM_XT_BPF_V4, Family::V4),
        (PROGRAM_XT_BPF_V6, Family::V6),
    ] {
        let program: &mut SocketFilter = ebpf
            .program_mut(name)
            .ok_or(DatapathError::Missing(name))?
            .try_into()?;
        program.load()?;
        replace_pin(program, &xt_bpf_pin_path(pin_dir, family))?;
    }
    Ok(())
}

/// Pins `program` under a staging name next to `pin`, then renames it over
/// `pin` (bpffs supports rename(2), which is atomic).
fn replace_pin(program: &mut SocketFilter, pin: &Path) -> Result<(), DatapathError> {
    let staging = staging_path(pin);
    // Left by an agent that died between its pin and its rename.
    match fs::remove_file(&staging) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DatapathError::Unpin {
                path: staging,
                source,
            });
        }
    }
    program
        .pin(&staging)
        .map_err(|source| DatapathError::PinProgram {
            path: staging.clone(),
            source: Box::new(source),
        })?;
    fs::rename(&staging, pin).map_err(|source| DatapathError::ReplacePin {
        from: staging,
        to: pin.to_owned(),
        source,
    })
}

/// `DIR/NAME_staging` for a pin at `DIR/NAME`. Not a dotted name: bpffs
/// reserves dots for itself and refuses them with EPERM.
fn staging_path(pin: &Path) -> PathBuf {
    let name = pin
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    pin.with_file_name(format!("{name}_staging"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_sit_directly_under_the_pin_dir() {
        let dir = Path::new("/sys/fs/bpf/ip-masq");
        assert_eq!(
            xt_bpf_pin_path(dir, Family::V4),
            Path::new("/sys/fs/bpf/ip-masq/xt_bpf_v4")
        );
        assert_eq!(
            xt_bpf_pin_path(dir, Family::V6),
            Path::new("/sys/fs/bpf/ip-masq/xt_bpf_v6")
        );
    }

    #[test]
    fn staging_pin_is_an_undotted_sibling() {
        assert_eq!(
            staging_path(Path::new("/sys/fs/bpf/ip-masq/xt_bpf_v4")),
            Path::new("/sys/fs/bpf/ip-masq/xt_bpf_v4_staging")
        );
    }
}

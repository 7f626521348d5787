//! One agent per pin directory: two would fight over the maps, the links
//! and the rules.

use std::{
    fs::{File, TryLockError},
    path::Path,
};

use super::AgentError;

/// An exclusive lock on the pin directory, held for the agent's lifetime.
/// bpffs holds no regular files, so the directory itself is locked.
pub(crate) struct PinDirLock {
    _dir: File,
}

impl PinDirLock {
    /// Takes the lock without waiting.
    ///
    /// # Errors
    /// [`AgentError::AlreadyRunning`] when another process holds it.
    pub(crate) fn acquire(pin_dir: &Path) -> Result<Self, AgentError> {
        crate::kernel::datapath::prepare_pin_dir(pin_dir)?;
        lock_dir(pin_dir).map(|dir| Self { _dir: dir })
    }
}

/// Opens `dir` and takes an exclusive `flock` on it, as earlier agents and
/// `ip-masq status` (which looks for the holder in `/proc/locks`) expect.
fn lock_dir(dir: &Path) -> Result<File, AgentError> {
    let file = File::open(dir).map_err(|source| AgentError::Lock {
        path: dir.to_owned(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AgentError::AlreadyRunning {
            path: dir.to_owned(),
        }),
        Err(TryLockError::Error(source)) => Err(AgentError::Lock {
            path: dir.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("ip-masq-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = lock_dir(&dir).unwrap();
        // flock locks belong to the open file, so a second open in this
        // process conflicts as another process's would.
        let err = lock_dir(&dir).unwrap_err();
        assert!(
            matches!(&err, AgentError::AlreadyRunning { path } if path == &dir),
            "{err:?}"
        );
        drop(first);
        lock_dir(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_a_lock_error() {
        let dir = std::env::temp_dir().join(format!("ip-masq-lock-absent-{}", std::process::id()));
        let err = lock_dir(&dir).unwrap_err();
        assert!(matches!(err, AgentError::Lock { .. }), "{err:?}");
    }
}

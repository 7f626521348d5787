//! The state file: where it lives, written atomically, read by `status`.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::AgentStatus;

/// Errors reading or writing the state file.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot write state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Keeps the state file in line with the shared status, writing it only
/// when something changed.
pub(crate) struct StatePublisher {
    path: PathBuf,
    written: Option<AgentStatus>,
    /// A failing write is logged once, not at every loop turn.
    failing: bool,
}

impl StatePublisher {
    pub(crate) fn new(state_dir: &Path, pin_dir: &Path) -> Self {
        Self {
            path: state_file_path(state_dir, pin_dir),
            written: None,
            failing: false,
        }
    }

    /// Writes `status` unless the file already holds it. The state file is
    /// for humans and `status`; failing to write it never stops the agent.
    pub(crate) fn publish(&mut self, status: &AgentStatus) {
        if self.written.as_ref() == Some(status) {
            return;
        }
        match write_state(&self.path, status) {
            Ok(()) => {
                self.written = Some(status.clone());
                if std::mem::take(&mut self.failing) {
                    tracing::info!(path = %self.path.display(), "state file written again");
                }
            }
            Err(err) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        error = %crate::error::error_chain(&err),
                        "`ip-masq status` will not see this agent's state"
                    );
                }
            }
        }
    }
}

/// Where the state of the agent using `pin_dir` is kept under `state_dir`:
/// `<last component of pin_dir>-<FNV-1a of the whole path>.json`.
pub(crate) fn state_file_path(state_dir: &Path, pin_dir: &Path) -> PathBuf {
    // Lexical normalisation, so `/a/b/` and `/a/b` name the same file.
    let normalised: PathBuf = pin_dir.components().collect();
    let bytes = normalised.as_os_str().as_encoded_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let stem = normalised
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("root");
    state_dir.join(format!("{stem}-{hash:016x}.json"))
}

/// Writes the state file atomically (a temporary file, then a rename), so
/// that a reader never sees half a document.
///
/// # Errors
/// Fails when the directory cannot be created or the file written.
fn write_state(path: &Path, status: &AgentStatus) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(write_err)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let text = serde_json::to_string_pretty(status).expect("the status is serialisable");
    fs::write(&temporary, text + "\n").map_err(write_err)?;
    fs::rename(&temporary, path).map_err(write_err)
}

/// Reads the state file; `Ok(None)` when there is none.
///
/// # Errors
/// Fails when the file exists but cannot be read or parsed.
pub(crate) fn read_state(path: &Path) -> Result<Option<AgentStatus>, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| StateError::Parse {
            path: path.to_owned(),
            source,
        })
}

/// Removes the state file; an absent file is not an error.
///
/// # Errors
/// Fails when the file exists and cannot be removed.
pub(crate) fn remove_state(path: &Path) -> Result<bool, StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StateError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::state::{AttachedInterface, ReloadRecord, ReloadResult};

    #[test]
    fn state_file_is_named_after_the_pin_dir() {
        let dir = Path::new("/run/ip-masq");
        let a = state_file_path(dir, Path::new("/sys/fs/bpf/ip-masq"));
        assert_eq!(a, state_file_path(dir, Path::new("/sys/fs/bpf/ip-masq/")));
        assert_eq!(a, state_file_path(dir, Path::new("/sys/fs/bpf/./ip-masq")));
        assert_ne!(a, state_file_path(dir, Path::new("/tmp/bpf/ip-masq")));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("ip-masq-") && name.ends_with(".json"),
            "{name}"
        );
        // FNV-1a, checked independently: stable across builds and versions.
        assert_eq!(name, "ip-masq-7b01bdf952c54f69.json");
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("ip-masq-state-test-{}", std::process::id()));
        let path = dir.join("x.json");
        let mut status = AgentStatus {
            startup_complete: true,
            maps_filled: true,
            last_reload: Some(ReloadRecord {
                at: 1.0,
                result: ReloadResult::Applied {
                    added: 4,
                    removed: 0,
                    failed: 0,
                    elapsed_ms: 0.5,
                },
            }),
            ..AgentStatus::default()
        };
        status.attached.push(AttachedInterface {
            name: "veth1".into(),
            ifindex: 4,
        });
        status.iptables_repairs.ipv4 = 2;
        write_state(&path, &status).unwrap();
        assert_eq!(read_state(&path).unwrap(), Some(status));
        assert!(remove_state(&path).unwrap());
        assert_eq!(read_state(&path).unwrap(), None);
        assert!(!remove_state(&path).unwrap());
        fs::remove_dir(&dir).unwrap();
    }
}

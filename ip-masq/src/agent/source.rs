//! Reading the config file from disk, with the limits that keep a hostile
//! or broken file from hurting the agent.

use std::{
    fs,
    io::{self, Read as _},
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;

/// Why the config file could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("{path} is a directory, not a file")]
    Directory { path: PathBuf },
    #[error("{path} is a symlink to {target}, which does not exist")]
    DanglingSymlink { path: PathBuf, target: PathBuf },
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: usize },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads the config file: `Ok(None)` when it does not exist (defaults
/// apply, as upstream), its bytes otherwise; `--max-config-bytes` is
/// `max_bytes` (by default
/// [`MAX_CONFIG_BYTES`](ip_masq_config::MAX_CONFIG_BYTES)).
///
/// A dangling symlink is an error rather than "missing": during a ConfigMap
/// update it means the volume is mid-swap, and the previous config must
/// stay in force. It is tried again for a moment first
/// ([`read_retrying_swaps`]).
///
/// # Errors
/// [`ReadError`] for directories, dangling symlinks, files larger than
/// `max_bytes` and I/O errors.
pub(crate) fn read_config_with_limit(
    path: &Path,
    max_bytes: usize,
) -> Result<Option<Vec<u8>>, ReadError> {
    read_retrying_swaps(path, max_bytes, SWAP_RETRIES, SWAP_RETRY_PAUSE)
}

/// Reads of a path that fails as "not found" through a symlink are tried
/// again this often, this far apart (100 ms in all).
const SWAP_RETRIES: u32 = 5;
const SWAP_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The kubelet swaps a ConfigMap volume by renaming `..data` to a new
/// directory and then deleting the old one. A read that resolved `..data`
/// just before the rename finds the old directory's file gone, and sees a
/// dangling link although the new file is complete (seen on a real node,
/// as a `config rejected` line at nearly every edit). Such a read is tried
/// again; a link that stays dangling is an error.
fn read_retrying_swaps(
    path: &Path,
    max_bytes: usize,
    retries: u32,
    pause: Duration,
) -> Result<Option<Vec<u8>>, ReadError> {
    let mut attempt = 0;
    loop {
        match read_once(path, max_bytes) {
            Err(ReadError::DanglingSymlink { .. } | ReadError::Io { .. })
                if attempt < retries && is_mid_swap(path) =>
            {
                attempt += 1;
                std::thread::sleep(pause);
            }
            result => return result,
        }
    }
}

/// Whether `path` is a symlink whose target is (now) missing.
fn is_mid_swap(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink())
        && fs::metadata(path).is_err_and(|err| err.kind() == io::ErrorKind::NotFound)
}

fn read_once(path: &Path, max_bytes: usize) -> Result<Option<Vec<u8>>, ReadError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(ReadError::Directory {
                path: path.to_owned(),
            });
        }
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return match fs::read_link(path) {
                Ok(target) => Err(ReadError::DanglingSymlink {
                    path: path.to_owned(),
                    target,
                }),
                Err(_) => Ok(None),
            };
        }
        Err(source) => {
            return Err(ReadError::Io {
                path: path.to_owned(),
                source,
            });
        }
    }
    let file = fs::File::open(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ReadError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() > max_bytes {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            max: max_bytes,
        });
    }
    Ok(Some(bytes))
}

/// Config files as read: each one's name and its bytes (`None`: no file).
pub(crate) type SourceFiles = Vec<(String, Option<Vec<u8>>)>;

/// The files read as one config (`--config-dir`): `config` itself and every
/// file of `dir` (empty: `config`'s own directory) whose name starts with `ip-masq`,
/// as ip-masq-agent-v2 reads its config directory (a platform ConfigMap and
/// a team one projected into one volume, say), sorted by name. A ConfigMap
/// volume's `..data` and version directories start with `..`, so they are
/// never taken; symlinks are followed, as for the config file.
///
/// # Errors
/// The directory cannot be listed (other than missing), or a file cannot
/// be read ([`read_config_with_limit`]).
pub(crate) fn read_sources(
    config: &Path,
    dir: &Path,
    max_bytes: usize,
) -> Result<SourceFiles, ReadError> {
    let dir = if dir.as_os_str().is_empty() {
        config.parent().unwrap_or(Path::new(".")).to_owned()
    } else {
        dir.to_owned()
    };
    let mut paths: Vec<PathBuf> = vec![config.to_owned()];
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let path = dir.join(&name);
                if name.to_string_lossy().starts_with("ip-masq") && !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(ReadError::Io { path: dir, source }),
    }
    paths[1..].sort();
    paths
        .into_iter()
        .map(|path| {
            let bytes = read_config_with_limit(&path, max_bytes)?;
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            );
            Ok((name, bytes))
        })
        // A source that does not exist adds nothing (the config path may
        // name no file, while others in its directory exist).
        .filter(|read| !matches!(read, Ok((_, None))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ip_masq_config::MAX_CONFIG_BYTES;

    fn read_config(path: &Path) -> Result<Option<Vec<u8>>, ReadError> {
        read_config_with_limit(path, MAX_CONFIG_BYTES)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ip-masq-source-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_file_means_defaults() {
        let dir = scratch("missing");
        assert!(read_config(&dir.join("absent")).unwrap().is_none());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reads_through_symlinks() {
        let dir = scratch("symlink");
        fs::create_dir(dir.join("..data_1")).unwrap();
        fs::write(dir.join("..data_1/config"), "masqLinkLocal: true").unwrap();
        std::os::unix::fs::symlink("..data_1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config", dir.join("config")).unwrap();
        assert_eq!(
            read_config(&dir.join("config")).unwrap().unwrap(),
            b"masqLinkLocal: true"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_directories_dangling_links_and_huge_files() {
        let dir = scratch("refuse");
        fs::create_dir(dir.join("config")).unwrap();
        assert!(matches!(
            read_config(&dir.join("config")),
            Err(ReadError::Directory { .. })
        ));
        std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
        let err = read_config(&dir.join("dangling")).unwrap_err();
        assert!(matches!(err, ReadError::DanglingSymlink { .. }));
        assert!(err.to_string().contains("nowhere"));
        fs::write(dir.join("huge"), vec![b'#'; MAX_CONFIG_BYTES + 10]).unwrap();
        assert!(matches!(
            read_config(&dir.join("huge")),
            Err(ReadError::TooLarge { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_link_dangling_for_a_moment_is_read_once_its_target_is_there() {
        // As during the kubelet's swap: the link points at a file that is
        // missing for a moment, then present.
        let dir = scratch("swap");
        std::os::unix::fs::symlink("..data/config", dir.join("config")).unwrap();
        let target = dir.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            fs::create_dir(target.join("..data_2")).unwrap();
            fs::write(target.join("..data_2/config"), "masqLinkLocal: true").unwrap();
            std::os::unix::fs::symlink("..data_2", target.join("..data")).unwrap();
        });
        // A generous window, so that a slow machine does not make it flaky.
        let read = read_retrying_swaps(
            &dir.join("config"),
            MAX_CONFIG_BYTES,
            200,
            Duration::from_millis(10),
        );
        writer.join().unwrap();
        assert_eq!(read.unwrap().unwrap(), b"masqLinkLocal: true");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_link_that_stays_dangling_is_refused_after_the_retries() {
        let dir = scratch("stays");
        std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
        let started = std::time::Instant::now();
        let read = read_retrying_swaps(
            &dir.join("dangling"),
            MAX_CONFIG_BYTES,
            3,
            Duration::from_millis(10),
        );
        assert!(matches!(read, Err(ReadError::DanglingSymlink { .. })));
        assert!(started.elapsed() >= Duration::from_millis(30));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_raised_size_limit_reads_a_larger_file_and_no_more() {
        let dir = scratch("limit");
        fs::write(dir.join("large"), vec![b'#'; MAX_CONFIG_BYTES + 10]).unwrap();
        let bytes = read_config_with_limit(&dir.join("large"), MAX_CONFIG_BYTES + 10).unwrap();
        assert_eq!(bytes.map(|b| b.len()), Some(MAX_CONFIG_BYTES + 10));
        assert!(matches!(
            read_config_with_limit(&dir.join("large"), MAX_CONFIG_BYTES + 9),
            Err(ReadError::TooLarge { max, .. }) if max == MAX_CONFIG_BYTES + 9
        ));
        fs::remove_dir_all(dir).unwrap();
    }
}

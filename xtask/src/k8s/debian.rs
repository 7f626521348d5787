//! Packages from Debian's archive through a private apt configuration: its
//! own sources list, lists, cache and state under the cache directory, so
//! the host's apt state is neither read nor changed. Packages are unpacked
//! with `dpkg -x`, never installed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run;

/// The archive the node is built from. bullseye only for Go 1.15, the last
/// Go that builds Kubernetes 1.20 as its vendored tree expects.
pub(crate) const SOURCES: &str = "\
deb http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian bullseye main
";

/// A private apt: `apt-get` with every directory it reads or writes
/// pointed under `dir`.
pub(crate) struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    pub(crate) fn new(dir: &Path) -> anyhow::Result<Self> {
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "etc/sources.list.d",
            "etc/preferences.d",
            "state",
        ] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("etc/sources.list"), SOURCES)?;
        fs::write(dir.join("state/status"), "")?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn options(&self) -> Vec<String> {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        vec![
            format!("-oDir::Etc::SourceList={}", d("etc/sources.list")),
            format!("-oDir::Etc::SourceParts={}", d("etc/sources.list.d")),
            format!("-oDir::Etc::Preferences={}", d("etc/preferences")),
            format!("-oDir::Etc::PreferencesParts={}", d("etc/preferences.d")),
            format!("-oDir::State={}", d("state")),
            format!("-oDir::State::Lists={}", d("lists")),
            format!("-oDir::State::status={}", d("state/status")),
            format!("-oDir::Cache={}", d("cache")),
            "-oAPT::Architecture=amd64".into(),
            "-oAPT::Architectures=amd64".into(),
            // The downloads land in directories root owns; apt's sandbox
            // user could not write there.
            "-oAPT::Sandbox::User=root".into(),
            "-oAcquire::Retries=3".into(),
        ]
    }

    /// `apt-get ARGS` with the private configuration, in `cwd`.
    pub(crate) fn apt_get(&self, cwd: &Path, args: &[&str]) -> anyhow::Result<()> {
        run(Command::new("apt-get")
            .args(self.options())
            .args(args)
            .current_dir(cwd))
    }

    /// `apt-cache ARGS` with the private configuration; its output.
    pub(crate) fn apt_cache(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new("apt-cache")
            .args(self.options())
            .args(args)
            .output()
            .context("run apt-cache")?;
        if !output.status.success() {
            bail!(
                "apt-cache {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub(crate) fn update(&self) -> anyhow::Result<()> {
        self.apt_get(&self.dir, &["update", "-qq"])
    }

    /// The version apt would pick for `package` (the candidate).
    pub(crate) fn candidate(&self, package: &str) -> anyhow::Result<String> {
        let policy = self.apt_cache(&["policy", package])?;
        candidate_version(&policy)
            .with_context(|| format!("no candidate version of {package} in the archive"))
    }
}

impl PrivateApt {
    /// The version of the source package `package` (`apt-cache showsrc`).
    pub(crate) fn source_version(&self, package: &str) -> anyhow::Result<String> {
        let text = self.apt_cache(&["showsrc", package])?;
        text.lines()
            .find_map(|line| line.strip_prefix("Version: "))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("no source package {package} in the archive"))
    }
}

/// The `Candidate:` line of `apt-cache policy` output. Pure.
pub(crate) fn candidate_version(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate: "))
        .map(str::trim)
        .filter(|version| *version != "(none)")
        .map(str::to_owned)
}

/// Unpacks every `.deb` in `debs` into `root` with `dpkg -x`.
pub(crate) fn unpack_all(debs: &Path, root: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(root)?;
    let mut files: Vec<PathBuf> = fs::read_dir(debs)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    files.sort();
    for file in files {
        run(Command::new("dpkg").arg("-x").arg(&file).arg(root))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_from_policy() {
        let policy = "containerd:\n  Installed: (none)\n  Candidate: 1.6.20~ds1-1+deb12u3\n  Version table:\n";
        assert_eq!(
            candidate_version(policy).as_deref(),
            Some("1.6.20~ds1-1+deb12u3")
        );
        assert_eq!(candidate_version("x:\n  Candidate: (none)\n"), None);
        assert_eq!(candidate_version(""), None);
    }
}

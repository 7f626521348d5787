//! `cargo xtask image`: the runtime image without a registry or a daemon,
//! with the same layout as the Dockerfile's runtime stage:
//!
//! 1. a Debian bookworm root filesystem from mmdebstrap (minbase with
//!    `debian:bookworm-slim`'s dpkg path excludes) with iptables, both
//!    backends, installed without recommends, and apt's lists removed;
//! 2. a layer with the agent (a release build) and the iptables wrapper;
//! 3. the Dockerfile's entry point and command, and no `USER` (root).
//!
//! The output, `target/image/ip-masq.tar`, is a docker-archive tarball
//! tagged `ip-masq:latest` (which containerd and the kubelet read as
//! `docker.io/library/ip-masq:latest`, the deploy/ manifests' image), for
//! `ctr images import`, `docker load` or `podman load`. The base layer is
//! cached under `target/image/` by what it is made of; `--fresh` makes it
//! again (for newer Debian packages).

pub(crate) mod archive;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{run, workspace_root};

/// The image's reference.
pub(crate) const REFERENCE: &str = "ip-masq:latest";

/// What the Dockerfile's runtime stage is made of, as data: the test in
/// `tests/tests/image.rs` reads the Dockerfile and checks both against it.
pub(crate) struct RuntimeLayout {
    /// The Dockerfile's `FROM` (the base this build recreates).
    pub(crate) base: &'static str,
    pub(crate) suite: &'static str,
    /// `apt-get install --no-install-recommends` packages.
    pub(crate) packages: &'static [&'static str],
    /// (source in the workspace, or `@agent` for the binary; path in the image).
    pub(crate) files: &'static [(&'static str, &'static str)],
    pub(crate) entrypoint: &'static [&'static str],
    pub(crate) cmd: &'static [&'static str],
    /// Empty: root.
    pub(crate) user: &'static str,
}

pub(crate) const RUNTIME: RuntimeLayout = RuntimeLayout {
    base: "debian:bookworm-slim",
    suite: "bookworm",
    packages: &["iptables"],
    files: &[
        (
            "deploy/image/iptables-wrapper",
            "/usr/local/bin/iptables-wrapper",
        ),
        ("@agent", "/usr/local/bin/ip-masq"),
    ],
    entrypoint: &["/usr/local/bin/iptables-wrapper", "/usr/local/bin/ip-masq"],
    cmd: &["run"],
    user: "",
};

/// debian:bookworm-slim's PATH (the Dockerfile inherits it).
pub(crate) const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The dpkg path filters of the `-slim` images (debuerreotype's slimify).
const SLIM_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/linda/*",
    "path-exclude=/usr/share/lintian/overrides/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/man/*",
];

const MIRRORS: &[&str] = &[
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];

#[derive(Clone, Debug, Default)]
pub(crate) struct Options {
    /// Package a debug build of the agent (faster to build) instead of a
    /// release build.
    pub(crate) debug: bool,
    /// Make the Debian base again even if a cached one matches.
    pub(crate) fresh: bool,
}

pub(crate) fn image_dir() -> PathBuf {
    workspace_root().join("target").join("image")
}

/// Where the image tarball goes.
pub(crate) fn output_path() -> PathBuf {
    image_dir().join("ip-masq.tar")
}

/// The current time, RFC 3339, UTC.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn mmdebstrap() -> anyhow::Result<PathBuf> {
    let layout = lab::k8s::Layout::default();
    let script = layout.debian_binary("usr/bin/mmdebstrap");
    if !script.is_file() {
        // The same private apt fetch the node uses brings mmdebstrap.
        std::fs::create_dir_all(layout.root())?;
        crate::k8s::fetch_packages(&layout)?;
    }
    Ok(script)
}

/// The Debian base layer, from the cache when it was made the same way.
fn base_layer(fresh: bool) -> anyhow::Result<PathBuf> {
    let dir = image_dir();
    fs::create_dir_all(&dir)?;
    let layer = dir.join("base.tar");
    let stamp = dir.join("base.key");
    let key = format!(
        "merged-usr hook\n{}\n{}\n{}\n{}",
        RUNTIME.suite,
        RUNTIME.packages.join(","),
        SLIM_EXCLUDES.join(","),
        MIRRORS.join(",")
    );
    if !fresh && layer.is_file() && fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
        return Ok(layer);
    }
    let script = mmdebstrap()?;
    println!(
        "image: building the Debian {} base with mmdebstrap",
        RUNTIME.suite
    );
    let partial = dir.join("base.partial.tar");
    let mut command = Command::new("nice");
    // mmdebstrap's helpers (mmtarfilter, for the path excludes) sit next
    // to it.
    let helpers = script.parent().expect("usr/bin");
    command
        .env(
            "PATH",
            format!(
                "{}:{}",
                helpers.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .args(["-n", "19", "perl"])
        .arg(&script)
        .args([
            "--quiet",
            "--variant=minbase",
            "--mode=root",
            "--format=tar",
        ])
        .arg(format!("--include={}", RUNTIME.packages.join(",")))
        .arg("--aptopt=APT::Install-Recommends \"false\"")
        .arg("--aptopt=APT::Install-Suggests \"false\"")
        // Merged /usr by symlinks, as debootstrap (and so debian:bookworm)
        // makes it, instead of installing the usrmerge package and perl.
        .arg(format!(
            "--hook-dir={}",
            helpers
                .parent()
                .expect("usr")
                .join("share/mmdebstrap/hooks/merged-usr")
                .display()
        ));
    for exclude in SLIM_EXCLUDES {
        command.arg(format!("--dpkgopt={exclude}"));
    }
    command.arg(RUNTIME.suite).arg(&partial).args(MIRRORS);
    run(&mut command)?;
    fs::rename(&partial, &layer)?;
    fs::write(&stamp, key)?;
    Ok(layer)
}

fn append_file(
    builder: &mut tar::Builder<fs::File>,
    source: &Path,
    target: &str,
) -> anyhow::Result<()> {
    let data = fs::read(source).with_context(|| format!("read {}", source.display()))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    // COPY keeps the source's mode; both are executables.
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, target.trim_start_matches('/'), data.as_slice())?;
    Ok(())
}

/// Builds the image; returns the tarball's path.
pub(crate) fn build(options: &Options) -> anyhow::Result<PathBuf> {
    if !lab::is_root() {
        bail!("mmdebstrap --mode=root builds the root filesystem as root: run it as root");
    }
    let mut cargo = Command::new("cargo");
    cargo.args(["build", "--package", "ip-masq", "--bin", "ip-masq"]);
    if !options.debug {
        cargo.arg("--release");
    }
    run(cargo.current_dir(workspace_root()))?;
    let agent = workspace_root()
        .join("target")
        .join(if options.debug { "debug" } else { "release" })
        .join("ip-masq");
    let base = base_layer(options.fresh)?;
    let dir = image_dir();
    let app = dir.join("app.tar");
    {
        let mut builder = tar::Builder::new(fs::File::create(&app)?);
        for (source, target) in RUNTIME.files {
            let source = if *source == "@agent" {
                agent.clone()
            } else {
                workspace_root().join(source)
            };
            append_file(&mut builder, &source, target)?;
        }
        builder.finish()?;
    }
    let run_config = archive::RunConfig {
        entrypoint: RUNTIME.entrypoint.iter().map(|s| (*s).to_owned()).collect(),
        cmd: RUNTIME.cmd.iter().map(|s| (*s).to_owned()).collect(),
        env: vec![PATH.to_owned()],
        user: RUNTIME.user.to_owned(),
        working_dir: "/".into(),
    };
    let history = vec![
        format!(
            "mmdebstrap --variant=minbase {} --include={} (slim path excludes), as {}",
            RUNTIME.suite,
            RUNTIME.packages.join(","),
            RUNTIME.base
        ),
        "COPY deploy/image/iptables-wrapper /usr/local/bin/iptables-wrapper; COPY ip-masq /usr/local/bin/ip-masq".into(),
    ];
    let out = output_path();
    let id = archive::write(
        &out,
        REFERENCE,
        &[base, app],
        &run_config,
        &history,
        &now_rfc3339(),
    )?;
    println!("image: {} ({REFERENCE}, id sha256:{id})", out.display());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image this task builds is the Dockerfile's runtime stage:
    /// the same base, packages, files, entry point, command and user.
    #[test]
    fn the_layout_is_the_dockerfiles() {
        let dockerfile =
            std::fs::read_to_string(workspace_root().join("Dockerfile")).expect("Dockerfile");
        let stage = lab::dockerfile::runtime_stage(&dockerfile);
        assert_eq!(stage.base, RUNTIME.base);
        assert_eq!(stage.base, format!("debian:{}-slim", RUNTIME.suite));
        assert_eq!(stage.packages, RUNTIME.packages);
        assert!(
            stage.removes_apt_lists,
            "mmdebstrap removes apt's lists too"
        );
        let copies: Vec<(String, String)> = RUNTIME
            .files
            .iter()
            .map(|(source, target)| {
                // The agent comes from the build stage's release build.
                let source = if *source == "@agent" {
                    "build:/out/ip-masq"
                } else {
                    source
                };
                (source.to_owned(), (*target).to_owned())
            })
            .collect();
        assert_eq!(stage.copies, copies);
        assert_eq!(stage.entrypoint, RUNTIME.entrypoint);
        assert_eq!(stage.cmd, RUNTIME.cmd);
        assert_eq!(stage.user, RUNTIME.user);
    }
}

//! The image `cargo xtask image` built (`target/image/ip-masq.tar`, which
//! `cargo xtask test` builds before the suite) has the Dockerfile's runtime
//! layout: its files at the same paths, the same entry point, command and
//! user, iptables with both backends, no apt lists. The tarball is a
//! docker-archive; `tests/tests/kubernetes.rs` imports it with `ctr`.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Read as _,
    path::{Path, PathBuf},
};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// One file of the image's merged tree.
#[derive(Debug)]
struct Entry {
    mode: u32,
    kind: tar::EntryType,
    link: Option<String>,
    data: Vec<u8>,
}

/// Reads the archive: its config and the merged tree of its layers (the
/// later layer wins, as in the runtime's snapshot).
fn read_image(path: &Path) -> (Value, BTreeMap<String, Entry>) {
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let file = File::open(path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; build it with `cargo xtask image`",
            path.display()
        )
    });
    for entry in tar::Archive::new(file).entries().expect("archive") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            blobs.insert(name, data);
        }
    }
    let manifest: Value = serde_json::from_slice(&blobs["manifest.json"]).expect("manifest");
    let manifest = &manifest[0];
    assert_eq!(manifest["RepoTags"], serde_json::json!(["ip-masq:latest"]));
    let config: Value =
        serde_json::from_slice(&blobs[manifest["Config"].as_str().expect("config")])
            .expect("config");
    let mut tree = BTreeMap::new();
    let layers = manifest["Layers"].as_array().expect("layers");
    assert_eq!(
        layers.len(),
        config["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff ids")
            .len()
    );
    for layer in layers {
        let data = &blobs[layer.as_str().expect("layer")];
        for entry in tar::Archive::new(data.as_slice()).entries().expect("layer") {
            let mut entry = entry.expect("entry");
            let name = format!(
                "/{}",
                entry
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
                    .trim_start_matches("./")
            );
            let name = name.trim_end_matches('/').to_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            tree.insert(
                name,
                Entry {
                    mode: entry.header().mode().expect("mode"),
                    kind: entry.header().entry_type(),
                    link: entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|l| l.display().to_string()),
                    data,
                },
            );
        }
    }
    (config, tree)
}

#[test]
fn the_built_image_has_the_dockerfiles_runtime_layout() {
    let dockerfile = std::fs::read_to_string(workspace().join("Dockerfile")).expect("Dockerfile");
    let stage = lab::dockerfile::runtime_stage(&dockerfile);
    let (config, tree) = read_image(&workspace().join("target/image/ip-masq.tar"));
    let run = &config["config"];
    assert_eq!(run["Entrypoint"], serde_json::json!(stage.entrypoint));
    assert_eq!(run["Cmd"], serde_json::json!(stage.cmd));
    assert_eq!(run["User"].as_str().unwrap_or_default(), stage.user, "root");
    assert!(
        run["Env"].as_array().is_some_and(|env| env.iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.starts_with("PATH=/usr/local/sbin:")))),
        "the base image's PATH, /usr/local/sbin first for the wrapper's links: {run:#}"
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");

    for (source, destination) in &stage.copies {
        let entry = tree
            .get(destination)
            .unwrap_or_else(|| panic!("{destination} (COPY {source}) is not in the image"));
        assert!(entry.kind.is_file(), "{destination}: {:?}", entry.kind);
        assert_eq!(entry.mode & 0o777, 0o755, "{destination}");
        if source.contains(':') {
            // The agent, from the build stage.
            assert_eq!(
                &entry.data[..4],
                b"\x7fELF",
                "{destination} is an executable"
            );
        } else {
            let expected = std::fs::read(workspace().join(source)).expect("source");
            assert_eq!(entry.data, expected, "{destination} is {source}");
        }
    }
    // The entry point's programs are in the image.
    for program in &stage.entrypoint {
        assert!(tree.contains_key(program), "{program}");
    }
    // iptables with both backends, which the wrapper links to.
    for (command, multi) in [
        ("/usr/sbin/iptables-nft", "xtables-nft-multi"),
        ("/usr/sbin/iptables-legacy", "xtables-legacy-multi"),
        ("/usr/sbin/ip6tables-nft-restore", "xtables-nft-multi"),
        ("/usr/sbin/ip6tables-legacy-save", "xtables-legacy-multi"),
    ] {
        let entry = tree.get(command).unwrap_or_else(|| panic!("{command}"));
        assert_eq!(entry.link.as_deref(), Some(multi), "{command}");
    }
    for multi in [
        "/usr/sbin/xtables-nft-multi",
        "/usr/sbin/xtables-legacy-multi",
    ] {
        assert!(tree.get(multi).is_some_and(|e| e.kind.is_file()), "{multi}");
    }
    // Every package the Dockerfile installs, and the wrapper's shell.
    let status = String::from_utf8_lossy(&tree["/var/lib/dpkg/status"].data).into_owned();
    for package in &stage.packages {
        assert!(
            status.contains(&format!("Package: {package}\nStatus: install ok installed")),
            "{package} is installed"
        );
    }
    assert!(
        tree.contains_key("/bin/sh") || tree.contains_key("/usr/bin/sh"),
        "a shell for the wrapper"
    );
    // No recommends, as --no-install-recommends; no apt lists, as rm -rf.
    assert!(
        !status.contains("Package: nftables\n"),
        "iptables' recommends are not installed"
    );
    assert!(stage.removes_apt_lists);
    let lists: Vec<&String> = tree
        .keys()
        .filter(|path| {
            path.starts_with("/var/lib/apt/lists/")
                && !path.ends_with("/partial")
                && !path.ends_with("/lock")
        })
        .collect();
    assert!(lists.is_empty(), "apt lists left: {lists:?}");
    // The -slim excludes: no manual pages or documentation beyond copyrights.
    let files = |prefix: &'static str| {
        tree.iter()
            .filter(move |(path, entry)| path.starts_with(prefix) && entry.kind.is_file())
            .map(|(path, _)| path.clone())
    };
    let manual: Vec<String> = files("/usr/share/man/").collect();
    assert!(manual.is_empty(), "manual pages: {manual:?}");
    let docs: Vec<String> = files("/usr/share/doc/")
        .filter(|p| !p.ends_with("/copyright"))
        .collect();
    assert!(
        docs.is_empty(),
        "documentation beyond copyright files: {docs:?}"
    );
}

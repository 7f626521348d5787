//! Writes an image as a docker-archive tarball (the format of `docker
//! save`), which `ctr images import`, `docker load` and `podman load`
//! read: `manifest.json`, the image config named by its digest, and each
//! layer as an uncompressed tar named by its diff id.

use std::{
    fs::File,
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// What the image config says about how to run the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunConfig {
    pub(crate) entrypoint: Vec<String>,
    pub(crate) cmd: Vec<String>,
    pub(crate) env: Vec<String>,
    /// Empty: root, as with no `USER` line in a Dockerfile.
    pub(crate) user: String,
    pub(crate) working_dir: String,
}

/// The hex SHA-256 of a file's bytes.
pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The image config document. Pure; `created` is an RFC 3339 time.
pub(crate) fn config_json(
    run: &RunConfig,
    diff_ids: &[String],
    created: &str,
    history: &[String],
) -> Vec<u8> {
    let mut config = json!({
        "Env": run.env,
        "Entrypoint": run.entrypoint,
        "WorkingDir": run.working_dir,
    });
    if !run.cmd.is_empty() {
        config["Cmd"] = json!(run.cmd);
    }
    if !run.user.is_empty() {
        config["User"] = json!(run.user);
    }
    let document = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|id| format!("sha256:{id}")).collect::<Vec<_>>(),
        },
        "history": history.iter().map(|step| json!({"created": created, "created_by": step})).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&document).expect("serialisable")
}

fn append_bytes(builder: &mut tar::Builder<File>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, data)
}

/// Writes the archive to `out` from layer tarballs (bottom first); returns
/// the image id (the config's digest).
///
/// # Errors
/// When a layer cannot be read or the archive cannot be written.
pub(crate) fn write(
    out: &Path,
    reference: &str,
    layers: &[PathBuf],
    run: &RunConfig,
    history: &[String],
    created: &str,
) -> anyhow::Result<String> {
    let mut diff_ids = Vec::new();
    for layer in layers {
        diff_ids.push(sha256_file(layer).with_context(|| format!("hash {}", layer.display()))?);
    }
    let config = config_json(run, &diff_ids, created, history);
    let config_id = hex(&Sha256::digest(&config));
    let config_name = format!("{config_id}.json");
    let layer_names: Vec<String> = diff_ids
        .iter()
        .map(|id| format!("{id}/layer.tar"))
        .collect();
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [reference],
        "Layers": layer_names,
    }]);
    let (repository, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
    let repositories = json!({ repository: { tag: diff_ids.last() } });

    let partial = out.with_extension("tar.partial");
    let file = File::create(&partial).with_context(|| format!("create {}", partial.display()))?;
    let mut builder = tar::Builder::new(file);
    for (layer, id) in layers.iter().zip(&diff_ids) {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_size(0);
        builder.append_data(&mut header, format!("{id}/"), io::empty())?;
        append_bytes(&mut builder, &format!("{id}/VERSION"), b"1.0")?;
        let mut file = File::open(layer)?;
        let mut header = tar::Header::new_ustar();
        header.set_size(file.metadata()?.len());
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, format!("{id}/layer.tar"), &mut file)?;
    }
    append_bytes(&mut builder, &config_name, &config)?;
    append_bytes(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest)?,
    )?;
    append_bytes(
        &mut builder,
        "repositories",
        &serde_json::to_vec(&repositories)?,
    )?;
    builder.into_inner()?.flush()?;
    std::fs::rename(&partial, out)?;
    Ok(config_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_layers_and_run_settings() {
        let run = RunConfig {
            entrypoint: vec!["/a".into(), "/b".into()],
            cmd: vec!["run".into()],
            env: vec!["PATH=/bin".into()],
            user: String::new(),
            working_dir: "/".into(),
        };
        let doc: serde_json::Value = serde_json::from_slice(&config_json(
            &run,
            &["ab".into(), "cd".into()],
            "2024-01-01T00:00:00Z",
            &["x".into()],
        ))
        .expect("json");
        assert_eq!(doc["rootfs"]["diff_ids"], json!(["sha256:ab", "sha256:cd"]));
        assert_eq!(doc["config"]["Entrypoint"], json!(["/a", "/b"]));
        assert_eq!(doc["config"]["Cmd"], json!(["run"]));
        assert!(
            doc["config"].get("User").is_none(),
            "root, as with no USER line"
        );
        assert_eq!(doc["history"][0]["created_by"], "x");
    }

    #[test]
    fn archive_holds_manifest_config_and_layers() {
        let dir = std::env::temp_dir().join(format!("xtask-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let layer = dir.join("layer.tar");
        {
            let mut builder = tar::Builder::new(File::create(&layer).expect("layer"));
            let mut header = tar::Header::new_ustar();
            header.set_size(3);
            header.set_mode(0o755);
            builder
                .append_data(&mut header, "bin/x", &b"abc"[..])
                .expect("append");
            builder.finish().expect("finish");
        }
        let run = RunConfig {
            entrypoint: vec!["/bin/x".into()],
            cmd: vec![],
            env: vec![],
            user: String::new(),
            working_dir: "/".into(),
        };
        let out = dir.join("image.tar");
        let id = write(
            &out,
            "test/x:1",
            std::slice::from_ref(&layer),
            &run,
            &["layer".into()],
            "2024-01-01T00:00:00Z",
        )
        .expect("write");
        let mut names = Vec::new();
        let mut manifest = String::new();
        let mut archive = tar::Archive::new(File::open(&out).expect("open"));
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").display().to_string();
            if name == "manifest.json" {
                entry.read_to_string(&mut manifest).expect("read");
            }
            names.push(name);
        }
        let diff_id = sha256_file(&layer).expect("hash");
        assert!(names.contains(&format!("{diff_id}/layer.tar")), "{names:?}");
        assert!(names.contains(&format!("{id}.json")), "{names:?}");
        let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest");
        assert_eq!(manifest[0]["RepoTags"], json!(["test/x:1"]));
        assert_eq!(
            manifest[0]["Layers"],
            json!([format!("{diff_id}/layer.tar")])
        );
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}

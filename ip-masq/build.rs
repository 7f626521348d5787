//! Builds the eBPF classifier with aya-build and exposes it to the agent
//! through OUT_DIR, so that a plain `cargo build` gives a complete agent.
//!
//! aya-build copies each binary of the eBPF package to `OUT_DIR/<bin name>`;
//! the path is handed to the crate as `IP_MASQ_EBPF_OBJECT`, so the agent
//! does not repeat the binary's name.
use anyhow::{Context as _, anyhow, ensure};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == "ip-masq-ebpf")
        .ok_or_else(|| anyhow!("ip-masq-ebpf package not found in the workspace"))?;
    let bins: Vec<&str> = ebpf
        .targets
        .iter()
        .filter(|target| target.is_bin())
        .map(|target| target.name.as_str())
        .collect();
    let [bin] = bins[..] else {
        return Err(anyhow!(
            "ip-masq-ebpf must have exactly one binary (the eBPF object), found {bins:?}"
        ));
    };
    // The agent's own binary is `ip-masq`: the same name would make the two
    // overwrite each other in target/.
    ensure!(
        bin != env!("CARGO_PKG_NAME"),
        "the eBPF binary must not be named {bin}, like the agent"
    );
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("ip-masq-ebpf manifest has no parent directory"))?
        .as_str()
        .to_owned();
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )?;
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
    let object = std::path::Path::new(&out_dir).join(bin);
    println!("cargo:rustc-env=IP_MASQ_EBPF_OBJECT={}", object.display());
    Ok(())
}

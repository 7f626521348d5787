//! Builds the eBPF classifier with aya-build and exposes it to the agent
//! through OUT_DIR, so that a plain `cargo build` gives a complete agent.
use anyhow::{Context as _, anyhow};
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
    )
}

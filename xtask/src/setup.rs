//! `cargo xtask setup`: installs, idempotently, what a fresh machine lacks
//! to build the eBPF object and run the root tests. Each step first checks
//! whether its tool is already there, so a second run does nothing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{run, workspace_root};

/// Commands the tests and the demo call, with the Debian package that
/// provides each.
const APT_TOOLS: &[(&str, &str)] = &[
    ("iptables", "iptables"),
    ("ip6tables", "iptables"),
    ("ip", "iproute2"),
    ("bpftool", "bpftool"),
    ("conntrack", "conntrack"),
    ("nft", "nftables"),
    // The benchmark's ipset contender.
    ("ipset", "ipset"),
    ("nsenter", "util-linux"),
    ("vtysh", "frr"),
    ("python3", "python3"),
    ("iperf3", "iperf3"),
    // libfuzzer-sys compiles libFuzzer, which is C++.
    ("c++", "g++"),
    // The Kubernetes test node (`cargo xtask k8s build`): the static pause
    // binary, the cluster's certificates, mmdebstrap (a Perl script) for the
    // images; unshare for the node's mount namespace.
    ("gcc", "gcc"),
    ("strip", "binutils"),
    ("openssl", "openssl"),
    ("perl", "perl"),
    ("unshare", "util-linux"),
];

/// Python packages the tests run as independent checkers (the Kubernetes
/// manifest validator and the Prometheus text parser), pinned, installed
/// into `target/python-venv` (see `tests/src/python.rs`).
const PYTHON_PACKAGES: &[&str] = &["kubernetes-validate==1.37.0", "prometheus-client==0.26.0"];

/// The bpf-linker release line that matches aya 0.14.
const BPF_LINKER_VERSION: &str = "0.13";

/// The cargo-fuzz release line `cargo xtask fuzz` runs with.
const CARGO_FUZZ_VERSION: &str = "0.13";

pub(crate) fn setup() -> anyhow::Result<()> {
    ensure_apt_packages()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_cargo_fuzz()?;
    ensure_python_venv()?;
    println!("setup: everything is in place");
    Ok(())
}

fn have_command(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
        || Path::new("/usr/lib/frr/zebra").exists() && name == "zebra"
}

/// The virtualenv with the Python checkers; recreated only when an import
/// or the checker's script fails.
fn ensure_python_venv() -> anyhow::Result<()> {
    let venv = workspace_root().join("target").join("python-venv");
    let python = venv.join("bin").join("python");
    // The tool itself too: a virtualenv copied from elsewhere (a target
    // directory copied between checkouts) imports fine but its scripts'
    // #! lines name the old path.
    let ready = Command::new(&python)
        .args(["-c", "import kubernetes_validate, prometheus_client"])
        .output()
        .is_ok_and(|output| output.status.success())
        && Command::new(venv.join("bin").join("kubernetes-validate"))
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success());
    if ready {
        return Ok(());
    }
    println!(
        "setup: creating {} with {}",
        venv.display(),
        PYTHON_PACKAGES.join(" ")
    );
    let created = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .is_ok_and(|status| status.success());
    if !created {
        // Debian's own python3 keeps venv in a separate package.
        apt_install(&["python3-venv"])?;
        run(Command::new("/usr/bin/python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv))?;
    }
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PYTHON_PACKAGES))
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    println!("setup: installing {}", packages.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn ensure_apt_packages() -> anyhow::Result<()> {
    let mut missing: Vec<&str> = APT_TOOLS
        .iter()
        .filter(|(tool, _)| !have_command(tool))
        .map(|(_, package)| *package)
        .collect();
    if !Path::new("/usr/lib/frr/zebra").exists() {
        missing.push("frr");
    }
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

fn nightly_output(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("rustup")
        .args(["run", "nightly"])
        .args(args)
        .output()
        .with_context(|| format!("rustup run nightly {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "`rustup run nightly {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("rustup component list (is the nightly toolchain installed?)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.starts_with("rust-src"))
    {
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// LLVM major version of the nightly compiler, e.g. 22.
fn nightly_llvm_major() -> anyhow::Result<u32> {
    let version = nightly_output(&["rustc", "-vV"])?;
    let line = version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .context("rustc -vV printed no LLVM version")?;
    line.split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .with_context(|| format!("unparsable LLVM version {line:?}"))
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if let Ok(version) = nightly_output(&["bpf-linker", "--version"])
        && version.contains(&format!("bpf-linker {BPF_LINKER_VERSION}"))
    {
        return Ok(());
    }
    let llvm_major = nightly_llvm_major()?;
    let sysroot = PathBuf::from(nightly_output(&["rustc", "--print", "sysroot"])?.trim());
    let library = std::fs::read_dir(sysroot.join("lib"))
        .context("read nightly sysroot lib")?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("libLLVM.so.{llvm_major}"))
                    || n.starts_with(&format!("libLLVM-{llvm_major}"))
            })
        })
        .with_context(|| {
            format!(
                "nightly ships no libLLVM {llvm_major} under {}",
                sysroot.display()
            )
        })?;
    // bpf-linker's build looks for LLVM under LLVM_PREFIX/lib; point it at
    // the nightly compiler's own LLVM so the two always match.
    let prefix = workspace_root().join("target").join("llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib").join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&library, &link)?;
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm_major} (takes a few minutes)"
    );
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            &format!("~{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .env("LLVM_PREFIX", &prefix))
}

/// cargo-fuzz, for the suite's fixed-time fuzzing of the parsers
/// (`cargo xtask fuzz`, `fuzz/`).
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if let Ok(output) = Command::new("cargo").args(["fuzz", "--version"]).output()
        && output.status.success()
        && String::from_utf8_lossy(&output.stdout)
            .contains(&format!("cargo-fuzz {CARGO_FUZZ_VERSION}"))
    {
        return Ok(());
    }
    println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        &format!("~{CARGO_FUZZ_VERSION}"),
    ]))
}

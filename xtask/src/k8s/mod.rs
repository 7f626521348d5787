//! `cargo xtask k8s build|up|down|status|kubectl|exec`: a one-node
//! Kubernetes for the end-to-end tests, built from Debian's archive alone
//! and cached under `target/k8s` (see `lab::k8s` for how it runs).
//!
//! `build` does every slow step once: the packages (containerd, runc, the
//! CNI plugins, etcd, Go 1.15, mmdebstrap) through a private apt
//! configuration, Kubernetes v1.20.2 from bookworm's source package, the
//! pause image and the cluster's certificates. Each step records what it
//! was built from, so a second run only checks. `up` builds if needed and
//! starts the node; `down` stops it by PID and removes what it made.

pub(crate) mod certs;
pub(crate) mod debian;
pub(crate) mod kube;

use std::{fs, process::Command, time::Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use lab::k8s::{Layout, Node};

use crate::run;

#[derive(Subcommand)]
pub(crate) enum K8sTask {
    /// Fetch and build everything the node needs (cached; needs root).
    Build,
    /// Build if needed, then start the node and leave it running.
    Up,
    /// Stop the node by PID and remove its namespaces, mounts and cgroups.
    Down,
    /// Whether the node runs, and what it left on the host.
    Status,
    /// kubectl against the node's API server.
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A command in the node's network and mount namespaces.
    Exec {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
}

/// Debian packages the node runs, with the upstream version line each must
/// have (the recipe was verified with these).
const PACKAGES: &[(&str, &str)] = &[
    ("containerd", "1.6."),
    ("runc", "1.1."),
    ("containernetworking-plugins", "1.1."),
    ("etcd-server", "3.4."),
    ("etcd-client", "3.4."),
    ("mmdebstrap", "1."),
    ("golang-1.15-go", "1.15."),
    ("golang-1.15-src", "1.15."),
];

pub(crate) fn run_task(task: K8sTask) -> anyhow::Result<()> {
    let layout = Layout::default();
    match task {
        K8sTask::Build => build(&layout),
        K8sTask::Up => {
            build(&layout)?;
            crate::image::build(&crate::image::Options::default())?;
            let started = Instant::now();
            let node = Node::start(&layout).context("start the node")?;
            node.import_image(&crate::image::output_path())?;
            println!(
                "k8s: node up in {:.1} s; `cargo xtask k8s kubectl get pods -A`, `cargo xtask k8s down`",
                started.elapsed().as_secs_f64()
            );
            node.detach();
            Ok(())
        }
        K8sTask::Down => {
            let report = Node::stop_layout(&layout)?;
            print!("{report}");
            Ok(())
        }
        K8sTask::Status => {
            print!("{}", Node::describe(&layout));
            Ok(())
        }
        K8sTask::Kubectl { args } => {
            let node = Node::attach(&layout)?;
            let status = node.kubectl_command().args(&args).status()?;
            std::process::exit(status.code().unwrap_or(2));
        }
        K8sTask::Exec { args } => {
            let node = Node::attach(&layout)?;
            let status = node.exec_command(&args[0]).args(&args[1..]).status()?;
            std::process::exit(status.code().unwrap_or(2));
        }
    }
}

/// Every cached step, each skipped when its stamp matches.
pub(crate) fn build(layout: &Layout) -> anyhow::Result<()> {
    if !lab::is_root() {
        bail!("building the node unpacks packages and builds images as root: run it as root");
    }
    fs::create_dir_all(layout.root())?;
    let started = Instant::now();
    let apt = fetch_packages(layout)?;
    let tree = kube::fetch_source(layout, &apt)?;
    let go_version = fs::read_to_string(layout.debian_root().join("usr/lib/go-1.15/VERSION"))
        .context("Go 1.15 is not unpacked")?;
    let key = format!(
        "{}\n{}\n{}",
        fs::read_to_string(layout.stamp("source"))?,
        go_version.trim(),
        kube::COMPONENTS.join(",")
    );
    kube::build(layout, &tree, &key)?;
    pause_image(layout, &tree)?;
    certs::ensure(layout)?;
    println!(
        "k8s: build complete ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The Debian packages only (containerd, runc, the CNI plugins, etcd, Go,
/// mmdebstrap), unpacked; what `cargo xtask image` needs of the node's
/// build.
pub(crate) fn fetch_packages(layout: &Layout) -> anyhow::Result<debian::PrivateApt> {
    let apt = debian::PrivateApt::new(&layout.apt())?;
    // The lists are refreshed once a day at most: versions move only with
    // point releases and security updates.
    let lists_fresh = fs::metadata(layout.apt().join("lists"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() < 86_400)
        && fs::read_dir(layout.apt().join("lists"))?.count() > 2;
    if !lists_fresh {
        println!(
            "k8s: apt-get update (private configuration under {})",
            layout.apt().display()
        );
        apt.update()?;
        filetime_touch(&layout.apt().join("lists"))?;
    }
    let mut wanted = Vec::new();
    for (package, line) in PACKAGES {
        let version = apt.candidate(package)?;
        if !version.starts_with(line) {
            bail!("{package} {version} in the archive; the node is built for {line}x");
        }
        wanted.push(format!("{package}={version}"));
    }
    let key = wanted.join("\n");
    if layout.is_done("packages", &key) && layout.debian_binary("usr/bin/containerd").is_file() {
        return Ok(apt);
    }
    println!("k8s: downloading {}", wanted.join(" "));
    let _ = fs::remove_dir_all(layout.debs());
    let _ = fs::remove_dir_all(layout.debian_root());
    fs::create_dir_all(layout.debs())?;
    let mut args = vec!["download", "-qq"];
    args.extend(wanted.iter().map(String::as_str));
    apt.apt_get(&layout.debs(), &args)?;
    debian::unpack_all(&layout.debs(), &layout.debian_root())?;
    fs::write(layout.stamp("packages"), &key)?;
    // Unpacked, the packages themselves are not needed again.
    fs::remove_dir_all(layout.debs())?;
    Ok(apt)
}

fn filetime_touch(path: &std::path::Path) -> anyhow::Result<()> {
    run(Command::new("touch").arg(path))
}

/// The pod sandbox image, compiled from the Kubernetes tree's own
/// `build/pause/linux/pause.c`: no registry needed.
fn pause_image(layout: &Layout, tree: &std::path::Path) -> anyhow::Result<()> {
    let source = tree.join("build/pause/linux/pause.c");
    let key = format!(
        "{}\n{}",
        lab::k8s::PAUSE_IMAGE,
        crate::image::archive::sha256_file(&source)?
    );
    if layout.is_done("pause", &key) && layout.pause_image().is_file() {
        return Ok(());
    }
    let dir = layout.images().join("pause");
    fs::create_dir_all(&dir)?;
    let binary = dir.join("pause");
    run(Command::new("gcc")
        .args([
            "-Os",
            "-Wall",
            "-Werror",
            "-static",
            "-DVERSION=v3.4.1-ip-masq",
        ])
        .arg("-o")
        .arg(&binary)
        .arg(&source))?;
    run(Command::new("strip").arg(&binary))?;
    let layer = dir.join("layer.tar");
    {
        let mut builder = tar::Builder::new(fs::File::create(&layer)?);
        let mut header = tar::Header::new_ustar();
        let data = fs::read(&binary)?;
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(0);
        builder.append_data(&mut header, "pause", data.as_slice())?;
        builder.finish()?;
    }
    let run_config = crate::image::archive::RunConfig {
        entrypoint: vec!["/pause".into()],
        cmd: Vec::new(),
        env: Vec::new(),
        user: String::new(),
        working_dir: "/".into(),
    };
    crate::image::archive::write(
        &layout.pause_image(),
        lab::k8s::PAUSE_IMAGE,
        &[layer],
        &run_config,
        &["gcc -static build/pause/linux/pause.c".into()],
        &crate::image::now_rfc3339(),
    )?;
    fs::write(layout.stamp("pause"), &key)?;
    Ok(())
}

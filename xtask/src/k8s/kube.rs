//! Kubernetes v1.20.2 built from Debian bookworm's `kubernetes` source
//! package, offline, with bullseye's Go 1.15.
//!
//! The package's full orig tarball carries `staging/` and `vendor/`, so no
//! module download is needed (the Go module proxy is not reachable here).
//! The one generated file it lacks, `pkg/generated/openapi/zz_generated.openapi.go`,
//! is generated with the vendored `openapi-gen` from the same inputs as
//! upstream's `Makefile.generated_files`, and checked as upstream checks it:
//! the API-rule violation report must equal the checked-in list.
//! Newer Kubernetes cannot be built here: Debian's later source packages
//! are cut down to kubectl.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use lab::k8s::Layout;

use super::debian::PrivateApt;
use crate::run;

/// The Kubernetes version the source package holds, and that the
/// binaries report.
pub(crate) const KUBERNETES_VERSION: &str = "v1.20.2";

/// The components the node runs, and kubectl.
pub(crate) const COMPONENTS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
];

/// Downloads and unpacks the source package; returns the tree's path.
pub(crate) fn fetch_source(layout: &Layout, apt: &PrivateApt) -> anyhow::Result<PathBuf> {
    let version = apt.source_version("kubernetes")?;
    // bookworm's 1.20.5+really1.20.2: the upstream tree is v1.20.2.
    if !version.contains("really1.20.2") {
        bail!("bookworm's kubernetes source is {version}, expected 1.20.5+really1.20.2");
    }
    let key = format!("kubernetes={version}");
    let source = layout.source();
    let tree = source.join("kubernetes-1.20.2");
    if layout.is_done("source", &key) && tree.is_dir() {
        return Ok(tree);
    }
    let _ = fs::remove_dir_all(&source);
    fs::create_dir_all(&source)?;
    println!("k8s: downloading the kubernetes {version} source package");
    apt.apt_get(
        &source,
        &[
            "source",
            "-qq",
            "--download-only",
            &format!("kubernetes={version}"),
        ],
    )?;
    let orig = fs::read_dir(&source)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| {
                    name.starts_with("kubernetes_") && name.ends_with(".orig.tar.gz")
                })
        })
        .context("the source package has no orig tarball")?;
    run(Command::new("tar")
        .arg("xzf")
        .arg(&orig)
        .current_dir(&source))?;
    if !tree.join("cmd/kubelet").is_dir() {
        bail!("{} holds no Kubernetes tree", tree.display());
    }
    // Keep only the unpacked tree: the tarballs are 40 MB more.
    for entry in fs::read_dir(&source)?.filter_map(Result::ok) {
        if entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
        }
    }
    fs::write(layout.stamp("source"), &key)?;
    Ok(tree)
}

/// The environment of every `go` run: the unpacked Go 1.15, no network,
/// no cgo, caches under the build directory.
fn go_command(layout: &Layout, program: &Path) -> Command {
    let goroot = layout.debian_root().join("usr/lib/go-1.15");
    let build = layout.go_build();
    let mut command = Command::new("nice");
    command
        .args(["-n", "19"])
        .arg(program)
        .env("GOROOT", &goroot)
        .env(
            "PATH",
            format!(
                "{}:{}",
                goroot.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("GOPATH", build.join("gopath"))
        .env("GOCACHE", build.join("cache"))
        .env("GOPROXY", "off")
        .env("GOSUMDB", "off")
        .env("CGO_ENABLED", "0")
        .env(
            "GOMAXPROCS",
            std::thread::available_parallelism()
                .map_or(2, std::num::NonZero::get)
                .to_string(),
        );
    command
}

fn go(layout: &Layout) -> PathBuf {
    layout.debian_root().join("usr/lib/go-1.15/bin/go")
}

/// The packages `openapi-gen` reads: every directory with a `.go` file
/// carrying `+k8s:openapi-gen=`, as `Makefile.generated_files` finds them
/// (staging paths as their vendor paths, two generators' own examples
/// left out), sorted.
fn openapi_dirs(tree: &Path) -> anyhow::Result<Vec<String>> {
    let mut dirs = BTreeSet::new();
    let mut stack = vec![tree.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)?.filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let relative = path.strip_prefix(tree).expect("inside the tree");
            if entry.file_type()?.is_dir() {
                // As upstream's `find` prunes: only at the top level.
                let pruned = dir == tree
                    && (name == "vendor" || name.starts_with('_') || name.starts_with('.'));
                if !pruned {
                    stack.push(path);
                }
                continue;
            }
            if !name.ends_with(".go") {
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let tagged = text.lines().any(|line| {
                line.strip_prefix("//")
                    .is_some_and(|rest| rest.trim_start_matches(' ').starts_with("+k8s:"))
            });
            if tagged && text.contains("+k8s:openapi-gen=") {
                let parent = relative.parent().unwrap_or(Path::new(""));
                let parent = parent.to_string_lossy();
                let package = match parent.strip_prefix("staging/src") {
                    Some(rest) => format!("vendor{rest}"),
                    None => parent.into_owned(),
                };
                if !package.starts_with("vendor/k8s.io/code-generator/")
                    && !package.starts_with("vendor/k8s.io/sample-apiserver/")
                {
                    dirs.insert(package);
                }
            }
        }
    }
    Ok(dirs.into_iter().collect())
}

fn generate_openapi(layout: &Layout, tree: &Path) -> anyhow::Result<()> {
    let generated = tree.join("pkg/generated/openapi/zz_generated.openapi.go");
    if generated.is_file() {
        return Ok(());
    }
    let build = layout.go_build();
    fs::create_dir_all(&build)?;
    let generator = build.join("openapi-gen");
    println!("k8s: generating pkg/generated/openapi (the one generated file the tarball lacks)");
    run(go_command(layout, &go(layout))
        .args(["build", "-o"])
        .arg(&generator)
        .arg("./vendor/k8s.io/kube-openapi/cmd/openapi-gen")
        .env("GO111MODULE", "on")
        .env("GOFLAGS", "-mod=vendor")
        .current_dir(tree))?;
    let inputs: Vec<String> = openapi_dirs(tree)?
        .into_iter()
        .map(|dir| format!("k8s.io/kubernetes/{dir}"))
        .collect();
    // openapi-gen works in GOPATH mode: the tree must sit at its import path.
    let gopath_link = build.join("gopath/src/k8s.io/kubernetes");
    fs::create_dir_all(gopath_link.parent().expect("parent"))?;
    let _ = fs::remove_file(&gopath_link);
    std::os::unix::fs::symlink(tree, &gopath_link)?;
    let report = build.join("openapi-violations.report");
    run(go_command(layout, &generator)
        .arg("--logtostderr")
        .arg("-i")
        .arg(inputs.join(","))
        .args(["-p", "k8s.io/kubernetes/pkg/generated/openapi"])
        .args(["-O", "zz_generated.openapi"])
        .args(["-h", "hack/boilerplate/boilerplate.generatego.txt"])
        .arg("-r")
        .arg(&report)
        .env("GO111MODULE", "off")
        // Go takes the working directory from PWD when it names the same
        // directory: the GOPATH path, not the tree's real one, which GOPATH
        // mode could not map to an import path.
        .env("PWD", &gopath_link)
        .current_dir(&gopath_link))?;
    // Upstream's own check of the generated file's inputs.
    let sorted = |path: &Path| -> anyhow::Result<Vec<String>> {
        let mut lines: Vec<String> = fs::read_to_string(path)
            .with_context(|| format!("read {}", path.display()))?
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        Ok(lines)
    };
    if sorted(&report)? != sorted(&tree.join("api/api-rules/violation_exceptions.list"))? {
        let _ = fs::remove_file(&generated);
        bail!(
            "openapi-gen's API-rule violations ({}) differ from api/api-rules/violation_exceptions.list",
            report.display()
        );
    }
    Ok(())
}

/// Builds the components into the cache's `bin/`, unless a build from the
/// same source and Go is there.
pub(crate) fn build(layout: &Layout, tree: &Path, key: &str) -> anyhow::Result<()> {
    let bin = layout.bin();
    if layout.is_done("kubernetes", key) && COMPONENTS.iter().all(|c| bin.join(c).is_file()) {
        return Ok(());
    }
    generate_openapi(layout, tree)?;
    fs::create_dir_all(&bin)?;
    let date = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .context("date")?
            .stdout,
    )?;
    let mut ldflags = String::from("-s -w");
    for package in [
        "k8s.io/client-go/pkg/version",
        "k8s.io/component-base/version",
    ] {
        ldflags.push_str(&format!(
            " -X {package}.gitVersion={KUBERNETES_VERSION} -X {package}.gitMajor=1 -X {package}.gitMinor=20 \
             -X {package}.gitCommit=debian-orig-1.20.2 -X {package}.gitTreeState=clean -X {package}.buildDate={}",
            date.trim()
        ));
    }
    for component in COMPONENTS {
        let started = Instant::now();
        run(go_command(layout, &go(layout))
            .args(["build", "-o"])
            .arg(bin.join(component))
            .args(["-ldflags", &ldflags])
            .arg(format!("./cmd/{component}"))
            .env("GO111MODULE", "on")
            .env("GOFLAGS", "-mod=vendor")
            .current_dir(tree))?;
        println!(
            "k8s: built {component} in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    fs::write(layout.stamp("kubernetes"), key)?;
    // Go's build cache (1.3 GB) only speeds up a rebuild, which a new
    // source or Go version would need anyway; the binaries are the cache.
    let _ = fs::remove_dir_all(layout.go_build().join("cache"));
    Ok(())
}

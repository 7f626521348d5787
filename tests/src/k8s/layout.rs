//! Where the node's pieces live: everything under one cache directory,
//! `target/k8s` by default (`IP_MASQ_K8S_DIR` overrides it). The build
//! (`cargo xtask k8s build`) fills the cache; starting the node only reads
//! it and writes the per-run state under `run/`, which each start empties.

use std::path::{Path, PathBuf};

/// The cache directory and the paths inside it.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        let root = std::env::var_os("IP_MASQ_K8S_DIR").map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("the lab crate sits in the workspace")
                    .join("target")
                    .join("k8s")
            },
            PathBuf::from,
        );
        Self { root }
    }
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The private apt configuration and its state.
    pub fn apt(&self) -> PathBuf {
        self.root.join("apt")
    }

    /// Downloaded `.deb` files.
    pub fn debs(&self) -> PathBuf {
        self.root.join("debs")
    }

    /// The `.deb` files unpacked (`dpkg -x`): containerd, runc, the CNI
    /// plugins, etcd, Go, mmdebstrap.
    pub fn debian_root(&self) -> PathBuf {
        self.root.join("debian")
    }

    /// The Kubernetes source package and its unpacked tree.
    pub fn source(&self) -> PathBuf {
        self.root.join("src")
    }

    /// Go's build cache and scratch files.
    pub fn go_build(&self) -> PathBuf {
        self.root.join("gobuild")
    }

    /// kube-apiserver, kubelet, kube-proxy, kube-controller-manager,
    /// kube-scheduler, kubectl.
    pub fn bin(&self) -> PathBuf {
        self.root.join("bin")
    }

    pub fn kubectl(&self) -> PathBuf {
        self.bin().join("kubectl")
    }

    /// Image tarballs the node imports (docker-archive).
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn pause_image(&self) -> PathBuf {
        self.images().join("pause.tar")
    }

    /// The cluster's certificates and kubeconfigs.
    pub fn certs(&self) -> PathBuf {
        self.root.join("certs")
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.certs().join("admin.kubeconfig")
    }

    /// Per-run state: configs, pid files, logs, the node's /var.
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn etc(&self) -> PathBuf {
        self.run().join("etc")
    }

    pub fn pids(&self) -> PathBuf {
        self.run().join("pids")
    }

    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.pids().join(format!("{name}.pid"))
    }

    pub fn logs(&self) -> PathBuf {
        self.run().join("logs")
    }

    pub fn log_file(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }

    /// Bound over the node's /var: kubelet, containerd and CNI state.
    pub fn var(&self) -> PathBuf {
        self.run().join("var")
    }

    /// Files bound over the host-global sysctls the kubelet would rewrite.
    pub fn fake_sysctls(&self) -> PathBuf {
        self.run().join("sysctl")
    }

    /// A binary unpacked from Debian's packages, e.g. `usr/bin/containerd`.
    pub fn debian_binary(&self, relative: &str) -> PathBuf {
        self.debian_root().join(relative)
    }

    /// The CNI plugins.
    pub fn cni_bin(&self) -> PathBuf {
        self.debian_root().join("usr/lib/cni")
    }

    /// The stamp file of a finished build step.
    pub fn stamp(&self, step: &str) -> PathBuf {
        self.root.join(format!(".done-{step}"))
    }

    /// Whether a build step finished with exactly this key (the versions
    /// and options it was built from).
    pub fn is_done(&self, step: &str, key: &str) -> bool {
        std::fs::read_to_string(self.stamp(step)).is_ok_and(|text| text == key)
    }
}

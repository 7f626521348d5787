//! Starting, attaching to and stopping the node.
//!
//! The node lives in its own network namespace and a private mount
//! namespace, held by one process (the holder) that every component joins
//! with `nsenter`. Every process is started with a pid file and stopped by
//! that pid; container processes, which the kubelet and containerd start,
//! are found by their cgroups under the node's cgroup root and by the
//! namespaces they share with the node. Stopping removes both network
//! namespaces and the node's cgroups, and then checks that nothing is left.

use std::{
    fmt::Write as _,
    fs, io,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use thiserror::Error;

use super::{
    CGROUP_ROOT, CLUSTER_CIDR, EXTERNAL_GATEWAY, EXTERNAL_KEEP, EXTERNAL_MASQ, EXTERNAL_NETNS,
    Layout, NODE_IP, NODE_NAME, NODE_NETNS, NODE_SECONDARY_IP, SERVICE_CIDR, config,
};

/// Errors of the node's lifecycle.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("the node is not built: {missing} is missing (run `cargo xtask k8s build`)")]
    NotBuilt { missing: String },
    #[error("the node is not running (start it with `cargo xtask k8s up`)")]
    NotRunning,
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("{what} not ready after {seconds} s; see {log}")]
    Timeout {
        what: String,
        seconds: u64,
        log: String,
    },
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the node left things behind: {0}")]
    Leftovers(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The components, in start order (stopped in reverse).
const COMPONENTS: &[&str] = &[
    "containerd",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
];

/// A running node. Dropping a node this process started stops it.
#[derive(Debug)]
pub struct Node {
    layout: Layout,
    holder: u32,
    owned: bool,
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        // A zombie is gone for our purposes.
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn run_checked(command: &mut Command, what: &str) -> Result<Output, NodeError> {
    let output = command.output().map_err(|source| NodeError::Spawn {
        program: what.to_owned(),
        source,
    })?;
    if !output.status.success() {
        return Err(NodeError::Failed {
            what: what.to_owned(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
            .trim()
            .to_owned(),
        });
    }
    Ok(output)
}

fn ip(args: &[&str]) -> Result<(), NodeError> {
    run_checked(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
    .map(drop)
}

impl Node {
    /// Whether the node's holder runs.
    pub fn is_running(layout: &Layout) -> bool {
        read_pid(&layout.pid_file("holder")).is_some_and(alive) && netns_path(NODE_NETNS).exists()
    }

    /// The running node, not stopped on drop.
    ///
    /// # Errors
    /// When no node runs.
    pub fn attach(layout: &Layout) -> Result<Self, NodeError> {
        let holder = read_pid(&layout.pid_file("holder"))
            .filter(|pid| alive(*pid))
            .ok_or(NodeError::NotRunning)?;
        Ok(Self {
            layout: layout.clone(),
            holder,
            owned: false,
        })
    }

    /// The running node if there is one (left running on drop), else a
    /// freshly started one (stopped on drop).
    ///
    /// # Errors
    /// As [`Node::start`].
    pub fn start_or_attach(layout: &Layout) -> Result<Self, NodeError> {
        if Self::is_running(layout) {
            return Self::attach(layout);
        }
        Self::start(layout)
    }

    /// Leaves the node running when this handle goes away.
    pub fn detach(mut self) {
        self.owned = false;
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether this handle started the node (and stops it on drop).
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// Starts the node from the cache: namespaces, mounts, every component,
    /// the pause image; returns once the node is Ready.
    ///
    /// # Errors
    /// When the cache lacks a piece, or a component does not come up.
    pub fn start(layout: &Layout) -> Result<Self, NodeError> {
        for needed in [
            layout.kubectl(),
            layout.bin().join("kubelet"),
            layout.debian_binary("usr/bin/containerd"),
            layout.debian_binary("usr/bin/etcd"),
            layout.pause_image(),
            layout.admin_kubeconfig(),
        ] {
            if !needed.exists() {
                return Err(NodeError::NotBuilt {
                    missing: needed.display().to_string(),
                });
            }
        }
        // Whatever an earlier run left (a crash, a killed test) goes first.
        Self::stop_layout(layout)?;
        let run = layout.run();
        if run.exists() {
            fs::remove_dir_all(&run).map_err(io_err(&run))?;
        }
        for dir in [
            layout.etc().join("cni"),
            layout.pids(),
            layout.logs(),
            layout.var().join("lib"),
            layout.var().join("log"),
            layout.var().join("tmp"),
            layout.fake_sysctls(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let var = layout.var();
        std::os::unix::fs::symlink("/run", var.join("run")).map_err(io_err(&var))?;
        std::os::unix::fs::symlink("/run/lock", var.join("lock")).map_err(io_err(&var))?;
        let write = |path: PathBuf, text: String| fs::write(&path, text).map_err(io_err(&path));
        write(
            layout.etc().join("containerd.toml"),
            config::containerd(layout),
        )?;
        write(
            layout.etc().join("cni/10-ipm-bridge.conflist"),
            config::cni_conflist(),
        )?;
        write(layout.etc().join("kubelet.yaml"), config::kubelet(layout))?;
        write(
            layout.etc().join("kube-proxy.yaml"),
            config::kube_proxy(layout),
        )?;
        write(
            layout.etc().join("resolv.conf"),
            "nameserver 127.0.0.1\noptions ndots:1\n".to_owned(),
        )?;

        let started = Instant::now();
        network()?;
        let holder = spawn_holder(layout)?;
        let node = Self {
            layout: layout.clone(),
            holder,
            owned: true,
        };
        node.start_components()?;
        node.wait("node Ready", Duration::from_secs(90), "kubelet", || {
            node.kubectl(&[
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .is_ok_and(|out| out.status.success() && out.stdout == b"True")
        })?;
        let mut log = format!("node up in {:.1} s\n", started.elapsed().as_secs_f64());
        let _ = writeln!(log, "holder pid {holder}");
        fs::write(layout.logs().join("up.log"), log).map_err(io_err(&layout.logs()))?;
        Ok(node)
    }

    fn component_path(&self) -> String {
        format!(
            "{}:{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.layout.debian_root().join("usr/bin").display(),
            self.layout.debian_root().join("usr/sbin").display(),
            self.layout.bin().display()
        )
    }

    /// A command run inside the node's network and mount namespaces, with
    /// the node's binaries first in PATH.
    pub fn exec_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.holder.to_string())
            .args(["-m", "-n", "--"])
            .arg(program)
            .env("PATH", self.component_path());
        command
    }

    /// Runs a command in the node; its output.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, NodeError> {
        self.exec_command(program)
            .args(args)
            .output()
            .map_err(|source| NodeError::Spawn {
                program: program.to_owned(),
                source,
            })
    }

    /// Runs a command in the node and returns its stdout, failing on a
    /// non-zero exit.
    ///
    /// # Errors
    /// When it fails.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> Result<String, NodeError> {
        let output = run_checked(
            self.exec_command(program).args(args),
            &format!("{program} {}", args.join(" ")),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// kubectl (v1.20, the node's own) as the cluster admin, in the node's
    /// network namespace and the host's mount namespace, so paths are the
    /// host's.
    pub fn kubectl_command(&self) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", netns_path(NODE_NETNS).display()))
            .arg("--")
            .arg(self.layout.kubectl())
            .arg("--kubeconfig")
            .arg(self.layout.admin_kubeconfig());
        command
    }

    /// Runs kubectl; its output.
    ///
    /// # Errors
    /// When kubectl cannot be started.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output, NodeError> {
        self.kubectl_command()
            .args(args)
            .output()
            .map_err(|source| NodeError::Spawn {
                program: "kubectl".into(),
                source,
            })
    }

    /// Imports a docker-archive image into containerd's `k8s.io` namespace,
    /// where the kubelet finds it.
    ///
    /// # Errors
    /// When `ctr` refuses it.
    pub fn import_image(&self, archive: &Path) -> Result<(), NodeError> {
        self.exec_ok(
            "ctr",
            &[
                "--address",
                "/run/containerd/containerd.sock",
                "-n",
                "k8s.io",
                "images",
                "import",
                &archive.display().to_string(),
            ],
        )
        .map(drop)
    }

    fn spawn(&self, name: &str, program: &Path, args: &[String]) -> Result<u32, NodeError> {
        let log = self.layout.log_file(name);
        let file = fs::File::create(&log).map_err(io_err(&log))?;
        let err = file.try_clone().map_err(io_err(&log))?;
        let mut command = self.exec_command(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        in_own_session(&mut command);
        let child = command.spawn().map_err(|source| NodeError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        // nsenter enters the namespaces and execs: its pid is the
        // component's.
        let pid = child.id();
        let pid_file = self.layout.pid_file(name);
        fs::write(&pid_file, pid.to_string()).map_err(io_err(&pid_file))?;
        Ok(pid)
    }

    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        log: &str,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Timeout {
                    what: what.to_owned(),
                    seconds: timeout.as_secs(),
                    log: self.layout.log_file(log).display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn start_components(&self) -> Result<(), NodeError> {
        let l = &self.layout;
        let certs = l.certs();
        let c = |name: &str| certs.join(name).display().to_string();
        let s = |items: &[&str]| items.iter().map(|i| (*i).to_owned()).collect::<Vec<_>>();
        let sock = "/run/containerd/containerd.sock";

        self.spawn(
            "containerd",
            &l.debian_binary("usr/bin/containerd"),
            &[
                "--config".into(),
                l.etc().join("containerd.toml").display().to_string(),
            ],
        )?;
        self.wait("containerd", Duration::from_secs(30), "containerd", || {
            self.exec("ctr", &["--address", sock, "version"])
                .is_ok_and(|o| o.status.success())
        })?;
        self.import_image(&l.pause_image())?;

        self.spawn(
            "etcd",
            &l.debian_binary("usr/bin/etcd"),
            &s(&[
                "--name",
                NODE_NAME,
                "--data-dir",
                "/var/lib/etcd",
                "--listen-client-urls",
                "http://127.0.0.1:2379",
                "--advertise-client-urls",
                "http://127.0.0.1:2379",
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                &format!("--initial-cluster={NODE_NAME}=http://127.0.0.1:2380"),
                "--listen-metrics-urls",
                "http://127.0.0.1:2381",
            ]),
        )?;
        self.wait("etcd", Duration::from_secs(30), "etcd", || {
            self.exec(
                "etcdctl",
                &["--endpoints", "http://127.0.0.1:2379", "endpoint", "health"],
            )
            .is_ok_and(|o| o.status.success())
        })?;

        self.spawn(
            "kube-apiserver",
            &l.bin().join("kube-apiserver"),
            &[
                format!("--advertise-address={NODE_IP}"),
                "--bind-address=0.0.0.0".into(),
                "--secure-port=6443".into(),
                "--etcd-servers=http://127.0.0.1:2379".into(),
                "--allow-privileged=true".into(),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                format!("--client-ca-file={}", c("ca.crt")),
                format!("--tls-cert-file={}", c("apiserver.crt")),
                format!("--tls-private-key-file={}", c("apiserver.key")),
                format!(
                    "--kubelet-client-certificate={}",
                    c("apiserver-kubelet-client.crt")
                ),
                format!("--kubelet-client-key={}", c("apiserver-kubelet-client.key")),
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--service-account-key-file={}", c("sa.pub")),
                format!("--service-account-signing-key-file={}", c("sa.key")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--v=1".into(),
            ],
        )?;
        self.wait(
            "kube-apiserver",
            Duration::from_secs(90),
            "kube-apiserver",
            || {
                self.kubectl(&["get", "--raw", "/readyz"])
                    .is_ok_and(|o| o.status.success())
            },
        )?;

        let cm = c("controller-manager.kubeconfig");
        self.spawn(
            "kube-controller-manager",
            &l.bin().join("kube-controller-manager"),
            &[
                format!("--kubeconfig={cm}"),
                format!("--authentication-kubeconfig={cm}"),
                format!("--authorization-kubeconfig={cm}"),
                "--bind-address=127.0.0.1".into(),
                "--port=0".into(),
                "--leader-elect=false".into(),
                format!("--cluster-signing-cert-file={}", c("ca.crt")),
                format!("--cluster-signing-key-file={}", c("ca.key")),
                format!("--root-ca-file={}", c("ca.crt")),
                format!("--service-account-private-key-file={}", c("sa.key")),
                "--use-service-account-credentials=true".into(),
                "--allocate-node-cidrs=true".into(),
                format!("--cluster-cidr={CLUSTER_CIDR}"),
                "--node-cidr-mask-size=24".into(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--v=1".into(),
            ],
        )?;
        let sched = c("scheduler.kubeconfig");
        self.spawn(
            "kube-scheduler",
            &l.bin().join("kube-scheduler"),
            &[
                format!("--kubeconfig={sched}"),
                format!("--authentication-kubeconfig={sched}"),
                format!("--authorization-kubeconfig={sched}"),
                "--bind-address=127.0.0.1".into(),
                "--port=0".into(),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ],
        )?;

        // The kubelet's cgroup root must exist in every v1 hierarchy; with
        // cpuset, its cpus and mems must be filled in before any child.
        for hierarchy in cgroup_hierarchies() {
            let dir = hierarchy.join(CGROUP_ROOT);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            if hierarchy.ends_with("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let value =
                        fs::read_to_string(hierarchy.join(file)).map_err(io_err(&hierarchy))?;
                    fs::write(dir.join(file), value.trim()).map_err(io_err(&dir))?;
                }
            }
        }
        self.spawn(
            "kubelet",
            &l.bin().join("kubelet"),
            &[
                format!("--config={}", l.etc().join("kubelet.yaml").display()),
                format!("--kubeconfig={}", c("kubelet.kubeconfig")),
                "--container-runtime=remote".into(),
                format!("--container-runtime-endpoint=unix://{sock}"),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                "--v=1".into(),
            ],
        )?;
        self.spawn(
            "kube-proxy",
            &l.bin().join("kube-proxy"),
            &[
                format!("--config={}", l.etc().join("kube-proxy.yaml").display()),
                "--v=1".into(),
            ],
        )?;
        Ok(())
    }

    /// Stops this node (whether or not this handle started it).
    ///
    /// # Errors
    /// When something is left behind.
    pub fn stop(mut self) -> Result<String, NodeError> {
        self.owned = false;
        Self::stop_layout(&self.layout)
    }

    /// Stops whatever node the layout's pid files name, removes the
    /// namespaces and cgroups, and checks the host for leftovers. Returns
    /// what it did.
    ///
    /// # Errors
    /// When something could not be removed.
    pub fn stop_layout(layout: &Layout) -> Result<String, NodeError> {
        let mut report = String::new();
        let holder = read_pid(&layout.pid_file("holder")).filter(|pid| alive(*pid));
        let namespaces = NodeNamespaces::read(holder);
        for name in COMPONENTS.iter().rev() {
            // containerd and etcd go after the containers.
            if matches!(*name, "containerd" | "etcd") {
                continue;
            }
            stop_pid_file(layout, name, &mut report);
        }
        // Every process of a container: the cgroups the kubelet put them in.
        let container_pids = pids_in_cgroups();
        if !container_pids.is_empty() {
            let _ = writeln!(
                report,
                "killing {} container process(es)",
                container_pids.len()
            );
            kill_and_wait(&container_pids, libc::SIGKILL, Duration::from_secs(10));
        }
        for name in ["containerd", "etcd"] {
            stop_pid_file(layout, name, &mut report);
        }
        // Shims and anything else still inside the node's namespaces.
        let rest: Vec<u32> = namespaces
            .members()
            .into_iter()
            .filter(|pid| Some(*pid) != holder)
            .collect();
        if !rest.is_empty() {
            let _ = writeln!(
                report,
                "killing {} process(es) left in the node's namespaces",
                rest.len()
            );
            kill_and_wait(&rest, libc::SIGKILL, Duration::from_secs(10));
        }
        // The holder last: the node's mounts go with its mount namespace.
        stop_pid_file(layout, "holder", &mut report);
        for name in [NODE_NETNS, EXTERNAL_NETNS] {
            if netns_path(name).exists() {
                let _ = ip(&["netns", "del", name]);
                let _ = writeln!(report, "deleted network namespace {name}");
            }
        }
        // cgroup v1 hierarchies are host-global: the node's go.
        for hierarchy in cgroup_hierarchies() {
            let dir = hierarchy.join(CGROUP_ROOT);
            if dir.exists() {
                remove_cgroup_tree(&dir);
                let _ = writeln!(report, "removed cgroup {}", dir.display());
            }
        }
        let leftovers = leftovers(layout, &namespaces);
        if !leftovers.is_empty() {
            return Err(NodeError::Leftovers(leftovers.join("; ")));
        }
        report.push_str("node down; nothing left behind\n");
        Ok(report)
    }

    /// A short description: running or not, and what is on the host.
    pub fn describe(layout: &Layout) -> String {
        let mut out = String::new();
        match read_pid(&layout.pid_file("holder")).filter(|pid| alive(*pid)) {
            Some(pid) => {
                let _ = writeln!(out, "node running (holder pid {pid})");
                for name in COMPONENTS {
                    let state = match read_pid(&layout.pid_file(name)) {
                        Some(pid) if alive(pid) => format!("pid {pid}"),
                        Some(pid) => format!("pid {pid} NOT RUNNING"),
                        None => "not started".into(),
                    };
                    let _ = writeln!(out, "  {name:<24} {state}");
                }
            }
            None => {
                let _ = writeln!(out, "node not running");
                let left = leftovers(layout, &NodeNamespaces::read(None));
                if left.is_empty() {
                    let _ = writeln!(out, "nothing of it left on the host");
                }
                for item in left {
                    let _ = writeln!(out, "  left behind: {item}");
                }
            }
        }
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.owned
            && let Err(err) = Self::stop_layout(&self.layout)
        {
            eprintln!("stopping the node: {err}");
        }
    }
}

/// The node's uplink: a macvlan (not a veth, so the agent's default of
/// every veth does not pick it up, as on a real node) in the node's
/// namespace, whose lower device is one end of a veth pair inside the
/// external namespace. The external namespace is the node's gateway and
/// holds the "external" addresses the tests connect to.
fn network() -> Result<(), NodeError> {
    ip(&["netns", "add", NODE_NETNS])?;
    ip(&["netns", "add", EXTERNAL_NETNS])?;
    let (n, e) = (NODE_NETNS, EXTERNAL_NETNS);
    ip(&[
        "-n", e, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
    ])?;
    ip(&[
        "-n", e, "link", "add", "eth0", "link", "up1", "type", "macvlan", "mode", "bridge",
    ])?;
    ip(&["-n", e, "link", "set", "eth0", "netns", n])?;
    let gateway = format!("{EXTERNAL_GATEWAY}/24");
    let keep = format!("{EXTERNAL_KEEP}/32");
    let masq = format!("{EXTERNAL_MASQ}/32");
    let node_ip = format!("{NODE_IP}/24");
    let secondary = format!("{NODE_SECONDARY_IP}/32");
    let steps: [(&str, &[&str]); 12] = [
        (e, &["link", "set", "lo", "up"]),
        (e, &["link", "set", "up1", "up"]),
        (e, &["link", "set", "up0", "up"]),
        (e, &["addr", "add", &gateway, "dev", "up0"]),
        (e, &["addr", "add", &keep, "dev", "lo"]),
        (e, &["addr", "add", &masq, "dev", "lo"]),
        (e, &["route", "add", CLUSTER_CIDR, "via", NODE_IP]),
        (n, &["link", "set", "lo", "up"]),
        (n, &["link", "set", "eth0", "up"]),
        (n, &["addr", "add", &node_ip, "dev", "eth0"]),
        (n, &["addr", "add", &secondary, "dev", "lo"]),
        (n, &["route", "add", "default", "via", EXTERNAL_GATEWAY]),
    ];
    for (ns, args) in steps {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        ip(&full)?;
    }
    run_checked(
        Command::new("ip").args(["netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"]),
        "sysctl ip_forward",
    )?;
    Ok(())
}

/// Makes `command` start a session of its own: a node process outlives
/// whoever started it and must not get its terminal's signals.
fn in_own_session(command: &mut Command) {
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

fn spawn_holder(layout: &Layout) -> Result<u32, NodeError> {
    let pid_file = layout.pid_file("holder");
    let log = layout.log_file("holder");
    let file = fs::File::create(&log).map_err(io_err(&log))?;
    let err = file.try_clone().map_err(io_err(&log))?;
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "nsenter"])
        .arg(format!("--net={}", netns_path(NODE_NETNS).display()))
        .args(["--", "sh", "-c", config::NODE_INIT, "node-init"])
        .arg(layout.run())
        .arg(&pid_file)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    in_own_session(&mut command);
    let mut child = command.spawn().map_err(|source| NodeError::Spawn {
        program: "unshare".into(),
        source,
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = read_pid(&pid_file) {
            // unshare and nsenter exec: the script's pid is the child's.
            debug_assert_eq!(pid, child.id());
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NodeError::Failed {
                what: "the node's mount namespace".into(),
                detail: format!(
                    "{status}: {}",
                    fs::read_to_string(&log).unwrap_or_default().trim()
                ),
            });
        }
        if Instant::now() >= deadline {
            return Err(NodeError::Timeout {
                what: "the namespace holder".into(),
                seconds: 10,
                log: log.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop_pid_file(layout: &Layout, name: &str, report: &mut String) {
    let file = layout.pid_file(name);
    if let Some(pid) = read_pid(&file)
        && alive(pid)
    {
        if !kill_and_wait(&[pid], libc::SIGTERM, Duration::from_secs(10)) {
            kill_and_wait(&[pid], libc::SIGKILL, Duration::from_secs(5));
            let _ = writeln!(report, "{name} ({pid}) ignored SIGTERM: killed");
        } else {
            let _ = writeln!(report, "stopped {name} ({pid})");
        }
    }
    let _ = fs::remove_file(file);
}

/// Sends `signal` to each pid and waits until all are gone; whether they
/// went in time.
fn kill_and_wait(pids: &[u32], signal: i32, timeout: Duration) -> bool {
    for pid in pids {
        // SAFETY: kill has no memory effects; the pids are ours to stop.
        unsafe { libc::kill(*pid as i32, signal) };
    }
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|pid| alive(*pid)) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The host's cgroup v1 hierarchies (and the v2 mount, if any).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 2 && (fields[2] == "cgroup" || fields[2] == "cgroup2"))
                .then(|| PathBuf::from(fields[1]))
        })
        .collect()
}

/// Every process in a cgroup under the node's cgroup root.
fn pids_in_cgroups() -> Vec<u32> {
    let mut pids = Vec::new();
    for hierarchy in cgroup_hierarchies() {
        let mut stack = vec![hierarchy.join(CGROUP_ROOT)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(
                    procs
                        .lines()
                        .filter_map(|line| line.trim().parse::<u32>().ok()),
                );
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The node's network and mount namespaces, by inode, to find every
/// process inside them.
#[derive(Debug, Default)]
struct NodeNamespaces {
    net: Option<u64>,
    mnt: Option<u64>,
}

impl NodeNamespaces {
    fn read(holder: Option<u32>) -> Self {
        Self {
            net: fs::metadata(netns_path(NODE_NETNS)).ok().map(|m| m.ino()),
            mnt: holder.and_then(|pid| {
                fs::metadata(format!("/proc/{pid}/ns/mnt"))
                    .ok()
                    .map(|m| m.ino())
            }),
        }
    }

    /// Pids of processes in either namespace.
    fn members(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let inode = |kind: &str| {
                fs::metadata(format!("/proc/{pid}/ns/{kind}"))
                    .ok()
                    .map(|m| m.ino())
            };
            let net = inode("net");
            let mnt = inode("mnt");
            if (self.net.is_some() && net == self.net) || (self.mnt.is_some() && mnt == self.mnt) {
                pids.push(pid);
            }
        }
        pids
    }
}

/// What of the node is still on the host: namespaces, processes, mounts
/// and cgroups.
fn leftovers(layout: &Layout, namespaces: &NodeNamespaces) -> Vec<String> {
    let mut found = Vec::new();
    for name in [NODE_NETNS, EXTERNAL_NETNS] {
        if netns_path(name).exists() {
            found.push(format!("network namespace {name}"));
        }
    }
    for pid in namespaces.members() {
        found.push(format!("process {pid} in the node's namespaces"));
    }
    for pid in pids_in_cgroups() {
        found.push(format!("process {pid} in the node's cgroups"));
    }
    for hierarchy in cgroup_hierarchies() {
        let dir = hierarchy.join(CGROUP_ROOT);
        if dir.exists() {
            found.push(format!("cgroup {}", dir.display()));
        }
    }
    let root = layout.root().display().to_string();
    for line in fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some(point) = fields.get(4)
            && (point.starts_with(&root)
                || point.contains(NODE_NETNS)
                || point.contains(EXTERNAL_NETNS))
        {
            found.push(format!("mount {point}"));
        }
    }
    for name in COMPONENTS.iter().chain(&["holder"]) {
        if let Some(pid) = read_pid(&layout.pid_file(name))
            && alive(pid)
        {
            found.push(format!("{name} (pid {pid})"));
        }
    }
    found
}

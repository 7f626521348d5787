//! The standard lab: a node namespace, pods behind veths (the second one
//! through a `cni0` bridge), and an external host behind the node's uplink
//! with one address inside the default non-masquerade ranges, one outside,
//! and one link-local.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    agent::{Agent, AgentBuilder},
    netns::{Bpffs, Netns, unique_name},
};

/// Node address on the uplink: what masqueraded IPv4 traffic shows.
pub const NODE_UPLINK_V4: &str = "192.0.2.1";
/// External address inside 172.16.0.0/12 (a default non-masquerade range).
pub const EXTERNAL_INSIDE_V4: &str = "172.16.5.5";
/// External address outside every default range.
pub const EXTERNAL_OUTSIDE_V4: &str = "203.0.113.5";
/// External link-local address (169.254.0.0/16).
pub const EXTERNAL_LINK_LOCAL_V4: &str = "169.254.50.5";
/// Node address on the uplink for IPv6.
pub const NODE_UPLINK_V6: &str = "2001:db8:ff::1";
/// External IPv6 address inside fd00::/8 (listed by IPv6 test configs).
pub const EXTERNAL_INSIDE_V6: &str = "fd00:aaaa::5";
/// External IPv6 address outside every configured range.
pub const EXTERNAL_OUTSIDE_V6: &str = "2001:db8:5::5";

/// Lab options.
#[derive(Clone, Copy, Debug)]
pub struct LabOptions {
    /// Number of pods on plain veths (routed, Calico style).
    pub routed_pods: usize,
    /// Number of pods on veths enslaved to the `cni0` bridge.
    pub bridged_pods: usize,
    /// Give every host IPv6 addresses too.
    pub ipv6: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            routed_pods: 1,
            bridged_pods: 1,
            ipv6: false,
        }
    }
}

/// One pod: its namespace and addresses.
#[derive(Debug)]
pub struct Pod {
    pub netns: Netns,
    pub ipv4: IpAddr,
    pub ipv6: Option<IpAddr>,
    /// Name of the host-side veth in the node namespace.
    pub host_interface: String,
}

/// The whole lab; dropping it removes everything it made.
#[derive(Debug)]
pub struct Lab {
    // Field order is drop order: pods and the external host go before the
    // node, and the bpffs last.
    pub pods: Vec<Pod>,
    pub external: Netns,
    pub node: Netns,
    pub bpffs: Bpffs,
    config_dir: PathBuf,
}

impl Lab {
    pub fn new(options: LabOptions) -> Self {
        let node = Netns::new("ipm-node-");
        let external = Netns::new("ipm-ext-");
        let bpffs = Bpffs::new();
        let config_dir = std::env::temp_dir().join(unique_name("ip-masq-config-"));
        std::fs::create_dir_all(&config_dir).expect("create config dir");
        let mut lab = Self {
            pods: Vec::new(),
            external,
            node,
            bpffs,
            config_dir,
        };
        lab.build_uplink(options.ipv6);
        for index in 0..options.routed_pods {
            lab.add_pod(index + 1, false, options.ipv6);
        }
        if options.bridged_pods > 0 {
            lab.node.ip(&["link", "add", "cni0", "type", "bridge"]);
            lab.node
                .ip(&["addr", "add", "10.244.100.1/24", "dev", "cni0"]);
            if options.ipv6 {
                lab.node
                    .ip(&["addr", "add", "fd00:244:100::1/64", "dev", "cni0", "nodad"]);
            }
            lab.node.ip(&["link", "set", "cni0", "up"]);
        }
        for index in 0..options.bridged_pods {
            lab.add_pod(index + 1, true, options.ipv6);
        }
        lab
    }

    fn build_uplink(&mut self, ipv6: bool) {
        let node = &self.node;
        let ext = &self.external;
        node.add_veth("uplink0", ext, "eth0");
        node.ip(&["addr", "add", "192.0.2.1/24", "dev", "uplink0"]);
        node.ip(&["link", "set", "uplink0", "up"]);
        ext.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
        for address in [
            EXTERNAL_INSIDE_V4,
            EXTERNAL_OUTSIDE_V4,
            EXTERNAL_LINK_LOCAL_V4,
        ] {
            ext.ip(&["addr", "add", &format!("{address}/32"), "dev", "eth0"]);
            node.ip(&["route", "add", &format!("{address}/32"), "via", "192.0.2.2"]);
        }
        ext.ip(&["link", "set", "eth0", "up"]);
        ext.ip(&["route", "add", "10.244.0.0/16", "via", "192.0.2.1"]);
        // As on a real node, the uplink holds the default route, which keeps
        // the classifier off it although it is a veth.
        node.ip(&["route", "add", "default", "via", "192.0.2.2"]);
        node.sysctl("net.ipv4.ip_forward", "1");
        if ipv6 {
            node.ip(&[
                "addr",
                "add",
                "2001:db8:ff::1/64",
                "dev",
                "uplink0",
                "nodad",
            ]);
            ext.ip(&["addr", "add", "2001:db8:ff::2/64", "dev", "eth0", "nodad"]);
            for address in [EXTERNAL_INSIDE_V6, EXTERNAL_OUTSIDE_V6] {
                ext.ip(&[
                    "addr",
                    "add",
                    &format!("{address}/128"),
                    "dev",
                    "eth0",
                    "nodad",
                ]);
                node.ip(&[
                    "-6",
                    "route",
                    "add",
                    &format!("{address}/128"),
                    "via",
                    "2001:db8:ff::2",
                ]);
            }
            ext.ip(&[
                "-6",
                "route",
                "add",
                "fd00:244::/32",
                "via",
                "2001:db8:ff::1",
            ]);
            node.ip(&["-6", "route", "add", "default", "via", "2001:db8:ff::2"]);
            node.sysctl("net.ipv6.conf.all.forwarding", "1");
        }
    }

    /// Adds a pod; `bridged` pods hang off `cni0`, the others get a routed veth.
    pub fn add_pod(&mut self, index: usize, bridged: bool, ipv6: bool) -> &Pod {
        let pod = Netns::new("ipm-pod-");
        let subnet = if bridged { 100 } else { index };
        let host_octet = if bridged { 10 + index } else { 10 };
        let host_interface = format!("{}{index}", if bridged { "vbr" } else { "vpod" });
        self.node.add_veth(&host_interface, &pod, "eth0");
        let ipv4: IpAddr = format!("10.244.{subnet}.{host_octet}")
            .parse()
            .expect("address");
        let ipv6_address: Option<IpAddr> = ipv6.then(|| {
            format!("fd00:244:{subnet}::{host_octet}")
                .parse()
                .expect("address")
        });
        if bridged {
            self.node
                .ip(&["link", "set", &host_interface, "master", "cni0"]);
        } else {
            self.node.ip(&[
                "addr",
                "add",
                &format!("10.244.{subnet}.1/24"),
                "dev",
                &host_interface,
            ]);
            if ipv6 {
                self.node.ip(&[
                    "addr",
                    "add",
                    &format!("fd00:244:{subnet}::1/64"),
                    "dev",
                    &host_interface,
                    "nodad",
                ]);
            }
        }
        self.node.ip(&["link", "set", &host_interface, "up"]);
        pod.ip(&["addr", "add", &format!("{ipv4}/24"), "dev", "eth0"]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("10.244.{subnet}.1"),
        ]);
        if let Some(address) = ipv6_address {
            pod.ip(&[
                "addr",
                "add",
                &format!("{address}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            pod.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd00:244:{subnet}::1"),
            ]);
        }
        self.pods.push(Pod {
            netns: pod,
            ipv4,
            ipv6: ipv6_address,
            host_interface,
        });
        self.pods.last().expect("just pushed")
    }

    /// Path of the config file the agent is pointed at.
    pub fn config_path(&self) -> PathBuf {
        self.config_dir.join("ip-masq-agent")
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Writes the config file in place.
    pub fn write_config(&self, text: &str) {
        let temporary = self.config_dir.join(".ip-masq-agent.tmp");
        std::fs::write(&temporary, text).expect("write config");
        std::fs::rename(&temporary, self.config_path()).expect("rename config");
    }

    /// Updates the config the way a Kubernetes ConfigMap volume does: a new
    /// timestamped directory, then an atomic rename of the `..data` symlink.
    /// The config path itself is a symlink through `..data`.
    pub fn write_config_configmap_style(&self, text: &str) {
        let dir = &self.config_dir;
        let version = unique_name("..version_");
        std::fs::create_dir(dir.join(&version)).expect("create version dir");
        std::fs::write(dir.join(&version).join("ip-masq-agent"), text).expect("write config");
        let temporary = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&temporary);
        std::os::unix::fs::symlink(&version, &temporary).expect("symlink ..data_tmp");
        std::fs::rename(&temporary, dir.join("..data")).expect("swap ..data");
        let link = self.config_path();
        let is_symlink = std::fs::symlink_metadata(&link)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if !is_symlink {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("..data/ip-masq-agent", &link).expect("symlink config");
        }
    }

    /// Where the lab's agents keep their state file (removed with the lab).
    pub fn state_dir(&self) -> PathBuf {
        self.config_dir.join("state")
    }

    /// The agent command for this lab: config, private pin path and state
    /// directory, `--datapath tc` unless `extra` names a datapath, extra
    /// args.
    ///
    /// The lab runs tc mode by default because tc exercises both deciders:
    /// the classifier for pod traffic and the chain's xt_bpf rule for the
    /// rest, on the same directory. The agent's own default, xt-bpf, has
    /// its tests in `tests/tests/xt_bpf.rs`, which name it or leave the
    /// flag out through [`Lab::agent_with_defaults`].
    pub fn agent(&self, extra: &[&str]) -> AgentBuilder {
        let names_datapath = extra.iter().any(|arg| arg.starts_with("--datapath"));
        let mut args: Vec<&str> = if names_datapath {
            Vec::new()
        } else {
            vec!["--datapath", "tc"]
        };
        args.extend_from_slice(extra);
        self.agent_with_defaults(&args)
    }

    /// [`Lab::agent`] without the lab's choice of datapath: the agent's
    /// own default applies unless `extra` names one.
    pub fn agent_with_defaults(&self, extra: &[&str]) -> AgentBuilder {
        let config = self.config_path();
        let pin_dir = self.bpffs.pin_dir();
        let state_dir = self.state_dir();
        let mut builder = AgentBuilder::new(
            &self.node.path(),
            &[
                "run",
                "--config",
                config.to_str().expect("utf-8 path"),
                "--pin-path",
                pin_dir.to_str().expect("utf-8 path"),
                "--state-dir",
                state_dir.to_str().expect("utf-8 path"),
            ],
        );
        for arg in extra {
            builder = builder.arg(*arg);
        }
        builder
    }

    /// Starts the agent and waits until it is ready.
    pub fn start_agent(&self, extra: &[&str]) -> Agent {
        let agent = self.agent(extra).spawn();
        agent.wait_ready();
        agent
    }

    /// Opens a TCP connection from `pod` to `destination` (on the external
    /// host) and returns the source address the external host saw.
    pub fn observed_source(&self, pod: &Pod, destination: IpAddr) -> IpAddr {
        observed_source(&pod.netns, &self.external, destination)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.config_dir);
    }
}

/// Opens a TCP connection from `client` to `destination`, served in
/// `server`, and returns the peer address the server saw. A fresh listener
/// and a fresh source port each time, so each call is a new conntrack entry.
pub fn observed_source(client: &Netns, server: &Netns, destination: IpAddr) -> IpAddr {
    try_observed_source(client, server, destination, Duration::from_secs(3))
        .unwrap_or_else(|err| panic!("connection to {destination} failed: {err}"))
}

/// Like [`observed_source`], returning the error instead of panicking.
pub fn try_observed_source(
    client: &Netns,
    server: &Netns,
    destination: IpAddr,
    timeout: Duration,
) -> std::io::Result<IpAddr> {
    observe(client, server, None, destination, timeout).map(|peer| peer.ip())
}

/// Like [`try_observed_source`], returning the source port too: what a
/// `--to-ports` test needs.
pub fn try_observed_peer(
    client: &Netns,
    server: &Netns,
    destination: IpAddr,
    timeout: Duration,
) -> std::io::Result<SocketAddr> {
    observe(client, server, None, destination, timeout)
}

/// Like [`try_observed_source`], with the client socket bound to `source`
/// (an address of the client namespace) before it connects, as a daemon
/// sending from a secondary address or a VIP does.
pub fn try_observed_source_from(
    client: &Netns,
    server: &Netns,
    source: IpAddr,
    destination: IpAddr,
    timeout: Duration,
) -> std::io::Result<IpAddr> {
    observe(client, server, Some(source), destination, timeout).map(|peer| peer.ip())
}

/// Like [`try_observed_source`], but the client connects to `virtual_ip`
/// (on the listener's port) while the server listens on `destination`: a
/// Service whose ClusterIP a DNAT rule on the way translates to
/// `destination`.
pub fn try_observed_source_via(
    client: &Netns,
    server: &Netns,
    virtual_ip: IpAddr,
    destination: IpAddr,
    timeout: Duration,
) -> std::io::Result<IpAddr> {
    observe_at(client, server, None, virtual_ip, destination, timeout).map(|peer| peer.ip())
}

fn observe(
    client: &Netns,
    server: &Netns,
    source: Option<IpAddr>,
    destination: IpAddr,
    timeout: Duration,
) -> std::io::Result<SocketAddr> {
    observe_at(client, server, source, destination, destination, timeout)
}

/// One connection from `client` to `connect_to`, accepted in `server` on
/// `listen_on` (the same address unless something translates it).
fn observe_at(
    client: &Netns,
    server: &Netns,
    source: Option<IpAddr>,
    connect_to: IpAddr,
    listen_on: IpAddr,
    timeout: Duration,
) -> std::io::Result<SocketAddr> {
    let listener = server.enter(move || TcpListener::bind(SocketAddr::new(listen_on, 0)))?;
    let port = listener.local_addr()?.port();
    // Non-blocking accept polled against a deadline, so a failed connect
    // never leaves the server thread waiting forever.
    listener.set_nonblocking(true)?;
    let accept_deadline = std::time::Instant::now() + timeout + Duration::from_secs(1);
    let server_side = std::thread::spawn(move || -> std::io::Result<SocketAddr> {
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() > accept_deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no connection arrived",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(err) => return Err(err),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut greeting = [0u8; 5];
        stream.read_exact(&mut greeting)?;
        stream.write_all(peer.ip().to_string().as_bytes())?;
        stream.shutdown(Shutdown::Write)?;
        Ok(peer)
    });
    let reply = client.enter(move || -> std::io::Result<String> {
        let mut stream = connect(source, SocketAddr::new(connect_to, port), timeout)?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(b"hello")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    });
    let seen = server_side.join().expect("server thread");
    let reply = reply?;
    let seen = seen?;
    // The client got back what the server saw: both ends agree.
    assert_eq!(
        reply,
        seen.ip().to_string(),
        "server reply disagrees with accept()"
    );
    Ok(seen)
}

/// Connects to `destination`, from `source` (any port) when given.
fn connect(
    source: Option<IpAddr>,
    destination: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&destination, timeout);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(destination),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&destination.into(), timeout)?;
    Ok(socket.into())
}

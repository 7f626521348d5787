//! Guards for network namespaces and private bpf filesystems.

use std::{
    ffi::CString,
    fs,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `{prefix}{pid}x{n}`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and panics with its output if it fails.
pub fn run_ok(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `{prefix}{pid}x{n}` with loopback up.
    pub fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        run_ok("ip", &["netns", "add", &name]);
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, for setns and nsenter.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS…`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// Adds a veth pair: `name` here, its peer `peer_name` in `peer`.
    pub fn add_veth(&self, name: &str, peer: &Netns, peer_name: &str) {
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer_name,
            "netns",
            peer.name(),
        ]);
    }

    /// Runs a program inside the namespace, returning its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        Command::new("ip")
            .args(&full)
            .output()
            .unwrap_or_else(|err| panic!("cannot run {program} in {}: {err}", self.name))
    }

    /// Like [`Netns::exec`], panicking on failure.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let output = self.exec(program, args);
        assert!(
            output.status.success(),
            "{program} {} in {} failed: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A command for `program` that runs inside this namespace (see
    /// [`command_in`]).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(&self.path(), program)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets made
    /// there stay in the namespace after `f` returns, which lets a test
    /// open a client in a pod and a server on an external host.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
        .join()
        .expect("thread inside the namespace panicked")
    }

    /// `GET path` on `address` (an agent's metrics listener), from inside
    /// this namespace. Returns the status code and the body.
    ///
    /// # Panics
    /// When nothing answers.
    pub fn http_get(&self, address: &str, path: &str) -> (u16, String) {
        self.try_http_get(address, path)
            .unwrap_or_else(|err| panic!("GET {path} on {address}: {err}"))
    }

    /// [`Netns::http_get`], with a connection or protocol failure as an
    /// error: nothing listens yet, say.
    ///
    /// # Errors
    /// What failed, as text.
    pub fn try_http_get(&self, address: &str, path: &str) -> Result<(u16, String), String> {
        use std::io::{Read as _, Write as _};
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let address: std::net::SocketAddr = address.parse().map_err(|err| format!("{err}"))?;
        self.enter(move || {
            let timeout = std::time::Duration::from_secs(2);
            let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)
                .map_err(|err| format!("connect: {err}"))?;
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .map_err(|err| err.to_string())?;
            stream
                .write_all(request.as_bytes())
                .map_err(|err| format!("send: {err}"))?;
            let mut response = Vec::new();
            stream
                .read_to_end(&mut response)
                .map_err(|err| format!("read: {err}"))?;
            let response = String::from_utf8(response).map_err(|err| err.to_string())?;
            let (head, body) = response
                .split_once("\r\n\r\n")
                .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| format!("no status code: {head:?}"))?;
            Ok((code, body.to_owned()))
        })
    }

    /// Names of the programs attached at tcx ingress of `interface`, in
    /// chain order, as the kernel reports them.
    pub fn tcx_ingress_programs(&self, interface: &str) -> Vec<String> {
        let interface = interface.to_owned();
        self.enter(move || {
            let (_revision, programs) = aya::programs::SchedClassifier::query_tcx(
                &interface,
                aya::programs::TcAttachType::Ingress,
            )
            .unwrap_or_else(|err| panic!("query tcx on {interface}: {err}"));
            programs
                .iter()
                .map(|p| p.name_as_str().unwrap_or_default().to_owned())
                .collect()
        })
    }

    /// `iptables-save`-style listing of a table, inside the namespace.
    pub fn iptables_save(&self, program: &str, table: &str) -> String {
        self.exec_ok(program, &["-w", "-t", table, "-S"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A command for `program` that runs inside the network namespace at
/// `netns`: the child enters it between fork and exec, so nothing else
/// changes (unlike `ip netns exec`, which remounts /sys).
///
/// The namespace file is opened here, before the fork: the child only calls
/// `setns` on the inherited fd, which is async-signal-safe, where opening a
/// file (which allocates, and panics on failure) is not.
///
/// # Panics
/// When the namespace file cannot be opened.
pub fn command_in(netns: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let namespace =
        fs::File::open(netns).unwrap_or_else(|err| panic!("open {}: {err}", netns.display()));
    let mut command = Command::new(program);
    // SAFETY: the closure only calls setns on a valid fd and reads errno,
    // both async-signal-safe. The fd stays open as long as `command`, which
    // owns the closure and so the file, and the child closes it at exec
    // (O_CLOEXEC).
    unsafe {
        command.pre_exec(move || {
            if libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_netns(path: &Path) {
    let file = fs::File::open(path).unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
    // SAFETY: a valid namespace fd; affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// A private bpf filesystem mounted on a fresh directory, so pins never go
/// to the default /sys/fs/bpf. Unmounted (which drops every pin) on drop.
#[derive(Debug)]
pub struct Bpffs {
    root: PathBuf,
}

impl Bpffs {
    pub fn new() -> Self {
        let root = std::env::temp_dir().join(unique_name("ip-masq-bpffs-"));
        fs::create_dir_all(&root).expect("create bpffs mount point");
        let target = CString::new(root.as_os_str().as_encoded_bytes()).expect("path");
        let source = CString::new("bpf").expect("literal");
        // SAFETY: valid NUL-terminated strings; a fresh bpffs instance.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                source.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount bpffs at {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        );
        Self { root }
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A pin directory inside this bpffs.
    pub fn pin_dir(&self) -> PathBuf {
        self.root.join("ip-masq")
    }
}

impl Default for Bpffs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.root.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_dir(&self.root);
    }
}

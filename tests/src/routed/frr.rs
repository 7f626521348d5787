//! One FRR instance per lab namespace: zebra plus a protocol daemon
//! (bgpd or ospfd) started inside the namespace, with their own config,
//! pid files, logs and sockets in a private directory owned by user `frr`,
//! stopped by the pids in their pid files when the guard drops.
//!
//! The daemons start with an empty config; the integrated `frr.conf` is
//! then pushed through vtysh, which sends each statement to the daemons
//! that own it. That is what `vtysh -b` does when FRR boots from
//! /etc/frr/frr.conf on a real router.
//!
//! They run in the foreground as children of this process (not `-d`), so
//! the guard reaps them and a stopped daemon never lingers as a zombie.
//! The namespace is entered with setns before exec, like the agent, since
//! `ip netns exec` would also remount /sys.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::{Netns, netns::command_in, unique_name, wait_until};

/// Where Debian's `frr` package puts the daemons.
pub const DAEMON_DIR: &str = "/usr/lib/frr";
/// The FRR shell, on the PATH.
pub const VTYSH: &str = "vtysh";
/// The unprivileged user the daemons switch to.
pub const FRR_USER: &str = "frr";

/// How long a daemon may take to open its vty socket, or to exit on SIGTERM.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(15);

/// What of FRR is missing on this machine for `daemons`: binaries and the
/// `frr` user, as readable strings. Empty when everything is in place.
pub fn missing(daemons: &[&str]) -> Vec<String> {
    let mut missing: Vec<String> = daemons
        .iter()
        .map(|daemon| Path::new(DAEMON_DIR).join(daemon))
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    let vtysh_found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(VTYSH).is_file()));
    if !vtysh_found {
        missing.push(format!("{VTYSH} (not on PATH)"));
    }
    if frr_ids().is_none() {
        missing.push(format!("user {FRR_USER}"));
    }
    missing
}

/// Panics, naming what is missing and how to get it, unless FRR can run
/// `daemons`. The routed lab fails rather than skips without FRR.
pub fn require(daemons: &[&str]) {
    let missing = missing(daemons);
    assert!(
        missing.is_empty(),
        "FRR is not installed (missing: {}); run `cargo xtask setup` or `apt-get install frr`",
        missing.join(", ")
    );
}

/// uid and gid of the `frr` user. nix looks it up with `getpwnam_r`,
/// which, unlike `getpwnam`, is safe to call from parallel tests.
fn frr_ids() -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name(FRR_USER).ok()??;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// One running daemon.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    child: Option<Child>,
}

/// zebra and one protocol daemon in one namespace; stopped on drop.
#[derive(Debug)]
pub struct Frr {
    /// The instance's name, in logs and FRR's `-N` path space.
    name: String,
    dir: PathBuf,
    /// In start order; stopped in reverse.
    daemons: Vec<Daemon>,
}

impl Frr {
    /// Makes `dir` (owned by `frr`), starts zebra and then `protocol_daemon`
    /// inside `netns`, waits until each answers vtysh, and loads `config`
    /// (an integrated frr.conf) through vtysh.
    ///
    /// # Panics
    /// If FRR is missing, a daemon exits or does not answer, or vtysh
    /// rejects a line of `config`; the message carries the daemons' logs.
    pub fn start(netns: &Netns, dir: &Path, protocol_daemon: &'static str, config: &str) -> Self {
        require(&["zebra", protocol_daemon]);
        let (uid, gid) = frr_ids().expect("checked by require");
        fs::create_dir_all(dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        // The daemons drop root and then write pid files, logs and sockets
        // here.
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .unwrap_or_else(|err| panic!("chown {} to {FRR_USER}: {err}", dir.display()));
        let mut frr = Self {
            name: unique_name("ipm"),
            dir: dir.to_owned(),
            daemons: Vec::new(),
        };
        for daemon in ["zebra", protocol_daemon] {
            frr.spawn(netns, daemon);
        }
        let config_path = dir.join("frr.conf");
        fs::write(&config_path, config).expect("write frr.conf");
        let output = frr.vtysh(&["-f", config_path.to_str().expect("utf-8 path")]);
        assert!(
            output.status.success(),
            "vtysh rejected {}:\n{}{}\n{}",
            config_path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            frr.logs()
        );
        frr
    }

    fn spawn(&mut self, netns: &Netns, daemon: &'static str) {
        let dir = &self.dir;
        let path = |suffix: &str| dir.join(format!("{daemon}{suffix}"));
        // An empty startup file: without -f a daemon would read /etc/frr.
        fs::write(path(".conf"), "").expect("write empty daemon config");
        let out = fs::File::create(path(".out")).expect("create daemon output file");
        let mut command = command_in(&netns.path(), Path::new(DAEMON_DIR).join(daemon));
        command
            .arg("-N")
            .arg(&self.name)
            .arg("-f")
            .arg(path(".conf"))
            .arg("-i")
            .arg(path(".pid"))
            .arg("--vty_socket")
            .arg(dir)
            .arg("-z")
            .arg(dir.join("zserv.api"))
            // No TCP vty: vtysh reaches the daemon through its socket.
            .args(["-P", "0"])
            .arg("--log")
            .arg(format!("file:{}", path(".log").display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup output file"))
            .stderr(out);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {daemon}: {err}"));
        drop(command);
        self.daemons.push(Daemon {
            name: daemon,
            child: Some(child),
        });
        let mut exited = None;
        let dir = &self.dir;
        let child = self
            .daemons
            .last_mut()
            .and_then(|daemon| daemon.child.as_mut())
            .expect("just pushed");
        let answered = wait_until(DAEMON_TIMEOUT, || {
            if let Some(status) = child.try_wait().ok().flatten() {
                exited = Some(status);
                return true;
            }
            vtysh(dir, &["-d", daemon, "-c", "show version"])
                .status
                .success()
        });
        assert!(
            answered && exited.is_none(),
            "{daemon} of {} {}:\n{}",
            self.name,
            match exited {
                Some(status) => format!("exited ({status})"),
                None => format!("did not answer vtysh within {DAEMON_TIMEOUT:?}"),
            },
            self.logs()
        );
    }

    /// The directory holding config, pid files, logs and sockets.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs vtysh against this instance's daemons.
    pub fn vtysh(&self, args: &[&str]) -> Output {
        vtysh(&self.dir, args)
    }

    /// Output of one vtysh `show` command.
    ///
    /// # Panics
    /// If vtysh fails.
    pub fn show(&self, command: &str) -> String {
        let output = self.vtysh(&["-c", command]);
        assert!(
            output.status.success(),
            "vtysh -c {command:?} on {}: {}{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `commands` in one vtysh session (one `-c` each), as typed at
    /// the prompt, e.g. `configure terminal`, `router bgp 65011`, ….
    ///
    /// # Panics
    /// If vtysh rejects one of them.
    pub fn configure(&self, commands: &[String]) {
        let mut args = Vec::with_capacity(commands.len() * 2);
        for command in commands {
            args.extend(["-c", command.as_str()]);
        }
        let output = self.vtysh(&args);
        assert!(
            output.status.success() && !String::from_utf8_lossy(&output.stdout).contains('%'),
            "vtysh rejected {commands:?} on {}: {}{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Pids of the running daemons, as their pid files give them.
    pub fn pids(&self) -> Vec<u32> {
        self.daemons
            .iter()
            .filter(|daemon| daemon.child.is_some())
            .filter_map(|daemon| self.pid_from_file(daemon.name))
            .collect()
    }

    fn pid_from_file(&self, daemon: &str) -> Option<u32> {
        fs::read_to_string(self.dir.join(format!("{daemon}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops one daemon (e.g. `bgpd`, as a crash or an upgrade would),
    /// leaving the others running.
    ///
    /// # Panics
    /// If no such daemon runs here.
    pub fn stop_daemon(&mut self, name: &str) {
        let index = self
            .daemons
            .iter()
            .position(|daemon| daemon.name == name && daemon.child.is_some())
            .unwrap_or_else(|| panic!("{name} is not running in {}", self.name));
        self.stop_at(index);
    }

    /// Stops the daemon at `index`: SIGTERM to the pid in its pid file,
    /// then SIGKILL if it has not exited in time; the child is reaped.
    fn stop_at(&mut self, index: usize) {
        let pid_file = self.pid_from_file(self.daemons[index].name);
        let Some(mut child) = self.daemons[index].child.take() else {
            return;
        };
        // In the foreground the pid file names the child itself; signal
        // both should a wrapper ever stand between them.
        for pid in pid_file.into_iter().chain([child.id()]) {
            // SAFETY: signalling a daemon this guard started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        let exited = wait_until(DAEMON_TIMEOUT, || child.try_wait().ok().flatten().is_some());
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every daemon's log and stray output, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for daemon in &self.daemons {
            for suffix in [".log", ".out"] {
                let path = self.dir.join(format!("{}{suffix}", daemon.name));
                if let Ok(content) = fs::read_to_string(&path)
                    && !content.is_empty()
                {
                    text.push_str(&format!("--- {} ---\n{content}", path.display()));
                }
            }
        }
        text
    }
}

/// Runs vtysh against the daemons whose sockets are in `dir`.
fn vtysh(dir: &Path, args: &[&str]) -> Output {
    Command::new(VTYSH)
        .arg("--vty_socket")
        .arg(dir)
        // No history file in root's home.
        .args(["-H", "/dev/null"])
        .args(args)
        .env("VTYSH_PAGER", "cat")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {VTYSH}: {err}"))
}

impl Drop for Frr {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for index in (0..self.daemons.len()).rev() {
            self.stop_at(index);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

//! The agent as a child process inside a lab namespace.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{
    netns::{Netns, command_in},
    unique_name, wait_until,
};

/// How long an agent may take to get ready: generous, since tests run in
/// parallel on a small machine; a healthy agent takes well under a second.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A prefix no lab config lists and no test sends to: [`Agent::wait_for_resync`]
/// writes it into the map with [`RESYNC_PROBE_VALUE`] and waits for a
/// resync to remove it.
pub const RESYNC_PROBE: &str = "10.255.255.0/24";
/// No action the agent knows, so that its drift repair removes the entry.
pub const RESYNC_PROBE_VALUE: u8 = 0xee;

/// Runs `ip-masq ARGS…` inside `netns` and returns its output.
pub fn ip_masq_in(netns: &Netns, args: &[&str]) -> Output {
    netns
        .command(agent_binary())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run ip-masq")
}

/// Finds the `ip-masq` binary: `$IP_MASQ_BIN`, else next to (or one level
/// above) the running executable, which is where cargo puts it for tests
/// (`target/debug/deps/…`) and for xtask (`target/debug/xtask`).
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("IP_MASQ_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current executable");
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("ip-masq");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "ip-masq binary not found near {}; build it (cargo build -p ip-masq) or set IP_MASQ_BIN",
        exe.display()
    );
}

/// The `ip-masq-bench` binary (the benchmark helper), built beside the
/// agent: next to `$IP_MASQ_BIN` when that is set, else found as the agent is.
pub fn bench_binary() -> PathBuf {
    if let Some(agent) = std::env::var_os("IP_MASQ_BIN") {
        return PathBuf::from(agent).with_file_name("ip-masq-bench");
    }
    agent_binary().with_file_name("ip-masq-bench")
}

/// The entries of the maps pinned under `pin_dir`, as `ip-masq dump
/// --json` decodes them: one `CIDR ACTION` string each, e.g.
/// `10.0.0.0/8 keep-source`.
///
/// # Errors
/// What the command printed when it failed (no maps pinned there, say).
pub fn dump_maps(pin_dir: &Path) -> Result<BTreeSet<String>, String> {
    let output = Command::new(agent_binary())
        .args(["dump", "--json", "--pin-path"])
        .arg(pin_dir)
        .output()
        .map_err(|err| format!("cannot run ip-masq dump: {err}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).map_err(|err| err.to_string())?;
    Ok(rows
        .iter()
        .map(|row| {
            format!(
                "{} {}",
                row["cidr"].as_str().unwrap_or_default(),
                row["action"].as_str().unwrap_or_default()
            )
        })
        .collect())
}

/// Writes one raw entry into the LPM map pinned under `pin_dir` for
/// `cidr`'s family, bypassing the agent, as another tool could: `value` need
/// not be an action the agent knows.
///
/// # Panics
/// When the map is not pinned there or refuses the write.
pub fn write_raw_map_entry(pin_dir: &Path, cidr: &str, value: u8) {
    use aya::maps::{
        Map, MapData,
        lpm_trie::{Key, LpmTrie},
    };
    let (address, prefix_len) = cidr.split_once('/').expect("ADDRESS/PREFIX");
    let prefix_len: u32 = prefix_len.parse().expect("prefix length");
    match address.parse::<std::net::IpAddr>().expect("address") {
        std::net::IpAddr::V4(address) => {
            let data = MapData::from_pin(pin_dir.join("NON_MASQ_V4")).expect("pinned map");
            let mut map: LpmTrie<MapData, [u8; 4], u8> =
                LpmTrie::try_from(Map::LpmTrie(data)).expect("LPM trie");
            map.insert(&Key::new(prefix_len, address.octets()), value, 0)
                .expect("map write");
        }
        std::net::IpAddr::V6(address) => {
            let data = MapData::from_pin(pin_dir.join("NON_MASQ_V6")).expect("pinned map");
            let mut map: LpmTrie<MapData, [u8; 16], u8> =
                LpmTrie::try_from(Map::LpmTrie(data)).expect("LPM trie");
            map.insert(&Key::new(prefix_len, address.octets()), value, 0)
                .expect("map write");
        }
    }
}

/// Builds the command line of one agent process.
#[derive(Clone, Debug)]
pub struct AgentBuilder {
    netns: PathBuf,
    args: Vec<String>,
    /// When set, the only capabilities the process keeps (`setpriv
    /// --bounding-set`), as a pod granted just these would run it.
    capabilities: Option<Vec<String>>,
}

impl AgentBuilder {
    /// `ip-masq ARGS…` to be run inside the namespace at `netns`.
    pub fn new(netns: &Path, args: &[&str]) -> Self {
        Self {
            netns: netns.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            capabilities: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs the agent as root with only these capabilities (lower case,
    /// without `cap_`, e.g. `net_admin`): the bounding set bounds what root
    /// gets at exec.
    pub fn capabilities(mut self, capabilities: &[&str]) -> Self {
        self.capabilities = Some(capabilities.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    /// Starts the process; its stderr goes to a log file the guard reads.
    pub fn spawn(&self) -> Agent {
        let log_path = std::env::temp_dir().join(format!("{}.log", unique_name("ip-masq-agent-")));
        let log = fs::File::create(&log_path).expect("create agent log");
        let mut command = match &self.capabilities {
            None => command_in(&self.netns, agent_binary()),
            Some(capabilities) => {
                let keep: String = capabilities.iter().map(|c| format!(",+{c}")).collect();
                let mut command = command_in(&self.netns, "setpriv");
                command
                    .arg(format!("--bounding-set=-all{keep}"))
                    .arg("--inh-caps=-all")
                    .arg("--")
                    .arg(agent_binary());
                command
            }
        };
        let child = command
            .args(&self.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn ip-masq");
        let pid = child.id();
        Agent {
            child: Some(child),
            pid,
            log_path,
            state_dir: self.flag("--state-dir").map(PathBuf::from),
            pin_dir: self.flag("--pin-path").map(PathBuf::from),
        }
    }

    /// The value given for `--NAME`, as `--NAME VALUE` or `--NAME=VALUE`.
    fn flag(&self, name: &str) -> Option<&str> {
        self.args.iter().enumerate().find_map(|(index, arg)| {
            if arg == name {
                self.args.get(index + 1).map(String::as_str)
            } else {
                arg.strip_prefix(name)?.strip_prefix('=')
            }
        })
    }
}

/// A running agent, killed on drop.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    pid: u32,
    log_path: PathBuf,
    /// `--state-dir` and `--pin-path` as given, for [`Agent::state`] and
    /// [`Agent::wait_for_resync`].
    state_dir: Option<PathBuf>,
    pin_dir: Option<PathBuf>,
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The state file this process wrote (the one with its pid), as JSON:
    /// the agent's own account of what it did (`reloadsSucceeded`,
    /// `lastReload`, `attached`, `repairs`, …; see `AgentStatus`). `None`
    /// until it has written one.
    ///
    /// # Panics
    /// When the agent was started without `--state-dir`: its state file
    /// would be the host's.
    pub fn state(&self) -> Option<Value> {
        let dir = self
            .state_dir
            .as_ref()
            .expect("an agent started without --state-dir has no state file to read");
        // The agent writes a temporary file and renames it, so a file with
        // the .json name is always whole.
        fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .filter_map(|path| serde_json::from_slice::<Value>(&fs::read(path).ok()?).ok())
            .find(|state| state["pid"].as_u64() == Some(u64::from(self.pid)))
    }

    /// Polls the state file until `condition` holds and returns that
    /// state; panics, with the last state and the log, when the deadline
    /// passes or the process exits first.
    pub fn wait_state(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Value) -> bool,
    ) -> Value {
        let mut last = None;
        let mut exited = false;
        let held = wait_until(timeout, || {
            last = self.state();
            if last.as_ref().is_some_and(&mut condition) {
                return true;
            }
            exited = self.has_exited();
            exited
        });
        assert!(
            held && !exited,
            "agent state never showed {what} within {timeout:?}{}; last state: {}\nlog:\n{}",
            if exited { " (the agent exited)" } else { "" },
            last.map_or_else(|| "none".to_owned(), |state| format!("{state:#}")),
            self.log()
        );
        last.expect("held")
    }

    /// Waits until the agent counts `count` applied reloads in all.
    pub fn wait_reloads_succeeded(&self, count: u64, timeout: Duration) -> Value {
        self.wait_state(&format!("{count} applied reloads"), timeout, |state| {
            state["reloadsSucceeded"].as_u64() >= Some(count)
        })
    }

    /// Waits until the agent counts `count` rejected reloads in all.
    pub fn wait_reloads_failed(&self, count: u64, timeout: Duration) -> Value {
        self.wait_state(&format!("{count} rejected reloads"), timeout, |state| {
            state["reloadsFailed"].as_u64() >= Some(count)
        })
    }

    /// Waits until a whole periodic resync, its reload included, has run
    /// after this call.
    ///
    /// It writes [`RESYNC_PROBE`], with a value that is no action, into the
    /// pinned IPv4 map, and waits for it to go: only a resync's drift
    /// repair (or a start) removes such an entry. That repair runs after the
    /// resync's reload, which may have run before the probe was written, so
    /// it probes twice: the resync that removes the second probe started
    /// after the first was gone. Whatever its reload logged is in the log
    /// then. Each probe counts one `map_entry` repair and logs one "unknown
    /// action value" warning.
    ///
    /// # Panics
    /// When no resync removes a probe within a minute: the config's
    /// `resyncInterval` must be short.
    pub fn wait_for_resync(&self) {
        let pin_dir = self
            .pin_dir
            .as_ref()
            .expect("an agent started without --pin-path");
        let probe = format!("{RESYNC_PROBE} unknown({RESYNC_PROBE_VALUE})");
        for _ in 0..2 {
            write_raw_map_entry(pin_dir, RESYNC_PROBE, RESYNC_PROBE_VALUE);
            let mut last = Ok(BTreeSet::new());
            assert!(
                wait_until(Duration::from_secs(60), || {
                    last = dump_maps(pin_dir);
                    last.as_ref().is_ok_and(|entries| !entries.contains(&probe))
                }),
                "no resync removed the probe entry {probe}: {last:?}\nlog:\n{}",
                self.log()
            );
        }
    }

    /// Whether the process has exited, without reaping it (the `Child`
    /// still does that).
    fn has_exited(&self) -> bool {
        if self.child.is_none() {
            return true;
        }
        // SAFETY: an all-zero siginfo_t is a valid value to be overwritten.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with a valid siginfo pointer;
        // WNOWAIT leaves the child waitable, so `Child::wait` still reaps it.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid,
                &raw mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info` (or left it zeroed: no exit yet).
        rc == 0 && unsafe { info.si_pid() } != 0
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How often `needle` appears in the log. For checks where the log
    /// line is itself the promise (one error line per rejected file); to
    /// wait for something to happen, wait for its state instead.
    pub fn count_in_log(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits for the agent to be ready: startup done and the rules
    /// installed (so a table is in force), as its state file says. It is
    /// what the agent logs `ready:` for; `/readyz` may still be 503 then,
    /// for a rejected file.
    pub fn wait_ready(&self) {
        self.wait_state("ready", READY_TIMEOUT, |state| {
            state["startupComplete"] == true && state["rulesInstalled"] == true
        });
    }

    /// Sends `signal` and waits up to `timeout` for the exit.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_ref()?;
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        self.wait_exit(timeout)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- agent log {} ---\n{}",
                self.log_path.display(),
                self.log()
            );
        }
        let _ = fs::remove_file(&self.log_path);
    }
}

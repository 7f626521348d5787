//! The agent as a child process inside a lab namespace.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use crate::{netns::enter_netns, unique_name, wait_until};

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
}

impl AgentBuilder {
    /// `ip-masq ARGS…` to be run inside the namespace at `netns`.
    pub fn new(netns: &Path, args: &[&str]) -> Self {
        Self {
            netns: netns.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts the process; its stderr goes to a log file the guard reads.
    pub fn spawn(&self) -> Agent {
        let log_path = std::env::temp_dir().join(format!("{}.log", unique_name("ip-masq-agent-")));
        let log = fs::File::create(&log_path).expect("create agent log");
        let netns = self.netns.clone();
        let mut command = Command::new(agent_binary());
        command
            .args(&self.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        // SAFETY: setns is async-signal-safe; the namespace path was
        // resolved before fork.
        unsafe {
            command.pre_exec(move || {
                enter_netns(&netns);
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn ip-masq");
        Agent {
            child: Some(child),
            log_path,
        }
    }
}

/// A running agent, killed on drop.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    log_path: PathBuf,
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log otherwise.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.log().contains(needle)),
            "agent did not log {needle:?} within {timeout:?}; log:\n{}",
            self.log()
        );
    }

    /// How often `needle` appears in the log.
    pub fn count_in_log(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits for the agent to be ready (maps, links and rules in place).
    pub fn wait_ready(&self) {
        self.wait_for_log("ready:", Duration::from_secs(20));
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

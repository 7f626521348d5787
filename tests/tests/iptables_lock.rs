//! iptables waits a bounded time for the xtables lock: a lock another
//! process holds makes the agent's iptables commands fail with an error
//! that says so, where an unbounded `-w` would wait for ever. Needs root.
//!
//! The nf_tables backend takes no lock, so the commands run on the legacy
//! backend (a `PATH` entry points `iptables` at `iptables-legacy`), inside
//! a namespace of the test's own, with `XTABLES_LOCKFILE` naming a lock
//! file of the test's own: the node's `/run/xtables.lock` is never touched.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Output,
};

use lab::{Netns, agent::agent_binary, unique_name};

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let path = std::env::temp_dir().join(unique_name("ip-masq-lock-"));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `ip-masq cleanup` in `netns` on the legacy backend with `lock_file` as
/// the xtables lock. `timeout` ends it if it waits far beyond any bound
/// the agent sets, so that a regression fails instead of hanging.
fn cleanup(netns: &Netns, scratch: &Path, lock_file: &Path) -> Output {
    let bin = scratch.join("bin");
    let path = format!(
        "PATH={}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let lock = format!("XTABLES_LOCKFILE={}", lock_file.display());
    let pins = scratch.join("pins");
    let state = scratch.join("state");
    let agent = agent_binary();
    netns.exec(
        "timeout",
        &[
            "120",
            "env",
            &path,
            &lock,
            agent.to_str().unwrap(),
            "cleanup",
            "--pin-path",
            pins.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    )
}

#[test]
#[ignore = "needs root"]
fn a_held_xtables_lock_fails_the_command_with_a_clear_error() {
    let scratch = Scratch::new();
    let bin = scratch.0.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("iptables");
    fs::write(&wrapper, "#!/bin/sh\nexec iptables-legacy \"$@\"\n").unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let lock_file = scratch.0.join("xtables.lock");
    let netns = Netns::new("iptlock");

    // Another program holds the lock: the command gives up and says why.
    let holder = fs::File::create(&lock_file).unwrap();
    holder.lock().unwrap();
    let output = cleanup(&netns, &scratch.0, &lock_file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "cleanup must fail, not wait (124 means it hung): {stderr}"
    );
    assert!(
        stderr.contains("iptables -w 5 -t nat -S gave up after waiting 5 s for the xtables lock, which another program holds"),
        "{stderr}"
    );

    // The same command with the lock free succeeds: the lock was the cause.
    holder.unlock().unwrap();
    let output = cleanup(&netns, &scratch.0, &lock_file);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Nothing of ours in the scratch namespace, and cleanup says so.
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("nothing of ip-masq's found: nothing removed"),
        "{said}"
    );
}

//! A network-namespace lab for ip-masq's root tests, the demo and the
//! benchmarks: a node namespace with pods behind veths (one through a
//! bridge), an external host behind an uplink, a private bpffs, and the
//! agent as a child process.
//!
//! Every resource is owned by a guard that removes it on drop, so a failing
//! test still cleans up; every name carries the process id and a counter,
//! so tests can run in parallel. Nothing here touches the root namespace's
//! rules or links, nor the default pin path.

pub mod agent;
pub mod dockerfile;
pub mod k8s;
pub mod load;
pub mod netns;
pub mod python;
pub mod routed;
pub mod topology;

pub use agent::{Agent, AgentBuilder};
pub use netns::{Bpffs, Netns, unique_name};
pub use topology::{Lab, LabOptions, Pod};

use std::time::{Duration, Instant};

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether the process runs as root; the lab needs it.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

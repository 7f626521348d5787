//! The datapath benchmark helper's report: what `ip-masq-bench` prints as
//! JSON and `cargo xtask bench` reads. The types are shared, not mirrored.
//!
//! The binary (`src/main.rs`, feature `helper`) uses the agent's library;
//! this library part has no dependency beyond serde, so xtask can use it
//! before bpf-linker (which the agent's build needs) is installed.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The whole measurement, as JSON for `cargo xtask bench`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Report {
    pub repeat: u32,
    pub rounds: u32,
    pub frame_bytes_v4: usize,
    pub frame_bytes_v6: usize,
    pub sizes: Vec<SizeReport>,
    /// The one-entry changes timed on the largest table.
    #[serde(default)]
    pub one_entry: Vec<OneEntryChange>,
    /// Kernel memory of the maps holding the mixed table.
    #[serde(default)]
    pub memory: Option<MemoryReport>,
}

/// One prefix added to (or removed from) the largest table.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct OneEntryChange {
    pub cidrs: usize,
    /// `add` or `remove`.
    pub change: String,
    /// The whole sync: the LPM record's write and the directory's publish.
    pub sync_us: f64,
    /// The record's writes alone.
    #[serde(default)]
    pub write_us: f64,
    /// The directory's publish alone.
    pub publish_us: f64,
    pub chunks_written: usize,
}

/// `memlock` of every map with `v4` IPv4 and `v6` IPv6 prefixes loaded.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct MemoryReport {
    pub v4: usize,
    pub v6: usize,
    /// `--max-cidrs` the maps were made for.
    pub max_cidrs: u32,
    pub maps: Vec<(String, u64)>,
}

impl MemoryReport {
    /// All maps together.
    pub fn total_bytes(&self) -> u64 {
        self.maps.iter().map(|(_, bytes)| bytes).sum()
    }
}

/// Results for one number of CIDRs per family.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SizeReport {
    pub cidrs: usize,
    /// Entries written to reach this size (both families) and how long the
    /// agent's sync took for them.
    pub fill_entries: usize,
    pub fill_ms: f64,
    /// Of `fill_ms`, the LPM record's writes.
    #[serde(default)]
    pub write_ms: f64,
    /// Of `fill_ms`, the range directory's build and write.
    #[serde(default)]
    pub publish_ms: f64,
    pub hit_v4: Option<CaseTiming>,
    pub miss_v4: CaseTiming,
    pub hit_v6: Option<CaseTiming>,
    /// The classifier that returns at once, on the IPv4 miss frame.
    pub noop: CaseTiming,
    /// The xt_bpf socket filter (`--datapath xt-bpf`, and host traffic in
    /// tc mode) on the same frames, when the object has it.
    pub xt_hit_v4: Option<CaseTiming>,
    pub xt_miss_v4: Option<CaseTiming>,
    /// The socket filter that returns at once, on the IPv4 miss frame.
    #[serde(default)]
    pub noop_filter: Option<CaseTiming>,
    /// The socket filter that only reads the destination (one helper
    /// call) and returns: the floor of any filter that reads the packet.
    #[serde(default)]
    pub load_filter: Option<CaseTiming>,
    /// The classifier on a TCP segment of an established connection (ACK)
    /// to the hit destination.
    #[serde(default)]
    pub established_v4: Option<CaseTiming>,
    /// The classifier on a hit in the /16 the table cuts into the most
    /// ranges, and how many.
    #[serde(default)]
    pub dense_hit_v4: Option<CaseTiming>,
    #[serde(default)]
    pub dense_ranges_v4: usize,
}

/// The cost of one case: the fastest of the rounds.
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
pub struct CaseTiming {
    /// Destination of the test frame.
    pub destination: IpAddr,
    /// CPU time of the fastest call divided by `repeat`. CPU time, not wall
    /// time: on a shared machine the kernel reschedules during a long test
    /// run, and the time spent in other tasks is not the program's. Finer
    /// than the kernel's figure, which is rounded to whole nanoseconds.
    pub ns_per_packet: f64,
    /// The kernel's own average for the fastest call (whole nanoseconds).
    pub kernel_ns_per_packet: u64,
}

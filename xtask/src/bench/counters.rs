//! Kernel counters the benchmark reads: per-namespace UDP, conntrack and
//! interface statistics, and a process's CPU time and peak memory. The
//! parsers are pure; the readers open `/proc/thread-self/net/…` from a
//! thread inside the namespace, because `/proc/self/net` would show the
//! namespace of the process's main thread instead.

use std::{collections::HashMap, fs};

use anyhow::{Context as _, bail};
use lab::Netns;

/// UDP datagrams that reached the UDP layer, delivered or not:
/// `InDatagrams + NoPorts + InErrors` of the `Udp:` lines of `snmp`.
pub(super) fn parse_udp_arrivals(snmp: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let field = |name: &str| -> Option<u64> {
        let index = header.iter().position(|h| *h == name)?;
        values.get(index)?.parse().ok()
    };
    Some(field("InDatagrams")? + field("NoPorts")? + field("InErrors")?)
}

/// The namespace's conntrack table size and its drop counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ConntrackStats {
    /// Entries in the table. With the table flushed before a measurement
    /// and UDP entries living 30 s, its growth is the number of new flows.
    /// (The per-CPU `insert` column would be the direct count, but current
    /// kernels no longer update it.)
    pub entries: u64,
    pub drop: u64,
    pub early_drop: u64,
    pub insert_failed: u64,
}

impl ConntrackStats {
    /// Growth of the table and drops since `earlier`.
    pub(super) fn since(&self, earlier: &Self) -> Self {
        Self {
            entries: self.entries.saturating_sub(earlier.entries),
            drop: self.drop - earlier.drop,
            early_drop: self.early_drop - earlier.early_drop,
            insert_failed: self.insert_failed - earlier.insert_failed,
        }
    }
}

/// Parses `net/stat/nf_conntrack`: a header, then one row of hex numbers
/// per CPU. `entries` is the same in every row; the counters are per CPU.
pub(super) fn parse_conntrack_stats(text: &str) -> Option<ConntrackStats> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (entries, drop, early_drop, insert_failed) = (
        column("entries")?,
        column("drop")?,
        column("early_drop")?,
        column("insert_failed")?,
    );
    let mut sums = ConntrackStats::default();
    for line in lines.filter(|line| !line.trim().is_empty()) {
        let values: Vec<u64> = line
            .split_whitespace()
            .map(|v| u64::from_str_radix(v, 16))
            .collect::<Result<_, _>>()
            .ok()?;
        let at = |index: usize| values.get(index).copied();
        sums.entries = at(entries)?;
        sums.drop += at(drop)?;
        sums.early_drop += at(early_drop)?;
        sums.insert_failed += at(insert_failed)?;
    }
    Some(sums)
}

/// Received packets of every interface in `net/dev`.
pub(super) fn parse_rx_packets(text: &str) -> HashMap<String, u64> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let packets = counters.split_whitespace().nth(1)?.parse().ok()?;
            Some((name.trim().to_owned(), packets))
        })
        .collect()
}

/// User plus system CPU time, in clock ticks, from `/proc/PID/stat`.
pub(super) fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses; fields resume
    // after the last ')'. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field of `/proc/PID/status`, in bytes.
pub(super) fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|line| line.split(':').next() == Some(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn read_in(netns: &Netns, relative: &'static str) -> anyhow::Result<String> {
    let name = netns.name().to_owned();
    netns
        .enter(move || fs::read_to_string(format!("/proc/thread-self/net/{relative}")))
        .with_context(|| format!("read net/{relative} in {name}"))
}

/// UDP arrivals in `netns`.
pub(super) fn udp_arrivals(netns: &Netns) -> anyhow::Result<u64> {
    parse_udp_arrivals(&read_in(netns, "snmp")?).context("no Udp: lines in net/snmp")
}

/// Conntrack counters of `netns`.
pub(super) fn conntrack_stats(netns: &Netns) -> anyhow::Result<ConntrackStats> {
    parse_conntrack_stats(&read_in(netns, "stat/nf_conntrack")?)
        .context("unreadable net/stat/nf_conntrack")
}

/// Received packets of `interface` in `netns`.
pub(super) fn rx_packets(netns: &Netns, interface: &str) -> anyhow::Result<u64> {
    let counters = parse_rx_packets(&read_in(netns, "dev")?);
    match counters.get(interface) {
        Some(packets) => Ok(*packets),
        None => bail!("no interface {interface} in {}", netns.name()),
    }
}

/// CPU seconds a process has used so far.
pub(super) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat).context("unparsable /proc/PID/stat")?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks as f64 / per_second as f64)
}

/// Peak resident memory of a process (VmHWM), in bytes.
pub(super) fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, "VmHWM").context("no VmHWM in /proc/PID/status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_arrivals_count_delivered_dropped_and_unrouted() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 70 3 20 71 20 0\n\
                    UdpLite: InDatagrams NoPorts InErrors\nUdpLite: 9 9 9\n";
        assert_eq!(parse_udp_arrivals(snmp), Some(93));
        assert_eq!(parse_udp_arrivals("Ip: 1\n"), None);
    }

    #[test]
    fn conntrack_rows_are_hex_and_summed() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error\n\
                    00000010  00000000 00000002 00000000 00000000 00000000 00000000 00000000 000000ff 00000001 00000000 00000003 00000000\n\
                    00000010  00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000002 00000000 00000000\n";
        assert_eq!(
            parse_conntrack_stats(text),
            Some(ConntrackStats {
                entries: 16,
                drop: 2,
                early_drop: 3,
                insert_failed: 1
            })
        );
    }

    #[test]
    fn rx_packets_by_interface() {
        let text = "Inter-|   Receive\n face |bytes    packets errs\n    lo:    3193      29    0\n vpod1: 10 7 0\n";
        let counters = parse_rx_packets(text);
        assert_eq!(counters["lo"], 29);
        assert_eq!(counters["vpod1"], 7);
    }

    #[test]
    fn cpu_ticks_survive_odd_command_names() {
        let stat = "42 (ip (masq) x) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
    }

    #[test]
    fn status_fields_in_bytes() {
        let status = "Name:\tip-masq\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(12345 * 1024));
        assert_eq!(parse_status_kib(status, "VmPeak"), None);
    }
}

//! New flows per second from the pod to the external host through the
//! node's NAT, contenders alternated within each round.
//!
//! Each flow is one UDP frame written onto the pod's interface (see
//! `inject`) with a source and destination port pair that no other flow of
//! the measurement uses (pairs are walked in order, conntrack is flushed
//! before every measurement), so every flow is a new conntrack entry and
//! goes through the nat chain once.
//! The flow count is what arrived at the external host's UDP layer; the
//! growth of the node's conntrack table shows each arrival was a new entry.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    ops::Range,
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use lab::{Netns, netns::enter_netns};
use serde::Serialize;

use super::{
    bpfstats::{self, Totals},
    counters::{self, ConntrackStats},
    inject::{Addresses, BATCH, Injector, PortWalk, udp_frame},
    node::{Bed, Contender},
};

/// Destination ports of the sink; flows cycle through them.
const SINK_PORTS: Range<u16> = 40_000..40_032;
/// Source ports the generator binds, split between its threads.
const SOURCE_PORTS: Range<u16> = 1024..65_535;

/// Timing of one measurement.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    pub warmup: Duration,
    pub length: Duration,
}

/// One measurement of one contender.
#[derive(Clone, Debug, Serialize)]
pub(super) struct FlowSample {
    pub contender: Contender,
    pub round: usize,
    /// Position in the run of this list size, for pairing with the
    /// neighbouring bare-MASQUERADE measurement.
    pub seq: usize,
    pub flows_per_second: f64,
    /// Flows that arrived during the window.
    pub flows: u64,
    /// Datagrams the generator sent during the window; more than `flows`
    /// means some were lost on the way (queues overflowing under load).
    pub sent: u64,
    /// New conntrack entries per arrived flow in the node (1.0: every flow
    /// was a new entry).
    pub new_entries_per_flow: f64,
    pub conntrack_drops: u64,
    /// Source address the sink saw on the last datagram.
    pub seen_source: Option<Ipv4Addr>,
    /// What our BPF programs ran during the window, when measured (BPF
    /// statistics cost time of their own, so such samples are not used for
    /// ratios).
    pub bpf: Option<Totals>,
}

impl FlowSample {
    /// CPU time one flow took, assuming the generator kept `cpus` CPUs busy.
    pub(super) fn cpu_ns_per_flow(&self, cpus: usize) -> f64 {
        cpus as f64 * 1e9 / self.flows_per_second
    }

    /// BPF run time per flow, when measured.
    pub(super) fn bpf_ns_per_flow(&self) -> Option<f64> {
        let bpf = self.bpf?;
        Some((bpf.classifier_ns + bpf.xt_bpf_ns) as f64 / self.flows.max(1) as f64)
    }
}

/// The external host's UDP sink: bound sockets that nobody reads during a
/// measurement (datagrams past their tiny buffer are dropped on arrival,
/// which still counts as arrival).
pub(super) struct Sink {
    sockets: Vec<UdpSocket>,
}

impl Sink {
    pub(super) fn open(external: &Netns, address: Ipv4Addr) -> anyhow::Result<Self> {
        let sockets = external.enter(move || -> std::io::Result<Vec<UdpSocket>> {
            SINK_PORTS
                .map(|port| {
                    let socket = UdpSocket::bind(SocketAddrV4::new(address, port))?;
                    socket.set_nonblocking(true)?;
                    set_receive_buffer(&socket, 4096)?;
                    Ok(socket)
                })
                .collect()
        })?;
        Ok(Self { sockets })
    }

    /// Empties every socket; returns the source of the last datagram read.
    pub(super) fn drain(&self) -> Option<Ipv4Addr> {
        let mut buffer = [0u8; 64];
        let mut last = None;
        for socket in &self.sockets {
            while let Ok((_, SocketAddr::V4(from))) = socket.recv_from(&mut buffer) {
                last = Some(*from.ip());
            }
        }
        last
    }
}

fn set_receive_buffer(socket: &UdpSocket, bytes: libc::c_int) -> std::io::Result<()> {
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The source ports thread `index` of `threads` binds.
pub(super) fn thread_ports(index: usize, threads: usize) -> Range<u16> {
    let total = usize::from(SOURCE_PORTS.end - SOURCE_PORTS.start);
    let share = total / threads;
    let start = usize::from(SOURCE_PORTS.start) + index * share;
    start as u16..(start + share) as u16
}

/// The MAC address of `interface` in `netns`.
fn mac_address(netns: &Netns, interface: &str) -> anyhow::Result<[u8; 6]> {
    let output = netns.ip(&["-j", "link", "show", "dev", interface]);
    ensure!(output.status.success(), "ip link show {interface} failed");
    let links: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let text = links[0]["address"]
        .as_str()
        .with_context(|| format!("no address for {interface}"))?;
    let bytes: Vec<u8> = text
        .split(':')
        .map(|byte| u8::from_str_radix(byte, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{interface}: not a MAC address: {text}"))
}

/// Frames the generator may have on their way (sent, not yet arrived at
/// the external host) before it waits. Frames beyond what the node keeps up
/// with would only queue in the per-CPU backlog (`netdev_max_backlog`,
/// 1,000) that the node's forwarded packets share, and crowd those out once
/// it is full: the generator would then measure its own overload, not the
/// contender. Well below the backlog, and still deeper than the 64 frames a
/// NAPI poll takes at once.
const IN_FLIGHT: u64 = 512;
/// How long a sender waits for arrivals before it counts the missing frames
/// as lost and sends on (a dropped frame never arrives). Long: the slowest
/// contender, ip-masq-agent's chain at 100k CIDRs, forwards a frame about
/// every millisecond, and a sender that gave up sooner would flood it.
const LOST_AFTER: Duration = Duration::from_millis(250);

/// How long the first frames on their way may take to come through.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Generator threads writing frames onto the pod's interface, paced by the
/// arrivals at the external host.
struct Generator {
    stop: Arc<AtomicBool>,
    /// Frames sent so far, one counter per thread (each written by its
    /// thread only, so no cache line bounces between them per flow).
    sent: Vec<Arc<AtomicU64>>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
    /// Distinct port pairs over all threads: frames past it repeat a pair.
    pairs: u64,
}

/// What the senders share: every thread's count, and the external host's
/// `net/snmp`, opened inside its namespace (the file stays bound to it), to
/// read its arrivals from (`None`: unpaced).
struct Pace {
    sent: Vec<Arc<AtomicU64>>,
    arrivals: Option<std::fs::File>,
    /// The external host's count when the generator started.
    start: u64,
}

impl Pace {
    fn arrived(file: &std::fs::File) -> Option<u64> {
        use std::os::unix::fs::FileExt as _;
        let mut buffer = [0u8; 4096];
        let read = file.read_at(&mut buffer, 0).ok()?;
        counters::parse_udp_arrivals(std::str::from_utf8(&buffer[..read]).ok()?)
    }

    /// Waits while too many frames are on their way.
    fn wait(&self, stop: &AtomicBool) {
        let Some(file) = &self.arrivals else {
            return;
        };
        let started = Instant::now();
        loop {
            let sent: u64 = self.sent.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            let arrived = Self::arrived(file).map_or(0, |n| n.saturating_sub(self.start));
            if sent.saturating_sub(arrived) < IN_FLIGHT
                || stop.load(Ordering::Relaxed)
                || started.elapsed() > LOST_AFTER
            {
                return;
            }
            std::thread::yield_now();
        }
    }
}

impl Generator {
    /// Starts `threads` senders; with `paced_by`, they read the arrivals in
    /// that (external) namespace and keep at most [`IN_FLIGHT`] frames on
    /// their way.
    fn start(
        bed: &Bed,
        destination: Ipv4Addr,
        threads: usize,
        paced_by: Option<&Netns>,
    ) -> anyhow::Result<Self> {
        let pod = &bed.lab.pods[0];
        let source = match pod.ipv4 {
            std::net::IpAddr::V4(address) => address,
            std::net::IpAddr::V6(_) => anyhow::bail!("the pod has an IPv4 address"),
        };
        let addresses = Addresses {
            source_mac: mac_address(&pod.netns, "eth0")?,
            gateway_mac: mac_address(&bed.lab.node, &pod.host_interface)?,
            source,
            destination,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let sent: Vec<Arc<AtomicU64>> = (0..threads).map(|_| Arc::default()).collect();
        let pairs = (0..threads)
            .map(|index| PortWalk::new(thread_ports(index, threads), SINK_PORTS).len() as u64)
            .sum();
        let mut handles: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();
        let arrivals = paced_by
            .map(|external| external.enter(|| std::fs::File::open("/proc/thread-self/net/snmp")))
            .transpose()
            .context("open the external host's net/snmp")?;
        let start = match &arrivals {
            Some(file) => Pace::arrived(file).context("read the external host's net/snmp")?,
            None => 0,
        };
        let pace = Arc::new(Pace {
            sent: sent.clone(),
            arrivals,
            start,
        });
        for index in 0..threads {
            let stop = Arc::clone(&stop);
            let sent = Arc::clone(&sent[index]);
            let pace = Arc::clone(&pace);
            let path = pod.netns.path();
            let walk = PortWalk::new(thread_ports(index, threads), SINK_PORTS);
            handles.push(std::thread::spawn(move || {
                enter_netns(&path);
                let injector = Injector::open("eth0")?;
                send_flows(&stop, &sent, &pace, &injector, &addresses, walk);
                Ok(())
            }));
        }
        Ok(Self {
            stop,
            sent,
            threads: handles,
            pairs,
        })
    }

    fn sent(&self) -> u64 {
        self.sent.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("generator thread")?;
        }
        Ok(())
    }
}

/// Batches of frames, each with the walk's next port pair, until told to
/// stop.
fn send_flows(
    stop: &AtomicBool,
    counter: &AtomicU64,
    pace: &Pace,
    injector: &Injector,
    addresses: &Addresses,
    mut walk: PortWalk,
) {
    let mut sent = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        pace.wait(stop);
        batch.clear();
        batch.extend(
            walk.by_ref()
                .take(BATCH)
                .map(|(source, destination)| udp_frame(addresses, source, destination)),
        );
        sent += injector.send_batch(&batch) as u64;
        counter.store(sent, Ordering::Relaxed);
    }
}

/// The generator's own ceiling: frames per second it writes when the node
/// drops each one at the ingress of the pod's interface (an nftables
/// netdev hook, before conntrack or routing), so nothing downstream slows
/// it.
pub(super) fn generator_ceiling(bed: &Bed, window: Window, threads: usize) -> anyhow::Result<f64> {
    let interface = &bed.lab.pods[0].host_interface;
    let table = format!(
        "table netdev bench_ceiling {{\n  chain ingress {{\n    type filter hook ingress device \"{interface}\" priority 0; policy accept;\n    udp dport {}-{} drop\n  }}\n}}\n",
        SINK_PORTS.start,
        SINK_PORTS.end - 1
    );
    let mut child = super::node::command_in(&bed.lab.node, "nft")?
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("spawn nft")?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, table.as_bytes())?;
    ensure!(
        child.wait()?.success(),
        "nft could not add the ceiling's drop"
    );
    let measured = (|| -> anyhow::Result<f64> {
        let generator = Generator::start(bed, Bed::destination(), threads, None)?;
        std::thread::sleep(window.warmup);
        let before = generator.sent();
        let started = Instant::now();
        std::thread::sleep(window.length);
        let sent = generator.sent() - before;
        let elapsed = started.elapsed();
        generator.stop()?;
        Ok(sent as f64 / elapsed.as_secs_f64())
    })();
    let removed = super::node::command_in(&bed.lab.node, "nft")?
        .args(["delete", "table", "netdev", "bench_ceiling"])
        .status()?;
    ensure!(removed.success(), "nft could not remove the ceiling's drop");
    measured
}

/// Measures `contender`, already active on `bed`.
pub(super) fn measure(
    bed: &Bed,
    sink: &Sink,
    contender: Contender,
    (round, seq): (usize, usize),
    window: Window,
    threads: usize,
    bpf_stats: bool,
) -> anyhow::Result<FlowSample> {
    bed.flush_conntrack()?;
    sink.drain();
    let stats = bpf_stats.then(bpfstats::enable).transpose()?;
    let read_bpf = || stats.as_ref().map(|_| bpfstats::read(bed)).transpose();
    let arrivals_at_start = counters::udp_arrivals(&bed.lab.external)?;
    let generator = Generator::start(bed, Bed::destination(), threads, Some(&bed.lab.external))?;
    // The window opens once the first frames on their way have come
    // through: before, a slow contender (one frame a millisecond) has
    // processed frames whose forwarded copies still queue behind later
    // frames in the node's backlog, and its arrivals would lag its new
    // conntrack entries by the whole queue.
    let drained = lab::wait_until(DRAIN_TIMEOUT, || {
        counters::udp_arrivals(&bed.lab.external)
            .is_ok_and(|now| now - arrivals_at_start >= IN_FLIGHT)
    });
    ensure!(
        drained,
        "{contender}: fewer than {IN_FLIGHT} frames arrived within {DRAIN_TIMEOUT:?}"
    );
    std::thread::sleep(window.warmup);
    let sent_before = generator.sent();
    let bpf_before = read_bpf();
    let arrivals_before = counters::udp_arrivals(&bed.lab.external);
    let conntrack_before = counters::conntrack_stats(&bed.lab.node);
    let started = Instant::now();
    std::thread::sleep(window.length);
    let sent_after = generator.sent();
    let arrivals_after = counters::udp_arrivals(&bed.lab.external);
    let conntrack_after = counters::conntrack_stats(&bed.lab.node);
    let bpf_after = read_bpf();
    let elapsed = started.elapsed();
    let pairs = generator.pairs;
    generator.stop()?;
    ensure!(
        sent_after < pairs,
        "{contender}: {sent_after} frames repeat some of the generator's {pairs} port pairs; shorten the window"
    );
    drop(stats);
    let seen_source = sink.drain();
    let flows = arrivals_after? - arrivals_before?;
    let sent = sent_after - sent_before;
    let conntrack: ConntrackStats = conntrack_after?.since(&conntrack_before?);
    let bpf = match (bpf_before?, bpf_after?) {
        (Some(before), Some(after)) => Some(after.since(&before)),
        _ => None,
    };
    ensure!(
        sent > 0 && flows > 0,
        "{contender}: no flow arrived ({sent} sent)"
    );
    Ok(FlowSample {
        contender,
        round,
        seq,
        flows_per_second: flows as f64 / elapsed.as_secs_f64(),
        flows,
        sent,
        new_entries_per_flow: conntrack.entries as f64 / flows as f64,
        conntrack_drops: conntrack.drop + conntrack.early_drop + conntrack.insert_failed,
        seen_source,
        bpf,
    })
}

/// Checks a sample against what the contender must do to the flows, and
/// that the flows were new connections: the conntrack table grew by about
/// one entry per flow (the two counters are read a moment apart, hence the
/// margin).
pub(super) fn check_sample(
    sample: &FlowSample,
    pod: Ipv4Addr,
    node: Ipv4Addr,
) -> anyhow::Result<()> {
    ensure!(
        (0.8..1.2).contains(&sample.new_entries_per_flow),
        "{}: {:.3} new conntrack entries per flow; the flows were not all new connections",
        sample.contender,
        sample.new_entries_per_flow
    );
    // A few clash on insertion when two CPUs pick the same masquerade port
    // at once (counted as insert_failed); more would mean a full table,
    // which measures the drops, not the contender.
    ensure!(
        sample.conntrack_drops * 1000 <= sample.flows,
        "{}: conntrack dropped {} of {} flows",
        sample.contender,
        sample.conntrack_drops,
        sample.flows
    );
    let expected = if sample.contender.masquerades() {
        node
    } else {
        pod
    };
    let seen = sample
        .seen_source
        .context("the sink received nothing to check")?;
    ensure!(
        seen == expected,
        "{}: flows arrived from {seen}, expected {expected}",
        sample.contender
    );
    Ok(())
}

/// The order of one round: the other contenders rotated by `round`, so
/// that none always goes first, each followed at once by bare MASQUERADE,
/// the reference its ratio is taken against. Load on a shared machine
/// drifts within seconds; a reference measured right next to each
/// contender cancels most of that drift out of the ratio.
pub(super) fn schedule(contenders: &[Contender], round: usize) -> Vec<Contender> {
    let mut others: Vec<Contender> = contenders
        .iter()
        .copied()
        .filter(|c| *c != Contender::Masquerade)
        .collect();
    if !others.is_empty() {
        let by = round % others.len();
        others.rotate_left(by);
    }
    let reference = contenders.contains(&Contender::Masquerade);
    others
        .into_iter()
        .flat_map(|c| std::iter::once(c).chain(reference.then_some(Contender::Masquerade)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_split_the_port_range_without_overlap() {
        let a = thread_ports(0, 2);
        let b = thread_ports(1, 2);
        assert_eq!(a.start, 1024);
        assert_eq!(a.end, b.start);
        assert_eq!(b.end, 65_534, "the last port of the range stays unused");
        assert!(a.len() > 30_000);
    }

    #[test]
    fn every_contender_is_followed_by_the_reference_and_rounds_rotate() {
        use Contender::{Chain as B, IpMasq as C, Masquerade as M, None as A};
        let all = [A, M, B, C];
        assert_eq!(schedule(&all, 0), [A, M, B, M, C, M]);
        assert_eq!(schedule(&all, 1), [B, M, C, M, A, M]);
        assert_eq!(schedule(&all, 3), schedule(&all, 0));
        assert_eq!(schedule(&[A, B], 0), [A, B], "no reference, no pairing");
    }

    #[test]
    fn a_sample_must_show_the_contenders_source() {
        let pod = Ipv4Addr::new(10, 244, 1, 10);
        let node = Ipv4Addr::new(192, 0, 2, 1);
        let mut sample = FlowSample {
            contender: Contender::IpMasq,
            round: 0,
            seq: 0,
            flows_per_second: 1.0,
            flows: 1,
            sent: 1,
            new_entries_per_flow: 1.0,
            conntrack_drops: 0,
            seen_source: Some(node),
            bpf: None,
        };
        assert!(check_sample(&sample, pod, node).is_ok());
        sample.seen_source = Some(pod);
        assert!(check_sample(&sample, pod, node).is_err());
        sample.contender = Contender::None;
        assert!(check_sample(&sample, pod, node).is_ok());
        sample.new_entries_per_flow = 0.0;
        assert!(
            check_sample(&sample, pod, node).is_err(),
            "flows that made no conntrack entry were not measured as new flows"
        );
    }
}

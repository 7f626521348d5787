//! Reliability promises, proved on the real kernel under load: config
//! reloads and an agent crash never mis-NAT a connection, interference by
//! someone else is repaired at the next resync, and a second agent refuses
//! to share the pins. Each test prints its figures. Needs root.
//!
//! Load comes from [`lab::load`]: both pods open new TCP connections back
//! to back to an external address inside a non-masquerade range and to one
//! outside, and the external host tallies the source address of each.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lab::{
    Agent, Lab, LabOptions,
    agent::dump_maps as dump,
    load::{ClientReport, ConnectLoop, SourceTally},
    topology::{EXTERNAL_INSIDE_V4, EXTERNAL_OUTSIDE_V4, NODE_UPLINK_V4},
    wait_until,
};

/// The load tests each keep both cores busy; they run one at a time so that
/// each loads the agent, not the others.
static MACHINE: Mutex<()> = Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    MACHINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A config with the inside destination's range and 500 other /24s; the
/// two variants share only 172.16.0.0/12. Variant 1 also adds a more
/// specific keep-source prefix over the inside destination and explicit
/// masquerade entries, one of them over the outside destination, so every
/// switch adds and removes entries around both destinations.
fn churn_config(variant: usize, extra: &str) -> String {
    let mut text = String::from("nonMasqueradeCIDRs:\n  - 172.16.0.0/12\n");
    let base = if variant == 0 { 64 } else { 72 };
    for i in 0..500 {
        text.push_str(&format!("  - 100.{}.{}.0/24\n", base + i / 256, i % 256));
    }
    if variant == 1 {
        text.push_str(
            "  - 172.16.5.0/24\nmasqueradeCIDRs:\n  - 203.0.113.0/24\n  - 172.16.200.0/24\n",
        );
    }
    text.push_str(extra);
    text
}

/// Both pods connecting to both destinations, continuously.
struct Traffic {
    inside: SourceTally,
    outside: SourceTally,
    loops: Vec<Stream>,
}

struct Stream {
    pod_ip: IpAddr,
    inside: bool,
    connections: ConnectLoop,
}

/// What [`Traffic`] saw, with the wrong decisions counted.
#[derive(Debug)]
struct TrafficReport {
    inside_total: u64,
    outside_total: u64,
    /// Inside connections the external host saw from the node IP.
    inside_masqueraded: u64,
    /// Outside connections the external host saw from a pod IP.
    outside_kept: u64,
    /// Sources that were neither the pod nor the node.
    strangers: BTreeMap<IpAddr, u64>,
    clients: Vec<(IpAddr, bool, ClientReport)>,
}

impl TrafficReport {
    fn failures(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for (_, _, report) in &self.clients {
            for (error, count) in &report.failures {
                *all.entry(error.clone()).or_default() += count;
            }
        }
        all
    }

    fn print(&self, label: &str) {
        println!(
            "{label}: inside {} connections, {} seen with the node IP; outside {} connections, {} seen with a pod IP; {} failed {:?}",
            self.inside_total,
            self.inside_masqueraded,
            self.outside_total,
            self.outside_kept,
            self.failures().values().sum::<u64>(),
            self.failures()
        );
    }

    /// Not one connection got the wrong source, on either side's account.
    fn assert_nothing_mis_natted(&self) {
        let node = ip(NODE_UPLINK_V4);
        assert_eq!(self.inside_masqueraded, 0, "{self:#?}");
        assert_eq!(self.outside_kept, 0, "{self:#?}");
        assert!(self.strangers.is_empty(), "{self:#?}");
        for (pod_ip, inside, report) in &self.clients {
            let wrong = if *inside { node } else { *pod_ip };
            assert_eq!(
                report.seen_as(wrong),
                0,
                "{pod_ip} inside={inside}: {report:?}"
            );
        }
        assert!(
            self.failures().is_empty(),
            "connections failed: {:?}",
            self.failures()
        );
    }
}

impl Traffic {
    fn start(lab: &Lab) -> Self {
        let inside =
            SourceTally::start(&lab.external, ip(EXTERNAL_INSIDE_V4)).expect("listen inside");
        let outside =
            SourceTally::start(&lab.external, ip(EXTERNAL_OUTSIDE_V4)).expect("listen outside");
        let mut loops = Vec::new();
        for pod in &lab.pods {
            for (is_inside, target) in [(true, inside.address()), (false, outside.address())] {
                loops.push(Stream {
                    pod_ip: pod.ipv4,
                    inside: is_inside,
                    connections: ConnectLoop::start(&pod.netns, target),
                });
            }
        }
        let traffic = Self {
            inside,
            outside,
            loops,
        };
        assert!(
            wait_until(Duration::from_secs(10), || traffic
                .loops
                .iter()
                .all(|stream| stream.connections.completed() >= 20)),
            "load did not start flowing: {:?}",
            traffic
                .loops
                .iter()
                .map(|s| s.connections.report())
                .collect::<Vec<_>>()
        );
        traffic
    }

    /// Connections completed so far, all streams together.
    fn completed(&self) -> u64 {
        self.loops.iter().map(|s| s.connections.completed()).sum()
    }

    fn finish(self) -> TrafficReport {
        let Self {
            inside,
            outside,
            loops,
        } = self;
        let clients: Vec<_> = loops
            .into_iter()
            .map(|stream| (stream.pod_ip, stream.inside, stream.connections.stop()))
            .collect();
        let node = ip(NODE_UPLINK_V4);
        let pods: BTreeSet<IpAddr> = clients.iter().map(|(pod, _, _)| *pod).collect();
        let inside_counts = inside.counts();
        let outside_counts = outside.counts();
        let strangers = inside_counts
            .iter()
            .chain(&outside_counts)
            .filter(|(source, _)| **source != node && !pods.contains(source))
            .map(|(source, count)| (*source, *count))
            .collect();
        TrafficReport {
            inside_total: inside_counts.values().sum(),
            outside_total: outside_counts.values().sum(),
            inside_masqueraded: inside_counts.get(&node).copied().unwrap_or(0),
            outside_kept: pods
                .iter()
                .map(|pod| outside_counts.get(pod).copied().unwrap_or(0))
                .sum(),
            strangers,
            clients,
        }
    }
}

/// Polls `ip-masq dump` on a thread and records every poll whose result
/// differs from `expected` (a failure, an empty or a partial map).
struct DumpWatcher {
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl DumpWatcher {
    fn start(pin_dir: PathBuf, expected: BTreeSet<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let polls = Arc::clone(&polls);
            std::thread::spawn(move || {
                let mut deviations = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match dump(&pin_dir) {
                        Ok(entries) if entries == expected => {}
                        Ok(entries) => deviations.push(format!(
                            "{} entries instead of {}",
                            entries.len(),
                            expected.len()
                        )),
                        Err(err) => deviations.push(err),
                    }
                    polls.fetch_add(1, Ordering::Relaxed);
                }
                deviations
            })
        };
        Self {
            stop,
            polls,
            thread: Some(thread),
        }
    }

    fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    /// Stops and returns (polls, deviations).
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let deviations = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("dump watcher");
        (self.polls(), deviations)
    }
}

impl Drop for DumpWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Kernel id of the map pinned at `pin`: the same id means the same map.
fn map_id(pin: &Path) -> u32 {
    aya::maps::MapInfo::from_pin(pin)
        .unwrap_or_else(|err| panic!("map pinned at {}: {err}", pin.display()))
        .id()
}

/// Kernel ids of the pinned maps: the same ids mean the same maps.
fn map_ids(pin_dir: &Path) -> Vec<u32> {
    ["NON_MASQ_V4", "NON_MASQ_V6", "STATS"]
        .iter()
        .map(|name| map_id(&pin_dir.join(name)))
        .collect()
}

/// Kernel id of the link pinned at `pin`, if a link is pinned there.
fn try_link_id(pin: &Path) -> Option<u32> {
    let link = aya::programs::links::PinnedLink::from_pin(pin).ok()?;
    Some(aya::programs::links::FdLink::from(link).info().ok()?.id())
}

/// Kernel id of the link pinned at `pin`.
fn link_id(pin: &Path) -> u32 {
    let link = aya::programs::links::PinnedLink::from_pin(pin)
        .unwrap_or_else(|err| panic!("link pinned at {}: {err}", pin.display()));
    aya::programs::links::FdLink::from(link)
        .info()
        .unwrap_or_else(|err| panic!("link info of {}: {err}", pin.display()))
        .id()
}

/// Whether the kernel still has a link with this id.
fn link_exists(id: u32) -> bool {
    Command::new("bpftool")
        .args(["link", "show", "id", &id.to_string()])
        .output()
        .expect("run bpftool")
        .status
        .success()
}

/// Interface index of `interface` in the node namespace.
fn ifindex(lab: &Lab, interface: &str) -> u32 {
    let name = std::ffi::CString::new(interface).expect("interface name");
    // SAFETY: a valid NUL-terminated name; runs on a thread in the namespace.
    let index = lab
        .node
        .enter(move || unsafe { libc::if_nametoindex(name.as_ptr()) });
    assert_ne!(index, 0, "no interface {interface} in the node namespace");
    index
}

fn link_pin(lab: &Lab, interface: &str) -> PathBuf {
    lab.bpffs
        .pin_dir()
        .join("links")
        .join(format!("tcx_ingress_{}", ifindex(lab, interface)))
}

/// The pods' host-side veths, which the default selector takes; not the
/// uplink, a veth too, which holds the default route.
fn veths(lab: &Lab) -> Vec<String> {
    lab.pods
        .iter()
        .map(|pod| pod.host_interface.clone())
        .collect()
}

/// Exactly one classifier on every veth.
fn assert_one_attachment_each(lab: &Lab) {
    for interface in veths(lab) {
        assert_eq!(
            lab.node.tcx_ingress_programs(&interface),
            ["ipmasq_classify"],
            "exactly one attachment on {interface}"
        );
    }
    assert_eq!(
        lab.node.tcx_ingress_programs("uplink0"),
        Vec::<String>::new(),
        "the uplink holds the default route"
    );
}

/// Kernel ids of the links pinned for every veth, in [`veths`] order.
fn link_ids(lab: &Lab) -> Vec<u32> {
    veths(lab)
        .iter()
        .map(|interface| link_id(&link_pin(lab, interface)))
        .collect()
}

/// One connection per pod and destination sees the expected source.
fn assert_classified(lab: &Lab) {
    let node = ip(NODE_UPLINK_V4);
    for pod in &lab.pods {
        assert_eq!(lab.observed_source(pod, ip(EXTERNAL_INSIDE_V4)), pod.ipv4);
        assert_eq!(lab.observed_source(pod, ip(EXTERNAL_OUTSIDE_V4)), node);
    }
}

/// How long a change may take to show: generous, since tests run in
/// parallel on a small machine. Tests print how long it did take.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The restarted agent read the maps back and wrote nothing: its first
/// reload added and removed no entry, and `entries` entries are in force.
fn assert_restart_wrote_nothing(agent: &Agent, entries: usize) {
    let state = agent.wait_state("the first reload", CHANGE_TIMEOUT, |state| {
        state["lastReload"]["result"] == "applied"
    });
    assert_eq!(
        (
            &state["lastReload"]["added"],
            &state["lastReload"]["removed"]
        ),
        (&0.into(), &0.into()),
        "the restart rewrote the maps: {state:#}"
    );
    assert_eq!(state["mapEntries"]["ipv4"], entries, "{state:#}");
}

#[test]
#[ignore = "needs root"]
fn reloads_under_load_lose_nothing() {
    const RELOADS: usize = 200;
    let _exclusive = exclusive();
    let lab = Lab::new(LabOptions::default());
    lab.write_config(&churn_config(0, ""));
    let agent = lab.start_agent(&[]);
    let traffic = Traffic::start(&lab);

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for round in 1..=RELOADS {
        let written = Instant::now();
        lab.write_config(&churn_config(round % 2, ""));
        agent.wait_reloads_succeeded(round as u64 + 1, CHANGE_TIMEOUT);
        slowest = slowest.max(written.elapsed());
    }
    let elapsed = started.elapsed();
    let report = traffic.finish();

    println!(
        "{RELOADS} reloads (about 1000 map writes each) in {elapsed:.1?}, slowest write-to-applied {slowest:.0?}"
    );
    report.print("during the reloads");
    let state = agent.state().expect("state file");
    assert_eq!(state["reloadsSucceeded"], RELOADS + 1, "{state:#}");
    assert_eq!(state["reloadsFailed"], 0, "{state:#}");
    assert_eq!(state["mapWriteFailures"], 0, "{state:#}");
    report.assert_nothing_mis_natted();
    assert!(
        report.inside_total >= 1000 && report.outside_total >= 1000,
        "too little load to prove anything: {report:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn crash_under_load_loses_nothing() {
    /// How long the agent stays dead: the scenario, not a synchronisation.
    const DOWNTIME: Duration = Duration::from_secs(5);
    let _exclusive = exclusive();
    let lab = Lab::new(LabOptions::default());
    let pin_dir = lab.bpffs.pin_dir();
    lab.write_config(&churn_config(1, ""));
    let mut agent = lab.start_agent(&[]);

    let expected = dump(&pin_dir).expect("dump before the crash");
    let maps = map_ids(&pin_dir);
    let links = link_ids(&lab);

    let traffic = Traffic::start(&lab);
    let watcher = DumpWatcher::start(pin_dir.clone(), expected.clone());
    assert!(wait_until(CHANGE_TIMEOUT, || watcher.polls() >= 3));

    let status = agent
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
        .expect("agent dies on SIGKILL");
    assert_eq!(status.code(), None, "killed by a signal: {status:?}");
    let killed = Instant::now();
    let (completed_at_kill, polls_at_kill) = (traffic.completed(), watcher.polls());
    std::thread::sleep(DOWNTIME);
    let completed_while_down = traffic.completed() - completed_at_kill;
    let polls_while_down = watcher.polls() - polls_at_kill;

    let restarted = lab.start_agent(&[]);
    let down_for = killed.elapsed();
    let restarted_at = traffic.completed();
    assert!(
        wait_until(CHANGE_TIMEOUT, || traffic.completed() >= restarted_at + 200),
        "load stalled after the restart"
    );
    let (polls, deviations) = watcher.finish();
    let report = traffic.finish();

    println!(
        "agent down {down_for:.1?}: {completed_while_down} connections completed and {polls_while_down} map dumps taken while it was down"
    );
    report.print("across the crash and restart");
    println!(
        "{polls} dumps of the {} map entries, {} deviations",
        expected.len(),
        deviations.len()
    );
    report.assert_nothing_mis_natted();
    assert!(completed_while_down >= 200, "too little load while down");
    assert!(polls_while_down >= 10, "too few dumps while down");
    assert!(
        deviations.is_empty(),
        "the maps were not whole at every poll: {deviations:?}"
    );

    // The restart read the maps back and wrote nothing.
    assert_restart_wrote_nothing(&restarted, expected.len());
    // Same maps, same links (adopted, not recreated), one attachment each.
    assert_eq!(map_ids(&pin_dir), maps, "the same maps, not new ones");
    assert_eq!(link_ids(&lab), links, "links adopted, not recreated");
    assert_one_attachment_each(&lab);
    assert_eq!(dump(&pin_dir).expect("dump after restart"), expected);
}

/// `GET /metrics` from inside the node namespace.
fn scrape(lab: &Lab, address: SocketAddr) -> String {
    lab.node.enter(move || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
            .unwrap_or_else(|err| panic!("connect to {address}: {err}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: ip-masq\r\n\r\n")
            .expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        assert!(response.starts_with("HTTP/1."), "{response}");
        response
    })
}

/// The value of one sample, e.g. `ip_masq_repairs_total{kind="chain"}`.
fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap_or_else(|err| panic!("{series}: {err}"))
}

fn repairs(metrics: &str, kind: &str) -> u64 {
    sample(
        metrics,
        &format!("ip_masq_repairs_total{{kind=\"{kind}\"}}"),
    )
}

/// One act of interference and what repairing it must look like.
struct Interference<'a> {
    what: &'static str,
    /// Warning the repair must log: how an operator learns of it.
    logged: &'static str,
    /// Repair counters it must raise.
    kinds: &'static [&'static str],
    interfere: Box<dyn Fn() + 'a>,
    /// Whether everything is back.
    repaired: Box<dyn Fn() -> bool + 'a>,
}

/// The state file's key for a `kind` label of `ip_masq_repairs_total`.
fn repair_key(kind: &str) -> String {
    let mut key = String::new();
    let mut upper = false;
    for c in kind.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            key.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            key.push(c);
        }
    }
    key
}

/// With `resyncInterval: 1s`, each act of interference is repaired by the
/// agent on its own (nothing else in the test would repair it), logged and
/// counted. How long each took is printed; the deadline is generous, so the
/// outcome is what is asserted.
#[test]
#[ignore = "needs root"]
fn interference_is_repaired_at_the_next_resync() {
    /// The resync interval the test config asks for.
    const RESYNC: Duration = Duration::from_secs(1);
    let metrics_address: SocketAddr = "127.0.0.1:9483".parse().unwrap();
    let _exclusive = exclusive();
    let lab = Lab::new(LabOptions::default());
    let pin_dir = lab.bpffs.pin_dir();
    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12]\nresyncInterval: 1s\n");
    let agent = lab.start_agent(&["--metrics-address", &metrics_address.to_string()]);
    let nat = || lab.node.iptables_save("iptables", "nat");
    let rules = nat();
    let entries = dump(&pin_dir).expect("dump");
    let v4_map = pin_dir.join("NON_MASQ_V4");
    let v4_map_id = map_id(&v4_map);
    let routed = &lab.pods[0].host_interface;
    let bridged = &lab.pods[1].host_interface;
    let routed_link = link_id(&link_pin(&lab, routed));
    let bridged_link = link_id(&link_pin(&lab, bridged));

    let cases = [
        Interference {
            what: "iptables -t nat -F",
            logged: "masquerade chain was missing or changed by someone",
            kinds: &["chain", "jump"],
            interfere: Box::new(|| {
                lab.node.exec_ok("iptables", &["-w", "-t", "nat", "-F"]);
            }),
            repaired: Box::new(|| nat() == rules),
        },
        Interference {
            what: "our chain deleted (jump, flush, delete)",
            logged: "POSTROUTING jump was missing or duplicated",
            kinds: &["chain", "jump"],
            interfere: Box::new(|| {
                let jump = nat()
                    .lines()
                    .find(|line| {
                        line.starts_with("-A POSTROUTING") && line.ends_with("-j IP-MASQ-AGENT")
                    })
                    .expect("our jump")
                    .to_owned();
                let delete = format!("iptables -w -t nat {}", jump.replacen("-A ", "-D ", 1));
                lab.node.exec_ok("sh", &["-c", &delete]);
                lab.node
                    .exec_ok("iptables", &["-w", "-t", "nat", "-F", "IP-MASQ-AGENT"]);
                lab.node
                    .exec_ok("iptables", &["-w", "-t", "nat", "-X", "IP-MASQ-AGENT"]);
            }),
            repaired: Box::new(|| nat() == rules),
        },
        Interference {
            what: "link pin removed (detaches the classifier)",
            logged: "classifier was detached by someone",
            kinds: &["link"],
            interfere: Box::new(|| {
                std::fs::remove_file(link_pin(&lab, routed)).expect("remove link pin");
            }),
            // The kernel releases the unpinned link (detaching it) on its
            // own time, and the agent may re-attach at once: what proves
            // both is that the old link is gone and a new one serves.
            repaired: Box::new(|| {
                !link_exists(routed_link)
                    && try_link_id(&link_pin(&lab, routed)).is_some_and(|id| id != routed_link)
                    && lab.node.tcx_ingress_programs(routed) == ["ipmasq_classify"]
            }),
        },
        Interference {
            what: "bpftool link detach",
            logged: "classifier was detached by someone",
            kinds: &["link"],
            interfere: Box::new(|| {
                lab::netns::run_ok(
                    "bpftool",
                    &["link", "detach", "id", &bridged_link.to_string()],
                );
            }),
            repaired: Box::new(|| {
                try_link_id(&link_pin(&lab, bridged)).is_some_and(|id| id != bridged_link)
                    && lab.node.tcx_ingress_programs(bridged) == ["ipmasq_classify"]
            }),
        },
        Interference {
            what: "map pin removed",
            logged: "pin was removed by someone; pinned again pin=Map(\"NON_MASQ_V4\")",
            kinds: &["map_pin"],
            interfere: Box::new(|| std::fs::remove_file(&v4_map).expect("remove map pin")),
            repaired: Box::new(|| v4_map.exists()),
        },
        Interference {
            what: "xt_bpf program pin removed",
            logged: "pin was removed by someone; pinned again pin=Program(",
            kinds: &["program_pin"],
            interfere: Box::new(|| {
                std::fs::remove_file(pin_dir.join("xt_bpf_v4")).expect("remove program pin");
            }),
            repaired: Box::new(|| pin_dir.join("xt_bpf_v4").exists()),
        },
    ];

    for interference in &cases {
        let before = scrape(&lab, metrics_address);
        let counted_before = agent.state().expect("state file")["repairs"].clone();
        let logged_before = agent.count_in_log(interference.logged);
        (interference.interfere)();
        let started = Instant::now();
        assert!(
            wait_until(CHANGE_TIMEOUT, &interference.repaired),
            "{} not repaired within {CHANGE_TIMEOUT:?} (resync {RESYNC:?}):\n{}",
            interference.what,
            agent.log()
        );
        let took = started.elapsed();
        println!(
            "{}: repaired in {} ms (resync interval {RESYNC:?})",
            interference.what,
            took.as_millis()
        );
        // The state file is written at the end of the loop turn that
        // repaired, after the turn's warnings.
        agent.wait_state(
            &format!("the {:?} repairs counted", interference.kinds),
            CHANGE_TIMEOUT,
            |state| {
                interference.kinds.iter().all(|kind| {
                    let key = repair_key(kind);
                    state["repairs"][&key].as_u64() > counted_before[&key].as_u64()
                })
            },
        );
        assert!(
            agent.count_in_log(interference.logged) > logged_before,
            "{}: no {:?} warning:\n{}",
            interference.what,
            interference.logged,
            agent.log()
        );
        // And `/metrics` counts them too.
        assert!(
            wait_until(CHANGE_TIMEOUT, || {
                let after = scrape(&lab, metrics_address);
                interference
                    .kinds
                    .iter()
                    .all(|kind| repairs(&after, kind) > repairs(&before, kind))
            }),
            "{}: repair counters {:?} did not rise:\n{}",
            interference.what,
            interference.kinds,
            scrape(&lab, metrics_address)
        );
        assert_eq!(nat(), rules, "{}: rules", interference.what);
        assert_one_attachment_each(&lab);
        assert_eq!(
            dump(&pin_dir).expect("dump"),
            entries,
            "{}",
            interference.what
        );
        assert_classified(&lab);
    }
    // The map pin was put back from the agent's own fd: the same map.
    assert_eq!(map_id(&v4_map), v4_map_id);
    let metrics = scrape(&lab, metrics_address);
    println!(
        "repair counters: {}",
        ["chain", "jump", "link", "map_pin", "program_pin"]
            .map(|kind| format!("{kind}={}", repairs(&metrics, kind)))
            .join(" ")
    );
}

#[test]
#[ignore = "needs root"]
fn second_agent_on_the_same_pins_refuses_and_the_first_is_unaffected() {
    let lab = Lab::new(LabOptions::default());
    let pin_dir = lab.bpffs.pin_dir();
    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12]\n");
    let mut first = lab.start_agent(&[]);
    let rules = lab.node.iptables_save("iptables", "nat");
    let entries = dump(&pin_dir).expect("dump");
    let maps = map_ids(&pin_dir);
    let links = link_ids(&lab);
    let first_state = first.state().expect("state file");
    let first_log = first.log();

    for attempt in 0..2 {
        let spawned = Instant::now();
        let mut second = lab.agent(&[]).spawn();
        let status = second
            .wait_exit(Duration::from_secs(30))
            .expect("second agent exits");
        let refused_in = spawned.elapsed();
        assert_eq!(status.code(), Some(2), "attempt {attempt}");
        let log = second.log();
        assert!(
            log.contains("another ip-masq agent already runs on pin directory")
                && log.contains(pin_dir.to_str().unwrap()),
            "{log}"
        );
        assert_eq!(
            log.lines().filter(|l| l.contains("error")).count(),
            1,
            "{log}"
        );
        println!(
            "second agent refused in {} ms with exit code 2: {}",
            refused_in.as_millis(),
            log.trim()
        );
    }

    // The first agent did not notice: same state, nothing warned about,
    // same pins, links, rules, maps.
    assert!(first.is_running());
    assert_eq!(first.state().expect("state file"), first_state);
    let logged_since = first.log()[first_log.len()..].to_owned();
    assert!(
        !logged_since.contains("WARN") && !logged_since.contains("ERROR"),
        "{logged_since}"
    );
    assert_eq!(lab.node.iptables_save("iptables", "nat"), rules);
    assert_eq!(dump(&pin_dir).expect("dump"), entries);
    assert_eq!(map_ids(&pin_dir), maps);
    assert_eq!(link_ids(&lab), links);
    assert_one_attachment_each(&lab);
    assert_classified(&lab);
    // And it still does its job.
    lab.write_config("nonMasqueradeCIDRs: [203.0.113.0/24]\n");
    first.wait_reloads_succeeded(2, CHANGE_TIMEOUT);
    let pod = &lab.pods[0];
    assert_eq!(lab.observed_source(pod, ip(EXTERNAL_OUTSIDE_V4)), pod.ipv4);
    assert_eq!(
        lab.observed_source(pod, ip(EXTERNAL_INSIDE_V4)),
        ip(NODE_UPLINK_V4)
    );
}

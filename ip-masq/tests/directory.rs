//! The range directory against the kernel's own LPM trie, through the
//! loaded programs (BPF_PROG_TEST_RUN): random tables, a million probes,
//! tables swapped under continuous lookups, and a restart that adopts the
//! arrays. Needs root and BPF.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{Array, LpmTrie, Map, MapData, MapError, lpm_trie::Key};
use ip_masq::{
    agent::sync,
    kernel::{
        datapath::{Datapath, LoadOptions},
        packet,
    },
    model::Family,
};
use ip_masq_common::{
    Action, MAP_DIRECTORY_V4, MAP_DIRECTORY_V6, MAP_NON_MASQ_V4, MAP_NON_MASQ_V6, MAP_RANGES_V4,
    MAP_RANGES_V6,
};
use ip_masq_config::table::Table;
use ipnet::IpNet;
use lab::Bpffs;
use rand::{Rng as _, RngCore as _, SeedableRng as _, rngs::StdRng};

fn width(ipv6: bool) -> u32 {
    if ipv6 { 128 } else { 32 }
}

fn to_ip(ipv6: bool, address: u128) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from(address))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(address).expect("32 bits")))
    }
}

fn host_bits(ipv6: bool, len: u8) -> u128 {
    let width = width(ipv6);
    let all = u128::MAX >> (128 - width);
    if u32::from(len) >= width {
        0
    } else {
        all >> len
    }
}

/// `count` prefixes of mixed lengths, both actions: drawn around a few
/// bases so that they nest (exceptions inside ranges inside ranges), with
/// full-length ones, very short ones, and sometimes /0.
fn random_table(rng: &mut StdRng, ipv6: bool, count: usize) -> Table {
    let width = width(ipv6);
    let all = u128::MAX >> (128 - width);
    let bases: Vec<u128> = (0..6).map(|_| rng.random::<u128>() & all).collect();
    let mut entries = Vec::with_capacity(count + 1);
    for _ in 0..count {
        let len = match rng.random_range(0..12) {
            0 => rng.random_range(0..u64::from(width) / 4 + 1),
            1 => u64::from(width),
            _ => u64::from(width) / 4 + rng.random_range(0..u64::from(width) * 3 / 4 + 1),
        };
        let len = u8::try_from(len).expect("at most 128");
        let base = bases[rng.random_range(0..6usize)];
        let keep_top = 8 + u32::try_from(rng.random_range(0..u64::from(width) / 2)).expect("small");
        let spread = all >> keep_top.min(width - 1);
        let address = (base & !spread) | (rng.random::<u128>() & spread);
        let network = address & !host_bits(ipv6, len);
        let action = if rng.random_range(0..3) == 0 {
            Action::Masquerade
        } else {
            Action::KeepSource
        };
        entries.push((
            IpNet::new(to_ip(ipv6, network), len).expect("valid length"),
            action,
        ));
    }
    if rng.random_range(0..2) == 0 {
        let zero = if ipv6 { "::/0" } else { "0.0.0.0/0" };
        entries.push((zero.parse().expect("literal"), Action::KeepSource));
    }
    Table::from_map_entries(entries)
}

/// The table's edges (first and last address of each prefix and the
/// addresses just outside), then random addresses, up to `count`.
fn probes(table: &Table, rng: &mut StdRng, ipv6: bool, count: usize) -> Vec<u128> {
    let all = u128::MAX >> (128 - width(ipv6));
    let mut out = vec![0, all];
    for (prefix, _) in table.iter() {
        if prefix.addr().is_ipv6() != ipv6 {
            continue;
        }
        let network = address_of(prefix.network());
        let last = network | host_bits(ipv6, prefix.prefix_len());
        out.extend([
            network,
            last,
            network.wrapping_sub(1) & all,
            last.wrapping_add(1) & all,
        ]);
    }
    let edges = out.len();
    while out.len() < count {
        // Half near an edge, half anywhere.
        let address = if rng.random_range(0..2) == 0 {
            let edge = out[usize::try_from(rng.random_range(0..edges as u64)).expect("small")];
            edge ^ (rng.random::<u128>() & u128::from(rng.next_u64() as u16))
        } else {
            rng.random::<u128>()
        };
        out.push(address & all);
    }
    out
}

fn address_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The kernel's LPM tries, opened from their pins: the reference.
struct KernelLpm {
    v4: LpmTrie<MapData, [u8; 4], u8>,
    v6: LpmTrie<MapData, [u8; 16], u8>,
}

impl KernelLpm {
    fn open(pin_dir: &Path) -> Self {
        let open = |name| MapData::from_pin(pin_dir.join(name)).expect("pinned trie");
        Self {
            v4: LpmTrie::try_from(Map::LpmTrie(open(MAP_NON_MASQ_V4))).expect("trie"),
            v6: LpmTrie::try_from(Map::LpmTrie(open(MAP_NON_MASQ_V6))).expect("trie"),
        }
    }

    fn keeps(&self, ipv6: bool, address: u128) -> bool {
        let found = if ipv6 {
            self.v6.get(&Key::new(128, address.to_be_bytes()), 0)
        } else {
            let v4 = u32::try_from(address).expect("32 bits");
            self.v4.get(&Key::new(32, v4.to_be_bytes()), 0)
        };
        match found {
            Ok(value) => value == Action::KeepSource as u8,
            Err(MapError::KeyNotFound) => false,
            Err(err) => panic!("LPM lookup: {err}"),
        }
    }
}

fn load(bpffs: &Bpffs, max_entries: u32) -> Datapath {
    Datapath::load(&LoadOptions {
        pin_dir: bpffs.pin_dir(),
        mark: ip_masq_common::DEFAULT_KEEP_SOURCE_MARK,
        max_entries,
    })
    .expect("load the programs")
}

fn apply(datapath: &mut Datapath, applied: &mut Table, desired: &Table) {
    let report = sync::apply(datapath, applied, desired).expect("fits");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.unpublished.is_none(), "{:?}", report.unpublished);
}

/// The xt_bpf filter's answer for `address`: the directory, read by the
/// kernel's program.
fn filter_keeps(datapath: &mut Datapath, ipv6: bool, address: u128) -> bool {
    let family = if ipv6 { Family::V6 } else { Family::V4 };
    let frame = packet::tcp_syn_to(to_ip(ipv6, address));
    datapath.probe_xt_bpf(family, &frame).expect("test run") != 0
}

/// The classifier's answer: whether it set the mark.
fn classifier_keeps(datapath: &mut Datapath, ipv6: bool, address: u128) -> bool {
    let frame = packet::tcp_syn_to(to_ip(ipv6, address));
    let probe = datapath.probe(&frame, 0).expect("test run");
    probe.mark == ip_masq_common::DEFAULT_KEEP_SOURCE_MARK
}

#[test]
#[ignore = "needs root"]
fn the_directory_decides_as_the_kernels_lpm_trie_for_a_million_probes() {
    let cases: [(bool, usize, usize); 7] = [
        (false, 64, 100_000),
        (false, 1_000, 150_000),
        (false, 10_000, 200_000),
        (false, 60_000, 250_000),
        (true, 64, 100_000),
        (true, 1_000, 100_000),
        (true, 10_000, 150_000),
    ];
    let mut total = 0;
    for (index, (ipv6, size, probe_count)) in cases.into_iter().enumerate() {
        let seed = 0x00d1_ff00 + index as u64;
        let mut rng = StdRng::seed_from_u64(seed);
        let table = random_table(&mut rng, ipv6, size);
        let bpffs = Bpffs::new();
        let mut datapath = load(&bpffs, 65_536);
        apply(&mut datapath, &mut Table::default(), &table);
        let lpm = KernelLpm::open(&bpffs.pin_dir());
        let mut disagreements = Vec::new();
        for (position, address) in probes(&table, &mut rng, ipv6, probe_count)
            .into_iter()
            .enumerate()
        {
            let expected = lpm.keeps(ipv6, address);
            let filter = filter_keeps(&mut datapath, ipv6, address);
            // The classifier shares the lookup; every tenth probe through it too.
            let classifier = if position % 10 == 0 {
                classifier_keeps(&mut datapath, ipv6, address)
            } else {
                filter
            };
            if filter != expected || classifier != expected {
                disagreements.push(format!(
                    "{} trie {expected} filter {filter} classifier {classifier}",
                    to_ip(ipv6, address)
                ));
            }
            total += 1;
        }
        assert!(
            disagreements.is_empty(),
            "seed {seed:#x}, {size} prefixes ({}): {} disagreements, first {:?}",
            if ipv6 { "IPv6" } else { "IPv4" },
            disagreements.len(),
            &disagreements[..disagreements.len().min(5)]
        );
    }
    assert!(total >= 1_000_000, "{total} probes");
}

#[test]
#[ignore = "needs root"]
fn lookups_during_table_swaps_see_only_the_old_or_the_new_decision() {
    const SWAPS: u64 = 40;
    let seed = 0x5a_a9;
    let mut rng = StdRng::seed_from_u64(seed);
    let ipv6 = false;
    // Tables with much in common, so that many destinations are decided
    // alike by neighbours and many are not.
    let common: Vec<Table> = (0..4)
        .map(|_| random_table(&mut rng, ipv6, 3_000))
        .collect();
    let mut tables = Vec::new();
    for index in 0..=SWAPS {
        let extra = random_table(&mut rng, ipv6, 1_500);
        let mut entries: Vec<(IpNet, Action)> = common[usize::try_from(index % 4).expect("small")]
            .iter()
            .map(|(p, e)| (*p, e.action))
            .collect();
        entries.extend(extra.iter().map(|(p, e)| (*p, e.action)));
        tables.push(Table::from_map_entries(entries));
    }
    let mut addresses = Vec::new();
    for table in &tables {
        addresses.extend(probes(table, &mut rng, ipv6, 0).into_iter().step_by(7));
    }
    addresses.sort_unstable();
    addresses.dedup();
    // The decision of every table for every address, from a reference
    // longest-prefix match over the table's entries.
    let decisions: Vec<Vec<bool>> = tables
        .iter()
        .map(|table| {
            addresses
                .iter()
                .map(|&a| reference_keeps(table, ipv6, a))
                .collect()
        })
        .collect();

    let bpffs = Bpffs::new();
    let mut writer = load(&bpffs, 65_536);
    let mut applied = Table::default();
    apply(&mut writer, &mut applied, &tables[0]);
    // A second loaded copy of the programs on the same pinned arrays, for
    // the reader thread: its load adopts them and writes nothing.
    let mut reader = load(&bpffs, 65_536);
    assert_eq!(
        reader.adopted().chunks_written,
        0,
        "the reader wrote nothing"
    );

    // Even epoch 2k: table k in force; odd 2k+1: going from k to k+1.
    let epoch = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (epoch, done, addresses) = (epoch.clone(), done.clone(), addresses.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut index = 0usize;
            while !done.load(Ordering::Acquire) {
                let address = addresses[index % addresses.len()];
                let before = epoch.load(Ordering::Acquire);
                let keeps = filter_keeps(&mut reader, ipv6, address);
                let after = epoch.load(Ordering::Acquire);
                seen.push((index % addresses.len(), before, after, keeps));
                index += 1;
            }
            seen
        })
    };
    let started = Instant::now();
    for next in 1..=SWAPS {
        epoch.store(2 * next - 1, Ordering::Release);
        apply(&mut writer, &mut applied, &tables[next as usize]);
        epoch.store(2 * next, Ordering::Release);
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Release);
    let seen = prober.join().expect("prober");
    let mut violations = Vec::new();
    let mut during_updates = 0;
    for &(slot, before, after, keeps) in &seen {
        // Tables that may have been in force at some point of the probe.
        let (first, last) = (before / 2, after.div_ceil(2));
        if before % 2 == 1 || before != after {
            during_updates += 1;
        }
        let candidates: Vec<bool> = (first..=last)
            .map(|table| decisions[table as usize][slot])
            .collect();
        if candidates.iter().all(|&d| d == candidates[0]) && keeps != candidates[0] {
            violations.push(format!(
                "{} answered {keeps} in epochs {before}..{after}, every table says {}",
                to_ip(ipv6, addresses[slot]),
                candidates[0]
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "seed {seed:#x}: {} of {} lookups decided neither way, first {:?}",
        violations.len(),
        seen.len(),
        &violations[..violations.len().min(5)]
    );
    assert!(
        during_updates > 1_000,
        "only {during_updates} lookups ran during an update in {:?}",
        started.elapsed()
    );
}

/// Longest-prefix match over a table, done the plain way.
fn reference_keeps(table: &Table, ipv6: bool, address: u128) -> bool {
    (0..=width(ipv6))
        .rev()
        .find_map(|len| {
            let len = u8::try_from(len).expect("at most 128");
            let network = address & !host_bits(ipv6, len);
            let prefix = IpNet::new(to_ip(ipv6, network), len).expect("valid");
            table
                .get(&prefix)
                .map(|entry| entry.action == Action::KeepSource)
        })
        .unwrap_or(false)
}

/// Every word of the four directory arrays, read through their pins.
fn snapshot(pin_dir: &Path) -> Vec<Vec<u64>> {
    [MAP_DIRECTORY_V4, MAP_RANGES_V4, MAP_DIRECTORY_V6]
        .iter()
        .map(|name| {
            let array: Array<MapData, u64> = Array::try_from(Map::Array(
                MapData::from_pin(pin_dir.join(name)).expect("pinned array"),
            ))
            .expect("array");
            (0..array.len())
                .map(|i| array.get(&i, 0).expect("read"))
                .collect()
        })
        .chain(std::iter::once({
            let array: Array<MapData, [u64; 2]> = Array::try_from(Map::Array(
                MapData::from_pin(pin_dir.join(MAP_RANGES_V6)).expect("pinned array"),
            ))
            .expect("array");
            (0..array.len())
                .flat_map(|i| array.get(&i, 0).expect("read"))
                .collect()
        }))
        .collect()
}

#[test]
#[ignore = "needs root"]
fn a_restart_adopts_the_directory_without_rewriting_it() {
    let mut rng = StdRng::seed_from_u64(0xad_0b7);
    let mut entries: Vec<(IpNet, Action)> = random_table(&mut rng, false, 5_000)
        .iter()
        .map(|(p, e)| (*p, e.action))
        .collect();
    entries.extend(
        random_table(&mut rng, true, 1_000)
            .iter()
            .map(|(p, e)| (*p, e.action)),
    );
    let table = Table::from_map_entries(entries);
    let bpffs = Bpffs::new();
    let mut first = load(&bpffs, 65_536);
    apply(&mut first, &mut Table::default(), &table);
    let written = snapshot(&bpffs.pin_dir());
    drop(first);

    let mut second = load(&bpffs, 65_536);
    assert_eq!(
        second.adopted(),
        Default::default(),
        "the restart wrote into the directory"
    );
    // The agent's restart path: the record read back, then the same table.
    let mut applied = Table::from_map_entries(table.iter().map(|(p, e)| (*p, e.action)));
    let report = sync::apply(&mut second, &mut applied, &table).expect("fits");
    assert_eq!(report.published, Default::default(), "nothing to publish");
    assert_eq!(snapshot(&bpffs.pin_dir()), written, "arrays changed");

    // An agent from before the directory left only the LPM record: the
    // next load builds the directory from it before anything decides.
    drop(second);
    for name in [
        MAP_DIRECTORY_V4,
        MAP_RANGES_V4,
        MAP_DIRECTORY_V6,
        MAP_RANGES_V6,
    ] {
        std::fs::remove_file(bpffs.pin_dir().join(name)).expect("unpin");
    }
    let mut upgraded = load(&bpffs, 65_536);
    assert!(upgraded.adopted().chunks_written > 0);
    for address in probes(&table, &mut rng, false, 20_000) {
        assert_eq!(
            filter_keeps(&mut upgraded, false, address),
            reference_keeps(&table, false, address),
            "{}",
            to_ip(false, address)
        );
    }
}

//! Hostile or broken config files, run through a live agent: each is
//! rejected with one clear error while the previous config stays in force,
//! the process stays up and its memory bounded; and no text from the
//! config ever reaches the rules or forges a log line. Needs root.

use std::{
    collections::BTreeSet, ffi::CString, fs, os::unix::ffi::OsStrExt as _, path::Path,
    time::Duration,
};

use lab::{
    Lab, LabOptions,
    agent::dump_maps,
    topology::{EXTERNAL_INSIDE_V4, EXTERNAL_OUTSIDE_V4, NODE_UPLINK_V4},
};

/// How long a reload may take to show: generous, since tests run in
/// parallel on a small machine.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the agent may hold in memory at any point, hostile input or not.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

fn ip(text: &str) -> std::net::IpAddr {
    text.parse().unwrap()
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The pinned maps' entries; the agent keeps them there.
fn dump(pin_dir: &Path) -> BTreeSet<String> {
    dump_maps(pin_dir).expect("ip-masq dump")
}

/// Removes whatever is at `path`: a file, a symlink or a directory tree.
fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).expect("remove directory"),
        Ok(_) => fs::remove_file(path).expect("remove file"),
        Err(_) => {}
    }
}

/// Puts what `build` creates at the config path in one step, whatever is
/// there now (a file, a directory or a symlink), so that the agent never
/// sees the path missing, which would mean "defaults" rather than "broken".
fn put_in_place(lab: &Lab, build: impl FnOnce(&Path)) {
    let staging = lab.config_dir().join("staging");
    remove_any(&staging);
    build(&staging);
    let target = lab.config_path();
    let c = |path: &Path| CString::new(path.as_os_str().as_bytes()).expect("path");
    let (from, to) = (c(&staging), c(&target));
    // SAFETY: valid NUL-terminated paths. RENAME_EXCHANGE swaps the two
    // names atomically, across file types.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(rc, 0, "exchange: {}", std::io::Error::last_os_error());
    remove_any(&staging);
}

fn put_bytes(lab: &Lab, bytes: &[u8]) {
    put_in_place(lab, |staging| {
        fs::write(staging, bytes).expect("write config");
    });
}

fn assert_previous_config_in_force(lab: &Lab) {
    let node = ip(NODE_UPLINK_V4);
    for pod in &lab.pods {
        assert_eq!(lab.observed_source(pod, ip(EXTERNAL_INSIDE_V4)), pod.ipv4);
        assert_eq!(lab.observed_source(pod, ip(EXTERNAL_OUTSIDE_V4)), node);
    }
}

fn billion_laughs() -> Vec<u8> {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (name, previous) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        let refs = vec![format!("*{previous}"); 9].join(",");
        text.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    text.push_str("nonMasqueradeCIDRs: *i\n");
    text.into_bytes()
}

/// `depth` levels of block mappings under `nonMasqueradeCIDRs`: valid YAML
/// (go-yaml reads up to 10,000 levels), refused because the key wants a list.
fn block_nesting(depth: usize) -> Vec<u8> {
    let mut text = String::from("nonMasqueradeCIDRs:\n");
    for level in 1..depth {
        text.push_str(&"  ".repeat(level));
        text.push_str("a:\n");
    }
    text.push_str(&"  ".repeat(depth));
    text.push_str("b: 1\n");
    text.into_bytes()
}

#[test]
#[ignore = "needs root"]
fn hostile_and_broken_files_are_rejected_with_one_error_each() {
    let lab = Lab::new(LabOptions::default());
    let pin_dir = lab.bpffs.pin_dir();
    lab.write_config("nonMasqueradeCIDRs: [172.16.0.0/12]\nresyncInterval: 1s\n");
    let mut agent = lab.start_agent(&["--max-cidrs", "16"]);
    let pid = agent.pid();
    let entries = dump(&pin_dir);
    assert_eq!(entries.len(), 2, "{entries:?}");

    let over_capacity = {
        let mut text = String::from("nonMasqueradeCIDRs:\n");
        for i in 0..20 {
            text.push_str(&format!("  - 100.64.{i}.0/24\n"));
        }
        text
    };
    // One level past encoding/json's limit of 10,000 (the file is JSON: it
    // starts with `{`); upstream refuses it too.
    let nested_flow = format!("{}{}", "{\"a\": [".repeat(5001), "]}".repeat(5001)).into_bytes();
    let mut not_utf8 = b"nonMasqueradeCIDRs: [\"10.0.0.0/8\", \"".to_vec();
    not_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    not_utf8.extend_from_slice(b"\"]\n");
    let too_large = {
        // Valid YAML all the way: only its size is wrong.
        let mut text = String::from("nonMasqueradeCIDRs:\n");
        while text.len() <= 1024 * 1024 {
            text.push_str("  - 100.64.0.0/24\n");
        }
        text.into_bytes()
    };

    type Write<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Write, &str)> = vec![
        (
            "a file over 1 MiB",
            Box::new(|| put_bytes(&lab, &too_large)),
            "is larger than 1048576 bytes",
        ),
        (
            "a YAML alias bomb (billion laughs)",
            Box::new(|| put_bytes(&lab, &billion_laughs())),
            "document contains excessive aliasing",
        ),
        (
            "10,002 levels of flow nesting",
            Box::new(|| put_bytes(&lab, &nested_flow)),
            "exceeded max depth of 10000",
        ),
        (
            "200 levels of block nesting",
            Box::new(|| put_bytes(&lab, &block_nesting(200))),
            "expected a list of CIDRs, found a mapping",
        ),
        (
            "non-UTF-8 bytes",
            Box::new(|| put_bytes(&lab, &not_utf8)),
            "not valid UTF-8 (first bad byte at offset 36)",
        ),
        (
            "a directory in place of the file",
            Box::new(|| {
                put_in_place(&lab, |staging| {
                    fs::create_dir(staging).expect("mkdir");
                    fs::write(staging.join("config"), "masqLinkLocal: true\n").expect("write");
                });
            }),
            "is a directory, not a file",
        ),
        (
            "a dangling symlink",
            Box::new(|| {
                put_in_place(&lab, |staging| {
                    std::os::unix::fs::symlink("..data/no-such-file", staging).expect("symlink");
                });
            }),
            "is a symlink to ..data/no-such-file, which does not exist",
        ),
        (
            "20 CIDRs with --max-cidrs 16",
            Box::new(|| put_bytes(&lab, over_capacity.as_bytes())),
            "IPv4 table needs 21 entries but the map holds at most 16",
        ),
    ];

    let mut peak_kib = 0;
    for (round, (what, write, expected)) in cases.iter().enumerate() {
        write();
        agent.wait_reloads_failed(round as u64 + 1, CHANGE_TIMEOUT);
        // A resync re-reads the file; a repeated error would show up now.
        agent.wait_for_resync();
        let state = agent.state().expect("state file");
        assert_eq!(state["reloadsFailed"], round + 1, "{what}: {state:#}");
        assert_eq!(state["reloadsSucceeded"], 1, "{what}: {state:#}");
        // The error line is the promise: one per file, naming the problem.
        let rejections: Vec<String> = agent
            .log()
            .lines()
            .filter(|line| line.contains("config rejected"))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            rejections.len(),
            round + 1,
            "{what}: one error each:\n{rejections:#?}"
        );
        let line = &rejections[round];
        assert!(
            line.contains(expected),
            "{what}: expected {expected:?} in {line}"
        );
        assert!(line.contains("previous config stays in force"), "{line}");
        assert!(
            line.len() < 1000,
            "{what}: error line is not short: {} bytes",
            line.len()
        );

        assert!(agent.is_running(), "{what}: agent died:\n{}", agent.log());
        assert_eq!(dump(&pin_dir), entries, "{what}: maps changed");
        assert_previous_config_in_force(&lab);
        let (rss, hwm) = memory_kib(pid);
        peak_kib = peak_kib.max(hwm);
        println!("{what}: rejected ({expected}); VmRSS {rss} KiB, VmHWM {hwm} KiB");
        assert!(
            rss < RSS_LIMIT_KIB && hwm < RSS_LIMIT_KIB,
            "{what}: memory {rss}/{hwm} KiB"
        );
    }
    println!(
        "{} hostile files, {} rejections logged, peak RSS {peak_kib} KiB (limit {RSS_LIMIT_KIB} KiB)",
        cases.len(),
        agent.count_in_log("config rejected")
    );

    // A good file afterwards is applied.
    put_bytes(&lab, b"nonMasqueradeCIDRs: [203.0.113.0/24]\n");
    agent.wait_reloads_succeeded(2, CHANGE_TIMEOUT);
    let pod = &lab.pods[0];
    assert_eq!(lab.observed_source(pod, ip(EXTERNAL_OUTSIDE_V4)), pod.ipv4);
}

/// A path the shell fragments below name; nothing runs them (no code path
/// of the agent starts a shell), so what matters is that none of the text
/// reaches a rule or a log line unescaped.
const M: &str = "/tmp/ip-masq-pwned";
const V: &str = "/tmp/ip-masq-victim";

/// Shell, iptables-restore and log syntax in every place a config can hold
/// text: comments, keys, and string values.
fn hostile_accepted() -> String {
    let (m, v) = (M, V);
    format!(
        r#"# $(touch {m}) `touch {m}` ; touch {m} && touch {m} | touch {m}
nonMasqueradeCIDRs:
  - 172.16.0.0/12 # '; iptables -t nat -F; "
"$(touch {m})": "`touch {m}`"
"; rm -rf {v}; touch {m}": "-j ACCEPT"
"-A POSTROUTING -j ACCEPT": "\nCOMMIT\n*nat\n-A POSTROUTING -j ACCEPT\nCOMMIT\n"
"--masq-chain": "KUBE-POSTROUTING' -j ACCEPT #"
"' \" \\ \t \r": ["$(touch {m})", "\n-A IP-MASQ-AGENT -j ACCEPT\n", "|| touch {m}"]
"${{IFS}}touch${{IFS}}{m}": {{"-j": "ACCEPT", "--to-ports": "1; touch {m}"}}
masqueradeCIDRs: []
resyncInterval: "1s"
"#
    )
}

/// The same characters where only values that must parse can go: the file
/// is refused as a whole.
fn hostile_rejected() -> String {
    let (m, v) = (M, V);
    format!(
        r#"nonMasqueradeCIDRs:
  - "172.16.0.0/12; touch {m}"
  - "$(touch {m})"
  - "`touch {m}`"
  - "10.0.0.0/8\n-A POSTROUTING -j ACCEPT\nCOMMIT"
  - "0.0.0.0/0 -j ACCEPT"
  - "' || rm -rf {v} || '"
masqueradeCIDRs: ["$(touch {m})/8"]
masqLinkLocal: "$(touch {m})"
resyncInterval: "1s; touch {m}"
cidrLimit: "`touch {m}`"
"#
    )
}

#[test]
#[ignore = "needs root"]
fn config_text_never_reaches_a_command_line() {
    let lab = Lab::new(LabOptions {
        routed_pods: 1,
        bridged_pods: 1,
        ipv6: false,
    });
    let nat = || lab.node.iptables_save("iptables", "nat");

    // The rules an agent on the built-in defaults (no file) installs.
    let mut agent = lab.start_agent(&[]);
    let defaults = nat();
    assert!(defaults.contains("-j MASQUERADE"), "{defaults}");
    agent
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .expect("exit");

    // A hostile file the agent accepts: the metacharacters sit in
    // comments, unknown keys and their values.
    lab.write_config(&hostile_accepted());
    let agent = lab.start_agent(&[]);
    // The resyncs re-apply the rules; they stay the defaults' too.
    agent.wait_for_resync();
    assert_eq!(
        nat(),
        defaults,
        "rules differ with the accepted hostile file"
    );
    let state = agent.state().expect("state file");
    assert_eq!(state["reloadsSucceeded"], 1, "{state:#}");
    assert_eq!(state["reloadsFailed"], 0, "{state:#}");
    // One warning per unknown key is the promise.
    let log = agent.log();
    assert!(agent.count_in_log("unknown key") >= 6, "{log}");
    assert_eq!(
        dump(&lab.bpffs.pin_dir()),
        BTreeSet::from([
            "169.254.0.0/16 keep-source".to_owned(),
            "172.16.0.0/12 keep-source".to_owned()
        ])
    );

    // A hostile file the agent refuses, while it runs.
    lab.write_config(&hostile_rejected());
    agent.wait_reloads_failed(1, CHANGE_TIMEOUT);
    agent.wait_for_resync();
    assert_eq!(
        nat(),
        defaults,
        "rules differ after the refused hostile file"
    );
    let log = agent.log();
    let rejection = log
        .lines()
        .find(|line| line.contains("config rejected"))
        .expect("rejection line");
    assert!(rejection.contains("invalid value(s)"), "{rejection}");
    // Values are quoted with escapes: an embedded newline cannot forge a
    // log line or a rule line.
    assert!(
        !log.lines()
            .any(|line| line.starts_with("-A ") || line.starts_with("COMMIT")),
        "{log}"
    );
    drop(agent);

    // And an agent that starts with the refused file in place.
    let agent = lab.start_agent(&[]);
    let state = agent.state().expect("state file");
    assert_eq!(state["lastReload"]["result"], "rejected", "{state:#}");
    assert_eq!(
        nat(),
        defaults,
        "rules differ when starting on the refused file"
    );
    println!(
        "iptables -t nat -S identical ({} lines) for defaults, an accepted and a refused hostile file",
        defaults.lines().count()
    );
}

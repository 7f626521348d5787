//! `ip-masq check`: validates a config file the way `run` would, prints the
//! effective table, lists every error at once, and exits 0 (valid), 1
//! (invalid) or 2 (the file cannot be read).

use std::{path::PathBuf, process::Command};

use lab::{agent::agent_binary, unique_name};

struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(unique_name("ip-masq-check-"));
        std::fs::write(&path, text).unwrap();
        Self { path }
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs `ip-masq check --config PATH ARGS…` and returns (exit code, stdout, stderr).
fn check(path: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(agent_binary())
        .arg("check")
        .arg("--config")
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn valid_file_prints_the_effective_table_with_origins() {
    let file = ConfigFile::new(
        "nonMasqueradeCIDRs: [10.0.0.0/8, 2001:db8::/32]\nmasqueradeCIDRs: [10.200.0.0/16]\nresyncInterval: 30s\n",
    );
    let (code, stdout, stderr) = check(&file.path, &["--enable-ipv6"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|line| !line.starts_with("CIDR"))
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["10.0.0.0/8", "ipv4", "keep-source", "config"],
            ["10.200.0.0/16", "ipv4", "masquerade", "config"],
            ["169.254.0.0/16", "ipv4", "keep-source", "link-local"],
            ["2001:db8::/32", "ipv6", "keep-source", "config"],
            ["fe80::/10", "ipv6", "keep-source", "link-local"],
        ]
    );
    assert!(stdout.contains("resync interval: 30s"), "{stdout}");
}

#[test]
fn missing_file_checks_the_defaults() {
    let path = std::env::temp_dir().join(unique_name("ip-masq-absent-"));
    let (code, stdout, _) = check(&path, &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("defaults, no file"), "{stdout}");
    assert!(
        stdout.contains("172.16.0.0/12") && stdout.contains("default"),
        "{stdout}"
    );
}

#[test]
fn every_bad_entry_is_listed_and_exit_code_is_1() {
    let file = ConfigFile::new(
        "nonMasqueradeCIDRs: [10.0.0.1/8, bogus, 192.168.0.0/16, 2001:db8::/32]\nmasqLinkLocal: maybe\nresyncInterval: 60\n",
    );
    let (code, stdout, stderr) = check(&file.path, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "no table for an invalid file: {stdout}");
    for expected in [
        "5 invalid value(s)",
        "\"10.0.0.1/8\"",
        "did you mean 10.0.0.0/8",
        "\"bogus\"",
        "\"2001:db8::/32\"",
        "--enable-ipv6",
        "masqLinkLocal",
        "resyncInterval",
        &file.path.display().to_string(),
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in: {stderr}"
        );
    }
}

#[test]
fn syntax_errors_and_oversized_files_exit_1() {
    let broken = ConfigFile::new("nonMasqueradeCIDRs: [10.0.0.0/8\n");
    let (code, _, stderr) = check(&broken.path, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("config is not valid YAML"), "{stderr}");

    let large = ConfigFile::new(&format!("# {}\n", "x".repeat(2000)));
    let (code, _, stderr) = check(&large.path, &["--max-config-bytes", "1024"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("larger than 1024 bytes"), "{stderr}");
    let (code, _, stderr) = check(&large.path, &["--max-config-bytes", "4096"]);
    assert_eq!(code, 0, "{stderr}");
}

/// A file that cannot be read is an error, not an invalid file.
#[test]
fn unreadable_files_exit_2() {
    let directory = std::env::temp_dir().join(unique_name("ip-masq-dir-"));
    std::fs::create_dir(&directory).unwrap();
    let (code, stdout, stderr) = check(&directory, &[]);
    std::fs::remove_dir(&directory).unwrap();
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("is a directory"), "{stderr}");

    let dangling = std::env::temp_dir().join(unique_name("ip-masq-dangling-"));
    std::os::unix::fs::symlink("/nonexistent/ip-masq-agent", &dangling).unwrap();
    let (code, stdout, stderr) = check(&dangling, &[]);
    std::fs::remove_file(&dangling).unwrap();
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("which does not exist"), "{stderr}");
}

#[test]
fn unknown_keys_are_warnings_not_errors() {
    let file = ConfigFile::new("nonMasqueradeCidr: [10.0.0.0/8]\n");
    let (code, stdout, _) = check(&file.path, &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("warning: unknown key \"nonMasqueradeCidr\" ignored (did you mean \"nonMasqueradeCIDRs\"?)"),
        "{stdout}"
    );
}

#[test]
fn over_capacity_is_an_error() {
    let cidrs: Vec<String> = (0..20).map(|i| format!("10.{i}.0.0/16")).collect();
    let file = ConfigFile::new(&format!("nonMasqueradeCIDRs: [{}]\n", cidrs.join(", ")));
    let (code, _, stderr) = check(&file.path, &["--max-cidrs", "16"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("exceed --max-cidrs 16"), "{stderr}");
    let (code, _, _) = check(&file.path, &["--max-cidrs", "32"]);
    assert_eq!(code, 0);
}

#[test]
fn json_output_is_machine_readable() {
    let file = ConfigFile::new("nonMasqueradeCIDRs: [198.51.100.0/24]\n");
    let (code, stdout, _) = check(&file.path, &["--json"]);
    assert_eq!(code, 0);
    for expected in [
        "\"cidr\": \"198.51.100.0/24\"",
        "\"action\": \"keep-source\"",
        "\"origin\": \"config\"",
        "\"origin\": \"link-local\"",
    ] {
        assert!(stdout.contains(expected), "missing {expected}: {stdout}");
    }
}

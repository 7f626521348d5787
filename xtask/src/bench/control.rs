//! The agent's control plane: from writing a config file to the maps
//! holding it, a one-entry change in a large list, peak memory and idle CPU.
//!
//! Latency is measured from just before the file is renamed into place to
//! the timestamp of the agent's "config applied" line, which it logs after
//! the last map write; the agent's own `elapsed_ms` on that line is the part
//! spent reading, parsing, diffing and writing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use serde::Serialize;

use super::{
    counters,
    node::{Bed, Contender},
};

/// One config change as the agent applied it.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Apply {
    pub cidrs: usize,
    /// `yaml` or `json`.
    pub format: &'static str,
    pub added: u64,
    pub removed: u64,
    pub entries_v4: u64,
    /// From the write to the "config applied" line.
    pub write_to_applied_ms: f64,
    /// The agent's own read-parse-diff-write time.
    pub agent_elapsed_ms: f64,
    /// Of that, decoding and validating the file.
    pub agent_decode_ms: Option<f64>,
    /// Of that, building the table, diffing it and writing the maps.
    pub agent_sync_ms: Option<f64>,
}

/// What the control-plane phase measured.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct ControlResults {
    pub full_loads: Vec<Apply>,
    pub one_entry_changes: Vec<Apply>,
    /// Peak RSS right after start on the default config: what loading the
    /// datapath alone costs.
    pub start_peak_rss_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    /// Time the YAML library alone needs to tokenize the largest list (best
    /// of three, values skipped): the floor under any YAML reload.
    pub yaml_parse_in_process_ms: Option<f64>,
    pub idle_seconds: f64,
    pub idle_cpu_percent: Option<f64>,
    pub skipped: Vec<String>,
}

/// The fields of a "config applied" log line that the benchmark needs.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct AppliedLine {
    pub at: SystemTime,
    pub added: u64,
    pub removed: u64,
    pub entries_v4: u64,
    pub elapsed_ms: f64,
    pub decode_ms: Option<f64>,
    pub sync_ms: Option<f64>,
}

/// Parses a tracing text line such as
/// `2025-01-02T03:04:05.123456Z  INFO ip_masq::agent: config applied … added=3 … elapsed_ms=1.5`.
pub(super) fn parse_applied_line(line: &str) -> Option<AppliedLine> {
    if !line.contains("config applied") {
        return None;
    }
    let at = parse_rfc3339_utc(line.split_whitespace().next()?)?;
    let field = |name: &str| -> Option<&str> {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
    };
    Some(AppliedLine {
        at,
        added: field("added")?.parse().ok()?,
        removed: field("removed")?.parse().ok()?,
        entries_v4: field("entries_v4")?.parse().ok()?,
        elapsed_ms: field("elapsed_ms")?.parse().ok()?,
        decode_ms: field("decode_ms").and_then(|v| v.parse().ok()),
        sync_ms: field("sync_ms").and_then(|v| v.parse().ok()),
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` to a time.
pub(super) fn parse_rfc3339_utc(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
    );
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.splitn(3, ':').map(str::parse::<i64>);
    let (hour, minute, second) = (
        clock_parts.next()?.ok()?,
        clock_parts.next()?.ok()?,
        clock_parts.next()?.ok()?,
    );
    let nanos = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().take(9).collect();
        let value: u64 = digits.parse().ok()?;
        value * 10u64.pow(9 - digits.len() as u32)
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos as u32))
}

/// A time as `YYYY-MM-DDTHH:MM:SSZ`.
pub(super) fn format_rfc3339_utc(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// One-entry changes of the largest list, in both formats the agent reads.
#[derive(Clone, Debug, Default)]
pub(super) struct Changes {
    /// Each changes one entry of the previous text.
    pub yaml: Vec<String>,
    /// The list after the YAML changes, as JSON: no entry changes.
    pub json_switch: String,
    /// Each changes one entry of the previous text.
    pub json: Vec<String>,
}

/// Writes `text` as the config and waits for the agent to apply it.
fn apply(
    bed: &Bed,
    text: &str,
    cidrs: usize,
    format: &'static str,
    timeout: Duration,
) -> anyhow::Result<Apply> {
    let agent = bed.agent().context("agent running")?;
    let before = agent.count_in_log("config applied");
    let written = SystemTime::now();
    bed.lab.write_config(text);
    let applied = lab::wait_until(timeout, || agent.count_in_log("config applied") > before);
    ensure!(
        applied,
        "the agent did not apply a {cidrs}-CIDR config within {timeout:?}; log tail:\n{}",
        tail(&agent.log(), 5)
    );
    let log = agent.log();
    let line = log
        .lines()
        .filter_map(parse_applied_line)
        .nth(before)
        .context("unparsable \"config applied\" line")?;
    let latency = line.at.duration_since(written).unwrap_or(Duration::ZERO);
    Ok(Apply {
        cidrs,
        format,
        added: line.added,
        removed: line.removed,
        entries_v4: line.entries_v4,
        write_to_applied_ms: latency.as_secs_f64() * 1000.0,
        agent_elapsed_ms: line.elapsed_ms,
        agent_decode_ms: line.decode_ms,
        agent_sync_ms: line.sync_ms,
    })
}

/// Best of three: reading `text` with the agent's own parser
/// (`ip-masq-config`), in this process: the decode cost without the file
/// read, the event's delivery or the map writes.
fn yaml_parse_in_process_ms(text: &str) -> f64 {
    (0..3)
        .map(|_| {
            let started = std::time::Instant::now();
            let parsed = ip_masq_config::parse_with_limit(
                text.as_bytes(),
                ip_masq_config::ParseOptions::default(),
                usize::MAX,
            );
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            assert!(parsed.is_ok(), "the benchmark's own YAML does not parse");
            elapsed
        })
        .fold(f64::INFINITY, f64::min)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs the control-plane phase on `bed` (no other contender active).
/// `lists` are the config texts to load in order, with their sizes; the
/// last one is also changed one entry at a time.
pub(super) fn run(
    bed: &mut Bed,
    lists: &[(usize, String)],
    changes: &Changes,
    idle: Duration,
) -> anyhow::Result<ControlResults> {
    let mut results = ControlResults {
        idle_seconds: idle.as_secs_f64(),
        ..ControlResults::default()
    };
    // Start on the defaults (no file), then write each list.
    match std::fs::remove_file(bed.config_path()) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).context("remove the config file"),
    }
    bed.start_agent(Contender::IpMasq)?;
    let pid = bed.agent_pid().context("agent running")?;
    results.start_peak_rss_bytes = Some(counters::peak_rss(pid)?);
    let mut last_loaded = None;
    for (cidrs, text) in lists {
        if text.len() > super::node::DEFAULT_MAX_CONFIG_BYTES && !bed.features.max_config_bytes {
            results.skipped.push(format!(
                "{cidrs} CIDRs: the config file is {:.2} MiB, over the agent's 1 MiB limit, and this agent has no --max-config-bytes",
                text.len() as f64 / 1_048_576.0
            ));
            continue;
        }
        let applied = apply(bed, text, *cidrs, "yaml", Duration::from_secs(60))?;
        ensure!(
            applied.entries_v4 == *cidrs as u64 + 1,
            "{cidrs} CIDRs applied as {} IPv4 entries (expected {} with link-local)",
            applied.entries_v4,
            cidrs + 1
        );
        results.full_loads.push(applied);
        last_loaded = Some(*cidrs);
    }
    if let Some(cidrs) = last_loaded.filter(|c| Some(*c) == lists.last().map(|l| l.0)) {
        let one_entry = |bed: &Bed, text: &str, format| -> anyhow::Result<Apply> {
            let applied = apply(bed, text, cidrs, format, Duration::from_secs(30))?;
            ensure!(
                applied.added == 1 && applied.removed == 1,
                "a one-entry change applied as +{} -{}",
                applied.added,
                applied.removed
            );
            Ok(applied)
        };
        for text in &changes.yaml {
            results
                .one_entry_changes
                .push(one_entry(bed, text, "yaml")?);
        }
        if !changes.json.is_empty() {
            let switched = apply(
                bed,
                &changes.json_switch,
                cidrs,
                "json",
                Duration::from_secs(30),
            )?;
            ensure!(
                switched.added == 0 && switched.removed == 0,
                "the same list in JSON applied as +{} -{}",
                switched.added,
                switched.removed
            );
        }
        for text in &changes.json {
            results
                .one_entry_changes
                .push(one_entry(bed, text, "json")?);
        }
    } else if !changes.yaml.is_empty() {
        results
            .skipped
            .push("one-entry changes: the largest list could not be loaded".into());
    }
    results.peak_rss_bytes = Some(counters::peak_rss(pid)?);
    results.yaml_parse_in_process_ms = changes
        .yaml
        .last()
        .map(|text| yaml_parse_in_process_ms(text));
    let cpu_before = counters::cpu_seconds(pid)?;
    let started = std::time::Instant::now();
    std::thread::sleep(idle);
    let cpu_after = counters::cpu_seconds(pid)?;
    let elapsed = started.elapsed().as_secs_f64();
    results.idle_cpu_percent = Some(100.0 * (cpu_after - cpu_before) / elapsed);
    results.peak_rss_bytes = Some(counters::peak_rss(pid)?);
    if bed.agent().is_none() {
        bail!("the agent went away during the idle measurement");
    }
    bed.stop_agent()?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_rfc3339_utc("2000-03-01T00:00:01.5Z"),
            Some(UNIX_EPOCH + Duration::new(951_868_801, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339_utc("2024-02-29T12:34:56.123456Z"),
            Some(UNIX_EPOCH + Duration::new(1_709_210_096, 123_456_000))
        );
        assert_eq!(parse_rfc3339_utc("2024-02-29 12:34:56"), None);
    }

    #[test]
    fn formatting_round_trips() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T12:34:56Z",
            "2000-03-01T00:00:01Z",
        ] {
            assert_eq!(format_rfc3339_utc(parse_rfc3339_utc(text).unwrap()), text);
        }
    }

    #[test]
    fn applied_line_fields() {
        let line = "2024-02-29T12:34:56.000100Z  INFO ip_masq::agent: config applied config=/tmp/x source=\"file\" added=10000 removed=2 failed=0 entries_v4=10001 entries_v6=0 elapsed_ms=12.5 read_ms=0.2 decode_ms=10.25 sync_ms=2";
        let parsed = parse_applied_line(line).unwrap();
        assert_eq!(parsed.added, 10_000);
        assert_eq!(parsed.removed, 2);
        assert_eq!(parsed.entries_v4, 10_001);
        assert_eq!(parsed.elapsed_ms, 12.5);
        assert_eq!(parsed.decode_ms, Some(10.25));
        assert_eq!(parsed.sync_ms, Some(2.0));
        assert_eq!(
            parsed.at,
            UNIX_EPOCH + Duration::new(1_709_210_096, 100_000)
        );
        assert_eq!(parse_applied_line("2024-02-29T12:34:56Z INFO ready:"), None);
    }
}

//! The README's "Commands and flags" section checked against the clap
//! definitions, so that the two cannot drift apart: every flag of every
//! command has a table row naming the command and the flag's default, and
//! appears in the command's synopsis; and the README names no flag, command
//! or value that clap does not have.

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgAction, CommandFactory as _};

use super::Cli;

const README: &str = include_str!("../../../README.md");

/// One flag of one command, as clap defines it.
#[derive(Debug)]
struct Flag {
    short: Option<char>,
    /// What the README must say its default is.
    default: Default,
    /// The value's name (`PATH`), or the possible values of an enum.
    value_names: Vec<String>,
    possible_values: Vec<String>,
    global: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Default {
    /// A switch: the README says "off" (possibly with more words).
    Off,
    /// The README gives exactly this value, as one code span.
    Value(String),
    /// No default value: the README describes what happens, in words.
    Described,
}

/// Every flag of every command, keyed by command and long name; the global
/// flags under every command.
fn clap_flags() -> BTreeMap<(String, String), Flag> {
    let mut root = Cli::command();
    root.build();
    let mut flags = BTreeMap::new();
    for command in root.get_subcommands() {
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue;
            };
            if matches!(long, "help" | "version") {
                continue;
            }
            let default = if matches!(arg.get_action(), ArgAction::SetTrue) {
                Default::Off
            } else if arg.get_default_values().is_empty() {
                Default::Described
            } else {
                Default::Value(
                    arg.get_default_values()
                        .iter()
                        .map(|value| value.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(","),
                )
            };
            let flag = Flag {
                short: arg.get_short(),
                default,
                value_names: arg
                    .get_value_names()
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                possible_values: arg
                    .get_possible_values()
                    .iter()
                    .filter(|value| !value.is_hide_set())
                    .map(|value| value.get_name().to_owned())
                    .collect(),
                global: arg.is_global_set(),
            };
            flags.insert((command.get_name().to_owned(), long.to_owned()), flag);
        }
    }
    flags
}

/// The "Commands and flags" section.
fn section() -> &'static str {
    let start = README
        .find("\n## Commands and flags\n")
        .expect("README has a \"Commands and flags\" section");
    let rest = &README[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |end| end + 3);
    &rest[..end]
}

/// The cells of a Markdown table row, `\|` unescaped.
fn cells(row: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = row.trim().trim_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().expect("one cell").push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            _ => cells.last_mut().expect("one cell").push(c),
        }
    }
    cells.iter().map(|cell| cell.trim().to_owned()).collect()
}

/// The code spans of a cell, in order.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// One spelling of a flag in the README: `--config PATH`, `--v=N`, `-v N`,
/// `--log-format text|json`, `--enable-ipv6`.
#[derive(Debug, PartialEq, Eq)]
struct Spelling {
    /// `--NAME` without dashes, or `-C` as the char.
    long: Option<String>,
    short: Option<char>,
    /// What follows the name: a value name or `a|b` alternatives.
    value: Option<String>,
}

fn spelling(text: &str) -> Option<Spelling> {
    let (name, value) = match text.split_once([' ', '=']) {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (text, None),
    };
    if let Some(long) = name.strip_prefix("--") {
        return Some(Spelling {
            long: Some(long.to_owned()),
            short: None,
            value,
        });
    }
    let short = name.strip_prefix('-')?;
    let mut chars = short.chars();
    let (Some(short), None) = (chars.next(), chars.next()) else {
        return None;
    };
    Some(Spelling {
        long: None,
        short: Some(short),
        value,
    })
}

/// Checks what follows a flag's name against its definition: a value name
/// in capitals, or alternatives that must be exactly its possible values.
fn check_value(context: &str, value: Option<&str>, flag: &Flag, problems: &mut Vec<String>) {
    let Some(value) = value else {
        if !flag.value_names.is_empty() && flag.default != Default::Off {
            problems.push(format!("{context}: the flag takes a value; name it"));
        }
        return;
    };
    if value.contains('|') || value.chars().any(|c| c.is_ascii_lowercase()) {
        let listed: Vec<&str> = value.split('|').collect();
        if listed != flag.possible_values {
            problems.push(format!(
                "{context}: lists {listed:?}, but the values are {:?}",
                flag.possible_values
            ));
        }
    } else if value
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(' ')
        .ne(flag.value_names.iter().map(String::as_str))
    {
        // A value in brackets is optional (`--config-dir [DIR]`); several
        // words are several values (`--diff OLD NEW`).
        problems.push(format!(
            "{context}: value named {value:?}, but --help names it {:?}",
            flag.value_names
        ));
    }
}

/// Problems with the flag table: each row against clap, then each clap
/// flag against the rows.
fn table_problems(flags: &BTreeMap<(String, String), Flag>) -> Vec<String> {
    let commands: BTreeSet<&str> = flags.keys().map(|(command, _)| command.as_str()).collect();
    let mut problems = Vec::new();
    let mut rows: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut in_table = false;
    for line in section().lines() {
        if line.starts_with("| flag | commands | default |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells = cells(line);
        let [flag_cell, commands_cell, default_cell, ..] = cells.as_slice() else {
            problems.push(format!("row without flag, commands and default: {line}"));
            continue;
        };
        let spellings: Vec<Spelling> = code_spans(flag_cell)
            .into_iter()
            .filter_map(spelling)
            .collect();
        let Some(long) = spellings.iter().find_map(|s| s.long.clone()) else {
            problems.push(format!("row names no long flag: {line}"));
            continue;
        };
        let row_commands: Vec<String> = if commands_cell == "all" {
            commands.iter().map(|&command| command.to_owned()).collect()
        } else {
            commands_cell
                .split(',')
                .map(|command| command.trim().to_owned())
                .collect()
        };
        for command in &row_commands {
            let context = format!("README row `{command} --{long}`");
            let Some(flag) = flags.get(&(command.clone(), long.clone())) else {
                problems.push(format!("{context}: clap has no such flag"));
                continue;
            };
            if rows
                .insert((command.clone(), long.clone()), default_cell.clone())
                .is_some()
            {
                problems.push(format!("{context}: listed twice"));
            }
            if flag.global != (commands_cell == "all") {
                problems.push(format!(
                    "{context}: say \"all\" exactly for the global flags"
                ));
            }
            for spelling in &spellings {
                if let Some(short) = spelling.short
                    && flag.short != Some(short)
                {
                    problems.push(format!("{context}: clap has no -{short}"));
                }
                check_value(&context, spelling.value.as_deref(), flag, &mut problems);
            }
            let spans = code_spans(default_cell);
            let default_ok = match &flag.default {
                Default::Off => default_cell.starts_with("off"),
                Default::Value(value) => default_cell == &format!("`{value}`"),
                // A lone value would read as a default clap does not apply.
                Default::Described => {
                    let lone_value = spans.len() == 1 && default_cell == &format!("`{}`", spans[0]);
                    !(default_cell.is_empty() || lone_value)
                }
            };
            if !default_ok {
                problems.push(format!(
                    "{context}: default {default_cell:?}, but clap's is {:?}",
                    flag.default
                ));
            }
        }
    }
    for (command, long) in flags.keys() {
        if !rows.contains_key(&(command.clone(), long.clone())) {
            problems.push(format!(
                "`ip-masq {command} --{long}` has no row in the README's flag table"
            ));
        }
    }
    problems
}

/// Problems with the synopsis lines (`ip-masq CMD [--flag VALUE] …`) in the
/// README's code blocks: each must list exactly its command's own flags
/// (the global ones are said once, in the text).
fn synopsis_problems(flags: &BTreeMap<(String, String), Flag>) -> Vec<String> {
    let mut synopses: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_code = false;
    for line in README.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("ip-masq ") {
            let (command, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            // An example invocation, not a synopsis.
            if !rest.trim_start().starts_with('[') {
                continue;
            }
            synopses.push((command.to_owned(), Vec::new()));
            push_bracketed(rest, &mut synopses);
        } else if trimmed.starts_with('[') && line.starts_with(' ') && !synopses.is_empty() {
            push_bracketed(trimmed, &mut synopses);
        }
    }
    assert!(!synopses.is_empty(), "README has no synopsis lines");
    let mut problems = Vec::new();
    for (command, listed) in &synopses {
        let own: BTreeSet<String> = flags
            .iter()
            .filter(|((name, _), flag)| name == command && !flag.global)
            .map(|((_, long), _)| long.clone())
            .collect();
        if own.is_empty() {
            problems.push(format!("synopsis of `ip-masq {command}`: no such command"));
            continue;
        }
        let mut seen = BTreeSet::new();
        for item in listed {
            let context = format!("synopsis of `ip-masq {command}`, `[{item}]`");
            let Some(spelling) = spelling(item) else {
                problems.push(format!("{context}: not a flag"));
                continue;
            };
            let Some(long) = spelling.long else {
                problems.push(format!("{context}: use the long flag"));
                continue;
            };
            let Some(flag) = flags.get(&(command.clone(), long.clone())) else {
                problems.push(format!("{context}: clap has no such flag"));
                continue;
            };
            if flag.global {
                problems.push(format!("{context}: a global flag, said once in the text"));
            }
            if !seen.insert(long) {
                problems.push(format!("{context}: listed twice"));
            }
            check_value(&context, spelling.value.as_deref(), flag, &mut problems);
        }
        for missing in own.difference(&seen) {
            problems.push(format!("synopsis of `ip-masq {command}` lacks --{missing}"));
        }
    }
    problems
}

/// Appends the `[…]` items of `text` to the last synopsis.
fn push_bracketed(text: &str, synopses: &mut [(String, Vec<String>)]) {
    let items = &mut synopses.last_mut().expect("a synopsis").1;
    for part in text.split('[').skip(1) {
        if let Some((item, _)) = part.split_once(']') {
            items.push(item.trim().to_owned());
        }
    }
}

#[test]
fn the_readme_flag_table_matches_the_flag_definitions() {
    let problems = table_problems(&clap_flags());
    assert!(
        problems.is_empty(),
        "README.md \"Commands and flags\" is out of date:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_synopses_match_the_flag_definitions() {
    let problems = synopsis_problems(&clap_flags());
    assert!(
        problems.is_empty(),
        "README.md synopses are out of date:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_checks() {
    let flags = clap_flags();
    // Every command and the global flags are there to be checked.
    for key in [
        ("run", "config"),
        ("run", "v"),
        ("doctor", "log-format"),
        ("dump", "pin-path"),
        ("status", "masq-chain"),
    ] {
        assert!(
            flags.contains_key(&(key.0.to_owned(), key.1.to_owned())),
            "{key:?}"
        );
    }
    assert_eq!(
        flags[&("run".to_owned(), "max-cidrs".to_owned())].default,
        Default::Value("65536".into())
    );
    assert_eq!(
        flags[&("status".to_owned(), "mark".to_owned())].default,
        Default::Described
    );
    assert_eq!(
        cells(r"| `--datapath tc\|xt-bpf` | run | `tc` | x |"),
        ["`--datapath tc|xt-bpf`", "run", "`tc`", "x"]
    );
    assert_eq!(
        spelling("--v=N"),
        Some(Spelling {
            long: Some("v".into()),
            short: None,
            value: Some("N".into())
        })
    );
}

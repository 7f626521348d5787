//! The runtime stage of the repository's Dockerfile, read as data, so that
//! `cargo xtask image` and the built image can be checked against it.

/// What the last stage of a Dockerfile installs, copies and runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStage {
    /// The image of the last `FROM`.
    pub base: String,
    /// Packages of its `apt-get install` lines.
    pub packages: Vec<String>,
    /// (source, destination) of each `COPY`; a source from another stage
    /// is `STAGE:PATH`.
    pub copies: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Empty without a `USER` line (root).
    pub user: String,
    /// Whether a `RUN` removes apt's lists.
    pub removes_apt_lists: bool,
}

/// Joins continuation lines and drops comments.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(rest) = trimmed.strip_suffix('\\') {
            current.push_str(rest);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            if !current.trim().is_empty() {
                out.push(std::mem::take(&mut current));
            }
            current.clear();
        }
    }
    out
}

/// Reads the last stage of a Dockerfile. Pure.
///
/// # Panics
/// On a JSON `ENTRYPOINT` or `CMD` that does not parse.
pub fn runtime_stage(text: &str) -> RuntimeStage {
    let mut stage = RuntimeStage::default();
    for instruction in instructions(text) {
        let (keyword, rest) = instruction.split_once(' ').unwrap_or((&instruction, ""));
        let rest = rest.trim();
        match keyword.to_ascii_uppercase().as_str() {
            "FROM" => {
                stage = RuntimeStage {
                    base: rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    ..RuntimeStage::default()
                };
            }
            "RUN" => {
                for command in rest.split("&&") {
                    let words: Vec<&str> = command.split_whitespace().collect();
                    if let Some(at) = words.windows(2).position(|w| w == ["apt-get", "install"]) {
                        stage.packages.extend(
                            words[at + 2..]
                                .iter()
                                .filter(|w| !w.starts_with('-'))
                                .map(|w| (*w).to_owned()),
                        );
                    }
                    if words.first() == Some(&"rm") && command.contains("/var/lib/apt/lists") {
                        stage.removes_apt_lists = true;
                    }
                }
            }
            "COPY" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let from = words
                    .iter()
                    .find_map(|w| w.strip_prefix("--from="))
                    .map(str::to_owned);
                let paths: Vec<&str> = words
                    .iter()
                    .filter(|w| !w.starts_with("--"))
                    .copied()
                    .collect();
                if let [source, destination] = paths.as_slice() {
                    let source = match &from {
                        Some(stage) => format!("{stage}:{source}"),
                        None => (*source).to_owned(),
                    };
                    stage.copies.push((source, (*destination).to_owned()));
                }
            }
            "ENTRYPOINT" => {
                stage.entrypoint = serde_json::from_str(rest).expect("ENTRYPOINT is JSON");
            }
            "CMD" => stage.cmd = serde_json::from_str(rest).expect("CMD is JSON"),
            "USER" => stage.user = rest.to_owned(),
            _ => {}
        }
    }
    stage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_stage() {
        let text = "FROM rust AS build\nRUN apt-get install -y gcc\nCOPY . .\n\
                    # runtime\nFROM debian:bookworm-slim\nRUN apt-get update \\\n    && apt-get install -y --no-install-recommends iptables \\\n    && rm -rf /var/lib/apt/lists/*\n\
                    COPY a/b /usr/local/bin/b\nCOPY --from=build /out/x /usr/local/bin/x\nENTRYPOINT [\"/b\", \"/x\"]\nCMD [\"run\"]\n";
        let stage = runtime_stage(text);
        assert_eq!(stage.base, "debian:bookworm-slim");
        assert_eq!(stage.packages, ["iptables"]);
        assert!(stage.removes_apt_lists);
        assert_eq!(
            stage.copies,
            [
                ("a/b".to_owned(), "/usr/local/bin/b".to_owned()),
                ("build:/out/x".to_owned(), "/usr/local/bin/x".to_owned())
            ]
        );
        assert_eq!(stage.entrypoint, ["/b", "/x"]);
        assert_eq!(stage.cmd, ["run"]);
        assert_eq!(stage.user, "");
    }
}

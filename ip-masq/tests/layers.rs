//! The source tree is the architecture: each layer of the agent uses only
//! the layers below it, and no two modules depend on each other. Read from
//! the source files themselves, so a new import that breaks the rule fails
//! here rather than in a reviewer's head.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Top-level modules from the top of the stack down. A module may use the
/// ones after it, never the ones before it.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["commands"],
    &["agent"],
    &["serve"],
    &["options"],
    &["kernel"],
    &["model", "error"],
];

/// The largest a product source file may grow.
const MAX_LINES: usize = 600;

fn layer_of(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top))
        .unwrap_or_else(|| panic!("module {top} has no layer in tests/layers.rs"))
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `kernel/datapath/mod.rs` → `["kernel", "datapath"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

/// Every module path a file names through `crate::`, as segments, whether
/// in a `use crate::{a::b, c}` group or inline.
fn referenced_modules(text: &str) -> BTreeSet<Vec<String>> {
    fn walk(prefix: &[String], tree: &str, out: &mut BTreeSet<Vec<String>>) {
        let tree = tree.trim();
        if let Some(open) = tree.find('{') {
            let head: Vec<String> = tree[..open]
                .split("::")
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_owned())
                .collect();
            let mut base = prefix.to_vec();
            base.extend(head);
            let inner = &tree[open + 1..tree.rfind('}').expect("balanced use group")];
            let mut depth = 0;
            let mut start = 0;
            for (at, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        walk(&base, &inner[start..at], out);
                        start = at + 1;
                    }
                    _ => {}
                }
            }
            walk(&base, &inner[start..], out);
            return;
        }
        let path = tree.split(" as ").next().unwrap_or(tree);
        let mut segments = prefix.to_vec();
        segments.extend(
            path.split("::")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        );
        if !segments.is_empty() {
            out.insert(segments);
        }
    }
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if rest.starts_with('{') {
            let end = rest.find("};").expect("end of use group");
            walk(&[], &rest[..=end], &mut out);
            rest = &rest[end..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            walk(&[], rest[..end].trim_end_matches(':'), &mut out);
        }
    }
    out
}

fn library_files() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.retain(|file| {
        let relative = file.strip_prefix(&src).expect("under src");
        // The binaries sit on top of everything.
        relative != Path::new("main.rs")
            && relative != Path::new("lib.rs")
            && !relative.starts_with("bin")
    });
    (src, files)
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let (src, files) = library_files();
    let mut violations = Vec::new();
    for file in &files {
        let own = module_path(&src, file);
        let own_layer = layer_of(&own[0]);
        let text = fs::read_to_string(file).expect("read source");
        for used in referenced_modules(&text) {
            let used_layer = layer_of(&used[0]);
            if used_layer < own_layer {
                violations.push(format!(
                    "{} uses crate::{}",
                    own.join("::"),
                    used.join("::")
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports from a layer above:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_two_modules_depend_on_each_other() {
    let (src, files) = library_files();
    // Module (two levels deep: kernel::datapath, agent::sync, cli) to the
    // modules it uses, at the same depth.
    let key = |path: &[String]| path.iter().take(2).cloned().collect::<Vec<_>>().join("::");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut known = BTreeSet::new();
    for file in &files {
        known.insert(key(&module_path(&src, file)));
    }
    for file in &files {
        let own = key(&module_path(&src, file));
        let text = fs::read_to_string(file).expect("read source");
        for used in referenced_modules(&text) {
            // Items of a module with children (crate::agent::Foo) count as
            // the module itself.
            let mut used_key = key(&used);
            if !known.contains(&used_key) {
                used_key = used[0].clone();
            }
            let parent_child = own.starts_with(&format!("{used_key}::"))
                || used_key.starts_with(&format!("{own}::"));
            if used_key != own && !parent_child {
                graph.entry(own.clone()).or_default().insert(used_key);
            }
        }
    }
    let mut cycles = Vec::new();
    for (module, uses) in &graph {
        for used in uses {
            if graph.get(used).is_some_and(|back| back.contains(module)) && module < used {
                cycles.push(format!("{module} <-> {used}"));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that use each other:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_product_source_file_is_over_the_limit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let config_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ip-masq-config/src");
    source_files(&config_src, &mut files);
    let mut too_long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let lines = fs::read_to_string(file).expect("read").lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", file.display()))
        })
        .collect();
    too_long.sort();
    assert!(
        too_long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        too_long.join("\n")
    );
}

#[test]
fn the_reference_reader_finds_grouped_and_inline_paths() {
    let found = referenced_modules(
        "use crate::{\n    kernel::{datapath::Datapath, netlink},\n    model::Family,\n};\nfn f() { crate::serve::state::x(); }",
    );
    let found: BTreeSet<String> = found.iter().map(|p| p.join("::")).collect();
    assert!(found.contains("kernel::datapath::Datapath"), "{found:?}");
    assert!(found.contains("kernel::netlink"), "{found:?}");
    assert!(found.contains("model::Family"), "{found:?}");
    assert!(found.contains("serve::state::x"), "{found:?}");
}

/// Every host crate takes the workspace's lints; the eBPF crate builds for
/// its own target, where the entry points must stay `pub`, and is linted
/// there on its own.
#[test]
fn every_host_crate_opts_into_the_workspace_lints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|line| line.starts_with("default-members"))
        .expect("the workspace lists its default members");
    let members: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
    assert!(members.len() >= 5, "default-members not read: {line}");
    let missing: Vec<&str> = members
        .iter()
        .copied()
        .filter(|member| {
            let text = fs::read_to_string(root.join(member).join("Cargo.toml")).unwrap();
            !text.contains("[lints]\nworkspace = true")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "crates without `[lints] workspace = true`: {missing:?}"
    );
}

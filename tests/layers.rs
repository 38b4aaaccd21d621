//! Checks the import direction of the library's modules by reading `src/` as text.
//!
//! Layers by rank (a layer is `src/<layer>/**`, or `src/logging.rs`):
//! 0 `model`, `logging` · 1 `config` · 2 `kernel` · 3 `enrich` · 4 `usage` ·
//! 5 `output`, `api` · 6 `agent` · 7 `demo`.
//!
//! Every `crate::…`, `self::…` and `super::…` path counts: `use` items, nested
//! `use crate::{a::{b, c}, d as e}` groups, and paths in types and expressions.
//! Comments (doc comments too) and string literals are ignored; test code is checked.
//!
//! 1. A layer may reach itself and layers of lower rank only, so two layers of one
//!    rank (`model`/`logging`, `output`/`api`) may not reach each other. `crate::Error`
//!    and `crate::Result` are allowed everywhere; any other crate-root item is not a layer.
//! 2. `crate::config` may be reached only from `agent` and `demo`: components take
//!    their own settings types, which the agent builds from `Config`.
//! 3. No import cycle between files. Edges between a module and its ancestors or
//!    descendants (`mod child`, `super::`) are ignored, and test code may import
//!    anything from its own layer without creating a cycle.
//! 4. Every `.rs` file is in a layer, except `lib.rs` (module declarations and the
//!    crate `Error`) and the binary's `main.rs` and `cli.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Source files as (path relative to `src/`, text).
type Tree = Vec<(PathBuf, String)>;
/// File -> files it imports.
type Graph = BTreeMap<PathBuf, BTreeSet<PathBuf>>;
/// Module paths, as lists of segments.
type Paths = Vec<Vec<String>>;

/// Layers by rank, lowest first.
const LAYERS: [&[&str]; 8] = [
    &["model", "logging"],
    &["config"],
    &["kernel"],
    &["enrich"],
    &["usage"],
    &["output", "api"],
    &["agent"],
    &["demo"],
];
const CONFIG_USERS: &[&str] = &["agent", "demo"];
const ROOT_ITEMS: &[&str] = &["Error", "Result"];
const EXEMPT: &[&str] = &["lib.rs", "main.rs", "cli.rs"];

#[test]
fn modules_import_only_downward() {
    let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let mut tree = Tree::new();
    load(src, src, &mut tree);
    let errors = check(&tree);
    assert!(
        errors.is_empty(),
        "layer violations:\n{}",
        errors.join("\n")
    );
}

#[test]
fn checker_catches_violations() {
    let tree: Tree = SAMPLE
        .split("\n--- ")
        .skip(1)
        .map(|file| file.split_once('\n').unwrap_or((file, "")))
        .map(|(path, text)| (PathBuf::from(path), text.to_string()))
        .collect();
    let errors = check(&tree);
    let in_prose = |e: &String| e.contains("logging") || e.contains("model");
    assert!(
        !errors.iter().any(in_prose),
        "comment or string flagged: {errors:#?}"
    );
    let expected = [
        "import cycle: src/enrich/cache.rs -> src/enrich/pods.rs -> src/enrich/cache.rs",
        "src/api/mod.rs imports crate::demo::Fixture (api may not import demo)",
        "src/enrich/group.rs imports crate::output::X (enrich may not import output)",
        "src/enrich/mod.rs imports crate::config::Config (enrich may not import config)",
        "src/helpers.rs is in no layer",
        "src/kernel/mod.rs imports crate::agent::Agent (kernel may not import agent)",
        "src/output/mod.rs imports crate::api::Server (output may not import api)",
    ];
    assert_eq!(errors, expected);
}

/// A fake `src/`: each file starts with a `--- path` line.
const SAMPLE: &str = r#"
--- lib.rs
pub mod kernel; pub enum Error {} pub type Result<T> = std::result::Result<T, Error>;
--- main.rs
mod cli; use config_access_collector::agent::run; // the binary: exempt
--- helpers.rs
--- logging.rs
//! Formats chains like crate::agent::AgentError (prose only).
/// See crate::output::Sink.
pub fn chain() {}
--- model/mod.rs
/* crate::api::X */ pub fn f() -> crate::Result<()> { g("crate::demo::X") }
#[cfg(test)]
mod tests { use super::*; }
--- kernel/mod.rs
pub mod a; pub mod b; pub use self::a::A; use crate::agent::Agent; // upward
--- kernel/a.rs
use crate::model::Pod; use super::Settings; // child of kernel/mod.rs: no cycle
#[cfg(test)]
mod tests { use super::super::b::B; } // test code within its layer: no cycle
--- kernel/b.rs
pub fn f(_: super::a::A) {}
--- enrich/mod.rs
use crate::config::Config; // only agent and demo may
--- enrich/group.rs
use crate::{kernel::{a, b as bee}, output::X as Y, Error};
--- enrich/pods.rs
use super::cache::Cache; // sibling cycle
--- enrich/cache.rs
fn f(p: &crate::enrich::pods::PodStore) -> crate::Error { todo!() }
--- output/mod.rs
use crate::api::Server; // same rank
use crate::enrich::pods::PodStore;
--- api/mod.rs
#[cfg(test)]
mod tests { use crate::demo::Fixture; } // test code obeys the rules too
--- agent/mod.rs
use crate::config::Config;
use crate::{output::Sink, api::{self, Server}};
"#;

/// Reads every `.rs` file under `dir` into `tree`, with paths relative to `root`.
fn load(root: &Path, dir: &Path, tree: &mut Tree) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            load(root, &path, tree);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = fs::read_to_string(&path).expect("readable source");
            tree.push((path.strip_prefix(root).expect("under src").into(), text));
        }
    }
}

/// Every violation in `tree`, sorted and deduplicated.
fn check(tree: &[(PathBuf, String)]) -> Vec<String> {
    let exempt = |p: &Path| EXEMPT.iter().any(|e| p == Path::new(e));
    let library = tree
        .iter()
        .filter(|(p, _)| !exempt(p) || p == Path::new("lib.rs"));
    let modules: BTreeMap<_, _> = library.map(|(p, _)| (module_path(p), p)).collect();
    let (mut errors, mut graph) = (BTreeSet::new(), Graph::new());
    for (file, text) in tree.iter().filter(|(p, _)| !exempt(p)) {
        let (name, layer) = (format!("src/{}", file.display()), layer_of(file));
        if layer.is_none() {
            errors.insert(format!("{name} is in no layer"));
        }
        for (path, in_test) in references(file, text) {
            if let Some(why) = layer.as_deref().and_then(|from| forbidden(from, &path[0])) {
                errors.insert(format!("{name} imports crate::{} ({why})", path.join("::")));
            }
            let target = (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]));
            if let Some(&to) = target.filter(|to| counts_as_edge(file, to, in_test)) {
                graph.entry(file.clone()).or_default().insert(to.clone());
            }
        }
    }
    errors.extend(cycles(&graph));
    errors.into_iter().collect()
}

/// The layer of a file: `src/<layer>/…`, `src/<layer>.rs` or `src/logging.rs`.
fn layer_of(file: &Path) -> Option<String> {
    let first = module_path(file).into_iter().next()?;
    rank(&first).map(|_| first)
}

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|names| names.contains(&layer))
}

/// Why layer `from` may not reach the top-level item `to`, if it may not.
fn forbidden(from: &str, to: &str) -> Option<String> {
    if from == to || ROOT_ITEMS.contains(&to) {
        return None;
    }
    let Some(to_rank) = rank(to) else {
        return Some(format!("{to} is not a layer"));
    };
    let refused = to_rank >= rank(from)? || (to == "config" && !CONFIG_USERS.contains(&from));
    refused.then(|| format!("{from} may not import {to}"))
}

/// Whether an import of `to` by `from` belongs in the cycle graph.
fn counts_as_edge(from: &Path, to: &Path, in_test: bool) -> bool {
    let (a, b) = (module_path(from), module_path(to));
    let related = a.starts_with(&b) || b.starts_with(&a);
    !(related || in_test && layer_of(from) == layer_of(to))
}

/// `a/b/c.rs` -> `[a, b, c]`; `a/b/mod.rs` -> `[a, b]`; `lib.rs` -> `[]`.
fn module_path(file: &Path) -> Vec<String> {
    let stem = file.with_extension("");
    let mut segs: Vec<String> = stem.iter().map(|s| s.to_string_lossy().into()).collect();
    let last = segs.last().map(String::as_str);
    if last == Some("mod") || (segs.len() == 1 && matches!(last, Some("lib" | "main"))) {
        segs.pop();
    }
    segs
}

/// Absolute paths (without the leading `crate`) a file refers to, each flagged
/// when it is test code (inside `#[cfg(test)] mod … { }`, or in a `tests.rs`).
fn references(file: &Path, text: &str) -> Vec<(Vec<String>, bool)> {
    let toks = tokenize(&strip(text));
    let mut here = module_path(file);
    let test_file = here.last().is_some_and(|m| m == "tests");
    // Open inline `mod name { … }` blocks: brace depth outside, and whether test code.
    let mut open: Vec<(usize, bool)> = Vec::new();
    let (mut depth, mut cfg_test, mut out, mut i) = (0, false, Vec::new(), 0);
    while i < toks.len() {
        let tok = |k: usize| toks.get(k).map_or("", String::as_str);
        let in_test = test_file || open.iter().any(|o| o.1);
        match tok(i) {
            "crate" | "self" | "super" if tok(i + 1) == "::" => {
                let mut raw = Paths::new();
                i = parse_path(&toks, i, Vec::new(), &mut raw);
                let paths = raw.into_iter().filter_map(|p| absolute(&here, p));
                out.extend(paths.map(|p| (p, in_test)));
                continue;
            }
            "mod" if tok(i + 2) == "{" => {
                here.push(tok(i + 1).to_string());
                open.push((depth, cfg_test || in_test));
            }
            "cfg" => cfg_test |= [tok(i + 1), tok(i + 2), tok(i + 3)] == ["(", "test", ")"],
            "{" => (depth, cfg_test) = (depth + 1, false),
            ";" => cfg_test = false,
            "}" => {
                depth = depth.saturating_sub(1);
                if open.pop_if(|o| o.0 == depth).is_some() {
                    here.pop();
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Resolves the leading `crate`, `self` and `super` segments against module `here`.
fn absolute(here: &[String], raw: Vec<String>) -> Option<Vec<String>> {
    let mut segs = raw.into_iter().peekable();
    let mut abs = match segs.next_if(|s| s == "crate") {
        Some(_) => Vec::new(),
        None => here.to_vec(),
    };
    while let Some(seg) = segs.next_if(|s| s == "self" || s == "super") {
        if seg == "super" {
            abs.pop()?;
        }
    }
    abs.extend(segs);
    (!abs.is_empty()).then_some(abs)
}

/// Parses `a::b::{c, d::{e as f, self}, *}` at `toks[i]` onto `path`, pushing
/// each full path onto `out`; returns the index after it.
fn parse_path(toks: &[String], mut i: usize, mut path: Vec<String>, out: &mut Paths) -> usize {
    while let Some(tok) = toks.get(i) {
        match tok.as_str() {
            "{" => return parse_group(toks, i + 1, &path, out),
            "*" => i += 1,
            t if t.starts_with(|c: char| c.is_alphabetic() || c == '_') => {
                if t != "self" || path.is_empty() {
                    path.push(t.to_string());
                }
                i += 1;
            }
            _ => break,
        }
        if toks.get(i).is_none_or(|t| t != "::") {
            break;
        }
        i += 1;
    }
    out.push(path);
    i
}

/// Parses the items of a `{ … }` group that starts just before `toks[i]`.
fn parse_group(toks: &[String], mut i: usize, prefix: &[String], out: &mut Paths) -> usize {
    while i < toks.len() && toks[i] != "}" {
        i = match toks[i].as_str() {
            "," => i + 1,
            "as" => i + 2,
            _ => parse_path(toks, i, prefix.to_vec(), out).max(i + 1),
        };
    }
    i + 1
}

/// Splits code into identifiers, `::` and single punctuation characters.
fn tokenize(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let ident = |c: &char| c.is_alphanumeric() || *c == '_';
    let (mut toks, mut i) = (Vec::new(), 0);
    while i < chars.len() {
        let len = match chars[i] {
            c if ident(&c) => chars[i..].iter().take_while(|c| ident(c)).count(),
            ':' if chars.get(i + 1) == Some(&':') => 2,
            _ => 1,
        };
        if !chars[i].is_whitespace() {
            toks.push(chars[i..i + len].iter().collect());
        }
        i += len;
    }
    toks
}

/// Replaces comments (doc comments too), string and char literals by a space.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let find = |from: usize, pat: &[char]| (from..c.len()).find(|&k| c[k..].starts_with(pat));
    let (mut out, mut i) = (String::with_capacity(src.len()), 0);
    while i < c.len() {
        let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
        let end = match (c[i], c.get(i + 1), c.get(i + 2)) {
            ('/', Some('/'), _) => find(i, &['\n']),
            ('/', Some('*'), _) => find(i + 2, &['*', '/']).map(|k| k + 2),
            ('"', ..) => string_end(&c, i + 1),
            ('r', ..) if c.get(i + 1 + hashes) == Some(&'"') => {
                let close: Vec<char> = std::iter::once('"').chain(vec!['#'; hashes]).collect();
                find(i + 2 + hashes, &close).map(|k| k + close.len())
            }
            ('\'', Some('\\'), _) => find(i + 3, &['\'']).map(|k| k + 1),
            ('\'', Some(_), Some('\'')) => Some(i + 3),
            (ch, ..) => {
                out.push(ch);
                i += 1;
                continue;
            }
        };
        out.push(' ');
        i = end.unwrap_or(c.len());
    }
    out
}

/// Index after the closing quote of a string whose body starts at `c[i]`.
fn string_end(c: &[char], mut i: usize) -> Option<usize> {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Import cycles found by depth-first search, each starting at its least file.
fn cycles(graph: &Graph) -> BTreeSet<String> {
    let (mut done, mut found) = (BTreeSet::new(), BTreeSet::new());
    for start in graph.keys() {
        visit(graph, start, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn visit<'g>(
    graph: &'g Graph,
    node: &'g PathBuf,
    stack: &mut Vec<&'g PathBuf>,
    done: &mut BTreeSet<&'g PathBuf>,
    found: &mut BTreeSet<String>,
) {
    if let Some(pos) = stack.iter().position(|n| *n == node) {
        let mut cycle = stack[pos..].to_vec();
        let least = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
        cycle.rotate_left(least);
        let names: Vec<String> = cycle
            .iter()
            .chain(&cycle[..1])
            .map(|f| format!("src/{}", f.display()))
            .collect();
        found.insert(format!("import cycle: {}", names.join(" -> ")));
    } else if done.insert(node) {
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            visit(graph, next, stack, done, found);
        }
        stack.pop();
    }
}

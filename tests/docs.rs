//! The documentation against the code. `docs/configuration.md`'s key table
//! (between `<!-- config-keys:begin -->` and `<!-- config-keys:end -->`) must
//! list exactly the keys the real binary resolves (`--print-config`), with
//! their defaults, and every flag of `run --help` and every `CAC_*` variable
//! the code reads; each flag and variable of a row must set that row's key
//! and no other. The `kernel_collector:` table must list exactly the keys the
//! binary accepts in that block, the error example must be what the binary
//! prints, and `config/config.yaml` must parse and show the defaults. Every
//! relative link (and `#anchor`) in README.md and docs/*.md must resolve.
//! Each checker returns its findings, so the negative tests feed it broken
//! documents and expect the breakage to be named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_config-access-collector");
const CONFIG_DOC: &str = "docs/configuration.md";
/// A key no version of the collector accepts: the parser's error for it
/// lists the keys that are accepted.
const MADE_UP_KEY: &str = "zz_made_up_key";
/// Values tried, in order, for a flag or variable whose row gives none: the
/// first one the binary accepts must change the row's key.
const CANDIDATES: [&str; 7] = [
    "8388608",
    "grpc",
    "drop",
    "debug",
    "http://127.0.0.1:4318",
    "127.0.0.1:9",
    "/tmp/cac-docs-test",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every source file of the config layer (`src/config/`), concatenated.
fn read_config_source() -> String {
    let mut files: Vec<_> = std::fs::read_dir(root().join("src/config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Runs the binary with only `env` in its environment (no `OTEL_*`, `CAC_*`
/// or `NODE_NAME` from the test's own).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(EXE)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {EXE}: {e}"))
}

type Resolved = BTreeMap<String, Value>;

/// `--print-config` with `args` and `env`: the resolved keys, or the error output.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> Result<Resolved, String> {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    let out = run(&all, env);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("--print-config printed no JSON object: {e}"))
}

fn defaults() -> Resolved {
    print_config(&[], &[]).expect("--print-config with no settings")
}

/// A YAML file in a temporary directory.
fn yaml_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The keys the binary's config parser accepts at `nesting` (`""` for the
/// top level, `"kernel_collector"` for that block), from its error for an
/// unknown key ("unknown field `x`, expected one of `a`, `b`, ...").
fn accepted_keys(nesting: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let text = if nesting.is_empty() {
        format!("{MADE_UP_KEY}: 1\n")
    } else {
        format!("{nesting}:\n  {MADE_UP_KEY}: 1\n")
    };
    let path = yaml_file(&dir, &text);
    let err = print_config(&["--config", path.to_str().unwrap()], &[])
        .expect_err("a made-up key must be rejected");
    assert!(
        err.contains(MADE_UP_KEY),
        "the error does not name the key: {err}"
    );
    let list = err
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("the error lists no accepted keys: {err}"))
        .1;
    list.split(", ")
        .map_while(|k| k.strip_prefix('`')?.split('`').next().map(str::to_string))
        .collect()
}

// ------------------------------------------------------------- markdown tables

/// The text between `<!-- {name}:begin -->` and `<!-- {name}:end -->`.
fn marked<'a>(doc: &'a str, name: &str) -> Result<&'a str, String> {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start = doc.find(&begin).ok_or(format!("no {begin}"))? + begin.len();
    let stop = doc[start..].find(&end).ok_or(format!("no {end}"))? + start;
    Ok(&doc[start..stop])
}

/// Cells of each table row (header and separator included), trimmed.
fn table(block: &str) -> Vec<Vec<String>> {
    block
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The contents of the `code spans` of a cell.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// One row of the key table.
#[derive(Debug, Clone)]
struct KeyRow {
    keys: Vec<String>,
    flags: Vec<String>,
    /// Variable names, with the value the row gives (`OTEL_LOGS_EXPORTER=otlp`).
    env: Vec<(String, Option<String>)>,
    /// The default as written (a YAML value), `None` for an empty cell.
    default: Option<String>,
}

/// A config key's spelling: `snake_case`.
fn is_key_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An environment variable's spelling: `UPPER_CASE`.
fn is_variable(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The rows of the `config-keys` table of `doc`.
fn key_table(doc: &str) -> Result<Vec<KeyRow>, String> {
    let rows = table(marked(doc, "config-keys")?);
    let header = ["key", "flag", "environment", "default", "meaning"];
    if rows.first().map(|h| h.as_slice()) != Some(&header.map(String::from)[..]) {
        return Err(format!("the key table's header is not {header:?}"));
    }
    let mut out = Vec::new();
    for cells in rows.iter().skip(2) {
        let [key, flag, env, default, _meaning] = cells.as_slice() else {
            return Err(format!(
                "a key table row has {} cells: {cells:?}",
                cells.len()
            ));
        };
        let keys = code_spans(key);
        if let Some(k) = keys.iter().find(|k| !is_key_name(k)) {
            return Err(format!("`{k}` in the key column is not a key name"));
        }
        let flags = code_spans(flag);
        if let Some(f) = flags.iter().find(|f| !f.starts_with("--")) {
            return Err(format!("`{f}` in the flag column is not a --flag"));
        }
        let mut vars = Vec::new();
        for span in code_spans(env) {
            let (name, value) = match span.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (span.clone(), None),
            };
            if !is_variable(&name) {
                return Err(format!(
                    "`{span}` in the environment column is not a variable"
                ));
            }
            vars.push((name, value));
        }
        let default = match code_spans(default).as_slice() {
            [] if default.is_empty() => None,
            [one] if default == &format!("`{one}`") => Some(one.clone()),
            _ => return Err(format!("default cell {default:?} is not one code span")),
        };
        out.push(KeyRow {
            keys,
            flags,
            env: vars,
            default,
        });
    }
    Ok(out)
}

/// Findings: documented keys against the resolved configuration, and each
/// documented default against the resolved default.
fn check_keys(rows: &[KeyRow], resolved: &Resolved) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for row in rows {
        for key in &row.keys {
            if !seen.insert(key.clone()) {
                problems.push(format!("{key} is documented twice"));
            }
            let Some(actual) = resolved.get(key) else {
                problems.push(format!(
                    "{key} is documented but --print-config has no such key"
                ));
                continue;
            };
            let documented = match &row.default {
                None => Value::Null,
                Some(text) => match serde_yaml_ng::from_str::<Value>(text) {
                    Ok(v) => v,
                    Err(e) => {
                        problems.push(format!("{key}: default `{text}` is not YAML: {e}"));
                        continue;
                    }
                },
            };
            if &documented != actual {
                problems.push(format!(
                    "{key}: documented default {documented} but --print-config says {actual}"
                ));
            }
        }
    }
    for key in resolved.keys().filter(|k| !seen.contains(*k)) {
        problems.push(format!("{key} is in --print-config but not documented"));
    }
    problems
}

// ------------------------------------------------------------------- --help

/// A flag of `run --help`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HelpFlag {
    takes_value: bool,
    env: Option<String>,
}

/// The long flags of clap's help text, with their `[env: NAME=]`.
fn parse_help(text: &str) -> BTreeMap<String, HelpFlag> {
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            let long = trimmed
                .split_whitespace()
                .map(|t| t.trim_end_matches(','))
                .find(|t| t.starts_with("--"));
            current = long.map(str::to_string);
            if let Some(flag) = &current {
                let takes_value = trimmed.contains(&format!("{flag} <"));
                flags.insert(
                    flag.clone(),
                    HelpFlag {
                        takes_value,
                        env: None,
                    },
                );
            }
        }
        if let (Some(flag), Some((_, rest))) = (&current, line.split_once("[env: ")) {
            if let Some((name, _)) = rest.split_once('=') {
                flags.get_mut(flag).unwrap().env = Some(name.to_string());
            }
        }
    }
    flags.remove("--help");
    flags
}

fn run_help() -> BTreeMap<String, HelpFlag> {
    let out = run(&["run", "--help"], &[]);
    assert!(out.status.success(), "run --help failed");
    let flags = parse_help(&String::from_utf8_lossy(&out.stdout));
    assert!(
        flags.len() > 5 && flags.contains_key("--config"),
        "run --help was not parsed: {flags:?}"
    );
    flags
}

/// Findings: the documented flags against `run --help`, and each flag's
/// variable in the flag's row.
fn check_flags(rows: &[KeyRow], help: &BTreeMap<String, HelpFlag>) -> Vec<String> {
    let mut problems = Vec::new();
    let documented: BTreeSet<&String> = rows.iter().flat_map(|r| &r.flags).collect();
    for flag in help.keys().filter(|f| !documented.contains(f)) {
        problems.push(format!("{flag} is in run --help but not documented"));
    }
    for flag in documented.iter().filter(|f| !help.contains_key(**f)) {
        problems.push(format!("{flag} is documented but not in run --help"));
    }
    for row in rows {
        for flag in &row.flags {
            let Some(env) = help.get(flag).and_then(|h| h.env.as_ref()) else {
                continue;
            };
            if !row.env.iter().any(|(name, _)| name == env) {
                problems.push(format!("{flag} reads {env}, which is not in the same row"));
            }
        }
    }
    problems
}

/// The keys whose values differ between two configurations.
fn changed(a: &Resolved, b: &Resolved) -> BTreeSet<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// The finding for `what` (a flag or variable) of `key`'s row: the first of
/// `attempts` the binary accepts must change `key` and nothing else.
fn one_key_changed(
    what: &str,
    key: &str,
    defaults: &Resolved,
    attempts: impl Iterator<Item = Result<Resolved, String>>,
) -> Option<String> {
    let mut last = String::from("no attempt");
    for attempt in attempts {
        match attempt {
            Ok(resolved) => {
                let diff = changed(defaults, &resolved);
                return (diff != BTreeSet::from([key.to_string()]))
                    .then(|| format!("{what} changes {diff:?}, not just {key}"));
            }
            Err(e) => last = e,
        }
    }
    Some(format!("{what}: no value was accepted; last error: {last}"))
}

/// Findings: each flag and variable of a one-key row, set alone, changes that
/// key and nothing else.
fn check_mappings(
    rows: &[KeyRow],
    help: &BTreeMap<String, HelpFlag>,
    defaults: &Resolved,
) -> Vec<String> {
    let mut problems = Vec::new();
    for row in rows {
        let [key] = row.keys.as_slice() else { continue };
        for flag in &row.flags {
            let switch = help.get(flag).is_some_and(|h| !h.takes_value);
            let values: Vec<Option<&str>> = if switch {
                vec![None]
            } else {
                CANDIDATES.iter().copied().map(Some).collect()
            };
            let attempts = values.into_iter().map(|v| {
                let mut args = vec![flag.as_str()];
                args.extend(v);
                print_config(&args, &[])
            });
            problems.extend(one_key_changed(flag, key, defaults, attempts));
        }
        for (name, value) in &row.env {
            let switch = help
                .values()
                .any(|h| !h.takes_value && h.env.as_deref() == Some(name.as_str()));
            let values: Vec<&str> = match value {
                Some(v) => vec![v],
                None if switch => vec!["true"],
                None => CANDIDATES.to_vec(),
            };
            let attempts = values
                .into_iter()
                .map(|v| print_config(&[], &[(name.as_str(), v)]));
            problems.extend(one_key_changed(name, key, defaults, attempts));
        }
    }
    problems
}

/// String literals in `text` that start with `prefix` and are all capitals,
/// digits and underscores (`"CAC_CONFIG"`).
fn variable_literals(text: &str, prefix: &str) -> BTreeSet<String> {
    text.split('"')
        .filter(|s| s.starts_with(prefix) && is_variable(s))
        .map(str::to_string)
        .collect()
}

// -------------------------------------------------------------------- links

/// The anchors GitHub gives the headings of a markdown text.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim().to_lowercase();
        let slug: String = title
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        out.insert(slug);
    }
    out
}

/// Findings: relative link targets of `text` (the markdown file `file`) that
/// do not exist, and `#anchors` that name no heading.
fn check_links(file: &Path, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split_whitespace().next().unwrap_or_default();
            if target.is_empty()
                || ["http://", "https://", "mailto:"]
                    .iter()
                    .any(|p| target.starts_with(p))
            {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target, None),
            };
            let resolved = if path.is_empty() {
                file.to_path_buf()
            } else {
                file.parent().unwrap().join(path)
            };
            let at = format!("{}:{}", file.display(), n + 1);
            if !resolved.exists() {
                problems.push(format!("{at}: {target} does not exist"));
                continue;
            }
            if let Some(anchor) = anchor {
                let md = resolved.extension().is_some_and(|e| e == "md");
                let heads = md
                    .then(|| std::fs::read_to_string(&resolved).ok())
                    .flatten()
                    .map(|t| anchors(&t))
                    .unwrap_or_default();
                if !heads.contains(anchor) {
                    problems.push(format!("{at}: {target} names no heading"));
                }
            }
        }
    }
    problems
}

fn documentation_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn assert_none(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// -------------------------------------------------------------------- tests

#[test]
fn configuration_keys_and_defaults_are_those_of_print_config() {
    let rows = key_table(&read(CONFIG_DOC)).unwrap();
    assert_none(
        &format!("{CONFIG_DOC} against --print-config"),
        &check_keys(&rows, &defaults()),
    );
}

#[test]
fn documented_keys_are_the_keys_the_config_file_accepts() {
    let rows = key_table(&read(CONFIG_DOC)).unwrap();
    let documented: BTreeSet<String> = rows.iter().flat_map(|r| r.keys.clone()).collect();
    let mut top = accepted_keys("");
    assert!(
        top.remove("kernel_collector"),
        "no kernel_collector block: {top:?}"
    );
    assert_eq!(
        documented, top,
        "documented keys vs the keys a config file may set"
    );

    let doc = read(CONFIG_DOC);
    let block: BTreeSet<String> = table(marked(&doc, "kernel-collector-keys").unwrap())
        .iter()
        .skip(2)
        .flat_map(|cells| code_spans(&cells[0]))
        .collect();
    assert_eq!(
        block,
        accepted_keys("kernel_collector"),
        "the kernel_collector table vs the keys the binary accepts in that block"
    );
}

#[test]
fn every_run_flag_and_variable_is_documented_and_sets_its_key() {
    let doc = read(CONFIG_DOC);
    let rows = key_table(&doc).unwrap();
    let help = run_help();
    assert_none("flags of run --help", &check_flags(&rows, &help));
    assert_none(
        "flags and variables against the keys they set",
        &check_mappings(&rows, &help, &defaults()),
    );

    // Every CAC_* variable the code reads is in the table, and the table
    // names no other; every OTEL_* variable the config code reads is on the page.
    let source = read_config_source() + &read("src/main.rs");
    let in_code = variable_literals(&source, "CAC_");
    let in_table: BTreeSet<String> = rows
        .iter()
        .flat_map(|r| r.env.iter().map(|(n, _)| n.clone()))
        .filter(|n| n.starts_with("CAC_"))
        .collect();
    assert_eq!(in_code, in_table, "CAC_* variables: code vs the key table");
    let otel = variable_literals(&read_config_source(), "OTEL_");
    assert!(
        otel.len() >= 5,
        "no OTEL_* literals found in src/config/: {otel:?}"
    );
    for name in otel {
        assert!(
            doc.contains(&name),
            "{name} is read in src/config/ but not in {CONFIG_DOC}"
        );
    }
}

#[test]
fn error_example_is_what_the_binary_prints() {
    let doc = read(CONFIG_DOC);
    let block = marked(&doc, "error-example").unwrap();
    let fence = |info: &str| -> String {
        let open = format!("```{info}\n");
        let start = block
            .find(&open)
            .unwrap_or_else(|| panic!("no {open:?} fence"))
            + open.len();
        let len = block[start..].find("```").expect("an unclosed fence");
        block[start..start + len].to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = yaml_file(&dir, &fence("yaml"));
    let err = print_config(&["--config", path.to_str().unwrap()], &[])
        .expect_err("the example configuration must be rejected");
    assert_eq!(err.trim(), fence("text").trim());
}

#[test]
fn example_config_parses_and_holds_the_defaults() {
    let path = root().join("config/config.yaml");
    let resolved = print_config(&["--config", path.to_str().unwrap()], &[])
        .unwrap_or_else(|e| panic!("config/config.yaml is rejected: {e}"));
    // Its header says "every key is optional; defaults shown".
    let diff = changed(&defaults(), &resolved);
    assert!(
        diff.is_empty(),
        "config/config.yaml sets non-default values for {diff:?}"
    );
}

#[test]
fn relative_links_and_anchors_resolve() {
    let files = documentation_files();
    assert!(files.len() > 5, "documentation files: {files:?}");
    let problems: Vec<String> = files
        .iter()
        .flat_map(|f| check_links(f, &std::fs::read_to_string(f).unwrap()))
        .collect();
    assert_none("broken links", &problems);
}

// ------------------------------------------- the checkers catch what they should

/// The configuration page with `edit` applied to its text.
fn edited(edit: impl FnOnce(String) -> String) -> String {
    let doc = read(CONFIG_DOC);
    let out = edit(doc.clone());
    assert_ne!(out, doc, "the edit changed nothing");
    out
}

fn mentions(problems: &[String], word: &str) -> bool {
    problems.iter().any(|p| p.contains(word))
}

#[test]
fn key_check_names_made_up_missing_and_wrong_keys() {
    let doc = edited(|d| {
        d.replace(
            "<!-- config-keys:end -->",
            &format!("| `{MADE_UP_KEY}` | | | `1` | not a key |\n<!-- config-keys:end -->"),
        )
        .replace("| `stdout` |", "| `stdout_typo` |")
        .replace(
            "| `buffer_size` | | | `4096` |",
            "| `buffer_size` | | | `4095` |",
        )
    });
    let problems = check_keys(&key_table(&doc).unwrap(), &defaults());
    for word in [
        MADE_UP_KEY,
        "stdout_typo",
        "stdout is in --print-config",
        "buffer_size",
    ] {
        assert!(
            mentions(&problems, word),
            "{word} not reported: {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");
    // A malformed cell is an error of its own, not a silent skip.
    let bad = edited(|d| {
        d.replace(
            "| `buffer_size` | | | `4096` |",
            "| `buffer_size` | | | 4096 |",
        )
    });
    assert!(key_table(&bad).is_err());
}

#[test]
fn flag_check_names_undocumented_unknown_and_misplaced_flags() {
    let doc = edited(|d| {
        d.replace("`--otlp-logs`", "`--made-up-flag`").replace(
            "| `--kubelet-root` | `CAC_KUBELET_ROOT` |",
            "| `--kubelet-root` | |",
        )
    });
    let problems = check_flags(&key_table(&doc).unwrap(), &run_help());
    for word in ["--otlp-logs", "--made-up-flag", "CAC_KUBELET_ROOT"] {
        assert!(
            mentions(&problems, word),
            "{word} not reported: {problems:#?}"
        );
    }
}

#[test]
fn mapping_check_names_a_flag_in_the_wrong_row() {
    let rows = vec![
        KeyRow {
            keys: vec!["buffer_size".into()],
            flags: vec!["--kubelet-root".into()],
            env: vec![("CAC_NO_KUBE".into(), None)],
            default: Some("4096".into()),
        },
        KeyRow {
            keys: vec!["kube".into()],
            flags: vec!["--no-kube".into()],
            env: vec![("CAC_NO_KUBE".into(), None)],
            default: Some("auto".into()),
        },
    ];
    let problems = check_mappings(&rows, &run_help(), &defaults());
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("--kubelet-root changes {\"kubelet_root\"}"),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with("CAC_NO_KUBE changes {\"kube\"}"),
        "{problems:#?}"
    );
}

#[test]
fn link_check_names_missing_files_and_anchors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("other.md"),
        "# Other\n\n## A section, with `code`\n",
    )
    .unwrap();
    let page = dir.path().join("page.md");
    let text = "# Page\n\n[ok](other.md) [ok](other.md#a-section-with-code) [ok](#page) [web](https://example.com/x)\n\
                [gone](missing.md) [bad anchor](other.md#nowhere)\n\n```\n[in code](not-checked.md)\n```\n";
    std::fs::write(&page, text).unwrap();
    let problems = check_links(&page, text);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        mentions(&problems, "missing.md does not exist"),
        "{problems:#?}"
    );
    assert!(
        mentions(&problems, "other.md#nowhere names no heading"),
        "{problems:#?}"
    );
}

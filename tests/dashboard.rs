//! The Grafana dashboard (`charts/config-access-collector/dashboards/`, linked
//! from `docs/grafana-dashboard.json`) queries only what the collector really
//! exports. Every PromQL query of a panel or a template variable is taken
//! apart by a small tokenizer; each metric it names must be a series of the
//! real collector's `/metrics` after Secret, ConfigMap, token and denied
//! accesses, and each label it selects on or groups by must be on that
//! series. Then a real Prometheus scrapes the collector and runs every query
//! with the variables resolved as Grafana resolves them: each returns data,
//! and the labels its legend names are on the result.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::receivers::{self, scrape, Prometheus};
use common::{privileged, read_volumes, wait, Harness};
use config_access_collector::config::Config;
use config_access_collector::demo::container::ExecArgs;
use serde_json::Value;

const CID: &str = "7c1d2e3f405162738495a6b7c8d9e0f17c1d2e3f405162738495a6b7c8d9e0f1";

/// The dashboard, where the Helm chart picks it up.
const DASHBOARD: &str = "charts/config-access-collector/dashboards/config-access-collector.json";
/// The link to it from the documentation.
const DOCS_LINK: &str = "docs/grafana-dashboard.json";

/// Labels Prometheus adds to every scraped series: never in `/metrics`
/// itself, checked in the Prometheus part of the test.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// PromQL aggregation operators: may be followed by `by`/`without` before their `(`.
const AGGREGATIONS: &str =
    "sum avg min max count group stddev stdvar topk bottomk quantile count_values limitk limit_ratio";

/// Keywords that take a parenthesised list of label names.
const LABEL_LISTS: &str = "by without on ignoring group_left group_right";

/// Other PromQL keywords (and the `Inf`/`NaN` literals): not metric names.
const KEYWORDS: &str = "and or unless bool offset atan2 inf nan";

/// Whether `word` is one of the space-separated `words` (PromQL keywords are case-insensitive).
fn one_of(words: &str, word: &str) -> bool {
    words.split(' ').any(|w| w.eq_ignore_ascii_case(word))
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load_dashboard() -> Value {
    let path = root().join(DASHBOARD);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

// ---------------------------------------------------------------------------
// The queries of the dashboard

/// A PromQL query of a panel and where it is.
#[derive(Debug, Clone)]
struct PanelQuery {
    place: String,
    expr: String,
    legend: Option<String>,
}

/// Every `expr` of the dashboard outside the template variables: panels, the
/// panels of collapsed rows, annotations; with the titles leading to it.
fn panel_queries(dash: &Value) -> Vec<PanelQuery> {
    fn walk(v: &Value, place: &str, out: &mut Vec<PanelQuery>) {
        match v {
            Value::Object(m) => {
                let place = match m.get("title").and_then(Value::as_str) {
                    Some(t) if place.is_empty() => t.to_string(),
                    Some(t) => format!("{place} > {t}"),
                    None => place.to_string(),
                };
                if let Some(expr) = m.get("expr") {
                    let expr = expr
                        .as_str()
                        .unwrap_or_else(|| panic!("{place}: expr is not a string"));
                    let refid = m.get("refId").and_then(Value::as_str).unwrap_or("?");
                    out.push(PanelQuery {
                        place: format!("{place} [{refid}]"),
                        expr: expr.to_string(),
                        legend: m
                            .get("legendFormat")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    });
                }
                for v in m.values() {
                    walk(v, &place, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, place, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (key, v) in dash.as_object().expect("dashboard object") {
        if key != "templating" {
            walk(v, "", &mut out);
        }
    }
    out
}

/// A query template variable.
#[derive(Debug, Clone)]
struct Variable {
    name: String,
    query: String,
    all_value: Option<String>,
}

/// The `query` variables, in dashboard order (the order Grafana resolves them in).
fn variables(dash: &Value) -> Vec<Variable> {
    dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let name = v["name"].as_str().expect("variable name").to_string();
            // A string, or the query editor's object form.
            let query = v["query"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .unwrap_or_else(|| panic!("variable {name}: no query"))
                .to_string();
            Variable {
                name,
                query,
                all_value: v["allValue"].as_str().map(str::to_string),
            }
        })
        .collect()
}

/// Grafana's `label_values(selector, label)` or `label_values(label)`.
fn parse_label_values(q: &str) -> Result<(Option<String>, String), String> {
    let inner = q
        .trim()
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("not label_values(...): {q}"))?;
    // The last comma outside brackets and strings separates the label.
    let chars: Vec<char> = inner.chars().collect();
    let (mut depth, mut i, mut split) = (0i32, 0, None);
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(&chars, i)?;
                continue;
            }
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => split = Some(i),
            _ => {}
        }
        i += 1;
    }
    let (selector, label) = match split {
        Some(at) => (
            Some(chars[..at].iter().collect::<String>().trim().to_string()),
            chars[at + 1..]
                .iter()
                .collect::<String>()
                .trim()
                .to_string(),
        ),
        None => (None, inner.trim().to_string()),
    };
    let ident = label.chars().next().is_some_and(is_ident_start)
        && label.chars().all(|c| is_ident_char(c) && c != ':');
    if !ident {
        return Err(format!("`{label}` is not a label name in {q}"));
    }
    Ok((selector, label))
}

// ---------------------------------------------------------------------------
// A PromQL tokenizer, just enough to find metric and label names

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An identifier not followed by `(`: a metric name, a keyword, or a label of a list.
    Name(String),
    /// An identifier followed by `(`: a function, an aggregation, `by`, `on`, ...
    Call(String),
    /// The label names a `{...}` selector matches on.
    Matchers(Vec<String>),
    Open,
    Close,
    Comma,
    /// Numbers, durations, strings, `[...]` ranges, operators, Grafana variables.
    Other,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal opening at `i`.
fn skip_string(c: &[char], i: usize) -> Result<usize, String> {
    let quote = c[i];
    let mut j = i + 1;
    while j < c.len() {
        if c[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if c[j] == quote {
            return Ok(j + 1);
        }
        j += 1;
    }
    Err(format!("unterminated string at {i}"))
}

fn skip_space(c: &[char], mut i: usize) -> usize {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Label names of the selector whose `{` is at `i`, and the index past its `}`.
fn matchers(c: &[char], i: usize) -> Result<(Vec<String>, usize), String> {
    let mut labels = Vec::new();
    let mut j = i + 1;
    loop {
        j = skip_space(c, j);
        match c.get(j) {
            Some('}') => return Ok((labels, j + 1)),
            Some(&ch) if is_ident_start(ch) => {
                let start = j;
                while j < c.len() && is_ident_char(c[j]) {
                    j += 1;
                }
                labels.push(c[start..j].iter().collect());
            }
            _ => return Err(format!("expected a label name at {j}")),
        }
        j = skip_space(c, j);
        let op: String = c[j..].iter().take(2).collect();
        j += match op.as_str() {
            "=~" | "!~" | "!=" => 2,
            _ if op.starts_with('=') => 1,
            _ => return Err(format!("expected a matcher operator at {j}")),
        };
        j = skip_space(c, j);
        if !matches!(c.get(j), Some('"' | '\'' | '`')) {
            return Err(format!("expected a quoted label value at {j}"));
        }
        j = skip_space(c, skip_string(c, j)?);
        match c.get(j) {
            Some(',') => j += 1,
            Some('}') => {}
            _ => return Err(format!("expected `,` or `}}` at {j}")),
        }
    }
}

fn lex(expr: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '#' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if matches!(ch, '"' | '\'' | '`') {
            i = skip_string(&c, i)?;
            out.push(Tok::Other);
        } else if ch == '{' {
            let (labels, next) = matchers(&c, i)?;
            out.push(Tok::Matchers(labels));
            i = next;
        } else if ch == '[' {
            // A range or subquery (or Grafana's old `[[var]]`): no names inside.
            let close = if c.get(i + 1) == Some(&'[') {
                "]]"
            } else {
                "]"
            };
            let rest: String = c[i..].iter().collect();
            let end = rest
                .find(close)
                .ok_or_else(|| format!("unterminated `[` at {i}"))?;
            i += rest[..end + close.len()].chars().count();
            out.push(Tok::Other);
        } else if ch == '(' {
            out.push(Tok::Open);
            i += 1;
        } else if ch == ')' {
            out.push(Tok::Close);
            i += 1;
        } else if ch == ',' {
            out.push(Tok::Comma);
            i += 1;
        } else if ch == '$' {
            // A Grafana variable: `${name}` or `$name`.
            i += 1;
            if c.get(i) == Some(&'{') {
                while i < c.len() && c[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
            out.push(Tok::Other);
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers (1, 0.99, 1e-3, 0x1f) and durations (5m, 1h30m).
            i += 1;
            while i < c.len() {
                let exp_sign = matches!(c[i], '+' | '-') && matches!(c[i - 1], 'e' | 'E');
                if c[i].is_ascii_alphanumeric() || c[i] == '.' || c[i] == '_' || exp_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Tok::Other);
        } else if is_ident_start(ch) {
            let start = i;
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
            let name: String = c[start..i].iter().collect();
            if c.get(skip_space(&c, i)) == Some(&'(') {
                out.push(Tok::Call(name));
            } else {
                out.push(Tok::Name(name));
            }
        } else {
            // Operators: + - * / % ^ == != < > <= >= @ ...
            i += 1;
            out.push(Tok::Other);
        }
    }
    Ok(out)
}

/// What one PromQL expression refers to.
#[derive(Debug, Default, PartialEq)]
struct Uses {
    /// Metric names, each with the labels its selector matches on.
    metrics: Vec<(String, Vec<String>)>,
    /// Label lists (`by`, `without`, `on`, `group_left`, ...), each with the
    /// metrics it applies to: one of them must carry each label.
    groupings: Vec<(Vec<String>, Vec<String>)>,
}

impl Uses {
    fn metric_names(&self) -> BTreeSet<&str> {
        self.metrics.iter().map(|(m, _)| m.as_str()).collect()
    }
}

fn uses(expr: &str) -> Result<Uses, String> {
    let toks = lex(expr)?;
    // Matching parentheses.
    let mut pair = BTreeMap::new();
    let mut stack = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Open => stack.push(i),
            Tok::Close => {
                let o = stack.pop().ok_or("unbalanced `)`")?;
                pair.insert(o, i);
                pair.insert(i, o);
            }
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("unbalanced `(`".into());
    }
    let is_agg =
        |t: Option<&Tok>| matches!(t, Some(Tok::Name(n) | Tok::Call(n)) if one_of(AGGREGATIONS, n));

    // Label lists first: their names are not metrics.
    let mut in_list = BTreeSet::new();
    let mut lists = Vec::new(); // (keyword index, labels, index of the list's `)`)
    for (i, t) in toks.iter().enumerate() {
        let Tok::Call(kw) = t else { continue };
        if !one_of(LABEL_LISTS, kw) {
            continue;
        }
        let close = pair[&(i + 1)];
        let mut labels = Vec::new();
        for (j, t) in toks.iter().enumerate().take(close).skip(i + 2) {
            match t {
                Tok::Name(l) => labels.push(l.clone()),
                Tok::Comma => {}
                other => return Err(format!("unexpected {other:?} in the `{kw}` list")),
            }
            in_list.insert(j);
        }
        lists.push((i, labels, close));
    }

    let mut metric_at = BTreeMap::new();
    let mut u = Uses::default();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Name(n) if !in_list.contains(&i) => {
                let keyword = one_of(KEYWORDS, n)
                    || one_of(LABEL_LISTS, n)
                    || (one_of(AGGREGATIONS, n) && matches!(toks.get(i + 1), Some(Tok::Call(_))));
                if keyword {
                    continue;
                }
                let labels = match toks.get(i + 1) {
                    Some(Tok::Matchers(l)) => l.clone(),
                    _ => Vec::new(),
                };
                metric_at.insert(i, n.clone());
                u.metrics.push((n.clone(), labels));
            }
            Tok::Matchers(_) if !(i > 0 && metric_at.contains_key(&(i - 1))) => {
                return Err("a selector without a metric name".into());
            }
            _ => {}
        }
    }
    let metrics_in = |from: usize, to: usize| -> Vec<String> {
        metric_at.range(from..=to).map(|(_, m)| m.clone()).collect()
    };

    for (i, labels, close) in lists {
        let Tok::Call(kw) = &toks[i] else {
            unreachable!()
        };
        let scope = match kw.to_ascii_lowercase().as_str() {
            "by" | "without" => {
                if i > 0 && is_agg(toks.get(i - 1)) {
                    // `sum by (l) (expr)`
                    let open = close + 1;
                    if toks.get(open) != Some(&Tok::Open) {
                        return Err(format!("`{kw} (...)` not followed by `(`"));
                    }
                    metrics_in(open, pair[&open])
                } else if i > 0 && toks[i - 1] == Tok::Close {
                    // `sum (expr) by (l)`
                    let open = pair[&(i - 1)];
                    if !(open > 0 && is_agg(toks.get(open - 1))) {
                        return Err(format!("`{kw}` after a call that is not an aggregation"));
                    }
                    metrics_in(open, i - 1)
                } else {
                    return Err(format!("`{kw}` outside an aggregation"));
                }
            }
            // Vector matching: the labels of either side.
            _ => metric_at.values().cloned().collect(),
        };
        u.groupings.push((labels, scope));
    }
    Ok(u)
}

// ---------------------------------------------------------------------------
// The collector's series

/// The series of a Prometheus text exposition: sample name → label names.
fn series(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if !line[end..].starts_with('{') {
            continue;
        }
        let c: Vec<char> = line[end + 1..].chars().collect();
        let mut i = 0;
        while i < c.len() && c[i] != '}' {
            let start = i;
            while i < c.len() && c[i] != '=' {
                i += 1;
            }
            labels.insert(c[start..i].iter().collect::<String>().trim().to_string());
            i = skip_string(&c, i + 1).expect("quoted label value");
            if c.get(i) == Some(&',') {
                i += 1;
            }
        }
    }
    out
}

/// Metric families of a Prometheus text exposition (`# TYPE` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn has_label(series: &BTreeMap<String, BTreeSet<String>>, metric: &str, label: &str) -> bool {
    TARGET_LABELS.contains(&label)
        || label == "__name__"
        || series.get(metric).is_some_and(|l| l.contains(label))
}

/// What is wrong with `expr` against the exported `series`: metrics that are
/// not exported, labels that are not on the metric they select or group.
fn problems(expr: &str, series: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let u = match uses(expr) {
        Ok(u) => u,
        Err(e) => return vec![format!("cannot take the query apart: {e}")],
    };
    let mut out = Vec::new();
    if u.metrics.is_empty() {
        out.push("names no metric".to_string());
    }
    for (m, labels) in &u.metrics {
        if !series.contains_key(m) {
            out.push(format!("metric `{m}` is not exported"));
            continue;
        }
        for l in labels {
            if !has_label(series, m, l) {
                out.push(format!("label `{l}` is not on `{m}`"));
            }
        }
    }
    for (labels, metrics) in &u.groupings {
        for l in labels {
            if !metrics.iter().any(|m| has_label(series, m, l)) {
                out.push(format!("grouping label `{l}` is on none of {metrics:?}"));
            }
        }
    }
    out
}

/// Problems of a variable query: `label_values(selector, label)` whose
/// selector is a valid query and whose metric carries `label`.
fn variable_problems(query: &str, series: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let (selector, label) = match parse_label_values(query) {
        Ok(x) => x,
        Err(e) => return vec![e],
    };
    let Some(selector) = selector else {
        return if series.keys().any(|m| has_label(series, m, &label)) {
            Vec::new()
        } else {
            vec![format!("no series has label `{label}`")]
        };
    };
    let mut out = problems(&selector, series);
    if let Ok(u) = uses(&selector) {
        for m in u.metric_names() {
            if series.contains_key(m) && !has_label(series, m, &label) {
                out.push(format!("label `{label}` is not on `{m}`"));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Grafana's variable interpolation

/// A value as Grafana writes it into a Prometheus regex matcher: regex
/// metacharacters escaped, the escape doubled for the PromQL string.
fn regex_escape(v: &str) -> String {
    let mut out = String::new();
    for ch in v.chars() {
        if "\\^$*+?.()|{}[]".contains(ch) {
            out.push_str("\\\\");
        }
        out.push(ch);
    }
    out
}

/// `$name` and `${name}` replaced by `vars`, Grafana's interval variables
/// by fixed durations. An unknown variable is an error.
fn interpolate(q: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let builtins = [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "10m"),
    ];
    let mut out = String::new();
    let mut rest = q;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or("unterminated ${")?;
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = builtins
            .iter()
            .find(|(b, _)| *b == name)
            .map(|(_, v)| v.to_string())
            .or_else(|| vars.get(name).cloned())
            .ok_or_else(|| format!("unknown variable ${name} in {q}"))?;
        out.push_str(&value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Tests of the dashboard file and of the extractor (no privileges needed)

#[test]
fn dashboard_is_well_formed() {
    let dash = load_dashboard();
    assert_eq!(dash["uid"], "config-access-collector");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(dash["schemaVersion"], 39);
    assert!(dash["refresh"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(dash["time"]["from"].as_str().is_some());

    let list = dash["templating"]["list"].as_array().unwrap();
    let ds = list
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let names: Vec<String> = variables(&dash).into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["job", "node", "instance", "namespace"]);
    for v in list.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{v}");
    }

    // Every panel queries the chosen data source; ids are unique; the grid fits.
    fn panels(v: &Value, out: &mut Vec<Value>) {
        for p in v.as_array().into_iter().flatten() {
            out.push(p.clone());
            panels(&p["panels"], out);
        }
    }
    let mut all = Vec::new();
    panels(&dash["panels"], &mut all);
    let mut ids = BTreeSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "{title}: duplicate id"
        );
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24
                && g["h"].as_u64().unwrap() > 0,
            "{title}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title}: description"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }

    // Every query parses, names a metric, uses only defined variables, and
    // selects by the job and instance variables (the node filter).
    let mut vars: BTreeMap<String, String> =
        names.iter().map(|n| (n.clone(), "x".into())).collect();
    vars.insert("datasource".into(), "x".into());
    let queries = panel_queries(&dash);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for q in &queries {
        interpolate(&q.expr, &vars).unwrap_or_else(|e| panic!("{}: {e}", q.place));
        let u = uses(&q.expr).unwrap_or_else(|e| panic!("{}: {e}: {}", q.place, q.expr));
        assert!(!u.metrics.is_empty(), "{}: names no metric", q.place);
        for (m, labels) in &u.metrics {
            for l in TARGET_LABELS {
                assert!(
                    labels.iter().any(|x| x == l),
                    "{}: `{m}` is not filtered by {l}",
                    q.place
                );
            }
        }
    }
    for v in variables(&dash) {
        parse_label_values(&v.query).unwrap_or_else(|e| panic!("variable {}: {e}", v.name));
        interpolate(&v.query, &vars).unwrap_or_else(|e| panic!("variable {}: {e}", v.name));
    }

    // One file: the documentation links to the chart's copy.
    let link = root().join(DOCS_LINK);
    let meta = std::fs::symlink_metadata(&link).expect("docs link");
    assert!(
        meta.file_type().is_symlink(),
        "{DOCS_LINK} must be a symlink"
    );
    let target = std::fs::read_link(&link).unwrap();
    assert!(target.is_relative(), "{DOCS_LINK} -> {}", target.display());
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(root().join(DASHBOARD)).unwrap()
    );
}

/// A `/metrics` text for the extractor tests.
const SCRAPE: &str = r#"# TYPE kernel_monitor_secret_access_total counter
kernel_monitor_secret_access_total{namespace="payments",secret="db-credentials",otel_scope_name="config-access-collector"} 3
# TYPE kernel_monitor_processing_duration_ms histogram
kernel_monitor_processing_duration_ms_bucket{event_type="secret_access",le="0.1",otel_scope_name="x"} 0
kernel_monitor_processing_duration_ms_sum{event_type="secret_access",otel_scope_name="x"} 1.5
kernel_monitor_processing_duration_ms_count{event_type="secret_access",otel_scope_name="x"} 3
# TYPE kernel_monitor_known_pods gauge
kernel_monitor_known_pods{otel_scope_name="x"} 1
# TYPE target_info gauge
target_info{k8s_node_name="node-a",service_name="config-access-collector"} 1
"#;

fn names(expr: &str) -> Vec<String> {
    uses(expr)
        .unwrap()
        .metrics
        .into_iter()
        .map(|(m, _)| m)
        .collect()
}

#[test]
fn extractor_finds_metrics_not_functions_keywords_or_labels() {
    let u = uses(
        r#"sum by (namespace, secret) (rate(kernel_monitor_secret_access_total{namespace=~"$namespace", instance=~"$instance"}[$__rate_interval])) or vector(0)"#,
    )
    .unwrap();
    assert_eq!(
        u.metrics,
        [(
            "kernel_monitor_secret_access_total".to_string(),
            vec!["namespace".to_string(), "instance".to_string()]
        )]
    );
    assert_eq!(
        u.groupings,
        [(
            vec!["namespace".to_string(), "secret".to_string()],
            vec!["kernel_monitor_secret_access_total".to_string()]
        )]
    );
    // Aggregation with the grouping after the argument; keywords; numbers; offsets.
    assert_eq!(
        names("sum(rate(a_total[5m] offset 1h)) by (x) > bool 1e-3 and on (job) b unless c"),
        ["a_total", "b", "c"]
    );
    // Strings and Grafana variables never count, even when they look like names.
    assert_eq!(
        names(r#"label_replace(up{job="not_a_metric"}, "dst", "$1", "src", "(some_metric)")"#),
        ["up"]
    );
    // Histogram series keep their suffix; `le` is a label, not a metric.
    assert_eq!(
        names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))"),
        ["h_bucket"]
    );
    assert_eq!(names("topk(10, sum without (pod) (x))"), ["x"]);
    assert_eq!(
        names("x * on (job, instance) group_left (node) y"),
        ["x", "y"]
    );
    assert_eq!(names("NaN + Inf + a"), ["a"]);
    assert!(
        uses(r#"{__name__="x"}"#).is_err(),
        "a selector without a name"
    );
    assert!(uses("sum(x").is_err());
    assert!(uses(r#"x{a="b""#).is_err());
}

#[test]
fn extractor_reports_made_up_metrics_and_labels() {
    let s = series(SCRAPE);
    assert!(s["kernel_monitor_processing_duration_ms_bucket"].contains("le"));
    // A typo in a metric name.
    let p = problems("sum(rate(kernel_monitor_secret_acess_total[5m]))", &s);
    assert_eq!(
        p,
        ["metric `kernel_monitor_secret_acess_total` is not exported"]
    );
    // A made-up metric beside a real one.
    let p = problems(
        "sum(rate(kernel_monitor_secret_access_total[5m])) / sum(rate(kernel_monitor_made_up_total[5m]))",
        &s,
    );
    assert_eq!(p, ["metric `kernel_monitor_made_up_total` is not exported"]);
    // A histogram's base name is no series; its _bucket is.
    assert_eq!(
        problems("rate(kernel_monitor_processing_duration_ms[5m])", &s),
        ["metric `kernel_monitor_processing_duration_ms` is not exported"]
    );
    assert!(problems(
        "histogram_quantile(0.9, sum by (le, event_type) (rate(kernel_monitor_processing_duration_ms_bucket[5m])))",
        &s
    )
    .is_empty());
    // Labels: selected, grouped, joined.
    assert_eq!(
        problems(r#"kernel_monitor_secret_access_total{pod="p"}"#, &s),
        ["label `pod` is not on `kernel_monitor_secret_access_total`"]
    );
    assert_eq!(
        problems("sum by (workload) (kernel_monitor_secret_access_total)", &s),
        ["grouping label `workload` is on none of [\"kernel_monitor_secret_access_total\"]"]
    );
    assert!(problems(
        r#"max by (k8s_node_name) (kernel_monitor_known_pods{job="j", instance="i"} * on (job, instance) group_left (k8s_node_name) target_info)"#,
        &s
    )
    .is_empty());
    // Variable queries.
    assert!(variable_problems(
        r#"label_values(target_info{job=~"$job"}, k8s_node_name)"#,
        &s
    )
    .is_empty());
    assert_eq!(
        variable_problems("label_values(kernel_monitor_known_pods, namespace)", &s),
        ["label `namespace` is not on `kernel_monitor_known_pods`"]
    );
    assert_eq!(
        variable_problems("label_values(made_up_metric, job)", &s),
        ["metric `made_up_metric` is not exported"]
    );
    assert!(parse_label_values("query_result(up)").is_err());
}

#[test]
fn grafana_interpolation() {
    let vars = BTreeMap::from([
        ("instance".to_string(), regex_escape("127.0.0.1:9891")),
        ("job".to_string(), "(a|b)".to_string()),
    ]);
    assert_eq!(
        interpolate(
            r#"x{instance=~"$instance", job=~"${job}"}[$__rate_interval]"#,
            &vars
        )
        .unwrap(),
        r#"x{instance=~"127\\.0\\.0\\.1:9891", job=~"(a|b)"}[1m]"#
    );
    assert!(interpolate("x{a=~\"$nope\"}", &vars).is_err());
}

// ---------------------------------------------------------------------------
// Against the real collector and Prometheus

/// Runs a Prometheus HTTP API call; the `data` of a successful answer.
fn prom_api(prom: &Prometheus, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
    let url = reqwest::Url::parse_with_params(&format!("http://{}{path}", prom.addr), params)
        .map_err(|e| e.to_string())?;
    let resp = receivers::http()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&resp.text().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"].clone())
}

/// Resolves the variables in order, as Grafana does: each query with the
/// values of those before it. A variable named in `pick` takes that value
/// (which must be among its options); the others are "All" (their
/// `allValue`, or every option).
fn resolve(
    prom: &Prometheus,
    vars: &[Variable],
    pick: &BTreeMap<&str, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for v in vars {
        let q = interpolate(&v.query, &out).unwrap();
        let (selector, label) = parse_label_values(&q).unwrap();
        let mut params = Vec::new();
        if let Some(s) = &selector {
            params.push(("match[]", s.as_str()));
        }
        let values: Vec<String> = prom_api(prom, &format!("/api/v1/label/{label}/values"), &params)
            .unwrap_or_else(|e| panic!("variable {}: {q}: {e}", v.name))
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        assert!(!values.is_empty(), "variable {}: {q} has no values", v.name);
        let value = match (pick.get(v.name.as_str()), &v.all_value) {
            (Some(p), _) => {
                assert!(
                    values.contains(p),
                    "variable {}: {p} not in {values:?}",
                    v.name
                );
                regex_escape(p)
            }
            (None, Some(all)) => all.clone(),
            (None, None) if values.len() == 1 => regex_escape(&values[0]),
            (None, None) => format!(
                "({})",
                values
                    .iter()
                    .map(|v| regex_escape(v))
                    .collect::<Vec<_>>()
                    .join("|")
            ),
        };
        out.insert(v.name.clone(), value);
    }
    out.insert("datasource".into(), "prometheus".into());
    out
}

/// Runs every panel query with `vars`: each must be valid, return at least
/// one series (rates need two scrapes, so empty answers are retried), and
/// each series must carry the labels its legend names.
fn run_panel_queries(prom: &Prometheus, queries: &[PanelQuery], vars: &BTreeMap<String, String>) {
    let mut failures = Vec::new();
    for q in queries {
        let promql = interpolate(&q.expr, vars).unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        let result = loop {
            match prom_api(prom, "/api/v1/query", &[("query", &promql)]) {
                Err(e) => break Err(format!("rejected: {e}")),
                Ok(d) => {
                    let r = d["result"].as_array().cloned().unwrap_or_default();
                    if !r.is_empty() {
                        break Ok(r);
                    }
                    if Instant::now() > end {
                        break Err("no data".to_string());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let series = match result {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{}: {e}\n    {promql}", q.place));
                continue;
            }
        };
        let legend = q.legend.as_deref().unwrap_or("");
        for part in legend.split("{{").skip(1) {
            let label = part.split("}}").next().unwrap().trim();
            if let Some(s) = series.iter().find(|s| s["metric"].get(label).is_none()) {
                failures.push(format!(
                    "{}: legend label `{label}` missing from {}",
                    q.place, s["metric"]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard queries failing in Prometheus:\n{}",
        failures.join("\n")
    );
}

#[test]
fn dashboard_queries_name_real_metrics_and_labels() {
    let test = "dashboard_queries_name_real_metrics_and_labels";
    if !privileged(test) {
        return;
    }
    let dash = load_dashboard();
    let queries = panel_queries(&dash);
    let vars = variables(&dash);

    // The collector with the default metric labels, after accesses of every
    // kind: Secret, ConfigMap, service-account token, and a denied open.
    let (mut h, _api, _rt) = Harness::with_fake_api(CID, |c: &mut Config| {
        c.node_name = Some("node-a".into());
        c.metrics_listen = "127.0.0.1:0".into();
    });
    read_volumes(&mut h, CID);
    // A host process reads the pod's Secret: a foreign read, a signal.
    let host = ExecArgs {
        comm: Some("backup-agent".into()),
        steps: vec![format!("open:{}", h.secret.join("password").display())],
        ..ExecArgs::default()
    };
    assert_eq!(h.run(&host).1[0].1, "ok");
    // A refreshed token: the stale readers per service account are exported.
    let token = h.token.clone();
    h.sb.write_atomic(
        &token,
        &[
            ("token", b"eyK", 0o644),
            ("ca.crt", b"-----", 0o644),
            ("namespace", b"payments", 0o644),
        ],
    )
    .unwrap();
    let addr = h
        .collector()
        .api()
        .unwrap()
        .metrics_addr
        .expect("metrics listener");
    wait("every access counted on /metrics", || {
        let text = scrape(addr);
        text.contains("kernel_monitor_token_stale_readers{")
            && receivers::sample(
                &text,
                "kernel_monitor_secret_access_total",
                &[("namespace", "payments"), ("secret", "db-credentials")],
            ) == Some(4.0)
            && receivers::sample(
                &text,
                "kernel_monitor_access_total",
                &[("result", "EACCES")],
            ) == Some(1.0)
    });
    let text = scrape(addr);
    let exported = series(&text);

    // Every metric and label of every query is on /metrics.
    let mut failures = Vec::new();
    let mut used = BTreeSet::new();
    for q in &queries {
        for p in problems(&q.expr, &exported) {
            failures.push(format!("{}: {p}\n    {}", q.place, q.expr));
        }
        if let Ok(u) = uses(&q.expr) {
            // A metric with a namespace label follows the namespace variable.
            for (m, labels) in &u.metrics {
                let namespaced = exported.get(m).is_some_and(|l| l.contains("namespace"));
                if namespaced && !labels.iter().any(|l| l == "namespace") {
                    failures.push(format!("{}: `{m}` is not filtered by namespace", q.place));
                }
                used.insert(m.clone());
            }
        }
    }
    for v in &vars {
        for p in variable_problems(&v.query, &exported) {
            failures.push(format!("variable {}: {p}\n    {}", v.name, v.query));
        }
    }
    assert!(
        failures.is_empty(),
        "the dashboard does not match /metrics:\n{}\n\n/metrics:\n{text}",
        failures.join("\n")
    );

    // Every exported family has a panel.
    let shown = |f: &str| {
        ["", "_bucket", "_sum", "_count"]
            .iter()
            .any(|s| used.contains(&format!("{f}{s}")))
    };
    let missing: Vec<String> = families(&text)
        .into_iter()
        .filter(|f| f != "target_info" && !shown(f))
        .collect();
    assert!(
        missing.is_empty(),
        "exported metrics without a panel: {missing:?}"
    );

    // A real Prometheus scraping the collector runs every query.
    let Some(bin) = receivers::prometheus(test) else {
        return;
    };
    let prom = Prometheus::start(&bin, addr);
    prom.wait_for_value(
        r#"sum(kernel_monitor_secret_access_total{namespace="payments",secret="db-credentials"})"#,
        4.0,
        Duration::from_secs(30),
    )
    .unwrap();

    // The defaults ("All" everywhere): the variables find this collector.
    let all = resolve(&prom, &vars, &BTreeMap::new());
    assert_eq!(all["job"], "config-access-collector", "{all:?}");
    assert_eq!(all["instance"], regex_escape(&addr.to_string()), "{all:?}");
    run_panel_queries(&prom, &queries, &all);

    // One node and one namespace picked: the node resolves to this
    // collector's instance through target_info.
    let pick = BTreeMap::from([
        ("node", "node-a".to_string()),
        ("namespace", "payments".to_string()),
    ]);
    let one = resolve(&prom, &vars, &pick);
    assert_eq!(one["instance"], regex_escape(&addr.to_string()), "{one:?}");
    run_panel_queries(&prom, &queries, &one);
}

//! The chart's alert rules (`templates/prometheusrule.yaml`, explained in
//! docs/alerts.md) under promtool. The chart is rendered with
//! `prometheusRule.enabled=true`, the PrometheusRule's `spec.groups` become a
//! plain Prometheus rules file, and `promtool check rules` and
//! `promtool test rules` run the unit tests of `tests/alerts/rules.test.yaml`
//! against it: each alert fires on its input series with its labels and
//! annotations after its `for`, and stays quiet otherwise.
//!
//! The unit tests have teeth: an expression that never fires, or always
//! fires, fails them for every alert, and so do realistic mistakes (a
//! misspelt metric, a flipped comparison, a counter's first increment missed,
//! a failed scrape re-counting old totals, a restarted collector's first
//! event missed, the job scope lost) that `promtool check rules` cannot see.
//!
//! No BPF and no collector: only helm and promtool. The tools come from
//! `bash scripts/dev.sh test` (helm in target/tools/helm or `CAC_HELM`;
//! promtool from Debian's prometheus package, or `CAC_PROMTOOL`); with
//! CI=true a missing tool is a failure.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use common::helm::render;
use common::receivers::tool;

const CHART: &str = "charts/config-access-collector";
/// The promtool unit tests, written for the release `cac` in `cac-system`.
const UNIT_TESTS: &str = "tests/alerts/rules.test.yaml";
/// The job the chart's ServiceMonitor gives the collectors of release `cac`
/// (the metrics Service's name), which the rules select by default.
const JOB: &str = "cac-config-access-collector-metrics";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn helm(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("CAC_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/tools/helm/helm"));
    tool(test, p, "`bash scripts/dev.sh test` installs helm")
}

fn promtool(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("CAC_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/promtool"));
    tool(
        test,
        p,
        "apt-get install prometheus (`bash scripts/dev.sh test` does)",
    )
}

/// Both tools, or `None` (a skip off CI) when one is missing.
fn tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    Some((helm(test)?, promtool(test)?))
}

// ---------------------------------------------------------------- rendering

/// The PrometheusRule rendered with `prometheusRule.enabled=true` and `args`.
fn prometheus_rule(helm: &Path, args: &[&str]) -> Value {
    let mut all = vec![
        "--set",
        "prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
    ];
    all.extend_from_slice(args);
    let docs = render(helm, &all).unwrap_or_else(|e| panic!("helm template {all:?}: {e}"));
    assert_eq!(docs.len(), 1, "one PrometheusRule: {docs:?}");
    let rule = docs.into_iter().next().unwrap();
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    rule
}

/// A Prometheus rules file (`groups:`) with the PrometheusRule's groups.
fn rules_file(rule: &Value) -> Value {
    json!({ "groups": rule["spec"]["groups"].clone() })
}

/// The alerting rules of a rules file, in order.
fn rules(file: &Value) -> Vec<&Value> {
    file["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .collect()
}

fn alert_names(file: &Value) -> Vec<String> {
    rules(file)
        .iter()
        .map(|r| r["alert"].as_str().expect("an alerting rule").to_string())
        .collect()
}

fn rule<'a>(file: &'a Value, alert: &str) -> &'a Value {
    rules(file)
        .into_iter()
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no rule {alert}"))
}

fn expr<'a>(file: &'a Value, alert: &str) -> &'a str {
    rule(file, alert)["expr"].as_str().unwrap()
}

/// `last_over_time(S[1h] offset W)` made `S offset W`: whether a series
/// existed before the window, asked at one instant instead of over a range.
fn instant_lookup(e: &str) -> String {
    let (mut out, mut rest) = (String::new(), e);
    while let Some(i) = rest.find("last_over_time(") {
        out.push_str(&rest[..i]);
        let inner = &rest[i + "last_over_time(".len()..];
        let range = inner.find("[1h]").expect("its range");
        let close = range + inner[range..].find(')').expect("its `)`");
        out.push_str(&inner[..range]);
        out.push_str(&inner[range + "[1h]".len()..close]);
        rest = &inner[close + 1..];
    }
    out.push_str(rest);
    assert!(
        out.contains(" offset ") && !out.contains("last_over_time"),
        "{out}"
    );
    out
}

/// A change of a rule's expression.
type Edit = Box<dyn Fn(&str) -> String>;

/// A copy of `file` with `alert`'s expression replaced by `change(expr)`.
fn with_expr(file: &Value, alert: &str, change: impl Fn(&str) -> String) -> Value {
    let mut file = file.clone();
    let mut found = false;
    for g in file["groups"].as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            if r["alert"] == alert {
                let new = change(r["expr"].as_str().unwrap());
                r["expr"] = Value::String(new);
                found = true;
            }
        }
    }
    assert!(found, "no rule {alert}");
    file
}

// ----------------------------------------------------------------- promtool

/// A directory holding `rules.yaml` and a copy of the unit tests, where
/// promtool runs.
struct Rules {
    promtool: PathBuf,
    dir: tempfile::TempDir,
}

impl Rules {
    fn new(promtool: &Path, file: &Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.test.yaml"), read(UNIT_TESTS)).unwrap();
        let rules = Self {
            promtool: promtool.to_path_buf(),
            dir,
        };
        rules.write(file);
        rules
    }

    fn write(&self, file: &Value) {
        let text = serde_yaml_ng::to_string(file).unwrap();
        std::fs::write(self.dir.path().join("rules.yaml"), text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.promtool)
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .expect("run promtool")
    }

    /// `promtool check rules rules.yaml`
    fn check(&self) -> Output {
        self.run(&["check", "rules", "rules.yaml"])
    }

    /// `promtool test rules rules.test.yaml`
    fn test(&self) -> Output {
        self.run(&["test", "rules", "rules.test.yaml"])
    }

    fn rules_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rules.yaml")).unwrap()
    }
}

fn output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_passes(what: &str, out: &Output, rules: &Rules) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n--- rules.yaml ---\n{}",
        output(out),
        rules.rules_text()
    );
}

/// `promtool test rules` fails, and its report names `alert`.
fn assert_unit_tests_fail(rules: &Rules, alert: &str, how: &str) {
    let out = rules.test();
    let text = output(&out);
    assert!(
        !out.status.success(),
        "the unit tests pass with {alert} broken ({how}):\n{text}"
    );
    assert!(
        text.contains(&format!("alertname: {alert}")),
        "the unit tests failed with {alert} broken ({how}), but the report does not name it:\n{text}"
    );
}

/// The alert names the unit tests expect to fire (`exp_alerts` not empty)
/// and to stay quiet (`exp_alerts: []`).
fn tested_alerts() -> (BTreeSet<String>, BTreeSet<String>) {
    let tests: Value = serde_yaml_ng::from_str(&read(UNIT_TESTS)).unwrap();
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for t in tests["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = a["alertname"].as_str().unwrap().to_string();
            let empty = a["exp_alerts"].as_array().is_none_or(|e| e.is_empty());
            if empty {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    (firing, quiet)
}

// -------------------------------------------------------------------- tests

#[test]
fn rendered_rules_pass_promtool_check_and_unit_tests() {
    let test = "rendered_rules_pass_promtool_check_and_unit_tests";
    let Some((helm, promtool)) = tools(test) else {
        return;
    };
    let file = rules_file(&prometheus_rule(&helm, &[]));
    let names = alert_names(&file);
    let rules = Rules::new(&promtool, &file);
    let out = rules.check();
    assert_passes("promtool check rules", &out, &rules);
    assert!(
        output(&out).contains(&format!("SUCCESS: {} rules found", names.len())),
        "{}",
        output(&out)
    );
    assert_passes("promtool test rules", &rules.test(), &rules);

    // Every alert has a case where it fires and one where it stays quiet.
    let (firing, quiet) = tested_alerts();
    let names: BTreeSet<String> = names.into_iter().collect();
    assert_eq!(firing, names, "alerts with a firing unit test");
    assert_eq!(quiet, names, "alerts with a quiet unit test");
}

#[test]
fn every_alert_fails_the_unit_tests_when_it_never_or_always_fires() {
    let test = "every_alert_fails_the_unit_tests_when_it_never_or_always_fires";
    let Some((helm, promtool)) = tools(test) else {
        return;
    };
    let file = rules_file(&prometheus_rule(&helm, &[]));
    let rules = Rules::new(&promtool, &file);
    for alert in alert_names(&file) {
        // Never: nothing survives `unless` a vector with every label set.
        rules.write(&with_expr(&file, &alert, |e| {
            format!("({e}) unless on() vector(1)")
        }));
        assert_passes("promtool check rules", &rules.check(), &rules);
        assert_unit_tests_fail(&rules, &alert, "it never fires");
        // Always: a label-less series joins whatever the rule finds.
        rules.write(&with_expr(&file, &alert, |e| format!("({e}) or vector(1)")));
        assert_passes("promtool check rules", &rules.check(), &rules);
        assert_unit_tests_fail(&rules, &alert, "it always fires");
    }
}

#[test]
fn a_broken_expression_passes_promtool_check_but_fails_the_unit_tests() {
    let test = "a_broken_expression_passes_promtool_check_but_fails_the_unit_tests";
    let Some((helm, promtool)) = tools(test) else {
        return;
    };
    let file = rules_file(&prometheus_rule(&helm, &[]));
    let rules = Rules::new(&promtool, &file);
    assert_passes("promtool test rules", &rules.test(), &rules);

    let job = format!("job=\"{JOB}\",");
    let breaks: [(&str, &str, Edit); 6] = [
        (
            "ConfigAccessForeignRead",
            "a misspelt metric name",
            Box::new(|e: &str| {
                e.replace(
                    "kernel_monitor_signals_total",
                    "kernel_monitor_signal_total",
                )
            }),
        ),
        (
            "ConfigAccessAgentDown",
            "the comparison flipped",
            Box::new(|e: &str| e.replace("== 0", "!= 0")),
        ),
        (
            "ConfigAccessFirstSeenRead",
            "increase() alone, which misses a counter's first increment",
            Box::new(|e: &str| {
                // Drop the branches before `increase(...)`, which count a
                // series born within the window, or restarted, whole.
                let start = e.find("max_over_time(").expect("the new-series branch");
                let end = e.find("increase(").expect("the increase() branch");
                let mut e = e.to_string();
                e.replace_range(start..end, "");
                assert!(!e.contains("max_over_time") && !e.contains("offset"), "{e}");
                e
            }),
        ),
        (
            "ConfigAccessForeignRead",
            "an instant lookup before the window, which a failed scrape's staleness marker empties",
            Box::new(instant_lookup),
        ),
        (
            "ConfigAccessForeignRead",
            "no reset branch, which misses the first event of a collector restarted in place",
            Box::new(|e: &str| {
                let lines: Vec<&str> = e.lines().collect();
                let i = lines
                    .iter()
                    .position(|l| l.contains("< last_over_time("))
                    .expect("the reset branch");
                assert_eq!(lines[i - 1].trim(), "or", "{e}");
                let mut kept = lines[..i - 1].to_vec();
                kept.extend_from_slice(&lines[i + 1..]);
                kept.join("\n")
            }),
        ),
        (
            "ConfigAccessFirstSeenRead",
            "the job scope lost (another release's collectors counted)",
            Box::new(move |e: &str| {
                assert!(e.contains(&job), "{e}");
                e.replace(&job, "")
            }),
        ),
    ];
    for (alert, how, change) in &breaks {
        let broken = with_expr(&file, alert, change);
        assert_ne!(expr(&broken, alert), expr(&file, alert), "{how}");
        rules.write(&broken);
        assert_passes(
            &format!("promtool check rules with {alert} broken ({how})"),
            &rules.check(),
            &rules,
        );
        assert_unit_tests_fail(&rules, alert, how);
    }
}

#[test]
fn rules_follow_the_values_and_the_release_names() {
    let test = "rules_follow_the_values_and_the_release_names";
    let Some((helm, promtool)) = tools(test) else {
        return;
    };
    // Off by default.
    let docs = render(&helm, &[]).unwrap();
    assert!(
        !docs.iter().any(|d| d["kind"] == "PrometheusRule"),
        "a PrometheusRule with the default values"
    );

    // Defaults: every alert, scoped to the ServiceMonitor's job and the
    // chart's DaemonSet.
    let file = rules_file(&prometheus_rule(&helm, &[]));
    assert_eq!(alert_names(&file).len(), 9);
    for r in rules(&file) {
        let (name, e) = (r["alert"].as_str().unwrap(), r["expr"].as_str().unwrap());
        if name == "ConfigAccessAgentNotReady" {
            assert!(
                e.contains(r#"namespace="cac-system",daemonset="cac-config-access-collector""#),
                "{name}: {e}"
            );
        } else {
            let selectors = e.matches('{').count();
            assert!(selectors > 0, "{name} selects nothing: {e}");
            assert_eq!(
                e.matches(&format!("{{job=\"{JOB}\"")).count(),
                selectors,
                "{name}: every selector is scoped to the job {JOB}: {e}"
            );
        }
        let annotations = &r["annotations"];
        for key in ["summary", "description"] {
            assert!(
                annotations[key]
                    .as_str()
                    .is_some_and(|s| s.contains("{{ $labels.")),
                "{name}: the {key} names the labels to look at: {annotations}"
            );
        }
    }

    // Renamed release: the job and the DaemonSet follow.
    let file = rules_file(&prometheus_rule(
        &helm,
        &["--set", "fullnameOverride=agent"],
    ));
    assert!(expr(&file, "ConfigAccessAgentDown").contains(r#"up{job="agent-metrics"}"#));
    assert!(expr(&file, "ConfigAccessAgentNotReady").contains(r#"daemonset="agent""#));

    // The non-default value set: every value reaches the rules, which promtool accepts.
    let full = prometheus_rule(&helm, &["-f", &format!("{CHART}/ci/full-values.yaml")]);
    assert_eq!(
        full["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let file = rules_file(&full);
    let names = alert_names(&file);
    assert!(
        !names.iter().any(|n| n == "ConfigAccessExecSessionRead"),
        "{names:?}"
    );
    assert_eq!(names.len(), 8);
    for r in rules(&file) {
        assert_eq!(
            r["labels"]["team"], "security",
            "alertLabels on {}",
            r["alert"]
        );
        let e = r["expr"].as_str().unwrap();
        if r["alert"] != "ConfigAccessAgentNotReady" {
            assert!(
                e.contains(r#"{job="cac-metrics",cluster="prod-eu-1""#),
                "selector: {e}"
            );
        }
    }
    let first_seen = expr(&file, "ConfigAccessFirstSeenRead");
    assert!(first_seen.contains(r#"object_kind=~"Secret|ServiceAccountToken""#));
    assert!(first_seen.contains("[30m]") && first_seen.contains("offset 30m"));
    assert_eq!(
        rule(&file, "ConfigAccessForeignRead")["labels"]["severity"],
        "warning"
    );
    let denied = rule(&file, "ConfigAccessDeniedOpens");
    assert!(denied["expr"].as_str().unwrap().ends_with("> 5"));
    assert_eq!(denied["for"], "10m");
    assert!(expr(&file, "ConfigAccessKernelDrops")
        .contains(r#"reason=~"ring_buffer_full|decode_error|volume_gone|denied_unresolved""#));
    assert_eq!(rule(&file, "ConfigAccessTokenStaleReaders")["for"], "30m");
    assert!(
        rule(&file, "ConfigAccessTokenStaleReaders")["annotations"]["description"]
            .as_str()
            .unwrap()
            .starts_with("For 30m,")
    );
    assert!(expr(&file, "ConfigAccessAgentNotReady").ends_with("> 1"));
    let rules = Rules::new(&promtool, &file);
    assert_passes(
        "promtool check rules (full-values.yaml)",
        &rules.check(),
        &rules,
    );

    // The schema rejects what Prometheus would reject.
    for (set, message) in [
        (
            "prometheusRule.alerts.agentDown.for=5 minutes",
            "prometheusRule.alerts.agentDown.for",
        ),
        (
            "prometheusRule.alerts.firstSeen.objectKinds={Secrets}",
            "prometheusRule.alerts.firstSeen.objectKinds",
        ),
        (
            "prometheusRule.alerts.firstSeen.typo=true",
            "Additional property typo is not allowed",
        ),
    ] {
        let err = render(
            &helm,
            &["--set", "prometheusRule.enabled=true", "--set", set],
        )
        .expect_err(set);
        assert!(err.contains(message), "--set {set}: {err}");
    }
}

#[test]
fn docs_explain_every_alert_and_value() {
    let test = "docs_explain_every_alert_and_value";
    let Some(helm) = helm(test) else { return };
    let doc = read("docs/alerts.md");
    let file = rules_file(&prometheus_rule(&helm, &[]));
    for name in alert_names(&file) {
        assert!(
            doc.lines()
                .any(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == name),
            "docs/alerts.md has no section for {name}"
        );
    }
    let values: Value = serde_yaml_ng::from_str(&read(&format!("{CHART}/values.yaml"))).unwrap();
    for key in values["prometheusRule"]["alerts"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(
            doc.contains(&format!("`prometheusRule.alerts.{key}`")),
            "docs/alerts.md does not name prometheusRule.alerts.{key}"
        );
    }
}

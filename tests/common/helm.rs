//! `helm template` of the project's chart, as the chart and alert tests use it.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

/// The chart, relative to the repository root.
pub const CHART: &str = "charts/config-access-collector";

/// The documents `helm template cac <chart> --namespace cac-system <args>`
/// renders (helm's caches in a temporary home), or helm's error.
pub fn render(helm: &Path, args: &[&str]) -> Result<Vec<Value>, String> {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(helm)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["template", "cac", CHART, "--namespace", "cac-system"])
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("run helm");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(de).expect("helm renders YAML");
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

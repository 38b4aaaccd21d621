//! The Helm chart (`charts/config-access-collector`) and the image (`Dockerfile`):
//! the rendered DaemonSet against the capabilities and host paths that
//! docs/install.md lists, the rendered configuration through the collector's
//! own parser, a real start of the collector with exactly the chart's
//! capabilities, and the image's runtime libraries against the release
//! binary's `DT_NEEDED` entries.
//!
//! The tools come from `bash scripts/dev.sh test` (helm in target/tools/helm,
//! readelf from binutils); with CI=true a missing tool is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::helm::render;
use common::privileged;
use common::receivers::tool;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const EXE: &str = env!("CARGO_BIN_EXE_config-access-collector");
const CHART: &str = "charts/config-access-collector";
/// Where the chart mounts its ConfigMap, and the config file in it.
const CONFIG_DIR: &str = "/etc/config-access-collector";
/// Collector keys the chart sets from its own values (or, `node_name`, from
/// the downward API); `config` may hold every other key.
const CHART_MANAGED_KEYS: &[&str] = &[
    "kubelet_root",
    "health_listen",
    "metrics_listen",
    "api_socket",
    "api_socket_mode",
    "state_dir",
    "api_listen",
    "api_token_file",
    "otlp_endpoint",
    "otlp_protocol",
    "otlp_headers",
    "otlp_metrics",
    "otlp_logs",
    "service_endpoints",
    "service_endpoints_pin",
    "node_name",
];

fn root() -> &'static Path {
    Path::new(ROOT)
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

// ---------------------------------------------------------------- rendering

fn render_ok(helm: &Path, args: &[&str]) -> Vec<Value> {
    render(helm, args).unwrap_or_else(|e| panic!("helm template {args:?}: {e}"))
}

fn values_file(name: &str) -> String {
    format!("{CHART}/ci/{name}")
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    let found = kind(docs, k);
    assert_eq!(found.len(), 1, "expected one {k}, got {}", found.len());
    found[0]
}

/// The collector's configuration file from the rendered ConfigMap.
fn config_text(docs: &[Value]) -> String {
    let cm = kind(docs, "ConfigMap")
        .into_iter()
        .find(|c| c["data"].get("config.yaml").is_some())
        .expect("a ConfigMap with config.yaml");
    cm["data"]["config.yaml"].as_str().unwrap().to_string()
}

/// `config-access-collector --print-config --config <text>`, with no CAC_*,
/// OTEL_* or NODE_NAME from the test's environment.
fn print_config(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, text).unwrap();
    Command::new(EXE)
        .env_clear()
        .arg("--print-config")
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run the collector")
}

fn resolved(text: &str) -> Value {
    let out = print_config(text);
    assert!(
        out.status.success(),
        "the collector rejected the rendered config:\n{}\n--- config ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--print-config prints JSON")
}

// ------------------------------------------------------------- docs tables

/// Rows of the markdown table between `<!-- {marker}:begin -->` and `:end`,
/// as cells with backticks removed (header and separator rows skipped).
fn doc_table(marker: &str) -> Vec<Vec<String>> {
    let doc = read("docs/install.md");
    let begin = format!("<!-- {marker}:begin -->");
    let end = format!("<!-- {marker}:end -->");
    let start = doc
        .find(&begin)
        .unwrap_or_else(|| panic!("docs/install.md has no {begin}"));
    let stop = doc[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("docs/install.md has no {end}"))
        + start;
    let rows: Vec<Vec<String>> = doc[start + begin.len()..stop]
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect()
        })
        .collect();
    assert!(
        !rows.is_empty(),
        "the {marker} table in docs/install.md is empty"
    );
    rows
}

/// A host mount as the docs list it and as the DaemonSet renders it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct HostMount {
    host_path: String,
    container_path: String,
    read_only: bool,
    /// `recursiveReadOnly`, `-` when unset.
    recursive_read_only: String,
    propagation: String,
    kind: String,
}

/// The documented host mounts; `recursive` says whether the Kubernetes
/// version renders `recursiveReadOnly` (1.31 and later).
fn documented_mounts(recursive: bool) -> BTreeSet<HostMount> {
    doc_table("host-mounts")
        .into_iter()
        .map(|c| {
            assert!(c.len() >= 7, "host-mounts row {c:?}");
            HostMount {
                host_path: c[0].clone(),
                container_path: c[1].clone(),
                read_only: match c[2].as_str() {
                    "yes" => true,
                    "no" => false,
                    other => panic!("read-only column must be yes or no, got {other}"),
                },
                recursive_read_only: if recursive { c[3].clone() } else { "-".into() },
                propagation: c[4].clone(),
                kind: c[5].clone(),
            }
        })
        .collect()
}

fn documented_capabilities() -> BTreeSet<String> {
    doc_table("capabilities")
        .into_iter()
        .map(|c| c[0].clone())
        .collect()
}

fn container(ds: &Value) -> &Value {
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container");
    assert!(
        ds["spec"]["template"]["spec"]
            .get("initContainers")
            .is_none(),
        "no init containers"
    );
    &containers[0]
}

/// The DaemonSet's hostPath volumes with their mounts.
fn rendered_mounts(ds: &Value) -> BTreeSet<HostMount> {
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(ds);
    let mut out = BTreeSet::new();
    for v in pod["volumes"].as_array().unwrap() {
        let Some(hp) = v.get("hostPath") else {
            continue;
        };
        let name = v["name"].as_str().unwrap();
        let mounts: Vec<&Value> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"] == name)
            .collect();
        assert_eq!(mounts.len(), 1, "hostPath volume {name} is mounted once");
        let m = mounts[0];
        assert!(m.get("subPath").is_none(), "{name}: no subPath");
        out.insert(HostMount {
            host_path: hp["path"].as_str().unwrap().to_string(),
            container_path: m["mountPath"].as_str().unwrap().to_string(),
            read_only: m["readOnly"].as_bool().unwrap_or(false),
            recursive_read_only: m["recursiveReadOnly"].as_str().unwrap_or("-").to_string(),
            propagation: m["mountPropagation"].as_str().unwrap_or("None").to_string(),
            kind: hp["type"].as_str().unwrap_or("").to_string(),
        });
    }
    out
}

fn added_capabilities(c: &Value) -> BTreeSet<String> {
    c["securityContext"]["capabilities"]["add"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

// ------------------------------------------------------------------- tests

#[test]
fn daemonset_mounts_exactly_the_documented_host_paths_and_capabilities() {
    let test = "daemonset_mounts_exactly_the_documented_host_paths_and_capabilities";
    let Some(helm) = helm(test) else { return };
    for (version, recursive) in [("1.29.0", false), ("1.30.0", false), ("1.31.0", true)] {
        let docs = render_ok(&helm, &["--kube-version", version]);
        let ds = one(&docs, "DaemonSet");
        assert_eq!(
            rendered_mounts(ds),
            documented_mounts(recursive),
            "Kubernetes {version}"
        );
        assert_eq!(
            added_capabilities(container(ds)),
            documented_capabilities(),
            "Kubernetes {version}"
        );
        // AppArmor: the securityContext field from 1.30, the annotation before.
        let field = &container(ds)["securityContext"]["appArmorProfile"];
        let annotation = &ds["spec"]["template"]["metadata"]["annotations"]
            ["container.apparmor.security.beta.kubernetes.io/collector"];
        if version == "1.29.0" {
            assert!(field.is_null(), "{field}");
            assert_eq!(annotation, "unconfined");
        } else {
            assert_eq!(field, &json!({"type": "Unconfined"}));
            assert!(annotation.is_null(), "{annotation}");
        }
    }
    let docs = render_ok(&helm, &["--kube-version", "1.37.0"]);
    let ds = one(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(ds);

    assert_eq!(rendered_mounts(ds), documented_mounts(true));
    let sc = &c["securityContext"];
    assert_eq!(added_capabilities(c), documented_capabilities());
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["privileged"], json!(false));
    assert_eq!(sc["allowPrivilegeEscalation"], json!(false));
    assert_eq!(sc["readOnlyRootFilesystem"], json!(true));
    assert_eq!(sc["runAsUser"], json!(0));
    assert_eq!(sc["seccompProfile"], json!({"type": "Unconfined"}));
    assert!(pod
        .get("securityContext")
        .is_none_or(|s| s.get("sysctls").is_none()));

    // hostPID, and no other host namespace.
    assert_eq!(pod["hostPID"], json!(true));
    for ns in ["hostNetwork", "hostIPC", "hostUsers"] {
        assert!(pod.get(ns).is_none(), "{ns} is not set");
    }
    // Besides the host paths, only the configuration is mounted.
    let others: Vec<&Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v.get("hostPath").is_none())
        .collect();
    assert_eq!(others.len(), 1, "{others:?}");
    assert!(others[0].get("configMap").is_some());

    // On every node, rolled one node at a time.
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}})
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );

    // The command, the config it reads, and NODE_NAME from the downward API.
    let config_file = format!("{CONFIG_DIR}/config.yaml");
    assert_eq!(c["args"], json!(["run", "--config", config_file]));
    assert!(c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "config" && m["mountPath"] == CONFIG_DIR));
    assert_eq!(
        c["env"][0],
        json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    );

    // The probes reach the collector's health listener, and the mounts are
    // where its configuration looks.
    let cfg = resolved(&config_text(&docs));
    let health = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "health")
        .expect("a health port");
    assert_eq!(
        health["containerPort"].as_u64().unwrap(),
        port_of(cfg["health_listen"].as_str().unwrap())
    );
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "health", "{probe}");
    }
    let mounts = rendered_mounts(ds);
    let mounted = |p: &str| mounts.iter().any(|m| m.container_path == p);
    assert!(mounted(cfg["kubelet_root"].as_str().unwrap()));
    let socket = Path::new(cfg["api_socket"].as_str().unwrap());
    assert!(mounted(socket.parent().unwrap().to_str().unwrap()));

    // The API access: pods, and for the Service endpoint map services and
    // endpointslices, read-only, nothing else (the_cluster_role_... has both settings).
    let role = one(&docs, "ClusterRole");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
               {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}])
    );
    let sa = one(&docs, "ServiceAccount")["metadata"]["name"].clone();
    assert_eq!(pod["serviceAccountName"], sa);
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa, "namespace": "cac-system"}])
    );
}

#[test]
fn non_default_values_move_the_mounts_and_capabilities_with_them() {
    let test = "non_default_values_move_the_mounts_and_capabilities_with_them";
    let Some(helm) = helm(test) else { return };

    let docs = render_ok(&helm, &["-f", &values_file("full-values.yaml")]);
    let ds = one(&docs, "DaemonSet");
    let c = container(ds);
    let mounts = rendered_mounts(ds);
    let cfg = resolved(&config_text(&docs));
    let kubelet = mounts
        .iter()
        .find(|m| m.host_path == "/data/kubelet")
        .expect("the kubelet mount follows kubeletRoot");
    assert_eq!(kubelet.container_path, "/data/kubelet");
    assert_eq!(cfg["kubelet_root"], "/data/kubelet");
    assert!(mounts
        .iter()
        .any(|m| m.host_path == "/var/run/cac" && m.container_path == "/var/run/cac"));
    assert_eq!(cfg["api_socket"], "/var/run/cac/api.sock");
    assert!(!mounts.iter().any(|m| m.host_path == "/var/lib/kubelet"));
    let mut caps = documented_capabilities();
    caps.insert("SYS_RESOURCE".into());
    assert_eq!(added_capabilities(c), caps);
    assert_eq!(
        c["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    // The token Secret is mounted where api_token_file points.
    let token = cfg["api_token_file"].as_str().unwrap();
    assert!(c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "api-token"
            && Path::new(token).parent() == Some(Path::new(m["mountPath"].as_str().unwrap()))));
    // OTLP headers from the Secret, in the variable the SDK reads.
    assert!(c["env"].as_array().unwrap().contains(&json!({
        "name": "OTEL_EXPORTER_OTLP_HEADERS",
        "valueFrom": {"secretKeyRef": {"name": "otlp-auth", "key": "headers"}}
    })));
    assert_eq!(cfg["otlp_protocol"], "grpc");
    assert_eq!(
        cfg["otlp_endpoint"],
        "https://otel-collector.observability:4317"
    );
    // Metrics: the listener, the container port, the Service and the ServiceMonitor agree.
    let metrics_port = port_of(cfg["metrics_listen"].as_str().unwrap());
    assert_eq!(metrics_port, 19892);
    assert!(c["ports"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"})));
    let svc = one(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects the Service"
        );
    }
    assert_eq!(
        svc["spec"]["selector"],
        ds["spec"]["selector"]["matchLabels"]
    );
    // The Grafana dashboard ConfigMap carries the chart's dashboard JSON.
    let dash = kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a dashboard ConfigMap");
    assert_eq!(dash["metadata"]["namespace"], "grafana");
    let (_, body) = dash["data"].as_object().unwrap().iter().next().unwrap();
    let file = read(&format!("{CHART}/dashboards/config-access-collector.json"));
    let parsed: Value = serde_json::from_str(body.as_str().unwrap()).expect("dashboard JSON");
    assert_eq!(parsed, serde_json::from_str::<Value>(&file).unwrap());

    // Privileged mode: no capability list, no escalation guard, no socket mount.
    let docs = render_ok(&helm, &["-f", &values_file("privileged-values.yaml")]);
    let ds = one(&docs, "DaemonSet");
    let sc = &container(ds)["securityContext"];
    assert_eq!(sc["privileged"], json!(true));
    assert!(sc.get("capabilities").is_none() && sc.get("allowPrivilegeEscalation").is_none());
    let mounts = rendered_mounts(ds);
    assert!(!mounts
        .iter()
        .any(|m| m.host_path == "/run/config-access-collector"));
    assert_eq!(resolved(&config_text(&docs))["api_socket"], "off");
    assert!(kind(&docs, "ClusterRole").is_empty() && kind(&docs, "ServiceAccount").is_empty());
    assert_eq!(
        ds["spec"]["template"]["spec"]["serviceAccountName"],
        "existing-agent"
    );
}

#[test]
fn rendered_config_is_accepted_by_the_collector() {
    let test = "rendered_config_is_accepted_by_the_collector";
    let Some(helm) = helm(test) else { return };
    let defaults = resolved("");

    // The default values change none of the collector's defaults but two:
    // the chart saves the usage ledger on a host path and pins the kernel
    // Service endpoint map in the host's bpf filesystem, while the binary
    // does neither unless told (so a run by hand leaves nothing behind).
    let docs = render_ok(&helm, &[]);
    let mut expected = defaults.clone();
    expected["state_dir"] = json!("/var/lib/config-access-collector");
    expected["service_endpoints_pin"] = json!("/run/config-access-collector-bpf/svc_endpoints");
    assert_eq!(resolved(&config_text(&docs)), expected);

    // Every non-default value set resolves.
    for set in ["full-values.yaml", "privileged-values.yaml"] {
        resolved(&config_text(&render_ok(&helm, &["-f", &values_file(set)])));
    }

    // The value set that sets every key `config` accepts, each to a value
    // other than the default: each one reaches the collector.
    let file = values_file("all-config-keys-values.yaml");
    let values: Value = serde_yaml_ng::from_str(&read(&file)).unwrap();
    let set: &serde_json::Map<String, Value> = values["config"].as_object().unwrap();
    let cfg = resolved(&config_text(&render_ok(&helm, &["-f", &file])));
    for (key, value) in set {
        assert_eq!(&cfg[key], value, "config.{key} reaches the collector");
        // One monitor_* key must stay true (nothing to watch otherwise).
        if key != "monitor_secrets" {
            assert_ne!(
                &defaults[key], value,
                "config.{key} is set to a non-default value"
            );
        }
    }

    // ... and it covers every key of the schema's `config`, which with the
    // chart-managed keys are exactly the collector's keys.
    let schema: Value =
        serde_json::from_str(&read(&format!("{CHART}/values.schema.json"))).unwrap();
    let accepted: BTreeSet<&str> = schema["properties"]["config"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        set.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        accepted
    );
    assert_eq!(
        schema["properties"]["config"]["additionalProperties"],
        json!(false)
    );
    let mut chart_keys = accepted.clone();
    chart_keys.extend(CHART_MANAGED_KEYS);
    let collector_keys: BTreeSet<&str> = defaults
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(chart_keys, collector_keys);
}

#[test]
fn collector_rejects_a_rendered_config_the_schema_cannot_catch() {
    let test = "collector_rejects_a_rendered_config_the_schema_cannot_catch";
    let Some(helm) = helm(test) else { return };
    // Each value passes the schema on its own; together they break a rule of
    // src/config.rs (the wakeup threshold must fit in the ring buffer).
    let docs = render_ok(
        &helm,
        &[
            "--set",
            "config.ring_buffer_bytes=4194304",
            "--set",
            "config.wakeup_bytes=8388608",
        ],
    );
    let out = print_config(&config_text(&docs));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(err.contains("config key `wakeup_bytes`"), "{err}");

    // A bad value the schema does catch never reaches the collector.
    let err = render(&helm, &["--set", "config.kubelet_writes=sometimes"]).unwrap_err();
    assert!(
        err.contains("config.kubelet_writes") && err.contains("must be one of the following"),
        "{err}"
    );
}

/// The ClusterRole's rules as (API group, resource, verbs).
fn rbac_rules(docs: &[Value]) -> Vec<(String, String, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    one(docs, "ClusterRole")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| {
            let verbs = strings(&rule["verbs"]);
            let groups = strings(&rule["apiGroups"]);
            strings(&rule["resources"]).into_iter().flat_map(move |r| {
                let verbs = verbs.clone();
                groups
                    .clone()
                    .into_iter()
                    .map(move |g| (g, r.clone(), verbs.clone()))
            })
        })
        .collect()
}

#[test]
fn the_cluster_role_reads_pods_and_what_the_service_map_needs_only() {
    let test = "the_cluster_role_reads_pods_and_what_the_service_map_needs_only";
    let Some(helm) = helm(test) else { return };
    let read = || vec!["get".to_string(), "list".into(), "watch".into()];
    let rule = |group: &str, resource: &str| (group.to_string(), resource.to_string(), read());

    // On by default: services (core) and endpointslices (discovery.k8s.io), read only.
    let docs = render_ok(&helm, &[]);
    assert_eq!(
        rbac_rules(&docs),
        [
            rule("", "pods"),
            rule("", "services"),
            rule("discovery.k8s.io", "endpointslices")
        ]
    );
    assert_eq!(
        resolved(&config_text(&docs))["service_endpoints"],
        json!(true)
    );

    // The kernel map's pin: the collector's key and the one bpffs mount agree.
    let pin_mount = |docs: &[Value]| {
        rendered_mounts(one(docs, "DaemonSet"))
            .into_iter()
            .find(|m| m.host_path.starts_with("/sys/fs/bpf"))
    };
    let mount = pin_mount(&docs).expect("the pin directory is mounted");
    assert_eq!(
        (
            mount.host_path.as_str(),
            mount.container_path.as_str(),
            mount.read_only
        ),
        (
            "/sys/fs/bpf/config-access-collector",
            "/run/config-access-collector-bpf",
            false
        )
    );
    assert_eq!(
        resolved(&config_text(&docs))["service_endpoints_pin"],
        json!("/run/config-access-collector-bpf/svc_endpoints")
    );
    let unpinned = render_ok(&helm, &["--set", "serviceEndpoints.pinDir="]);
    assert_eq!(pin_mount(&unpinned), None);
    assert_eq!(
        resolved(&config_text(&unpinned))["service_endpoints_pin"],
        json!("off")
    );

    // Off: pods only, and the collector does not watch what it may not read
    // (nor pins a map, nor mounts any of /sys/fs/bpf).
    let docs = render_ok(&helm, &["--set", "serviceEndpoints.enabled=false"]);
    assert_eq!(rbac_rules(&docs), [rule("", "pods")]);
    let cfg = resolved(&config_text(&docs));
    assert_eq!(cfg["service_endpoints"], json!(false));
    assert_eq!(cfg["service_endpoints_pin"], json!("off"));
    assert_eq!(pin_mount(&docs), None);

    // The chart owns the key: `config` cannot turn it on behind the role's back.
    let err = render(&helm, &["--set", "config.service_endpoints=true"]).unwrap_err();
    assert!(err.contains("service_endpoints"), "{err}");
}

#[test]
fn chart_versions_follow_the_crate() {
    let cargo: toml_like::Manifest = toml_like::parse(&read("Cargo.toml"));
    let chart: Value = serde_yaml_ng::from_str(&read(&format!("{CHART}/Chart.yaml"))).unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], cargo.version.as_str());
    let dockerfile = Dockerfile::parse(&read("Dockerfile"));
    assert_eq!(
        dockerfile
            .runtime()
            .labels
            .get("org.opencontainers.image.version"),
        Some(&cargo.version)
    );
}

#[test]
fn every_value_has_a_schema_and_a_docs_row() {
    let values: Value = serde_yaml_ng::from_str(&read(&format!("{CHART}/values.yaml"))).unwrap();
    let schema: Value =
        serde_json::from_str(&read(&format!("{CHART}/values.schema.json"))).unwrap();
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&values), keys(&schema["properties"]));
    assert_eq!(schema["additionalProperties"], json!(false));
    // The values table of docs/install.md: first cells like `health.port` or
    // `nameOverride`, `fullnameOverride`.
    let doc = read("docs/install.md");
    let table = &doc[doc.find("## Values").expect("a Values section")..];
    let documented: BTreeSet<String> = table
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with('|') || l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("| `"))
        .flat_map(|l| {
            let cell = l.split(" | ").next().unwrap();
            cell.split(", ")
                .filter_map(|k| k.trim_matches('`').split('.').next().map(str::to_string))
                .filter(|k| !k.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    for key in keys(&values) {
        assert!(
            documented.contains(&key),
            "docs/install.md's values table lacks {key}"
        );
    }
}

/// The few fields of Cargo.toml the tests read (no TOML parser among the dependencies).
mod toml_like {
    pub struct Manifest {
        pub version: String,
    }

    pub fn parse(text: &str) -> Manifest {
        let package = text
            .split("\n[")
            .find(|s| s.starts_with("[package]") || s.starts_with("package]"))
            .expect("[package]");
        let version = package
            .lines()
            .find_map(|l| l.strip_prefix("version = "))
            .expect("package version")
            .trim_matches('"')
            .to_string();
        Manifest { version }
    }
}

// ------------------------------------------------ capabilities, for real

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Status and body of `GET path`, or `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// The collector started as the container would be: uid 0, exactly `caps`
/// (bounding, permitted and effective sets), no new privileges, the rendered
/// configuration, standalone, on a scratch kubelet root.
struct CappedCollector {
    child: Child,
    health_port: u16,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl CappedCollector {
    fn start(config: &str, caps: &BTreeSet<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kubelet/pods")).unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, config).unwrap();
        let bounding: String = std::iter::once("-all".to_string())
            .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
            .collect::<Vec<_>>()
            .join(",");
        let health_port = free_port();
        let socket = dir.path().join("run/api.sock");
        let child = Command::new("setpriv")
            .arg(format!("--bounding-set={bounding}"))
            .args(["--inh-caps=-all", "--no-new-privs", "--"])
            .arg(EXE)
            .args(["run", "--no-kube", "--config"])
            .arg(&file)
            .arg("--kubelet-root")
            .arg(dir.path().join("kubelet"))
            .arg("--health-listen")
            .arg(format!("127.0.0.1:{health_port}"))
            .arg("--api-socket")
            .arg(&socket)
            .env_clear()
            .env("CAC_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("setpriv (util-linux) runs the collector");
        Self {
            child,
            health_port,
            socket,
            _dir: dir,
        }
    }

    /// Waits until /healthz answers; `Err(stderr)` if the collector exits first.
    fn wait_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return Err(format!("exited with {status}: {err}"));
            }
            if http_get(self.health_port, "/healthz").is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the collector neither answered /healthz nor exited within 30 s");
    }

    /// The capabilities the running collector holds (CapEff).
    fn effective_caps(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim();
        u64::from_str_radix(hex, 16).unwrap()
    }
}

impl Drop for CappedCollector {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Capability numbers (linux/capability.h) of the names the chart may use.
fn cap_bit(name: &str) -> u32 {
    match name {
        "DAC_READ_SEARCH" => 2,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("no bit known for capability {other}"),
    }
}

#[test]
fn chart_capabilities_are_enough_to_run_the_collector() {
    let test = "chart_capabilities_are_enough_to_run_the_collector";
    if !privileged(test) {
        return;
    }
    let Some(helm) = helm(test) else { return };
    let docs = render_ok(&helm, &[]);
    let caps = added_capabilities(container(one(&docs, "DaemonSet")));
    let config = config_text(&docs);

    let mut c = CappedCollector::start(&config, &caps);
    c.wait_up()
        .unwrap_or_else(|e| panic!("with the chart's capabilities {caps:?}: {e}"));
    let want = caps.iter().fold(0u64, |m, n| m | 1 << cap_bit(n));
    assert_eq!(
        c.effective_caps(),
        want,
        "the collector holds exactly {caps:?}"
    );
    let (status, body) = http_get(c.health_port, "/healthz").unwrap();
    assert_eq!(
        status, 200,
        "/healthz with the chart's capabilities {caps:?}: {body}"
    );
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["ebpf_loaded"], json!(true), "{body}");
    assert_eq!(http_get(c.health_port, "/readyz").unwrap().0, 200);
    assert!(c.socket.exists(), "the API socket is created");
    drop(c);

    // Loading and attaching fail without either of the BPF capabilities: the
    // test would notice if the collector needed neither.
    for missing in ["BPF", "PERFMON"] {
        let mut fewer = caps.clone();
        assert!(fewer.remove(missing), "the chart grants {missing}");
        let mut c = CappedCollector::start(&config, &fewer);
        let err = c
            .wait_up()
            .expect_err(&format!("the collector started without {missing}"));
        assert!(err.contains("BPF"), "without {missing}: {err}");
    }
}

// -------------------------------------------------------- the image's libraries

/// One stage of the Dockerfile.
#[derive(Debug, Default)]
struct Stage {
    /// The base, with the global `ARG` defaults substituted.
    from: String,
    /// The name after `AS`.
    name: String,
    /// Packages of `apt-get install` commands, without versions.
    apt_packages: BTreeSet<String>,
    /// File names copied into the stage (COPY / ADD sources).
    copied: BTreeSet<String>,
    runs: Vec<String>,
    labels: BTreeMap<String, String>,
    entrypoint: Option<String>,
}

struct Dockerfile {
    stages: Vec<Stage>,
}

impl Dockerfile {
    /// Instructions with continuation lines joined and comment lines dropped.
    fn instructions(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
                continue;
            }
            if let Some(head) = t.strip_suffix('\\') {
                cur.push_str(head);
                cur.push(' ');
                continue;
            }
            cur.push_str(t);
            let (op, rest) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
            out.push((op.to_uppercase(), rest.trim().to_string()));
            cur.clear();
        }
        out
    }

    fn parse(text: &str) -> Self {
        let mut stages: Vec<Stage> = Vec::new();
        // Global ARGs (before the first FROM) and their defaults.
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        for (op, rest) in Self::instructions(text) {
            if op == "ARG" && stages.is_empty() {
                let (k, v) = rest.split_once('=').unwrap_or((&rest, ""));
                args.insert(k.to_string(), v.to_string());
                continue;
            }
            if op == "FROM" {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let from = args.iter().fold(words[0].to_string(), |f, (k, v)| {
                    f.replace(&format!("${{{k}}}"), v)
                });
                stages.push(Stage {
                    from,
                    name: words.get(2).unwrap_or(&"").to_string(),
                    ..Stage::default()
                });
                continue;
            }
            let stage = stages.last_mut().expect("FROM comes first");
            match op.as_str() {
                "RUN" => {
                    for cmd in rest.split("&&") {
                        let words: Vec<&str> = cmd.split_whitespace().collect();
                        if let Some(at) = words.windows(2).position(|w| w == ["apt-get", "install"])
                        {
                            stage.apt_packages.extend(
                                words[at + 2..]
                                    .iter()
                                    .filter(|w| !w.starts_with('-'))
                                    .map(|w| w.split('=').next().unwrap().to_string()),
                            );
                        }
                    }
                    stage.runs.push(rest);
                }
                "COPY" | "ADD" => {
                    let words: Vec<&str> = rest
                        .split_whitespace()
                        .filter(|w| !w.starts_with("--"))
                        .collect();
                    for src in &words[..words.len().saturating_sub(1)] {
                        let name = Path::new(src).file_name().unwrap().to_string_lossy();
                        stage.copied.insert(name.into_owned());
                    }
                }
                "LABEL" => {
                    // key="value" pairs; values are quoted and may hold spaces.
                    let mut s = rest.as_str();
                    while let Some((k, tail)) = s.trim_start().split_once('=') {
                        let tail = tail.strip_prefix('"').expect("quoted LABEL values");
                        let (v, next) = tail.split_once('"').unwrap();
                        stage.labels.insert(k.trim().to_string(), v.to_string());
                        s = next;
                    }
                }
                "ENTRYPOINT" => {
                    let exec: Vec<String> =
                        serde_json::from_str(&rest).expect("exec-form ENTRYPOINT");
                    stage.entrypoint = exec.into_iter().next();
                }
                _ => {}
            }
        }
        Self { stages }
    }

    fn runtime(&self) -> &Stage {
        self.stages.last().expect("a stage")
    }

    fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no stage {name}"))
    }
}

fn run_tool(test: &str, path: &str, args: &[&str], how: &str) -> Option<String> {
    let exe = tool(test, PathBuf::from(path), how)?;
    let out = Command::new(exe).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{path} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Packages of Debian's essential set and everything they depend on (the
/// first installed alternative): present in every Debian image, slim ones
/// included.
fn essential_closure(status: &str) -> BTreeSet<String> {
    let mut deps: BTreeMap<&str, Vec<Vec<&str>>> = BTreeMap::new();
    let mut essential = Vec::new();
    for line in status.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [pkg, ess, pre, dep, st] = f[..] else {
            panic!("dpkg-query line {line:?}")
        };
        if !st.starts_with("ii") {
            continue;
        }
        let alternatives = [pre, dep]
            .iter()
            .flat_map(|d| d.split(','))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| {
                d.split('|')
                    .map(|a| a.trim().split([' ', ':', '(']).next().unwrap())
                    .collect()
            })
            .collect();
        deps.insert(pkg, alternatives);
        if ess == "yes" {
            essential.push(pkg);
        }
    }
    assert!(!essential.is_empty(), "dpkg knows no essential package");
    let mut seen = BTreeSet::new();
    let mut todo = essential;
    while let Some(p) = todo.pop() {
        if !deps.contains_key(p) || !seen.insert(p.to_string()) {
            continue;
        }
        for alts in &deps[p] {
            if let Some(a) = alts.iter().find(|a| deps.contains_key(*a)) {
                todo.push(a);
            }
        }
    }
    seen
}

/// The Debian package that ships `path` (tries the /usr-merged spellings).
fn package_of(test: &str, path: &str) -> Option<String> {
    let mut candidates = vec![path.to_string()];
    if let Some(rest) = path.strip_prefix("/usr") {
        candidates.push(rest.to_string());
    } else {
        candidates.push(format!("/usr{path}"));
    }
    if let Ok(real) = std::fs::canonicalize(path) {
        candidates.push(real.to_string_lossy().into_owned());
    }
    let dpkg = tool(
        test,
        PathBuf::from("/usr/bin/dpkg-query"),
        "a Debian system",
    )?;
    for c in candidates {
        let out = Command::new(&dpkg).args(["-S", &c]).output().unwrap();
        if out.status.success() {
            let text = String::from_utf8(out.stdout).unwrap();
            let pkg = text.split(':').next().unwrap().trim().to_string();
            return Some(pkg);
        }
    }
    panic!("no Debian package ships {path}");
}

/// Libraries (soname or interpreter path) the runtime stage does not provide:
/// neither from the base image's essential set, nor installed, nor copied.
fn missing_libraries(
    runtime: &Stage,
    needs: &[(String, String)],
    essential: &BTreeSet<String>,
) -> Vec<String> {
    needs
        .iter()
        .filter(|(lib, pkg)| {
            let file = Path::new(lib).file_name().unwrap().to_string_lossy();
            !(essential.contains(pkg)
                || runtime.apt_packages.contains(pkg)
                || runtime.copied.contains(file.as_ref()))
        })
        .map(|(lib, pkg)| format!("{lib} (Debian package {pkg})"))
        .collect()
}

#[test]
fn runtime_image_provides_the_release_binarys_shared_libraries() {
    let test = "runtime_image_provides_the_release_binarys_shared_libraries";
    let binary = root().join("target/release/config-access-collector");
    let Some(binary) = tool(
        test,
        binary,
        "`cargo build --release` (scripts/dev.sh test builds it before the tests)",
    ) else {
        return;
    };
    let bin = binary.to_str().unwrap();
    let how = "apt-get install binutils";
    let Some(dynamic) = run_tool(test, "/usr/bin/readelf", &["-d", bin], how) else {
        return;
    };
    let Some(headers) = run_tool(test, "/usr/bin/readelf", &["-l", bin], how) else {
        return;
    };
    let Some(cache) = run_tool(test, "/sbin/ldconfig", &["-p"], "libc-bin") else {
        return;
    };
    let Some(status) = run_tool(
        test,
        "/usr/bin/dpkg-query",
        &[
            "-W",
            "-f=${Package}\t${Essential}\t${Pre-Depends}\t${Depends}\t${db:Status-Abbrev}\n",
        ],
        "a Debian system",
    ) else {
        return;
    };

    // The image is built and run on Debian 12, like this machine: its
    // package database describes the image's distribution.
    let os = std::fs::read_to_string("/etc/os-release").unwrap();
    assert!(
        os.lines().any(|l| l == "VERSION_CODENAME=bookworm"),
        "this test reads Debian 12's package data: {os}"
    );
    let dockerfile = Dockerfile::parse(&read("Dockerfile"));
    let (builder, runtime) = (dockerfile.stage("builder"), dockerfile.runtime());
    assert_eq!(runtime.name, "runtime");
    // The published build: BINARY=build takes the binary from the builder.
    assert_eq!(dockerfile.stage("binary").from, "binary-build");
    assert_eq!(dockerfile.stage("binary-build").from, "builder");
    assert!(
        builder.from.starts_with("docker.io/library/rust:") && builder.from.ends_with("-bookworm"),
        "builder on Debian 12 (the runtime's glibc): {}",
        builder.from
    );
    assert_eq!(runtime.from, "docker.io/library/debian:bookworm-slim");

    // The release binary's needs: DT_NEEDED entries and the ELF interpreter.
    let needed: Vec<String> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect();
    assert!(
        needed.iter().any(|n| n.starts_with("libelf.so")),
        "{needed:?}"
    );
    let interpreter = headers
        .lines()
        .find_map(|l| l.trim().strip_prefix("[Requesting program interpreter: "))
        .map(|l| l.trim_end_matches(']').to_string())
        .expect("a dynamically linked binary");
    let arch_tag = match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "AArch64",
        other => panic!("no ldconfig tag known for {other}"),
    };
    let mut needs: Vec<(String, String)> = needed
        .iter()
        .map(|soname| {
            let path = cache
                .lines()
                .filter(|l| l.trim_start().starts_with(&format!("{soname} ")))
                .find(|l| l.contains(arch_tag))
                .and_then(|l| l.split("=> ").nth(1))
                .unwrap_or_else(|| panic!("{soname} is not in the linker cache"))
                .trim()
                .to_string();
            (soname.clone(), package_of(test, &path).unwrap())
        })
        .collect();
    needs.push((interpreter.clone(), package_of(test, &interpreter).unwrap()));

    let essential = essential_closure(&status);
    let missing = missing_libraries(runtime, &needs, &essential);
    assert!(
        missing.is_empty(),
        "the Dockerfile's runtime stage ({}) lacks {missing:?}; needs: {needs:?}",
        runtime.from
    );
    // The check can fail: without its apt-get install, libelf is missing.
    let mut bare = Stage {
        from: runtime.from.clone(),
        ..Stage::default()
    };
    bare.copied = runtime.copied.clone();
    let missing = missing_libraries(&bare, &needs, &essential);
    assert!(
        missing.iter().any(|m| m.starts_with("libelf.so")),
        "{missing:?}"
    );
    assert!(!essential.contains("libelf1"));

    // The runtime stage runs the binary it copies; the builder makes it
    // from the lockfile, with the toolchain of scripts/dev.sh.
    let entry = runtime.entrypoint.as_deref().expect("an ENTRYPOINT");
    assert!(runtime.copied.contains("config-access-collector"));
    assert_eq!(
        Path::new(entry).file_name().unwrap(),
        "config-access-collector"
    );
    assert!(builder
        .runs
        .iter()
        .any(|r| r.contains("cargo build --release --locked")));
    let dev = read("scripts/dev.sh");
    let apt_line = dev
        .lines()
        .find_map(|l| l.strip_prefix("APT_PACKAGES=("))
        .expect("APT_PACKAGES in scripts/dev.sh");
    for pkg in apt_line.trim_end_matches(')').split_whitespace() {
        if pkg != "clang-format" {
            assert!(
                builder.apt_packages.contains(pkg),
                "the builder stage lacks {pkg} (APT_PACKAGES of scripts/dev.sh)"
            );
        }
    }
}

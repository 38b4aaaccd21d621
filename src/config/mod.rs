//! Configuration: a YAML file, overridden by environment variables and flags.
//!
//! Precedence, lowest first: built-in defaults, the file's `kernel_collector:`
//! block (the published collector's keys), the file's own top-level keys,
//! then `CAC_*` environment variables and command-line flags (merged by clap).
//! Unknown keys and bad values are errors that name the key.
//!
//! The schema and defaults live here; [`file`] parses the YAML, `merge`
//! applies a file and the OTel environment, `validate` checks values, and
//! [`Overrides`] holds the flags. Config depends only on `model`: it never
//! builds another component's types; the agent does, from a [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::model::settings::{AccessLabel, KubeletWrites, OtlpProtocol};
use crate::model::volume::VolumeType;

pub mod file;
mod merge;
mod overrides;
mod validate;

pub use file::{parse_file_config, read_file_config, FileConfig, KernelCollectorBlock};
pub use overrides::Overrides;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// The file is not YAML: no key can be blamed, the place is given instead.
    #[error("config file is not valid YAML: line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Whether to read pod metadata from the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeMode {
    /// In-cluster service account or kubeconfig when available; standalone otherwise.
    Auto,
    /// Never: standalone mode.
    Off,
}

/// Resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Collector name, used in logs.
    pub name: String,
    /// Directory holding the kubelet's `pods/`.
    pub kubelet_root: PathBuf,
    pub monitor_secrets: bool,
    pub monitor_configmaps: bool,
    pub monitor_projected: bool,
    pub monitor_downward_api: bool,
    /// Keep the correlation maps (`pod_info_map`, `container_pids`) filled from
    /// the process lifecycle (fork, exit, cgroup moves) and a /proc scan.
    pub pod_correlation: bool,
    /// Also record 1 in N syscalls for pid -> cgroup correlation (a program
    /// on every syscall); 0, the default, does not load the sampler. Above 0
    /// it keeps the correlation maps on whatever `pod_correlation` says.
    pub syscall_sampling_rate: u32,
    /// Kernel ring buffer size in bytes (power of two, >= 4096).
    pub ring_buffer_bytes: u32,
    /// Pending ring-buffer bytes that wake the reader at once; 0 (the
    /// default): a quarter of the ring.
    pub wakeup_bytes: u64,
    /// Window of repeat aggregation in ms: a process's further opens of a
    /// file within it of an emitted open are counted in the kernel and
    /// reported as one summary event; 0 emits every open.
    pub repeat_window_ms: u64,
    /// Longest delay between an access and its delivery to user space, in ms.
    pub flush_interval_ms: u64,
    /// Capacity of the output queue, in events.
    pub buffer_size: usize,
    /// A watched volume is reported unread (files never read) once it has
    /// been watched this long: a duration such as `24h`, `90m`, `7d`.
    pub unused_after: String,
    /// Reads of a key by a container only within this long after the
    /// container started are reported as startup-only: a duration such as
    /// `5m` or `90s`.
    pub startup_window: String,
    /// How long each workload's accesses are learned (from its first one
    /// seen on this node) before an access outside them is flagged
    /// `first_seen`: a duration such as `1h` or `7d`.
    pub baseline_learning: String,
    /// A container seen with a new image extends its workload's learning window.
    pub baseline_extend_on_new_image: bool,
    /// Directory where the usage ledger is saved, so a restart keeps it
    /// (an absolute path); `off`: in memory only.
    pub state_dir: String,
    /// Report failed opens on kubelet volume paths.
    pub report_failed_opens: bool,
    pub kubelet_writes: KubeletWrites,
    /// Command names that identify the kubelet (in the host mount namespace).
    pub kubelet_process_names: Vec<String>,
    /// Interval of the safety-net volume rescan, in ms.
    pub rescan_interval_ms: u64,
    /// cgroup v1 controller for the fallback cgroup id: `auto`, `none` or a controller name.
    pub cgroup_v1_controller: String,
    pub log_level: String,
    /// Pod metadata from the Kubernetes API: `auto` or `off`.
    pub kube: KubeMode,
    /// API server URL, overriding the in-cluster and kubeconfig settings (no credentials).
    pub kube_api_url: Option<String>,
    /// This node's name; only its pods are watched (all pods when unset).
    pub node_name: Option<String>,
    /// Pod labels copied into events: exact keys, or prefixes ending in `*`.
    pub pod_labels: Vec<String>,
    /// How long a deleted pod's metadata still serves late events, in ms.
    pub deleted_pod_grace_ms: u64,
    /// Keep the Service endpoint map ((IP, port, protocol) -> Service and
    /// pod) from every Service and EndpointSlice of the cluster (with `kube: auto`).
    pub service_endpoints: bool,
    /// Most (address, target) entries the Service endpoint map holds.
    pub service_endpoints_max_entries: usize,
    /// Where the kernel's Service endpoint map `svc_endpoints` is pinned (a
    /// path in a bpf filesystem), or `off`.
    pub service_endpoints_pin: String,
    /// Address of the health endpoints (`/healthz`, `/readyz`), or `off`.
    pub health_listen: String,
    /// Unix socket of the correlation API (reads and writes), or `off`.
    pub api_socket: String,
    /// File mode of the API socket, octal.
    pub api_socket_mode: String,
    /// Optional TCP address of the correlation API (reads; writes with the token).
    pub api_listen: Option<String>,
    /// File holding the bearer token that allows writes over TCP.
    pub api_token_file: Option<PathBuf>,
    /// Most connections open at once on each correlation API listener (Unix
    /// socket, TCP); further ones are closed at once.
    pub api_max_connections: usize,
    /// Most connections open at once on the health listener, and on the
    /// `/metrics` listener (a budget each, apart from the API's).
    pub health_max_connections: usize,
    /// HTTP timeout of every listener, in ms: reading a request's headers,
    /// an idle keep-alive connection, a stalled body read or response write,
    /// and a whole request.
    pub http_timeout_ms: u64,
    /// Most mounts the correlation API holds from `POST /v1/mounts` (the
    /// watched volumes do not count).
    pub api_max_mounts: usize,
    /// Print events as JSON lines on stdout.
    pub stdout: bool,
    /// Also write JSON lines to this file, rotated by size.
    pub output_file: Option<PathBuf>,
    /// Rotate the output file once it passes this many bytes.
    pub output_file_max_bytes: usize,
    /// Rotated output files kept.
    pub output_file_keep: usize,
    /// OTLP endpoint (base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`); OTLP is off when unset.
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    /// Extra OTLP headers (merged with `OTEL_EXPORTER_OTLP_HEADERS`); values are not printed.
    #[serde(serialize_with = "redacted_values")]
    pub otlp_headers: BTreeMap<String, String>,
    /// Timeout of one OTLP export, retries included, in ms.
    pub otlp_timeout_ms: u64,
    /// Export metrics over OTLP (when an endpoint is set).
    pub otlp_metrics: bool,
    /// Export one OTLP log record per access (when an endpoint is set).
    pub otlp_logs: bool,
    /// Capacity of the OTLP log queue, in events; what overflows is counted as shed.
    pub otlp_logs_queue: usize,
    /// Log records per OTLP export request.
    pub otlp_logs_batch: usize,
    /// Interval between OTLP metric exports, in ms.
    pub metrics_export_interval_ms: u64,
    /// Address of the Prometheus `/metrics` endpoint, or `off`.
    pub metrics_listen: String,
    /// Labels of `kernel_monitor_access`.
    pub metrics_access_labels: Vec<AccessLabel>,
    /// Most label sets kept per metric; further ones are folded into one overflow series.
    pub metrics_cardinality_limit: usize,
    /// `service.name` of the OTel resource (unset: `service.name` from
    /// `OTEL_RESOURCE_ATTRIBUTES`, else `config-access-collector`).
    pub service_name: Option<String>,
    /// Extra OTel resource attributes (over `OTEL_RESOURCE_ATTRIBUTES`).
    pub resource_attributes: BTreeMap<String, String>,
    /// Longest time the shutdown spends draining and flushing, in ms.
    pub shutdown_timeout_ms: u64,
    /// Drop the collector's own opens in the kernel (always on in the binary;
    /// tests and benchmarks whose own process plays a reader turn it off).
    #[serde(skip)]
    pub ignore_own_opens: bool,
}

fn redacted_values<S: serde::Serializer>(
    map: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(map.keys().map(|k| (k, "<redacted>")))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "config-access-collector".into(),
            kubelet_root: PathBuf::from("/var/lib/kubelet"),
            monitor_secrets: true,
            monitor_configmaps: true,
            monitor_projected: true,
            monitor_downward_api: true,
            pod_correlation: true,
            syscall_sampling_rate: 0,
            ring_buffer_bytes: 4 << 20,
            wakeup_bytes: 0,
            repeat_window_ms: 1000,
            flush_interval_ms: 50,
            buffer_size: 4096,
            unused_after: "24h".into(),
            startup_window: "5m".into(),
            baseline_learning: "1h".into(),
            baseline_extend_on_new_image: true,
            state_dir: "off".into(),
            report_failed_opens: true,
            kubelet_writes: KubeletWrites::Report,
            kubelet_process_names: vec!["kubelet".into()],
            rescan_interval_ms: 10_000,
            cgroup_v1_controller: "auto".into(),
            log_level: "info".into(),
            kube: KubeMode::Auto,
            kube_api_url: None,
            node_name: None,
            pod_labels: vec!["app".into(), "app.kubernetes.io/*".into()],
            deleted_pod_grace_ms: 60_000,
            service_endpoints: true,
            service_endpoints_max_entries: 500_000,
            service_endpoints_pin: "off".into(),
            health_listen: "0.0.0.0:9890".into(),
            api_socket: "/run/config-access-collector/api.sock".into(),
            api_socket_mode: "0660".into(),
            api_listen: None,
            api_token_file: None,
            api_max_connections: 256,
            health_max_connections: 32,
            http_timeout_ms: 10_000,
            api_max_mounts: 4096,
            stdout: true,
            output_file: None,
            output_file_max_bytes: 100 << 20,
            output_file_keep: 5,
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            otlp_headers: BTreeMap::new(),
            otlp_timeout_ms: 10_000,
            otlp_metrics: true,
            otlp_logs: false,
            otlp_logs_queue: 4096,
            otlp_logs_batch: 512,
            metrics_export_interval_ms: 60_000,
            metrics_listen: "off".into(),
            metrics_access_labels: vec![
                AccessLabel::Namespace,
                AccessLabel::WorkloadKind,
                AccessLabel::Workload,
                AccessLabel::VolumeType,
                AccessLabel::Result,
            ],
            metrics_cardinality_limit: 2000,
            service_name: None,
            resource_attributes: BTreeMap::new(),
            shutdown_timeout_ms: 5000,
            ignore_own_opens: true,
        }
    }
}

impl Config {
    /// Pending ring-buffer bytes that wake the reader at once: `wakeup_bytes`,
    /// or a quarter of the ring when it is 0.
    pub fn wakeup_threshold(&self) -> u64 {
        match self.wakeup_bytes {
            0 => u64::from(self.ring_buffer_bytes) / 4,
            n => n,
        }
    }

    /// Whether the correlation maps are kept: by the lifecycle programs,
    /// or by the sampler.
    pub fn correlation(&self) -> bool {
        self.pod_correlation || self.syscall_sampling_rate > 0
    }

    /// Reads and resolves a config file (defaults when `path` is `None`).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        c.merge(read_file_config(path)?)?;
        c.validate()?;
        Ok(c)
    }

    /// Volume plugins to watch.
    pub fn volume_types(&self) -> Vec<VolumeType> {
        [
            (self.monitor_secrets, VolumeType::Secret),
            (self.monitor_configmaps, VolumeType::ConfigMap),
            (self.monitor_projected, VolumeType::Projected),
            (self.monitor_downward_api, VolumeType::DownwardApi),
        ]
        .into_iter()
        .filter_map(|(on, t)| on.then_some(t))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        c.merge(parse_file_config(text)?)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn accepts_published_kernel_collector_block() {
        let c = load_str(
            "kernel_collector:\n  name: kernel-config-monitor\n  buffer_size: 1000\n  enable_ebpf: true\n  monitor_configmaps: true\n  monitor_secrets: false\n  enable_pod_correlation: true\n  syscall_sampling_rate: 50\n  kubelet_pods_path: /data/kubelet/pods\n  configmap_volume_pattern: kubernetes.io~configmap\n  secret_volume_pattern: kubernetes.io~secret\n",
        )
        .unwrap();
        assert_eq!(c.name, "kernel-config-monitor");
        assert_eq!(c.buffer_size, 1000);
        assert_eq!(c.syscall_sampling_rate, 50);
        assert_eq!(c.kubelet_root, Path::new("/data/kubelet"));
        assert!(!c.monitor_secrets);
        assert!(!c.volume_types().contains(&VolumeType::Secret));
    }

    #[test]
    fn top_level_keys_win_over_the_block() {
        let c =
            load_str("syscall_sampling_rate: 7\nkernel_collector:\n  syscall_sampling_rate: 50\n")
                .unwrap();
        assert_eq!(c.syscall_sampling_rate, 7);
        let c = load_str("kernel_collector:\n  enable_pod_correlation: false\n").unwrap();
        assert_eq!(c.syscall_sampling_rate, 0);
        assert!(!c.pod_correlation);
    }

    #[test]
    fn the_wakeup_threshold_scales_with_the_ring() {
        let c = load_str("ring_buffer_bytes: 65536\n").unwrap();
        assert_eq!(c.wakeup_threshold(), 16384);
        let c = load_str("ring_buffer_bytes: 65536\nwakeup_bytes: 4096\n").unwrap();
        assert_eq!(c.wakeup_threshold(), 4096);
        assert!(load_str("ring_buffer_bytes: 65536\nwakeup_bytes: 65537\n").is_err());
    }

    #[test]
    fn correlation_needs_no_sampler() {
        let c = Config::default();
        assert!(c.pod_correlation && c.correlation());
        assert_eq!(
            c.syscall_sampling_rate, 0,
            "no program on every syscall by default"
        );
        let c = load_str("pod_correlation: false\n").unwrap();
        assert!(!c.correlation());
        // The sampler feeds the same maps: it keeps them on.
        let c = load_str("pod_correlation: false\nsyscall_sampling_rate: 100\n").unwrap();
        assert!(c.correlation());
    }

    #[test]
    fn errors_name_the_key() {
        let key = |text: &str| match load_str(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an error for {text:?}, got {other:?}"),
        };
        assert_eq!(key("ring_buffer_bytes: 5000\n"), "ring_buffer_bytes");
        assert_eq!(key("repeat_window_ms: 5\n"), "repeat_window_ms");
        assert_eq!(key("repeat_window_ms: 60001\n"), "repeat_window_ms");
        assert_eq!(
            load_str("repeat_window_ms: 0\n").unwrap().repeat_window_ms,
            0
        );
        assert_eq!(Config::default().repeat_window_ms, 1000);
        assert_eq!(key("unused_after: soon\n"), "unused_after");
        assert_eq!(key("state_dir: relative/dir\n"), "state_dir");
        assert_eq!(Config::default().state_dir_path().unwrap(), None);
        assert_eq!(key("unused_after: 0s\n"), "unused_after");
        assert_eq!(key("unused_after: 400d\n"), "unused_after");
        assert_eq!(key("startup_window: 2d\n"), "startup_window");
        assert_eq!(key("baseline_learning: 31d\n"), "baseline_learning");
        assert_eq!(key("startup_window: later\n"), "startup_window");
        assert_eq!(
            load_str("unused_after: 7d\n")
                .unwrap()
                .unused_after_duration()
                .unwrap(),
            std::time::Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(
            key("syscall_sampling_rate: lots\n"),
            "syscall_sampling_rate"
        );
        assert_eq!(
            key("kernel_collector:\n  buffer_size: -1\n"),
            "kernel_collector.buffer_size"
        );
        assert_eq!(
            key("kernel_collector:\n  enable_ebpf: false\n"),
            "kernel_collector.enable_ebpf"
        );
        assert_eq!(
            key("kernel_collector:\n  secret_volume_pattern: secrets\n"),
            "kernel_collector.secret_volume_pattern"
        );
        assert_eq!(key("kubelet_writes: sometimes\n"), "kubelet_writes");
        assert_eq!(key("kubelet_root: relative/dir\n"), "kubelet_root");
        assert_eq!(key("health_listen: 9890\n"), "health_listen");
        assert_eq!(key("api_socket_mode: \"rw\"\n"), "api_socket_mode");
        assert_eq!(key("api_socket: relative.sock\n"), "api_socket");
        assert_eq!(key("api_token_file: /etc/token\n"), "api_token_file");
        assert_eq!(key("monitor_secrets: false\nmonitor_configmaps: false\nmonitor_projected: false\nmonitor_downward_api: false\n"), "monitor_secrets");
        assert_eq!(key("otlp_endpoint: collector:4317\n"), "otlp_endpoint");
        assert_eq!(key("otlp_protocol: http/json\n"), "otlp_protocol");
        assert_eq!(
            key("otlp_headers: {\"bad key\": v}\n"),
            "otlp_headers.bad key"
        );
        assert_eq!(key("metrics_listen: 9891\n"), "metrics_listen");
        assert_eq!(key("api_max_connections: 0\n"), "api_max_connections");
        assert_eq!(key("health_max_connections: 0\n"), "health_max_connections");
        assert_eq!(key("http_timeout_ms: 50\n"), "http_timeout_ms");
        assert_eq!(key("api_max_mounts: 0\n"), "api_max_mounts");
        assert_eq!(
            key("service_endpoints_max_entries: 0\n"),
            "service_endpoints_max_entries"
        );
        assert_eq!(key("service_endpoints: sometimes\n"), "service_endpoints");
        assert_eq!(
            key("service_endpoints_max_entries: 4294967296\n"),
            "service_endpoints_max_entries"
        );
        assert_eq!(
            key("service_endpoints_pin: svc_endpoints\n"),
            "service_endpoints_pin"
        );
        let pinned = load_str("service_endpoints_pin: /sys/fs/bpf/cac/svc_endpoints\n").unwrap();
        assert_eq!(
            pinned.service_endpoints_pin_path().unwrap(),
            Some("/sys/fs/bpf/cac/svc_endpoints".into())
        );
        assert_eq!(
            Config::default().service_endpoints_pin_path().unwrap(),
            None
        );
        let off =
            load_str("service_endpoints: false\nservice_endpoints_max_entries: 10\n").unwrap();
        assert!(!off.service_endpoints);
        assert_eq!(off.service_endpoints_max_entries, 10);
        assert_eq!(
            key("metrics_access_labels: [pid]\n"),
            "metrics_access_labels[0]"
        );
        assert_eq!(key("otlp_logs_queue: 0\n"), "otlp_logs_queue");
        let unknown = load_str("no_such_key: 1\n").unwrap_err().to_string();
        assert!(unknown.contains("no_such_key"), "{unknown}");
    }

    #[test]
    fn syntax_errors_give_the_place_and_blame_no_key() {
        // (text, line and column of the problem, keys that must not be blamed)
        let cases = [
            // A tab in the indentation of line 3; parsing was inside `stdout`.
            ("log_level: info\nstdout: true\n\tapi_socket: off\n", (3, 1)),
            // A quote opened in `kubelet_root` and never closed.
            (
                "log_level: info\nkubelet_root: \"/var/lib\nstdout: true\n",
                (4, 1),
            ),
            // A flow mapping that is never closed.
            ("stdout: true\nresource_attributes: {a: b\n", (3, 1)),
        ];
        for (text, (line, column)) in cases {
            let e = load_str(text).unwrap_err();
            let ConfigError::Syntax {
                line: l, column: c, ..
            } = &e
            else {
                panic!("{text:?}: expected a syntax error, got {e:?}");
            };
            assert_eq!((*l, *c), (line, column), "{text:?}: {e}");
            let shown = e.to_string();
            for key in ["log_level", "stdout", "kubelet_root", "resource_attributes"] {
                assert!(!shown.contains(key), "{text:?} blames {key}: {shown}");
            }
            assert!(
                shown.contains(&format!("line {line}, column {column}")),
                "{shown}"
            );
        }
        // A type error in valid YAML still names its key, once.
        let e = load_str("log_level: info\nring_buffer_bytes: [1]\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { key, .. } if key == "ring_buffer_bytes"),
            "{e:?}"
        );
        assert_eq!(e.to_string().matches("ring_buffer_bytes").count(), 1, "{e}");
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn otel_environment_sits_under_the_config_file() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "15000"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_LOGS_EXPORTER", "otlp"),
        ];
        let mut c = Config::default();
        c.apply_otel_env(env(&vars)).unwrap();
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://env:4317"));
        assert_eq!(c.otlp_protocol, OtlpProtocol::Grpc);
        assert_eq!(
            (c.otlp_timeout_ms, c.metrics_export_interval_ms),
            (2500, 15000)
        );
        assert_eq!(c.service_name.as_deref(), Some("from-env"));
        assert!(c.otlp_logs && c.otlp_metrics);
        c.merge(
            parse_file_config(
                "otlp_endpoint: https://file:4318\notlp_protocol: http/protobuf\nservice_name: from-file\n",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(c.otlp_endpoint.as_deref(), Some("https://file:4318"));
        assert_eq!(c.otlp_protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(c.service_name.as_deref(), Some("from-file"));

        let mut c = Config::default();
        c.apply_otel_env(env(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_LOGS_EXPORTER", "otlp"),
        ]))
        .unwrap();
        assert!(!c.otlp_metrics && !c.otlp_logs);
        for (k, v) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
        ] {
            match Config::default().apply_otel_env(env(&[(k, v)])) {
                Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, k),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }

    #[test]
    fn printed_config_hides_header_values() {
        let c = load_str("otlp_headers: {authorization: Bearer s3cr3t}\n").unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains("authorization") && !json.contains("s3cr3t"),
            "{json}"
        );
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.yaml"))
                .unwrap();
        let c = load_str(&text).unwrap();
        assert_eq!(c.kubelet_root, Path::new("/var/lib/kubelet"));
    }
}

//! Configuration: a YAML file, overridden by environment variables and flags.
//!
//! Precedence, lowest first: built-in defaults, the file's `kernel_collector:`
//! block (the published collector's keys), the file's own top-level keys,
//! then `CAC_*` environment variables and command-line flags (merged by clap).
//! Unknown keys and bad values are errors that name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::KubeletWrites;
use crate::volumes::VolumeType;

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

/// The published collector's `kernel_collector:` block, accepted as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelCollectorBlock {
    pub name: Option<String>,
    pub buffer_size: Option<usize>,
    pub enable_ebpf: Option<bool>,
    pub monitor_configmaps: Option<bool>,
    pub monitor_secrets: Option<bool>,
    pub enable_pod_correlation: Option<bool>,
    pub syscall_sampling_rate: Option<u32>,
    pub kubelet_pods_path: Option<PathBuf>,
    pub configmap_volume_pattern: Option<String>,
    pub secret_volume_pattern: Option<String>,
}

/// The config file's own keys (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub name: Option<String>,
    pub kubelet_root: Option<PathBuf>,
    pub monitor_secrets: Option<bool>,
    pub monitor_configmaps: Option<bool>,
    pub monitor_projected: Option<bool>,
    pub monitor_downward_api: Option<bool>,
    pub syscall_sampling_rate: Option<u32>,
    pub ring_buffer_bytes: Option<u32>,
    pub wakeup_bytes: Option<u64>,
    pub flush_interval_ms: Option<u64>,
    pub buffer_size: Option<usize>,
    pub report_failed_opens: Option<bool>,
    pub kubelet_writes: Option<KubeletWrites>,
    pub kubelet_process_names: Option<Vec<String>>,
    pub rescan_interval_ms: Option<u64>,
    pub cgroup_v1_controller: Option<String>,
    pub log_level: Option<String>,
    pub kube: Option<KubeMode>,
    pub kube_api_url: Option<String>,
    pub node_name: Option<String>,
    pub pod_labels: Option<Vec<String>>,
    pub deleted_pod_grace_ms: Option<u64>,
    pub health_listen: Option<String>,
    pub api_socket: Option<String>,
    pub api_socket_mode: Option<String>,
    pub api_listen: Option<String>,
    pub api_token_file: Option<PathBuf>,
    pub api_max_connections: Option<usize>,
    pub health_max_connections: Option<usize>,
    pub http_timeout_ms: Option<u64>,
    pub api_max_mounts: Option<usize>,
    pub stdout: Option<bool>,
    pub output_file: Option<PathBuf>,
    pub output_file_max_bytes: Option<usize>,
    pub output_file_keep: Option<usize>,
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<OtlpProtocol>,
    pub otlp_headers: Option<BTreeMap<String, String>>,
    pub otlp_timeout_ms: Option<u64>,
    pub otlp_metrics: Option<bool>,
    pub otlp_logs: Option<bool>,
    pub otlp_logs_queue: Option<usize>,
    pub otlp_logs_batch: Option<usize>,
    pub metrics_export_interval_ms: Option<u64>,
    pub metrics_listen: Option<String>,
    pub metrics_access_labels: Option<Vec<AccessLabel>>,
    pub metrics_cardinality_limit: Option<usize>,
    pub service_name: Option<String>,
    pub resource_attributes: Option<BTreeMap<String, String>>,
    pub shutdown_timeout_ms: Option<u64>,
    pub kernel_collector: Option<KernelCollectorBlock>,
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

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318); `/v1/metrics` and `/v1/logs` are appended.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(format!("must be grpc or http/protobuf, got {other:?}")),
        }
    }
}

/// Labels that may be put on the per-access counter (`kernel_monitor_access`).
/// Bounded by design: no pid, path or key labels exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLabel {
    /// Namespace of the volume's pod.
    Namespace,
    /// Pod name (one series per pod: mind the cardinality).
    Pod,
    /// Container name of the reader.
    Container,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, ...
    WorkloadKind,
    /// Name of the owning workload.
    Workload,
    /// `secret`, `configmap`, `projected`, `downward-api`.
    VolumeType,
    /// `ok` or the errno name (`EACCES` for denied opens).
    Result,
    /// `read`, `write`, `read_write`.
    Access,
    /// The event type (`secret_access`, ..., `kubelet_write`).
    EventType,
}

impl AccessLabel {
    /// The label's name on the metric.
    pub fn key(self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::Pod => "pod",
            Self::Container => "container",
            Self::WorkloadKind => "workload_kind",
            Self::Workload => "workload",
            Self::VolumeType => "volume_type",
            Self::Result => "result",
            Self::Access => "access",
            Self::EventType => "event_type",
        }
    }
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
    /// Record 1 in N syscalls for pid -> cgroup correlation; 0 disables.
    pub syscall_sampling_rate: u32,
    /// Kernel ring buffer size in bytes (power of two, >= 4096).
    pub ring_buffer_bytes: u32,
    /// Pending ring-buffer bytes that wake the reader at once.
    pub wakeup_bytes: u64,
    /// Longest delay between an access and its delivery to user space, in ms.
    pub flush_interval_ms: u64,
    /// Capacity of the output queue, in events.
    pub buffer_size: usize,
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
            syscall_sampling_rate: 100,
            ring_buffer_bytes: 4 << 20,
            wakeup_bytes: 256 << 10,
            flush_interval_ms: 50,
            buffer_size: 4096,
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

/// Parses config YAML; errors name the offending key path.
///
/// A syntax error is reported by line and column, never by key: the
/// deserializer meets the broken text while it is inside whichever key came
/// before, and naming that key would blame the wrong line. So the text is
/// first checked as YAML alone, then deserialized with key paths.
pub fn parse_file_config(text: &str) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    if let Err(e) = serde_yaml_ng::from_str::<serde::de::IgnoredAny>(text) {
        return Err(syntax_error(&e));
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." {
            "(top level)".to_string()
        } else {
            key
        };
        let message = e.into_inner().to_string();
        // The YAML error names the key path itself; say it once.
        let message = match message.strip_prefix(&format!("{key}: ")) {
            Some(rest) => rest.to_string(),
            None => message,
        };
        invalid(&key, message)
    })
}

fn syntax_error(e: &serde_yaml_ng::Error) -> ConfigError {
    let message = e.to_string();
    match e.location() {
        Some(at) => ConfigError::Syntax {
            line: at.line(),
            column: at.column(),
            // The place is in the variant; drop it from the parser's words.
            message: message.replacen(
                &format!(" at line {} column {}", at.line(), at.column()),
                "",
                1,
            ),
        },
        None => invalid("(top level)", message),
    }
}

/// Reads and parses a config file (empty settings when `path` is `None`).
pub fn read_file_config(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    match path {
        None => Ok(FileConfig::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            parse_file_config(&text)
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

impl Config {
    /// Reads and resolves a config file (defaults when `path` is `None`).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        c.merge(read_file_config(path)?)?;
        c.validate()?;
        Ok(c)
    }

    /// Applies a parsed file over `self`.
    pub fn merge(&mut self, f: FileConfig) -> Result<(), ConfigError> {
        if let Some(k) = f.kernel_collector {
            if k.enable_ebpf == Some(false) {
                return Err(invalid(
                    "kernel_collector.enable_ebpf",
                    "this collector works only through eBPF; remove the key or set it to true",
                ));
            }
            for (key, value, want) in [
                (
                    "kernel_collector.configmap_volume_pattern",
                    &k.configmap_volume_pattern,
                    VolumeType::ConfigMap,
                ),
                (
                    "kernel_collector.secret_volume_pattern",
                    &k.secret_volume_pattern,
                    VolumeType::Secret,
                ),
            ] {
                if let Some(v) = value {
                    if v != want.plugin_dir() {
                        return Err(invalid(
                            key,
                            format!(
                                "the kubelet names this directory `{}`, not `{v}`",
                                want.plugin_dir()
                            ),
                        ));
                    }
                }
            }
            if let Some(pods) = k.kubelet_pods_path {
                if pods.file_name().is_none_or(|n| n != "pods") {
                    return Err(invalid(
                        "kernel_collector.kubelet_pods_path",
                        format!("must end in /pods, got {}", pods.display()),
                    ));
                }
                self.kubelet_root = pods.parent().map(Path::to_path_buf).unwrap_or_default();
            }
            set(&mut self.name, k.name);
            set(&mut self.buffer_size, k.buffer_size);
            set(&mut self.monitor_configmaps, k.monitor_configmaps);
            set(&mut self.monitor_secrets, k.monitor_secrets);
            set(&mut self.syscall_sampling_rate, k.syscall_sampling_rate);
            if k.enable_pod_correlation == Some(false) {
                self.syscall_sampling_rate = 0;
            }
        }
        set(&mut self.name, f.name);
        set(&mut self.kubelet_root, f.kubelet_root);
        set(&mut self.monitor_secrets, f.monitor_secrets);
        set(&mut self.monitor_configmaps, f.monitor_configmaps);
        set(&mut self.monitor_projected, f.monitor_projected);
        set(&mut self.monitor_downward_api, f.monitor_downward_api);
        set(&mut self.syscall_sampling_rate, f.syscall_sampling_rate);
        set(&mut self.ring_buffer_bytes, f.ring_buffer_bytes);
        set(&mut self.wakeup_bytes, f.wakeup_bytes);
        set(&mut self.flush_interval_ms, f.flush_interval_ms);
        set(&mut self.buffer_size, f.buffer_size);
        set(&mut self.report_failed_opens, f.report_failed_opens);
        set(&mut self.kubelet_writes, f.kubelet_writes);
        set(&mut self.kubelet_process_names, f.kubelet_process_names);
        set(&mut self.rescan_interval_ms, f.rescan_interval_ms);
        set(&mut self.cgroup_v1_controller, f.cgroup_v1_controller);
        set(&mut self.log_level, f.log_level);
        set(&mut self.kube, f.kube);
        if f.kube_api_url.is_some() {
            self.kube_api_url = f.kube_api_url;
        }
        if f.node_name.is_some() {
            self.node_name = f.node_name;
        }
        set(&mut self.pod_labels, f.pod_labels);
        set(&mut self.deleted_pod_grace_ms, f.deleted_pod_grace_ms);
        set(&mut self.health_listen, f.health_listen);
        set(&mut self.api_socket, f.api_socket);
        set(&mut self.api_socket_mode, f.api_socket_mode);
        if f.api_listen.is_some() {
            self.api_listen = f.api_listen;
        }
        if f.api_token_file.is_some() {
            self.api_token_file = f.api_token_file;
        }
        set(&mut self.api_max_connections, f.api_max_connections);
        set(&mut self.health_max_connections, f.health_max_connections);
        set(&mut self.http_timeout_ms, f.http_timeout_ms);
        set(&mut self.api_max_mounts, f.api_max_mounts);
        set(&mut self.stdout, f.stdout);
        if f.output_file.is_some() {
            self.output_file = f.output_file;
        }
        set(&mut self.output_file_max_bytes, f.output_file_max_bytes);
        set(&mut self.output_file_keep, f.output_file_keep);
        if f.otlp_endpoint.is_some() {
            self.otlp_endpoint = f.otlp_endpoint.filter(|e| !e.is_empty());
        }
        set(&mut self.otlp_protocol, f.otlp_protocol);
        if let Some(h) = f.otlp_headers {
            self.otlp_headers.extend(h);
        }
        set(&mut self.otlp_timeout_ms, f.otlp_timeout_ms);
        set(&mut self.otlp_metrics, f.otlp_metrics);
        set(&mut self.otlp_logs, f.otlp_logs);
        set(&mut self.otlp_logs_queue, f.otlp_logs_queue);
        set(&mut self.otlp_logs_batch, f.otlp_logs_batch);
        set(
            &mut self.metrics_export_interval_ms,
            f.metrics_export_interval_ms,
        );
        set(&mut self.metrics_listen, f.metrics_listen);
        set(&mut self.metrics_access_labels, f.metrics_access_labels);
        set(
            &mut self.metrics_cardinality_limit,
            f.metrics_cardinality_limit,
        );
        if f.service_name.is_some() {
            self.service_name = f.service_name;
        }
        if let Some(a) = f.resource_attributes {
            self.resource_attributes.extend(a);
        }
        set(&mut self.shutdown_timeout_ms, f.shutdown_timeout_ms);
        Ok(())
    }

    /// Applies the standard OpenTelemetry environment variables (below the
    /// config file in precedence). `OTEL_EXPORTER_OTLP_HEADERS` and
    /// `OTEL_RESOURCE_ATTRIBUTES` are read by the SDK itself at start.
    pub fn apply_otel_env(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let number = |k: &str| -> Result<Option<u64>, ConfigError> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| invalid(k, format!("not a number of milliseconds: {v}")))
                })
                .transpose()
        };
        if let Some(e) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.otlp_endpoint = Some(e);
        }
        if let Some(p) = get("OTEL_EXPORTER_OTLP_PROTOCOL") {
            self.otlp_protocol = p
                .parse()
                .map_err(|m| invalid("OTEL_EXPORTER_OTLP_PROTOCOL", m))?;
        }
        set(
            &mut self.otlp_timeout_ms,
            number("OTEL_EXPORTER_OTLP_TIMEOUT")?,
        );
        set(
            &mut self.metrics_export_interval_ms,
            number("OTEL_METRIC_EXPORT_INTERVAL")?,
        );
        if let Some(n) = get("OTEL_SERVICE_NAME") {
            self.service_name = Some(n);
        }
        match get("OTEL_METRICS_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => self.otlp_metrics = false,
            Some(v) => {
                return Err(invalid(
                    "OTEL_METRICS_EXPORTER",
                    format!("must be otlp or none, got {v}"),
                ))
            }
        }
        match get("OTEL_LOGS_EXPORTER").as_deref().map(str::trim) {
            None => {}
            Some("otlp") => self.otlp_logs = true,
            Some("none") => self.otlp_logs = false,
            Some(v) => {
                return Err(invalid(
                    "OTEL_LOGS_EXPORTER",
                    format!("must be otlp or none, got {v}"),
                ))
            }
        }
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            self.otlp_metrics = false;
            self.otlp_logs = false;
        }
        Ok(())
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rb = self.ring_buffer_bytes;
        if rb < 4096 || !rb.is_power_of_two() {
            return Err(invalid(
                "ring_buffer_bytes",
                format!("must be a power of two of at least 4096, got {rb}"),
            ));
        }
        if self.wakeup_bytes == 0 || self.wakeup_bytes > u64::from(rb) {
            return Err(invalid(
                "wakeup_bytes",
                format!(
                    "must be between 1 and ring_buffer_bytes ({rb}), got {}",
                    self.wakeup_bytes
                ),
            ));
        }
        if !(1..=10_000).contains(&self.flush_interval_ms) {
            return Err(invalid(
                "flush_interval_ms",
                format!("must be 1..=10000, got {}", self.flush_interval_ms),
            ));
        }
        if self.buffer_size == 0 {
            return Err(invalid("buffer_size", "must be at least 1"));
        }
        if self.rescan_interval_ms < 100 {
            return Err(invalid(
                "rescan_interval_ms",
                format!("must be at least 100, got {}", self.rescan_interval_ms),
            ));
        }
        if !self.kubelet_root.is_absolute() {
            return Err(invalid(
                "kubelet_root",
                format!(
                    "must be an absolute path, got {}",
                    self.kubelet_root.display()
                ),
            ));
        }
        if self.volume_types().is_empty() {
            return Err(invalid(
                "monitor_secrets",
                "every monitor_* key is false: nothing to watch",
            ));
        }
        if let Some(url) = &self.kube_api_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "kube_api_url",
                    format!("must be an http:// or https:// URL, got {url}"),
                ));
            }
        }
        self.listeners()?;
        if self.output_file_max_bytes < 4096 {
            return Err(invalid(
                "output_file_max_bytes",
                format!("must be at least 4096, got {}", self.output_file_max_bytes),
            ));
        }
        if self.output_file.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(invalid("output_file", "must be an absolute path"));
        }
        if let Some(e) = &self.otlp_endpoint {
            let ok = (e.starts_with("http://") || e.starts_with("https://"))
                && e.parse::<axum::http::Uri>().is_ok();
            if !ok {
                return Err(invalid(
                    "otlp_endpoint",
                    format!("must be an http:// or https:// URL, got {e}"),
                ));
            }
        }
        for (key, v, min) in [
            ("otlp_timeout_ms", self.otlp_timeout_ms, 1),
            (
                "metrics_export_interval_ms",
                self.metrics_export_interval_ms,
                100,
            ),
            ("otlp_logs_queue", self.otlp_logs_queue as u64, 1),
            ("otlp_logs_batch", self.otlp_logs_batch as u64, 1),
            (
                "metrics_cardinality_limit",
                self.metrics_cardinality_limit as u64,
                1,
            ),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms, 1),
            ("api_max_connections", self.api_max_connections as u64, 1),
            (
                "health_max_connections",
                self.health_max_connections as u64,
                1,
            ),
            ("http_timeout_ms", self.http_timeout_ms, 100),
            ("api_max_mounts", self.api_max_mounts as u64, 1),
        ] {
            if v < min {
                return Err(invalid(key, format!("must be at least {min}, got {v}")));
            }
        }
        for (k, v) in &self.otlp_headers {
            if axum::http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || axum::http::HeaderValue::from_str(v).is_err()
            {
                return Err(invalid(
                    &format!("otlp_headers.{k}"),
                    "not a valid HTTP header name and value",
                ));
            }
        }
        self.metrics_addr()?;
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(invalid(
                "log_level",
                format!("not a log filter: {}", self.log_level),
            ));
        }
        Ok(())
    }

    /// Where events are written.
    pub fn outputs(&self) -> crate::output::Outputs {
        crate::output::Outputs {
            stdout: self.stdout,
            file: self
                .output_file
                .clone()
                .map(|path| crate::output::FileOutput {
                    path,
                    max_bytes: self.output_file_max_bytes,
                    keep: self.output_file_keep,
                }),
            queue: self.buffer_size,
        }
    }

    /// Address of the Prometheus endpoint (`None`: off), validated.
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        match self.metrics_listen.as_str() {
            "off" => Ok(None),
            v => v.parse().map(Some).map_err(|_| {
                invalid(
                    "metrics_listen",
                    format!("not an address like 0.0.0.0:9891, or off: {v}"),
                )
            }),
        }
    }

    /// The API and health listeners, validated.
    pub fn listeners(&self) -> Result<crate::api::Listeners, ConfigError> {
        let addr = |key: &str, v: &str| -> Result<std::net::SocketAddr, ConfigError> {
            v.parse()
                .map_err(|_| invalid(key, format!("not an address like 0.0.0.0:9890: {v}")))
        };
        let health = match self.health_listen.as_str() {
            "off" => None,
            v => Some(addr("health_listen", v)?),
        };
        let mode = u32::from_str_radix(self.api_socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                invalid(
                    "api_socket_mode",
                    format!("not an octal file mode like 0660: {}", self.api_socket_mode),
                )
            })?;
        let socket = match self.api_socket.as_str() {
            "off" => None,
            p if p.starts_with('/') => Some((PathBuf::from(p), mode)),
            p => {
                return Err(invalid(
                    "api_socket",
                    format!("must be an absolute path or off, got {p}"),
                ))
            }
        };
        let tcp = match &self.api_listen {
            None => None,
            Some(v) => Some((addr("api_listen", v)?, self.api_token_file.clone())),
        };
        if self.api_token_file.is_some() && tcp.is_none() {
            return Err(invalid(
                "api_token_file",
                "set api_listen too: the token guards writes over TCP",
            ));
        }
        Ok(crate::api::Listeners {
            health,
            socket,
            tcp,
            metrics: self.metrics_addr()?,
            limits: crate::api::Limits {
                api_max_connections: self.api_max_connections,
                health_max_connections: self.health_max_connections,
                http_timeout: std::time::Duration::from_millis(self.http_timeout_ms),
                api_max_mounts: self.api_max_mounts,
            },
        })
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
    }

    #[test]
    fn errors_name_the_key() {
        let key = |text: &str| match load_str(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an error for {text:?}, got {other:?}"),
        };
        assert_eq!(key("ring_buffer_bytes: 5000\n"), "ring_buffer_bytes");
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

/// Command-line flags and `CAC_*` environment variables; each overrides the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// YAML config file.
    #[arg(long, env = "CAC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory that holds the kubelet's pods/ (default /var/lib/kubelet).
    #[arg(long, env = "CAC_KUBELET_ROOT")]
    pub kubelet_root: Option<PathBuf>,
    /// Record 1 in N syscalls for pid -> cgroup correlation; 0 disables.
    #[arg(long, env = "CAC_SYSCALL_SAMPLING_RATE")]
    pub syscall_sampling_rate: Option<u32>,
    /// Kernel ring buffer size in bytes (power of two).
    #[arg(long, env = "CAC_RING_BUFFER_BYTES")]
    pub ring_buffer_bytes: Option<u32>,
    /// The kubelet's own writes: report or drop.
    #[arg(long, env = "CAC_KUBELET_WRITES", value_parser = ["report", "drop"])]
    pub kubelet_writes: Option<String>,
    /// Log filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, env = "CAC_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Do not contact the Kubernetes API (standalone mode).
    #[arg(long, env = "CAC_NO_KUBE")]
    pub no_kube: bool,
    /// Kubernetes API server URL (overrides in-cluster and kubeconfig settings).
    #[arg(long, env = "CAC_KUBE_API_URL")]
    pub kube_api_url: Option<String>,
    /// This node's name (from the downward API in the DaemonSet).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Address of /healthz and /readyz, or `off`.
    #[arg(long, env = "CAC_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// Unix socket of the correlation API, or `off`.
    #[arg(long, env = "CAC_API_SOCKET")]
    pub api_socket: Option<String>,
    /// Also write events to this JSON-lines file (rotated by size).
    #[arg(long, env = "CAC_OUTPUT_FILE")]
    pub output_file: Option<PathBuf>,
    /// OTLP endpoint (over OTEL_EXPORTER_OTLP_ENDPOINT); OTLP is off without one.
    #[arg(long, env = "CAC_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Also export one OTLP log record per access.
    #[arg(long, env = "CAC_OTLP_LOGS")]
    pub otlp_logs: bool,
    /// Address of the Prometheus /metrics endpoint, or `off`.
    #[arg(long, env = "CAC_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

impl Config {
    /// Loads `overrides.config` and applies the other overrides on top.
    pub fn resolve(o: &Overrides) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        c.apply_otel_env(|k| std::env::var(k).ok())?;
        c.merge(read_file_config(o.config.as_deref())?)?;
        c.merge(FileConfig {
            kubelet_root: o.kubelet_root.clone(),
            syscall_sampling_rate: o.syscall_sampling_rate,
            ring_buffer_bytes: o.ring_buffer_bytes,
            kubelet_writes: o.kubelet_writes.as_deref().map(|w| {
                if w == "drop" {
                    KubeletWrites::Drop
                } else {
                    KubeletWrites::Report
                }
            }),
            log_level: o.log_level.clone(),
            kube: o.no_kube.then_some(KubeMode::Off),
            kube_api_url: o.kube_api_url.clone(),
            node_name: o.node_name.clone(),
            health_listen: o.health_listen.clone(),
            api_socket: o.api_socket.clone(),
            output_file: o.output_file.clone(),
            otlp_endpoint: o.otlp_endpoint.clone(),
            otlp_logs: o.otlp_logs.then_some(true),
            metrics_listen: o.metrics_listen.clone(),
            ..FileConfig::default()
        })?;
        c.validate()?;
        Ok(c)
    }
}

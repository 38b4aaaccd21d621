//! The config file: its keys (all optional) and its parsing, with errors
//! that name the offending key, or the line and column of a syntax error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{invalid, AccessLabel, ConfigError, KubeMode, KubeletWrites, OtlpProtocol};

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
    pub pod_correlation: Option<bool>,
    pub syscall_sampling_rate: Option<u32>,
    pub ring_buffer_bytes: Option<u32>,
    pub wakeup_bytes: Option<u64>,
    pub repeat_window_ms: Option<u64>,
    pub flush_interval_ms: Option<u64>,
    pub buffer_size: Option<usize>,
    pub unused_after: Option<String>,
    pub startup_window: Option<String>,
    pub baseline_learning: Option<String>,
    pub baseline_extend_on_new_image: Option<bool>,
    pub state_dir: Option<String>,
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
    pub service_endpoints: Option<bool>,
    pub service_endpoints_max_entries: Option<usize>,
    pub service_endpoints_pin: Option<String>,
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

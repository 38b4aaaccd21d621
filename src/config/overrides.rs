//! Command-line flags and `CAC_*` environment variables, merged over the
//! config file.

use std::path::PathBuf;

use super::{read_file_config, Config, ConfigError, FileConfig, KubeMode, KubeletWrites};

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

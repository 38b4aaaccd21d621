//! Applying a parsed file, and the standard OpenTelemetry environment
//! variables, over a [`Config`].

use std::path::Path;

use super::{invalid, Config, ConfigError, FileConfig, KernelCollectorBlock, VolumeType};

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// `config.x = file.x` for each named field the file sets.
macro_rules! replace {
    ($config:ident, $file:ident; $($field:ident),* $(,)?) => {
        $( set(&mut $config.$field, $file.$field); )*
    };
}

/// `config.x = file.x` for each named optional field the file sets.
macro_rules! replace_optional {
    ($config:ident, $file:ident; $($field:ident),* $(,)?) => {
        $( if $file.$field.is_some() { $config.$field = $file.$field; } )*
    };
}

impl Config {
    /// Applies a parsed file over `self`: every key it sets replaces the
    /// value; `otlp_headers` and `resource_attributes` are added to.
    pub fn merge(&mut self, f: FileConfig) -> Result<(), ConfigError> {
        if let Some(k) = f.kernel_collector {
            self.merge_kernel_collector(k)?;
        }
        replace!(self, f; name, kubelet_root, monitor_secrets, monitor_configmaps, monitor_projected, monitor_downward_api, pod_correlation, syscall_sampling_rate, ring_buffer_bytes, wakeup_bytes, repeat_window_ms, flush_interval_ms, buffer_size, unused_after, startup_window, baseline_learning, baseline_extend_on_new_image, state_dir, report_failed_opens, kubelet_writes, kubelet_process_names, rescan_interval_ms, cgroup_v1_controller, log_level, kube, pod_labels, deleted_pod_grace_ms, service_endpoints, service_endpoints_max_entries, service_endpoints_pin, health_listen, api_socket, api_socket_mode, api_max_connections, health_max_connections, http_timeout_ms, api_max_mounts, stdout, output_file_max_bytes, output_file_keep, otlp_protocol, otlp_timeout_ms, otlp_metrics, otlp_logs, otlp_logs_queue, otlp_logs_batch, metrics_export_interval_ms, metrics_listen, metrics_access_labels, metrics_cardinality_limit, shutdown_timeout_ms);
        replace_optional!(self, f; kube_api_url, node_name, api_listen, api_token_file, output_file, service_name);
        if f.otlp_endpoint.is_some() {
            self.otlp_endpoint = f.otlp_endpoint.filter(|e| !e.is_empty());
        }
        if let Some(h) = f.otlp_headers {
            self.otlp_headers.extend(h);
        }
        if let Some(a) = f.resource_attributes {
            self.resource_attributes.extend(a);
        }
        Ok(())
    }

    /// Applies the published collector's `kernel_collector:` block.
    fn merge_kernel_collector(&mut self, k: KernelCollectorBlock) -> Result<(), ConfigError> {
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
        set(&mut self.pod_correlation, k.enable_pod_correlation);
        if k.enable_pod_correlation == Some(false) {
            self.syscall_sampling_rate = 0;
        }
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
}

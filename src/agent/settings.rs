//! Each component's own settings, built from the resolved [`Config`]: the
//! one place where the config schema meets the components (config never
//! builds another layer's types).

use std::time::Duration;

use crate::api::{Limits, Listeners};
use crate::config::KubeMode;
use crate::config::{Config, ConfigError};
use crate::enrich::pods::{LabelFilter, WatchSettings};
use crate::enrich::services::MapSettings;
use crate::enrich::watcher::WatchConfig;
use crate::kernel::probe::{ProbeOptions, ServiceEndpointsMap, WAKEUP_GAP};
use crate::output::telemetry::{OtlpSettings, ResourceSettings, TelemetrySettings};
use crate::output::{FileOutput, Outputs};
use crate::usage::ledger::LedgerSettings;
use crate::usage::UsageSettings;

/// Load-time settings of the BPF programs, with the cgroup v1 subsystem
/// index found on this node.
pub fn probe_options(config: &Config, cgroup_v1_subsys: Option<u32>) -> ProbeOptions {
    ProbeOptions {
        correlation: config.correlation(),
        sample_every: config.syscall_sampling_rate,
        ring_bytes: config.ring_buffer_bytes,
        wakeup_bytes: config.wakeup_threshold(),
        wakeup_gap: WAKEUP_GAP,
        report_failed_opens: config.report_failed_opens,
        cgroup_v1_subsys,
        ignore_own_process: config.ignore_own_opens,
        repeat_window: std::time::Duration::from_millis(config.repeat_window_ms),
        service_endpoints: service_map(config).map(|s| ServiceEndpointsMap {
            max_entries: u32::try_from(s.max_entries).unwrap_or(u32::MAX),
            // Validated at load: an error here is only a config built in code.
            pin: config.service_endpoints_pin_path().ok().flatten(),
        }),
    }
}

/// What the volume watcher watches, and how often it rescans.
pub fn watch_config(config: &Config) -> WatchConfig {
    WatchConfig {
        kubelet_root: config.kubelet_root.clone(),
        types: config.volume_types(),
        rescan_interval: Duration::from_millis(config.rescan_interval_ms),
        debounce: Duration::from_millis(50),
    }
}

/// Which pods the kube watcher follows and which labels it keeps.
pub fn pod_watch(config: &Config) -> WatchSettings {
    WatchSettings {
        node_name: config.node_name.clone(),
        labels: LabelFilter(config.pod_labels.clone()),
    }
}

/// The Service endpoint map's settings; `None` when it is off
/// (`service_endpoints: false`, or no Kubernetes API with `kube: off`).
pub fn service_map(config: &Config) -> Option<MapSettings> {
    (config.service_endpoints && config.kube == KubeMode::Auto).then_some(MapSettings {
        max_entries: config.service_endpoints_max_entries,
    })
}

/// Where JSON events are written.
pub fn outputs(config: &Config) -> Outputs {
    Outputs {
        stdout: config.stdout,
        file: config.output_file.clone().map(|path| FileOutput {
            path,
            max_bytes: config.output_file_max_bytes,
            keep: config.output_file_keep,
        }),
        queue: config.buffer_size,
    }
}

/// The HTTP listeners and their limits.
pub fn listeners(config: &Config) -> Result<Listeners, ConfigError> {
    Ok(Listeners {
        health: config.health_addr()?,
        socket: config.api_socket_spec()?,
        tcp: config.api_tcp()?,
        metrics: config.metrics_addr()?,
        limits: Limits {
            api_max_connections: config.api_max_connections,
            health_max_connections: config.health_max_connections,
            http_timeout: Duration::from_millis(config.http_timeout_ms),
            api_max_mounts: config.api_max_mounts,
        },
    })
}

/// OTLP export, the Prometheus registry and the OTel resource.
pub fn telemetry(config: &Config) -> Result<TelemetrySettings, ConfigError> {
    let otlp = match &config.otlp_endpoint {
        None => None,
        Some(endpoint) => Some(OtlpSettings {
            endpoint: endpoint.clone(),
            protocol: config.otlp_protocol,
            headers: config.otlp_header_map()?,
            timeout: Duration::from_millis(config.otlp_timeout_ms),
        }),
    };
    Ok(TelemetrySettings {
        otlp,
        otlp_metrics: config.otlp_metrics,
        otlp_logs: config.otlp_logs,
        export_interval: Duration::from_millis(config.metrics_export_interval_ms),
        prometheus: config.metrics_addr()?.is_some(),
        cardinality_limit: config.metrics_cardinality_limit,
        resource: ResourceSettings {
            node_name: config.node_name.clone(),
            service_name: config.service_name.clone(),
            attributes: config.resource_attributes.clone(),
        },
    })
}

/// The usage answers' settings.
pub fn usage(config: &Config) -> Result<UsageSettings, ConfigError> {
    Ok(UsageSettings {
        ledger: LedgerSettings::default(),
        unused_after: config.unused_after_duration()?,
        startup_window: config.startup_window_duration()?,
        baseline: crate::usage::baseline::BaselineSettings {
            learning: config.baseline_learning_duration()?,
            extend_on_new_image: config.baseline_extend_on_new_image,
            ..Default::default()
        },
        state_file: config
            .state_dir_path()?
            .map(|dir| crate::usage::state::state_file(&dir)),
    })
}

//! Checks of values that parse but make no sense, and the parsed forms of
//! the listener addresses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{invalid, Config, ConfigError};

/// Bounds of `unused_after`.
const UNUSED_AFTER: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(366 * 24 * 3600);
/// Bounds of `baseline_learning`.
const BASELINE_LEARNING: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 3600);
/// Bounds of `startup_window`.
const STARTUP_WINDOW: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// Duration `value` of config key `key` (`24h`, `90m`, `7d`, ...), within `range` (`bounds` in words).
fn duration(
    key: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<Duration>,
    bounds: &str,
) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value).map_err(|e| {
        invalid(
            key,
            format!("{e}: expected a duration such as 24h, 90m or 7d"),
        )
    })?;
    if !range.contains(&d) {
        return Err(invalid(key, format!("must be {bounds}, got {value}")));
    }
    Ok(d)
}

impl Config {
    /// `unused_after` as a duration (`24h`, `90m`, `7d`, ...), 1 s to 366 days.
    pub fn unused_after_duration(&self) -> Result<Duration, ConfigError> {
        duration(
            "unused_after",
            &self.unused_after,
            UNUSED_AFTER,
            "1s to 366d",
        )
    }

    /// `baseline_learning` as a duration (`1h`, `7d`, ...), 1 s to 30 days.
    pub fn baseline_learning_duration(&self) -> Result<Duration, ConfigError> {
        duration(
            "baseline_learning",
            &self.baseline_learning,
            BASELINE_LEARNING,
            "1s to 30d",
        )
    }

    /// `startup_window` as a duration (`5m`, `90s`, ...), 1 s to 24 hours.
    pub fn startup_window_duration(&self) -> Result<Duration, ConfigError> {
        duration(
            "startup_window",
            &self.startup_window,
            STARTUP_WINDOW,
            "1s to 24h",
        )
    }

    /// `state_dir` as a path; `None` for `off`.
    pub fn state_dir_path(&self) -> Result<Option<PathBuf>, ConfigError> {
        absolute_or_off("state_dir", &self.state_dir)
    }

    /// `service_endpoints_pin` as a path; `None` for `off`.
    pub fn service_endpoints_pin_path(&self) -> Result<Option<PathBuf>, ConfigError> {
        absolute_or_off("service_endpoints_pin", &self.service_endpoints_pin)
    }

    /// Checks values that parse but make no sense; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_kernel()?;
        self.validate_sources()?;
        self.health_addr()?;
        self.api_socket_spec()?;
        self.api_tcp()?;
        self.validate_outputs()?;
        self.validate_minimums()?;
        self.validate_headers()?;
        self.metrics_addr()?;
        self.validate_log_level()
    }

    /// The ring buffer, its wakeups and the reader's queue.
    fn validate_kernel(&self) -> Result<(), ConfigError> {
        let rb = self.ring_buffer_bytes;
        if rb < 4096 || !rb.is_power_of_two() {
            return Err(invalid(
                "ring_buffer_bytes",
                format!("must be a power of two of at least 4096, got {rb}"),
            ));
        }
        if self.wakeup_bytes > u64::from(rb) {
            return Err(invalid(
                "wakeup_bytes",
                format!(
                    "must be at most ring_buffer_bytes ({rb}) (0: a quarter of it), got {}",
                    self.wakeup_bytes
                ),
            ));
        }
        if self.repeat_window_ms != 0 && !(10..=60_000).contains(&self.repeat_window_ms) {
            return Err(invalid(
                "repeat_window_ms",
                format!(
                    "must be 0 (every open is an event) or 10..=60000, got {}",
                    self.repeat_window_ms
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
        self.unused_after_duration()?;
        self.startup_window_duration()?;
        self.baseline_learning_duration()?;
        self.state_dir_path()?;
        if self.rescan_interval_ms < 100 {
            return Err(invalid(
                "rescan_interval_ms",
                format!("must be at least 100, got {}", self.rescan_interval_ms),
            ));
        }
        Ok(())
    }

    /// Where volumes and pod metadata come from.
    fn validate_sources(&self) -> Result<(), ConfigError> {
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
        if u32::try_from(self.service_endpoints_max_entries).is_err() {
            return Err(invalid(
                "service_endpoints_max_entries",
                format!(
                    "must be at most {} (the kernel map's bound), got {}",
                    u32::MAX,
                    self.service_endpoints_max_entries
                ),
            ));
        }
        self.service_endpoints_pin_path()?;
        Ok(())
    }

    /// The event file and the OTLP endpoint.
    fn validate_outputs(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Numbers with a lower bound.
    fn validate_minimums(&self) -> Result<(), ConfigError> {
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
            (
                "service_endpoints_max_entries",
                self.service_endpoints_max_entries as u64,
                1,
            ),
        ] {
            if v < min {
                return Err(invalid(key, format!("must be at least {min}, got {v}")));
            }
        }
        Ok(())
    }

    /// Extra OTLP headers must be valid HTTP.
    fn validate_headers(&self) -> Result<(), ConfigError> {
        self.otlp_header_map().map(|_| ())
    }

    /// The extra OTLP headers as HTTP headers; the error names the bad one.
    pub fn otlp_header_map(&self) -> Result<axum::http::HeaderMap, ConfigError> {
        let mut map = axum::http::HeaderMap::new();
        for (k, v) in &self.otlp_headers {
            let name = axum::http::HeaderName::from_bytes(k.as_bytes());
            let value = axum::http::HeaderValue::from_str(v);
            let (Ok(name), Ok(value)) = (name, value) else {
                return Err(invalid(
                    &format!("otlp_headers.{k}"),
                    "not a valid HTTP header name and value",
                ));
            };
            map.insert(name, value);
        }
        Ok(map)
    }

    fn validate_log_level(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(invalid(
                "log_level",
                format!("not a log filter: {}", self.log_level),
            ));
        }
        Ok(())
    }

    /// Address of the Prometheus endpoint (`None`: off), validated.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
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

    /// The health listener's address (`None`: off), validated.
    pub fn health_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.health_listen.as_str() {
            "off" => Ok(None),
            v => parse_addr("health_listen", v).map(Some),
        }
    }

    /// The API socket's path and file mode (`None`: off), validated.
    pub fn api_socket_spec(&self) -> Result<Option<(PathBuf, u32)>, ConfigError> {
        let mode = u32::from_str_radix(self.api_socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                invalid(
                    "api_socket_mode",
                    format!("not an octal file mode like 0660: {}", self.api_socket_mode),
                )
            })?;
        match self.api_socket.as_str() {
            "off" => Ok(None),
            p if p.starts_with('/') => Ok(Some((PathBuf::from(p), mode))),
            p => Err(invalid(
                "api_socket",
                format!("must be an absolute path or off, got {p}"),
            )),
        }
    }

    /// The API's TCP address and token file (`None`: off), validated.
    pub fn api_tcp(&self) -> Result<Option<(SocketAddr, Option<PathBuf>)>, ConfigError> {
        let tcp = match &self.api_listen {
            None => None,
            Some(v) => Some((parse_addr("api_listen", v)?, self.api_token_file.clone())),
        };
        if self.api_token_file.is_some() && tcp.is_none() {
            return Err(invalid(
                "api_token_file",
                "set api_listen too: the token guards writes over TCP",
            ));
        }
        Ok(tcp)
    }
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| invalid(key, format!("not an address like 0.0.0.0:9890: {v}")))
}

/// `value` of `key` as an absolute path; `None` for `off`.
fn absolute_or_off(key: &str, value: &str) -> Result<Option<PathBuf>, ConfigError> {
    if value == "off" {
        return Ok(None);
    }
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(invalid(
            key,
            format!("must be an absolute path or off, got {value:?}"),
        ));
    }
    Ok(Some(path))
}

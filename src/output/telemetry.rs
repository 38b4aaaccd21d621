//! OpenTelemetry wiring: the resource, the OTLP exporters (gRPC or
//! HTTP/protobuf), the Prometheus pull registry, and a shutdown bounded in time.
//!
//! Settings come resolved in [`TelemetrySettings`] (the agent builds them
//! from the config: the standard `OTEL_*` variables under the config file). `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_COMPRESSION` and `OTEL_RESOURCE_ATTRIBUTES` are read by
//! the SDK itself (the log export reads the first two in
//! [`super::otlp_export`]); nothing reads `OTEL_EXPORTER_OTLP_CERTIFICATE`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    ExporterBuildError, MetricExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{
    Instrument, PeriodicReader, SdkMeterProvider, Stream, Temporality,
};
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::Resource;

use super::otlp_export::{ExportError, LogSender};
use crate::model::settings::OtlpProtocol;

/// Name of the meter (the instrumentation scope) of every metric.
pub const METER_NAME: &str = "config-access-collector";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter")]
    Exporter(#[from] ExporterBuildError),
    #[error("OTLP log exporter")]
    LogExporter(#[from] ExportError),
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
    #[error("OTLP exporter runtime")]
    Runtime(#[source] std::io::Error),
    #[error("TLS provider: {0}")]
    Tls(String),
}

/// Outcomes of export requests of one signal.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Requests the receiver accepted.
    pub ok: AtomicU64,
    /// Requests that failed (receiver down, timeout, rejected).
    pub failed: AtomicU64,
}

impl ExportCounters {
    fn count(&self, r: &OTelSdkResult) {
        let slot = if r.is_ok() { &self.ok } else { &self.failed };
        slot.fetch_add(1, Ordering::Relaxed);
    }
}

/// Resolved OTLP settings shared by the metric and log exporters.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// Base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Extra headers of every export request (valid by construction).
    pub headers: axum::http::HeaderMap,
    pub timeout: Duration,
}

/// What the OpenTelemetry wiring needs.
#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    /// OTLP export (`None`: off).
    pub otlp: Option<OtlpSettings>,
    /// Export metrics over OTLP (when `otlp` is set).
    pub otlp_metrics: bool,
    /// Export one log record per access over OTLP (when `otlp` is set).
    pub otlp_logs: bool,
    /// Interval between OTLP metric exports.
    pub export_interval: Duration,
    /// Serve a Prometheus registry (for `/metrics`).
    pub prometheus: bool,
    /// Most label sets kept per metric.
    pub cardinality_limit: usize,
    pub resource: ResourceSettings,
}

/// What the OTel resource says besides what is detected.
#[derive(Debug, Clone, Default)]
pub struct ResourceSettings {
    /// `k8s.node.name`.
    pub node_name: Option<String>,
    /// `service.name` (over `OTEL_RESOURCE_ATTRIBUTES`).
    pub service_name: Option<String>,
    /// Extra attributes (over `OTEL_RESOURCE_ATTRIBUTES`).
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl OtlpSettings {
    /// URL of one signal: the base as is for gRPC, plus `/v1/<signal>` for HTTP.
    fn url(&self, signal: &str) -> String {
        match self.protocol {
            OtlpProtocol::Grpc => self.endpoint.clone(),
            OtlpProtocol::HttpProtobuf => {
                format!("{}/v1/{signal}", self.endpoint.trim_end_matches('/'))
            }
        }
    }

    /// Endpoint, timeout and headers of an OTLP/gRPC exporter of `signal`.
    fn grpc<B: WithExportConfig + WithTonicConfig>(&self, builder: B, signal: &str) -> B {
        builder
            .with_endpoint(self.url(signal))
            .with_timeout(self.timeout)
            .with_metadata(self.metadata())
    }

    /// Endpoint, timeout and headers of an OTLP/HTTP exporter of `signal`.
    fn http<B: WithExportConfig + WithHttpConfig>(&self, builder: B, signal: &str) -> B {
        builder
            .with_endpoint(self.url(signal))
            .with_timeout(self.timeout)
            .with_headers(self.header_strings())
    }

    /// The headers as the HTTP exporter takes them (values of visible ASCII, as parsed).
    fn header_strings(&self) -> HashMap<String, String> {
        self.headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect()
    }

    fn metadata(&self) -> opentelemetry_otlp::tonic_types::metadata::MetadataMap {
        opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(self.headers.clone())
    }
}

/// A metric exporter that counts the outcome of every export.
#[derive(Debug)]
struct CountingExporter {
    inner: MetricExporter,
    counters: Arc<ExportCounters>,
}

impl PushMetricExporter for CountingExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let r = self.inner.export(metrics).await;
        self.counters.count(&r);
        if let Err(e) = &r {
            tracing::debug!("OTLP metric export failed: {e}");
        }
        r
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// The OpenTelemetry resource: detected host and node attributes, under
/// `OTEL_RESOURCE_ATTRIBUTES`, under the config's `service_name` and
/// `resource_attributes`.
pub fn resource(config: &ResourceSettings) -> Resource {
    let mut base = vec![
        KeyValue::new("service.name", "config-access-collector"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Ok(host) = nix::unistd::gethostname() {
        base.push(KeyValue::new(
            "host.name",
            host.to_string_lossy().into_owned(),
        ));
    }
    if let Some(node) = &config.node_name {
        base.push(KeyValue::new("k8s.node.name", node.clone()));
    }
    let mut b = Resource::builder_empty()
        .with_attributes(base)
        .with_detectors(&[
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ]);
    if let Some(name) = &config.service_name {
        b = b.with_service_name(name.clone());
    }
    b.with_attributes(
        config
            .attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    )
    .build()
}

/// Providers and exporters of the running collector.
pub struct Telemetry {
    meters: SdkMeterProvider,
    /// False when neither OTLP metrics nor `/metrics` is on.
    exported: bool,
    registry: Option<prometheus::Registry>,
    resource: Resource,
    otlp: Option<OtlpSettings>,
    otlp_logs: bool,
    /// Drives the gRPC channels (tonic needs a Tokio runtime).
    runtime: Option<tokio::runtime::Runtime>,
    /// Outcomes of OTLP metric exports.
    pub metric_exports: Arc<ExportCounters>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("otlp", &self.otlp)
            .field("prometheus", &self.registry.is_some())
            .finish_non_exhaustive()
    }
}

/// Installs ring as the process's TLS provider (once; later calls are no-ops).
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Telemetry {
    /// Builds the meter provider with the configured readers: OTLP push,
    /// Prometheus pull, both, or neither (instruments then cost next to nothing).
    pub fn start(config: &TelemetrySettings) -> Result<Self, TelemetryError> {
        install_tls_provider();
        let resource = resource(&config.resource);
        let otlp = config.otlp.clone();
        let limit = config.cardinality_limit;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_view(move |i: &Instrument| {
                (i.scope().name() == METER_NAME)
                    .then(|| Stream::builder().with_cardinality_limit(limit).build().ok())
                    .flatten()
            });
        let metric_exports = Arc::new(ExportCounters::default());
        let needs_runtime = otlp
            .as_ref()
            .is_some_and(|o| o.protocol == OtlpProtocol::Grpc);
        let runtime = needs_runtime
            .then(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otlp-grpc")
                    .enable_all()
                    .build()
                    .map_err(TelemetryError::Runtime)
            })
            .transpose()?;
        if let (Some(o), true) = (&otlp, config.otlp_metrics) {
            let _guard = runtime.as_ref().map(|r| r.enter());
            let exporter = match o.protocol {
                OtlpProtocol::Grpc => o
                    .grpc(MetricExporter::builder().with_tonic(), "metrics")
                    .build()?,
                OtlpProtocol::HttpProtobuf => o
                    .http(MetricExporter::builder().with_http(), "metrics")
                    .build()?,
            };
            let reader = PeriodicReader::builder(CountingExporter {
                inner: exporter,
                counters: Arc::clone(&metric_exports),
            })
            .with_interval(config.export_interval)
            .build();
            builder = builder.with_reader(reader);
        }
        let registry = match config.prometheus {
            false => None,
            true => {
                let registry = prometheus::Registry::new();
                let reader = opentelemetry_prometheus::exporter()
                    .with_registry(registry.clone())
                    .build()
                    .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
                builder = builder.with_reader(reader);
                Some(registry)
            }
        };
        let exported = registry.is_some() || (otlp.is_some() && config.otlp_metrics);
        Ok(Self {
            meters: builder.build(),
            exported,
            registry,
            resource,
            otlp_logs: config.otlp_logs && otlp.is_some(),
            otlp,
            runtime,
            metric_exports,
        })
    }

    /// The meter every instrument of the collector comes from (a no-op
    /// meter when no metric is exported: a provider without readers refuses
    /// observable instruments).
    pub fn meter(&self) -> Meter {
        if self.exported {
            self.meters.meter(METER_NAME)
        } else {
            opentelemetry::metrics::noop::NoopMeterProvider::new().meter(METER_NAME)
        }
    }

    /// The Prometheus registry served at `/metrics` (when enabled).
    pub fn registry(&self) -> Option<&prometheus::Registry> {
        self.registry.as_ref()
    }

    /// The OTel resource of every signal.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// The sender of access-event logs, when OTLP logs are on.
    pub fn log_exporter(&self) -> Result<Option<LogSender>, TelemetryError> {
        let Some(o) = self.otlp.as_ref().filter(|_| self.otlp_logs) else {
            return Ok(None);
        };
        let url = o.url("logs");
        let sender = match (&o.protocol, &self.runtime) {
            (OtlpProtocol::Grpc, Some(rt)) => {
                LogSender::grpc(&url, &o.headers, o.timeout, rt.handle().clone())?
            }
            (OtlpProtocol::Grpc, None) => unreachable!("gRPC export starts a runtime"),
            (OtlpProtocol::HttpProtobuf, _) => LogSender::http(&url, &o.headers, o.timeout)?,
        };
        Ok(Some(sender))
    }

    /// Collects and exports the metrics now.
    pub fn force_flush(&self) {
        if let Err(e) = self.meters.force_flush() {
            tracing::debug!("metric flush: {e}");
        }
    }

    /// Exports the metrics one last time and stops the readers, giving up
    /// after `timeout` (an export to a black hole must not hold the shutdown).
    pub fn shutdown(mut self, timeout: Duration) {
        let meters = self.meters.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("otel-shutdown".into())
            .spawn(move || {
                let _ = done_tx.send(meters.shutdown());
            });
        match spawned.map(|_| done_rx.recv_timeout(timeout)) {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("final metric export failed: {e}"),
            Ok(Err(_)) => tracing::warn!(?timeout, "final metric export still running; giving up"),
            Err(e) => tracing::warn!("cannot flush metrics: {e}"),
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

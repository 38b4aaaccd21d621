//! Access events as OTLP log records, one per access, with attributes in
//! OpenTelemetry semantic-convention names where one exists (`k8s.*`,
//! `container.*`, `process.*`, `file.*`) and `config_access.*` otherwise.
//!
//! The output has its own bounded queue (filled by the reader with
//! `try_send`, so it never blocks the kernel reader) and its own thread,
//! which exports batches synchronously. Every event ends exported, or counted
//! in its [`OutputStats`]: queue full, export failed, or left at the
//! shutdown deadline.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::LogExporter;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLogger};
use opentelemetry_sdk::Resource;

use super::OutputStats;
use crate::model::event::AccessEvent;
use crate::model::pod::SourceKind;

/// Longest wait for a batch to fill once its first event arrived.
const LINGER: Duration = Duration::from_millis(200);

/// `k8s.<kind>.name` attribute of a workload kind, when the conventions name one.
fn workload_key(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" => "k8s.deployment.name",
        "StatefulSet" => "k8s.statefulset.name",
        "DaemonSet" => "k8s.daemonset.name",
        "ReplicaSet" => "k8s.replicaset.name",
        "Job" => "k8s.job.name",
        "CronJob" => "k8s.cronjob.name",
        _ => return None,
    })
}

fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Secret => "Secret",
        SourceKind::ConfigMap => "ConfigMap",
        SourceKind::ServiceAccountToken => "ServiceAccountToken",
        SourceKind::DownwardApi => "DownwardAPI",
        SourceKind::ClusterTrustBundle => "ClusterTrustBundle",
    }
}

/// Fills `rec` from `ev`: timestamps, severity, a one-line body, attributes.
pub fn fill_record(rec: &mut SdkLogRecord, ev: &AccessEvent) {
    fill_header(rec, ev);
    fill_text_attributes(rec, ev);
    fill_numeric_attributes(rec, ev);
}

/// Timestamps, event name, severity (WARN for a denied open) and the body.
fn fill_header(rec: &mut SdkLogRecord, ev: &AccessEvent) {
    let when = chrono::DateTime::parse_from_rfc3339(&ev.timestamp)
        .map(SystemTime::from)
        .unwrap_or_else(|_| SystemTime::now());
    rec.set_timestamp(when);
    rec.set_observed_timestamp(SystemTime::now());
    rec.set_event_name("config_access");
    let denied = matches!(ev.result.as_str(), "EACCES" | "EPERM");
    let (severity, text) = if denied {
        (Severity::Warn, "WARN")
    } else {
        (Severity::Info, "INFO")
    };
    rec.set_severity_number(severity);
    rec.set_severity_text(text);
    let object = ev
        .source
        .as_ref()
        .map(|s| kind_name(s.kind))
        .or(ev.volume_type.as_deref())
        .unwrap_or("volume");
    rec.set_body(AnyValue::from(format!(
        "{} (pid {}) {} {} {}/{} key {}: {}",
        ev.process.command,
        ev.process.pid,
        ev.access,
        object,
        ev.namespace.as_deref().unwrap_or("?"),
        ev.config_name.as_deref().unwrap_or("?"),
        ev.key.as_deref().unwrap_or("?"),
        ev.result
    )));
}

/// The attributes that are text, under their semantic-convention names.
fn fill_text_attributes(rec: &mut SdkLogRecord, ev: &AccessEvent) {
    let mut s = |k: &'static str, v: Option<&str>| {
        if let Some(v) = v {
            rec.add_attribute(k, v.to_string());
        }
    };
    s("config_access.event_type", Some(&ev.event_type));
    s("k8s.namespace.name", ev.namespace.as_deref());
    s("k8s.pod.name", ev.pod_name.as_deref());
    s("k8s.pod.uid", ev.pod_uid.as_deref());
    s("k8s.volume.name", ev.volume_name.as_deref());
    s("k8s.volume.type", ev.volume_type.as_deref());
    s("file.name", ev.key.as_deref());
    s("file.path", ev.path.as_deref());
    s("config_access.mount_path", ev.mount_path.as_deref());
    s("config_access.config_name", ev.config_name.as_deref());
    s("config_access.access", Some(&ev.access));
    s("config_access.result", Some(&ev.result));
    s("config_access.syscall", Some(&ev.syscall));
    s("config_access.reader_pod_uid", ev.reader_pod_uid.as_deref());
    s(
        "config_access.service_account",
        ev.service_account.as_deref(),
    );
    s("process.executable.name", Some(&ev.process.command));
    s(
        "config_access.cgroup_path",
        ev.process.cgroup_path.as_deref(),
    );
    if ev.result != "ok" {
        s("error.type", Some(&ev.result));
    }
    if let Some(c) = &ev.container {
        s("container.id", Some(&c.id));
        s("k8s.container.name", c.name.as_deref());
        s("container.image.name", c.image.as_deref());
    }
    if let Some(src) = &ev.source {
        s("config_access.object.kind", Some(kind_name(src.kind)));
        s("config_access.object.name", src.name.as_deref());
        s("config_access.object.key", src.key.as_deref());
    }
    if let Some(w) = &ev.workload {
        s("config_access.workload.kind", Some(&w.kind));
        s("config_access.workload.name", Some(&w.name));
        if let Some(key) = workload_key(&w.kind) {
            s(key, Some(&w.name));
        }
    }
    for (k, v) in &ev.labels {
        rec.add_attribute(format!("k8s.pod.label.{k}"), v.clone());
    }
}

/// Process ids and numbers, and the token flag.
fn fill_numeric_attributes(rec: &mut SdkLogRecord, ev: &AccessEvent) {
    let p = &ev.process;
    for (k, v) in [
        ("process.pid", i64::from(p.pid)),
        ("thread.id", i64::from(p.tid)),
        ("process.user.id", i64::from(p.uid)),
        ("process.group.id", i64::from(p.gid)),
        ("config_access.cgroup_id", p.cgroup_id as i64),
        ("config_access.mnt_ns", i64::from(p.mnt_ns)),
    ] {
        rec.add_attribute(k, v);
    }
    rec.add_attribute(
        "config_access.service_account_token",
        ev.service_account_token,
    );
    if let Some(r) = &ev.repeats {
        rec.add_attribute("config_access.repeats.count", r.count as i64);
        rec.add_attribute("config_access.repeats.since", r.since.clone());
    }
}

/// The running OTLP log output.
#[derive(Debug)]
pub struct EventLogOutput {
    thread: Option<JoinHandle<()>>,
    deadline: Arc<OnceLock<Instant>>,
    pub stats: Arc<OutputStats>,
}

struct Worker {
    exporter: LogExporter,
    logger: SdkLogger,
    scope: InstrumentationScope,
    stats: Arc<OutputStats>,
    deadline: Arc<OnceLock<Instant>>,
    /// Records per export request.
    max_batch: usize,
}

impl Worker {
    fn past_deadline(&self) -> bool {
        self.deadline.get().is_some_and(|d| Instant::now() >= *d)
    }

    fn export(&self, batch: &[SdkLogRecord]) {
        if batch.is_empty() {
            return;
        }
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            batch.iter().map(|r| (r, &self.scope)).collect();
        let n = batch.len() as u64;
        let result = self
            .stats
            .busy(|| futures::executor::block_on(self.exporter.export(LogBatch::new(&refs))));
        match result {
            Ok(()) => {
                self.stats.delivered.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!("OTLP log export of {n} records failed: {e}");
                self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                self.stats.export_failed.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn run(self, events: Receiver<Arc<AccessEvent>>) {
        let mut batch: Vec<SdkLogRecord> = Vec::with_capacity(self.max_batch);
        // A batch is whatever arrives within LINGER of its first event, up to
        // max_batch records; a closed queue ends the last batch at once.
        while let Ok(first) = events.recv() {
            let until = Instant::now() + LINGER;
            let mut next = Some(first);
            while let Some(ev) = next {
                let mut rec = self.logger.create_log_record();
                fill_record(&mut rec, &ev);
                batch.push(rec);
                next = if batch.len() < self.max_batch {
                    events
                        .recv_timeout(until.saturating_duration_since(Instant::now()))
                        .ok()
                } else {
                    None
                };
            }
            if self.past_deadline() {
                let left = batch.len() as u64 + events.try_iter().count() as u64;
                self.stats.shutdown.fetch_add(left, Ordering::Relaxed);
                break;
            }
            self.export(&batch);
            batch.clear();
        }
        if let Err(e) = self.exporter.shutdown() {
            tracing::debug!("OTLP log exporter shutdown: {e}");
        }
    }
}

impl EventLogOutput {
    /// Starts exporting the events that arrive on `events`, `max_batch` records per request.
    pub fn spawn(
        mut exporter: LogExporter,
        resource: &Resource,
        events: Receiver<Arc<AccessEvent>>,
        max_batch: usize,
        stats: Arc<OutputStats>,
    ) -> std::io::Result<Self> {
        exporter.set_resource(resource);
        // A provider without processors: only a factory of records here.
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .build();
        let scope = InstrumentationScope::builder(crate::output::telemetry::METER_NAME)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let deadline = Arc::new(OnceLock::new());
        let worker = Worker {
            exporter,
            logger: provider.logger_with_scope(scope.clone()),
            scope,
            stats: Arc::clone(&stats),
            deadline: Arc::clone(&deadline),
            max_batch: max_batch.max(1),
        };
        let thread = std::thread::Builder::new()
            .name("otlp-logs".into())
            .spawn(move || worker.run(events))?;
        Ok(Self {
            thread: Some(thread),
            deadline,
            stats,
        })
    }

    /// Waits for the queue to drain (its senders must be gone), giving up on
    /// what is left at `deadline` (counted as shed).
    pub fn finish(mut self, deadline: Instant) {
        let _ = self.deadline.set(deadline);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};

    #[test]
    fn every_event_is_exported_or_counted_and_the_deadline_holds() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Accepts connections and never answers.
        let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = hole.local_addr().unwrap();
        std::thread::spawn(move || {
            let held: Vec<_> = hole.incoming().collect();
            drop(held);
        });
        let exporter = LogExporter::builder()
            .with_http()
            .with_endpoint(format!("http://{addr}/v1/logs"))
            .with_timeout(Duration::from_millis(200))
            .with_headers(Default::default())
            .build()
            .unwrap();
        let stats = Arc::new(OutputStats::new("otlp_logs"));
        let (tx, rx) = std::sync::mpsc::sync_channel(1000);
        let out = EventLogOutput::spawn(
            exporter,
            &Resource::builder_empty().build(),
            rx,
            10,
            Arc::clone(&stats),
        )
        .unwrap();
        let ev: AccessEvent = serde_json::from_str(
            r#"{"event_type":"secret_access","timestamp":"2026-11-21T17:04:01.179182086Z",
            "pod_uid":"u","namespace":"payments","pod_name":"p","config_name":"db","volume_name":"db",
            "volume_type":"secret","key":"password","path":"/etc/db/password","mount_path":"/m",
            "access":"read","result":"ok","syscall":"openat","process":{"pid":1,"tid":1,
            "command":"cat","uid":0,"gid":0,"cgroup_id":1,"cgroup_v1_id":0,"mnt_ns":1,
            "cgroup_path":null},"container":null,"reader_pod_uid":null,"workload":null,
            "service_account":null,"labels":{},"source":null,"service_account_token":false,"repeats":null}"#,
        )
        .unwrap();
        for _ in 0..1000 {
            tx.send(Arc::new(ev.clone())).unwrap();
        }
        drop(tx);
        let started = Instant::now();
        out.finish(started + Duration::from_millis(500));
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(g(&stats.delivered), 0);
        assert!(g(&stats.export_failed) > 0, "{stats:?}");
        assert!(
            g(&stats.shutdown) > 0,
            "the deadline cut the drain short: {stats:?}"
        );
        assert_eq!(
            g(&stats.export_failed) + g(&stats.shutdown),
            1000,
            "every event is exported or counted: {stats:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded by the deadline plus one export timeout"
        );
    }
}

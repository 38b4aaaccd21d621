//! Metrics: the published design's `kernel_monitor_*` names, per-access
//! counters recorded on the reader thread, and self-metrics observed from the
//! pipeline's counters at each collection.
//!
//! Instrument names carry no `_total` suffix and no unit: a Prometheus
//! exporter (the OpenTelemetry Collector's, or `/metrics` here) appends
//! `_total` to counters, so `kernel_monitor_secret_access` is scraped as
//! `kernel_monitor_secret_access_total`. No label holds a pid, a path or a
//! file key; the SDK folds label sets beyond `metrics_cardinality_limit`
//! into one `otel_metric_overflow` series.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::{KeyValue, Value};

use super::telemetry::ExportCounters;
use super::OutputStats;
use crate::enrich::correlation::{CorrelationMaps, CorrelationOp};
use crate::enrich::pods::PodMetadata;
use crate::enrich::services::{MirrorStats, ServiceMap};
use crate::enrich::volumes::{IgnoreReason, VolumeRegistry};
use crate::enrich::watcher::WatchStats;
use crate::kernel::maps::StatsReader;
use crate::model::event::AccessEvent;
use crate::model::pod::SourceKind;
use crate::model::settings::AccessLabel;
use crate::model::stats::{KernelStats, ListenerCounters, ListenerStats, UserStats};
use crate::model::volume::VolumeType;
use crate::usage::objects::ObjectUsage;
use crate::usage::Usage;

/// Bucket bounds of `kernel_monitor_processing_duration_ms`, in ms.
const DURATION_BUCKETS_MS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
    10000.0,
];

/// Most label combinations the reader-side tally holds before it is flushed
/// and cleared (it is also cleared every [`TALLY_RESET`], forgetting pods gone).
const TALLY_ENTRIES: usize = 1024;
/// Longest life of a tally entry.
const TALLY_RESET: Duration = Duration::from_secs(300);
/// Separates label values in a tally key (never part of a Kubernetes name).
const SEP: char = '\u{1f}';

/// Per-access instruments, fed through a tally kept on the reader thread.
///
/// The SDK hashes and compares an attribute set on every `add`, and building
/// one allocates a string per label: too costly at 10^5 events/s. So
/// [`record`](Self::record) joins the event's label values into a reused
/// buffer, finds their entry with one fast hash (no allocation once the
/// combination was seen) and bumps a pending count; [`flush`](Self::flush),
/// called after every ring-buffer batch, adds the pending counts to the
/// counters. Only the latency histogram is recorded per event.
#[derive(Debug)]
pub struct AccessMetrics {
    configmap: Counter<u64>,
    secret: Counter<u64>,
    token: Counter<u64>,
    access: Counter<u64>,
    /// `kernel_monitor_signals`: accesses that raise a signal.
    signals: Counter<u64>,
    duration: Histogram<f64>,
    labels: Vec<AccessLabel>,
    tally: HashMap<String, Tally, foldhash::fast::RandomState>,
    key: String,
    reset_at: Instant,
}

/// Which object counter an access counts in.
#[derive(Debug, Clone, Copy)]
enum ObjectKind {
    Secret,
    ConfigMap,
    Token,
}

/// One label combination: its attribute sets and the accesses not yet added.
#[derive(Debug)]
struct Tally {
    object: Option<(ObjectKind, [KeyValue; 2])>,
    access: Vec<KeyValue>,
    event_type: [KeyValue; 1],
    pending: u64,
}

/// The object behind an accessed file: its counter, label key and name.
fn object_of(ev: &AccessEvent) -> Option<(ObjectKind, &'static str, &str)> {
    let config_name = ev.config_name.as_deref().unwrap_or("");
    match (&ev.source, ev.volume_type) {
        (Some(src), _) => match src.kind {
            SourceKind::Secret => Some((
                ObjectKind::Secret,
                "secret",
                src.name.as_deref().unwrap_or(config_name),
            )),
            SourceKind::ConfigMap => Some((
                ObjectKind::ConfigMap,
                "configmap",
                src.name.as_deref().unwrap_or(config_name),
            )),
            SourceKind::ServiceAccountToken => Some((
                ObjectKind::Token,
                "serviceaccount",
                ev.service_account.as_deref().unwrap_or(""),
            )),
            SourceKind::DownwardApi | SourceKind::ClusterTrustBundle => None,
        },
        (None, Some(VolumeType::Secret)) => Some((ObjectKind::Secret, "secret", config_name)),
        (None, Some(VolumeType::ConfigMap)) => {
            Some((ObjectKind::ConfigMap, "configmap", config_name))
        }
        _ => None,
    }
}

/// The value of `label` in `ev`.
fn label_value(ev: &AccessEvent, label: AccessLabel) -> &str {
    match label {
        AccessLabel::Namespace => ev.namespace.as_deref().unwrap_or(""),
        AccessLabel::Pod => ev.pod_name.as_deref().unwrap_or(""),
        AccessLabel::Container => ev
            .container
            .as_ref()
            .and_then(|c| c.name.as_deref())
            .unwrap_or(""),
        AccessLabel::WorkloadKind => ev.workload.as_ref().map(|w| &*w.kind).unwrap_or(""),
        AccessLabel::Workload => ev.workload.as_ref().map(|w| &*w.name).unwrap_or(""),
        AccessLabel::VolumeType => ev.volume_type.map_or("", VolumeType::as_str),
        AccessLabel::Result => &ev.result,
        AccessLabel::Access => &ev.access,
        AccessLabel::EventType => &ev.event_type,
    }
}

fn kv(key: &'static str, value: &str) -> KeyValue {
    KeyValue::new(key, Value::from(value.to_string()))
}

impl AccessMetrics {
    /// Creates the instruments; `labels` are those of `kernel_monitor_access`.
    pub fn new(meter: &Meter, labels: Vec<AccessLabel>) -> Self {
        Self {
            configmap: meter
                .u64_counter("kernel_monitor_configmap_access")
                .with_description("Accesses to files of a ConfigMap, by namespace and ConfigMap")
                .build(),
            secret: meter
                .u64_counter("kernel_monitor_secret_access")
                .with_description("Accesses to files of a Secret, by namespace and Secret")
                .build(),
            token: meter
                .u64_counter("kernel_monitor_serviceaccount_token_access")
                .with_description(
                    "Accesses to projected service-account tokens, by namespace and service account",
                )
                .build(),
            signals: meter
                .u64_counter("kernel_monitor_signals")
                .with_description(
                    "Accesses that raise a signal (signal: first_seen, foreign_read, exec_session), by the volume's namespace and workload and the object's kind",
                )
                .build(),
            access: meter
                .u64_counter("kernel_monitor_access")
                .with_description(
                    "Accesses to files of watched volumes, by the configured labels (metrics_access_labels)",
                )
                .build(),
            duration: meter
                .f64_histogram("kernel_monitor_processing_duration_ms")
                .with_description(
                    "Milliseconds from the open() in the kernel to the event handed to the outputs",
                )
                .with_boundaries(DURATION_BUCKETS_MS.to_vec())
                .build(),
            labels,
            tally: HashMap::default(),
            key: String::with_capacity(256),
            reset_at: Instant::now() + TALLY_RESET,
        }
    }

    /// Counts one access (or, for a summary of repeats, each open it stands
    /// for); `processing_ms` is its kernel-to-output latency.
    /// The counters see it at the next [`flush`](Self::flush).
    pub fn record(&mut self, ev: &AccessEvent, processing_ms: f64) {
        let namespace = ev.namespace.as_deref().unwrap_or("");
        let object = object_of(ev);
        self.key.clear();
        if let Some((_, kind, name)) = object {
            for part in [kind, namespace, name] {
                self.key.push_str(part);
                self.key.push(SEP);
            }
        }
        self.key.push(SEP);
        for &l in &self.labels {
            self.key.push_str(label_value(ev, l));
            self.key.push(SEP);
        }
        self.key.push_str(&ev.event_type);
        let tally = match self.tally.get_mut(self.key.as_str()) {
            Some(t) => t,
            None => {
                let t = Tally {
                    object: object
                        .map(|(o, kind, name)| (o, [kv("namespace", namespace), kv(kind, name)])),
                    access: self
                        .labels
                        .iter()
                        .map(|&l| kv(l.key(), label_value(ev, l)))
                        .collect(),
                    event_type: [kv("event_type", &ev.event_type)],
                    pending: 0,
                };
                self.tally.entry(self.key.clone()).or_insert(t)
            }
        };
        tally.pending += ev.opens();
        // A summary is delivered a window after its opens: not a latency.
        if ev.repeats.is_none() {
            self.duration.record(processing_ms, &tally.event_type);
        }
        self.record_signals(ev);
    }

    /// Counts the event's signals, if any (they are rare: no tally).
    fn record_signals(&self, ev: &AccessEvent) {
        let signals = [
            ("first_seen", ev.anomaly.is_some()),
            ("foreign_read", ev.foreign_read.is_some()),
            ("exec_session", ev.session.as_deref() == Some("exec")),
        ];
        for (signal, _) in signals.into_iter().filter(|(_, on)| *on) {
            let workload = ev.workload.as_ref();
            let object_kind = ev.source.as_ref().map_or("", |s| s.kind.as_str());
            self.signals.add(
                ev.opens(),
                &[
                    kv("signal", signal),
                    kv("namespace", ev.namespace.as_deref().unwrap_or("")),
                    kv("workload_kind", workload.map_or("", |w| &*w.kind)),
                    kv("workload", workload.map_or("", |w| &*w.name)),
                    kv("object_kind", object_kind),
                ],
            );
        }
    }

    /// Adds the pending counts to the counters; clears the tally when it is
    /// full or old.
    pub fn flush(&mut self) {
        for t in self.tally.values_mut().filter(|t| t.pending > 0) {
            if let Some((kind, attrs)) = &t.object {
                let counter = match kind {
                    ObjectKind::Secret => &self.secret,
                    ObjectKind::ConfigMap => &self.configmap,
                    ObjectKind::Token => &self.token,
                };
                counter.add(t.pending, attrs);
            }
            self.access.add(t.pending, &t.access);
            t.pending = 0;
        }
        if self.tally.len() >= TALLY_ENTRIES || Instant::now() >= self.reset_at {
            self.tally.clear();
            self.reset_at = Instant::now() + TALLY_RESET;
        }
    }
}

/// What the self-metrics are read from.
#[derive(Clone)]
pub struct Sources {
    pub kernel: Arc<StatsReader>,
    pub user: Arc<UserStats>,
    pub registry: Arc<VolumeRegistry>,
    pub pods: Arc<dyn PodMetadata>,
    pub correlation: Arc<CorrelationMaps>,
    pub metric_exports: Arc<ExportCounters>,
    /// Every output's counters.
    pub outputs: Vec<Arc<OutputStats>>,
    /// Counters of the volume watch.
    pub watch: Arc<WatchStats>,
    /// Connection counters of the HTTP listeners.
    pub listeners: Arc<ListenerStats>,
    /// The usage ledger's answers.
    pub usage: Arc<Usage>,
    /// The Service endpoint map (`None`: off).
    pub services: Option<Arc<ServiceMap>>,
    /// What the mirror of that map into the kernel did.
    pub service_mirror: Arc<MirrorStats>,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// A kernel counter exported as is: name, description, field.
type KernelCounter = (&'static str, &'static str, fn(&KernelStats) -> u64);

/// A listener counter: name, description, field.
type ListenerCounter = (&'static str, &'static str, fn(&ListenerCounters) -> u64);

/// Registers the observable self-metrics; they are read at each collection.
pub fn observe(meter: &Meter, s: &Sources) {
    observe_kernel(meter, s);
    observe_event_fates(meter, s);
    observe_outputs(meter, s);
    observe_volumes(meter, s);
    observe_listeners(meter, s);
    observe_correlation(meter, s);
    observe_usage(meter, s);
    observe_service_map(meter, s);
}

/// The Service endpoint map's size, and what it left out (when it is on).
fn observe_service_map(meter: &Meter, s: &Sources) {
    let Some(services) = &s.services else { return };
    let map = Arc::clone(services);
    meter
        .u64_observable_gauge("kernel_monitor_service_map_entries")
        .with_description("(address, target) entries the Service endpoint map holds: cluster IPs and endpoints, per port")
        .with_callback(move |o| o.observe(map.entry_count() as u64, &[]))
        .build();
    let map = Arc::clone(services);
    meter
        .u64_observable_counter("kernel_monitor_service_map_overflow")
        .with_description("Entries the Service endpoint map left out because it held service_endpoints_max_entries; while objects are left out /healthz is degraded (component service_map)")
        .with_callback(move |o| o.observe(map.overflow(), &[]))
        .build();
    let mirror = Arc::clone(&s.service_mirror);
    meter
        .u64_observable_gauge("kernel_monitor_service_map_kernel_entries")
        .with_description("Addresses the kernel map svc_endpoints holds, for other collectors' BPF programs (one per address: the preferred target)")
        .with_callback(move |o| o.observe(mirror.entries.load(Ordering::Relaxed), &[]))
        .build();
    let mirror = Arc::clone(&s.service_mirror);
    meter
        .u64_observable_counter("kernel_monitor_service_map_kernel_failures")
        .with_description("Writes and deletes of the kernel map svc_endpoints that failed; it is rebuilt whole 5 s later, and /healthz is degraded (component service_map_kernel) until that succeeds")
        .with_callback(move |o| o.observe(mirror.failures.load(Ordering::Relaxed), &[]))
        .build();
}

/// A per-object gauge: name, description, field.
type ObjectGauge = (&'static str, &'static str, fn(&ObjectUsage) -> u64);

/// Per Secret and ConfigMap on this node (labels namespace, kind, name;
/// never a pod): pods mounting it, pods that read it, mounts with keys
/// never read, stale readers; and the ledger's own saves, losses and
/// stale token readers.
fn observe_usage(meter: &Meter, s: &Sources) {
    observe_ledger(meter, s);
    let usage = Arc::clone(&s.usage);
    meter
        .u64_observable_counter("kernel_monitor_usage_state_saves")
        .with_description("Saves of the usage ledger's state (state_dir), by result; a failed one also degrades /healthz (component usage_state)")
        .with_callback(move |o| {
            let (ok, failed) = usage.saves();
            o.observe(ok, &[KeyValue::new("result", "ok")]);
            o.observe(failed, &[KeyValue::new("result", "failed")]);
        })
        .build();
    // One computation serves the three gauges of a collection.
    let usage = Arc::clone(&s.usage);
    let latest = Arc::new(std::sync::Mutex::new(Vec::new()));
    let gauges: [ObjectGauge; 4] = [
        (
            "kernel_monitor_object_mounting_pods",
            "Pods on this node that mount the Secret or ConfigMap (any of its keys)",
            |o| o.mounting_pods,
        ),
        (
            "kernel_monitor_object_reading_pods",
            "Pods on this node that read at least one key of the Secret or ConfigMap since the collector watches them",
            |o| o.reading_pods,
        ),
        (
            "kernel_monitor_object_unread_mounts",
            "Mounts on this node of the Secret or ConfigMap with keys never read, watched for at least unused_after with complete evidence",
            |o| o.unread_mounts,
        ),
        (
            "kernel_monitor_object_stale_readers",
            "Readers on this node whose latest open of one of the object's keys was of a revision the kubelet has since replaced (a Secret or ConfigMap update), and whose process still runs",
            |o| o.stale_readers,
        ),
    ];
    for (i, (name, description, field)) in gauges.into_iter().enumerate() {
        let (usage, latest) = (Arc::clone(&usage), Arc::clone(&latest));
        meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |o| {
                let mut objects = latest.lock().unwrap_or_else(|e| e.into_inner());
                // The first gauge of a collection recomputes.
                if i == 0 {
                    *objects = usage.objects();
                }
                for obj in objects.iter() {
                    let kind = match obj.kind {
                        SourceKind::Secret => "Secret",
                        _ => "ConfigMap",
                    };
                    o.observe(
                        field(obj),
                        &[
                            KeyValue::new("namespace", obj.namespace.clone()),
                            KeyValue::new("kind", kind),
                            KeyValue::new("name", obj.name.clone()),
                        ],
                    );
                }
            })
            .build();
    }
}

/// The ledger's losses by reason, stale readers of service-account tokens,
/// and accesses the baseline could not hold.
fn observe_ledger(meter: &Meter, s: &Sources) {
    let usage = Arc::clone(&s.usage);
    meter
        .u64_observable_counter("kernel_monitor_baseline_overflow")
        .with_description("Accesses the learned baseline could neither learn nor flag first_seen: it held its most workloads (4096) or entries per workload (1024)")
        .with_callback(move |o| o.observe(usage.baseline().overflow(), &[]))
        .build();
    let usage = Arc::clone(&s.usage);
    meter
        .u64_observable_counter("kernel_monitor_usage_losses")
        .with_description("Accesses the usage ledger may have missed, by reason (the loss counters it follows, ledger_full: a full ledger, collector_down: restarts); any loss in a window makes its never-read answers unknown")
        .with_callback(move |o| {
            for (reason, total) in usage.losses() {
                o.observe(total, &[KeyValue::new("reason", reason)]);
            }
        })
        .build();
    let usage = Arc::clone(&s.usage);
    meter
        .u64_observable_gauge("kernel_monitor_token_stale_readers")
        .with_description("Processes on this node still running on a service-account token they read before the kubelet refreshed it (they will fail when it expires), by namespace and service account")
        .with_callback(move |o| {
            for ((namespace, account), n) in usage.stale_token_readers() {
                o.observe(
                    n,
                    &[
                        KeyValue::new("namespace", namespace),
                        KeyValue::new("service_account", account),
                    ],
                );
            }
        })
        .build();
}

/// The kernel programs' counters, exported as they are.
fn observe_kernel(meter: &Meter, s: &Sources) {
    let kernel_counters: [KernelCounter; 8] = [
        (
            "kernel_monitor_opens_seen",
            "Successful opens on a filesystem that holds a watched volume, which the kernel programs examined past the device filter",
            |k| k.opens_seen,
        ),
        (
            "kernel_monitor_events_matched",
            "Opens of watched volume files (and reported failed opens) the kernel programs matched",
            |k| k.matched,
        ),
        (
            "kernel_monitor_events_delivered",
            "Matched events written into the kernel ring buffer",
            |k| k.delivered,
        ),
        (
            "kernel_monitor_opens_repeated",
            "Opens of watched volume files, and reported failed opens, counted in the kernel as repeats (repeat_window_ms) and reported in summary events",
            |k| k.repeated,
        ),
        (
            "kernel_monitor_repeat_table_full",
            "Emitted opens whose repeats the kernel could not count because its repeats or failed_repeats map was full (they are emitted one by one)",
            |k| k.repeat_full,
        ),
        (
            "kernel_monitor_process_records_full",
            "Process records the kernel could not write because its pid_samples map was full (each makes the collector rescan /proc)",
            |k| k.records_full,
        ),
        (
            "kernel_monitor_io_uring_unobserved",
            "io_uring open requests submitted with IOSQE_CQE_SKIP_SUCCESS: a successful one posts no completion, so which file it opened is not seen",
            |k| k.uring_unobserved,
        ),
        (
            "kernel_monitor_sampler_hits",
            "Syscalls recorded by the pid -> cgroup sampler",
            |k| k.sampled,
        ),
    ];
    for (name, description, field) in kernel_counters {
        let kernel = Arc::clone(&s.kernel);
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |o| {
                if let Ok(k) = kernel.read() {
                    o.observe(field(&k), &[]);
                }
            })
            .build();
    }
}

/// Events dropped (lost) or filtered (by design) before the outputs.
fn observe_event_fates(meter: &Meter, s: &Sources) {
    let src = s.clone();
    meter
        .u64_observable_counter("kernel_monitor_events_dropped")
        .with_description("Events lost before the outputs, by reason")
        .with_callback(move |o| {
            if let Ok(k) = src.kernel.read() {
                o.observe(
                    k.dropped_ringbuf,
                    &[KeyValue::new("reason", "ring_buffer_full")],
                );
            }
            for (reason, n) in src.user.snapshot().losses() {
                o.observe(n, &[KeyValue::new("reason", reason)]);
            }
        })
        .build();
    let src = s.clone();
    meter
        .u64_observable_counter("kernel_monitor_events_filtered")
        .with_description("Kernel events that are not reported by design, by reason")
        .with_callback(move |o| {
            let u = src.user.snapshot();
            o.observe(
                u.not_volume,
                &[KeyValue::new("reason", "not_a_volume_file")],
            );
            o.observe(u.kubelet_dropped, &[KeyValue::new("reason", "kubelet")]);
            if let Ok(k) = src.kernel.read() {
                o.observe(k.own, &[KeyValue::new("reason", "collector")]);
            }
        })
        .build();
}

/// What each output delivered, shed or failed, and OTLP export errors.
fn observe_outputs(meter: &Meter, s: &Sources) {
    let src = s.clone();
    meter
        .u64_observable_counter("kernel_monitor_events_emitted")
        .with_description("Events each output delivered (stdout, file: lines written; otlp_logs: records the receiver accepted)")
        .with_callback(move |o| {
            for out in &src.outputs {
                o.observe(get(&out.delivered), &[KeyValue::new("output", out.name)]);
            }
        })
        .build();
    let src = s.clone();
    meter
        .u64_observable_counter("kernel_monitor_output_shed")
        .with_description("Events an output lost, by output and reason")
        .with_callback(move |o| {
            for out in &src.outputs {
                let exports = out.name == "otlp_logs";
                for (n, reason) in [
                    (get(&out.queue_full), "queue_full"),
                    (get(&out.output_failed), "output_failed"),
                    (get(&out.export_failed), "export_failed"),
                    (get(&out.shutdown), "shutdown"),
                ] {
                    if reason == "export_failed" && !exports {
                        continue;
                    }
                    o.observe(
                        n,
                        &[
                            KeyValue::new("output", out.name),
                            KeyValue::new("reason", reason),
                        ],
                    );
                }
            }
        })
        .build();
    let src = s.clone();
    meter
        .u64_observable_gauge("kernel_monitor_output_failed")
        .with_description("1 when an output has failed (its events are counted as lost), by output")
        .with_callback(move |o| {
            for out in &src.outputs {
                o.observe(
                    u64::from(out.failed()),
                    &[KeyValue::new("output", out.name)],
                );
            }
        })
        .build();
    let src = s.clone();
    meter
        .u64_observable_counter("kernel_monitor_export_errors")
        .with_description("Failed OTLP export requests, by signal")
        .with_callback(move |o| {
            o.observe(
                get(&src.metric_exports.failed),
                &[KeyValue::new("signal", "metrics")],
            );
            for out in src.outputs.iter().filter(|o| o.name == "otlp_logs") {
                o.observe(
                    get(&out.failed_requests),
                    &[KeyValue::new("signal", "logs")],
                );
            }
        })
        .build();
}

/// The volume watch and the pod metadata.
fn observe_volumes(meter: &Meter, s: &Sources) {
    let src = s.clone();
    meter
        .u64_observable_gauge("kernel_monitor_watched_volumes")
        .with_description("Volumes watched in the kernel, by volume type")
        .with_callback(move |o| {
            let mut by_type = std::collections::BTreeMap::<VolumeType, u64>::new();
            for v in src.registry.volumes() {
                *by_type.entry(v.volume_type).or_default() += 1;
            }
            for t in VolumeType::ALL {
                let n = by_type.get(&t).copied().unwrap_or(0);
                o.observe(n, &[KeyValue::new("volume_type", t.as_str())]);
            }
        })
        .build();
    let src = s.clone();
    meter
        .u64_observable_counter("kernel_monitor_volume_scans")
        .with_description("Scans of the kubelet volume tree, by result (failed: some directory could not be read or some kernel entry written; what is there is kept and the scan retried)")
        .with_callback(move |o| {
            o.observe(get(&src.watch.scans_ok), &[KeyValue::new("result", "ok")]);
            o.observe(get(&src.watch.scans_failed), &[KeyValue::new("result", "failed")]);
        })
        .build();
    let src = s.clone();
    meter
        .u64_observable_gauge("kernel_monitor_volume_entries_ignored")
        .with_description("Entries the last volume scan left out, by reason (symlink, not_a_directory, walk_too_deep, index_full)")
        .with_callback(move |o| {
            for reason in IgnoreReason::ALL {
                o.observe(src.watch.ignored(reason), &[KeyValue::new("reason", reason.as_str())]);
            }
        })
        .build();
    let src = s.clone();
    meter
        .u64_observable_gauge("kernel_monitor_known_pods")
        .with_description("Pods in the metadata store (0 in standalone mode)")
        .with_callback(move |o| {
            o.observe(src.pods.pods() as u64, &[]);
        })
        .build();
}

/// Connection counters of the HTTP listeners.
fn observe_listeners(meter: &Meter, s: &Sources) {
    let listener_metrics: [ListenerCounter; 2] = [
        (
            "kernel_monitor_api_connections_refused",
            "Connections closed at once because their listener's connection budget was used up, by listener",
            |c| get(&c.refused),
        ),
        (
            "kernel_monitor_api_timeouts",
            "Connections closed, or requests answered 408, because an HTTP timeout passed, by listener",
            |c| get(&c.timeouts),
        ),
    ];
    for (name, description, field) in listener_metrics {
        let stats = Arc::clone(&s.listeners);
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |o| {
                for (kind, c) in stats.enabled() {
                    o.observe(field(c), &[KeyValue::new("listener", kind.name())]);
                }
            })
            .build();
    }
    let stats = Arc::clone(&s.listeners);
    meter
        .u64_observable_gauge("kernel_monitor_api_connections_open")
        .with_description("Connections open now, by listener")
        .with_callback(move |o| {
            for (kind, c) in stats.enabled() {
                o.observe(get(&c.open), &[KeyValue::new("listener", kind.name())]);
            }
        })
        .build();
}

/// Pod correlation operations.
fn observe_correlation(meter: &Meter, s: &Sources) {
    let src = s.clone();
    meter
        .u64_observable_counter("kernel_monitor_pod_correlation")
        .with_description("Pod correlation operations, by operation")
        .with_callback(move |o| {
            for op in CorrelationOp::ALL {
                o.observe(
                    src.correlation.ops.get(op),
                    &[KeyValue::new("operation", op.name())],
                );
            }
        })
        .build();
}

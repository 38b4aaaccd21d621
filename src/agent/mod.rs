//! The agent: wires the layers into a running collector. It builds each
//! component's own settings from the [`Config`] ([`settings`]), starts the
//! threads ([`workers`]: one way to start and stop them all), and stops
//! them in order: the API, the volume watch, the pod and service watch, the
//! correlator, the reader (detach, drain), the outputs, the exporters.

use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{ApiServer, ApiState, ListenerStats};
use crate::config::{Config, KubeMode};
use crate::enrich::cgroup::{detect_v1_subsys, CgroupResolver};
use crate::enrich::correlation::CorrelationMaps;
use crate::enrich::enricher::Enricher;
use crate::enrich::pods::{NoMetadata, PodMetadata, PodStore};
use crate::enrich::services::{KernelMirror, MirrorStats, ServiceMap};
use crate::enrich::volumes::VolumeRegistry;
use crate::enrich::watcher::{VolumeWatcher, WatchShared, WatchStats};
use crate::kernel::clock::WallClock;
use crate::kernel::maps::{KernelDirs, KernelServices, StatsReader};
use crate::kernel::repeats::RepeatSweeper;
use crate::model::event::AccessEvent;
use crate::model::health::{HealthBoard, Heartbeat};
use crate::model::stats::{OutputStats, Stats, UserStats};
use crate::output::metrics::{AccessMetrics, Sources};
use crate::output::otlp_logs::EventLogOutput;
use crate::output::telemetry::Telemetry;
use crate::output::{Fanout, Sink};
use crate::usage::{spawn_ledger, LossCounters, Usage};

pub mod run;
pub mod settings;
pub mod workers;

use workers::{Pipeline, Reader, Worker};

/// A started collector. Events go to the outputs given to [`Collector::start`].
pub struct Collector {
    api: Option<ApiServer>,
    watcher: VolumeWatcher,
    kube: Option<Worker>,
    correlator: Option<Worker>,
    reader: Worker,
    event_logs: Option<EventLogOutput>,
    telemetry: Option<Telemetry>,
    stopped: bool,
    kernel_stats: StatsReader,
    object_ids: (Vec<u32>, Vec<u32>),
    user_stats: Arc<UserStats>,
    registry: Arc<VolumeRegistry>,
    correlation: Arc<CorrelationMaps>,
    pods: Option<Arc<PodStore>>,
    services: Option<Arc<ServiceMap>>,
    outputs: Vec<Arc<OutputStats>>,
    health: Arc<HealthBoard>,
    watch_stats: Arc<WatchStats>,
    shutdown_timeout: Duration,
    usage: Arc<Usage>,
    ledger: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("object_ids", &self.object_ids)
            .finish_non_exhaustive()
    }
}

/// Inode of the host's mount namespace: that of pid 1 (the chart runs the
/// collector with the host's pid namespace), else our own.
fn host_mnt_ns() -> u32 {
    let of = |pid: &str| -> Option<u32> {
        let path = format!("/proc/{pid}/ns/mnt");
        if let Ok(m) = std::fs::metadata(&path) {
            return u32::try_from(m.ino()).ok();
        }
        // stat() of another process's namespace can be refused where readlink() is not.
        let link = std::fs::read_link(&path).ok()?;
        link.to_str()?
            .strip_prefix("mnt:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    };
    of("1").or_else(|| of("self")).unwrap_or(0)
}

/// The shared stores the enrichment, the outputs and the API read.
struct Stores {
    registry: Arc<VolumeRegistry>,
    correlation: Arc<CorrelationMaps>,
    health: Arc<HealthBoard>,
    user_stats: Arc<UserStats>,
    cgroups: Arc<CgroupResolver>,
    /// The kube store, in kube mode.
    kube: Option<Arc<PodStore>>,
    pods: Arc<dyn PodMetadata>,
    /// The Service endpoint map, fed with the kube store (`None`: off).
    services: Option<Arc<ServiceMap>>,
    /// What its mirror in the kernel did.
    mirror_stats: Arc<MirrorStats>,
}

/// The loaded probe's handles, and its reader waiting for the pipeline.
struct Started {
    reader: Reader,
    dirs: KernelDirs,
    stats: StatsReader,
    repeats: Option<RepeatSweeper>,
    /// The kernel's Service endpoint map (`None`: not created).
    services: Option<KernelServices>,
    attachment: crate::kernel::probe::Attachment,
    programs: Vec<&'static str>,
    object_ids: (Vec<u32>, Vec<u32>),
}

/// Pod metadata: a store fed by the kube watcher, or none at all.
fn pod_metadata(config: &Config) -> (Option<Arc<PodStore>>, Arc<dyn PodMetadata>) {
    match config.kube {
        KubeMode::Off => (None, Arc::new(NoMetadata)),
        KubeMode::Auto => {
            let store = Arc::new(PodStore::new(Duration::from_millis(
                config.deleted_pod_grace_ms,
            )));
            (Some(Arc::clone(&store)), store)
        }
    }
}

impl Collector {
    /// Starts a collector whose events arrive on the returned receiver (a
    /// queue of `buffer_size` events named `channel`): the demo, tests and benchmarks.
    pub fn start_with_channel(
        config: &Config,
    ) -> crate::Result<(Self, Receiver<Arc<AccessEvent>>)> {
        let (sink, events) = Sink::handoff("channel", config.buffer_size);
        Ok((Self::start(config, vec![sink])?, events))
    }

    /// Like [`Collector::start_with_channel`], with pod metadata from `pods`
    /// instead of the source `kube` names (the demo's sandbox pod).
    pub fn start_with_pods(
        config: &Config,
        pods: Arc<dyn PodMetadata>,
    ) -> crate::Result<(Self, Receiver<Arc<AccessEvent>>)> {
        let (sink, events) = Sink::handoff("channel", config.buffer_size);
        Ok((Self::start_from(config, vec![sink], (None, pods))?, events))
    }

    /// Loads the programs, fills the volume map, and starts handing events to `outputs`.
    pub fn start(config: &Config, outputs: Vec<Sink>) -> crate::Result<Self> {
        Self::start_from(config, outputs, pod_metadata(config))
    }

    /// [`Collector::start`] with the pod metadata given: the kube store (if
    /// any) and what enrichment reads.
    fn start_from(
        config: &Config,
        outputs: Vec<Sink>,
        (kube, pods): (Option<Arc<PodStore>>, Arc<dyn PodMetadata>),
    ) -> crate::Result<Self> {
        // /proc/cgroups is read once: the probe and the resolver share the answer.
        let v1 = detect_v1_subsys(&config.cgroup_v1_controller);
        let options = settings::probe_options(config, v1.as_ref().map(|(i, _)| *i));
        let flush = Duration::from_millis(config.flush_interval_ms);
        let (reader, loaded) = workers::spawn_reader(options, flush)?;
        let health = Arc::new(HealthBoard::default());
        let services = kube
            .as_ref()
            .and(settings::service_map(config))
            .map(|s| Arc::new(ServiceMap::new(s).with_health(Arc::clone(&health))));
        let stores = Stores {
            registry: Arc::new(VolumeRegistry::new()),
            correlation: Arc::new(CorrelationMaps::with_kernel(loaded.correlation)),
            health,
            user_stats: Arc::new(UserStats::default()),
            cgroups: Arc::new(CgroupResolver::for_host(
                v1.map(|(_, name)| name).as_deref(),
            )),
            kube,
            pods,
            services,
            mirror_stats: Arc::default(),
        };
        let started = Started {
            reader,
            dirs: loaded.dirs,
            stats: loaded.stats,
            repeats: (config.repeat_window_ms > 0).then(|| {
                RepeatSweeper::new(
                    loaded.repeats,
                    Duration::from_millis(config.repeat_window_ms),
                )
            }),
            services: loaded.services,
            attachment: loaded.attachment,
            programs: loaded.programs,
            object_ids: loaded.object_ids,
        };
        Self::start_with(config, outputs, started, stores)
    }

    fn start_with(
        config: &Config,
        mut outputs: Vec<Sink>,
        k: Started,
        s: Stores,
    ) -> crate::Result<Self> {
        let watch = Watches::start(config, &s, k.dirs, k.services)?;
        let telemetry = Telemetry::start(&settings::telemetry(config)?)?;
        let event_logs = start_event_logs(config, &telemetry, &mut outputs)?;
        let output_stats: Vec<Arc<OutputStats>> =
            outputs.iter().map(|o| Arc::clone(o.stats())).collect();
        // The ledger's queue is a sink of the fan-out, not an output: its
        // losses are the ledger's evidence, not the outputs' health.
        let (usage, ledger) = start_usage(config, &s, &k.stats, &mut outputs)?;
        let watched = output_stats.clone();
        s.health.check(Box::new(move || {
            crate::output::conditions(&watched, crate::output::STALL_AFTER)
        }));
        s.health
            .check(crate::kernel::losses::loss_check(k.stats.try_clone()?));
        s.health
            .check(crate::model::stats::loss_check(Arc::clone(&s.user_stats)));
        let listener_stats = Arc::new(ListenerStats::default());
        let meter = telemetry.meter();
        let sources = Sources {
            kernel: Arc::new(k.stats.try_clone()?),
            user: Arc::clone(&s.user_stats),
            registry: Arc::clone(&s.registry),
            pods: Arc::clone(&s.pods),
            correlation: Arc::clone(&s.correlation),
            metric_exports: Arc::clone(&telemetry.metric_exports),
            outputs: output_stats.clone(),
            watch: Arc::clone(&watch.stats),
            listeners: Arc::clone(&listener_stats),
            usage: Arc::clone(&usage),
            services: s.services.clone(),
            service_mirror: Arc::clone(&s.mirror_stats),
        };
        crate::output::metrics::observe(&meter, &sources);
        let heartbeat = Arc::new(Heartbeat::default());
        heartbeat.beat();
        let fanout = Fanout {
            sinks: outputs,
            metrics: AccessMetrics::new(&meter, config.metrics_access_labels.clone()),
            stats: Arc::clone(&s.user_stats),
        };
        let mut pipeline = Pipeline::new(
            enricher(config, &s),
            fanout,
            Arc::clone(&heartbeat),
            k.repeats,
        );
        pipeline.baseline = Some(Arc::clone(usage.baseline()));
        let reader = k.reader.run(pipeline);
        let api_state = ApiState {
            kernel_stats: k.stats.try_clone()?,
            user_stats: Arc::clone(&s.user_stats),
            attachment: k.attachment.clone(),
            heartbeat,
            stall_after: stall_after(config),
            pods: Arc::clone(&s.pods),
            correlation: Arc::clone(&s.correlation),
            cgroups: Arc::clone(&s.cgroups),
            registry: telemetry.registry().cloned(),
            health: Arc::clone(&s.health),
            outputs: output_stats.clone(),
            usage: Arc::clone(&usage),
            services: s.services.clone(),
        };
        let listeners = settings::listeners(config)?;
        let api = ApiServer::start_with_stats(&listeners, Arc::new(api_state), listener_stats)?;
        log_started(config, &api, &k.programs, &s.registry);
        Ok(Self {
            api: Some(api),
            watcher: watch.watcher,
            kube: watch.kube,
            correlator: watch.correlator,
            reader,
            event_logs,
            telemetry: Some(telemetry),
            stopped: false,
            kernel_stats: k.stats,
            object_ids: k.object_ids,
            user_stats: s.user_stats,
            registry: s.registry,
            correlation: s.correlation,
            pods: s.kube,
            services: s.services,
            outputs: output_stats,
            health: s.health,
            watch_stats: watch.stats,
            shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
            usage,
            ledger: Some(ledger),
        })
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        Stats {
            kernel: self.kernel_stats.read().unwrap_or_default(),
            user: self.user_stats.snapshot(),
            outputs_lost: self.outputs.iter().map(|o| o.lost()).sum(),
        }
    }

    /// The health board (conditions of the volume watch, the outputs, ...).
    pub fn health(&self) -> &Arc<HealthBoard> {
        &self.health
    }

    /// Counters of the volume watch.
    pub fn watch_stats(&self) -> &Arc<WatchStats> {
        &self.watch_stats
    }

    /// The outputs' counters, the OTLP log output last.
    pub fn outputs(&self) -> &[Arc<OutputStats>] {
        &self.outputs
    }

    /// Kernel ids of the loaded programs and maps.
    pub fn object_ids(&self) -> (Vec<u32>, Vec<u32>) {
        self.object_ids.clone()
    }

    /// The API and health servers (bound addresses).
    pub fn api(&self) -> Option<&ApiServer> {
        self.api.as_ref()
    }

    /// The pod store fed from the API server (`None` in standalone mode).
    pub fn pods(&self) -> Option<&Arc<PodStore>> {
        self.pods.as_ref()
    }

    /// The Service endpoint map (`None` when off): what the API serves, and
    /// what a kernel map mirrors ([`ServiceMap::entries`], [`ServiceMap::changes_since`]).
    pub fn services(&self) -> Option<&Arc<ServiceMap>> {
        self.services.as_ref()
    }

    /// The watched volumes.
    pub fn registry(&self) -> &Arc<VolumeRegistry> {
        &self.registry
    }

    /// The usage ledger and its answers.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }

    /// The correlation maps served to sibling collectors.
    pub fn correlation(&self) -> &Arc<CorrelationMaps> {
        &self.correlation
    }

    /// Stops intake, drains what the kernel delivered, flushes the exporters
    /// (bounded by `shutdown_timeout_ms`), and detaches the programs.
    pub fn stop(mut self) -> Stats {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Stats {
        self.stopped = true;
        if let Some(mut api) = self.api.take() {
            api.stop();
        }
        self.watcher.stop();
        for worker in [&mut self.kube, &mut self.correlator].into_iter().flatten() {
            worker.stop();
        }
        let deadline = Instant::now() + self.shutdown_timeout;
        // Detaches the programs, drains the ring and drops the probe.
        self.reader.stop();
        // The fan-out is gone with the reader: the ledger has its last events.
        if let Some(ledger) = self.ledger.take() {
            let _ = ledger.join();
        }
        if let Some(logs) = self.event_logs.take() {
            logs.finish(deadline);
        }
        if let Some(t) = self.telemetry.take() {
            t.shutdown(deadline.saturating_duration_since(Instant::now()));
        }
        self.stats()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if !self.stopped {
            self.shutdown();
        }
    }
}

/// The usage ledger, fed by a queue added to `sinks`, and its thread.
fn start_usage(
    config: &Config,
    s: &Stores,
    kernel: &StatsReader,
    sinks: &mut Vec<Sink>,
) -> crate::Result<(Arc<Usage>, std::thread::JoinHandle<()>)> {
    let (sink, events) = Sink::channel("usage", config.buffer_size);
    let usage = Arc::new(
        Usage::new(
            settings::usage(config)?,
            loss_counters(kernel.try_clone()?, Arc::clone(&s.user_stats), sink.stats()),
            Arc::clone(&s.registry),
            Arc::clone(&s.pods),
        )
        .with_health(Arc::clone(&s.health)),
    );
    sinks.push(sink);
    let thread =
        spawn_ledger(Arc::clone(&usage), events).map_err(|source| crate::Error::Thread {
            name: "usage-ledger",
            source,
        })?;
    Ok((usage, thread))
}

/// What the ledger may have missed: the counters of events lost before the
/// outputs (named as `kernel_monitor_events_dropped_total`'s reasons) and
/// of its own full queue.
fn loss_counters(
    kernel: StatsReader,
    user: Arc<UserStats>,
    queue: &Arc<OutputStats>,
) -> LossCounters {
    use std::sync::atomic::Ordering::Relaxed;
    let queue = Arc::clone(queue);
    Box::new(move || {
        let mut counters = user.snapshot().losses().to_vec();
        counters.push(("usage_queue_full", queue.queue_full.load(Relaxed)));
        // An unreadable kernel counter is left out, not taken for 0.
        if let Ok(k) = kernel.read() {
            counters.push(("ring_buffer_full", k.dropped_ringbuf));
        }
        counters
    })
}

/// The threads that keep the stores current: the volume watch, the pod
/// watch and the correlator.
struct Watches {
    watcher: VolumeWatcher,
    stats: Arc<WatchStats>,
    kube: Option<Worker>,
    correlator: Option<Worker>,
}

impl Watches {
    /// Scans once (the kernel map is filled when this returns), then starts the threads.
    fn start(
        config: &Config,
        s: &Stores,
        kernel: KernelDirs,
        services: Option<KernelServices>,
    ) -> crate::Result<Self> {
        let shared = WatchShared {
            registry: Arc::clone(&s.registry),
            correlation: Arc::clone(&s.correlation),
            health: Arc::clone(&s.health),
            stats: Arc::new(WatchStats::default()),
        };
        let stats = Arc::clone(&shared.stats);
        let watcher = VolumeWatcher::start(settings::watch_config(config), shared, kernel)?;
        let kube = match &s.kube {
            Some(store) => Some(workers::spawn_kube(
                config.kube_api_url.clone(),
                settings::pod_watch(config),
                workers::KubeFeeds {
                    pods: Arc::clone(store),
                    services: s.services.clone(),
                    mirror: services.map(|kernel| KernelMirror {
                        kernel,
                        stats: Arc::clone(&s.mirror_stats),
                        health: Some(Arc::clone(&s.health)),
                    }),
                },
            )?),
            None if s.pods.pods() == 0 => {
                tracing::info!("standalone mode (kube: off): namespace and pod names stay null");
                None
            }
            // Metadata given by the caller (the demo's sandbox pod).
            None => None,
        };
        let correlator = config
            .correlation()
            .then(|| {
                workers::spawn_correlator(
                    Arc::clone(&s.correlation),
                    Arc::clone(&s.cgroups),
                    Arc::clone(&s.pods),
                    Arc::clone(&s.health),
                )
            })
            .transpose()?;
        Ok(Self {
            watcher,
            stats,
            kube,
            correlator,
        })
    }
}

/// How old the reader's heartbeat may get before the reader counts as stalled.
fn stall_after(config: &Config) -> Duration {
    (Duration::from_millis(config.flush_interval_ms) * 10).max(Duration::from_secs(5))
}

/// The enrichment step of the reader thread.
fn enricher(config: &Config, s: &Stores) -> Enricher {
    Enricher {
        registry: Arc::clone(&s.registry),
        stats: Arc::clone(&s.user_stats),
        clock: WallClock::new(),
        kubelet_names: config.kubelet_process_names.clone(),
        host_mnt_ns: host_mnt_ns(),
        kubelet_writes: config.kubelet_writes,
        cgroups: Arc::clone(&s.cgroups),
        pods: Arc::clone(&s.pods),
        correlation: Arc::clone(&s.correlation),
        unresolved_log: Default::default(),
    }
}

/// The OTLP log output, when on: its sink joins `outputs`.
fn start_event_logs(
    config: &Config,
    telemetry: &Telemetry,
    outputs: &mut Vec<Sink>,
) -> crate::Result<Option<EventLogOutput>> {
    let Some(exporter) = telemetry.log_exporter()? else {
        return Ok(None);
    };
    let (sink, rx) = Sink::channel("otlp_logs", config.otlp_logs_queue);
    let out = EventLogOutput::spawn(
        exporter,
        telemetry.resource(),
        rx,
        config.otlp_logs_batch,
        Arc::clone(sink.stats()),
    )
    .map_err(|source| crate::Error::Thread {
        name: "otlp-logs",
        source,
    })?;
    outputs.push(sink);
    Ok(Some(out))
}

fn log_started(config: &Config, api: &ApiServer, programs: &[&str], registry: &VolumeRegistry) {
    if let Some(addr) = api.health_addr {
        tracing::info!(%addr, "health endpoints listening");
    }
    if let Some(addr) = api.metrics_addr {
        tracing::info!(%addr, "metrics endpoint listening");
    }
    // Loading parsed the kernel's BTF (megabytes) into heap memory that is
    // free now; hand it back to the system instead of keeping it resident.
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
    tracing::info!(
        programs = ?programs,
        volumes = registry.volumes().len(),
        kubelet_root = %config.kubelet_root.display(),
        "collector started"
    );
}

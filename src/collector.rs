//! The running collector: probe, volume watcher and ring-buffer reader wired together.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libbpf_rs::RingBufferBuilder;
use serde::Serialize;

use crate::api::{ApiServer, ApiState, Heartbeat, ListenerStats};
use crate::cgroup::{detect_v1_subsys, CgroupResolver};
use crate::clock::WallClock;
use crate::config::{Config, KubeMode};
use crate::correlation::{CorrelationMaps, KernelMaps};
use crate::event::AccessEvent;
use crate::event_logs::EventLogOutput;
use crate::health::HealthBoard;
use crate::metrics::{AccessMetrics, Sources};
use crate::output::{OutputStats, Sink};
use crate::pipeline::{Enricher, UserStats, UserStatsSnapshot};
use crate::pods::{LabelFilter, PodStore, WatchSettings};
use crate::probe::{KernelStats, Probe, ProbeOptions, StatsReader};
use crate::telemetry::Telemetry;
use crate::volumes::{KernelDirs, VolumeRegistry};
use crate::watcher::{VolumeWatcher, WatchConfig, WatchShared, WatchStats};

/// How often the reader re-measures the monotonic -> wall-clock offset.
const CLOCK_REFRESH: Duration = Duration::from_secs(1);
/// How often the cgroup cache drops deleted cgroups.
const CGROUP_SWEEP: Duration = Duration::from_secs(60);
/// How often the kernel correlation maps are filled from the sampler's records.
const CORRELATION_SYNC: Duration = Duration::from_secs(1);

/// Counters of the whole pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub kernel: KernelStats,
    pub user: UserStatsSnapshot,
    /// Events the outputs lost, summed over outputs and reasons.
    pub outputs_lost: u64,
}

/// A started collector. Events go to the outputs given to [`Collector::start`].
pub struct Collector {
    probe: Option<Probe>,
    watcher: VolumeWatcher,
    reader: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    kernel_stats: StatsReader,
    user_stats: Arc<UserStats>,
    registry: Arc<VolumeRegistry>,
    correlation: Arc<CorrelationMaps>,
    pods: Option<Arc<PodStore>>,
    kube: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
    correlator: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
    api: Option<ApiServer>,
    telemetry: Option<Telemetry>,
    event_logs: Option<EventLogOutput>,
    outputs: Vec<Arc<OutputStats>>,
    health: Arc<HealthBoard>,
    watch_stats: Arc<WatchStats>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("probe", &self.probe)
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

impl Collector {
    /// Starts a collector whose events arrive on the returned receiver (a
    /// queue of `buffer_size` events named `channel`): the demo, tests and benchmarks.
    pub fn start_with_channel(
        config: &Config,
    ) -> crate::Result<(Self, Receiver<Arc<AccessEvent>>)> {
        let (sink, events) = Sink::handoff("channel", config.buffer_size);
        Ok((Self::start(config, vec![sink])?, events))
    }

    /// Loads the programs, fills the volume map, and starts handing events to `outputs`.
    pub fn start(config: &Config, mut outputs: Vec<Sink>) -> crate::Result<Self> {
        // /proc/cgroups is read once: the probe and the resolver share the answer.
        let v1 = detect_v1_subsys(&config.cgroup_v1_controller);
        let probe = Probe::load(&probe_options(config, v1.as_ref().map(|(i, _)| *i)))?;
        let registry = Arc::new(VolumeRegistry::new());
        let (pod_info, container_pids) = probe.correlation_maps()?;
        let correlation = Arc::new(CorrelationMaps::with_kernel(KernelMaps {
            pod_info,
            container_pids,
            pid_samples: probe.pid_samples_map()?,
        }));
        let (dirs, devs) = probe.volume_maps()?;
        let health = Arc::new(HealthBoard::default());
        let watch = WatchShared {
            registry: Arc::clone(&registry),
            correlation: Arc::clone(&correlation),
            health: Arc::clone(&health),
            stats: Arc::new(WatchStats::default()),
        };
        let watcher = VolumeWatcher::start(
            WatchConfig {
                kubelet_root: config.kubelet_root.clone(),
                types: config.volume_types(),
                rescan_interval: Duration::from_millis(config.rescan_interval_ms),
                debounce: Duration::from_millis(50),
            },
            watch.clone(),
            KernelDirs::new(dirs, devs),
        )?;
        let pods = match config.kube {
            KubeMode::Off => {
                tracing::info!("standalone mode (kube: off): namespace and pod names stay null");
                None
            }
            KubeMode::Auto => Some(Arc::new(PodStore::new(Duration::from_millis(
                config.deleted_pod_grace_ms,
            )))),
        };
        let kube = match &pods {
            Some(store) => Some(spawn_kube(config, Arc::clone(store))?),
            None => None,
        };
        let v1_controller = v1.map(|(_, name)| name);
        let cgroups = Arc::new(CgroupResolver::for_host(v1_controller.as_deref()));
        let correlator = (config.syscall_sampling_rate > 0)
            .then(|| spawn_correlator(Arc::clone(&correlation), Arc::clone(&cgroups), pods.clone()))
            .transpose()?;
        let user_stats = Arc::new(UserStats::default());
        let telemetry = Telemetry::start(config)?;
        let meter = telemetry.meter();
        let event_logs = match telemetry.log_exporter()? {
            None => None,
            Some(exporter) => {
                let (sink, rx) = Sink::channel("otlp_logs", config.otlp_logs_queue);
                let out = EventLogOutput::spawn(
                    exporter,
                    telemetry.resource(),
                    rx,
                    config.otlp_logs_batch,
                    Arc::clone(sink.stats()),
                )
                .map_err(crate::Error::Thread)?;
                outputs.push(sink);
                Some(out)
            }
        };
        let output_stats: Vec<Arc<OutputStats>> =
            outputs.iter().map(|o| Arc::clone(o.stats())).collect();
        let watched = output_stats.clone();
        health.check(Box::new(move || {
            crate::output::conditions(&watched, crate::output::STALL_AFTER)
        }));
        let listener_stats = Arc::new(ListenerStats::default());
        crate::metrics::observe(
            &meter,
            &Sources {
                kernel: Arc::new(probe.stats_reader()?),
                user: Arc::clone(&user_stats),
                registry: Arc::clone(&registry),
                pods: pods.clone(),
                correlation: Arc::clone(&correlation),
                metric_exports: Arc::clone(&telemetry.metric_exports),
                outputs: output_stats.clone(),
                watch: Arc::clone(&watch.stats),
                listeners: Arc::clone(&listener_stats),
            },
        );
        let enricher = Enricher {
            registry: Arc::clone(&registry),
            stats: Arc::clone(&user_stats),
            clock: WallClock::new(),
            kubelet_names: config.kubelet_process_names.clone(),
            host_mnt_ns: host_mnt_ns(),
            kubelet_writes: config.kubelet_writes,
            outputs,
            cgroups,
            pods: pods.clone(),
            metrics: AccessMetrics::new(&meter, config.metrics_access_labels.clone()),
            correlation: Arc::clone(&correlation),
            unresolved_log: Default::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let ring = probe.events_map()?;
        let flush = Duration::from_millis(config.flush_interval_ms);
        let stop_reader = Arc::clone(&stop);
        let heartbeat = Arc::new(Heartbeat::default());
        heartbeat.beat();
        let beat = Arc::clone(&heartbeat);
        let cgroups = Arc::clone(&enricher.cgroups);
        let reader = std::thread::Builder::new()
            .name("ringbuf-reader".into())
            .spawn(move || read_loop(ring, enricher, flush, &stop_reader, &beat))
            .map_err(crate::Error::Thread)?;
        let api_state = Arc::new(ApiState {
            kernel_stats: probe.stats_reader()?,
            user_stats: Arc::clone(&user_stats),
            attachment: probe.attachment(),
            heartbeat,
            stall_after: (flush * 10).max(Duration::from_secs(5)),
            pods: pods.clone(),
            correlation: Arc::clone(&correlation),
            cgroups,
            registry: telemetry.registry().cloned(),
            health: Arc::clone(&health),
            outputs: output_stats.clone(),
        });
        let api = ApiServer::start_with_stats(&config.listeners()?, api_state, listener_stats)?;
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
            programs = ?probe.attached_programs(),
            volumes = registry.volumes().len(),
            kubelet_root = %config.kubelet_root.display(),
            "collector started"
        );
        Ok(Self {
            kernel_stats: probe.stats_reader()?,
            probe: Some(probe),
            watcher,
            reader: Some(reader),
            stop,
            user_stats,
            registry,
            correlation,
            pods,
            kube,
            correlator,
            api: Some(api),
            telemetry: Some(telemetry),
            event_logs,
            outputs: output_stats,
            health,
            watch_stats: watch.stats,
            shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
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
        self.probe
            .as_ref()
            .map(Probe::object_ids)
            .unwrap_or_default()
    }

    /// The API and health servers (bound addresses).
    pub fn api(&self) -> Option<&ApiServer> {
        self.api.as_ref()
    }

    /// Pod metadata (`None` in standalone mode).
    pub fn pods(&self) -> Option<&Arc<PodStore>> {
        self.pods.as_ref()
    }

    /// The watched volumes.
    pub fn registry(&self) -> &Arc<VolumeRegistry> {
        &self.registry
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
        if let Some(mut api) = self.api.take() {
            api.stop();
        }
        self.watcher.stop();
        if let Some((stop, thread)) = self.kube.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
        if let Some((stop, thread)) = self.correlator.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
        if let Some(probe) = &mut self.probe {
            // Detach first so no new events arrive, then drain the ring.
            probe.detach();
        }
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + self.shutdown_timeout;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if let Some(logs) = self.event_logs.take() {
            logs.finish(deadline);
        }
        if let Some(t) = self.telemetry.take() {
            t.shutdown(deadline.saturating_duration_since(Instant::now()));
        }
        let stats = self.stats();
        self.probe.take();
        stats
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.shutdown();
        }
    }
}

/// Load-time settings of the BPF programs, with the cgroup v1 subsystem index found on this node.
fn probe_options(config: &Config, cgroup_v1_subsys: Option<u32>) -> ProbeOptions {
    ProbeOptions {
        sample_every: config.syscall_sampling_rate,
        ring_bytes: config.ring_buffer_bytes,
        wakeup_bytes: config.wakeup_bytes,
        report_failed_opens: config.report_failed_opens,
        cgroup_v1_subsys,
        ignore_own_process: config.ignore_own_opens,
    }
}

/// Fills the kernel correlation maps every [`CORRELATION_SYNC`] until told to stop.
fn spawn_correlator(
    correlation: Arc<CorrelationMaps>,
    cgroups: Arc<CgroupResolver>,
    pods: Option<Arc<PodStore>>,
) -> crate::Result<(std::sync::mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("correlator".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stop_rx.recv_timeout(CORRELATION_SYNC)
            {
                let report = correlation.sync(&cgroups, pods.as_deref());
                if report != Default::default() {
                    tracing::debug!(?report, "correlation maps updated");
                }
            }
        })
        .map_err(crate::Error::Thread)?;
    Ok((stop_tx, thread))
}

/// Runs the pod watcher on its own thread and runtime until told to stop.
fn spawn_kube(
    config: &Config,
    store: Arc<PodStore>,
) -> crate::Result<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let url = config.kube_api_url.clone();
    let settings = WatchSettings {
        node_name: config.node_name.clone(),
        labels: LabelFilter(config.pod_labels.clone()),
    };
    let thread = std::thread::Builder::new()
        .name("kube-watcher".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("cannot start the pod watcher runtime: {e}");
                    return;
                }
            };
            runtime.block_on(async move {
                let stop = async move {
                    let _ = stop_rx.await;
                };
                match crate::pods::client(url.as_deref()).await {
                    Ok(client) => crate::pods::watch_pods(client, settings, store, stop).await,
                    Err(e) => {
                        tracing::warn!(
                            "{e}: running standalone; namespace and pod names stay null"
                        );
                        store.set_standalone();
                        stop.await;
                    }
                }
            });
        })
        .map_err(crate::Error::Thread)?;
    Ok((stop_tx, thread))
}

fn read_loop(
    ring: libbpf_rs::MapHandle,
    mut enricher: Enricher,
    flush: Duration,
    stop: &AtomicBool,
    heartbeat: &Heartbeat,
) {
    let mut refreshed = Instant::now();
    let mut swept = Instant::now();
    let cell = std::cell::RefCell::new(&mut enricher);
    let mut builder = RingBufferBuilder::new();
    let added = builder.add(&ring, |data: &[u8]| {
        cell.borrow_mut().handle_record(data);
        0
    });
    let rb = match added.map(|_| ()).and_then(|()| builder.build()) {
        Ok(rb) => rb,
        Err(e) => {
            tracing::error!("cannot read the event ring buffer: {e}");
            return;
        }
    };
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // Events are written without wakeups (see the BPF design notes), so
        // the poll mostly times out: consume() is what drains the ring.
        if !stopping {
            let _ = rb.poll(flush);
        }
        if let Err(e) = rb.consume() {
            tracing::warn!("ring buffer consume failed: {e}");
        }
        cell.borrow_mut().metrics.flush();
        if stopping {
            return;
        }
        heartbeat.beat();
        if refreshed.elapsed() >= CLOCK_REFRESH {
            cell.borrow_mut().clock.refresh();
            refreshed = Instant::now();
        }
        if swept.elapsed() >= CGROUP_SWEEP {
            cell.borrow().cgroups.forget_deleted();
            swept = Instant::now();
        }
    }
}

//! The collector's threads, started and stopped one way: each [`Worker`]
//! is a named thread with a stop signal; stopping sends the signal and
//! joins the thread.
//!
//! * `ringbuf-reader` loads the BPF programs into storage on its own stack
//!   (the skeleton's storage is owned by the thread that owns the probe),
//!   hands the map handles back, then polls the ring: record -> enrich ->
//!   fan-out. Stopped, it detaches the programs, drains the ring and drops
//!   the probe.
//! * `correlator` fills the kernel correlation maps every second.
//! * `kube-watcher` runs the pod watcher, and the Service and EndpointSlice
//!   watchers of the Service endpoint map when it is on, on one
//!   current-thread runtime with one API client; with them, the mirror of
//!   that map into the kernel's `svc_endpoints`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::enrich::cgroup::CgroupResolver;
use crate::enrich::correlation::{CorrelationMaps, UnresolvedHealth};
use crate::enrich::enricher::Enricher;
use crate::enrich::pods::{PodMetadata, PodStore, WatchSettings};
use crate::enrich::services::{mirror_to_kernel, KernelMirror, ServiceMap};
use crate::kernel::clock::{monotonic_ns, WallClock};
use crate::kernel::maps::KernelDirs;
use crate::kernel::maps::{KernelMaps, KernelServices, StatsReader};
use crate::kernel::probe::{Attachment, Probe, ProbeError, ProbeOptions, ProbeStorage};
use crate::kernel::repeats::{RepeatMaps, RepeatSweeper};
use crate::kernel::ring;
use crate::model::health::{HealthBoard, Heartbeat};
use crate::output::Fanout;
use crate::usage::baseline::Baseline;

/// How often the reader re-measures the monotonic -> wall-clock offset.
const CLOCK_REFRESH: Duration = Duration::from_secs(1);
/// How often the cgroup cache drops deleted cgroups.
const CGROUP_SWEEP: Duration = Duration::from_secs(60);
/// How often the kernel correlation maps are filled from the process records.
const CORRELATION_SYNC: Duration = Duration::from_secs(1);

/// A running thread and how to tell it to stop.
pub struct Worker {
    name: &'static str,
    signal: Option<Box<dyn FnOnce() + Send>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}

impl Worker {
    /// Starts `body` on thread `name`; `signal` tells it to return.
    pub fn spawn(
        name: &'static str,
        signal: impl FnOnce() + Send + 'static,
        body: impl FnOnce() + Send + 'static,
    ) -> crate::Result<Self> {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map_err(|source| crate::Error::Thread { name, source })?;
        Ok(Self {
            name,
            signal: Some(Box::new(signal)),
            thread: Some(thread),
        })
    }

    /// Signals the thread and waits for it (once; later calls do nothing).
    pub fn stop(&mut self) {
        if let Some(signal) = self.signal.take() {
            signal();
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(thread = self.name, "thread panicked");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the loaded probe hands back to the collector.
#[derive(Debug)]
pub struct Loaded {
    pub dirs: KernelDirs,
    pub correlation: KernelMaps,
    pub stats: StatsReader,
    /// The kernel's counts of repeated opens.
    pub repeats: RepeatMaps,
    /// The kernel's Service endpoint map (`None`: not created).
    pub services: Option<KernelServices>,
    pub attachment: Attachment,
    pub programs: Vec<&'static str>,
    pub object_ids: (Vec<u32>, Vec<u32>),
}

fn loaded(probe: &Probe<'_>) -> Result<Loaded, ProbeError> {
    Ok(Loaded {
        dirs: probe.volume_maps()?,
        correlation: probe.correlation_maps()?,
        stats: probe.stats_reader()?,
        repeats: probe.repeat_maps()?,
        services: probe.service_endpoints()?,
        attachment: probe.attachment(),
        programs: probe.attached_programs(),
        object_ids: probe.object_ids(),
    })
}

/// What the reader does with each record: enrich it, then fan it out; and
/// every repeat window, the same with the summaries of repeated opens.
#[derive(Debug)]
pub struct Pipeline {
    pub enricher: Enricher,
    pub fanout: Fanout,
    pub heartbeat: Arc<Heartbeat>,
    /// Summaries of repeated opens (`None`: every open is emitted).
    repeats: Option<RepeatSweeper>,
    /// Flags accesses new for their workload (`None`: no baseline).
    pub baseline: Option<Arc<Baseline>>,
    refreshed: Instant,
    swept: Instant,
    repeats_swept: Instant,
}

impl Pipeline {
    pub fn new(
        enricher: Enricher,
        fanout: Fanout,
        heartbeat: Arc<Heartbeat>,
        repeats: Option<RepeatSweeper>,
    ) -> Self {
        Self {
            enricher,
            fanout,
            heartbeat,
            repeats,
            baseline: None,
            refreshed: Instant::now(),
            swept: Instant::now(),
            repeats_swept: Instant::now(),
        }
    }

    /// Delivers the summaries of repeated opens when a window has passed
    /// since the last time (`all`: every count left, at stop).
    fn report_repeats(&mut self, all: bool) {
        let Some(sweeper) = &mut self.repeats else {
            return;
        };
        if !all && self.repeats_swept.elapsed() < sweeper.window() {
            return;
        }
        self.repeats_swept = Instant::now();
        let summaries = sweeper.sweep(monotonic_ns(), all);
        let errors = sweeper.take_errors();
        self.enricher
            .stats
            .decode_errors
            .fetch_add(errors, Ordering::Relaxed);
        for summary in &summaries {
            // Its latency is the window's, not the pipeline's: not measured.
            if let Some(mut event) = self.enricher.handle(summary) {
                if let Some(b) = &self.baseline {
                    b.check(&mut event);
                }
                self.fanout.deliver(event, 0.0);
            }
        }
    }
}

impl ring::Consumer for Pipeline {
    fn record(&mut self, data: &[u8]) {
        if let Some((mut event, ts_ns)) = self.enricher.handle_record(data) {
            if let Some(b) = &self.baseline {
                b.check(&mut event);
            }
            self.fanout.deliver(event, WallClock::elapsed_ms(ts_ns));
        }
    }

    fn batch_done(&mut self, stopping: bool) {
        self.report_repeats(stopping);
        self.fanout.flush();
        if stopping {
            return;
        }
        self.heartbeat.beat();
        if self.refreshed.elapsed() >= CLOCK_REFRESH {
            self.enricher.clock.refresh();
            self.refreshed = Instant::now();
        }
        if self.swept.elapsed() >= CGROUP_SWEEP {
            self.enricher.cgroups.forget_deleted();
            self.swept = Instant::now();
        }
    }
}

/// The reader thread, its probe loaded, waiting for its pipeline.
#[derive(Debug)]
pub struct Reader {
    // Dropped first: a reader never given its pipeline then returns, and
    // dropping the worker can join it.
    pipeline: std::sync::mpsc::SyncSender<Pipeline>,
    worker: Worker,
}

impl Reader {
    /// Starts polling with `pipeline`.
    pub fn run(self, pipeline: Pipeline) -> Worker {
        // The thread waits for exactly this message; it cannot be gone unless it panicked.
        let _ = self.pipeline.send(pipeline);
        self.worker
    }
}

/// Starts the reader thread and loads the probe on it; returns once the
/// programs are attached (or failed to load), with the probe's handles.
pub fn spawn_reader(options: ProbeOptions, flush: Duration) -> crate::Result<(Reader, Loaded)> {
    let (loaded_tx, loaded_rx) = sync_channel::<Result<Loaded, ProbeError>>(1);
    let (pipeline_tx, pipeline_rx) = sync_channel::<Pipeline>(1);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_reader = Arc::clone(&stop);
    let worker = Worker::spawn(
        "ringbuf-reader",
        move || stop.store(true, Ordering::Relaxed),
        move || read_loop(&options, flush, &stop_reader, &loaded_tx, &pipeline_rx),
    )?;
    let loaded = match loaded_rx.recv() {
        Ok(result) => result?,
        Err(_) => return Err(crate::Error::ReaderGone),
    };
    Ok((
        Reader {
            worker,
            pipeline: pipeline_tx,
        },
        loaded,
    ))
}

fn read_loop(
    options: &ProbeOptions,
    flush: Duration,
    stop: &AtomicBool,
    handles: &std::sync::mpsc::SyncSender<Result<Loaded, ProbeError>>,
    pipeline: &Receiver<Pipeline>,
) {
    let mut storage = ProbeStorage::uninit();
    let mut probe = match Probe::load(&mut storage, options) {
        Ok(p) => p,
        Err(e) => {
            let _ = handles.send(Err(e));
            return;
        }
    };
    let loaded = loaded(&probe);
    let ok = loaded.is_ok();
    let _ = handles.send(loaded);
    // Without a pipeline the start failed further on: drop the probe.
    let (true, Ok(mut pipeline)) = (ok, pipeline.recv()) else {
        return;
    };
    if let Err(e) = ring::poll(&mut probe, &mut pipeline, flush, stop) {
        tracing::error!(
            "cannot read the event ring buffer: {}",
            crate::logging::chain(&e)
        );
    }
}

/// Fills the kernel correlation maps every [`CORRELATION_SYNC`] until stopped.
pub fn spawn_correlator(
    correlation: Arc<CorrelationMaps>,
    cgroups: Arc<CgroupResolver>,
    pods: Arc<dyn PodMetadata>,
    health: Arc<HealthBoard>,
) -> crate::Result<Worker> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    Worker::spawn(
        "correlator",
        move || drop(stop_tx),
        move || {
            let report = correlation.scan_processes(&cgroups, &*pods);
            tracing::debug!(?report, "correlation maps filled from /proc");
            let mut unresolved = UnresolvedHealth::default();
            while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(CORRELATION_SYNC) {
                let report = correlation.sync(&cgroups, &*pods);
                unresolved.update(&report, Instant::now(), &health);
                if report != Default::default() {
                    tracing::debug!(?report, "correlation maps updated");
                }
            }
        },
    )
}

/// What the `kube-watcher` thread feeds from the API server.
#[derive(Debug)]
pub struct KubeFeeds {
    pub pods: Arc<PodStore>,
    /// The Service endpoint map (`None`: off).
    pub services: Option<Arc<ServiceMap>>,
    /// Where the Service endpoint map is mirrored in the kernel (`None`: nowhere).
    pub mirror: Option<KernelMirror>,
}

/// Runs the pod watcher (and the service map's) on its own thread and
/// runtime until stopped.
pub fn spawn_kube(
    url: Option<String>,
    settings: WatchSettings,
    feeds: KubeFeeds,
) -> crate::Result<Worker> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    Worker::spawn(
        "kube-watcher",
        move || {
            let _ = stop_tx.send(());
        },
        move || {
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
            runtime.block_on(watch_or_stand_alone(url, settings, feeds, async move {
                let _ = stop_rx.await;
            }));
        },
    )
}

async fn watch_or_stand_alone(
    url: Option<String>,
    settings: WatchSettings,
    feeds: KubeFeeds,
    stop: impl std::future::Future<Output = ()>,
) {
    use futures::FutureExt;
    let client = match crate::enrich::pods::client(url.as_deref()).await {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!("{e}: running standalone; namespace and pod names stay null");
            feeds.pods.set_standalone();
            if let Some(services) = &feeds.services {
                services.set_standalone();
            }
            // An empty mirror: a map taken over from an earlier run is cleared.
            match (feeds.services, feeds.mirror) {
                (Some(services), Some(m)) => mirror_to_kernel(services, m, stop).await,
                _ => stop.await,
            }
            return;
        }
    };
    let stop = stop.shared();
    let pods = crate::enrich::pods::watch_pods(client.clone(), settings, feeds.pods, stop.clone());
    match feeds.services {
        Some(services) => {
            let (map, stopped) = (Arc::clone(&services), stop.clone());
            let mirror = async move {
                if let Some(m) = feeds.mirror {
                    mirror_to_kernel(map, m, stopped).await;
                }
            };
            let watch = crate::enrich::services::watch_service_map(client, services, stop.clone());
            tokio::join!(pods, watch, mirror);
        }
        None => pods.await,
    }
}

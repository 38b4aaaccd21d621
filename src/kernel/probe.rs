//! Loading and attaching the BPF programs, and access to their maps.
//!
//! [`Probe`] owns the loaded skeleton: dropping it detaches every program and
//! frees every map but a pinned `svc_endpoints` (see [`ServiceEndpointsMap`]).
//! Other threads get duplicated map handles ([`MapHandle`]) rather than
//! borrowing the skeleton. The caller owns the skeleton's object storage
//! ([`ProbeStorage`]).

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapHandle, OpenObject, PrintLevel};

use super::abi::{CollectorSkel, CollectorSkelBuilder};
use super::maps::{KernelDirs, KernelMaps, KernelServices, MapError, StatsReader};
use super::repeats::RepeatMaps;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("opening the BPF object")]
    Open(#[source] libbpf_rs::Error),
    #[error("sizing map {map}")]
    Resize {
        map: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("loading the BPF programs into the kernel (is this root, with BTF at /sys/kernel/btf/vmlinux?)")]
    Load(#[source] libbpf_rs::Error),
    #[error("attaching the BPF programs (is tracefs mounted at /sys/kernel/tracing?)")]
    Attach(#[source] libbpf_rs::Error),
    #[error("running the program that learns this process's id (learn_self)")]
    LearnSelf(#[source] libbpf_rs::Error),
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("reading the event ring buffer")]
    Ring(#[source] libbpf_rs::Error),
    #[error("replacing the incompatible map pinned at {path}")]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning map svc_endpoints at {path} (is a bpf filesystem mounted there?)")]
    Pin {
        path: PathBuf,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("cannot pin map svc_endpoints at {path}: {dir} is not on a bpf filesystem (mount one there: mount -t bpf bpf /sys/fs/bpf)")]
    NotBpffs { path: PathBuf, dir: PathBuf },
}

/// Default shortest time between two wakeups that records force: under
/// load, at most 5,000 wakeups a second; a lone event is never held back.
pub const WAKEUP_GAP: Duration = Duration::from_micros(200);

/// Settings baked into the programs at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Load the process-lifecycle programs that feed the correlation maps
    /// (fork, exit, cgroup moves); they cost nothing on other syscalls.
    pub correlation: bool,
    /// Record one syscall in this many into `pid_samples`; 0 disables the
    /// sampler (a program on every syscall). Needs `correlation`.
    pub sample_every: u32,
    /// Size of the event ring buffer in bytes (a power of two, at least one page).
    pub ring_bytes: u32,
    /// Pending ring-buffer bytes above which a new event wakes the reader at once.
    pub wakeup_bytes: u64,
    /// Shortest time between two wakeups that records force (the first
    /// record after a quiet spell wakes the reader at once).
    pub wakeup_gap: Duration,
    /// Report failed opens whose path names the kubelet volume tree.
    pub report_failed_opens: bool,
    /// cgroup v1 subsystem index for the fallback cgroup id (`None`: v2 only).
    pub cgroup_v1_subsys: Option<u32>,
    /// Drop (and only count) events of this process itself.
    pub ignore_own_process: bool,
    /// Count a process's further opens of a file within this window of an
    /// emitted one instead of emitting them (zero: emit every open).
    pub repeat_window: Duration,
    /// Create the Service endpoint map `svc_endpoints` (`None`: it is not created).
    pub service_endpoints: Option<ServiceEndpointsMap>,
}

/// The kernel's Service endpoint map, for other collectors' BPF programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEndpointsMap {
    /// Most addresses it holds (it is not preallocated).
    pub max_entries: u32,
    /// Pin it in a bpf filesystem at this path, where other collectors open
    /// it (`None`: not pinned; `bpftool map dump name svc_endpoints` still
    /// finds it). A map already pinned there with the same shape is reused,
    /// so programs holding it keep working across restarts; one of another
    /// shape (a changed `max_entries`) is replaced. The pin outlives the
    /// collector, on purpose: the next one takes the map over.
    pub pin: Option<PathBuf>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            correlation: true,
            sample_every: 0,
            ring_bytes: 4 << 20,
            wakeup_bytes: 256 << 10,
            wakeup_gap: WAKEUP_GAP,
            report_failed_opens: true,
            cgroup_v1_subsys: None,
            ignore_own_process: false,
            repeat_window: Duration::ZERO,
            service_endpoints: None,
        }
    }
}

/// Storage of a loaded skeleton's object; the caller owns it and lends it
/// to [`Probe::load`] for as long as the probe lives.
pub type ProbeStorage = MaybeUninit<OpenObject>;

/// The loaded and attached BPF programs.
pub struct Probe<'obj> {
    skel: CollectorSkel<'obj>,
    options: ProbeOptions,
    attached: Attachment,
}

/// Whether a [`Probe`]'s programs are still attached, for health checks.
///
/// The programs stay attached exactly as long as the probe holds their links
/// (nothing else holds them), so the probe clears this when it detaches or is
/// dropped. Asking the kernel by program id instead (`BPF_PROG_GET_FD_BY_ID`)
/// would need `CAP_SYS_ADMIN`, which the collector does not otherwise need.
#[derive(Debug, Clone, Default)]
pub struct Attachment(Arc<AtomicBool>);

impl Attachment {
    /// True while the programs are attached.
    pub fn is_attached(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, attached: bool) {
        self.0.store(attached, Ordering::Release);
    }
}

impl std::fmt::Debug for Probe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.attached.set(false);
    }
}

impl<'obj> Probe<'obj> {
    /// Opens, configures, loads and attaches the programs; the skeleton's
    /// object lives in `storage` until the probe is dropped.
    pub fn load(
        storage: &'obj mut ProbeStorage,
        options: &ProbeOptions,
    ) -> Result<Self, ProbeError> {
        route_libbpf_output();
        let mut open = CollectorSkelBuilder::default()
            .open(storage)
            .map_err(ProbeError::Open)?;

        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .expect("the object has a .rodata section");
        rodata.cfg_sample_every = options.sample_every;
        rodata.cfg_wakeup_bytes = options.wakeup_bytes;
        rodata.cfg_wakeup_gap_ns = u64::try_from(options.wakeup_gap.as_nanos()).unwrap_or(u64::MAX);
        rodata.cfg_report_failed = u32::from(options.report_failed_opens);
        rodata.cfg_repeat_window_ns =
            u64::try_from(options.repeat_window.as_nanos()).unwrap_or(u64::MAX);
        rodata.cfg_v1_subsys = options
            .cgroup_v1_subsys
            .and_then(|s| i32::try_from(s).ok())
            .unwrap_or(-1);
        open.maps
            .events
            .set_max_entries(options.ring_bytes)
            .map_err(|source| ProbeError::Resize {
                map: "events",
                source,
            })?;
        prepare_service_endpoints(&mut open.maps.svc_endpoints, &options.service_endpoints)?;
        // What is off is not even loaded, so it costs nothing: the sampler
        // runs on every syscall, the lifecycle programs on forks and exits.
        let correlation = options.correlation;
        open.progs
            .trace_pod_syscalls
            .set_autoload(correlation && options.sample_every > 0);
        open.progs.inherit_container.set_autoload(correlation);
        open.progs.note_cgroup_move.set_autoload(correlation);
        open.progs.forget_process.set_autoload(correlation);
        open.progs
            .learn_self
            .set_autoload(options.ignore_own_process);
        // io_uring opens: on kernels built with io_uring (its tracepoints exist).
        let io_uring = io_uring_traced();
        open.progs
            .trace_config_access_io_uring_submit
            .set_autoload(io_uring);
        open.progs
            .trace_config_access_io_uring
            .set_autoload(io_uring);
        // arm64 has no open(2) or creat(2) (nor their tracepoints): openat covers them.
        let legacy_opens = cfg!(target_arch = "x86_64");
        open.progs
            .trace_config_access_open
            .set_autoload(legacy_opens);
        open.progs
            .trace_config_access_creat
            .set_autoload(legacy_opens);

        let mut skel = open.load().map_err(ProbeError::Load)?;
        if options.ignore_own_process {
            // In this thread's context: the kernel stores this process's id
            // as the initial pid namespace numbers it, whatever namespace
            // the collector runs in.
            skel.progs
                .learn_self
                .test_run(libbpf_rs::ProgramInput::default())
                .map_err(ProbeError::LearnSelf)?;
        }
        skel.attach().map_err(ProbeError::Attach)?;
        let attached = Attachment::default();
        attached.set(true);
        Ok(Self {
            skel,
            options: options.clone(),
            attached,
        })
    }

    /// A handle that tells whether the programs are still attached.
    pub fn attachment(&self) -> Attachment {
        self.attached.clone()
    }

    /// Detaches every program; maps stay readable until the probe is dropped.
    pub fn detach(&mut self) {
        self.attached.set(false);
        self.skel.links = Default::default();
    }

    /// Kernel ids of the loaded programs and maps (to check that they go away).
    pub fn object_ids(&self) -> (Vec<u32>, Vec<u32>) {
        use std::os::fd::AsFd;
        let progs = self
            .skel
            .object()
            .progs()
            .filter_map(|p| libbpf_rs::Program::id_from_fd(p.as_fd()).ok())
            .collect();
        let maps = self
            .skel
            .object()
            .maps()
            .filter_map(|m| libbpf_rs::MapInfo::new(m.as_fd()).ok().map(|i| i.info.id))
            .collect();
        (progs, maps)
    }

    /// Names of the attached programs.
    pub fn attached_programs(&self) -> Vec<&'static str> {
        let l = &self.skel.links;
        /// (name, whether its link exists) of each program named.
        macro_rules! attached {
            ($($prog:ident),* $(,)?) => {
                [$((stringify!($prog), l.$prog.is_some())),*]
            };
        }
        attached!(
            trace_config_access_openat,
            trace_config_access_openat2,
            trace_config_access_open,
            trace_config_access_creat,
            trace_config_access_open_by_handle_at,
            trace_config_access_io_uring_submit,
            trace_config_access_io_uring,
            trace_pod_syscalls,
            inherit_container,
            note_cgroup_move,
            forget_process,
        )
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }

    fn handle(map: &libbpf_rs::Map<'_>, name: &'static str) -> Result<MapHandle, ProbeError> {
        MapHandle::try_from(map).map_err(|source| ProbeError::Map(MapError { map: name, source }))
    }

    /// The event ring buffer.
    pub fn events_map(&self) -> Result<MapHandle, ProbeError> {
        Self::handle(&self.skel.maps.events, "events")
    }

    /// The watched volume directories and the device and directory filters
    /// in front of them (see [`super::maps::KernelDirs`]).
    pub fn volume_maps(&self) -> Result<KernelDirs, ProbeError> {
        Ok(KernelDirs::new(
            Self::handle(&self.skel.maps.watched_dirs, "watched_dirs")?,
            Self::handle(&self.skel.maps.dev_filter, "dev_filter")?,
            Self::handle(&self.skel.maps.dir_filter, "dir_filter")?,
        ))
    }

    /// The process records (tgid -> cgroup ids) of the lifecycle programs and the sampler.
    pub fn pid_samples_map(&self) -> Result<MapHandle, ProbeError> {
        Self::handle(&self.skel.maps.pid_samples, "pid_samples")
    }

    /// The correlation maps: cgroup id -> pod, tgid -> container, and the process records.
    pub fn correlation_maps(&self) -> Result<KernelMaps, ProbeError> {
        Ok(KernelMaps {
            pod_info: Self::handle(&self.skel.maps.pod_info_map, "pod_info_map")?,
            container_pids: Self::handle(&self.skel.maps.container_pids, "container_pids")?,
            pid_samples: Self::handle(&self.skel.maps.pid_samples, "pid_samples")?,
            cgroup_classes: Self::handle(&self.skel.maps.cgroup_classes, "cgroup_classes")?,
            stats: self.stats_reader()?,
        })
    }

    /// The counts of repeated opens and failed opens (see [`super::repeats`]).
    pub fn repeat_maps(&self) -> Result<RepeatMaps, ProbeError> {
        Ok(RepeatMaps {
            opens: Self::handle(&self.skel.maps.repeats, "repeats")?,
            failed: Self::handle(&self.skel.maps.failed_repeats, "failed_repeats")?,
        })
    }

    /// The Service endpoint map (`None`: not created).
    pub fn service_endpoints(&self) -> Result<Option<KernelServices>, ProbeError> {
        if self.options.service_endpoints.is_none() {
            return Ok(None);
        }
        let map = Self::handle(&self.skel.maps.svc_endpoints, "svc_endpoints")?;
        Ok(Some(KernelServices::new(map)))
    }

    /// A reader for the kernel counters.
    pub fn stats_reader(&self) -> Result<StatsReader, ProbeError> {
        Ok(StatsReader::new(Self::handle(
            &self.skel.maps.stats,
            "stats",
        )?))
    }
}

/// Sizes `svc_endpoints`, or leaves it out; when it is to be pinned, makes
/// way for it: libbpf reuses a compatible map pinned at the path, and
/// pins the new one there otherwise.
fn prepare_service_endpoints(
    map: &mut libbpf_rs::OpenMapMut<'_>,
    settings: &Option<ServiceEndpointsMap>,
) -> Result<(), ProbeError> {
    let resize = |source| ProbeError::Resize {
        map: "svc_endpoints",
        source,
    };
    let Some(settings) = settings else {
        return map.set_autocreate(false).map_err(resize);
    };
    map.set_max_entries(settings.max_entries).map_err(resize)?;
    let Some(path) = &settings.pin else {
        return Ok(());
    };
    on_bpffs(path)?;
    if path.exists() && !pinned_map_fits(path, map) {
        tracing::warn!(
            path = %path.display(),
            "replacing the map pinned there, of another shape: programs that hold it must open the new one"
        );
        std::fs::remove_file(path).map_err(|source| ProbeError::Unpin {
            path: path.clone(),
            source,
        })?;
    }
    map.set_pin_path(path).map_err(|source| ProbeError::Pin {
        path: path.clone(),
        source,
    })
}

/// Fails unless `path` would be on a bpf filesystem: its nearest existing
/// ancestor is one (libbpf creates missing directories below it).
fn on_bpffs(path: &Path) -> Result<(), ProbeError> {
    use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
    let dir = path
        .ancestors()
        .skip(1)
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    match statfs(dir) {
        Ok(fs) if fs.filesystem_type() == BPF_FS_MAGIC => Ok(()),
        _ => Err(ProbeError::NotBpffs {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        }),
    }
}

/// Whether the object pinned at `path` is a map that libbpf can reuse as
/// `map`: same name, type, key, value, flags and `max_entries`.
fn pinned_map_fits(path: &Path, map: &libbpf_rs::OpenMapMut<'_>) -> bool {
    let Ok(info) = MapHandle::from_pinned_path(path).and_then(|m| m.info()) else {
        return false;
    };
    let i = &info.info;
    info.name().is_ok_and(|name| map.name() == name)
        && info.map_type() == map.map_type()
        && i.key_size == map.key_size()
        && i.value_size == map.value_size()
        && i.max_entries == map.max_entries()
        && i.map_flags == map.map_flags()
}

fn libbpf_print(level: PrintLevel, msg: String) {
    let msg = msg.trim_end();
    match level {
        PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
        PrintLevel::Info => tracing::info!(target: "libbpf", "{msg}"),
        PrintLevel::Debug => tracing::debug!(target: "libbpf", "{msg}"),
    }
}

/// Sends libbpf's output to `tracing` (idempotent).
pub fn route_libbpf_output() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Debug, libbpf_print)));
    });
}

/// Whether the kernel has io_uring's tracepoints (it is built with io_uring).
fn io_uring_traced() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|t| {
            std::path::Path::new(t)
                .join("events/io_uring/io_uring_complete")
                .exists()
        })
}

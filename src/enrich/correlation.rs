//! Correlation maps that sibling collectors query, mirroring the published
//! collector's API: `add_container_pid`, `add_pod_info(cgroup_id, PodInfo)`,
//! `add_mount_info(path_hash, MountInfo)`, and their lookups.
//!
//! Pod and process entries live in BPF maps (`pod_info`: cgroup id -> pod,
//! `container_pids`: tgid -> container), so sibling BPF programs can read them
//! too; mount information (keyed by the blake3 hash of the volume's host path)
//! lives here. The kernel places processes itself at fork and at a cgroup
//! move, from the cgroup classes that user space writes (`cgroup_classes`:
//! a pod's container, or outside every pod), and drops a process's entries at
//! exit. A process whose cgroups have no class yet is recorded in
//! `pid_samples`: [`CorrelationMaps::sync`] classifies its cgroups, writes
//! its entries, names pods whose metadata came later, and removes entries
//! whose cgroup is gone; [`CorrelationMaps::scan_processes`] does the same
//! for the processes older than the collector (a /proc scan at start).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::cgroup::{CgroupResolver, Resolution};
use super::pods::PodMetadata;
use super::volumes::Volume;
pub use crate::kernel::maps::KernelMaps;
use crate::kernel::maps::{MapError, PidSample};
pub use crate::model::correlation::{ContainerPid, MountInfo, PodInfo};
use crate::model::health::{HealthBoard, Severity};
use crate::model::volume::VolumeType;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum CorrelationError {
    #[error("the correlation maps need the loaded BPF programs")]
    NoKernelMaps,
    #[error("process {0} not found or not readable")]
    NoProcess(u32),
    #[error("the {map} table is full ({entries} entries)")]
    Full { map: &'static str, entries: usize },
    #[error(transparent)]
    Map(#[from] MapError),
}

/// How long a process record whose cgroup is not known yet (made after the
/// resolver's last walk) is retried before it is given up and counted.
pub const UNRESOLVED_RETRY: Duration = Duration::from_secs(10);
/// Most process records kept for a retry.
const MAX_PENDING: usize = 4096;

/// What one [`CorrelationMaps::sync`] or [`CorrelationMaps::scan_processes`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// `cgroup_classes` entries written.
    pub classes_added: usize,
    /// `cgroup_classes` entries removed (their cgroup is gone).
    pub classes_removed: usize,
    /// `container_pids` entries written.
    pub pids_added: usize,
    /// `pod_info` entries written or named.
    pub pods_added: usize,
    /// `pod_info` entries removed (their cgroup is gone).
    pub pods_removed: usize,
    /// Process records given up: their cgroup never resolved.
    pub unresolved: usize,
    /// /proc rescans made because the kernel could not write process records.
    pub rescans: usize,
}

impl MountInfo {
    /// Mount information of a discovered volume.
    pub fn from_volume(volume: &Volume) -> Self {
        Self {
            name: volume.name.clone(),
            namespace: None,
            mount_path: volume.mount_path.to_string_lossy().into_owned(),
            is_secret: volume.volume_type == VolumeType::Secret,
            volume_type: volume.volume_type.as_str().to_string(),
            pod_uid: volume.pod_uid.clone(),
        }
    }
}

/// The `PodInfo` of pod `uid`, with names from `pods` when it knows the pod.
pub fn pod_info_for(uid: &str, pods: &dyn PodMetadata, created_at: i64) -> PodInfo {
    let meta = pods.pod(uid);
    PodInfo {
        pod_uid: uid.to_string(),
        namespace: meta
            .as_ref()
            .map(|m| m.namespace.to_string())
            .unwrap_or_default(),
        pod_name: meta
            .as_ref()
            .map(|m| m.name.to_string())
            .unwrap_or_default(),
        created_at,
    }
}

/// A correlation operation, as counted by `kernel_monitor_pod_correlation{operation}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorrelationOp {
    /// An event's cgroup resolved to a pod or the host.
    CgroupLookup,
    /// An event's cgroup could not be resolved.
    CgroupLookupMiss,
    /// An event's cgroup was deleted before it was resolved: placed by its
    /// parent's path and its name from the kernel.
    CgroupLookupGone,
    /// API reads.
    PodByCgroup,
    PodByPid,
    PodByUid,
    ContainerByPid,
    MountLookup,
    /// API writes.
    AddContainerPid,
    AddPodInfo,
    AddMountInfo,
    /// Kernel map entries written or removed from the process records.
    SyncCgroupClass,
    SyncCgroupClassRemoved,
    SyncContainerPid,
    SyncPodInfo,
    SyncPodRemoved,
    /// Process records given up because their cgroup never resolved.
    SyncUnresolved,
    /// /proc rescans made because the kernel's process records were full.
    SyncRescan,
}

impl CorrelationOp {
    /// Every operation.
    pub const ALL: [Self; 18] = [
        Self::CgroupLookup,
        Self::CgroupLookupMiss,
        Self::CgroupLookupGone,
        Self::PodByCgroup,
        Self::PodByPid,
        Self::PodByUid,
        Self::ContainerByPid,
        Self::MountLookup,
        Self::AddContainerPid,
        Self::AddPodInfo,
        Self::AddMountInfo,
        Self::SyncCgroupClass,
        Self::SyncCgroupClassRemoved,
        Self::SyncContainerPid,
        Self::SyncPodInfo,
        Self::SyncPodRemoved,
        Self::SyncUnresolved,
        Self::SyncRescan,
    ];

    /// The `operation` label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::CgroupLookup => "cgroup_lookup",
            Self::CgroupLookupMiss => "cgroup_lookup_miss",
            Self::CgroupLookupGone => "cgroup_lookup_gone",
            Self::PodByCgroup => "pod_by_cgroup",
            Self::PodByPid => "pod_by_pid",
            Self::PodByUid => "pod_by_uid",
            Self::ContainerByPid => "container_by_pid",
            Self::MountLookup => "mount_lookup",
            Self::AddContainerPid => "add_container_pid",
            Self::AddPodInfo => "add_pod_info",
            Self::AddMountInfo => "add_mount_info",
            Self::SyncCgroupClass => "sync_cgroup_class",
            Self::SyncCgroupClassRemoved => "sync_cgroup_class_removed",
            Self::SyncContainerPid => "sync_container_pid",
            Self::SyncPodInfo => "sync_pod_info",
            Self::SyncPodRemoved => "sync_pod_removed",
            Self::SyncUnresolved => "sync_unresolved",
            Self::SyncRescan => "sync_rescan",
        }
    }
}

/// Counts of [`CorrelationOp`]s.
#[derive(Debug, Default)]
pub struct CorrelationOps([AtomicU64; CorrelationOp::ALL.len()]);

impl CorrelationOps {
    /// Counts `n` operations of kind `op`.
    pub fn add(&self, op: CorrelationOp, n: u64) {
        self.0[op as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one operation of kind `op`.
    pub fn bump(&self, op: CorrelationOp) {
        self.add(op, 1);
    }

    /// How many operations of kind `op` were counted.
    pub fn get(&self, op: CorrelationOp) -> u64 {
        self.0[op as usize].load(Ordering::Relaxed)
    }
}

/// Most entries of the kernel `pod_info` map (`max_entries` in the BPF object).
pub const POD_INFO_ENTRIES: usize = 16384;

/// A refused [`CorrelationMaps::post_mount_info`]: the posted entries reached the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the mount table holds {max} entries posted through the API (api_max_mounts)")]
pub struct MountsFull {
    /// The bound.
    pub max: usize,
}

/// What [`CorrelationMaps::remove_posted_mount`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovedMount {
    /// The entry was posted through the API and is gone now.
    Removed(MountInfo),
    /// The entry is one of the collector's watched volumes: kept.
    Watched,
    /// No entry under that hash.
    Missing,
}

/// The mount table: entries of watched volumes, and entries posted through the API.
#[derive(Debug, Default)]
struct Mounts {
    /// Path hash -> the mount and whether it was posted through the API.
    map: HashMap<String, (MountInfo, bool)>,
    /// How many entries of `map` were posted.
    posted: usize,
}

/// Shared correlation state.
#[derive(Debug, Default)]
pub struct CorrelationMaps {
    mounts: RwLock<Mounts>,
    kernel: Option<KernelMaps>,
    /// Process records whose cgroup was not known yet, and when they were taken.
    pending: Mutex<Vec<(PidSample, Instant)>>,
    /// The kernel's count of process records it could not write, as last acted on.
    records_full_seen: AtomicU64,
    /// Operation counts for the metrics.
    pub ops: CorrelationOps,
}

/// A process record for every process running now (`/proc`), taken at `now`.
fn proc_records(cgroups: &CgroupResolver, now: Instant) -> Vec<(PidSample, Instant)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tgid| {
            let (cgroup_id, cgroup_v1_id) = cgroups.ids_of_pid(tgid)?;
            let sample = PidSample {
                tgid,
                cgroup_id,
                cgroup_v1_id,
            };
            Some((sample, now))
        })
        .collect()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl CorrelationMaps {
    /// Mount information only (no kernel maps).
    pub fn new() -> Self {
        Self::default()
    }

    /// Backed by the loaded programs' maps.
    pub fn with_kernel(kernel: KernelMaps) -> Self {
        Self {
            kernel: Some(kernel),
            ..Self::default()
        }
    }

    fn kernel(&self) -> Result<&KernelMaps, CorrelationError> {
        self.kernel.as_ref().ok_or(CorrelationError::NoKernelMaps)
    }

    /// The kernel maps behind this state, when the programs are loaded.
    pub fn kernel_maps(&self) -> Option<&KernelMaps> {
        self.kernel.as_ref()
    }

    /// Records the pod of a cgroup; [`CorrelationError::Full`] when the
    /// kernel map holds [`POD_INFO_ENTRIES`] other cgroups.
    pub fn add_pod_info(&self, cgroup_id: u64, info: PodInfo) -> Result<(), CorrelationError> {
        self.kernel()?.put_pod_info(cgroup_id, &info).map_err(|e| {
            if e.is_full() {
                CorrelationError::Full {
                    map: "pod_info_map",
                    entries: POD_INFO_ENTRIES,
                }
            } else {
                e.into()
            }
        })
    }

    /// The pod of a cgroup.
    pub fn pod_by_cgroup(&self, cgroup_id: u64) -> Option<PodInfo> {
        self.kernel().ok()?.pod_info(cgroup_id)
    }

    /// Forgets a cgroup's pod.
    pub fn remove_pod_info(&self, cgroup_id: u64) -> Result<(), CorrelationError> {
        Ok(self.kernel()?.delete_pod_info(cgroup_id)?)
    }

    /// Every (cgroup id, pod) entry.
    pub fn pod_infos(&self) -> Vec<(u64, PodInfo)> {
        let Ok(k) = self.kernel() else {
            return Vec::new();
        };
        k.pod_info_ids()
            .into_iter()
            .filter_map(|id| Some((id, k.pod_info(id)?)))
            .collect()
    }

    /// Records the container of process `pid`.
    pub fn set_container_pid(
        &self,
        pid: u32,
        container: &ContainerPid,
    ) -> Result<(), CorrelationError> {
        Ok(self.kernel()?.put_container_pid(pid, container)?)
    }

    /// Records process `pid` as a container process, resolving its container
    /// from its cgroup (`/proc/<pid>/cgroup`).
    pub fn add_container_pid(
        &self,
        pid: u32,
        cgroups: &CgroupResolver,
    ) -> Result<ContainerPid, CorrelationError> {
        let (cgroup_id, info) = cgroups
            .cgroup_of_pid(pid)
            .ok_or(CorrelationError::NoProcess(pid))?;
        let c = ContainerPid {
            cgroup_id,
            container_id: info.container_id.clone().unwrap_or_default(),
        };
        self.set_container_pid(pid, &c)?;
        Ok(c)
    }

    /// The container of process `pid`.
    pub fn container_of_pid(&self, pid: u32) -> Option<ContainerPid> {
        self.kernel().ok()?.container_pid(pid)
    }

    /// Applies the kernel's process records (and those of earlier passes
    /// whose cgroup was not known yet), names pods whose metadata arrived,
    /// and drops entries whose cgroup no longer exists.
    pub fn sync(&self, cgroups: &CgroupResolver, pods: &dyn PodMetadata) -> SyncReport {
        let mut report = SyncReport::default();
        let Ok(k) = self.kernel() else { return report };
        let now = Instant::now();
        let mut records =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        records.extend(k.take_samples().into_iter().map(|s| (s, now)));
        // Records the kernel could not write: every process is read from /proc instead.
        let full = k.records_full();
        if full > self.records_full_seen.swap(full, Ordering::Relaxed) {
            tracing::warn!(
                lost = full,
                "the kernel's process records (pid_samples) were full; rescanning /proc"
            );
            records.extend(proc_records(cgroups, now));
            report.rescans += 1;
        }
        self.apply_all(records, cgroups, pods, &mut report);
        self.name_pods(pods, &mut report);
        self.prune(cgroups, &mut report);
        self.count(&report);
        report
    }

    /// Records every process running now (`/proc`): the processes that
    /// started before the collector, which no lifecycle program saw.
    pub fn scan_processes(&self, cgroups: &CgroupResolver, pods: &dyn PodMetadata) -> SyncReport {
        let mut report = SyncReport::default();
        if self.kernel().is_err() {
            return report;
        }
        let records = proc_records(cgroups, Instant::now());
        self.apply_all(records, cgroups, pods, &mut report);
        self.count(&report);
        report
    }

    /// Applies `records` in order; those whose cgroup is not known yet are
    /// kept for the next pass, for at most [`UNRESOLVED_RETRY`].
    fn apply_all(
        &self,
        records: Vec<(PidSample, Instant)>,
        cgroups: &CgroupResolver,
        pods: &dyn PodMetadata,
        report: &mut SyncReport,
    ) {
        let mut retry = Vec::new();
        // Many records share their cgroups (the /proc scan above all): each
        // pair is classified, and its pod written, once per pass.
        let mut classified = HashSet::new();
        for (sample, seen) in records {
            if !self.apply(sample, cgroups, pods, &mut classified, report) {
                if seen.elapsed() < UNRESOLVED_RETRY && retry.len() < MAX_PENDING {
                    retry.push((sample, seen));
                } else {
                    report.unresolved += 1;
                }
            }
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(retry);
    }

    /// Classifies one process's cgroups for the kernel and writes their
    /// pod (unless `classified` holds them: done in this pass), and writes
    /// the process's container (unless the kernel has placed it since);
    /// false when its cgroups are not known (yet).
    fn apply(
        &self,
        sample: PidSample,
        cgroups: &CgroupResolver,
        pods: &dyn PodMetadata,
        classified: &mut HashSet<(u64, u64)>,
        report: &mut SyncReport,
    ) -> bool {
        let Resolution::Found(info) = cgroups.resolve(sample.cgroup_id, sample.cgroup_v1_id) else {
            return false;
        };
        let ids = (sample.cgroup_id, sample.cgroup_v1_id);
        let container = info.pod_uid.is_some().then(|| ContainerPid {
            cgroup_id: sample.cgroup_id,
            container_id: info.container_id.clone().unwrap_or_default(),
        });
        let first = classified.insert(ids);
        if let (true, Ok(k)) = (first, self.kernel()) {
            report.classes_added +=
                usize::from(k.put_cgroup_class(ids, container.as_ref()).is_ok());
        }
        let (Some(uid), Some(c)) = (info.pod_uid.as_deref(), container) else {
            return true;
        };
        if self.container_of_pid(sample.tgid).is_none() {
            report.pids_added += usize::from(self.set_container_pid(sample.tgid, &c).is_ok());
        }
        // pod_info is keyed by the v2 id: the root (1) names no pod.
        if first && sample.cgroup_id > 1 && self.pod_by_cgroup(sample.cgroup_id).is_none() {
            let info = pod_info_for(uid, pods, now_secs());
            report.pods_added += usize::from(self.add_pod_info(sample.cgroup_id, info).is_ok());
        }
        true
    }

    /// Fills in the names of pods whose metadata arrived after their entry.
    fn name_pods(&self, pods: &dyn PodMetadata, report: &mut SyncReport) {
        for (cgroup_id, info) in self.pod_infos() {
            if info.pod_name.is_empty() && pods.pod(&info.pod_uid).is_some() {
                let named = pod_info_for(&info.pod_uid, pods, info.created_at);
                report.pods_added += usize::from(self.add_pod_info(cgroup_id, named).is_ok());
            }
        }
    }

    /// Drops the pod entries and cgroup classes of cgroups that are gone.
    fn prune(&self, cgroups: &CgroupResolver, report: &mut SyncReport) {
        for (cgroup_id, _) in self.pod_infos() {
            if cgroups.resolve(cgroup_id, 0) == Resolution::Unknown {
                report.pods_removed += usize::from(self.remove_pod_info(cgroup_id).is_ok());
            }
        }
        let Ok(k) = self.kernel() else { return };
        for ids in k.cgroup_class_ids() {
            if cgroups.resolve(ids.0, ids.1) == Resolution::Unknown {
                report.classes_removed += usize::from(k.delete_cgroup_class(ids).is_ok());
            }
        }
    }

    fn count(&self, report: &SyncReport) {
        let ops = [
            (CorrelationOp::SyncContainerPid, report.pids_added),
            (CorrelationOp::SyncCgroupClass, report.classes_added),
            (
                CorrelationOp::SyncCgroupClassRemoved,
                report.classes_removed,
            ),
            (CorrelationOp::SyncPodInfo, report.pods_added),
            (CorrelationOp::SyncPodRemoved, report.pods_removed),
            (CorrelationOp::SyncUnresolved, report.unresolved),
            (CorrelationOp::SyncRescan, report.rescans),
        ];
        for (op, n) in ops {
            self.ops.add(op, n as u64);
        }
    }

    /// Records a watched volume's mount under the blake3 hash of its path
    /// (never refused; an entry posted under the same hash becomes the volume's).
    pub fn add_mount_info(&self, path_hash: &str, info: MountInfo) {
        let mut m = self.mounts.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, true)) = m.map.insert(path_hash.to_string(), (info, false)) {
            m.posted -= 1;
        }
    }

    /// Records a mount posted through the API, unless `max` posted entries
    /// exist already. Replacing an existing entry is always accepted (a
    /// watched volume's entry stays the volume's).
    pub fn post_mount_info(
        &self,
        path_hash: &str,
        info: MountInfo,
        max: usize,
    ) -> Result<(), MountsFull> {
        let mut m = self.mounts.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = m.map.get_mut(path_hash) {
            entry.0 = info;
            return Ok(());
        }
        if m.posted >= max {
            return Err(MountsFull { max });
        }
        m.map.insert(path_hash.to_string(), (info, true));
        m.posted += 1;
        Ok(())
    }

    /// Forgets a mount (the watcher, when a volume goes).
    pub fn remove_mount_info(&self, path_hash: &str) -> Option<MountInfo> {
        let mut m = self.mounts.write().unwrap_or_else(|e| e.into_inner());
        let (info, posted) = m.map.remove(path_hash)?;
        if posted {
            m.posted -= 1;
        }
        Some(info)
    }

    /// Forgets a mount posted through the API; a watched volume's entry stays.
    pub fn remove_posted_mount(&self, path_hash: &str) -> RemovedMount {
        let mut m = self.mounts.write().unwrap_or_else(|e| e.into_inner());
        match m.map.get(path_hash) {
            None => RemovedMount::Missing,
            Some((_, false)) => RemovedMount::Watched,
            Some((_, true)) => {
                m.posted -= 1;
                m.map
                    .remove(path_hash)
                    .map_or(RemovedMount::Missing, |(info, _)| {
                        RemovedMount::Removed(info)
                    })
            }
        }
    }

    /// How many mounts were posted through the API (and not removed).
    pub fn posted_mounts(&self) -> usize {
        self.mounts.read().map_or(0, |m| m.posted)
    }

    /// The mount recorded under `path_hash`.
    pub fn mount_info(&self, path_hash: &str) -> Option<MountInfo> {
        self.mounts
            .read()
            .ok()?
            .map
            .get(path_hash)
            .map(|e| e.0.clone())
    }

    /// Every recorded mount with its hash.
    pub fn mounts(&self) -> Vec<(String, MountInfo)> {
        let Ok(m) = self.mounts.read() else {
            return Vec::new();
        };
        let mut all: Vec<_> = m
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        all.sort_by(|a, b| a.1.mount_path.cmp(&b.1.mount_path));
        all
    }
}

/// How long `/healthz` stays degraded after processes were given up.
pub const UNRESOLVED_DEGRADES_FOR: Duration = Duration::from_secs(300);

/// Health component of the correlation maps.
pub const HEALTH_COMPONENT: &str = "correlation";

/// Turns given-up process records ([`SyncReport::unresolved`]) into a
/// degraded `/healthz`: while some were given up in the last
/// [`UNRESOLVED_DEGRADES_FOR`], the maps lack those processes, and a
/// sibling collector asking for them gets nothing.
#[derive(Debug, Default)]
pub struct UnresolvedHealth {
    /// Records given up in the current spell, and when the last one was.
    spell: Option<(usize, Instant)>,
}

impl UnresolvedHealth {
    /// Takes one sync's report at `now`; raises or clears the condition.
    pub fn update(&mut self, report: &SyncReport, now: Instant, health: &HealthBoard) {
        if report.unresolved > 0 {
            let total = self.spell.map_or(0, |(n, _)| n) + report.unresolved;
            self.spell = Some((total, now));
            health.raise(
                HEALTH_COMPONENT,
                Severity::Degraded,
                format!(
                    "{total} process(es) left out of container_pids: their cgroup could not be \
                     resolved within {} s (kernel_monitor_pod_correlation_total{{operation=\"sync_unresolved\"}})",
                    UNRESOLVED_RETRY.as_secs()
                ),
            );
        } else if self
            .spell
            .is_some_and(|(_, last)| now.duration_since(last) >= UNRESOLVED_DEGRADES_FOR)
        {
            self.spell = None;
            health.clear(HEALTH_COMPONENT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(path: &str) -> MountInfo {
        MountInfo {
            name: "n".into(),
            namespace: None,
            mount_path: path.into(),
            is_secret: true,
            volume_type: "secret".into(),
            pod_uid: "u".into(),
        }
    }

    #[test]
    fn posted_mounts_are_bounded_and_watched_ones_are_not() {
        let c = CorrelationMaps::new();
        c.add_mount_info("w", mount("/w"));
        c.post_mount_info("a", mount("/a"), 2).unwrap();
        c.post_mount_info("b", mount("/b"), 2).unwrap();
        assert_eq!(
            c.post_mount_info("c", mount("/c"), 2),
            Err(MountsFull { max: 2 })
        );
        // Replacing is not adding; the watcher is never refused.
        c.post_mount_info("a", mount("/a2"), 2).unwrap();
        c.post_mount_info("w", mount("/w2"), 2).unwrap();
        c.add_mount_info("x", mount("/x"));
        assert_eq!(c.posted_mounts(), 2);
        assert_eq!(c.remove_posted_mount("w"), RemovedMount::Watched);
        assert_eq!(c.remove_posted_mount("nope"), RemovedMount::Missing);
        assert!(
            matches!(c.remove_posted_mount("a"), RemovedMount::Removed(m) if m.mount_path == "/a2")
        );
        c.post_mount_info("c", mount("/c"), 2).unwrap();
        // A watched volume taking over a posted entry frees its slot.
        c.add_mount_info("c", mount("/c"));
        assert_eq!(c.posted_mounts(), 1);
        assert_eq!(
            c.remove_mount_info("b").map(|m| m.mount_path),
            Some("/b".into())
        );
        assert_eq!(c.posted_mounts(), 0);
        assert_eq!(c.mounts().len(), 3);
    }

    #[test]
    fn given_up_records_degrade_health_until_a_quiet_spell() {
        let board = HealthBoard::default();
        let mut h = UnresolvedHealth::default();
        let t0 = Instant::now();
        let quiet = SyncReport::default();
        h.update(&quiet, t0, &board);
        assert!(board.conditions().is_empty(), "nothing given up yet");

        let lost = SyncReport {
            unresolved: 2,
            ..SyncReport::default()
        };
        h.update(&lost, t0, &board);
        h.update(&lost, t0 + Duration::from_secs(1), &board);
        let c = board.conditions();
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(
            (c[0].component.as_str(), c[0].severity),
            (HEALTH_COMPONENT, Severity::Degraded)
        );
        assert!(c[0].reason.starts_with("4 process(es)"), "{c:?}");

        h.update(&quiet, t0 + Duration::from_secs(60), &board);
        assert_eq!(board.conditions().len(), 1, "still within the spell");
        h.update(
            &quiet,
            t0 + Duration::from_secs(1) + UNRESOLVED_DEGRADES_FOR,
            &board,
        );
        assert!(board.conditions().is_empty(), "cleared after a quiet spell");
    }
}

//! Enrichment: turns decoded kernel events into [`AccessEvent`]s.
//!
//! Runs on the ring-buffer reader thread. Every record ends in exactly one
//! place: emitted, or counted in [`UserStats`] with the reason it was not.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::cgroup::{CgroupResolver, Resolution};
use crate::clock::WallClock;
use crate::correlation::{CorrelationMaps, CorrelationOp};
use crate::decode::{decode_event, EventKind, KernelEvent};
use crate::denied;
use crate::event::ContainerRef;
use crate::event::{
    access_from_flags, access_from_fmode, result_name, AccessEvent, ProcessInfo, KUBELET_WRITE,
};
use crate::metrics::AccessMetrics;
use crate::output::Sink;
use crate::pods::{PodStore, SourceKind};
use crate::volumes::{parse_volume_path, VolumePath, VolumeRegistry};

/// What to do with the kubelet's own accesses to volume files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeletWrites {
    /// Emit them with `event_type: kubelet_write`.
    Report,
    /// Count and drop them.
    Drop,
}

/// User-space counters.
#[derive(Debug, Default)]
pub struct UserStats {
    /// Records read from the ring buffer.
    pub received: AtomicU64,
    /// Events built and handed to every output's queue (each output counts its own losses).
    pub emitted: AtomicU64,
    /// Records that did not decode.
    pub decode_errors: AtomicU64,
    /// Matched opens whose volume vanished before the record was read.
    pub unknown_volume: AtomicU64,
    /// Failed opens (denied, or on a volume-like path) that named no watched volume file.
    pub not_volume: AtomicU64,
    /// Denied opens whose path could not be placed (process, mount namespace and container spec all gone).
    pub denied_unresolved: AtomicU64,
    /// Kubelet accesses dropped by configuration.
    pub kubelet_dropped: AtomicU64,
}

/// A snapshot of [`UserStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UserStatsSnapshot {
    pub received: u64,
    pub emitted: u64,
    pub decode_errors: u64,
    pub unknown_volume: u64,
    pub not_volume: u64,
    pub denied_unresolved: u64,
    pub kubelet_dropped: u64,
}

impl UserStats {
    pub fn snapshot(&self) -> UserStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UserStatsSnapshot {
            received: g(&self.received),
            emitted: g(&self.emitted),
            decode_errors: g(&self.decode_errors),
            unknown_volume: g(&self.unknown_volume),
            not_volume: g(&self.not_volume),
            denied_unresolved: g(&self.denied_unresolved),
            kubelet_dropped: g(&self.kubelet_dropped),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// At most [`LogBudget::PER_MINUTE`] log lines a minute; the rest are only counted.
#[derive(Debug)]
pub struct LogBudget {
    window: std::time::Instant,
    used: u32,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            window: std::time::Instant::now(),
            used: 0,
        }
    }
}

impl LogBudget {
    pub const PER_MINUTE: u32 = 10;

    /// Whether one more line may be logged now.
    pub fn take(&mut self) -> bool {
        if self.window.elapsed() >= std::time::Duration::from_secs(60) {
            self.window = std::time::Instant::now();
            self.used = 0;
        }
        self.used += 1;
        self.used <= Self::PER_MINUTE
    }
}

/// Everything the enrichment step needs.
#[derive(Debug)]
pub struct Enricher {
    pub registry: Arc<VolumeRegistry>,
    pub stats: Arc<UserStats>,
    pub clock: WallClock,
    /// Command names of the kubelet.
    pub kubelet_names: Vec<String>,
    /// Mount namespace of the host (pid 1); the kubelet runs there.
    pub host_mnt_ns: u32,
    pub kubelet_writes: KubeletWrites,
    /// Every output's queue; each event is offered to all of them.
    pub outputs: Vec<Sink>,
    /// cgroup id -> pod and container of the reading process.
    pub cgroups: Arc<CgroupResolver>,
    /// Pod metadata; `None` in standalone mode.
    pub pods: Option<Arc<PodStore>>,
    /// Per-access metrics.
    pub metrics: AccessMetrics,
    /// Correlation operation counts.
    pub correlation: Arc<CorrelationMaps>,
    /// Log lines about unresolved denied opens.
    pub unresolved_log: LogBudget,
}

/// Where an event's volume fields come from.
struct Target {
    pod_uid: String,
    volume_type: crate::volumes::VolumeType,
    volume_name: String,
    mount_path: String,
    key: Option<String>,
}

impl From<VolumePath> for Target {
    fn from(p: VolumePath) -> Self {
        Self {
            pod_uid: p.pod_uid,
            volume_type: p.volume_type,
            volume_name: p.volume_name,
            mount_path: p.mount_path.to_string_lossy().into_owned(),
            key: p.key,
        }
    }
}

/// The kubelet volume an event's absolute path names, by its parts.
fn kubelet_path(ev: &KernelEvent) -> Option<VolumePath> {
    ev.path
        .as_deref()
        .filter(|p| p.is_absolute())
        .and_then(parse_volume_path)
}

impl Enricher {
    /// Handles one raw ring-buffer record.
    pub fn handle_record(&mut self, record: &[u8]) {
        bump(&self.stats.received);
        match decode_event(record) {
            Ok(ev) => self.handle(&ev),
            Err(e) => {
                bump(&self.stats.decode_errors);
                tracing::debug!("dropping undecodable record: {e}");
            }
        }
    }

    /// What a denied open named: by the live process or its mount namespace,
    /// else by the reader container's volume mounts.
    fn resolve_denied(&self, ev: &KernelEvent) -> denied::Resolved {
        match denied::resolve(ev, &self.registry) {
            denied::Resolved::Unresolved => self
                .resolve_by_spec(ev)
                .unwrap_or(denied::Resolved::Unresolved),
            known => known,
        }
    }

    /// Maps a denied path through the volume mounts of the reader's container.
    fn resolve_by_spec(&self, ev: &KernelEvent) -> Option<denied::Resolved> {
        let path = ev.path.as_deref()?;
        let Resolution::Found(reader) = self.cgroups.resolve(ev.cgroup_id, ev.cgroup_v1_id) else {
            return None;
        };
        let pod_uid = reader.pod_uid.as_deref()?;
        let pod = self.pods.as_deref()?.get(pod_uid)?;
        let container = pod.container_by_id(reader.container_id.as_deref()?)?;
        Some(denied::resolve_by_spec(
            path,
            pod_uid,
            container,
            &self.registry,
        ))
    }

    fn target(&mut self, ev: &KernelEvent) -> Option<Target> {
        match ev.kind {
            EventKind::VolumeOpen => {
                let (id, _) = ev.volume?;
                let Some(v) = self.registry.get(id) else {
                    bump(&self.stats.unknown_volume);
                    return None;
                };
                let key = ev
                    .file
                    .and_then(|f| v.files.get(&f.ino).cloned())
                    .or_else(|| ev.name.clone());
                Some(Target {
                    pod_uid: v.pod_uid.clone(),
                    volume_type: v.volume_type,
                    volume_name: v.name.clone(),
                    mount_path: v.mount_path.to_string_lossy().into_owned(),
                    key,
                })
            }
            EventKind::Denied => match self.resolve_denied(ev) {
                denied::Resolved::Volume(v, key) => Some(Target {
                    pod_uid: v.pod_uid.clone(),
                    volume_type: v.volume_type,
                    volume_name: v.name.clone(),
                    mount_path: v.mount_path.to_string_lossy().into_owned(),
                    key,
                }),
                // A kubelet path names its volume even when nothing else does.
                _ if kubelet_path(ev).is_some() => kubelet_path(ev).map(Target::from),
                denied::Resolved::NotAVolumeFile => {
                    bump(&self.stats.not_volume);
                    None
                }
                denied::Resolved::Unresolved => {
                    bump(&self.stats.denied_unresolved);
                    if self.unresolved_log.take() {
                        tracing::warn!(
                            pid = ev.tgid,
                            command = %ev.comm,
                            path = %ev.path.as_deref().unwrap_or(Path::new("")).display(),
                            "denied open not resolved: its process, mount namespace and container spec are gone; counted in kernel_monitor_events_dropped{{reason=\"denied_unresolved\"}}"
                        );
                    }
                    None
                }
            },
            EventKind::VolumePathFailed => {
                let target = kubelet_path(ev).map(Target::from);
                if target.is_none() {
                    bump(&self.stats.not_volume);
                }
                target
            }
        }
    }

    fn is_kubelet(&self, ev: &KernelEvent) -> bool {
        ev.mnt_ns == self.host_mnt_ns && self.kubelet_names.contains(&ev.comm)
    }

    /// Builds and emits the event for a decoded record.
    pub fn handle(&mut self, ev: &KernelEvent) {
        let Some(t) = self.target(ev) else { return };
        let kubelet = self.is_kubelet(ev);
        if kubelet && self.kubelet_writes == KubeletWrites::Drop {
            bump(&self.stats.kubelet_dropped);
            return;
        }
        let access = if ev.kind == EventKind::VolumeOpen {
            access_from_fmode(ev.fmode)
        } else {
            access_from_flags(ev.open_flags)
        };
        let reader = match self.cgroups.resolve(ev.cgroup_id, ev.cgroup_v1_id) {
            Resolution::Found(info) => {
                self.correlation.ops.bump(CorrelationOp::CgroupLookup);
                Some(info)
            }
            Resolution::Unknown => {
                self.correlation.ops.bump(CorrelationOp::CgroupLookupMiss);
                None
            }
        };
        let pods = self.pods.as_deref();
        let owner = pods.and_then(|p| p.get(&t.pod_uid));
        let source = match (&owner, &t.key) {
            (Some(pod), Some(key)) => pod.source_of(&t.volume_name, key),
            _ => None,
        };
        let reader_pod_uid = reader.as_ref().and_then(|r| r.pod_uid.clone());
        let container = reader
            .as_ref()
            .and_then(|r| r.container_id.clone())
            .map(|id| {
                // Usually the reader is the volume's own pod: reuse that lookup.
                let reader_pod = match (&owner, reader_pod_uid.as_deref()) {
                    (Some(o), Some(u)) if &*o.uid == u => Some(Arc::clone(o)),
                    (_, Some(u)) => pods.and_then(|p| p.get(u)),
                    _ => None,
                };
                let meta = reader_pod
                    .as_ref()
                    .and_then(|p| p.container_by_id(&id).cloned());
                ContainerRef {
                    name: meta.as_ref().map(|m| m.name.to_string()),
                    image: meta.map(|m| m.image.to_string()),
                    id,
                }
            });
        let event = AccessEvent {
            event_type: if kubelet {
                KUBELET_WRITE
            } else {
                t.volume_type.event_type()
            }
            .to_string(),
            timestamp: self.clock.rfc3339(ev.ts_ns),
            config_name: Some(
                source
                    .as_ref()
                    .and_then(|s| s.name.as_deref().map(str::to_string))
                    .unwrap_or_else(|| t.volume_name.clone()),
            ),
            pod_uid: Some(t.pod_uid),
            namespace: owner.as_ref().map(|p| p.namespace.to_string()),
            pod_name: owner.as_ref().map(|p| p.name.to_string()),
            volume_name: Some(t.volume_name),
            volume_type: Some(t.volume_type.as_str().to_string()),
            key: t.key,
            path: ev
                .path
                .as_deref()
                .map(|p: &Path| p.to_string_lossy().into_owned()),
            mount_path: Some(t.mount_path),
            access: access.to_string(),
            result: result_name(ev.ret),
            syscall: ev.syscall.name().to_string(),
            process: ProcessInfo {
                pid: ev.tgid,
                tid: ev.tid,
                command: ev.comm.clone(),
                uid: ev.uid,
                gid: ev.gid,
                cgroup_id: ev.cgroup_id,
                cgroup_v1_id: ev.cgroup_v1_id,
                mnt_ns: ev.mnt_ns,
                cgroup_path: reader.as_ref().map(|r| r.path.clone()),
            },
            container,
            reader_pod_uid,
            workload: owner.as_ref().and_then(|p| p.workload.clone()),
            service_account: owner
                .as_ref()
                .and_then(|p| p.service_account.as_deref().map(str::to_string)),
            labels: owner
                .iter()
                .flat_map(|p| p.labels.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account_token: source
                .as_ref()
                .is_some_and(|s| s.kind == SourceKind::ServiceAccountToken),
            source,
        };
        self.metrics.record(&event, WallClock::elapsed_ms(ev.ts_ns));
        let event = Arc::new(event);
        for output in &self.outputs {
            output.offer(&event);
        }
        bump(&self.stats.emitted);
    }
}

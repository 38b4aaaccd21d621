//! Enrichment: turns decoded kernel events into [`AccessEvent`]s.
//!
//! Runs on the ring-buffer reader thread. Every record ends in exactly one
//! place: emitted, or counted in [`UserStats`] with the reason it was not.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
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
use crate::pods::{PodStore, SourceKind};
use crate::volumes::{parse_volume_path, VolumeRegistry};

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
    /// Events handed to the output.
    pub emitted: AtomicU64,
    /// Events lost because the output queue was full.
    pub shed: AtomicU64,
    /// Records that did not decode.
    pub decode_errors: AtomicU64,
    /// Matched opens whose volume vanished before the record was read.
    pub unknown_volume: AtomicU64,
    /// Failed opens (denied, or on a volume-like path) that named no watched volume file.
    pub not_volume: AtomicU64,
    /// Kubelet accesses dropped by configuration.
    pub kubelet_dropped: AtomicU64,
}

/// A second event consumer (OTLP logs) with its own bounded queue.
#[derive(Debug)]
pub struct ExtraSink {
    pub queue: SyncSender<AccessEvent>,
    /// Counts the events the full queue refused.
    pub shed: Arc<crate::metrics::EventLogStats>,
}

/// A snapshot of [`UserStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UserStatsSnapshot {
    pub received: u64,
    pub emitted: u64,
    pub shed: u64,
    pub decode_errors: u64,
    pub unknown_volume: u64,
    pub not_volume: u64,
    pub kubelet_dropped: u64,
}

impl UserStats {
    pub fn snapshot(&self) -> UserStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UserStatsSnapshot {
            received: g(&self.received),
            emitted: g(&self.emitted),
            shed: g(&self.shed),
            decode_errors: g(&self.decode_errors),
            unknown_volume: g(&self.unknown_volume),
            not_volume: g(&self.not_volume),
            kubelet_dropped: g(&self.kubelet_dropped),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
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
    pub sink: SyncSender<AccessEvent>,
    /// cgroup id -> pod and container of the reading process.
    pub cgroups: Arc<CgroupResolver>,
    /// Pod metadata; `None` in standalone mode.
    pub pods: Option<Arc<PodStore>>,
    /// Per-access metrics.
    pub metrics: AccessMetrics,
    /// Correlation operation counts.
    pub correlation: Arc<CorrelationMaps>,
    /// The OTLP log output, when on.
    pub logs: Option<ExtraSink>,
}

/// Where an event's volume fields come from.
struct Target {
    pod_uid: String,
    volume_type: crate::volumes::VolumeType,
    volume_name: String,
    mount_path: String,
    key: Option<String>,
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

    fn target(&self, ev: &KernelEvent) -> Option<Target> {
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
            EventKind::VolumePathFailed | EventKind::Denied => {
                let by_object = (ev.kind == EventKind::Denied)
                    .then(|| denied::resolve(ev, &self.registry))
                    .flatten();
                if let Some((v, key)) = by_object {
                    return Some(Target {
                        pod_uid: v.pod_uid.clone(),
                        volume_type: v.volume_type,
                        volume_name: v.name.clone(),
                        mount_path: v.mount_path.to_string_lossy().into_owned(),
                        key: Some(key),
                    });
                }
                let parsed = ev
                    .path
                    .as_deref()
                    .filter(|p| p.is_absolute())
                    .and_then(parse_volume_path);
                let Some(p) = parsed else {
                    bump(&self.stats.not_volume);
                    return None;
                };
                Some(Target {
                    pod_uid: p.pod_uid,
                    volume_type: p.volume_type,
                    volume_name: p.volume_name,
                    mount_path: p.mount_path.to_string_lossy().into_owned(),
                    key: p.key,
                })
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
        if let Some(logs) = &self.logs {
            if logs.queue.try_send(event.clone()).is_err() {
                logs.shed.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
        match self.sink.try_send(event) {
            Ok(()) => bump(&self.stats.emitted),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => bump(&self.stats.shed),
        }
    }
}

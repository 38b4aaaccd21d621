//! Enrichment: a function from a decoded kernel event to an
//! [`AccessEvent`], or to a counted reason it was dropped.
//!
//! Runs on the ring-buffer reader thread. Every record ends in exactly one
//! place: returned, or counted in [`UserStats`] with the reason it was not.

use std::path::Path;
use std::sync::Arc;

use super::cgroup::{CgroupInfo, CgroupResolver, Resolution};
use super::correlation::{CorrelationMaps, CorrelationOp};
use super::denied;
use super::pods::{PodMeta, PodMetadata};
use super::signals;
use super::volumes::{parse_volume_path, revision_of, Volume, VolumePath, VolumeRegistry};
use crate::kernel::clock::WallClock;
use crate::kernel::decode::{decode_event, EventKind, KernelEvent};
use crate::model::event::{
    access_from_flags, access_from_fmode, result_name, AccessEvent, ContainerRef, ProcessInfo,
    Repeats, KUBELET_WRITE,
};
use crate::model::pod::SourceKind;
use crate::model::settings::KubeletWrites;
use crate::model::stats::{bump, UserStats};
use crate::model::volume::VolumeType;

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
    /// cgroup id -> pod and container of the reading process.
    pub cgroups: Arc<CgroupResolver>,
    /// Pod metadata (none in standalone mode).
    pub pods: Arc<dyn PodMetadata>,
    /// Correlation operation counts.
    pub correlation: Arc<CorrelationMaps>,
    /// Log lines about unresolved denied opens.
    pub unresolved_log: LogBudget,
}

/// Where an event's volume fields come from.
struct Target {
    pod_uid: String,
    volume_type: VolumeType,
    volume_name: String,
    mount_path: String,
    key: Option<String>,
    revision: Option<String>,
}

impl Target {
    /// A watched volume's fields, with the key of the accessed file.
    fn of(v: &Volume, key: Option<String>) -> Self {
        Self {
            pod_uid: v.pod_uid.clone(),
            volume_type: v.volume_type,
            volume_name: v.name.clone(),
            mount_path: v.mount_path.to_string_lossy().into_owned(),
            key,
            revision: None,
        }
    }
}

impl From<VolumePath> for Target {
    fn from(p: VolumePath) -> Self {
        Self {
            pod_uid: p.pod_uid,
            volume_type: p.volume_type,
            volume_name: p.volume_name,
            mount_path: p.mount_path.to_string_lossy().into_owned(),
            key: p.key,
            revision: None,
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
    /// Decodes and enriches one raw ring-buffer record, with the
    /// CLOCK_MONOTONIC time of its syscall in ns; `None` when it was dropped
    /// (and counted in [`UserStats`] with the reason).
    pub fn handle_record(&mut self, record: &[u8]) -> Option<(AccessEvent, u64)> {
        bump(&self.stats.received);
        match decode_event(record) {
            Ok(ev) => self.handle(&ev).map(|event| (event, ev.ts_ns)),
            Err(e) => {
                bump(&self.stats.decode_errors);
                tracing::debug!("dropping undecodable record: {e}");
                None
            }
        }
    }

    /// The access event for a decoded record; `None` when it is dropped
    /// (and counted in [`UserStats`] with the reason).
    pub fn handle(&mut self, ev: &KernelEvent) -> Option<AccessEvent> {
        let t = self.target(ev)?;
        let kubelet = self.is_kubelet(ev);
        if kubelet && self.kubelet_writes == KubeletWrites::Drop {
            bump(&self.stats.kubelet_dropped);
            return None;
        }
        let reader = self.reader(ev);
        let owner = self.pods.pod(&t.pod_uid);
        let source = match (&owner, &t.key) {
            (Some(pod), Some(key)) => pod.source_of(&t.volume_name, key),
            _ => None,
        };
        let reader_pod = self.reader_pod(reader.as_ref(), owner.as_ref());
        let container = self.container(reader.as_ref(), reader_pod.as_ref());
        let foreign_read = if kubelet {
            None
        } else {
            signals::foreign(&t.pod_uid, reader.as_ref(), container.as_ref(), &*self.pods)
        };
        let event_type = if kubelet {
            KUBELET_WRITE
        } else {
            t.volume_type.event_type()
        };
        Some(AccessEvent {
            event_type: event_type.to_string(),
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
            volume_type: Some(t.volume_type),
            key: t.key,
            revision: t.revision,
            path: ev
                .path
                .as_deref()
                .map(|p: &Path| p.to_string_lossy().into_owned()),
            mount_path: Some(t.mount_path),
            access: access_of(ev).to_string(),
            result: result_name(ev.ret),
            syscall: ev.syscall.name().to_string(),
            process: process_info(ev, reader.as_ref()),
            container,
            reader_pod_uid: reader.as_ref().and_then(|r| r.pod_uid.clone()),
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
            session: signals::session(ev.session, reader_pod.as_deref()),
            foreign_read,
            anomaly: None,
            repeats: ev.repeats.map(|r| Repeats {
                count: r.count,
                since: self.clock.rfc3339(r.since_ns),
            }),
        })
    }

    /// The reading process's cgroup, counted as a hit or a miss.
    fn reader(&self, ev: &KernelEvent) -> Option<Arc<CgroupInfo>> {
        match self.cgroups.resolve(ev.cgroup_id, ev.cgroup_v1_id) {
            Resolution::Found(info) => {
                self.correlation.ops.bump(CorrelationOp::CgroupLookup);
                Some(info)
            }
            Resolution::Unknown => {
                let gone = ev
                    .cgroup_name
                    .as_deref()
                    .and_then(|name| self.cgroups.resolve_gone(ev.cgroup_parent_id, name));
                let op = match gone {
                    Some(_) => CorrelationOp::CgroupLookupGone,
                    None => CorrelationOp::CgroupLookupMiss,
                };
                self.correlation.ops.bump(op);
                gone
            }
        }
    }

    /// The reader's pod, when its cgroup names one whose metadata is known.
    fn reader_pod(
        &self,
        reader: Option<&Arc<CgroupInfo>>,
        owner: Option<&Arc<PodMeta>>,
    ) -> Option<Arc<PodMeta>> {
        // Usually the reader is the volume's own pod: reuse that lookup.
        match (owner, reader?.pod_uid.as_deref()) {
            (Some(o), Some(u)) if &*o.uid == u => Some(Arc::clone(o)),
            (_, Some(u)) => self.pods.pod(u),
            _ => None,
        }
    }

    /// The reader's container, named from its pod's spec when known.
    fn container(
        &self,
        reader: Option<&Arc<CgroupInfo>>,
        reader_pod: Option<&Arc<PodMeta>>,
    ) -> Option<ContainerRef> {
        let id = reader?.container_id.clone()?;
        let meta = reader_pod.and_then(|p| p.container_by_id(&id).cloned());
        Some(ContainerRef {
            name: meta.as_ref().map(|m| m.name.to_string()),
            image: meta.map(|m| m.image.to_string()),
            id,
        })
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
        let reader = match self.cgroups.resolve(ev.cgroup_id, ev.cgroup_v1_id) {
            Resolution::Found(reader) => reader,
            Resolution::Unknown => self
                .cgroups
                .resolve_gone(ev.cgroup_parent_id, ev.cgroup_name.as_deref()?)?,
        };
        let pod_uid = reader.pod_uid.as_deref()?;
        let pod = self.pods.pod(pod_uid)?;
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
                let file = ev.file.and_then(|f| v.files.get(&f.ino));
                let key = file.map(|f| f.key.clone()).or_else(|| ev.name.clone());
                let mut target = Target::of(&v, key);
                target.revision = match file {
                    Some(f) => f.revision.as_deref().map(str::to_string),
                    // Not indexed yet: a file of a revision the kubelet has
                    // just swapped in, which the next scan will index.
                    None if v.revision.is_some() => {
                        revision_of(&v.mount_path).map(|r| r.to_string())
                    }
                    None => None,
                };
                Some(target)
            }
            EventKind::Denied => match self.resolve_denied(ev) {
                denied::Resolved::Volume(v, key) => Some(Target::of(&v, key)),
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
}

/// Read, write or both: from the file's mode when it was opened, else from the open flags.
fn access_of(ev: &KernelEvent) -> &'static str {
    if ev.kind == EventKind::VolumeOpen {
        access_from_fmode(ev.fmode)
    } else {
        access_from_flags(ev.open_flags)
    }
}

/// The process that made the access.
fn process_info(ev: &KernelEvent, reader: Option<&Arc<CgroupInfo>>) -> ProcessInfo {
    ProcessInfo {
        pid: ev.tgid,
        tid: ev.tid,
        command: ev.comm.clone(),
        uid: ev.uid,
        gid: ev.gid,
        cgroup_id: ev.cgroup_id,
        cgroup_v1_id: ev.cgroup_v1_id,
        mnt_ns: ev.mnt_ns,
        cgroup_path: reader.map(|r| r.path.clone()),
    }
}

//! Per Secret and ConfigMap on this node: the pods and workloads that mount
//! it, those that read it and which keys (its blast radius), its mounts with
//! keys never read and its stale readers. Objects are known from the pods'
//! specs, so there are none in standalone mode.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answers::{EvidenceStatus, UnreadMount};
use super::ledger::{FileKey, Ledger};
use super::rotation::RotatedVolume;
use crate::enrich::pods::{PodMeta, PodMetadata};
use crate::enrich::volumes::Volume;
use crate::model::pod::{SourceKind, Workload};

/// A Secret or ConfigMap: (namespace, kind, name).
pub type ObjectId = (String, SourceKind, String);

/// One Secret or ConfigMap on this node, counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ObjectUsage {
    pub namespace: String,
    /// `Secret` or `ConfigMap`.
    pub kind: SourceKind,
    pub name: String,
    /// Pods that mount any of its keys.
    pub mounting_pods: u64,
    /// Pods that read any of its keys since their volume is watched.
    pub reading_pods: u64,
    /// Mounts with keys never read, with complete evidence.
    pub unread_mounts: u64,
    /// Readers still running on one of its keys as it was before a rotation.
    pub stale_readers: u64,
}

/// One pod's mount of the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ObjectMount {
    pub pod_uid: String,
    pub pod_name: String,
    pub workload: Option<Workload>,
    /// The pod's volume name.
    pub volume: String,
    /// The object's keys the volume shows (the object's key names).
    pub keys_mounted: Vec<String>,
    /// Of those, the keys read since the volume is watched.
    pub keys_read: Vec<String>,
    /// Containers that read them (name; `host` for a host process).
    pub reading_containers: Vec<String>,
}

/// `GET /v1/usage/objects/{namespace}/{kind}/{name}`: who on this node
/// would be touched by a change of the object, and who uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlastRadius {
    #[serde(flatten)]
    pub usage: ObjectUsage,
    /// Workloads whose pods mount it (a bare pod is its own workload, kind `Pod`).
    pub mounting_workloads: Vec<Workload>,
    /// Workloads whose pods read it.
    pub reading_workloads: Vec<Workload>,
    /// Every mount of it, by pod and volume.
    pub mounts: Vec<ObjectMount>,
}

/// Every Secret and ConfigMap mounted on this node, with its mounts.
pub fn blast_radii(
    ledger: &Ledger,
    volumes: &[Arc<Volume>],
    pods: &dyn PodMetadata,
    unread: &[UnreadMount],
    rotated: &[RotatedVolume],
) -> Vec<BlastRadius> {
    let mut by_object: BTreeMap<ObjectId, Vec<ObjectMount>> = BTreeMap::new();
    let mut counts: BTreeMap<ObjectId, (u64, u64)> = BTreeMap::new();
    for v in volumes {
        let Some(pod) = pods.pod(&v.pod_uid) else {
            continue;
        };
        for (id, mount) in mounts_of(ledger, v, &pod) {
            let c = counts.entry(id.clone()).or_default();
            c.0 += u64::from(is_unread(unread, v, &id, &pod));
            c.1 += stale_of(rotated, v, &id, &pod);
            by_object.entry(id).or_default().push(mount);
        }
    }
    by_object
        .into_iter()
        .map(|(id, mounts)| {
            let (unread_mounts, stale_readers) = counts.get(&id).copied().unwrap_or_default();
            radius(id, mounts, unread_mounts, stale_readers)
        })
        .collect()
}

fn radius(id: ObjectId, mounts: Vec<ObjectMount>, unread: u64, stale: u64) -> BlastRadius {
    let pods = |read: bool| {
        mounts
            .iter()
            .filter(|m| !read || !m.keys_read.is_empty())
            .map(|m| m.pod_uid.as_str())
            .collect::<BTreeSet<_>>()
            .len() as u64
    };
    let workloads = |read: bool| {
        let set: BTreeSet<(String, String)> = mounts
            .iter()
            .filter(|m| !read || !m.keys_read.is_empty())
            .map(|m| match &m.workload {
                Some(w) => (w.kind.to_string(), w.name.to_string()),
                None => ("Pod".to_string(), m.pod_name.clone()),
            })
            .collect();
        set.into_iter()
            .map(|(kind, name)| Workload {
                kind: kind.into(),
                name: name.into(),
            })
            .collect::<Vec<_>>()
    };
    BlastRadius {
        usage: ObjectUsage {
            mounting_pods: pods(false),
            reading_pods: pods(true),
            unread_mounts: unread,
            stale_readers: stale,
            namespace: id.0,
            kind: id.1,
            name: id.2,
        },
        mounting_workloads: workloads(false),
        reading_workloads: workloads(true),
        mounts,
    }
}

/// The objects volume `v` shows, one mount each.
fn mounts_of(ledger: &Ledger, v: &Volume, pod: &PodMeta) -> BTreeMap<ObjectId, ObjectMount> {
    let mut out: BTreeMap<ObjectId, ObjectMount> = BTreeMap::new();
    for key in v.keys().collect::<BTreeSet<_>>() {
        let Some((id, object_key)) = object_of(pod, &v.name, key) else {
            continue;
        };
        let mount = out.entry(id).or_insert_with(|| ObjectMount {
            pod_uid: v.pod_uid.clone(),
            pod_name: pod.name.to_string(),
            workload: pod.workload.clone(),
            volume: v.name.clone(),
            keys_mounted: Vec::new(),
            keys_read: Vec::new(),
            reading_containers: Vec::new(),
        });
        mount.keys_mounted.push(object_key.clone());
        let file = FileKey {
            pod_uid: v.pod_uid.clone(),
            volume: v.name.clone(),
            key: key.clone(),
        };
        let Some(usage) = ledger.usage(&file).filter(|u| u.reads > 0) else {
            continue;
        };
        mount.keys_read.push(object_key);
        for r in &usage.readers {
            let c = r.container.clone().unwrap_or_else(|| "host".to_string());
            if !mount.reading_containers.contains(&c) {
                mount.reading_containers.push(c);
            }
        }
    }
    out
}

/// Whether volume `v` has keys of object `id` listed never read (complete evidence only).
fn is_unread(unread: &[UnreadMount], v: &Volume, id: &ObjectId, pod: &PodMeta) -> bool {
    unread
        .iter()
        .filter(|m| {
            m.mount.pod_uid == v.pod_uid
                && m.mount.volume == v.name
                && m.evidence.status == EvidenceStatus::Complete
        })
        .flat_map(|m| &m.keys_never_read)
        .any(|k| object_of(pod, &v.name, &k.key).is_some_and(|(o, _)| &o == id))
}

/// Stale readers of object `id`'s keys in volume `v`.
fn stale_of(rotated: &[RotatedVolume], v: &Volume, id: &ObjectId, pod: &PodMeta) -> u64 {
    rotated
        .iter()
        .filter(|r| r.mount.pod_uid == v.pod_uid && r.mount.volume == v.name)
        .flat_map(|r| &r.readers)
        .filter(|r| r.stale && object_of(pod, &v.name, &r.key).is_some_and(|(o, _)| &o == id))
        .count() as u64
}

/// The Secret or ConfigMap behind file `key` of volume `volume`, and its key in the object.
fn object_of(pod: &PodMeta, volume: &str, key: &str) -> Option<(ObjectId, String)> {
    let source = pod.source_of(volume, key)?;
    if !matches!(source.kind, SourceKind::Secret | SourceKind::ConfigMap) {
        return None;
    }
    let object_key = source.key.as_deref().unwrap_or(key).to_string();
    let id = (
        pod.namespace.to_string(),
        source.kind,
        source.name?.to_string(),
    );
    Some((id, object_key))
}

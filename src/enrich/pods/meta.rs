//! What enrichment keeps of a pod, in compact form.

use std::sync::Arc;

use serde::Serialize;

use crate::model::pod::{FileSource, Name, SourceKind, Workload};

/// A container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerMeta {
    pub name: Name,
    pub image: Name,
    /// Runtime container id (64 hex digits, without the `containerd://` scheme), once running.
    pub id: Option<Box<str>>,
    /// Unix seconds: when the running container started (its status), once running.
    #[serde(skip)]
    pub started_at: Option<i64>,
    /// Where the container mounts the pod's watched volumes.
    pub mounts: Box<[VolumeMountMeta]>,
}

/// A container's mount of a watched volume (`spec.containers[].volumeMounts[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeMountMeta {
    /// Path inside the container.
    pub path: Box<str>,
    /// The pod's volume name.
    pub volume: Name,
    /// Path inside the volume mounted there (`subPath`); `None`: the whole volume.
    pub sub_path: Option<Box<str>>,
}

/// One source of a projected volume (or the single source of a plain one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSource {
    pub kind: SourceKind,
    /// Object name (Secret/ConfigMap/ClusterTrustBundle); `None` for tokens and downward API.
    pub name: Option<Name>,
    /// `(key in the object, path in the volume)`; empty: every key under its own name.
    pub items: Box<[(Name, Name)]>,
}

impl VolumeSource {
    /// The object key behind volume path `key`, if this source projects it.
    fn key_for(&self, key: &str) -> Option<&Name> {
        self.items
            .iter()
            .find(|(_, path)| path.trim_start_matches("./") == key)
            .map(|(k, _)| k)
    }
}

/// What enrichment needs to know about a pod, in compact form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: Name,
    pub name: Box<str>,
    pub namespace: Name,
    /// The configured subset of the pod's labels, sorted by key.
    pub labels: Box<[(Name, Name)]>,
    pub workload: Option<Workload>,
    pub service_account: Option<Name>,
    pub containers: Box<[ContainerMeta]>,
    /// `spec.shareProcessNamespace`: the containers share one pid namespace.
    pub share_process_namespace: bool,
    /// Volume name and its sources (one for Secret/ConfigMap/downward API volumes).
    pub volumes: Box<[(Name, Box<[VolumeSource]>)]>,
}

/// Which labels to keep: exact keys, or prefixes ending in `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelFilter(pub Vec<String>);

impl LabelFilter {
    pub fn keeps(&self, key: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => p == key,
        })
    }
}

impl PodMeta {
    /// The container with this runtime id.
    pub fn container_by_id(&self, id: &str) -> Option<&ContainerMeta> {
        self.containers.iter().find(|c| c.id.as_deref() == Some(id))
    }

    /// The value of label `key`, if kept.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// The object behind file `key` of volume `volume`.
    ///
    /// Sources with `items` are matched by path; a source without items
    /// projects every key of its object under its own name, so the key goes
    /// to the only such source (ambiguous with several: the first, as
    /// Kubernetes rejects colliding paths only at runtime).
    pub fn source_of(&self, volume: &str, key: &str) -> Option<FileSource> {
        let (_, sources) = self.volumes.iter().find(|(n, _)| &**n == volume)?;
        if let Some((s, k)) = sources.iter().find_map(|s| s.key_for(key).map(|k| (s, k))) {
            return Some(FileSource {
                kind: s.kind,
                name: s.name.clone(),
                key: (s.kind != SourceKind::ServiceAccountToken).then(|| Arc::clone(k)),
            });
        }
        let s = sources.iter().find(|s| {
            s.items.is_empty() && matches!(s.kind, SourceKind::Secret | SourceKind::ConfigMap)
        })?;
        Some(FileSource {
            kind: s.kind,
            name: s.name.clone(),
            key: Some(Arc::from(key)),
        })
    }
}

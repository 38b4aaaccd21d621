//! Correlation maps that sibling collectors query: mount information keyed by
//! the blake3 hash of a volume's host path (`add_mount_info(path_hash, MountInfo)`).

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::volumes::Volume;

/// A Secret/ConfigMap mount on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    /// Object name when known, else the pod's volume name.
    pub name: String,
    /// Pod namespace; `None` until pod metadata is known.
    pub namespace: Option<String>,
    /// Host path of the volume directory.
    pub mount_path: String,
    /// Whether the volume is a Secret volume.
    pub is_secret: bool,
    /// Kubelet volume plugin (`secret`, `configmap`, `projected`, `downward-api`).
    pub volume_type: String,
    /// UID of the pod that mounts the volume.
    pub pod_uid: String,
}

impl MountInfo {
    /// Mount information of a discovered volume.
    pub fn from_volume(volume: &Volume) -> Self {
        Self {
            name: volume.name.clone(),
            namespace: None,
            mount_path: volume.mount_path.to_string_lossy().into_owned(),
            is_secret: volume.volume_type == crate::volumes::VolumeType::Secret,
            volume_type: volume.volume_type.as_str().to_string(),
            pod_uid: volume.pod_uid.clone(),
        }
    }
}

/// Shared correlation state.
#[derive(Debug, Default)]
pub struct CorrelationMaps {
    mounts: RwLock<HashMap<String, MountInfo>>,
}

impl CorrelationMaps {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a mount under the blake3 hash of its path.
    pub fn add_mount_info(&self, path_hash: &str, info: MountInfo) {
        self.mounts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path_hash.to_string(), info);
    }

    /// Forgets a mount.
    pub fn remove_mount_info(&self, path_hash: &str) -> Option<MountInfo> {
        self.mounts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path_hash)
    }

    /// The mount recorded under `path_hash`.
    pub fn mount_info(&self, path_hash: &str) -> Option<MountInfo> {
        self.mounts.read().ok()?.get(path_hash).cloned()
    }

    /// Every recorded mount with its hash.
    pub fn mounts(&self) -> Vec<(String, MountInfo)> {
        let Ok(m) = self.mounts.read() else {
            return Vec::new();
        };
        let mut all: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.1.mount_path.cmp(&b.1.mount_path));
        all
    }
}

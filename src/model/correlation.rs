//! Correlation records: what sibling collectors ask for and the kernel
//! correlation maps hold (the pod of a cgroup, the container of a process).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The pod a cgroup belongs to, as kept in the `pod_info_map` map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PodInfo {
    pub pod_uid: String,
    /// Empty until pod metadata is known.
    pub namespace: String,
    /// Empty until pod metadata is known.
    pub pod_name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// The container of a process, as kept in the `container_pids` map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ContainerPid {
    pub cgroup_id: u64,
    /// Empty when unknown.
    pub container_id: String,
}

/// A Secret/ConfigMap mount on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

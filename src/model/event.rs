//! The JSON access event: one object per line on stdout.
//!
//! A superset of the event of the published design: `event_type`,
//! `timestamp`, `pod_uid`, `namespace`, `config_name`, `mount_path` and
//! `process {pid, command, cgroup_id}` keep their names and meaning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::pod::{FileSource, Workload};
use super::volume::VolumeType;

/// `event_type` of the kubelet's own writes into volume directories.
pub const KUBELET_WRITE: &str = "kubelet_write";

/// The process that made an access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id (thread-group id) in the initial pid namespace.
    pub pid: u32,
    /// Thread id in the initial pid namespace.
    pub tid: u32,
    /// Command name (the kernel's `comm`, at most 15 bytes).
    pub command: String,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id (inode of the cgroup2 directory).
    pub cgroup_id: u64,
    /// Kernfs id of the process's cgroup in the cgroup v1 hierarchy used as fallback; 0 when none.
    pub cgroup_v1_id: u64,
    /// Inode number of the process's mount namespace.
    pub mnt_ns: u32,
    /// The process's cgroup path (relative to the cgroup mount); null when it could not be resolved.
    pub cgroup_path: Option<String>,
}

/// The container of the process that made an access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    /// Runtime container id (64 hex digits), from the process's cgroup.
    pub id: String,
    /// Container name from the pod spec; null until pod metadata is known.
    pub name: Option<String>,
    /// Image from the pod spec; null until pod metadata is known.
    pub image: Option<String>,
}

/// Repeated opens that one summary event stands for (`repeat_window_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeats {
    /// Opens of the same file by the same process (same program, same
    /// access mode) that were counted in the kernel instead of reported one
    /// by one; none of them was reported before.
    pub count: u64,
    /// RFC 3339 UTC: they all happened after this time (the event that
    /// began their window, or the previous summary of the same file and
    /// process). The event's `timestamp` is the latest of them.
    pub since: String,
}

/// One access to a file of a Secret, ConfigMap, projected or downward-API volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEvent {
    /// `secret_access`, `configmap_access`, `projected_access`, `downward_api_access`, or `kubelet_write`.
    pub event_type: String,
    /// RFC 3339 UTC with nanoseconds.
    pub timestamp: String,
    pub pod_uid: Option<String>,
    /// Pod namespace; null until pod metadata is known.
    pub namespace: Option<String>,
    /// Pod name; null until pod metadata is known.
    pub pod_name: Option<String>,
    /// Secret/ConfigMap name when known, else the volume name.
    pub config_name: Option<String>,
    /// The pod's volume name.
    pub volume_name: Option<String>,
    /// `secret`, `configmap`, `projected` or `downward-api`.
    pub volume_type: Option<VolumeType>,
    /// File name inside the volume, without the `..<timestamp>/` part.
    pub key: Option<String>,
    /// The volume revision the opened file belongs to: the kubelet's
    /// `..<timestamp>` directory (Secret, ConfigMap, projected and
    /// downward-API volumes, which the kubelet swaps atomically on an
    /// update); null when the file lives in none or the open failed.
    #[serde(default)]
    pub revision: Option<String>,
    /// Path as the process passed it (null for open_by_handle_at).
    pub path: Option<String>,
    /// Host path of the volume directory.
    pub mount_path: Option<String>,
    /// `read`, `write` or `read_write`.
    pub access: String,
    /// `ok`, or the errno name (`EACCES`, `ENOENT`, ...).
    pub result: String,
    /// The syscall (`openat`, `openat2`, `open`, `creat`, `open_by_handle_at`).
    pub syscall: String,
    pub process: ProcessInfo,
    /// The reading process's container (null for host processes).
    pub container: Option<ContainerRef>,
    /// UID of the pod the reading process belongs to (from its cgroup); null for host processes.
    /// Usually `pod_uid`; different when one pod reads another pod's volume through the host path.
    pub reader_pod_uid: Option<String>,
    /// The workload owning the volume's pod (`Deployment`, `StatefulSet`, ...).
    pub workload: Option<Workload>,
    /// Service account of the volume's pod.
    pub service_account: Option<String>,
    /// The configured subset of the volume's pod's labels.
    pub labels: BTreeMap<String, String>,
    /// The object the file comes from (for projected volumes, the source that produced the key).
    pub source: Option<FileSource>,
    /// True when the file is a projected service-account token.
    pub service_account_token: bool,
    /// Where the opening process stands in its container: `init` (the
    /// container's first process or a descendant of it), `exec` (it, or an
    /// ancestor, entered the container from outside: `kubectl exec`,
    /// `crictl exec`, `nsenter`); null for a host process, or when not
    /// decided (a pod sharing one process namespace among its containers).
    #[serde(default)]
    pub session: Option<String>,
    /// Set when the reader is not in the pod whose volume it opened: a
    /// container of another pod, or a host process other than the kubelet.
    #[serde(default)]
    pub foreign_read: Option<ForeignRead>,
    /// Set when the access is new for its workload on this node: outside
    /// the baseline it learned (see docs/signals.md).
    #[serde(default)]
    pub anomaly: Option<Anomaly>,
    /// Set on a summary of repeated opens: the event stands for `repeats.count`
    /// opens (its `path` is null: they may have used different paths).
    /// Null on an event of one open.
    pub repeats: Option<Repeats>,
}

/// Why an access is unusual.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// `first_seen`: the workload's pods had not made this access on this
    /// node before (container, executable, object, key).
    pub kind: String,
    /// The workload the baseline belongs to: `Kind/name` (a bare pod: `Pod/name`).
    pub workload: String,
    /// RFC 3339: when the workload's learning window ended.
    pub learned_until: String,
}

/// Who read another pod's volume file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignRead {
    /// `pod`: a container of another pod; `host`: a host process that is not the kubelet.
    pub reader: String,
    /// The reading pod (for `pod`).
    pub pod_uid: Option<String>,
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    /// The reading container's name, else its runtime id (for `pod`).
    pub container: Option<String>,
}

impl AccessEvent {
    /// The opens this event stands for: one, or a summary's count.
    pub fn opens(&self) -> u64 {
        self.repeats.as_ref().map_or(1, |r| r.count)
    }
}

const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;

/// Access mode from the file's `FMODE_*` bits.
pub fn access_from_fmode(fmode: u32) -> &'static str {
    match (fmode & FMODE_READ != 0, fmode & FMODE_WRITE != 0) {
        (true, true) => "read_write",
        (false, true) => "write",
        _ => "read",
    }
}

/// Access mode from open flags (`O_ACCMODE`).
pub fn access_from_flags(flags: u32) -> &'static str {
    match flags & libc::O_ACCMODE as u32 {
        f if f == libc::O_WRONLY as u32 => "write",
        f if f == libc::O_RDWR as u32 => "read_write",
        _ => "read",
    }
}

/// `ok` for a non-negative syscall result, else the errno's name.
pub fn result_name(ret: i32) -> String {
    if ret >= 0 {
        "ok".to_string()
    } else {
        format!("{:?}", nix::errno::Errno::from_raw(-ret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_and_result_names() {
        assert_eq!(access_from_fmode(0x1 | 0x4), "read");
        assert_eq!(access_from_fmode(0x2), "write");
        assert_eq!(access_from_fmode(0x3), "read_write");
        assert_eq!(access_from_flags(libc::O_RDONLY as u32), "read");
        assert_eq!(
            access_from_flags((libc::O_WRONLY | libc::O_CREAT) as u32),
            "write"
        );
        assert_eq!(access_from_flags(libc::O_RDWR as u32), "read_write");
        assert_eq!(result_name(3), "ok");
        assert_eq!(result_name(-13), "EACCES");
        assert_eq!(result_name(-2), "ENOENT");
        assert_eq!(result_name(-1), "EPERM");
    }
}

//! Signals decided per event from what enrichment already knows: whether
//! the reader is an exec session (the kernel's `session` of the process),
//! and whether it is foreign to the pod whose volume it opened.
//!
//! Foreign: the reader's cgroup names another pod, or a host process
//! (a known cgroup outside every pod) other than the kubelet, whose writes
//! are `kubelet_write` events and never foreign. A reader whose cgroup is
//! not known yet is not called foreign: nothing says where it runs.
//!
//! Exec session: decided in the kernel by walking the process's parents
//! inside its pid namespace ([`Session`]). Containers of a pod that share
//! one process namespace (`shareProcessNamespace`) all enter the pause
//! container's namespace from outside, so their session is left undecided.

use std::sync::Arc;

use super::cgroup::CgroupInfo;
use super::pods::{PodMeta, PodMetadata};
use crate::kernel::decode::Session;
use crate::model::event::{ContainerRef, ForeignRead};

/// `init`, `exec`, or `None` when not decided.
pub fn session(session: Session, reader_pod: Option<&PodMeta>) -> Option<String> {
    if reader_pod.is_some_and(|p| p.share_process_namespace) {
        return None;
    }
    match session {
        Session::Init => Some("init".into()),
        Session::Exec => Some("exec".into()),
        Session::Unknown => None,
    }
}

/// The foreign reader of pod `owner_uid`'s volume, if the reader is one.
pub fn foreign(
    owner_uid: &str,
    reader: Option<&Arc<CgroupInfo>>,
    container: Option<&ContainerRef>,
    pods: &dyn PodMetadata,
) -> Option<ForeignRead> {
    let reader = reader?;
    match reader.pod_uid.as_deref() {
        Some(uid) if uid == owner_uid => None,
        Some(uid) => {
            let pod = pods.pod(uid);
            Some(ForeignRead {
                reader: "pod".into(),
                pod_uid: Some(uid.to_string()),
                namespace: pod.as_ref().map(|p| p.namespace.to_string()),
                pod_name: pod.as_ref().map(|p| p.name.to_string()),
                container: container.map(|c| c.name.clone().unwrap_or_else(|| c.id.clone())),
            })
        }
        None => Some(ForeignRead {
            reader: "host".into(),
            pod_uid: None,
            namespace: None,
            pod_name: None,
            container: None,
        }),
    }
}

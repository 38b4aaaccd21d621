//! Startup-only reads: keys a container read only in the first
//! `startup_window` after it started, and not since. Such a key is loaded
//! once (an environment built from files, a config parsed at start): a
//! change of it reaches the container only with a restart.
//!
//! The container's start is its status (`state.running.startedAt`) from the
//! API server, so the answer needs pod metadata (none in standalone mode).
//! A container's latest read of a key is the latest over its readers
//! (commands, uids); a read before the container's current start (an
//! earlier run of a restarted container) does not count as startup-only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ledger::{unix, KeyUsage, Ledger};
use crate::enrich::pods::{PodMeta, PodMetadata};
use crate::enrich::volumes::Volume;
use crate::model::pod::{FileSource, Workload};

/// A key one container read only in its startup window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StartupOnlyRead {
    pub pod_uid: String,
    pub namespace: String,
    pub pod_name: String,
    pub workload: Option<Workload>,
    /// The pod's volume name.
    pub volume: String,
    /// Path of the file inside the volume.
    pub key: String,
    pub source: Option<FileSource>,
    /// Container name from the pod spec.
    pub container: String,
    /// Unix seconds: the container's start (its status).
    pub container_started_at: i64,
    /// RFC 3339: the container's latest read of the key.
    pub last_read: String,
}

/// `GET /v1/usage/startup-only`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StartupOnlyReport {
    /// The window after a container's start (`startup_window`).
    pub startup_window_secs: u64,
    pub reads: Vec<StartupOnlyRead>,
}

/// Keys read by a container only within `window` of its start, for
/// containers that started at least `window` ago.
pub fn startup_only(
    ledger: &Ledger,
    volumes: &[Arc<Volume>],
    pods: &dyn PodMetadata,
    window: Duration,
    now: SystemTime,
) -> Vec<StartupOnlyRead> {
    let mut out = Vec::new();
    for v in volumes {
        let Some(pod) = pods.pod(&v.pod_uid) else {
            continue;
        };
        for (file, usage) in ledger.keys_of_volume(&v.pod_uid, &v.name) {
            for (container, last) in latest_by_container(usage) {
                let Some(started) = started_at(&pod, container) else {
                    continue;
                };
                let end = started.saturating_add(window.as_secs() as i64);
                let secs = last.timestamp();
                if unix(now) as i64 >= end && (started..=end).contains(&secs) {
                    out.push(StartupOnlyRead {
                        pod_uid: v.pod_uid.clone(),
                        namespace: pod.namespace.to_string(),
                        pod_name: pod.name.to_string(),
                        workload: pod.workload.clone(),
                        volume: v.name.clone(),
                        key: file.key.clone(),
                        source: pod.source_of(&v.name, &file.key),
                        container: container.to_string(),
                        container_started_at: started,
                        last_read: last.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                    });
                }
            }
        }
    }
    out
}

/// Per container name, its latest read of the key.
fn latest_by_container(usage: &KeyUsage) -> BTreeMap<&str, chrono::DateTime<chrono::Utc>> {
    let mut latest = BTreeMap::new();
    for r in &usage.readers {
        let (Some(container), Ok(t)) = (
            r.container.as_deref(),
            chrono::DateTime::parse_from_rfc3339(&r.last_read),
        ) else {
            continue;
        };
        let t = t.with_timezone(&chrono::Utc);
        latest
            .entry(container)
            .and_modify(|l: &mut chrono::DateTime<chrono::Utc>| *l = (*l).max(t))
            .or_insert(t);
    }
    latest
}

/// Unix seconds: when container `name` of `pod` started.
fn started_at(pod: &PodMeta, name: &str) -> Option<i64> {
    pod.containers.iter().find(|c| &*c.name == name)?.started_at
}

//! Rotations: the kubelet swaps a volume's `..data` to a new `..<timestamp>`
//! directory when its Secret or ConfigMap changes or its token is refreshed.
//! Per reader of the volume's keys, whether its latest open was of the
//! current revision; a reader that last opened an older one and still runs
//! holds content the kubelet has replaced ("stale"), and for how long is
//! known from the rotation that replaced it.
//!
//! A reader is (container, command, uid) as in the ledger; its latest open's
//! revision comes from the event (the directory the opened file lives in).
//! Whether it still runs is whether its latest reading process still exists
//! with the same command (`/proc/<pid>/comm`; the agent shares the host's
//! pid namespace).

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answers::PodVolume;
use super::ledger::{unix, Ledger, Reader, Rotation};
use crate::enrich::pods::{PodMeta, PodMetadata};
use crate::enrich::volumes::Volume;
use crate::model::pod::{FileSource, SourceKind};

/// A reader of a rotated volume's key, and whether it re-opened it since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RotatedReader {
    /// Path of the file inside the volume.
    pub key: String,
    /// The object and key it comes from, when the pod's spec is known.
    pub source: Option<FileSource>,
    /// Container name from the pod spec, else the runtime id; null for a host process.
    pub container: Option<String>,
    pub command: String,
    pub uid: u32,
    /// The process of its latest open (host pid namespace).
    pub pid: u32,
    /// RFC 3339: its latest open.
    pub last_read: String,
    /// The revision its latest open was of.
    pub revision: String,
    /// Its latest open was of the current revision: it re-read after the rotation.
    pub current: bool,
    /// Its latest reading process still runs (same pid and command).
    pub running: bool,
    /// Not current and running: it holds content the kubelet has replaced.
    pub stale: bool,
    /// Unix seconds: the rotation that replaced its revision (null when
    /// the collector did not see it, e.g. while it was down).
    pub stale_since: Option<u64>,
    /// Seconds since `stale_since`, for a stale reader.
    pub stale_secs: Option<u64>,
    /// Why a stale reader matters, when it is a service-account token.
    pub warning: Option<String>,
}

/// A volume the kubelet rotated while the collector watched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RotatedVolume {
    #[serde(flatten)]
    pub mount: PodVolume,
    /// The revision it shows now.
    pub revision: Option<String>,
    /// The rotations seen, oldest first (at most the latest 8).
    pub rotations: Vec<Rotation>,
    /// Every known reader of its keys whose latest open's revision is known.
    pub readers: Vec<RotatedReader>,
}

/// `GET /v1/usage/rotations`: the rotated volumes and their readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RotationReport {
    pub volumes: Vec<RotatedVolume>,
    /// Readers, over all volumes, that are stale.
    pub stale_readers: u64,
}

/// The warning on a stale reader of a service-account token.
pub const TOKEN_WARNING: &str = "holds a service-account token the kubelet has since refreshed: the token it read expires (1 h after issue by default) and its API calls will then fail; re-read the file periodically, as client-go does";

/// The volumes rotated since they are watched, with their readers.
pub fn rotations(
    ledger: &Ledger,
    volumes: &[Arc<Volume>],
    pods: &dyn PodMetadata,
    now: SystemTime,
) -> RotationReport {
    let mut out: Vec<RotatedVolume> = volumes
        .iter()
        .filter_map(|v| rotated(ledger, v, pods.pod(&v.pod_uid).as_deref(), now))
        .collect();
    out.sort_by(|a, b| {
        (&a.mount.pod_uid, &a.mount.volume).cmp(&(&b.mount.pod_uid, &b.mount.volume))
    });
    let stale_readers = out
        .iter()
        .flat_map(|v| &v.readers)
        .filter(|r| r.stale)
        .count() as u64;
    RotationReport {
        volumes: out,
        stale_readers,
    }
}

fn rotated(
    ledger: &Ledger,
    v: &Volume,
    pod: Option<&PodMeta>,
    now: SystemTime,
) -> Option<RotatedVolume> {
    let (rotations, current) = ledger.rotations(&v.pod_uid, &v.name)?;
    if rotations.is_empty() {
        return None;
    }
    let readers = ledger
        .keys_of_volume(&v.pod_uid, &v.name)
        .into_iter()
        .flat_map(|(file, usage)| {
            let source = pod.and_then(|p| p.source_of(&v.name, &file.key));
            usage.readers.iter().filter_map(move |r| {
                let seen = Seen {
                    key: &file.key,
                    source: source.clone(),
                    current,
                    rotations,
                    now,
                };
                seen.reader(r, v)
            })
        })
        .collect();
    Some(RotatedVolume {
        mount: PodVolume::of(v, pod),
        revision: current.map(str::to_string),
        rotations: rotations.to_vec(),
        readers,
    })
}

/// What a reader of one key is compared with.
struct Seen<'a> {
    key: &'a str,
    source: Option<FileSource>,
    current: Option<&'a str>,
    rotations: &'a [Rotation],
    now: SystemTime,
}

impl Seen<'_> {
    /// The reader's standing, when the revision of its latest open is known.
    fn reader(&self, r: &Reader, v: &Volume) -> Option<RotatedReader> {
        let revision = r.revision.clone()?;
        let current = self.current == Some(revision.as_str());
        let running = process_running(r.pid, &r.command);
        let stale = !current && running;
        let stale_since = (!current)
            .then(|| self.rotations.iter().find(|x| x.from == revision))
            .flatten()
            .map(|x| x.at);
        let token = self.source.as_ref().map_or(
            v.name.starts_with("kube-api-access-") && self.key == "token",
            |s| s.kind == SourceKind::ServiceAccountToken,
        );
        Some(RotatedReader {
            key: self.key.to_string(),
            source: self.source.clone(),
            container: r.container.clone(),
            command: r.command.clone(),
            uid: r.uid,
            pid: r.pid,
            last_read: r.last_read.clone(),
            revision,
            current,
            running,
            stale,
            stale_secs: stale_since
                .filter(|_| stale)
                .map(|at| unix(self.now).saturating_sub(at)),
            stale_since,
            warning: (stale && token).then(|| TOKEN_WARNING.to_string()),
        })
    }
}

/// Whether process `pid` still runs `command` (its 16-byte comm).
fn process_running(pid: u32, command: &str) -> bool {
    pid != 0
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim_end_matches('\n') == command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_runs_while_its_pid_has_its_command() {
        let me = std::process::id();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(process_running(me, comm.trim_end()));
        assert!(!process_running(me, "not-this-one"));
        assert!(!process_running(0, comm.trim_end()));
    }
}

//! Answers built from the ledger and the watched volumes: the files of each
//! mounted volume that were never read, with the evidence behind the claim
//! and what to change in the pod spec.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ledger::{FileKey, Gap, Ledger};
use crate::enrich::pods::{PodMeta, PodMetadata};
use crate::enrich::volumes::Volume;
use crate::model::pod::{FileSource, SourceKind, Workload};
use crate::model::volume::VolumeType;

/// Whether the collector saw every access in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceStatus {
    /// Nothing was lost in the window: "never read" is a fact for it.
    Complete,
    /// Accesses were lost in the window: a read may have been missed.
    Unknown,
}

/// How sure a "never read" is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    /// RFC 3339: the window's start. `complete`: the start of the stretch
    /// without losses that ends now (the volume's watch, or the latest
    /// loss); `unknown`: when the collector began to watch the volume.
    pub since: String,
    /// Seconds the window covers (up to now).
    pub window_secs: u64,
    /// `complete`: the collector saw every access in the window, so "never
    /// read" is a fact; `unknown`: accesses were lost in it (`reasons`), so
    /// a read may have been missed.
    pub status: EvidenceStatus,
    /// `unknown`: the loss reasons since the volume is watched (counter
    /// names such as `ring_buffer_full`, or `collector_down`).
    pub reasons: Vec<String>,
}

/// A file of the volume never read in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnreadKey {
    /// Path of the file inside the volume.
    pub key: String,
    /// The object and key it comes from, when the pod's spec is known.
    pub source: Option<FileSource>,
}

/// Which pod's which volume an answer is about (its fields are inlined in
/// the answer's JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PodVolume {
    pub pod_uid: String,
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    pub workload: Option<Workload>,
    /// The pod's volume name.
    pub volume: String,
    pub volume_type: VolumeType,
}

impl PodVolume {
    /// Volume `v` of its pod, named from `pod` when its metadata is known.
    pub fn of(v: &Volume, pod: Option<&PodMeta>) -> Self {
        Self {
            pod_uid: v.pod_uid.clone(),
            namespace: pod.map(|p| p.namespace.to_string()),
            pod_name: pod.map(|p| p.name.to_string()),
            workload: pod.and_then(|p| p.workload.clone()),
            volume: v.name.clone(),
            volume_type: v.volume_type,
        }
    }
}

/// A mounted volume with files never read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnreadMount {
    #[serde(flatten)]
    pub mount: PodVolume,
    /// Files never read in the window.
    pub keys_never_read: Vec<UnreadKey>,
    /// Files read at least once.
    pub keys_read: Vec<String>,
    pub evidence: Evidence,
    /// What to change in the pod spec, when the evidence is complete.
    pub suggestion: Option<String>,
}

/// `GET /v1/usage/unread`: the watched volumes with files never read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnreadReport {
    /// A volume is listed once it has been watched this long (`unused_after`).
    pub unused_after_secs: u64,
    pub mounts: Vec<UnreadMount>,
    /// Times the collector was down (Unix seconds), from its saved state;
    /// the most recent last.
    #[serde(default)]
    pub gaps: Vec<Gap>,
}

/// Volumes watched for at least `unused_after` whose files were not all
/// read, by pod UID and volume name.
pub fn unread(
    ledger: &Ledger,
    volumes: &[std::sync::Arc<Volume>],
    pods: &dyn PodMetadata,
    unused_after: Duration,
    now: SystemTime,
) -> Vec<UnreadMount> {
    let mut out: Vec<UnreadMount> = volumes
        .iter()
        .filter_map(|v| {
            let since = ledger.watched_since(&v.pod_uid, &v.name)?;
            let window = Window {
                since,
                now,
                unused_after,
            };
            (window.length(since) >= unused_after).then_some((v, window))
        })
        .filter_map(|(v, w)| unread_of(ledger, v, pods.pod(&v.pod_uid).as_deref(), w))
        .collect();
    out.sort_by(|a, b| {
        (&a.mount.pod_uid, &a.mount.volume).cmp(&(&b.mount.pod_uid, &b.mount.volume))
    });
    out
}

/// A volume's window: watched since `since`, up to `now`.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: SystemTime,
    now: SystemTime,
    unused_after: Duration,
}

impl Window {
    fn length(&self, from: SystemTime) -> Duration {
        self.now.duration_since(from).unwrap_or_default()
    }

    /// Complete when the stretch since the latest loss (or since the watch
    /// began) is at least `unused_after` long; else unknown, with the
    /// reasons of the losses since the watch began.
    fn evidence(&self, ledger: &Ledger) -> Evidence {
        let clean_since = ledger
            .latest_loss()
            .map_or(self.since, |loss| loss.max(self.since));
        let complete = self.length(clean_since) >= self.unused_after;
        let since = if complete { clean_since } else { self.since };
        Evidence {
            since: rfc3339(since),
            window_secs: self.length(since).as_secs(),
            status: if complete {
                EvidenceStatus::Complete
            } else {
                EvidenceStatus::Unknown
            },
            reasons: if complete {
                Vec::new()
            } else {
                ledger.losses_since(self.since)
            },
        }
    }
}

/// The unread files of one volume, if any.
fn unread_of(
    ledger: &Ledger,
    v: &Volume,
    pod: Option<&PodMeta>,
    window: Window,
) -> Option<UnreadMount> {
    let files: BTreeSet<&String> = v.keys().collect();
    let (read, never): (Vec<&String>, Vec<&String>) = files.into_iter().partition(|k| {
        let id = FileKey {
            pod_uid: v.pod_uid.clone(),
            volume: v.name.clone(),
            key: (*k).clone(),
        };
        ledger.usage(&id).is_some_and(|u| u.reads > 0)
    });
    if never.is_empty() {
        return None;
    }
    let evidence = window.evidence(ledger);
    let keys_never_read: Vec<UnreadKey> = never
        .iter()
        .map(|k| UnreadKey {
            key: (*k).clone(),
            source: pod.and_then(|p| p.source_of(&v.name, k)),
        })
        .collect();
    let keys_read: Vec<String> = read.into_iter().cloned().collect();
    let suggestion = (evidence.status == EvidenceStatus::Complete)
        .then(|| suggest(v, &keys_never_read, &keys_read))
        .flatten();
    Some(UnreadMount {
        mount: PodVolume::of(v, pod),
        keys_never_read,
        keys_read,
        evidence,
        suggestion,
    })
}

/// What to change: no token automount for an unread service-account token
/// volume, an `items:` list of the read keys for a partly read volume, the
/// volume's removal for an unread one.
fn suggest(v: &Volume, never: &[UnreadKey], read: &[String]) -> Option<String> {
    let token = never.iter().any(|k| {
        k.source
            .as_ref()
            .is_some_and(|s| s.kind == SourceKind::ServiceAccountToken)
    }) || v.name.starts_with("kube-api-access-");
    if read.is_empty() {
        return Some(if token {
            "automountServiceAccountToken: false".to_string()
        } else {
            format!("remove volume {:?}: none of its files was read", v.name)
        });
    }
    if v.volume_type == VolumeType::Projected {
        return Some(format!("project only the keys read: {}", read.join(", ")));
    }
    let items: Vec<String> = read
        .iter()
        .map(|k| format!("{{key: {k}, path: {k}}}"))
        .collect();
    Some(format!("items: [{}]", items.join(", ")))
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::pods::NoMetadata;
    use crate::model::volume::FileId;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn volume(name: &str, keys: &[&str]) -> Arc<Volume> {
        Arc::new(Volume {
            id: 1,
            pod_uid: "pod-1".into(),
            volume_type: VolumeType::Secret,
            name: name.into(),
            mount_path: format!("/k/pods/pod-1/volumes/kubernetes.io~secret/{name}").into(),
            path_hash: String::new(),
            dir: FileId { dev: 1, ino: 2 },
            files: keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let file = crate::enrich::volumes::VolumeFile {
                        key: k.to_string(),
                        revision: None,
                    };
                    (i as u64 + 10, file)
                })
                .collect::<HashMap<_, _>>(),
            revision: None,
        })
    }

    fn read(ledger: &mut Ledger, volume: &str, key: &str) {
        let ev = crate::model::event::AccessEvent {
            pod_uid: Some("pod-1".into()),
            volume_name: Some(volume.into()),
            key: Some(key.into()),
            ..serde_json::from_value(serde_json::json!({
                "event_type": "secret_access", "timestamp": "t", "pod_uid": null,
                "namespace": null, "pod_name": null, "config_name": null,
                "volume_name": null, "volume_type": null, "key": null, "path": null,
                "mount_path": null, "access": "read", "result": "ok", "syscall": "openat",
                "process": {"pid": 1, "tid": 1, "command": "app", "uid": 0, "gid": 0,
                    "cgroup_id": 1, "cgroup_v1_id": 0, "mnt_ns": 1, "cgroup_path": null},
                "container": null, "reader_pod_uid": null, "workload": null,
                "service_account": null, "labels": {}, "service_account_token": false,
                "source": null, "repeats": null
            }))
            .unwrap()
        };
        ledger.record(&ev, SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn unread_keys_of_old_enough_volumes_with_their_evidence_and_suggestion() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut l = Ledger::new(Default::default());
        let creds = volume("creds", &["a", "b", "c"]);
        let token = volume("kube-api-access-x1", &["token", "ca.crt", "namespace"]);
        l.sync_volumes(&[Arc::clone(&creds), Arc::clone(&token)], t(100));
        let young = volume("young", &["x"]);
        let vols = [creds, young, token];
        l.sync_volumes(&vols, t(190));
        read(&mut l, "creds", "a");
        let found = unread(&l, &vols, &NoMetadata, Duration::from_secs(60), t(200));
        assert_eq!(found.len(), 2, "{found:#?}");
        let c = &found[0];
        assert_eq!(c.mount.volume, "creds");
        let never: Vec<_> = c.keys_never_read.iter().map(|k| &*k.key).collect();
        assert_eq!(
            (never, c.keys_read.clone()),
            (vec!["b", "c"], vec!["a".to_string()])
        );
        assert_eq!(
            (c.evidence.status, c.evidence.window_secs),
            (EvidenceStatus::Complete, 100)
        );
        assert_eq!(c.suggestion.as_deref(), Some("items: [{key: a, path: a}]"));
        assert_eq!(
            found[1].suggestion.as_deref(),
            Some("automountServiceAccountToken: false")
        );

        // A loss in the window: nothing is claimed, the reason is given.
        l.note_counters(&[("ring_buffer_full", 3)], t(150));
        let found = unread(&l, &vols, &NoMetadata, Duration::from_secs(60), t(200));
        assert_eq!(found[0].evidence.status, EvidenceStatus::Unknown);
        assert_eq!(found[0].evidence.reasons, ["ring_buffer_full"]);
        assert_eq!(found[0].suggestion, None);
        // Once the stretch after the loss is long enough, the claim holds again.
        let found = unread(&l, &vols, &NoMetadata, Duration::from_secs(60), t(215));
        assert_eq!(
            (found[0].evidence.status, found[0].evidence.window_secs),
            (EvidenceStatus::Complete, 65)
        );
        assert!(found[0].suggestion.is_some());
    }

    #[test]
    fn a_restart_keeps_the_reads_and_its_downtime_is_a_gap_and_a_loss() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut l = Ledger::new(Default::default());
        let creds = volume("creds", &["a", "b"]);
        l.sync_volumes(&[Arc::clone(&creds)], t(100));
        read(&mut l, "creds", "a");
        let saved = l.state(t(500));
        let back = serde_json::from_str(&serde_json::to_string(&saved).unwrap()).unwrap();
        let mut l = Ledger::restore(Default::default(), back, t(700));
        l.sync_volumes(&[Arc::clone(&creds)], t(701));
        assert_eq!(
            l.watched_since("pod-1", "creds"),
            Some(t(100)),
            "the same mount"
        );
        assert_eq!(l.gaps(), [Gap { from: 500, to: 700 }]);
        let found = unread(
            &l,
            &[Arc::clone(&creds)],
            &NoMetadata,
            Duration::from_secs(60),
            t(720),
        );
        let e = &found[0].evidence;
        assert_eq!(
            (e.status, e.reasons.clone()),
            (EvidenceStatus::Unknown, vec!["collector_down".to_string()])
        );
        assert_eq!(found[0].keys_read, ["a"], "reads before the restart count");
        let found = unread(&l, &[creds], &NoMetadata, Duration::from_secs(60), t(760));
        assert_eq!(found[0].evidence.status, EvidenceStatus::Complete);
    }
}

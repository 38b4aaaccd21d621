//! The usage ledger: per watched volume file, keyed by (pod UID, volume,
//! key), how often it was read and denied, first and last read, and its
//! distinct readers; and the losses that make "never read" unprovable.
//!
//! It is fed with the access events the pipeline already produces, on its
//! own thread ([`super::spawn_ledger`]), never on the reader's. Memory is
//! bounded: at most [`LedgerSettings::max_keys`] keys and
//! [`LedgerSettings::max_readers`] readers per key; what a full ledger
//! cannot hold is counted as a loss, like any other.
//!
//! Evidence: an answer "never read" covers a window that ends now, so it is
//! complete exactly when no loss happened at or after the window's start.
//! The ledger therefore keeps, per loss reason, the time of the latest loss
//! (and a total), which is all any window needs. It also keeps when it
//! began to watch each volume ([`Ledger::sync_volumes`]), and the gaps when
//! the collector was down (a restart is a loss of reason
//! [`COLLECTOR_DOWN`]); [`Ledger::state`] and [`Ledger::restore`] carry all
//! of it across a restart ([`super::state`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::enrich::volumes::Volume;
use crate::model::event::{AccessEvent, KUBELET_WRITE};
use crate::model::volume::FileId;

/// Bounds of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerSettings {
    /// Most (pod, volume, key) entries.
    pub max_keys: usize,
    /// Most distinct readers kept per key; reads by others are only counted.
    pub max_readers: usize,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            max_keys: 250_000,
            max_readers: 8,
        }
    }
}

/// One file of one pod's volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct FileKey {
    pub pod_uid: String,
    /// The pod's volume name.
    pub volume: String,
    /// Path of the file inside the volume.
    pub key: String,
}

/// A distinct reader of a key: its container (by name, else id), command and uid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reader {
    /// Container name from the pod spec, else the runtime id; null for a host process.
    pub container: Option<String>,
    /// The process's command name.
    pub command: String,
    pub uid: u32,
    /// Its successful opens of the key.
    pub reads: u64,
    /// RFC 3339: its latest.
    pub last_read: String,
    /// The process of its latest open (host pid namespace).
    #[serde(default)]
    pub pid: u32,
    /// The volume revision (`..<timestamp>` directory) of its latest open.
    #[serde(default)]
    pub revision: Option<String>,
}

/// What was seen of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyUsage {
    /// Successful opens (a summary of repeated opens counts all of them).
    pub reads: u64,
    /// Opens refused with EACCES or EPERM.
    pub denied: u64,
    /// RFC 3339: the first and the latest successful open.
    pub first_read: Option<String>,
    pub last_read: Option<String>,
    /// Distinct readers, at most `max_readers`.
    pub readers: Vec<Reader>,
    /// Reads by readers beyond `max_readers`.
    pub other_reads: u64,
}

/// Losses of one reason: how many, and when the latest happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossRecord {
    pub total: u64,
    pub latest: SystemTime,
}

/// A watched volume as the ledger knows it: its directory, since when it
/// is watched, its current revision and its latest rotations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watched {
    dir: FileId,
    since: SystemTime,
    revision: Option<Arc<str>>,
    rotations: Vec<Rotation>,
}

impl Watched {
    fn new(v: &Volume, since: SystemTime) -> Self {
        Self {
            dir: v.dir,
            since,
            revision: v.revision.clone(),
            rotations: Vec::new(),
        }
    }

    /// Notes the revision `v` shows now: another one than before is a rotation at `now`.
    fn follow(&mut self, v: &Volume, now: SystemTime) {
        if v.revision == self.revision {
            return;
        }
        if let (Some(from), Some(to)) = (&self.revision, &v.revision) {
            if self.rotations.len() >= MAX_ROTATIONS {
                self.rotations.remove(0);
            }
            self.rotations.push(Rotation {
                at: unix(now),
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        self.revision = v.revision.clone();
    }
}

/// The kubelet swapped a volume's `..data` to a new revision (an update of
/// its Secret or ConfigMap, a refreshed token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rotation {
    /// Unix seconds: when the collector saw the swap (within a second of it,
    /// plus the volume watch's debounce).
    pub at: u64,
    /// The revision before (`..<timestamp>` directory).
    pub from: String,
    /// The revision after.
    pub to: String,
}

/// Most rotations kept per volume (the latest).
pub const MAX_ROTATIONS: usize = 8;

/// The ledger.
#[derive(Debug)]
pub struct Ledger {
    settings: LedgerSettings,
    keys: HashMap<FileKey, KeyUsage>,
    /// (pod UID, volume name) -> when the ledger began to watch it.
    volumes: HashMap<(String, String), Watched>,
    /// Reason -> its losses (reasons are the counters' names).
    losses: BTreeMap<String, LossRecord>,
    /// The cumulative counters as last seen by [`Ledger::note_counters`].
    counters: BTreeMap<&'static str, u64>,
    /// Times the collector was down, oldest first (at most [`MAX_GAPS`]).
    gaps: Vec<Gap>,
}

/// Loss reason of accesses the ledger itself could not hold (it was full).
pub const LEDGER_FULL: &str = "ledger_full";
/// Loss reason of the time the collector was down (between the last saved
/// state and the restart).
pub const COLLECTOR_DOWN: &str = "collector_down";
/// Most gaps kept.
pub const MAX_GAPS: usize = 32;
/// Most loss reasons restored from a saved state (there are 7).
const MAX_LOSS_REASONS: usize = 64;

impl Ledger {
    pub fn new(settings: LedgerSettings) -> Self {
        Self {
            settings,
            keys: HashMap::new(),
            volumes: HashMap::new(),
            losses: BTreeMap::new(),
            counters: BTreeMap::new(),
            gaps: Vec::new(),
        }
    }

    /// Follows the watched volumes: a volume seen for the first time (or
    /// mounted anew: another directory) is watched from `now`; volumes gone
    /// are forgotten, with the keys of pods that have no volume left.
    pub fn sync_volumes(&mut self, volumes: &[Arc<Volume>], now: SystemTime) {
        let mut present = HashSet::with_capacity(volumes.len());
        for v in volumes {
            let id = (v.pod_uid.clone(), v.name.clone());
            let watched = self
                .volumes
                .entry(id.clone())
                .or_insert_with(|| Watched::new(v, now));
            if watched.dir == v.dir {
                watched.follow(v, now);
            } else {
                *watched = Watched::new(v, now);
            }
            present.insert(id);
        }
        self.volumes.retain(|id, _| present.contains(id));
        let pods: HashSet<&str> = present.iter().map(|(pod, _)| pod.as_str()).collect();
        self.keys.retain(|k, _| pods.contains(k.pod_uid.as_str()));
    }

    /// Since when volume `name` of pod `pod_uid` is watched (after [`Ledger::sync_volumes`]).
    pub fn watched_since(&self, pod_uid: &str, name: &str) -> Option<SystemTime> {
        self.volumes
            .get(&(pod_uid.to_string(), name.to_string()))
            .map(|w| w.since)
    }

    /// The rotations seen of volume `name` of pod `pod_uid`, oldest first, and its current revision.
    pub fn rotations(&self, pod_uid: &str, name: &str) -> Option<(&[Rotation], Option<&str>)> {
        self.volumes
            .get(&(pod_uid.to_string(), name.to_string()))
            .map(|w| (w.rotations.as_slice(), w.revision.as_deref()))
    }

    /// Losses so far, by reason: (reason, total); every reason the ledger
    /// follows is listed, 0 when none happened.
    pub fn losses(&self) -> Vec<(String, u64)> {
        let mut all: BTreeMap<String, u64> = self
            .counters
            .keys()
            .chain([&LEDGER_FULL, &COLLECTOR_DOWN])
            .map(|r| (r.to_string(), 0))
            .collect();
        for (reason, r) in &self.losses {
            all.insert(reason.clone(), r.total);
        }
        all.into_iter().collect()
    }

    /// The most keys the ledger holds.
    pub fn max_keys(&self) -> usize {
        self.settings.max_keys
    }

    /// The time of the latest loss of any reason.
    pub fn latest_loss(&self) -> Option<SystemTime> {
        self.losses.values().map(|r| r.latest).max()
    }

    /// The times the collector was down, oldest first.
    pub fn gaps(&self) -> &[Gap] {
        &self.gaps
    }

    /// Records an access event (kubelet writes and events without a key are not accesses of a key).
    pub fn record(&mut self, ev: &AccessEvent, now: SystemTime) {
        let (Some(pod_uid), Some(volume), Some(key)) = (&ev.pod_uid, &ev.volume_name, &ev.key)
        else {
            return;
        };
        if ev.event_type == KUBELET_WRITE {
            return;
        }
        let denied = matches!(ev.result.as_str(), "EACCES" | "EPERM");
        if ev.result != "ok" && !denied {
            return;
        }
        let id = FileKey {
            pod_uid: pod_uid.clone(),
            volume: volume.clone(),
            key: key.clone(),
        };
        if !self.keys.contains_key(&id) && self.keys.len() >= self.settings.max_keys {
            self.lose(LEDGER_FULL, ev.opens(), now);
            return;
        }
        let usage = self.keys.entry(id).or_default();
        if denied {
            usage.denied += ev.opens();
        } else {
            add_read(usage, ev, self.settings.max_readers);
        }
    }

    /// Compares cumulative loss counters (name, value) with their last
    /// values and records every increase as losses at `now`.
    pub fn note_counters(&mut self, counters: &[(&'static str, u64)], now: SystemTime) {
        for &(name, value) in counters {
            let before = self.counters.insert(name, value).unwrap_or(0);
            if value > before {
                self.lose(name, value - before, now);
            }
        }
    }

    fn lose(&mut self, reason: &str, n: u64, now: SystemTime) {
        let r = self.losses.entry(reason.to_string()).or_insert(LossRecord {
            total: 0,
            latest: now,
        });
        r.total += n;
        r.latest = now;
    }

    /// The reasons of losses at or after `since`: empty when a window
    /// from `since` to now saw everything.
    pub fn losses_since(&self, since: SystemTime) -> Vec<String> {
        self.losses
            .iter()
            .filter(|(_, r)| r.latest >= since)
            .map(|(reason, _)| reason.clone())
            .collect()
    }

    /// What was seen of one key.
    pub fn usage(&self, key: &FileKey) -> Option<&KeyUsage> {
        self.keys.get(key)
    }

    /// Every key of a pod, in order.
    pub fn keys_of_pod(&self, pod_uid: &str) -> Vec<(&FileKey, &KeyUsage)> {
        let mut v: Vec<_> = self
            .keys
            .iter()
            .filter(|(k, _)| k.pod_uid == pod_uid)
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Every key of volume `volume` of pod `pod_uid`, in order.
    pub fn keys_of_volume(&self, pod_uid: &str, volume: &str) -> Vec<(&FileKey, &KeyUsage)> {
        let mut v = self.keys_of_pod(pod_uid);
        v.retain(|(k, _)| k.volume == volume);
        v
    }

    /// What a restart needs, saved at `now`.
    pub fn state(&self, now: SystemTime) -> LedgerState {
        LedgerState {
            version: LedgerState::VERSION,
            saved_at: unix(now),
            keys: self
                .keys
                .iter()
                .map(|(k, u)| (k.clone(), u.clone()))
                .collect(),
            volumes: self
                .volumes
                .iter()
                .map(|((pod_uid, volume), w)| SavedVolume {
                    pod_uid: pod_uid.clone(),
                    volume: volume.clone(),
                    dev: w.dir.dev,
                    ino: w.dir.ino,
                    since: unix(w.since),
                    revision: w.revision.as_deref().map(str::to_string),
                    rotations: w.rotations.clone(),
                })
                .collect(),
            losses: self
                .losses
                .iter()
                .map(|(reason, r)| SavedLoss {
                    reason: reason.clone(),
                    total: r.total,
                    latest: unix(r.latest),
                })
                .collect(),
            gaps: self.gaps.clone(),
        }
    }

    /// A ledger from a saved state, restarted at `now`: the time since the
    /// state was saved is a gap, and a loss (the collector saw nothing then).
    pub fn restore(settings: LedgerSettings, state: LedgerState, now: SystemTime) -> Self {
        let mut ledger = Self::new(settings);
        ledger.keys = state.keys.into_iter().take(settings.max_keys).collect();
        // Bounded like a live ledger, whatever the file holds.
        ledger.volumes = state
            .volumes
            .into_iter()
            .take(settings.max_keys)
            .map(|v| {
                let mut rotations = v.rotations;
                rotations.truncate(MAX_ROTATIONS);
                let watched = Watched {
                    dir: FileId {
                        dev: v.dev,
                        ino: v.ino,
                    },
                    since: from_unix(v.since),
                    revision: v.revision.map(Arc::from),
                    rotations,
                };
                ((v.pod_uid, v.volume), watched)
            })
            .collect();
        for l in state.losses.into_iter().take(MAX_LOSS_REASONS) {
            let record = LossRecord {
                total: l.total,
                latest: from_unix(l.latest),
            };
            ledger.losses.insert(l.reason, record);
        }
        ledger.gaps = state.gaps;
        ledger.gaps.truncate(MAX_GAPS);
        ledger.gaps.push(Gap {
            from: state.saved_at,
            to: unix(now),
        });
        let excess = ledger.gaps.len().saturating_sub(MAX_GAPS);
        ledger.gaps.drain(..excess);
        ledger.lose(COLLECTOR_DOWN, 1, now);
        ledger
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Seconds since the Unix epoch.
pub(super) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn from_unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// A time the collector was down: from the last saved state to the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Gap {
    /// Unix seconds: the state was last saved.
    pub from: u64,
    /// Unix seconds: the collector started again.
    pub to: u64,
}

/// A watched volume, and since when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedVolume {
    pub pod_uid: String,
    pub volume: String,
    /// The volume directory's device and inode: another directory is a new mount.
    pub dev: u32,
    pub ino: u64,
    pub since: u64,
    /// Its revision when saved.
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub rotations: Vec<Rotation>,
}

/// The losses of one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLoss {
    pub reason: String,
    pub total: u64,
    /// Unix seconds of the latest.
    pub latest: u64,
}

/// Everything the ledger needs after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    pub version: u32,
    /// Unix seconds.
    pub saved_at: u64,
    pub keys: Vec<(FileKey, KeyUsage)>,
    pub volumes: Vec<SavedVolume>,
    pub losses: Vec<SavedLoss>,
    pub gaps: Vec<Gap>,
}

impl LedgerState {
    /// The version this collector writes and reads.
    pub const VERSION: u32 = 1;
}

/// Adds a successful open (or a summary of them) to `usage`.
fn add_read(usage: &mut KeyUsage, ev: &AccessEvent, max_readers: usize) {
    let n = ev.opens();
    usage.reads += n;
    if usage.first_read.is_none() {
        usage.first_read = Some(first_time(ev).to_string());
    }
    usage.last_read = Some(ev.timestamp.clone());
    let container = ev
        .container
        .as_ref()
        .map(|c| c.name.clone().unwrap_or_else(|| c.id.clone()));
    let same = |r: &&mut Reader| {
        r.container == container && r.command == ev.process.command && r.uid == ev.process.uid
    };
    if let Some(r) = usage.readers.iter_mut().find(same) {
        r.reads += n;
        r.last_read = ev.timestamp.clone();
        r.pid = ev.process.pid;
        if ev.revision.is_some() {
            r.revision = ev.revision.clone();
        }
    } else if usage.readers.len() < max_readers {
        usage.readers.push(Reader {
            container,
            command: ev.process.command.clone(),
            uid: ev.process.uid,
            reads: n,
            last_read: ev.timestamp.clone(),
            pid: ev.process.pid,
            revision: ev.revision.clone(),
        });
    } else {
        usage.other_reads += n;
    }
}

/// The earliest time an event stands for: a summary's `since`, else its timestamp.
fn first_time(ev: &AccessEvent) -> &str {
    ev.repeats
        .as_ref()
        .map_or(ev.timestamp.as_str(), |r| r.since.as_str())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::event::{ContainerRef, ProcessInfo, Repeats};

    /// A read of `key` of volume `creds` of pod `pod-1` by container `app`.
    pub(crate) fn event(key: &str, result: &str, command: &str, ts: &str) -> AccessEvent {
        AccessEvent {
            event_type: "secret_access".into(),
            timestamp: ts.into(),
            pod_uid: Some("pod-1".into()),
            namespace: None,
            pod_name: None,
            config_name: None,
            volume_name: Some("creds".into()),
            volume_type: None,
            key: Some(key.into()),
            revision: None,
            path: None,
            mount_path: None,
            access: "read".into(),
            result: result.into(),
            syscall: "openat".into(),
            process: ProcessInfo {
                pid: 1,
                tid: 1,
                command: command.into(),
                uid: 1000,
                gid: 1000,
                cgroup_id: 1,
                cgroup_v1_id: 0,
                mnt_ns: 1,
                cgroup_path: None,
            },
            container: Some(ContainerRef {
                id: "c".repeat(64),
                name: Some("app".into()),
                image: None,
            }),
            reader_pod_uid: Some("pod-1".into()),
            workload: None,
            service_account: None,
            labels: Default::default(),
            service_account_token: false,
            source: None,
            session: None,
            foreign_read: None,
            anomaly: None,
            repeats: None,
        }
    }

    fn key(k: &str) -> FileKey {
        FileKey {
            pod_uid: "pod-1".into(),
            volume: "creds".into(),
            key: k.into(),
        }
    }

    #[test]
    fn reads_denials_and_readers_are_counted_per_key() {
        let now = SystemTime::UNIX_EPOCH;
        let mut l = Ledger::new(LedgerSettings {
            max_keys: 10,
            max_readers: 2,
        });
        l.record(&event("a", "ok", "app", "t1"), now);
        let mut summary = event("a", "ok", "app", "t3");
        summary.repeats = Some(Repeats {
            count: 41,
            since: "t2".into(),
        });
        l.record(&summary, now);
        l.record(&event("a", "ok", "cat", "t4"), now);
        l.record(&event("a", "ok", "sh", "t5"), now);
        l.record(&event("a", "EACCES", "sh", "t6"), now);
        l.record(&event("a", "ENOENT", "sh", "t7"), now);
        let mut kubelet = event("a", "ok", "kubelet", "t8");
        kubelet.event_type = KUBELET_WRITE.into();
        l.record(&kubelet, now);
        let u = l.usage(&key("a")).expect("key a");
        assert_eq!((u.reads, u.denied, u.other_reads), (44, 1, 1));
        assert_eq!(
            (u.first_read.as_deref(), u.last_read.as_deref()),
            (Some("t1"), Some("t5"))
        );
        let readers: Vec<_> = u.readers.iter().map(|r| (&*r.command, r.reads)).collect();
        assert_eq!(readers, [("app", 42), ("cat", 1)]);
        assert_eq!(u.readers[0].container.as_deref(), Some("app"));
        assert!(l.usage(&key("b")).is_none());
    }

    #[test]
    fn a_full_ledger_counts_what_it_cannot_hold_as_a_loss() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut l = Ledger::new(LedgerSettings {
            max_keys: 1,
            max_readers: 8,
        });
        l.record(&event("a", "ok", "app", "t1"), t0);
        assert!(l.losses_since(t0).is_empty());
        l.record(&event("b", "ok", "app", "t2"), t0);
        assert_eq!(l.len(), 1);
        assert_eq!(l.losses_since(t0), [LEDGER_FULL.to_string()]);
        assert!(l.losses_since(t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn counter_increases_are_losses_at_the_time_they_were_seen() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut l = Ledger::new(LedgerSettings::default());
        l.note_counters(&[("ring_buffer_full", 0), ("decode_error", 0)], t(10));
        assert!(l.losses_since(t(0)).is_empty());
        l.note_counters(&[("ring_buffer_full", 5), ("decode_error", 0)], t(20));
        l.note_counters(&[("ring_buffer_full", 5), ("decode_error", 0)], t(30));
        assert_eq!(l.losses_since(t(20)), ["ring_buffer_full".to_string()]);
        assert!(
            l.losses_since(t(21)).is_empty(),
            "a window after the loss is complete"
        );
    }
}

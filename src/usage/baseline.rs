//! The learned baseline, and the first-seen signal it gives.
//!
//! Per workload (namespace, owner kind and name; a bare pod is its own
//! workload `Pod/<name>`) on this node, the set of accesses its pods made:
//! (container name, executable, object kind, object name, key). A workload
//! seen for the first time starts a learning window of
//! [`BaselineSettings::learning`]; what its pods read in it is learned. After
//! it, an access outside the set is flagged on the event
//! ([`Anomaly`], `first_seen`) once, and joins the set. A container seen
//! with a new image extends the window (an upgrade changes behaviour), when
//! [`BaselineSettings::extend_on_new_image`].
//!
//! The executable is the process's `/proc/<pid>/exe`, as the process sees
//! it, cached per process while its command name stays the same. A process
//! gone before its event is handled (a short `cat`) is named by its command
//! in brackets, `[cat]`: such a process can be flagged once under each name.
//!
//! Only successful reads by the pod's own containers are learned: foreign
//! reads and kubelet writes have their own signals, failed opens are not
//! accesses. Bounded: at most [`BaselineSettings::max_workloads`] workloads
//! and [`BaselineSettings::max_entries`] entries each; what does not fit is
//! counted ([`Baseline::overflow`]) and not flagged. Saved with the usage
//! ledger (`baseline.json` in the state directory) and restored at start,
//! windows included.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ledger::unix;
use super::state::Versioned;
use crate::model::event::{AccessEvent, Anomaly, KUBELET_WRITE};

/// Settings of the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaselineSettings {
    /// How long a workload's accesses are learned before new ones are flagged.
    pub learning: Duration,
    /// A container seen with a new image extends its workload's window.
    pub extend_on_new_image: bool,
    pub max_workloads: usize,
    pub max_entries: usize,
}

impl Default for BaselineSettings {
    fn default() -> Self {
        Self {
            learning: Duration::from_secs(3600),
            extend_on_new_image: true,
            max_workloads: 4096,
            max_entries: 1024,
        }
    }
}

/// A workload on this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct WorkloadId {
    pub namespace: String,
    /// Owner kind (`Deployment`, `StatefulSet`, ...; `Pod` for a bare pod).
    pub kind: String,
    pub name: String,
}

/// One learned access.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct BaselineEntry {
    /// Container name from the pod spec, else the runtime id.
    pub container: String,
    /// `/proc/<pid>/exe` as the process sees it, else `[command]`.
    pub executable: String,
    /// `Secret`, `ConfigMap`, `ServiceAccountToken`, ... (else the volume type).
    pub object_kind: String,
    /// The object's name (else the volume name).
    pub object_name: String,
    /// The key in the object (else the file in the volume).
    pub key: String,
}

/// What is learned of one workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    /// Unix seconds: first access seen (the window's start).
    pub since: u64,
    /// Unix seconds: the window's end.
    pub learning_until: u64,
    /// (container, image) pairs seen.
    pub images: BTreeSet<(String, String)>,
    pub entries: HashSet<BaselineEntry>,
}

/// `GET /v1/baseline`: one workload's baseline, summed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkloadBaseline {
    #[serde(flatten)]
    pub workload: WorkloadId,
    /// Still in its learning window: nothing is flagged yet.
    pub learning: bool,
    /// RFC 3339: the window's start and end.
    pub since: String,
    pub learning_until: String,
    /// Learned accesses.
    pub entries: usize,
}

/// `GET /v1/baseline/{namespace}/{kind}/{name}`: a workload's learned accesses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkloadBaselineDetail {
    #[serde(flatten)]
    pub summary: WorkloadBaseline,
    /// Sorted.
    pub accesses: Vec<BaselineEntry>,
}

/// What a restart needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineState {
    pub version: u32,
    pub workloads: Vec<(WorkloadId, Learned)>,
}

impl Versioned for BaselineState {
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
}

/// Most processes whose executable is cached.
const EXE_CACHE: usize = 4096;

/// The baseline of every workload on this node.
#[derive(Debug)]
pub struct Baseline {
    settings: BaselineSettings,
    workloads: Mutex<HashMap<WorkloadId, Learned>>,
    /// tgid -> (command, executable).
    exes: Mutex<HashMap<u32, (String, String)>>,
    overflow: AtomicU64,
}

impl Baseline {
    pub fn new(settings: BaselineSettings) -> Self {
        Self {
            settings,
            workloads: Mutex::new(HashMap::new()),
            exes: Mutex::new(HashMap::new()),
            overflow: AtomicU64::new(0),
        }
    }

    /// A baseline from a saved state (bounded like a live one).
    pub fn restore(settings: BaselineSettings, state: BaselineState) -> Self {
        let b = Self::new(settings);
        *b.lock() = state
            .workloads
            .into_iter()
            .take(settings.max_workloads)
            .collect();
        b
    }

    /// What a restart needs.
    pub fn state(&self) -> BaselineState {
        BaselineState {
            version: BaselineState::VERSION,
            workloads: self
                .lock()
                .iter()
                .map(|(id, l)| (id.clone(), l.clone()))
                .collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WorkloadId, Learned>> {
        self.workloads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accesses that were neither learned nor flagged: the baseline was full.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Learns `ev`, or flags it (`ev.anomaly`) when it is new after its
    /// workload's window.
    pub fn check(&self, ev: &mut AccessEvent) {
        let Some((id, entry, image)) = self.entry_of(ev) else {
            return;
        };
        let now = unix(SystemTime::now());
        let mut workloads = self.lock();
        if !workloads.contains_key(&id) && workloads.len() >= self.settings.max_workloads {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let learning = self.settings.learning.as_secs();
        let learned = workloads.entry(id.clone()).or_insert_with(|| Learned {
            since: now,
            learning_until: now.saturating_add(learning),
            ..Learned::default()
        });
        if let Some(image) = image {
            let container_known = learned.images.iter().any(|(c, _)| *c == entry.container);
            if learned.images.insert((entry.container.clone(), image))
                && container_known
                && self.settings.extend_on_new_image
            {
                learned.learning_until = learned.learning_until.max(now.saturating_add(learning));
            }
        }
        if learned.entries.contains(&entry) {
            return;
        }
        if learned.entries.len() >= self.settings.max_entries {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let flag = now >= learned.learning_until;
        let until = learned.learning_until;
        learned.entries.insert(entry);
        if flag {
            ev.anomaly = Some(Anomaly {
                kind: "first_seen".into(),
                workload: format!("{}/{}", id.kind, id.name),
                learned_until: rfc3339(until),
            });
        }
    }

    /// The workload, entry and image of a learnable access.
    fn entry_of(&self, ev: &AccessEvent) -> Option<(WorkloadId, BaselineEntry, Option<String>)> {
        if ev.event_type == KUBELET_WRITE || ev.result != "ok" || ev.foreign_read.is_some() {
            return None;
        }
        let namespace = ev.namespace.clone()?;
        let (kind, name) = match &ev.workload {
            Some(w) => (w.kind.to_string(), w.name.to_string()),
            None => ("Pod".to_string(), ev.pod_name.clone()?),
        };
        let container = ev.container.as_ref()?;
        let (object_kind, object_name, key) = match &ev.source {
            Some(s) => (
                serde_json::to_value(s.kind)
                    .ok()?
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                s.name.as_deref().map_or_else(
                    || ev.volume_name.clone().unwrap_or_default(),
                    str::to_string,
                ),
                s.key
                    .as_deref()
                    .map_or_else(|| ev.key.clone().unwrap_or_default(), str::to_string),
            ),
            None => (
                ev.volume_type.map_or("", |t| t.as_str()).to_string(),
                ev.volume_name.clone().unwrap_or_default(),
                ev.key.clone().unwrap_or_default(),
            ),
        };
        let entry = BaselineEntry {
            container: container
                .name
                .clone()
                .unwrap_or_else(|| container.id.clone()),
            executable: self.executable(ev.process.pid, &ev.process.command),
            object_kind,
            object_name,
            key,
        };
        Some((
            WorkloadId {
                namespace,
                kind,
                name,
            },
            entry,
            container.image.clone(),
        ))
    }

    /// Process `pid`'s executable, cached while its command stays `command`.
    fn executable(&self, pid: u32, command: &str) -> String {
        let mut exes = self.exes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((comm, exe)) = exes.get(&pid) {
            if comm == command {
                return exe.clone();
            }
        }
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            return format!("[{command}]");
        };
        let exe = exe.to_string_lossy().into_owned();
        if exes.len() >= EXE_CACHE {
            exes.clear();
        }
        exes.insert(pid, (command.to_string(), exe.clone()));
        exe
    }

    /// Every workload's baseline, summed up, in order.
    pub fn list(&self) -> Vec<WorkloadBaseline> {
        let now = unix(SystemTime::now());
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .map(|(id, l)| summary(id, l, now))
            .collect();
        out.sort_by(|a, b| a.workload.cmp(&b.workload));
        out
    }

    /// One workload's learned accesses.
    pub fn get(&self, id: &WorkloadId) -> Option<WorkloadBaselineDetail> {
        let now = unix(SystemTime::now());
        let workloads = self.lock();
        let l = workloads.get(id)?;
        let mut accesses: Vec<_> = l.entries.iter().cloned().collect();
        accesses.sort();
        Some(WorkloadBaselineDetail {
            summary: summary(id, l, now),
            accesses,
        })
    }

    /// Forgets a workload's baseline: its next access starts a new window.
    pub fn reset(&self, id: &WorkloadId) -> bool {
        self.lock().remove(id).is_some()
    }
}

fn summary(id: &WorkloadId, l: &Learned, now: u64) -> WorkloadBaseline {
    WorkloadBaseline {
        workload: id.clone(),
        learning: now < l.learning_until,
        since: rfc3339(l.since),
        learning_until: rfc3339(l.learning_until),
        entries: l.entries.len(),
    }
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .to_string()
}

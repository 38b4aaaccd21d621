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

use std::collections::hash_map::Entry;
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
    pub entries: Vec<BaselineEntry>,
    /// Hashes of `entries`, of the containers in `images` and of the
    /// pairs: what the check looks up, without building strings.
    #[serde(skip)]
    hashes: Hashes,
}

/// Sets of hashes (foldhash: the keys are hashes already).
type HashSet64 = HashSet<u64, foldhash::fast::RandomState>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Hashes {
    entries: HashSet64,
    containers: HashSet64,
    images: HashSet64,
}

impl Learned {
    fn new(now: u64, learning: u64) -> Self {
        Self {
            since: now,
            learning_until: now.saturating_add(learning),
            ..Self::default()
        }
    }

    /// Rebuilds the hashes from the strings (after a restore).
    fn rehash(&mut self) {
        self.hashes.entries = self.entries.iter().map(BaselineEntry::hash).collect();
        self.hashes.containers = self.images.iter().map(|(c, _)| hash(&[c])).collect();
        self.hashes.images = self.images.iter().map(|(c, i)| hash(&[c, i])).collect();
    }
}

/// A 64-bit hash of `parts` (foldhash, fixed seed). Hashes are never
/// saved: a restore rebuilds them from the strings.
fn hash(parts: &[&str]) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0x6361_6362_6173_656c).build_hasher();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

impl BaselineEntry {
    fn hash(&self) -> u64 {
        hash(&[
            &self.container,
            &self.executable,
            &self.object_kind,
            &self.object_name,
            &self.key,
        ])
    }
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

/// An access as the check sees it: borrowed from the event.
struct Access<'a> {
    namespace: &'a str,
    kind: &'a str,
    name: &'a str,
    container: &'a str,
    image: Option<&'a str>,
    object_kind: &'a str,
    object_name: &'a str,
    key: &'a str,
}

impl Versioned for BaselineState {
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
}

/// Hash of a workload id -> the id and what is learned of it.
type Workloads = HashMap<u64, (WorkloadId, Learned), foldhash::fast::RandomState>;

/// Most processes whose executable is cached.
const EXE_CACHE: usize = 4096;

/// The baseline of every workload on this node.
#[derive(Debug)]
pub struct Baseline {
    settings: BaselineSettings,
    /// Hash of the workload id -> the id and what is learned of it.
    workloads: Mutex<Workloads>,
    /// tgid -> (command, executable).
    exes: Mutex<HashMap<u32, (String, String), foldhash::fast::RandomState>>,
    overflow: AtomicU64,
}

impl Baseline {
    pub fn new(settings: BaselineSettings) -> Self {
        Self {
            settings,
            workloads: Mutex::new(Workloads::default()),
            exes: Mutex::new(HashMap::default()),
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
            .map(|(id, mut l)| {
                l.entries.truncate(settings.max_entries);
                l.rehash();
                (hash(&[&id.namespace, &id.kind, &id.name]), (id, l))
            })
            .collect();
        b
    }

    /// What a restart needs.
    pub fn state(&self) -> BaselineState {
        BaselineState {
            version: BaselineState::VERSION,
            workloads: self.lock().values().cloned().collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Workloads> {
        self.workloads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accesses that were neither learned nor flagged: the baseline was full.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Learns `ev`, or flags it (`ev.anomaly`) when it is new after its
    /// workload's window.
    pub fn check(&self, ev: &mut AccessEvent) {
        let Some(a) = access_of(ev) else {
            return;
        };
        let (pid, command) = (ev.process.pid, ev.process.command.as_str());
        let entry_hash = self.with_executable(pid, command, |exe| {
            hash(&[a.container, exe, a.object_kind, a.object_name, a.key])
        });
        let now = unix(SystemTime::now());
        let learning = self.settings.learning.as_secs();
        let mut workloads = self.lock();
        let full = workloads.len() >= self.settings.max_workloads;
        let (id, learned) = match workloads.entry(hash(&[a.namespace, a.kind, a.name])) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(_) if full => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Entry::Vacant(v) => v.insert((a.workload_id(), Learned::new(now, learning))),
        };
        if let Some(image) = a.image {
            self.note_image(learned, a.container, image, now);
        }
        if learned.hashes.entries.contains(&entry_hash) {
            return;
        }
        if learned.entries.len() >= self.settings.max_entries {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        learned.hashes.entries.insert(entry_hash);
        let exe = self.with_executable(pid, command, str::to_string);
        learned.entries.push(a.entry(exe));
        if now >= learned.learning_until {
            ev.anomaly = Some(Anomaly {
                kind: "first_seen".into(),
                workload: format!("{}/{}", id.kind, id.name),
                learned_until: rfc3339(learned.learning_until),
            });
        }
    }

    /// Records that `container` runs `image`; a new image of a known
    /// container extends the window (when configured).
    fn note_image(&self, learned: &mut Learned, container: &str, image: &str, now: u64) {
        if !learned.hashes.images.insert(hash(&[container, image])) {
            return;
        }
        let known = !learned.hashes.containers.insert(hash(&[container]));
        learned
            .images
            .insert((container.to_string(), image.to_string()));
        if known && self.settings.extend_on_new_image {
            let until = now.saturating_add(self.settings.learning.as_secs());
            learned.learning_until = learned.learning_until.max(until);
        }
    }

    /// `f` of process `pid`'s executable, cached while its command stays
    /// `command` (no allocation on a hit).
    fn with_executable<R>(&self, pid: u32, command: &str, f: impl FnOnce(&str) -> R) -> R {
        let mut exes = self.exes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((comm, exe)) = exes.get(&pid) {
            if comm == command {
                return f(exe);
            }
        }
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            return f(&format!("[{command}]"));
        };
        let exe = exe.to_string_lossy().into_owned();
        if exes.len() >= EXE_CACHE {
            exes.clear();
        }
        let out = f(&exe);
        exes.insert(pid, (command.to_string(), exe));
        out
    }

    /// Every workload's baseline, summed up, in order.
    pub fn list(&self) -> Vec<WorkloadBaseline> {
        let now = unix(SystemTime::now());
        let mut out: Vec<_> = self
            .lock()
            .values()
            .map(|(id, l)| summary(id, l, now))
            .collect();
        out.sort_by(|a, b| a.workload.cmp(&b.workload));
        out
    }

    /// One workload's learned accesses.
    pub fn get(&self, id: &WorkloadId) -> Option<WorkloadBaselineDetail> {
        let now = unix(SystemTime::now());
        let workloads = self.lock();
        let (_, l) = workloads.get(&hash(&[&id.namespace, &id.kind, &id.name]))?;
        let mut accesses = l.entries.clone();
        accesses.sort();
        Some(WorkloadBaselineDetail {
            summary: summary(id, l, now),
            accesses,
        })
    }

    /// Forgets a workload's baseline: its next access starts a new window.
    pub fn reset(&self, id: &WorkloadId) -> bool {
        self.lock()
            .remove(&hash(&[&id.namespace, &id.kind, &id.name]))
            .is_some()
    }
}

/// The fields of a learnable access: a successful read by the pod's own
/// container, with pod metadata (foreign reads, kubelet writes and failed
/// opens have their own signals).
fn access_of(ev: &AccessEvent) -> Option<Access<'_>> {
    if ev.event_type == KUBELET_WRITE || ev.result != "ok" || ev.foreign_read.is_some() {
        return None;
    }
    let (kind, name) = match &ev.workload {
        Some(w) => (&*w.kind, &*w.name),
        None => ("Pod", ev.pod_name.as_deref()?),
    };
    let container = ev.container.as_ref()?;
    let (object_kind, object_name, key) = match &ev.source {
        Some(s) => (
            s.kind.as_str(),
            s.name.as_deref().or(ev.volume_name.as_deref()),
            s.key.as_deref().or(ev.key.as_deref()),
        ),
        None => (
            ev.volume_type.map_or("", |t| t.as_str()),
            ev.volume_name.as_deref(),
            ev.key.as_deref(),
        ),
    };
    Some(Access {
        namespace: ev.namespace.as_deref()?,
        kind,
        name,
        container: container.name.as_deref().unwrap_or(&container.id),
        image: container.image.as_deref(),
        object_kind,
        object_name: object_name.unwrap_or_default(),
        key: key.unwrap_or_default(),
    })
}

impl Access<'_> {
    fn workload_id(&self) -> WorkloadId {
        WorkloadId {
            namespace: self.namespace.to_string(),
            kind: self.kind.to_string(),
            name: self.name.to_string(),
        }
    }

    fn entry(&self, executable: String) -> BaselineEntry {
        BaselineEntry {
            container: self.container.to_string(),
            executable,
            object_kind: self.object_kind.to_string(),
            object_name: self.object_name.to_string(),
            key: self.key.to_string(),
        }
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

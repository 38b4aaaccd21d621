//! The map itself: an index from [`EndpointKey`] to its targets, the
//! entries each object contributed (so an update or a delete takes back
//! exactly those), an index by pod UID, and a bounded log of changed keys
//! for consumers that mirror the map (the kernel map `svc_endpoints`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::convert::{Contribution, ObjectId, ObjectKind};
use super::slot::Slot;
use super::{EndpointKey, MapSettings, ServicePort, Target, HEALTH_COMPONENT};
use crate::enrich::pods::{Interner, MetadataStatus};
use crate::model::health::{HealthBoard, Severity};
use crate::model::pod::Name;

type Fast = foldhash::fast::RandomState;

/// Most changed keys remembered for [`ServiceMap::changes_since`]; a
/// consumer further behind takes a full snapshot.
pub const CHANGE_LOG: usize = 16_384;

/// Removals of objects between two sweeps of the interned names.
const SWEEP_EVERY: usize = 1024;

/// What one object holds in the map: its keys, and the Service ports its
/// targets point to. A target is this object's when its `service` is one of
/// them (the very value, not an equal one): the conversion makes them for
/// this object alone, so the targets need not be stored twice.
#[derive(Debug)]
struct Record {
    ports: Box<[Arc<ServicePort>]>,
    keys: Box<[EndpointKey]>,
    /// Some of its entries did not fit.
    truncated: bool,
}

impl Record {
    fn owns(&self, t: &Target) -> bool {
        self.ports.iter().any(|p| Arc::ptr_eq(p, &t.service))
    }

    /// Whether `entries` are this record's keys, to equal targets.
    fn same_as(&self, index: &Index, entries: &[(EndpointKey, Target)]) -> bool {
        self.keys.len() == entries.len()
            && self.keys.iter().zip(entries).all(|(k, (k2, t2))| {
                k == k2
                    && index
                        .get(k)
                        .and_then(|s| s.find(|t| self.owns(t)))
                        .is_some_and(|t| t == t2)
            })
    }
}

type Index = HashMap<EndpointKey, Slot, Fast>;

#[derive(Debug, Default)]
struct Inner {
    index: Index,
    records: HashMap<ObjectId, Record, Fast>,
    /// Keys with a target backed by each pod (a key once per target; a
    /// boxed slice, not a vector: no spare capacity for 100,000 pods).
    by_pod: HashMap<Name, Box<[EndpointKey]>, Fast>,
    /// (key, target) pairs held: the sum of the records' entries.
    entries: usize,
    /// Records with entries left out.
    truncated: usize,
    /// Objects listed since the watcher's last `Init`, per kind.
    relist: [Option<HashSet<ObjectId>>; 2],
    generation: u64,
    /// Changed keys, by generation (at most [`CHANGE_LOG`]).
    log: VecDeque<(u64, EndpointKey)>,
    /// Changes of generations up to this one may be missing from the log.
    log_floor: u64,
    removed_since_sweep: usize,
}

impl Inner {
    fn add(&mut self, key: EndpointKey, target: Target) {
        if let Some(pod) = &target.pod {
            let keys = self.by_pod.entry(Arc::clone(&pod.uid)).or_default();
            *keys = keys.iter().copied().chain([key]).collect();
        }
        match self.index.get_mut(&key) {
            Some(slot) => slot.push(target),
            None => {
                self.index.insert(key, Slot::One(target));
            }
        }
    }

    /// Removes `record`'s target at `key`.
    fn take_back(&mut self, key: &EndpointKey, record: &Record) {
        let Some(slot) = self.index.get_mut(key) else {
            return;
        };
        let (taken, empty) = slot.take(|t| record.owns(t));
        if empty {
            self.index.remove(key);
        }
        let Some(uid) = taken.and_then(|t| t.pod).map(|p| Arc::clone(&p.uid)) else {
            return;
        };
        let Some(keys) = self.by_pod.get_mut(&uid) else {
            return;
        };
        let mut left: Vec<EndpointKey> = keys.to_vec();
        if let Some(i) = left.iter().position(|k| k == key) {
            left.swap_remove(i);
        }
        if left.is_empty() {
            self.by_pod.remove(&uid);
        } else {
            *keys = left.into_boxed_slice();
        }
    }

    /// Takes back everything `id` contributed; returns whether it had a record.
    fn remove_record(&mut self, id: &ObjectId, generation: u64) -> bool {
        let Some(record) = self.records.remove(id) else {
            return false;
        };
        self.entries -= record.keys.len();
        self.truncated -= usize::from(record.truncated);
        for key in record.keys.iter() {
            self.take_back(key, &record);
            self.log_change(generation, *key);
        }
        self.removed_since_sweep += 1;
        true
    }

    /// Indexes at most `room` of `c`'s entries; returns how many were left out.
    fn insert_record(&mut self, c: Contribution, room: usize, generation: u64) -> u64 {
        let mut entries = c.entries;
        let dropped = c.dropped + entries.len().saturating_sub(room) as u64;
        entries.truncate(room);
        for (key, target) in &entries {
            self.add(*key, target.clone());
            self.log_change(generation, *key);
        }
        self.entries += entries.len();
        self.truncated += usize::from(dropped > 0);
        if !entries.is_empty() || dropped > 0 {
            let record = Record {
                ports: c.ports.into_boxed_slice(),
                keys: entries.into_iter().map(|(k, _)| k).collect(),
                truncated: dropped > 0,
            };
            self.records.insert(c.id, record);
        }
        dropped
    }

    fn log_change(&mut self, generation: u64, key: EndpointKey) {
        if self.log.len() == CHANGE_LOG {
            if let Some((g, _)) = self.log.pop_front() {
                self.log_floor = self.log_floor.max(g);
            }
        }
        self.log.push_back((generation, key));
    }

    fn seen(&mut self, id: &ObjectId) {
        if let Some(listed) = self.relist[kind_index(id.kind)].as_mut() {
            listed.insert(id.clone());
        }
    }
}

fn kind_index(kind: ObjectKind) -> usize {
    match kind {
        ObjectKind::Service => 0,
        ObjectKind::EndpointSlice => 1,
    }
}

/// A full copy of the map: one target per key (the preferred one, see
/// [`Target`]'s order), at `generation`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub generation: u64,
    pub entries: Vec<(EndpointKey, Target)>,
}

/// What changed since a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The keys whose targets changed (look each up again: it may be gone),
    /// sorted; ask from `generation` next time.
    Keys {
        generation: u64,
        keys: Vec<EndpointKey>,
    },
    /// The log no longer reaches back that far (or never had that
    /// generation): take a full [`ServiceMap::entries`].
    Resync,
}

/// The Service endpoint map, shared by its watchers and its readers.
#[derive(Debug)]
pub struct ServiceMap {
    inner: RwLock<Inner>,
    settings: MapSettings,
    names: Interner,
    /// (key, target) pairs left out because the map was full, since start.
    overflow: AtomicU64,
    synced: [AtomicBool; 2],
    standalone: AtomicBool,
    generation: tokio::sync::watch::Sender<u64>,
    health: Option<Arc<HealthBoard>>,
}

impl ServiceMap {
    pub fn new(settings: MapSettings) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            settings,
            names: Interner::default(),
            overflow: AtomicU64::new(0),
            synced: [AtomicBool::new(false), AtomicBool::new(false)],
            standalone: AtomicBool::new(false),
            generation: tokio::sync::watch::Sender::new(0),
            health: None,
        }
    }

    /// Raises the `service_map` condition on `health` while objects are left out.
    pub fn with_health(mut self, health: Arc<HealthBoard>) -> Self {
        self.health = Some(health);
        self
    }

    /// The strings the map's objects share (namespaces, Service and port names).
    pub fn names(&self) -> &Interner {
        &self.names
    }

    pub fn max_entries(&self) -> usize {
        self.settings.max_entries
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces what one object contributes. Entries beyond
    /// `max_entries` are left out and counted in [`ServiceMap::overflow`].
    pub fn apply(&self, c: Contribution) {
        let mut inner = self.write();
        inner.seen(&c.id);
        let unchanged = match inner.records.get(&c.id) {
            Some(r) => !r.truncated && c.dropped == 0 && r.same_as(&inner.index, &c.entries),
            None => c.entries.is_empty() && c.dropped == 0,
        };
        if unchanged {
            return;
        }
        let generation = inner.generation + 1;
        inner.generation = generation;
        inner.remove_record(&c.id, generation);
        let room = self.settings.max_entries.saturating_sub(inner.entries);
        let dropped = inner.insert_record(c, room, generation);
        if dropped > 0 {
            self.overflow.fetch_add(dropped, Ordering::Relaxed);
        }
        self.changed(inner);
    }

    /// Takes back what an object contributed (it was deleted, or is no
    /// longer one the map keeps).
    pub fn delete(&self, id: &ObjectId) {
        let mut inner = self.write();
        if !inner.records.contains_key(id) {
            return;
        }
        let generation = inner.generation + 1;
        inner.generation = generation;
        inner.remove_record(id, generation);
        self.changed(inner);
    }

    /// A relist of `kind` starts: its objects not listed again before
    /// [`ServiceMap::end_relist`] are deleted then. The map keeps answering
    /// from what it holds meanwhile.
    pub fn begin_relist(&self, kind: ObjectKind) {
        self.write().relist[kind_index(kind)] = Some(HashSet::new());
    }

    /// A relist of `kind` completed: objects it did not list are gone.
    pub fn end_relist(&self, kind: ObjectKind) {
        let mut inner = self.write();
        let Some(listed) = inner.relist[kind_index(kind)].take() else {
            return;
        };
        let gone: Vec<ObjectId> = inner
            .records
            .keys()
            .filter(|id| id.kind == kind && !listed.contains(*id))
            .cloned()
            .collect();
        if !gone.is_empty() {
            let generation = inner.generation + 1;
            inner.generation = generation;
            for id in &gone {
                inner.remove_record(id, generation);
            }
        }
        inner.removed_since_sweep = SWEEP_EVERY;
        self.changed(inner);
        self.synced[kind_index(kind)].store(true, Ordering::Release);
    }

    /// After a change: publish the generation, report a full map, and
    /// sweep the names no object uses any more now and then.
    fn changed(&self, mut inner: RwLockWriteGuard<'_, Inner>) {
        let (generation, truncated, entries) = (inner.generation, inner.truncated, inner.entries);
        let sweep = inner.removed_since_sweep >= SWEEP_EVERY;
        if sweep {
            inner.removed_since_sweep = 0;
        }
        drop(inner);
        self.generation.send_if_modified(|g| {
            let moved = *g != generation;
            *g = generation;
            moved
        });
        if sweep {
            self.names.sweep();
        }
        self.report(truncated, entries);
    }

    fn report(&self, truncated: usize, entries: usize) {
        let Some(h) = &self.health else { return };
        if truncated == 0 {
            h.clear(HEALTH_COMPONENT);
            return;
        }
        h.raise(
            HEALTH_COMPONENT,
            Severity::Degraded,
            format!(
                "the service endpoint map is full ({entries} of service_endpoints_max_entries {}): \
                 {truncated} Services or EndpointSlices are left out in part or whole, so lookups of \
                 their addresses answer 404 (kernel_monitor_service_map_overflow_total counts the \
                 entries left out); cleared once they are updated, deleted or relisted with room",
                self.settings.max_entries
            ),
        );
    }

    /// The targets of `key`, preferred first.
    pub fn lookup(&self, key: &EndpointKey) -> Vec<Target> {
        let inner = self.read();
        let mut all: Vec<Target> = inner
            .index
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        drop(inner);
        all.sort_by(|a, b| a.rank().cmp(&b.rank()));
        all.dedup();
        all
    }

    /// The endpoints pod `uid` backs: each key with its target, sorted.
    pub fn by_pod(&self, uid: &str) -> Vec<(EndpointKey, Target)> {
        let inner = self.read();
        let Some(keys) = inner.by_pod.get(uid) else {
            return Vec::new();
        };
        let mut all: Vec<(EndpointKey, Target)> = keys
            .iter()
            .filter_map(|k| Some((k, inner.index.get(k)?)))
            .flat_map(|(k, slot)| {
                slot.iter()
                    .filter(|t| t.pod.as_ref().is_some_and(|p| &*p.uid == uid))
                    .map(|t| (*k, t.clone()))
            })
            .collect();
        drop(inner);
        all.sort_by(|(k1, t1), (k2, t2)| (k1, t1.rank()).cmp(&(k2, t2.rank())));
        all.dedup();
        all
    }

    /// Every key with its preferred target, and the generation they are of.
    pub fn entries(&self) -> Snapshot {
        let inner = self.read();
        Snapshot {
            generation: inner.generation,
            entries: inner
                .index
                .iter()
                .filter_map(|(k, slot)| Some((*k, slot.primary()?.clone())))
                .collect(),
        }
    }

    /// The keys changed after `generation` (one from [`ServiceMap::entries`]
    /// or from a previous call), or [`Changes::Resync`].
    pub fn changes_since(&self, generation: u64) -> Changes {
        let inner = self.read();
        if generation < inner.log_floor || generation > inner.generation {
            return Changes::Resync;
        }
        let mut keys: Vec<EndpointKey> = inner
            .log
            .iter()
            .rev()
            .take_while(|(g, _)| *g > generation)
            .map(|(_, k)| *k)
            .collect();
        let current = inner.generation;
        drop(inner);
        keys.sort_unstable();
        keys.dedup();
        Changes::Keys {
            generation: current,
            keys,
        }
    }

    /// The current generation: it grows with every change of the map.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Wakes on every new generation.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.read().index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of (key, target) pairs: what `max_entries` bounds.
    pub fn entry_count(&self) -> usize {
        self.read().entries
    }

    /// Number of objects (Services and EndpointSlices) with entries held.
    pub fn objects(&self) -> usize {
        self.read().records.len()
    }

    /// Pairs left out because the map was full, since start.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Objects with entries left out now.
    pub fn incomplete_objects(&self) -> usize {
        self.read().truncated
    }

    /// Whether both Services and EndpointSlices were listed at least once.
    pub fn synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::Acquire))
    }

    /// Marks the map as never to be filled (no API server configuration).
    pub fn set_standalone(&self) {
        self.standalone.store(true, Ordering::Release);
    }

    /// Whether the map is filled, being filled, or never will be.
    pub fn status(&self) -> MetadataStatus {
        if self.synced() {
            MetadataStatus::Synced
        } else if self.standalone.load(Ordering::Acquire) {
            MetadataStatus::Standalone
        } else {
            MetadataStatus::Waiting
        }
    }
}

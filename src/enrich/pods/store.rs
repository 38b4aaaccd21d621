//! The pod store: pod metadata by UID, fed by the watcher, with deleted
//! pods kept for a grace period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::interner::Interner;
use super::meta::PodMeta;
use crate::model::pod::Name;

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<Name, Arc<PodMeta>>,
    /// Deleted pods, with the time they were deleted.
    deleted: HashMap<Name, (Arc<PodMeta>, Instant)>,
    /// Pods seen since the watcher's last `Init`.
    relist: Option<HashMap<Name, Arc<PodMeta>>>,
}

/// Pod metadata by UID.
#[derive(Debug)]
pub struct PodStore {
    inner: RwLock<Inner>,
    grace: Duration,
    synced: AtomicBool,
    standalone: AtomicBool,
    names: Interner,
}

impl PodStore {
    /// An empty store keeping deleted pods for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            grace,
            synced: AtomicBool::new(false),
            standalone: AtomicBool::new(false),
            names: Interner::default(),
        }
    }

    /// The string interner pods of this store share.
    pub fn names(&self) -> &Interner {
        &self.names
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod with this UID, live or deleted less than the grace period ago.
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        let inner = self.inner.read().ok()?;
        if let Some(p) = inner.live.get(uid) {
            return Some(Arc::clone(p));
        }
        let (p, at) = inner.deleted.get(uid)?;
        (at.elapsed() < self.grace).then(|| Arc::clone(p))
    }

    /// Number of live pods.
    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.live.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a full list has completed at least once.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Whether there is no API server configuration, so nothing will ever sync.
    pub fn standalone(&self) -> bool {
        self.standalone.load(Ordering::Acquire)
    }

    /// Marks the store as standalone (no API server configuration).
    pub fn set_standalone(&self) {
        self.standalone.store(true, Ordering::Release);
    }

    /// Adds or replaces a pod.
    pub fn apply(&self, pod: PodMeta) {
        let pod = Arc::new(pod);
        let mut inner = self.write();
        inner.deleted.remove(&pod.uid);
        if let Some(relist) = inner.relist.as_mut() {
            relist.insert(Arc::clone(&pod.uid), Arc::clone(&pod));
        }
        inner.live.insert(Arc::clone(&pod.uid), pod);
    }

    /// Marks a pod deleted (it stays resolvable for the grace period).
    pub fn delete(&self, uid: &str) {
        let mut inner = self.write();
        if let Some(p) = inner.live.remove(uid) {
            inner
                .deleted
                .insert(Arc::clone(&p.uid), (p, Instant::now()));
        }
    }

    /// A relist starts: pods not listed again before [`PodStore::end_relist`] are deleted then.
    pub fn begin_relist(&self) {
        self.write().relist = Some(HashMap::new());
    }

    /// A relist completed: the listed pods are the live set.
    pub fn end_relist(&self) {
        let mut inner = self.write();
        let Some(listed) = inner.relist.take() else {
            return;
        };
        let now = Instant::now();
        let gone: Vec<Name> = inner
            .live
            .keys()
            .filter(|u| !listed.contains_key(*u))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(p) = inner.live.remove(&uid) {
                inner.deleted.insert(uid, (p, now));
            }
        }
        inner.live = listed;
        drop(inner);
        self.synced.store(true, Ordering::Release);
    }

    /// Drops deleted pods older than the grace period, and then the
    /// interned strings no pod uses any more (their UIDs, names, ...).
    pub fn purge(&self) {
        let grace = self.grace;
        let purged = {
            let mut inner = self.write();
            let before = inner.deleted.len();
            inner.deleted.retain(|_, (_, at)| at.elapsed() < grace);
            before - inner.deleted.len()
        };
        if purged > 0 {
            self.names.sweep();
        }
    }
}

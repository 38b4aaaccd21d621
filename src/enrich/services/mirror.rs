//! Mirrors the [`ServiceMap`] into the kernel's `svc_endpoints`, where
//! other collectors' BPF programs look addresses up.
//!
//! Once both resources are listed, the kernel map is rebuilt whole from a
//! snapshot (addresses it holds that the snapshot lacks are deleted first,
//! so it never holds more than the map's bound; a map taken over from an
//! earlier run is corrected the same way). Then every new generation of the
//! map is applied key by key: each changed key is looked up again and
//! deleted or written (deletes first: the kernel map is only as large as the
//! map's bound). When the change log no longer reaches back, or a
//! write fails, the map is rebuilt whole again ([`RETRY`] after a failure).
//! Failed writes are counted ([`MirrorStats::failures`]) and raise the
//! `service_map_kernel` condition on `/healthz` until a rebuild succeeds.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::store::{Changes, ServiceMap};
use super::{EndpointKey, Role, Target};
use crate::enrich::pods::MetadataStatus;
use crate::kernel::decode::{EndpointAddr, ServiceEndpoint};
use crate::kernel::maps::{KernelServices, MapError};
use crate::model::health::{HealthBoard, Severity};

/// Health component raised while the kernel map misses writes.
pub const HEALTH_COMPONENT: &str = "service_map_kernel";

/// Wait before a rebuild after a failed write.
pub const RETRY: Duration = Duration::from_secs(5);

/// How often the mirror looks whether the map is listed yet.
const SYNC_POLL: Duration = Duration::from_millis(200);

/// What the mirror did, for the metrics.
#[derive(Debug, Default)]
pub struct MirrorStats {
    /// Addresses the kernel map holds, as of the last write.
    pub entries: AtomicU64,
    /// Writes and deletes the kernel refused, since start.
    pub failures: AtomicU64,
}

/// The kernel map, and where to report what happens to it.
#[derive(Debug)]
pub struct KernelMirror {
    pub kernel: KernelServices,
    pub stats: Arc<MirrorStats>,
    pub health: Option<Arc<HealthBoard>>,
}

/// Writes that failed in one pass, with the first error.
#[derive(Debug, Default)]
struct Failures {
    count: u64,
    first: Option<String>,
}

impl Failures {
    fn note(&mut self, e: MapError) {
        self.count += 1;
        self.first
            .get_or_insert_with(|| crate::logging::chain(&e).to_string());
    }
}

/// Keeps `mirror.kernel` equal to `map` until `stop` resolves.
pub async fn mirror_to_kernel(
    map: Arc<ServiceMap>,
    mirror: KernelMirror,
    stop: impl Future<Output = ()>,
) {
    tokio::select! {
        () = stop => {}
        () = follow(&map, &mirror) => {}
    }
}

async fn follow(map: &ServiceMap, mirror: &KernelMirror) {
    let mut wake = map.subscribe();
    // An empty map before the first list would wipe a map taken over.
    while map.status() == MetadataStatus::Waiting {
        let _ = tokio::time::timeout(SYNC_POLL, wake.changed()).await;
    }
    let mut at = None;
    loop {
        wake.borrow_and_update();
        at = match at {
            Some(generation) => mirror.apply(map, generation),
            None => mirror.rebuild(map),
        };
        if at.is_none() {
            tokio::time::sleep(RETRY).await;
            continue;
        }
        if wake.changed().await.is_err() {
            return;
        }
    }
}

impl KernelMirror {
    /// Applies the changes since `generation`; the generation now mirrored,
    /// or `None` when a write failed.
    fn apply(&self, map: &ServiceMap, generation: u64) -> Option<u64> {
        let (generation, keys) = match map.changes_since(generation) {
            Changes::Resync => return self.rebuild(map),
            Changes::Keys { generation, keys } => (generation, keys),
        };
        // Deletes first: the kernel map is as large as the map's bound, so
        // a new key may fit only once a removed one is gone.
        let (puts, deletes): (Vec<_>, Vec<_>) = keys
            .into_iter()
            .map(|key| (addr(key), map.lookup(&key).into_iter().next()))
            .partition(|(_, target)| target.is_some());
        let mut failures = Failures::default();
        for (a, _) in deletes {
            let held = self.kernel.contains(a);
            match self.kernel.delete(a) {
                Ok(()) => self.adjust(-i64::from(held)),
                Err(e) => failures.note(e),
            }
        }
        for (a, target) in puts.iter().filter_map(|(a, t)| Some((*a, t.as_ref()?))) {
            let held = self.kernel.contains(a);
            match self.kernel.put(a, &value(target)) {
                Ok(()) => self.adjust(i64::from(!held)),
                Err(e) => failures.note(e),
            }
        }
        self.report(failures, generation)
    }

    /// Rebuilds the kernel map from a snapshot; its generation, or `None`
    /// when a write failed.
    fn rebuild(&self, map: &ServiceMap) -> Option<u64> {
        let snapshot = map.entries();
        let wanted: HashSet<EndpointAddr> =
            snapshot.entries.iter().map(|(k, _)| addr(*k)).collect();
        let mut failures = Failures::default();
        for stale in self.kernel.addresses() {
            if !wanted.contains(&stale) {
                if let Err(e) = self.kernel.delete(stale) {
                    failures.note(e);
                }
            }
        }
        for (key, target) in &snapshot.entries {
            if let Err(e) = self.kernel.put(addr(*key), &value(target)) {
                failures.note(e);
            }
        }
        // Without a failure the map holds the snapshot: no second walk.
        let held = match failures.count {
            0 => snapshot.entries.len(),
            _ => self.kernel.addresses().len(),
        } as u64;
        self.stats.entries.store(held, Ordering::Relaxed);
        tracing::debug!(
            held,
            generation = snapshot.generation,
            "svc_endpoints rebuilt"
        );
        self.report(failures, snapshot.generation)
    }

    /// Moves the count of held addresses by `delta`.
    fn adjust(&self, delta: i64) {
        match delta {
            1 => self.stats.entries.fetch_add(1, Ordering::Relaxed),
            -1 => self.stats.entries.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Counts and reports a pass's failures; `generation` when there were none.
    fn report(&self, failures: Failures, generation: u64) -> Option<u64> {
        let Some(first) = failures.first else {
            if let Some(h) = &self.health {
                h.clear(HEALTH_COMPONENT);
            }
            return Some(generation);
        };
        self.stats
            .failures
            .fetch_add(failures.count, Ordering::Relaxed);
        let reason = format!(
            "{} writes to the kernel map svc_endpoints failed ({first}): other collectors' \
             lookups miss or see stale addresses until it is rebuilt (retried every {} s; \
             kernel_monitor_service_map_kernel_failures_total counts them)",
            failures.count,
            RETRY.as_secs()
        );
        tracing::warn!("{reason}");
        if let Some(h) = &self.health {
            h.raise(HEALTH_COMPONENT, Severity::Degraded, reason);
        }
        None
    }
}

/// The kernel key of a map key.
pub fn addr(key: EndpointKey) -> EndpointAddr {
    EndpointAddr {
        ip: key.ip,
        port: key.port,
        protocol: key.protocol.number(),
    }
}

/// The kernel value of a target.
pub fn value(t: &Target) -> ServiceEndpoint<'_> {
    ServiceEndpoint {
        namespace: &t.service.namespace,
        service: &t.service.name,
        port_name: t.service.port_name.as_deref().unwrap_or(""),
        pod_uid: t.pod.as_ref().map_or("", |p| &p.uid),
        backend: t.service.role == Role::Endpoint,
    }
}

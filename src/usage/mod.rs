//! Usage: answers built on the access stream rather than single events:
//! which files of the mounted volumes are read, by whom, and which never
//! are, with the evidence for it.
//!
//! The [`ledger::Ledger`] is fed by its own thread ([`spawn_ledger`]) from a
//! queue of the fan-out, like an output, so the reader never waits for it.
//! A full queue is a loss like a kernel drop: the ledger notes every loss
//! counter's increase ([`LossCounters`]), and an answer "never read" is
//! only complete when no loss happened in its window. [`Usage`] is what the
//! API reads: the ledger, the watched volumes and the pod metadata.

pub mod answers;
pub mod ledger;
pub mod report;

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use answers::UnreadReport;
use ledger::{FileKey, KeyUsage, Ledger, LedgerSettings};

use crate::enrich::pods::PodMetadata;
use crate::enrich::volumes::VolumeRegistry;
use crate::model::event::AccessEvent;

/// Settings of the usage answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageSettings {
    pub ledger: LedgerSettings,
    /// A volume is reported unread once it has been watched this long.
    pub unused_after: Duration,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            ledger: LedgerSettings::default(),
            unused_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// Cumulative loss counters, by name: what the ledger may have missed.
pub type LossCounters = Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// How often the ledger thread notes the loss counters and forgets pods
/// whose volumes are gone.
const TICK: Duration = Duration::from_secs(1);

/// The ledger and what its answers need.
pub struct Usage {
    ledger: Mutex<Ledger>,
    counters: LossCounters,
    registry: Arc<VolumeRegistry>,
    pods: Arc<dyn PodMetadata>,
    unused_after: Duration,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage")
            .field("unused_after", &self.unused_after)
            .finish_non_exhaustive()
    }
}

/// One key of a pod and what was seen of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct KeyReport {
    #[serde(flatten)]
    pub file: FileKey,
    #[serde(flatten)]
    pub usage: KeyUsage,
}

impl Usage {
    pub fn new(
        settings: UsageSettings,
        counters: LossCounters,
        registry: Arc<VolumeRegistry>,
        pods: Arc<dyn PodMetadata>,
    ) -> Self {
        Self {
            ledger: Mutex::new(Ledger::new(settings.ledger)),
            counters,
            registry,
            pods,
            unused_after: settings.unused_after,
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes the loss counters' increases (at `now`) in the ledger.
    fn note_losses(&self, ledger: &mut Ledger, now: SystemTime) {
        ledger.note_counters(&(self.counters)(), now);
    }

    /// How long a volume is watched before it is reported unread.
    pub fn unused_after(&self) -> Duration {
        self.unused_after
    }

    /// Watched volumes with files never read (losses noted up to now first).
    pub fn unread(&self) -> UnreadReport {
        let now = SystemTime::now();
        let mut ledger = self.ledger();
        self.note_losses(&mut ledger, now);
        UnreadReport {
            unused_after_secs: self.unused_after.as_secs(),
            mounts: answers::unread(
                &ledger,
                &self.registry.volumes(),
                &*self.pods,
                self.unused_after,
                now,
            ),
        }
    }

    /// Every key of pod `uid` that was read or denied.
    pub fn pod(&self, uid: &str) -> Vec<KeyReport> {
        self.ledger()
            .keys_of_pod(uid)
            .into_iter()
            .map(|(file, usage)| KeyReport {
                file: file.clone(),
                usage: usage.clone(),
            })
            .collect()
    }

    /// Whether pod `uid` has a watched volume.
    pub fn watches_pod(&self, uid: &str) -> bool {
        self.registry.volumes().iter().any(|v| v.pod_uid == uid)
    }

    /// Records one event.
    fn record(&self, ev: &AccessEvent) {
        self.ledger().record(ev, SystemTime::now());
    }

    /// Notes losses and forgets the pods that no longer have a watched volume.
    fn tick(&self) {
        let pods: std::collections::HashSet<String> = self
            .registry
            .volumes()
            .iter()
            .map(|v| v.pod_uid.clone())
            .collect();
        let mut ledger = self.ledger();
        self.note_losses(&mut ledger, SystemTime::now());
        ledger.retain_pods(|uid| pods.contains(uid));
    }
}

/// Feeds `usage` from `events` on a thread `usage-ledger` until the queue's
/// sending end (the fan-out) is dropped.
pub fn spawn_ledger(
    usage: Arc<Usage>,
    events: Receiver<Arc<AccessEvent>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("usage-ledger".into())
        .spawn(move || {
            let mut ticked = Instant::now();
            loop {
                match events.recv_timeout(TICK) {
                    Ok(ev) => usage.record(&ev),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                if ticked.elapsed() >= TICK {
                    usage.tick();
                    ticked = Instant::now();
                }
            }
        })
}

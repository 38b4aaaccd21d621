//! Usage: answers built on the access stream rather than single events:
//! which files of the mounted volumes are read, by whom, and which never
//! are, with the evidence for it.
//!
//! The [`ledger::Ledger`] is fed by its own thread ([`spawn_ledger`]) from a
//! queue of the fan-out, like an output, so the reader never waits for it.
//! A full queue is a loss like a kernel drop: the ledger notes every loss
//! counter's increase ([`LossCounters`]), and an answer "never read" is
//! only complete when no loss happened in its window. [`Usage`] is what the
//! API reads: the ledger, the watched volumes and the pod metadata. With a
//! state directory the ledger is saved at start, every minute and at stop
//! ([`state`]), and a restart continues it, the downtime a gap.

pub mod answers;
pub mod baseline;
pub mod ledger;
pub mod objects;
pub mod report;
pub mod rotation;
pub mod startup;
pub mod state;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use answers::UnreadReport;
use baseline::{Baseline, BaselineSettings};
use ledger::{FileKey, KeyUsage, Ledger, LedgerSettings};
use objects::{BlastRadius, ObjectUsage};
use rotation::RotationReport;
use startup::StartupOnlyReport;

use crate::enrich::pods::PodMetadata;
use crate::enrich::volumes::{Volume, VolumeRegistry};
use crate::model::event::AccessEvent;
use crate::model::health::{GrowthAlarm, HealthBoard, Severity, LOSS_HOLD};

/// Settings of the usage answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSettings {
    pub ledger: LedgerSettings,
    /// A volume is reported unread once it has been watched this long.
    pub unused_after: Duration,
    /// Reads within this long of a container's start are its startup reads.
    pub startup_window: Duration,
    /// The learned baseline of each workload.
    pub baseline: BaselineSettings,
    /// Where the ledger is saved (`None`: in memory only).
    pub state_file: Option<PathBuf>,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            ledger: LedgerSettings::default(),
            unused_after: Duration::from_secs(24 * 3600),
            startup_window: Duration::from_secs(300),
            baseline: BaselineSettings::default(),
            state_file: None,
        }
    }
}

/// Cumulative loss counters, by name: what the ledger may have missed.
pub type LossCounters = Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// How often the ledger thread notes the loss counters and follows the
/// watched volumes.
const TICK: Duration = Duration::from_secs(1);
/// How often the ledger is saved (and at stop).
const SAVE_EVERY: Duration = Duration::from_secs(60);

/// The ledger and what its answers need.
pub struct Usage {
    ledger: Mutex<Ledger>,
    counters: LossCounters,
    registry: Arc<VolumeRegistry>,
    pods: Arc<dyn PodMetadata>,
    unused_after: Duration,
    startup_window: Duration,
    baseline: Arc<Baseline>,
    state_file: Option<PathBuf>,
    /// Saves of the state: (succeeded, failed).
    saves: (AtomicU64, AtomicU64),
    /// Where a failed save is reported (`usage_state`, degraded).
    health: Option<Arc<HealthBoard>>,
    /// The baseline's overflow count at the last tick, and when it last grew.
    baseline_full: GrowthAlarm,
}

/// The health component of a failed save of the ledger.
pub const STATE_COMPONENT: &str = "usage_state";
/// The health component of a full ledger.
pub const LEDGER_COMPONENT: &str = "usage_ledger";
/// The health component of a full baseline.
pub const BASELINE_COMPONENT: &str = "usage_baseline";
/// How long a full baseline stays raised after its last lost access.
pub const BASELINE_FULL_HOLD: Duration = LOSS_HOLD;

/// `GET /v1/usage/report`: every answer at once, as `report` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UsageReport {
    #[serde(flatten)]
    pub unread: UnreadReport,
    /// Volumes the kubelet rotated, with their readers.
    pub rotations: RotationReport,
    #[serde(flatten)]
    pub startup: StartupOnlyReport,
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
        let now = SystemTime::now();
        let mut ledger = match restored(settings.state_file.as_deref()) {
            Some(saved) => Ledger::restore(settings.ledger, saved, now),
            None => Ledger::new(settings.ledger),
        };
        let baseline_file = settings.state_file.as_deref().map(state::baseline_file);
        let baseline = match restored(baseline_file.as_deref()) {
            Some(saved) => Baseline::restore(settings.baseline, saved),
            None => Baseline::new(settings.baseline),
        };
        ledger.sync_volumes(&registry.volumes(), now);
        Self {
            ledger: Mutex::new(ledger),
            counters,
            registry,
            pods,
            unused_after: settings.unused_after,
            startup_window: settings.startup_window,
            baseline: Arc::new(baseline),
            state_file: settings.state_file,
            saves: (AtomicU64::new(0), AtomicU64::new(0)),
            health: None,
            baseline_full: GrowthAlarm::new(BASELINE_COMPONENT, 0),
        }
    }

    /// Reports failed saves on `health` (and saves once at once, so that an
    /// unwritable state directory shows at start, not a minute later).
    pub fn with_health(mut self, health: Arc<HealthBoard>) -> Self {
        self.health = Some(health);
        self.save();
        self
    }

    /// Saves the ledger, when it has a state file. A failure is counted,
    /// logged and raised on the health board (degraded): the ledger goes
    /// on in memory, but a restart would lose what it saw since the last
    /// save; the next successful save clears it.
    pub fn save(&self) {
        let Some(path) = &self.state_file else { return };
        let state = self.ledger().state(SystemTime::now());
        let saved = state::save(path, &state)
            .and_then(|()| state::save(&state::baseline_file(path), &self.baseline.state()));
        match saved {
            Ok(()) => {
                self.saves.0.fetch_add(1, Ordering::Relaxed);
                if let Some(h) = &self.health {
                    h.clear(STATE_COMPONENT);
                }
            }
            Err(e) => {
                self.saves.1.fetch_add(1, Ordering::Relaxed);
                let chain = crate::logging::chain(&e);
                tracing::warn!(error = %chain, "the usage ledger was not saved");
                if let Some(h) = &self.health {
                    h.raise(
                        STATE_COMPONENT,
                        Severity::Degraded,
                        format!("the usage ledger cannot be saved ({chain}): a restart would lose what it saw since the last save"),
                    );
                }
            }
        }
    }

    /// The learned baseline (checked by the pipeline, listed by the API).
    pub fn baseline(&self) -> &Arc<Baseline> {
        &self.baseline
    }

    /// Saves of the state so far: (succeeded, failed).
    pub fn saves(&self) -> (u64, u64) {
        (
            self.saves.0.load(Ordering::Relaxed),
            self.saves.1.load(Ordering::Relaxed),
        )
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

    /// The ledger, with the losses noted and the watched volumes followed up to now.
    fn current(&self) -> (MutexGuard<'_, Ledger>, Vec<Arc<Volume>>, SystemTime) {
        let now = SystemTime::now();
        let volumes = self.registry.volumes();
        let mut ledger = self.ledger();
        self.note_losses(&mut ledger, now);
        ledger.sync_volumes(&volumes, now);
        (ledger, volumes, now)
    }

    /// Watched volumes with files never read.
    pub fn unread(&self) -> UnreadReport {
        let (ledger, volumes, now) = self.current();
        UnreadReport {
            unused_after_secs: self.unused_after.as_secs(),
            mounts: answers::unread(&ledger, &volumes, &*self.pods, self.unused_after, now),
            gaps: ledger.gaps().to_vec(),
        }
    }

    /// The volumes the kubelet rotated, and whether their readers re-read.
    pub fn rotations(&self) -> RotationReport {
        let (ledger, volumes, now) = self.current();
        rotation::rotations(&ledger, &volumes, &*self.pods, now)
    }

    /// Keys containers read only in their startup window.
    pub fn startup_only(&self) -> StartupOnlyReport {
        let (ledger, volumes, now) = self.current();
        StartupOnlyReport {
            startup_window_secs: self.startup_window.as_secs(),
            reads: startup::startup_only(&ledger, &volumes, &*self.pods, self.startup_window, now),
        }
    }

    /// Every answer of the report.
    pub fn report(&self) -> UsageReport {
        UsageReport {
            unread: self.unread(),
            rotations: self.rotations(),
            startup: self.startup_only(),
        }
    }

    /// Every Secret and ConfigMap mounted on this node, with who mounts and reads it.
    pub fn blast_radii(&self) -> Vec<BlastRadius> {
        let unread = self.unread();
        let rotated = self.rotations();
        let (ledger, volumes, _) = self.current();
        objects::blast_radii(
            &ledger,
            &volumes,
            &*self.pods,
            &unread.mounts,
            &rotated.volumes,
        )
    }

    /// Per Secret and ConfigMap on this node: its counts.
    pub fn objects(&self) -> Vec<ObjectUsage> {
        self.blast_radii().into_iter().map(|b| b.usage).collect()
    }

    /// Stale readers of service-account tokens, by (namespace, service account).
    pub fn stale_token_readers(&self) -> Vec<((String, String), u64)> {
        let mut by_account = std::collections::BTreeMap::new();
        for v in self.rotations().volumes {
            let stale = v
                .readers
                .iter()
                .filter(|r| r.stale && r.warning.is_some())
                .count();
            let Some(pod) = self.pods.pod(&v.mount.pod_uid) else {
                continue;
            };
            let account = pod
                .service_account
                .as_deref()
                .unwrap_or("default")
                .to_string();
            *by_account
                .entry((pod.namespace.to_string(), account))
                .or_default() += stale as u64;
        }
        by_account.into_iter().collect()
    }

    /// Losses the ledger noted so far, by reason.
    pub fn losses(&self) -> Vec<(String, u64)> {
        self.current().0.losses()
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

    /// Notes losses, follows the watched volumes, and raises a full ledger
    /// on the health board (degraded: reads of new keys are lost, and
    /// counted as `ledger_full`) until it has room again.
    fn tick(&self) {
        let (ledger, _, _) = self.current();
        let full = ledger.len() >= ledger.max_keys();
        drop(ledger);
        let Some(h) = &self.health else { return };
        if full {
            h.raise(
                LEDGER_COMPONENT,
                Severity::Degraded,
                "the usage ledger is full: reads of keys it does not hold yet are lost (kernel_monitor_usage_losses_total{reason=\"ledger_full\"}), so its answers are unknown until pods go".to_string(),
            );
        } else {
            h.clear(LEDGER_COMPONENT);
        }
        self.raise_full_baseline(h, Instant::now());
    }

    /// Raises a full baseline (degraded: accesses it could not learn are
    /// neither learned nor flagged) while its overflow count grows, and for
    /// [`BASELINE_FULL_HOLD`] after; then clears it.
    fn raise_full_baseline(&self, h: &HealthBoard, now: Instant) {
        self.baseline_full
            .update(h, self.baseline.overflow(), now, |count| {
                format!("the workload baseline is full: {count} accesses were neither learned nor checked for first_seen (kernel_monitor_baseline_overflow_total), the last within {}s; DELETE /v1/baseline/{{namespace}}/{{kind}}/{{name}} forgets a workload's baseline", BASELINE_FULL_HOLD.as_secs())
            });
    }
}

/// The state saved at `path`, if any; an unusable one is logged once and
/// left for the next save to replace.
fn restored<T: state::Versioned>(path: Option<&std::path::Path>) -> Option<T> {
    match state::load(path?) {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(
                error = %crate::logging::chain(&e),
                "starting without the saved state: it cannot be used"
            );
            None
        }
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
            let (mut ticked, mut saved) = (Instant::now(), Instant::now());
            loop {
                match events.recv_timeout(TICK) {
                    Ok(ev) => usage.record(&ev),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if ticked.elapsed() >= TICK {
                    usage.tick();
                    ticked = Instant::now();
                }
                if saved.elapsed() >= SAVE_EVERY {
                    usage.save();
                    saved = Instant::now();
                }
            }
            // The fan-out is gone: every event it queued is recorded.
            usage.tick();
            usage.save();
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::pods::NoMetadata;

    #[test]
    fn a_full_baseline_degrades_health_while_it_loses_accesses() {
        let settings = UsageSettings {
            baseline: BaselineSettings {
                max_workloads: 1,
                ..BaselineSettings::default()
            },
            ..UsageSettings::default()
        };
        let usage = Usage::new(
            settings,
            Box::new(Vec::new),
            Default::default(),
            Arc::new(NoMetadata),
        );
        let board = HealthBoard::default();
        let read_by = |pod: &str| {
            let mut ev = ledger::tests::event("password", "ok", "cat", "t");
            ev.namespace = Some("payments".into());
            ev.pod_name = Some(pod.into());
            usage.baseline().check(&mut ev);
        };
        let t0 = Instant::now();
        // One workload fits: nothing is lost, nothing raised.
        read_by("a");
        usage.raise_full_baseline(&board, t0);
        assert!(board.conditions().is_empty());
        // A second one does not: its access is lost, and health says so.
        read_by("b");
        assert_eq!(usage.baseline().overflow(), 1);
        usage.raise_full_baseline(&board, t0);
        let c = board.conditions();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].component, BASELINE_COMPONENT);
        assert_eq!(c[0].severity, Severity::Degraded);
        assert!(c[0].reason.contains("1 accesses"), "{}", c[0].reason);
        // Still raised within the hold, cleared after it without new losses.
        usage.raise_full_baseline(&board, t0 + BASELINE_FULL_HOLD / 2);
        assert_eq!(board.conditions().len(), 1);
        usage.raise_full_baseline(&board, t0 + BASELINE_FULL_HOLD);
        assert!(board.conditions().is_empty());
        // A new loss raises it again.
        read_by("c");
        usage.raise_full_baseline(&board, t0 + BASELINE_FULL_HOLD * 2);
        assert_eq!(board.conditions().len(), 1);
    }
}

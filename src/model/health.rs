//! The health board: every part of the collector that can go blind says so
//! here; and the ring-buffer reader's heartbeat.
//!
//! A component either raises and clears a named condition itself (the volume
//! watch after a failed scan), or registers a check that the board runs on
//! each read (an output cannot report its own stall while it is blocked in a
//! write, so the board asks its counters). `/healthz` and `/readyz` answer from
//! [`HealthBoard::conditions`]: any condition makes the collector not ready,
//! an [`Severity::Unhealthy`] one also makes it unhealthy.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// How bad a condition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Part of what the collector should see or deliver is lost; it goes on.
    Degraded,
    /// The collector sees or delivers nothing.
    Unhealthy,
}

/// One reason the collector is not fully working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Condition {
    /// What is affected: `ebpf`, `ring_buffer_reader`, `ring_buffer`, `io_uring`, `events_dropped`, `volume_scan`, `mount_propagation`, `output:<name>`, `outputs`, `kube`, `correlation`, `usage_state`, `usage_ledger`, `usage_baseline`, `service_map`, `service_map_kernel`.
    pub component: String,
    pub severity: Severity,
    /// What happened, for a human.
    pub reason: String,
    /// When the condition was first seen (RFC 3339, UTC).
    pub since: String,
}

impl Condition {
    /// A condition first seen now.
    pub fn now(
        component: impl Into<String>,
        severity: Severity,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            component: component.into(),
            severity,
            reason: reason.into(),
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }
}

/// A check run on every read of the board.
pub type Check = Box<dyn Fn() -> Vec<Condition> + Send + Sync>;

/// Conditions raised by components, and checks run on demand.
#[derive(Default)]
pub struct HealthBoard {
    raised: Mutex<BTreeMap<String, Condition>>,
    checks: Mutex<Vec<Check>>,
}

impl std::fmt::Debug for HealthBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthBoard")
            .field("raised", &self.raised)
            .finish_non_exhaustive()
    }
}

impl HealthBoard {
    /// Raises (or updates the reason of) `component`'s condition; `since` is kept from the first raise.
    pub fn raise(&self, component: &str, severity: Severity, reason: impl Into<String>) {
        let mut raised = lock(&self.raised);
        let reason = reason.into();
        match raised.get_mut(component) {
            Some(c) => {
                c.severity = severity;
                c.reason = reason;
            }
            None => {
                raised.insert(
                    component.to_string(),
                    Condition::now(component, severity, reason),
                );
            }
        }
    }

    /// Clears `component`'s condition; returns whether there was one.
    pub fn clear(&self, component: &str) -> bool {
        lock(&self.raised).remove(component).is_some()
    }

    /// Registers a check run on every [`HealthBoard::conditions`].
    pub fn check(&self, check: Check) {
        lock(&self.checks).push(check);
    }

    /// Every current condition: the raised ones, then those the checks report.
    pub fn conditions(&self) -> Vec<Condition> {
        let mut all: Vec<Condition> = lock(&self.raised).values().cloned().collect();
        for check in lock(&self.checks).iter() {
            all.extend(check());
        }
        all
    }
}

/// The worst severity among `conditions`, `None` when there are none.
pub fn worst(conditions: &[Condition]) -> Option<Severity> {
    conditions.iter().map(|c| c.severity).max()
}

/// One line naming every condition: `component: reason; ...`.
pub fn summary(conditions: &[Condition]) -> Option<String> {
    (!conditions.is_empty()).then(|| {
        conditions
            .iter()
            .map(|c| format!("{}: {}", c.component, c.reason))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long a loss counter's condition stays after its last increase.
pub const LOSS_HOLD: Duration = Duration::from_secs(60);

/// Turns a loss counter into a condition: raised while the count grows,
/// and for [`LOSS_HOLD`] after its last increase, so that a loss is seen on
/// `/healthz` even between two probes.
#[derive(Debug)]
pub struct GrowthAlarm {
    component: String,
    /// The count last seen, and when it last grew.
    last: Mutex<(u64, Option<Instant>)>,
}

impl GrowthAlarm {
    /// An alarm for `component`; counts up to `baseline` (what was lost
    /// before, e.g. in an earlier run) raise nothing.
    pub fn new(component: impl Into<String>, baseline: u64) -> Self {
        Self {
            component: component.into(),
            last: Mutex::new((baseline, None)),
        }
    }

    /// Whether `count` grew within [`LOSS_HOLD`] of `now`.
    fn recent(&self, count: u64, now: Instant) -> bool {
        let mut last = lock(&self.last);
        if count > last.0 {
            *last = (count, Some(now));
        }
        last.1.is_some_and(|at| now.duration_since(at) < LOSS_HOLD)
    }

    /// Raises the condition on `board` with `reason(count)` while `count`
    /// grew recently, and clears it otherwise.
    pub fn update(
        &self,
        board: &HealthBoard,
        count: u64,
        now: Instant,
        reason: impl FnOnce(u64) -> String,
    ) {
        if self.recent(count, now) {
            board.raise(&self.component, Severity::Degraded, reason(count));
        } else {
            board.clear(&self.component);
        }
    }

    /// The condition for a check (see [`HealthBoard::check`]): degraded with
    /// `reason(count)` while `count` grew recently.
    pub fn condition(
        &self,
        count: u64,
        now: Instant,
        reason: impl FnOnce(u64) -> String,
    ) -> Option<Condition> {
        self.recent(count, now)
            .then(|| Condition::now(&self.component, Severity::Degraded, reason(count)))
    }
}

/// The reader thread's liveness, in milliseconds since the collector started.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    /// Records that the reader is alive.
    pub fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_loss_counter_raises_until_it_has_been_still_for_the_hold() {
        let alarm = GrowthAlarm::new("io_uring", 5);
        let t0 = Instant::now();
        let why = |n: u64| format!("{n} lost");
        assert_eq!(
            alarm.condition(5, t0, why),
            None,
            "the baseline is not a loss"
        );
        let c = alarm.condition(7, t0, why).expect("raised");
        assert_eq!(
            (c.component.as_str(), c.reason.as_str()),
            ("io_uring", "7 lost")
        );
        assert!(alarm.condition(7, t0 + LOSS_HOLD / 2, why).is_some());
        assert!(alarm.condition(7, t0 + LOSS_HOLD, why).is_none());
        assert!(alarm.condition(8, t0 + LOSS_HOLD * 2, why).is_some());

        let board = HealthBoard::default();
        let alarm = GrowthAlarm::new("usage_baseline", 0);
        alarm.update(&board, 1, t0, why);
        assert_eq!(board.conditions()[0].reason, "1 lost");
        alarm.update(&board, 1, t0 + LOSS_HOLD, why);
        assert!(board.conditions().is_empty());
    }

    #[test]
    fn raised_conditions_keep_their_first_time_and_clear() {
        let board = HealthBoard::default();
        assert!(board.conditions().is_empty());
        board.raise("volume_scan", Severity::Degraded, "first");
        let since = board.conditions()[0].since.clone();
        board.raise("volume_scan", Severity::Degraded, "second");
        let c = board.conditions();
        assert_eq!((c.len(), c[0].reason.as_str()), (1, "second"));
        assert_eq!(c[0].since, since);
        assert!(board.clear("volume_scan"));
        assert!(!board.clear("volume_scan"));
        assert!(board.conditions().is_empty());
    }

    #[test]
    fn checks_run_on_every_read_and_the_worst_wins() {
        let board = HealthBoard::default();
        board.raise("volume_scan", Severity::Degraded, "scan failed");
        board.check(Box::new(|| {
            vec![Condition::now(
                "outputs",
                Severity::Unhealthy,
                "every output failed",
            )]
        }));
        let c = board.conditions();
        assert_eq!(c.len(), 2);
        assert_eq!(worst(&c), Some(Severity::Unhealthy));
        assert_eq!(
            summary(&c).unwrap(),
            "volume_scan: scan failed; outputs: every output failed"
        );
        assert_eq!(worst(&[]), None);
    }
}

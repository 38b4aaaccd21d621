//! Counters: kernel-side, user-side, per output and per listener. Components bump them;
//! metrics, the API and the agent read them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::health::{Check, Condition, GrowthAlarm, Severity, LOSS_HOLD};

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KernelStats {
    /// Events the kernel decided to emit.
    pub matched: u64,
    /// Events written into the ring buffer.
    pub delivered: u64,
    /// Events lost because the ring buffer was full.
    pub dropped_ringbuf: u64,
    /// Syscalls recorded by the sampler.
    pub sampled: u64,
    /// Successful opens on a filesystem that holds a watched volume (examined past the device filter).
    pub opens_seen: u64,
    /// Events of the collector's own process, dropped in the kernel.
    pub own: u64,
    /// Opens counted in the kernel as repeats (reported in summary events), not emitted one by one.
    pub repeated: u64,
    /// Emitted opens whose repeats could not be counted: the `repeats` map was full.
    pub repeat_full: u64,
    /// Process records the kernel could not write (`pid_samples` was full); each makes user space rescan /proc.
    pub records_full: u64,
    /// io_uring opens submitted with IOSQE_CQE_SKIP_SUCCESS: a success posts no completion, unseen.
    pub uring_unobserved: u64,
}

/// User-space counters of the event path.
#[derive(Debug, Default)]
pub struct UserStats {
    /// Records read from the ring buffer.
    pub received: AtomicU64,
    /// Events built and handed to every output's queue (each output counts its own losses).
    pub emitted: AtomicU64,
    /// Records that did not decode.
    pub decode_errors: AtomicU64,
    /// Matched opens whose volume vanished before the record was read.
    pub unknown_volume: AtomicU64,
    /// Failed opens (denied, or on a volume-like path) that named no watched volume file.
    pub not_volume: AtomicU64,
    /// Denied opens whose path could not be placed (process, mount namespace and container spec all gone).
    pub denied_unresolved: AtomicU64,
    /// Kubelet accesses dropped by configuration.
    pub kubelet_dropped: AtomicU64,
}

/// A snapshot of [`UserStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UserStatsSnapshot {
    pub received: u64,
    pub emitted: u64,
    pub decode_errors: u64,
    pub unknown_volume: u64,
    pub not_volume: u64,
    pub denied_unresolved: u64,
    pub kubelet_dropped: u64,
}

impl UserStats {
    /// The counters' current values.
    pub fn snapshot(&self) -> UserStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UserStatsSnapshot {
            received: g(&self.received),
            emitted: g(&self.emitted),
            decode_errors: g(&self.decode_errors),
            unknown_volume: g(&self.unknown_volume),
            not_volume: g(&self.not_volume),
            denied_unresolved: g(&self.denied_unresolved),
            kubelet_dropped: g(&self.kubelet_dropped),
        }
    }
}

/// Health component of events lost in user space.
pub const EVENTS_DROPPED_COMPONENT: &str = "events_dropped";

impl UserStatsSnapshot {
    /// Events lost in user space before the outputs, by the `reason` of
    /// `kernel_monitor_events_dropped_total`.
    pub fn losses(&self) -> [(&'static str, u64); 3] {
        [
            ("decode_error", self.decode_errors),
            ("volume_gone", self.unknown_volume),
            ("denied_unresolved", self.denied_unresolved),
        ]
    }
}

/// A check (see [`super::health::HealthBoard::check`]): `events_dropped`
/// is degraded while user space loses events, and for [`LOSS_HOLD`] after.
pub fn loss_check(stats: Arc<UserStats>) -> Check {
    let alarm = GrowthAlarm::new(EVENTS_DROPPED_COMPONENT, 0);
    Box::new(move || {
        let losses = stats.snapshot().losses();
        let total = losses.iter().map(|(_, n)| n).sum();
        let reason = |n| {
            let by: Vec<String> = losses
                .iter()
                .filter(|(_, c)| *c > 0)
                .map(|(r, c)| format!("{r} {c}"))
                .collect();
            format!(
                "{n} events were lost before the outputs ({}; kernel_monitor_events_dropped_total), the last within {}s",
                by.join(", "),
                LOSS_HOLD.as_secs()
            )
        };
        alarm
            .condition(total, Instant::now(), reason)
            .into_iter()
            .collect()
    })
}

/// Adds one to a counter.
pub fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Counters of the whole pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub kernel: KernelStats,
    pub user: UserStatsSnapshot,
    /// Events the outputs lost, summed over outputs and reasons.
    pub outputs_lost: u64,
}

/// A listener, as the `listener` label of the connection metrics names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// `/healthz` and `/readyz`.
    Health,
    /// Prometheus `/metrics`.
    Metrics,
    /// The correlation API on the Unix socket.
    ApiSocket,
    /// The correlation API on TCP.
    ApiTcp,
}

impl ListenerKind {
    /// Every listener.
    pub const ALL: [Self; 4] = [Self::Health, Self::Metrics, Self::ApiSocket, Self::ApiTcp];

    /// The `listener` label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Metrics => "metrics",
            Self::ApiSocket => "api_socket",
            Self::ApiTcp => "api_tcp",
        }
    }
}

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Whether the listener is open.
    pub enabled: AtomicBool,
    /// Connections closed at once because the budget was used up.
    pub refused: AtomicU64,
    /// Connections closed, or requests answered 408, because a timeout passed.
    pub timeouts: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
}

/// Counters of every listener.
#[derive(Debug, Default)]
pub struct ListenerStats([ListenerCounters; 4]);

impl ListenerStats {
    /// The counters of `kind`.
    pub fn get(&self, kind: ListenerKind) -> &ListenerCounters {
        &self.0[kind as usize]
    }

    /// The open listeners.
    pub fn enabled(&self) -> impl Iterator<Item = (ListenerKind, &ListenerCounters)> {
        ListenerKind::ALL
            .into_iter()
            .map(|k| (k, self.get(k)))
            .filter(|(_, c)| c.enabled.load(Ordering::Relaxed))
    }
}

/// Counters and state of one output; every event offered ends in exactly one counter.
#[derive(Debug)]
pub struct OutputStats {
    /// `stdout`, `file`, `otlp_logs` or `channel`.
    pub name: &'static str,
    /// Events delivered: written (JSON lines) or accepted by the receiver (OTLP logs).
    pub delivered: AtomicU64,
    /// Events shed because the output's queue was full.
    pub queue_full: AtomicU64,
    /// Events lost because the output had failed (a write error, a closed consumer).
    pub output_failed: AtomicU64,
    /// Events lost with a failed export request (OTLP logs).
    pub export_failed: AtomicU64,
    /// Events left in the queue when the shutdown deadline passed.
    pub shutdown: AtomicU64,
    /// Export requests that failed (OTLP logs).
    pub failed_requests: AtomicU64,
    /// Unix time in milliseconds at which the current write began; 0 when idle.
    busy_since_ms: AtomicU64,
    /// Why the output failed, from when.
    failure: Mutex<Option<Condition>>,
    /// Raised while events are shed (queue full, failed exports).
    shedding: GrowthAlarm,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl OutputStats {
    /// Counters of the output `name`, all zero.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            delivered: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            output_failed: AtomicU64::new(0),
            export_failed: AtomicU64::new(0),
            shutdown: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
            busy_since_ms: AtomicU64::new(0),
            failure: Mutex::new(None),
            shedding: GrowthAlarm::new(format!("output:{name}"), 0),
        }
    }

    /// The health component name, `output:<name>`.
    pub fn component(&self) -> String {
        format!("output:{}", self.name)
    }

    /// Events this output lost, for any reason.
    pub fn lost(&self) -> u64 {
        [
            &self.queue_full,
            &self.output_failed,
            &self.export_failed,
            &self.shutdown,
        ]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .sum()
    }

    /// Marks the output failed (the first failure is kept) and logs it once.
    pub fn fail(&self, why: impl std::fmt::Display) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            tracing::error!(
                output = self.name,
                "output failed, its events are counted as lost from now on: {why}"
            );
            *failure = Some(Condition::now(
                self.component(),
                Severity::Degraded,
                format!("failed: {why}; its events are counted in kernel_monitor_output_shed{{reason=\"output_failed\"}}"),
            ));
        }
    }

    /// Whether the output has failed.
    pub fn failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Runs `write`, marking the output busy meanwhile (a write that blocks is seen as a stall).
    pub fn busy<T>(&self, write: impl FnOnce() -> T) -> T {
        self.busy_since_ms.store(unix_ms(), Ordering::Relaxed);
        let out = write();
        self.busy_since_ms.store(0, Ordering::Relaxed);
        out
    }

    /// The output's condition: failed, blocked in one write for
    /// `stall_after` or more, or shedding events (its queue was full or an
    /// export failed within [`LOSS_HOLD`]).
    pub fn condition(&self, stall_after: Duration) -> Option<Condition> {
        if let Some(c) = &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            return Some(c.clone());
        }
        self.stalled(stall_after).or_else(|| self.shedding())
    }

    /// Degraded while events are shed, and for [`LOSS_HOLD`] after.
    fn shedding(&self) -> Option<Condition> {
        let shed =
            self.queue_full.load(Ordering::Relaxed) + self.export_failed.load(Ordering::Relaxed);
        self.shedding.condition(shed, Instant::now(), |n| {
            format!(
                "{n} events shed: its queue was full or an export failed (kernel_monitor_output_shed_total{{output=\"{}\"}}), the last within {}s",
                self.name,
                LOSS_HOLD.as_secs()
            )
        })
    }

    /// Blocked in one write for `stall_after` or more.
    fn stalled(&self, stall_after: Duration) -> Option<Condition> {
        let since = self.busy_since_ms.load(Ordering::Relaxed);
        let blocked = Duration::from_millis(unix_ms().saturating_sub(since));
        (since != 0 && blocked >= stall_after).then(|| {
            let mut c = Condition::now(
                self.component(),
                Severity::Degraded,
                format!(
                    "blocked in one write for {}s; events beyond its queue are shed (kernel_monitor_output_shed{{reason=\"queue_full\"}})",
                    blocked.as_secs()
                ),
            );
            if let Some(t) = chrono::DateTime::from_timestamp_millis(since as i64) {
                c.since = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            }
            c
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_that_sheds_is_degraded_though_never_blocked() {
        let out = OutputStats::new("file");
        assert_eq!(out.condition(Duration::from_secs(5)), None);
        bump(&out.delivered);
        assert_eq!(out.condition(Duration::from_secs(5)), None);
        bump(&out.queue_full);
        bump(&out.export_failed);
        let c = out.condition(Duration::from_secs(5)).expect("shedding");
        assert_eq!(c.component, "output:file");
        assert_eq!(c.severity, Severity::Degraded);
        assert!(c.reason.starts_with("2 events shed"), "{}", c.reason);
        out.fail("disk full");
        let c = out.condition(Duration::from_secs(5)).expect("failed");
        assert!(c.reason.starts_with("failed: disk full"), "{}", c.reason);
    }

    #[test]
    fn user_space_losses_degrade_health_by_reason() {
        let stats = Arc::new(UserStats::default());
        let check = loss_check(Arc::clone(&stats));
        assert!(check().is_empty());
        bump(&stats.not_volume);
        bump(&stats.kubelet_dropped);
        assert!(check().is_empty(), "filtered by design, not lost");
        bump(&stats.unknown_volume);
        bump(&stats.denied_unresolved);
        bump(&stats.denied_unresolved);
        let c = check();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].component, EVENTS_DROPPED_COMPONENT);
        assert_eq!(c[0].severity, Severity::Degraded);
        assert!(
            c[0].reason.starts_with(
                "3 events were lost before the outputs (volume_gone 1, denied_unresolved 2;"
            ),
            "{}",
            c[0].reason
        );
    }
}

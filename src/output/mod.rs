//! Event outputs: the fan-out of each access event to bounded per-output
//! queues ([`Fanout`], [`Sink`]), JSON lines on stdout and, optionally, in a
//! file rotated by size ([`json`]), OTLP log records ([`otlp_logs`], encoded
//! by [`otlp_proto`], sent by [`otlp_export`]),
//! metrics and self-metrics ([`metrics`]), and the OpenTelemetry and
//! Prometheus wiring ([`telemetry`]).
//!
//! The reader hands each event to every output's [`Sink`] with `try_send`, so
//! no output can block the kernel reader or another output: a full queue sheds
//! the event for that output alone and counts it. Each JSON output has its own
//! writer thread, which serializes and writes whole lines in batches flushed
//! whenever its queue runs empty (or a batch reaches [`BATCH_BYTES`]), so a
//! rotated file never ends in half a line. A write error marks the output
//! failed (health and metrics say so) and every later event is counted as lost,
//! never silently dropped. [`OutputStats`] is what health and metrics read.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use crate::model::event::AccessEvent;
use crate::model::health::{Condition, Severity};

mod fanout;
pub mod json;
pub mod metrics;
pub mod otlp_export;
pub mod otlp_logs;
pub mod otlp_proto;
pub mod telemetry;

pub use crate::model::stats::OutputStats;
pub use fanout::Fanout;
pub use json::{
    spawn_json_outputs, write_json_lines, FileOutput, JsonWriters, Outputs, BATCH_BYTES,
};

/// An output blocked in one write for this long is reported as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// The conditions of `outputs`, and `outputs` unhealthy when every one has failed.
pub fn conditions(outputs: &[Arc<OutputStats>], stall_after: Duration) -> Vec<Condition> {
    let mut all: Vec<Condition> = outputs
        .iter()
        .filter_map(|o| o.condition(stall_after))
        .collect();
    if !outputs.is_empty() && outputs.iter().all(|o| o.failed()) {
        all.push(Condition::now(
            "outputs",
            Severity::Unhealthy,
            "every output has failed: no event is delivered",
        ));
    }
    all
}

/// The reader's end of one output: a bounded queue and its counters.
#[derive(Debug, Clone)]
pub struct Sink {
    queue: SyncSender<Arc<AccessEvent>>,
    stats: Arc<OutputStats>,
    /// Count an event as delivered once queued (the receiver is the consumer itself).
    handoff: bool,
}

impl Sink {
    /// A sink named `name` with a queue of `capacity` events, and the queue's receiving end.
    pub fn channel(name: &'static str, capacity: usize) -> (Self, Receiver<Arc<AccessEvent>>) {
        let (queue, rx) = sync_channel(capacity.max(1));
        let stats = Arc::new(OutputStats::new(name));
        let sink = Self {
            queue,
            stats,
            handoff: false,
        };
        (sink, rx)
    }

    /// Like [`Sink::channel`] for a consumer that is the receiver itself (the
    /// demo, tests, benchmarks): an event is delivered once it is queued.
    pub fn handoff(name: &'static str, capacity: usize) -> (Self, Receiver<Arc<AccessEvent>>) {
        let (mut sink, rx) = Self::channel(name, capacity);
        sink.handoff = true;
        (sink, rx)
    }

    /// The output's counters.
    pub fn stats(&self) -> &Arc<OutputStats> {
        &self.stats
    }

    /// Queues `event` without blocking; a full queue or a gone consumer is counted.
    pub fn offer(&self, event: &Arc<AccessEvent>) {
        match self.queue.try_send(Arc::clone(event)) {
            Ok(()) if self.handoff => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.fail("its consumer is gone");
                self.stats.output_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

//! The fan-out: each access event is counted in the per-access metrics and
//! offered to every output's queue.

use std::sync::Arc;

use super::metrics::AccessMetrics;
use super::Sink;
use crate::model::event::AccessEvent;
use crate::model::stats::{bump, UserStats};

/// Where the reader thread hands each enriched event.
#[derive(Debug)]
pub struct Fanout {
    /// Every output's queue; each event is offered to all of them.
    pub sinks: Vec<Sink>,
    /// Per-access metrics.
    pub metrics: AccessMetrics,
    /// `emitted` counts each event handed over.
    pub stats: Arc<UserStats>,
}

impl Fanout {
    /// Counts `event` (made `latency_ms` after its syscall) and offers it to every output.
    pub fn deliver(&mut self, event: AccessEvent, latency_ms: f64) {
        self.metrics.record(&event, latency_ms);
        let event = Arc::new(event);
        for sink in &self.sinks {
            sink.offer(&event);
        }
        bump(&self.stats.emitted);
    }

    /// Adds what the per-access metrics tallied to their counters.
    pub fn flush(&mut self) {
        self.metrics.flush();
    }
}

//! The kernel's losses as health conditions: events the ring buffer had no
//! room for (`ring_buffer`), and io_uring opens that post no completion
//! (`io_uring`). Each is degraded while its counter grows and for
//! [`LOSS_HOLD`] after (see [`GrowthAlarm`]); the counters stay the exact
//! record.

use std::time::Instant;

use super::maps::StatsReader;
use crate::model::health::{Check, GrowthAlarm, LOSS_HOLD};

/// Health component of events lost to a full ring buffer.
pub const RING_BUFFER_COMPONENT: &str = "ring_buffer";
/// Health component of io_uring opens the programs cannot see.
pub const IO_URING_COMPONENT: &str = "io_uring";

/// A check (for [`crate::model::health::HealthBoard::check`]) that reads
/// the kernel counters on each read of the board.
pub fn loss_check(stats: StatsReader) -> Check {
    let ring = GrowthAlarm::new(RING_BUFFER_COMPONENT, 0);
    let uring = GrowthAlarm::new(IO_URING_COMPONENT, 0);
    Box::new(move || {
        let Ok(k) = stats.read() else {
            return Vec::new();
        };
        let now = Instant::now();
        let hold = LOSS_HOLD.as_secs();
        let ring = ring.condition(k.dropped_ringbuf, now, |n| {
            format!("{n} events were lost because the ring buffer was full (kernel_monitor_events_dropped_total{{reason=\"ring_buffer_full\"}}), the last within {hold}s: raise ring_buffer_bytes, or set repeat_window_ms to aggregate repeated opens")
        });
        let uring = uring.condition(k.uring_unobserved, now, |n| {
            format!("{n} io_uring opens were submitted with IOSQE_CQE_SKIP_SUCCESS, whose success posts no completion, so which file they opened is not seen (kernel_monitor_io_uring_unobserved_total), the last within {hold}s")
        });
        ring.into_iter().chain(uring).collect()
    })
}

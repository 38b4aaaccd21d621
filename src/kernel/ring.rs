//! The ring-buffer poller: hands every record to a callback, and runs a
//! second callback after each batch, until told to stop; then it detaches
//! the programs and drains what the kernel already delivered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libbpf_rs::RingBufferBuilder;

use super::probe::{Probe, ProbeError};

/// What the poller calls.
pub trait Consumer {
    /// One raw record (decoding is the consumer's job).
    fn record(&mut self, data: &[u8]);
    /// After each batch (at least every `flush`); `stopping` on the last one.
    fn batch_done(&mut self, stopping: bool);
}

/// How soon the poller looks again after a batch: the kernel rate-limits
/// wakeups, so the last records of a burst may have come without one.
const REPOLL: Duration = Duration::from_millis(1);

/// Polls `probe`'s event ring until `stop` is set: records go to
/// `consumer` when a record wakes the poller (the kernel's adaptive
/// wakeups), [`REPOLL`] after a batch, and at the latest `flush` after they
/// were written (the safety net). At stop the programs are detached first,
/// so nothing arrives after the final drain.
pub fn poll(
    probe: &mut Probe<'_>,
    consumer: &mut impl Consumer,
    flush: Duration,
    stop: &AtomicBool,
) -> Result<(), ProbeError> {
    let ring = probe.events_map()?;
    let cell = std::cell::RefCell::new(consumer);
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&ring, |data: &[u8]| {
            cell.borrow_mut().record(data);
            0
        })
        .map_err(ProbeError::Ring)?;
    let rb = builder.build().map_err(ProbeError::Ring)?;
    let mut timeout = flush;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut got = 0;
        if stopping {
            probe.detach();
        } else {
            got += rb.poll_raw(timeout).max(0);
        }
        // Records written without a wakeup are drained here.
        let drained = rb.consume_raw();
        if drained < 0 {
            tracing::warn!(
                "ring buffer consume failed: {}",
                std::io::Error::from_raw_os_error(-drained)
            );
        }
        got += drained.max(0);
        cell.borrow_mut().batch_done(stopping);
        if stopping {
            return Ok(());
        }
        timeout = if got > 0 { REPOLL } else { flush };
    }
}

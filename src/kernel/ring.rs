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

/// Polls `probe`'s event ring until `stop` is set: records go to
/// `consumer`, at the latest `flush` after they were written. At stop the
/// programs are detached first, so nothing arrives after the final drain.
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
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            probe.detach();
        } else {
            // Events are written without wakeups (see the BPF design notes), so
            // the poll mostly times out: consume() is what drains the ring.
            let _ = rb.poll(flush);
        }
        if let Err(e) = rb.consume() {
            tracing::warn!("ring buffer consume failed: {e}");
        }
        cell.borrow_mut().batch_done(stopping);
        if stopping {
            return Ok(());
        }
    }
}

//! Access events as OTLP log records, one per access (what a record holds:
//! [`super::otlp_proto`]).
//!
//! The output has its own bounded queue, filled by the reader with
//! `try_send`, so it never blocks the kernel reader. Its encoder thread
//! drains the queue every [`POLL`] (not woken per event) and writes each
//! batch straight into an export request; [`IN_FLIGHT`] sender threads send
//! the requests ([`super::otlp_export`]), so a receiver's latency does not
//! cap the rate. When every sender is busy the encoder waits and the queue
//! takes up the slack. Every event ends exported, or counted in its
//! [`OutputStats`]: queue full, export failed (or rejected by the
//! receiver), or left at the shutdown deadline.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_sdk::Resource;

use super::otlp_export::LogSender;
use super::otlp_proto::LogsRequest;
use super::OutputStats;
use crate::model::event::AccessEvent;

/// Longest wait for a batch to fill once its first event arrived.
const LINGER: Duration = Duration::from_millis(200);
/// How often the encoder looks at the queue while a batch fills.
const POLL: Duration = Duration::from_millis(5);
/// Export requests sent at once at most.
pub const IN_FLIGHT: usize = 4;

/// The running OTLP log output.
#[derive(Debug)]
pub struct EventLogOutput {
    threads: Vec<JoinHandle<()>>,
    deadline: Arc<OnceLock<Instant>>,
    pub stats: Arc<OutputStats>,
}

/// An encoded request and how many records it holds.
type Batch = (Vec<u8>, u64);

fn past(deadline: &OnceLock<Instant>) -> bool {
    deadline.get().is_some_and(|d| Instant::now() >= *d)
}

/// Sends the requests it takes from `batches` until the encoder is gone.
fn send_loop(
    mut sender: LogSender,
    batches: &Mutex<Receiver<Batch>>,
    stats: &OutputStats,
    deadline: &OnceLock<Instant>,
) {
    loop {
        let next = batches.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((body, n)) = next else {
            return;
        };
        if past(deadline) {
            stats.shutdown.fetch_add(n, Ordering::Relaxed);
            continue;
        }
        match stats.busy(|| sender.send(body)) {
            Ok(rejected) => {
                let rejected = rejected.min(n);
                stats.delivered.fetch_add(n - rejected, Ordering::Relaxed);
                stats.export_failed.fetch_add(rejected, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!("OTLP log export of {n} records failed: {e}");
                stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                stats.export_failed.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

struct Encoder {
    request: LogsRequest,
    batches: SyncSender<Batch>,
    stats: Arc<OutputStats>,
    deadline: Arc<OnceLock<Instant>>,
    /// Records per export request.
    max_batch: usize,
}

impl Encoder {
    /// Adds what is queued to the batch, up to its size; false once the queue is closed.
    fn drain(&mut self, events: &Receiver<Arc<AccessEvent>>) -> bool {
        while self.request.len() < self.max_batch {
            match events.try_recv() {
                Ok(ev) => self.request.push(&ev),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn run(mut self, events: Receiver<Arc<AccessEvent>>) {
        // A batch is whatever arrives within LINGER of its first event, up to
        // max_batch records; a closed queue ends the last batch at once.
        let mut open = true;
        while open {
            let Ok(first) = events.recv() else { break };
            let until = Instant::now() + LINGER;
            self.request.push(&first);
            drop(first);
            loop {
                open = self.drain(&events);
                let now = Instant::now();
                if !open || self.request.len() >= self.max_batch || now >= until {
                    break;
                }
                std::thread::sleep(POLL.min(until - now));
            }
            if past(&self.deadline) {
                let left = self.request.len() as u64 + events.try_iter().count() as u64;
                self.request.clear();
                self.stats.shutdown.fetch_add(left, Ordering::Relaxed);
                break;
            }
            let n = self.request.len() as u64;
            if self.batches.send((self.request.take(), n)).is_err() {
                // No sender left (they only stop when this thread is gone).
                self.stats.export_failed.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

impl EventLogOutput {
    /// Starts exporting the events that arrive on `events` through
    /// `sender`, as records of `resource`, `max_batch` records per request.
    pub fn spawn(
        sender: LogSender,
        resource: &Resource,
        events: Receiver<Arc<AccessEvent>>,
        max_batch: usize,
        stats: Arc<OutputStats>,
    ) -> std::io::Result<Self> {
        let request = LogsRequest::new(
            resource,
            crate::output::telemetry::METER_NAME,
            env!("CARGO_PKG_VERSION"),
        );
        let deadline = Arc::new(OnceLock::new());
        // A rendezvous: a request waits in the encoder until a sender is free.
        let (batches, pending) = sync_channel::<Batch>(0);
        let pending = Arc::new(Mutex::new(pending));
        let mut threads = Vec::with_capacity(IN_FLIGHT + 1);
        for i in 0..IN_FLIGHT {
            let (sender, pending) = (sender.clone(), Arc::clone(&pending));
            let (stats, deadline) = (Arc::clone(&stats), Arc::clone(&deadline));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("otlp-logs-send{i}"))
                    .spawn(move || send_loop(sender, &pending, &stats, &deadline))?,
            );
        }
        let encoder = Encoder {
            request,
            batches,
            stats: Arc::clone(&stats),
            deadline: Arc::clone(&deadline),
            max_batch: max_batch.max(1),
        };
        threads.push(
            std::thread::Builder::new()
                .name("otlp-logs".into())
                .spawn(move || encoder.run(events))?,
        );
        Ok(Self {
            threads,
            deadline,
            stats,
        })
    }

    /// Waits for the queue to drain (its senders must be gone), giving up on
    /// what is left at `deadline` (counted as shed).
    pub fn finish(mut self, deadline: Instant) {
        let _ = self.deadline.set(deadline);
        // The encoder (last) ends first, then the senders with what it handed over.
        for t in self.threads.drain(..).rev() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_exported_or_counted_and_the_deadline_holds() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Accepts connections and never answers.
        let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = hole.local_addr().unwrap();
        std::thread::spawn(move || {
            let held: Vec<_> = hole.incoming().collect();
            drop(held);
        });
        let exporter = LogSender::http(
            &format!("http://{addr}/v1/logs"),
            &Default::default(),
            Duration::from_millis(200),
        )
        .unwrap();
        let stats = Arc::new(OutputStats::new("otlp_logs"));
        let (tx, rx) = std::sync::mpsc::sync_channel(1000);
        let out = EventLogOutput::spawn(
            exporter,
            &Resource::builder_empty().build(),
            rx,
            10,
            Arc::clone(&stats),
        )
        .unwrap();
        let ev: AccessEvent = serde_json::from_str(
            r#"{"event_type":"secret_access","timestamp":"2026-11-21T17:04:01.179182086Z",
            "pod_uid":"u","namespace":"payments","pod_name":"p","config_name":"db","volume_name":"db",
            "volume_type":"secret","key":"password","path":"/etc/db/password","mount_path":"/m",
            "access":"read","result":"ok","syscall":"openat","process":{"pid":1,"tid":1,
            "command":"cat","uid":0,"gid":0,"cgroup_id":1,"cgroup_v1_id":0,"mnt_ns":1,
            "cgroup_path":null},"container":null,"reader_pod_uid":null,"workload":null,
            "service_account":null,"labels":{},"source":null,"service_account_token":false}"#,
        )
        .unwrap();
        for _ in 0..1000 {
            tx.send(Arc::new(ev.clone())).unwrap();
        }
        drop(tx);
        let started = Instant::now();
        out.finish(started + Duration::from_millis(500));
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(g(&stats.delivered), 0);
        assert!(g(&stats.export_failed) > 0, "{stats:?}");
        assert!(
            g(&stats.shutdown) > 0,
            "the deadline cut the drain short: {stats:?}"
        );
        assert_eq!(
            g(&stats.export_failed) + g(&stats.shutdown),
            1000,
            "every event is exported or counted: {stats:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded by the deadline plus one export timeout"
        );
    }
}

//! Event outputs: bounded per-output queues, and JSON lines on stdout and,
//! optionally, in a file rotated by size.
//!
//! The reader hands each event to every output's [`Sink`] with `try_send`, so
//! no output can block the kernel reader or another output: a full queue sheds
//! the event for that output alone and counts it. Each JSON output has its own
//! writer thread, which serializes and writes whole lines in batches flushed
//! whenever its queue runs empty (or a batch reaches [`BATCH_BYTES`]), so a
//! rotated file never ends in half a line. A write error marks the output
//! failed (health and metrics say so) and every later event is counted as lost,
//! never silently dropped. [`OutputStats`] is what health and metrics read.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

use crate::event::AccessEvent;
use crate::health::{Condition, Severity};

/// Largest batch of lines written at once.
pub const BATCH_BYTES: usize = 64 * 1024;
/// An output blocked in one write for this long is reported as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// A JSON-lines file rotated by size: `path`, then `path.1` (newest) … `path.<keep>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutput {
    pub path: PathBuf,
    /// Rotate once the file passes this many bytes (whole lines are never split).
    pub max_bytes: usize,
    /// Rotated files kept besides the current one.
    pub keep: usize,
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outputs {
    pub stdout: bool,
    pub file: Option<FileOutput>,
    /// Capacity of each output's queue, in events.
    pub queue: usize,
}

impl Default for Outputs {
    fn default() -> Self {
        Self {
            stdout: false,
            file: None,
            queue: 4096,
        }
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

    /// The output's condition: failed, or blocked in one write for `stall_after` or more.
    pub fn condition(&self, stall_after: Duration) -> Option<Condition> {
        if let Some(c) = &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            return Some(c.clone());
        }
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

/// Writes each event as one JSON line to `out`, flushing whenever the queue
/// runs empty, until every sender is gone. After a write error the output is
/// failed: the batch and every later event are counted as lost.
pub fn write_json_lines(
    events: &Receiver<Arc<AccessEvent>>,
    out: &mut dyn Write,
    stats: &OutputStats,
) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = events.recv() {
        let mut lines = 0u64;
        let mut next = Some(first);
        while let Some(ev) = next {
            // Serializing into a Vec cannot fail: every field is a string, number or map of strings.
            if serde_json::to_writer(&mut batch, &*ev).is_ok() {
                batch.push(b'\n');
            }
            lines += 1;
            next = if batch.len() >= BATCH_BYTES {
                None
            } else {
                events.try_recv().ok()
            };
        }
        let written = stats.busy(|| out.write_all(&batch).and_then(|()| out.flush()));
        batch.clear();
        match written {
            Ok(()) => stats.delivered.fetch_add(lines, Ordering::Relaxed),
            Err(e) => {
                stats.fail(e);
                stats.output_failed.fetch_add(lines, Ordering::Relaxed);
                for _ in events.iter() {
                    stats.output_failed.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
    }
}

/// The writer threads of the JSON outputs.
#[derive(Debug)]
pub struct JsonWriters {
    threads: Vec<Writer>,
}

impl JsonWriters {
    /// Waits for each writer to drain its queue (the senders must be gone),
    /// until `deadline`; returns the outputs that had not finished by then.
    pub fn join(self, deadline: Instant) -> Vec<Arc<OutputStats>> {
        let mut late = Vec::new();
        for (stats, thread) in self.threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                late.push(stats);
            }
        }
        late
    }
}

fn rotated_file(f: &FileOutput) -> std::io::Result<FileRotate<AppendCount>> {
    if let Some(dir) = f.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(FileRotate::new(
        &f.path,
        AppendCount::new(f.keep),
        ContentLimit::BytesSurpassed(f.max_bytes.max(1)),
        Compression::None,
        None,
    ))
}

/// A running writer thread and its output's counters.
type Writer = (Arc<OutputStats>, JoinHandle<()>);

fn spawn_one(
    name: &'static str,
    queue: usize,
    mut out: Box<dyn Write + Send>,
) -> std::io::Result<(Sink, Writer)> {
    let (sink, rx) = Sink::channel(name, queue);
    let stats = Arc::clone(sink.stats());
    let thread = std::thread::Builder::new()
        .name(format!("output-{name}"))
        .spawn(move || write_json_lines(&rx, &mut out, &stats))?;
    Ok((sink.clone(), (Arc::clone(sink.stats()), thread)))
}

/// Starts one writer thread per configured JSON output; returns their sinks.
pub fn spawn_json_outputs(outputs: &Outputs) -> std::io::Result<(Vec<Sink>, JsonWriters)> {
    let mut sinks = Vec::new();
    let mut threads = Vec::new();
    if outputs.stdout {
        let (sink, t) = spawn_one("stdout", outputs.queue, Box::new(std::io::stdout()))?;
        sinks.push(sink);
        threads.push(t);
    }
    if let Some(f) = &outputs.file {
        let (sink, t) = spawn_one("file", outputs.queue, Box::new(rotated_file(f)?))?;
        sinks.push(sink);
        threads.push(t);
    }
    Ok((sinks, JsonWriters { threads }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ProcessInfo;

    fn sample() -> AccessEvent {
        AccessEvent {
            event_type: "secret_access".into(),
            timestamp: "2024-01-21T10:30:45.000000001Z".into(),
            pod_uid: Some("u".into()),
            namespace: None,
            pod_name: None,
            config_name: Some("db".into()),
            volume_name: Some("db".into()),
            volume_type: Some("secret".into()),
            key: Some("password".into()),
            path: Some("/etc/db/password".into()),
            mount_path: Some("/var/lib/kubelet/pods/u/volumes/kubernetes.io~secret/db".into()),
            access: "read".into(),
            result: "ok".into(),
            syscall: "openat".into(),
            process: ProcessInfo {
                pid: 1,
                tid: 1,
                command: "cat".into(),
                uid: 0,
                gid: 0,
                cgroup_id: 9,
                cgroup_v1_id: 0,
                mnt_ns: 4,
                cgroup_path: Some("/system.slice/cat.service".into()),
            },
            container: None,
            reader_pod_uid: None,
            workload: None,
            service_account: None,
            labels: Default::default(),
            source: None,
            service_account_token: false,
        }
    }

    #[test]
    fn one_json_object_per_line() {
        let (sink, rx) = Sink::channel("test", 4);
        let ev = Arc::new(sample());
        sink.offer(&ev);
        sink.offer(&ev);
        let stats = Arc::clone(sink.stats());
        drop(sink);
        let mut buf = Vec::new();
        write_json_lines(&rx, &mut buf, &stats);
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 2);
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: AccessEvent = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(back, *ev);
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert!(v["namespace"].is_null() && v["pod_name"].is_null());
        assert_eq!(v["process"]["command"], "cat");
    }

    #[test]
    fn file_output_rotates_by_size_without_splitting_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let outputs = Outputs {
            stdout: false,
            file: Some(FileOutput {
                path: path.clone(),
                max_bytes: 4096,
                keep: 2,
            }),
            queue: 8,
        };
        let (sinks, writers) = spawn_json_outputs(&outputs).unwrap();
        let stats = Arc::clone(sinks[0].stats());
        let mut ev: AccessEvent =
            serde_json::from_str(&serde_json::to_string(&sample()).unwrap()).unwrap();
        // 400 events of ~550 bytes fill at least four 64 KiB batches: four
        // writes, each past max_bytes, whatever the thread scheduling.
        for i in 0..400 {
            ev.key = Some(format!("key-{i}"));
            // A queue of 8: wait for room rather than shed.
            while i as u64 - stats.delivered.load(Ordering::Relaxed) >= 8 {
                std::thread::yield_now();
            }
            sinks[0].offer(&Arc::new(ev.clone()));
        }
        drop(sinks);
        assert!(writers
            .join(Instant::now() + Duration::from_secs(10))
            .is_empty());
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 400);
        assert_eq!(stats.lost(), 0);
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(
            files.len(),
            3,
            "the current file and 2 rotated ones: {files:?}"
        );
        let mut keys = Vec::new();
        for f in [
            path.with_extension("jsonl.2"),
            path.with_extension("jsonl.1"),
            path.clone(),
        ] {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(text.ends_with('\n'), "{f:?} ends mid-line");
            assert!(text.len() < 4096 + BATCH_BYTES, "{f:?} too large");
            for line in text.lines() {
                let v: AccessEvent = serde_json::from_str(line).expect("whole JSON lines only");
                keys.push(v.key.unwrap());
            }
        }
        assert_eq!(
            keys.last().map(String::as_str),
            Some("key-399"),
            "newest events are in the current file"
        );
        let n: Vec<usize> = keys.iter().map(|k| k[4..].parse().unwrap()).collect();
        assert!(
            n.windows(2).all(|w| w[1] == w[0] + 1),
            "kept files hold consecutive events, oldest first"
        );
    }

    /// A writer that fails every write, like stdout after its reader closed the pipe.
    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_output_counts_every_later_event_and_reports_itself() {
        let (sink, rx) = Sink::channel("stdout", 16);
        let stats = Arc::clone(sink.stats());
        let thread = std::thread::spawn(move || write_json_lines(&rx, &mut ClosedPipe, &stats));
        let ev = Arc::new(sample());
        for _ in 0..10 {
            sink.offer(&ev);
        }
        let stats = Arc::clone(sink.stats());
        drop(sink);
        thread.join().unwrap();
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 0);
        assert_eq!(stats.output_failed.load(Ordering::Relaxed), 10);
        assert_eq!(stats.lost(), 10);
        let c = stats
            .condition(STALL_AFTER)
            .expect("a failed output has a condition");
        assert_eq!(
            (c.component.as_str(), c.severity),
            ("output:stdout", Severity::Degraded)
        );
        assert!(c.reason.contains("roken pipe"), "{c:?}");
        let all = conditions(&[stats], STALL_AFTER);
        assert_eq!(
            all.last().unwrap().component,
            "outputs",
            "the only output failed: {all:?}"
        );
        assert_eq!(all.last().unwrap().severity, Severity::Unhealthy);
    }

    #[test]
    fn a_blocked_write_is_a_stall() {
        let stats = Arc::new(OutputStats::new("file"));
        assert!(
            stats.condition(Duration::ZERO).is_none(),
            "idle is not a stall"
        );
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let s = Arc::clone(&stats);
        let t = std::thread::spawn(move || {
            s.busy(|| {
                entered_tx.send(()).unwrap();
                released.recv().unwrap();
            })
        });
        entered.recv().unwrap();
        let c = stats.condition(Duration::ZERO).expect("blocked in a write");
        assert!(c.reason.starts_with("blocked in one write"), "{c:?}");
        assert!(stats.condition(Duration::from_secs(3600)).is_none());
        release.send(()).unwrap();
        t.join().unwrap();
        assert!(stats.condition(Duration::ZERO).is_none());
        assert!(conditions(&[stats], Duration::ZERO).is_empty());
    }
}

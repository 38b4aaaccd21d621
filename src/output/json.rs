//! JSON-lines outputs: stdout, and a file rotated by size, each with its own
//! writer thread.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

use super::{OutputStats, Sink};
use crate::model::event::AccessEvent;

/// Largest batch of lines written at once.
pub const BATCH_BYTES: usize = 64 * 1024;
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
    use crate::model::event::ProcessInfo;
    use crate::model::health::Severity;
    use crate::output::{conditions, STALL_AFTER};

    fn sample() -> AccessEvent {
        AccessEvent {
            event_type: "secret_access".into(),
            timestamp: "2024-01-21T10:30:45.000000001Z".into(),
            pod_uid: Some("u".into()),
            namespace: None,
            pod_name: None,
            config_name: Some("db".into()),
            volume_name: Some("db".into()),
            volume_type: Some(crate::model::volume::VolumeType::Secret),
            key: Some("password".into()),
            revision: None,
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
            session: None,
            foreign_read: None,
            anomaly: None,
            repeats: None,
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

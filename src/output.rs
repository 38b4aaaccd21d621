//! Event outputs: JSON lines on stdout and, optionally, in a file rotated by size.
//!
//! One writer thread serializes each event once and writes whole lines to
//! every output, in batches flushed whenever the queue runs empty (or a batch
//! reaches [`BATCH_BYTES`]), so a rotated file never ends in half a line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

use crate::event::AccessEvent;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    pub stdout: bool,
    pub file: Option<FileOutput>,
}

/// Writes each event as one JSON line to every sink, flushing whenever the
/// queue runs empty. Returns the number of events written once every sender is gone.
pub fn write_json_lines(
    events: &Receiver<AccessEvent>,
    sinks: &mut [&mut dyn Write],
) -> std::io::Result<u64> {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut written = 0;
    while let Ok(first) = events.recv() {
        let mut next = Some(first);
        while let Some(ev) = next {
            serde_json::to_writer(&mut batch, &ev)?;
            batch.push(b'\n');
            written += 1;
            next = if batch.len() >= BATCH_BYTES {
                None
            } else {
                events.try_recv().ok()
            };
        }
        for sink in sinks.iter_mut() {
            sink.write_all(&batch)?;
            sink.flush()?;
        }
        batch.clear();
    }
    Ok(written)
}

/// Runs [`write_json_lines`] on its own thread for the configured outputs.
pub fn spawn_writer(
    events: Receiver<AccessEvent>,
    outputs: &Outputs,
) -> std::io::Result<JoinHandle<std::io::Result<u64>>> {
    let mut file = match &outputs.file {
        Some(f) => {
            if let Some(dir) = f.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            Some(FileRotate::new(
                &f.path,
                AppendCount::new(f.keep),
                ContentLimit::BytesSurpassed(f.max_bytes.max(1)),
                Compression::None,
                None,
            ))
        }
        None => None,
    };
    let stdout = outputs.stdout;
    std::thread::Builder::new()
        .name("json-writer".into())
        .spawn(move || {
            let mut out = std::io::stdout().lock();
            let mut sinks: Vec<&mut dyn Write> = Vec::new();
            if stdout {
                sinks.push(&mut out);
            }
            if let Some(f) = file.as_mut() {
                sinks.push(f);
            }
            write_json_lines(&events, &mut sinks)
        })
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
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let ev = sample();
        tx.send(ev.clone()).unwrap();
        tx.send(ev.clone()).unwrap();
        drop(tx);
        let mut buf = Vec::new();
        assert_eq!(write_json_lines(&rx, &mut [&mut buf]).unwrap(), 2);
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: AccessEvent = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(back, ev);
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
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        let writer = spawn_writer(rx, &outputs).unwrap();
        let mut ev: AccessEvent =
            serde_json::from_str(&serde_json::to_string(&sample()).unwrap()).unwrap();
        // 400 events of ~550 bytes fill at least four 64 KiB batches: four
        // writes, each past max_bytes, whatever the thread scheduling.
        for i in 0..400 {
            ev.key = Some(format!("key-{i}"));
            tx.send(ev.clone()).unwrap();
        }
        drop(tx);
        assert_eq!(writer.join().unwrap().unwrap(), 400);
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
}

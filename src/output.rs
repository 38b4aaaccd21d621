//! Event outputs: JSON lines on stdout.

use std::io::Write;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use crate::event::AccessEvent;

/// Writes each event as one JSON line to `out`, flushing whenever the queue
/// runs empty. Returns the number of lines written once every sender is gone.
pub fn write_json_lines<W: Write>(events: &Receiver<AccessEvent>, out: W) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(out);
    let mut written = 0;
    while let Ok(first) = events.recv() {
        let mut next = Some(first);
        while let Some(ev) = next {
            serde_json::to_writer(&mut out, &ev)?;
            out.write_all(b"\n")?;
            written += 1;
            next = events.try_recv().ok();
        }
        out.flush()?;
    }
    Ok(written)
}

/// [`write_json_lines`] to stdout on its own thread.
pub fn spawn_stdout_writer(
    events: Receiver<AccessEvent>,
) -> std::io::Result<JoinHandle<std::io::Result<u64>>> {
    std::thread::Builder::new()
        .name("json-stdout".into())
        .spawn(move || write_json_lines(&events, std::io::stdout().lock()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ProcessInfo;

    #[test]
    fn one_json_object_per_line() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let ev = AccessEvent {
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
        };
        tx.send(ev.clone()).unwrap();
        tx.send(ev.clone()).unwrap();
        drop(tx);
        let mut buf = Vec::new();
        assert_eq!(write_json_lines(&rx, &mut buf).unwrap(), 2);
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: AccessEvent = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(back, ev);
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert!(v["namespace"].is_null() && v["pod_name"].is_null());
        assert_eq!(v["process"]["command"], "cat");
    }
}

//! Repeat aggregation (`repeat_window_ms`) with the real BPF programs: a
//! process's repeated opens of one file become its first event plus
//! summaries with the exact count, and a flooding pod cannot hide another
//! pod's single read, even with a 256 KiB ring.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pod_cgroup, privileged, Harness, EXE, POD};
use config_access_collector::demo::container::ContainerProc;
use config_access_collector::model::event::AccessEvent;
use config_access_collector::model::volume::VolumeType;

/// The pod whose single read must not be hidden by the flood.
const OTHER_POD: &str = "0e0e0e0e-1111-4222-8333-444444444444";

/// Opens of `key` by process `pid` that `events` stand for.
fn opens_of(events: &[AccessEvent], pid: u32, key: &str) -> u64 {
    events
        .iter()
        .filter(|e| e.process.pid == pid && e.key.as_deref() == Some(key))
        .map(AccessEvent::opens)
        .sum()
}

/// Collects events until `done` holds for them (or `limit` passes), then
/// for `settle` more, so that an extra event would be seen too.
fn collect_until(
    h: &mut Harness,
    limit: Duration,
    settle: Duration,
    done: impl Fn(&[AccessEvent]) -> bool,
) -> Vec<AccessEvent> {
    let mut out = std::mem::take(&mut h.backlog);
    let end = Instant::now() + limit;
    while !done(&out) && Instant::now() < end {
        if let Ok(ev) = h.events.recv_timeout(Duration::from_millis(50)) {
            out.push(Arc::unwrap_or_clone(ev));
        }
    }
    let settled = Instant::now() + settle;
    while Instant::now() < settled {
        if let Ok(ev) = h.events.recv_timeout(Duration::from_millis(50)) {
            out.push(Arc::unwrap_or_clone(ev));
        }
    }
    out
}

#[test]
fn repeated_opens_are_the_first_event_and_summaries_with_the_exact_count() {
    if !privileged("repeated_opens_are_the_first_event_and_summaries_with_the_exact_count") {
        return;
    }
    let mut h = Harness::start_with(|c| c.repeat_window_ms = 100);
    let (pid, results) = h.run(&h.container(&[
        "open:/etc/db/password",
        "flood:5000:/etc/db/password",
        // The window closes: the next open is an event of its own again.
        "sleep:300",
        "flood:3000:/etc/db/password",
        "open:/etc/db/username",
        "write:/etc/db/password",
    ]));
    assert_eq!(results[0].1, "ok");
    assert_eq!(results[1].1, "5000");
    assert_eq!(results[2].1, "3000");
    assert_eq!(results[3].1, "ok");
    assert_eq!(results[4].1, "ok", "opened for writing (nothing written)");
    // The process is gone: its last counts come with the next sweeps.
    let evs = collect_until(
        &mut h,
        Duration::from_secs(10),
        Duration::from_secs(1),
        |e| opens_of(e, pid, "password") >= 8002,
    );
    let evs: Vec<_> = evs.into_iter().filter(|e| e.process.pid == pid).collect();
    // 1 + 5000 + 3000 reads and the write.
    assert_eq!(opens_of(&evs, pid, "password"), 8002, "{evs:#?}");
    let (writes, reads): (Vec<&AccessEvent>, Vec<&AccessEvent>) = evs
        .iter()
        .filter(|e| e.key.as_deref() == Some("password"))
        .partition(|e| e.access == "write");
    assert!(
        writes.len() == 1 && writes[0].repeats.is_none(),
        "a write is never a repeat of a read: {writes:#?}"
    );
    let (summaries, single): (Vec<&AccessEvent>, Vec<&AccessEvent>) =
        reads.into_iter().partition(|e| e.repeats.is_some());
    assert!(
        (2..100).contains(&single.len()),
        "the first open, and the first after the pause, are events of their own: {single:#?}"
    );
    let first = single.iter().min_by_key(|e| &e.timestamp).unwrap();
    assert_eq!(first.path.as_deref(), Some("/etc/db/password"));
    assert!(!summaries.is_empty(), "{evs:#?}");
    for s in &summaries {
        let r = s.repeats.as_ref().unwrap();
        assert!(r.count > 0, "{s:#?}");
        assert!(r.since <= s.timestamp, "{s:#?}");
        assert!(s.path.is_none(), "a summary names no path: {s:#?}");
        assert_eq!(
            (s.event_type.as_str(), s.volume_name.as_deref()),
            ("secret_access", Some("db-creds"))
        );
        assert_eq!((s.access.as_str(), s.result.as_str()), ("read", "ok"));
        assert_eq!(s.process.command, first.process.command);
        assert_eq!(s.pod_uid.as_deref(), Some(POD));
    }
    let username: Vec<_> = evs
        .iter()
        .filter(|e| e.key.as_deref() == Some("username"))
        .collect();
    assert_eq!(username.len(), 1, "another file is another key: {evs:#?}");
    assert!(username[0].repeats.is_none());

    let k = h.collector().stats().kernel;
    assert_eq!(k.dropped_ringbuf, 0, "{k:?}");
    assert_eq!(k.repeat_full, 0, "{k:?}");
    let summed: u64 = summaries.iter().map(|s| s.opens()).sum();
    assert!(k.repeated >= summed, "{k:?}: {summed} opens in summaries");
}

#[test]
fn repeated_denied_opens_are_the_first_event_and_summaries_with_the_exact_count() {
    if !privileged("repeated_denied_opens_are_the_first_event_and_summaries_with_the_exact_count") {
        return;
    }
    const TRIES: u64 = 3000;
    let mut h = Harness::start_with(|c| c.repeat_window_ms = 100);
    // The process stays until its summaries are read: user space resolves a
    // denied path through the process.
    let step = format!("flood:{TRIES}:/etc/db/api-key");
    // The same file by another path: another key.
    let mut args = h.container(&[&step, "open:/etc/db/./api-key", "wait"]);
    args.uid = Some(65534);
    let mut p = ContainerProc::spawn(Path::new(EXE), &args).unwrap();
    assert_eq!(p.next_result().unwrap().1, "0", "every open was denied");
    assert_eq!(p.next_result().unwrap().1, "EACCES");
    let pid = p.pid;
    let evs = collect_until(
        &mut h,
        Duration::from_secs(10),
        Duration::from_millis(1500),
        |e| opens_of(e, pid, "api-key") > TRIES,
    );
    p.release();
    p.finish().unwrap();
    let evs: Vec<_> = evs.into_iter().filter(|e| e.process.pid == pid).collect();
    assert_eq!(opens_of(&evs, pid, "api-key"), TRIES + 1, "{evs:#?}");
    let (tries, other): (Vec<&AccessEvent>, Vec<&AccessEvent>) = evs
        .iter()
        .filter(|e| e.key.as_deref() == Some("api-key"))
        .partition(|e| e.path.as_deref() == Some("/etc/db/api-key"));
    assert!(
        tries.len() < 100,
        "{} events stand for {TRIES} opens",
        tries.len()
    );
    let summaries: Vec<_> = tries.iter().filter(|e| e.repeats.is_some()).collect();
    assert!(!summaries.is_empty(), "{tries:#?}");
    for e in &tries {
        assert_eq!(
            (e.result.as_str(), e.volume_name.as_deref(), e.process.uid),
            ("EACCES", Some("db-creds"), 65534),
            "{e:#?}"
        );
    }
    assert_eq!(other.len(), 1, "another path is another key: {evs:#?}");
    assert_eq!(other[0].path.as_deref(), Some("/etc/db/./api-key"));
    assert!(other[0].repeats.is_none());
    let k = h.collector().stats().kernel;
    assert_eq!((k.dropped_ringbuf, k.repeat_full), (0, 0), "{k:?}");
}

#[test]
fn a_flooding_pod_cannot_hide_another_pods_single_read() {
    if !privileged("a_flooding_pod_cannot_hide_another_pods_single_read") {
        return;
    }
    const FLOOD: u64 = 1_000_000;
    // The default repeat window, and the smallest ring this test's issue names.
    let mut h = Harness::start_with(|c| c.ring_buffer_bytes = 256 << 10);
    let other =
        h.sb.add_volume(OTHER_POD, VolumeType::Secret, "other-creds", true)
            .unwrap();
    h.sb.write_atomic(&other, &[("token", b"t", 0o644)])
        .unwrap();
    assert!(
        h.wait_for(Duration::from_secs(5), |c| c
            .registry()
            .by_mount_path(&other)
            .is_some()),
        "the other pod's volume was not picked up"
    );

    let flood_cg =
        h.sb.make_cgroup(&pod_cgroup("burstable", &"f1".repeat(32)))
            .unwrap();
    let flooders: Vec<ContainerProc> = (0..2)
        .map(|_| {
            let step = format!("flood:{FLOOD}:/etc/db/password");
            let mut args = h.container(&[&step]);
            args.cgroup = Some(flood_cg.clone());
            ContainerProc::spawn(Path::new(EXE), &args).unwrap()
        })
        .collect();
    // And a third process of the pod tries a Secret it may not read, as fast;
    // it stays until its summaries are read (user space resolves a denied
    // path through the process).
    let step = format!("flood:{FLOOD}:/etc/db/api-key");
    let mut args = h.container(&[&step, "wait"]);
    args.cgroup = Some(flood_cg.clone());
    args.uid = Some(65534);
    let mut intruder = ContainerProc::spawn(Path::new(EXE), &args).unwrap();
    // All flood now; the other pod reads its Secret once meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let other_uid = OTHER_POD.replace('-', "_");
    let reader_cg = h
        .sb
        .make_cgroup(&format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{other_uid}.slice/cri-containerd-{}.scope",
            "0b".repeat(32)
        ))
        .unwrap();
    let mut args = h.container(&["open:/etc/other/token"]);
    args.binds.push(format!("{}:/etc/other", other.display()));
    args.cgroup = Some(reader_cg);
    let (reader, results) = h.run(&args);
    assert_eq!(results[0].1, "ok");

    let mut pids = Vec::new();
    for mut p in flooders {
        let (_, n) = p.next_result().unwrap();
        assert_eq!(n, FLOOD.to_string(), "every open of the flood succeeded");
        pids.push(p.pid);
        assert_eq!(p.finish().unwrap(), 0);
    }
    assert_eq!(
        intruder.next_result().unwrap().1,
        "0",
        "every try was denied"
    );
    let flood_total =
        |e: &[AccessEvent]| -> u64 { pids.iter().map(|&pid| opens_of(e, pid, "password")).sum() };
    let intruder_pid = intruder.pid;
    let denied_total = |e: &[AccessEvent]| opens_of(e, intruder_pid, "api-key");
    let evs = collect_until(
        &mut h,
        Duration::from_secs(20),
        Duration::from_secs(2),
        |e| flood_total(e) >= 2 * FLOOD && denied_total(e) >= FLOOD,
    );
    intruder.release();
    assert_eq!(intruder.finish().unwrap(), 0);

    let read: Vec<_> = evs.iter().filter(|e| e.process.pid == reader).collect();
    assert_eq!(read.len(), 1, "the other pod's single read: {read:#?}");
    assert_eq!(read[0].pod_uid.as_deref(), Some(OTHER_POD));
    assert_eq!(read[0].key.as_deref(), Some("token"));
    assert!(read[0].repeats.is_none());
    assert_eq!(flood_total(&evs), 2 * FLOOD, "the flood's count is exact");
    assert_eq!(
        denied_total(&evs),
        FLOOD,
        "the denied flood's count is exact"
    );
    pids.push(intruder_pid);
    let flood_events = evs.iter().filter(|e| pids.contains(&e.process.pid)).count();
    assert!(
        flood_events < 1000,
        "{flood_events} events stand for {} opens",
        3 * FLOOD
    );
    let k = h.collector().stats().kernel;
    assert_eq!(k.dropped_ringbuf, 0, "{k:?}");
}

//! Signals on the real BPF programs and the sandbox: reads from exec
//! sessions (a process that joined the container's namespaces and cgroup
//! from outside, as `runc exec` does, and its children) against the
//! container's own processes (its init and descendants), and foreign reads
//! (another pod's container, a host process that is not the kubelet).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{pod_cgroup, privileged, Harness, EXE};
use config_access_collector::demo::container::{ContainerProc, ExecArgs};
use config_access_collector::model::event::AccessEvent;

/// Events until `n` arrived that `keep` selects (at most 10 s).
fn collect(h: &mut Harness, n: usize, keep: impl Fn(&AccessEvent) -> bool) -> Vec<AccessEvent> {
    let mut got: Vec<AccessEvent> = std::mem::take(&mut h.backlog)
        .into_iter()
        .filter(|e| keep(e))
        .collect();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < n && std::time::Instant::now() < end {
        if let Ok(ev) = h.events.recv_timeout(Duration::from_millis(100)) {
            if keep(&ev) {
                got.push((*ev).clone());
            }
        }
    }
    got
}

/// (command, key, session) of each event, sorted.
fn sessions(events: &[AccessEvent]) -> Vec<(String, String, Option<String>)> {
    let mut v: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.process.command.clone(),
                e.key.clone().unwrap_or_default(),
                e.session.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn exec_sessions_and_their_children_are_flagged_the_containers_own_processes_are_not() {
    let test = "exec_sessions_and_their_children_are_flagged_the_containers_own_processes_are_not";
    if !privileged(test) {
        return;
    }
    let cid = "e5".repeat(32);
    let (mut h, _api, _rt) = Harness::with_fake_api(&cid, |_| {});
    let cgroup = h.sb.make_cgroup(&pod_cgroup("burstable", &cid)).unwrap();
    // The container: its first process is pid 1 of a new pid namespace and
    // reads a key; a child of it reads another.
    let init = ExecArgs {
        cgroup: Some(cgroup.clone()),
        unshare_pid: true,
        comm: Some("app".into()),
        ..h.container(&[
            "open:/etc/db/password",
            "child:open:/etc/db/username",
            "wait",
        ])
    };
    let mut init = ContainerProc::spawn(Path::new(EXE), &init).unwrap();
    assert_eq!(init.next_result().unwrap().1, "ok");
    assert_eq!(init.next_result().unwrap().1, "ok");
    // An exec session: joins the container's cgroup, mount and pid
    // namespaces from outside, reads a key, and so does its child.
    let exec = ExecArgs {
        cgroup: Some(cgroup),
        join_mount_ns: Some(init.pid),
        join_pid_ns: Some(init.pid),
        chroot: Some(h.sb.container_root()),
        comm: Some("sh".into()),
        steps: ["open:/etc/db/password", "child:open:/etc/db/api-key"]
            .map(String::from)
            .to_vec(),
        ..ExecArgs::default()
    };
    let (_, results) = h.run(&exec);
    assert!(results.iter().all(|r| r.1 == "ok"), "{results:?}");
    let events = collect(&mut h, 4, |e| {
        e.result == "ok" && e.volume_name.as_deref() == Some("db-creds")
    });
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        sessions(&events),
        [
            ("app".into(), "password".into(), some("init")),
            ("app".into(), "username".into(), some("init")),
            ("sh".into(), "api-key".into(), some("exec")),
            ("sh".into(), "password".into(), some("exec")),
        ],
        "{events:#?}"
    );
    // Both are the pod's own container: not foreign.
    assert!(
        events.iter().all(|e| e.foreign_read.is_none()),
        "{events:#?}"
    );
    init.release();
    assert_eq!(init.finish().unwrap(), 0);
}

#[test]
fn reads_by_another_pod_or_a_host_process_are_foreign_the_kubelets_writes_are_not() {
    let test = "reads_by_another_pod_or_a_host_process_are_foreign_the_kubelets_writes_are_not";
    if !privileged(test) {
        return;
    }
    let cid = "f6".repeat(32);
    let (mut h, _api, _rt) = Harness::with_fake_api(&cid, |_| {});
    let kubelet_path = format!("open:{}", h.secret.join("password").display());
    // A container of another pod reads the Secret through the kubelet's path.
    let other_uid = "0e0e0e0e-1111-4222-8333-444444444444";
    let other = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope",
        other_uid.replace('-', "_"),
        "a7".repeat(32)
    );
    let cg = h.sb.make_cgroup(&other).unwrap();
    let intruder = ExecArgs {
        cgroup: Some(cg),
        comm: Some("intruder".into()),
        steps: vec![kubelet_path.clone()],
        ..ExecArgs::default()
    };
    let (_, results) = h.run(&intruder);
    assert_eq!(results[0].1, "ok");
    // A host process (not the kubelet) does the same.
    let host = ExecArgs {
        comm: Some("backup-agent".into()),
        steps: vec![kubelet_path],
        ..ExecArgs::default()
    };
    let (_, results) = h.run(&host);
    assert_eq!(results[0].1, "ok");
    // The pod's own container reads it too: not foreign.
    let cg = h.sb.make_cgroup(&pod_cgroup("burstable", &cid)).unwrap();
    let own = ExecArgs {
        cgroup: Some(cg),
        comm: Some("app".into()),
        ..h.container(&["open:/etc/db/password"])
    };
    h.run(&own);
    // The kubelet (a host process of that name) rewrites a key.
    let kubelet = ExecArgs {
        comm: Some("kubelet".into()),
        steps: vec![format!("write:{}", h.secret.join("password").display())],
        ..ExecArgs::default()
    };
    let (_, results) = h.run(&kubelet);
    assert_eq!(results[0].1, "ok");

    let events = collect(&mut h, 4, |e| e.key.as_deref() == Some("password"));
    let by = |command: &str| {
        events
            .iter()
            .find(|e| e.process.command == command)
            .unwrap_or_else(|| panic!("no event of {command}: {events:#?}"))
    };
    let f = by("intruder")
        .foreign_read
        .as_ref()
        .expect("another pod is foreign");
    assert_eq!(
        (f.reader.as_str(), f.pod_uid.as_deref()),
        ("pod", Some(other_uid))
    );
    let f = by("backup-agent")
        .foreign_read
        .as_ref()
        .expect("a host process is foreign");
    assert_eq!((f.reader.as_str(), f.pod_uid.as_deref()), ("host", None));
    assert_eq!(by("app").foreign_read, None, "{:#?}", by("app"));
    let write = by("kubelet");
    assert_eq!(write.event_type, "kubelet_write", "{write:#?}");
    assert_eq!(write.foreign_read, None, "{write:#?}");
}

//! Signals on the real BPF programs and the sandbox: reads from exec
//! sessions (a process that joined the container's namespaces and cgroup
//! from outside, as `runc exec` does, and its children) against the
//! container's own processes (its init and descendants), and foreign reads
//! (another pod's container, a host process that is not the kubelet).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{pod_cgroup, privileged, wait, Harness, EXE};
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

/// The demo pod with a second container `sidecar` (runtime id `sidecar`).
fn with_sidecar(app: &str, sidecar: &str) -> serde_json::Value {
    let mut pod = common::fake_apiserver::demo_pod(common::POD, app);
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "sidecar", "image": "registry.example/sidecar:1.0"}));
    pod["status"]["containerStatuses"]
        .as_array_mut()
        .unwrap()
        .push(
            serde_json::json!({"name": "sidecar", "image": "registry.example/sidecar:1.0",
            "imageID": "", "ready": true, "restartCount": 0,
            "containerID": format!("containerd://{sidecar}")}),
        );
    pod
}

/// A process of container `cid` (pod cgroup `cgroup`) opens `path` and
/// waits; its event is collected while it lives (so its executable is
/// known), then it exits.
fn read_one(h: &mut Harness, cgroup: &str, chrooted: bool, path: &str) -> AccessEvent {
    let cg = h.sb.make_cgroup(cgroup).unwrap();
    let steps = [format!("open:{path}"), "wait".to_string()];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let args = if chrooted {
        ExecArgs {
            cgroup: Some(cg),
            ..h.container(&steps)
        }
    } else {
        ExecArgs {
            cgroup: Some(cg),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            ..ExecArgs::default()
        }
    };
    let mut p = ContainerProc::spawn(Path::new(EXE), &args).unwrap();
    assert_eq!(p.next_result().unwrap().1, "ok", "{path}");
    let pid = p.pid;
    let events = collect(h, 1, |e| e.process.pid == pid);
    p.release();
    assert_eq!(p.finish().unwrap(), 0);
    assert_eq!(events.len(), 1, "{events:#?}");
    events.into_iter().next().unwrap()
}

/// `kind` of the event's anomaly, if any.
fn anomaly(ev: &AccessEvent) -> Option<&str> {
    ev.anomaly.as_ref().map(|a| a.kind.as_str())
}

#[test]
fn the_baseline_learns_then_flags_first_seen_once_per_workload_and_survives_a_restart() {
    let test = "the_baseline_learns_then_flags_first_seen_once_per_workload_and_survives_a_restart";
    if !privileged(test) {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let edit = |c: &mut config_access_collector::config::Config| {
        c.baseline_learning = "2s".into();
        c.state_dir = state.path().to_string_lossy().into_owned();
    };
    let (app, sidecar) = ("b7".repeat(32), "c8".repeat(32));
    let (mut h, api, _rt) = Harness::with_fake_api(&app, edit);
    api.modify(with_sidecar(&app, &sidecar));
    let store = h.collector().pods().unwrap().clone();
    wait("the sidecar in the pod metadata", || {
        store
            .get(common::POD)
            .is_some_and(|p| p.containers.len() == 2)
    });
    let (app_cg, sidecar_cg) = (
        pod_cgroup("burstable", &app),
        pod_cgroup("burstable", &sidecar),
    );

    // Learning: nothing is flagged.
    let learned = std::time::Instant::now();
    let ev = read_one(&mut h, &app_cg, true, "/etc/db/password");
    assert_eq!(anomaly(&ev), None, "{ev:#?}");
    std::thread::sleep(Duration::from_secs(3).saturating_sub(learned.elapsed()));

    // After it: a known access is not flagged, a new key once.
    assert_eq!(
        anomaly(&read_one(&mut h, &app_cg, true, "/etc/db/password")),
        None
    );
    let ev = read_one(&mut h, &app_cg, true, "/etc/db/username");
    let a = ev.anomaly.as_ref().unwrap_or_else(|| panic!("{ev:#?}"));
    assert_eq!(
        (a.kind.as_str(), a.workload.as_str()),
        ("first_seen", "StatefulSet/payments-api-0")
    );
    assert_eq!(
        anomaly(&read_one(&mut h, &app_cg, true, "/etc/db/username")),
        None
    );
    // A new container of the workload reading a known key is new too.
    let ev = read_one(&mut h, &sidecar_cg, true, "/etc/db/password");
    assert_eq!(anomaly(&ev), Some("first_seen"), "{ev:#?}");

    // The API lists the workload's baseline.
    let sock = h.sb.scratch().join("api.sock");
    let get = |path: &str| {
        common::exchange(
            std::os::unix::net::UnixStream::connect(&sock).unwrap(),
            "GET",
            path,
            &[],
            b"",
        )
    };
    let (status, list) = get("/v1/baseline");
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["kind"], "StatefulSet", "{list:#}");
    assert_eq!(
        (list[0]["learning"].as_bool(), list[0]["entries"].as_u64()),
        (Some(false), Some(3))
    );
    let path = "/v1/baseline/payments/StatefulSet/payments-api-0";
    let (status, detail) = get(path);
    assert_eq!(status, 200, "{detail}");
    let executable = detail["accesses"][0]["executable"].as_str().unwrap();
    assert!(
        executable.ends_with("config-access-collector"),
        "{detail:#}"
    );
    assert_eq!(get("/v1/baseline/payments/StatefulSet/nothing").0, 404);

    // A restart keeps the baseline: known accesses stay known.
    h.collector.take().unwrap().stop();
    let mut cfg = common::default_config(&h.sb);
    cfg.kube_api_url = Some(api.url());
    edit(&mut cfg);
    let (collector, events) =
        config_access_collector::agent::Collector::start_with_channel(&cfg).unwrap();
    h.collector = Some(collector);
    h.events = events;
    let store = h.collector().pods().unwrap().clone();
    wait("pod metadata after the restart", || {
        store.get(common::POD).is_some()
    });
    assert_eq!(
        anomaly(&read_one(&mut h, &app_cg, true, "/etc/db/username")),
        None
    );
    assert_eq!(
        anomaly(&read_one(&mut h, &app_cg, true, "/etc/db/api-key")),
        Some("first_seen"),
        "still past its window after the restart"
    );

    // A workload seen later on this node starts its own window.
    let uid2 = "2f2f2f2f-3333-4444-8555-666666666666";
    let cid2 = "d9".repeat(32);
    let dir =
        h.sb.add_volume(
            uid2,
            config_access_collector::model::volume::VolumeType::Secret,
            "worker-creds",
            true,
        )
        .unwrap();
    h.sb.write_atomic(&dir, &[("token", b"w", 0o644)]).unwrap();
    api.add(common::fake_apiserver::pod(
        uid2,
        "worker-0",
        "payments",
        "node-a",
        serde_json::json!([{"name": "worker-creds", "secret": {"secretName": "worker-secret"}}]),
        &cid2,
    ));
    wait("the worker's volume and metadata", || {
        store.get(uid2).is_some()
            && h.collector()
                .registry()
                .volumes()
                .iter()
                .any(|v| v.pod_uid == uid2)
    });
    let worker_cg = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{cid2}.scope",
        uid2.replace('-', "_")
    );
    let kubelet_path = dir.join("token").display().to_string();
    let ev = read_one(&mut h, &worker_cg, false, &kubelet_path);
    assert_eq!(ev.pod_uid.as_deref(), Some(uid2));
    assert_eq!(anomaly(&ev), None, "its own window: {ev:#?}");

    // A new image of a container extends its workload's window.
    let mut pod = with_sidecar(&app, &sidecar);
    pod["spec"]["containers"][1]["image"] = "registry.example/sidecar:2.0".into();
    api.modify(pod);
    wait("the sidecar's new image", || {
        store.get(common::POD).is_some_and(|p| {
            p.containers
                .iter()
                .any(|c| &*c.image == "registry.example/sidecar:2.0")
        })
    });
    let ev = read_one(&mut h, &sidecar_cg, true, "/etc/db/username");
    assert_eq!(anomaly(&ev), None, "the window is extended: {ev:#?}");
    let (_, list) = get("/v1/baseline");
    let first = list
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "payments-api-0")
        .unwrap();
    assert_eq!(first["learning"], true, "{list:#}");

    // A reset forgets the first workload: it learns again.
    let del = common::exchange(
        std::os::unix::net::UnixStream::connect(&sock).unwrap(),
        "DELETE",
        path,
        &[],
        b"",
    );
    assert_eq!(del.0, 204, "{}", del.1);
    assert_eq!(get(path).0, 404);
    let ev = read_one(&mut h, &sidecar_cg, true, "/etc/db/api-key");
    assert_eq!(anomaly(&ev), None, "learning again: {ev:#?}");
    let (_, detail) = get(path);
    assert_eq!(detail["entries"], 1, "only what it read since: {detail:#}");
}

//! End-to-end tests of the kernel pipeline: the real BPF programs in this
//! kernel, real tmpfs and bind mounts, mount namespaces and cgroups.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{exactly_one, privileged, Harness, POD};
use config_access_collector::demo::container::ContainerProc;
use config_access_collector::model::event::AccessEvent;
use config_access_collector::model::volume::VolumeType;

fn host_mnt_ns() -> u32 {
    std::fs::metadata("/proc/self/ns/mnt").unwrap().ino() as u32
}

fn assert_volume(ev: &AccessEvent, event_type: &str, volume: &str, key: &str, mount_path: &Path) {
    assert_eq!(ev.event_type, event_type, "{ev:#?}");
    assert_eq!(ev.volume_name.as_deref(), Some(volume), "{ev:#?}");
    assert_eq!(ev.config_name.as_deref(), Some(volume), "{ev:#?}");
    assert_eq!(ev.key.as_deref(), Some(key), "{ev:#?}");
    assert_eq!(ev.pod_uid.as_deref(), Some(POD));
    assert_eq!(ev.mount_path.as_deref(), Some(mount_path.to_str().unwrap()));
    assert!(ev.namespace.is_none() && ev.pod_name.is_none());
    let ts = chrono::DateTime::parse_from_rfc3339(&ev.timestamp).expect("RFC 3339 timestamp");
    let age = chrono::Utc::now().signed_duration_since(ts);
    assert!(
        age.num_seconds().abs() < 60,
        "timestamp {} is not now",
        ev.timestamp
    );
}

#[test]
fn host_path_open_through_the_key_symlink() {
    if !privileged("host_path_open_through_the_key_symlink") {
        return;
    }
    let mut h = Harness::start();
    let path = h.secret.join("password");
    let args = config_access_collector::demo::container::ExecArgs {
        steps: vec![format!("open:{}", path.display())],
        comm: Some("reader".into()),
        ..Default::default()
    };
    let (pid, results) = h.run(&args);
    assert_eq!(results[0].1, "ok");
    let ev = exactly_one(h.events_of(pid), "host path");
    assert_volume(&ev, "secret_access", "db-creds", "password", &h.secret);
    assert_eq!(ev.path.as_deref(), Some(path.to_str().unwrap()));
    assert_eq!(
        (ev.access.as_str(), ev.result.as_str(), ev.syscall.as_str()),
        ("read", "ok", "openat")
    );
    assert_eq!(ev.volume_type.as_deref(), Some("secret"));
    assert_eq!(ev.process.command, "reader");
    assert_eq!(
        (ev.process.pid, ev.process.tid, ev.process.uid),
        (pid, pid, 0)
    );
    assert_eq!(ev.process.mnt_ns, host_mnt_ns());
}

#[test]
fn bind_mount_in_a_new_mount_namespace_and_pod_cgroup() {
    if !privileged("bind_mount_in_a_new_mount_namespace_and_pod_cgroup") {
        return;
    }
    let mut h = Harness::start();
    let cg = h
        .sb
        .make_cgroup(&format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope", POD.replace('-', "_"), "ab".repeat(32)))
        .unwrap();
    let cgroup_id = std::fs::metadata(&cg).unwrap().ino();
    let mut args = h.container(&["open:/etc/db/password"]);
    args.cgroup = Some(cg);
    let (pid, results) = h.run(&args);
    assert_eq!(results[0].1, "ok");
    let ev = exactly_one(h.events_of(pid), "bind mount");
    assert_volume(&ev, "secret_access", "db-creds", "password", &h.secret);
    assert_eq!(ev.path.as_deref(), Some("/etc/db/password"));
    assert_eq!(
        ev.process.cgroup_id, cgroup_id,
        "cgroup v2 id is the cgroup directory's inode"
    );
    assert_ne!(
        ev.process.mnt_ns,
        host_mnt_ns(),
        "the reader ran in its own mount namespace"
    );
}

#[test]
fn relative_to_cwd_and_to_a_dirfd() {
    if !privileged("relative_to_cwd_and_to_a_dirfd") {
        return;
    }
    let mut h = Harness::start();
    let (pid, results) = h.run(&h.container(&["chdir:/etc/config", "open:app.yaml"]));
    assert_eq!(results[0].1, "ok");
    let ev = exactly_one(h.events_of(pid), "relative to cwd");
    assert_volume(&ev, "configmap_access", "app-config", "app.yaml", &h.config);
    assert_eq!(ev.path.as_deref(), Some("app.yaml"));

    let (pid, results) = h.run(&h.container(&["at:/etc/db:username"]));
    assert_eq!(results[0].1, "ok");
    let ev = exactly_one(h.events_of(pid), "relative to a dirfd");
    assert_volume(&ev, "secret_access", "db-creds", "username", &h.secret);
    assert_eq!(ev.path.as_deref(), Some("username"));
}

#[test]
fn openat2_and_legacy_open_are_seen() {
    if !privileged("openat2_and_legacy_open_are_seen") {
        return;
    }
    let mut h = Harness::start();
    let (pid, results) = h.run(&h.container(&[
        "chdir:/etc/db",
        "openat2:password",
        "sys_open:/etc/db/username",
    ]));
    assert!(results.iter().all(|r| r.1 == "ok"), "{results:?}");
    let mut evs = h.events_of(pid);
    evs.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
    assert_eq!(evs.len(), 2, "{evs:#?}");
    assert_eq!(
        (evs[0].syscall.as_str(), evs[0].key.as_deref()),
        ("openat2", Some("password"))
    );
    assert_eq!(
        (evs[1].syscall.as_str(), evs[1].key.as_deref()),
        ("open", Some("username"))
    );
}

#[test]
fn atomic_writer_key_after_an_update_of_data() {
    if !privileged("atomic_writer_key_after_an_update_of_data") {
        return;
    }
    let mut h = Harness::start();
    let old_ino = std::fs::metadata(h.secret.join("password")).unwrap().ino();
    let secret = h.secret.clone();
    h.sb.write_atomic(
        &secret,
        &[("username", b"app2", 0o644), ("password", b"pw2", 0o644)],
    )
    .unwrap();
    assert_ne!(
        std::fs::metadata(h.secret.join("password")).unwrap().ino(),
        old_ino,
        "the update made a new file"
    );
    let (pid, results) = h.run(&h.container(&["open:/etc/db/password"]));
    assert_eq!(results[0].1, "ok");
    let ev = exactly_one(h.events_of(pid), "after ..data swap");
    assert_volume(&ev, "secret_access", "db-creds", "password", &h.secret);
}

#[test]
fn kubelet_writes_are_their_own_class_or_dropped() {
    if !privileged("kubelet_writes_are_their_own_class_or_dropped") {
        return;
    }
    // This test process plays the kubelet: its writes must not be filtered
    // as the collector's own opens.
    let mut h = Harness::start_with(|c| c.ignore_own_opens = false);
    let secret = h.secret.clone();
    h.sb.write_atomic(&secret, &[("password", b"new", 0o644)])
        .unwrap();
    let evs: Vec<_> = h
        .drain(Duration::from_millis(300), Duration::from_secs(5))
        .into_iter()
        .filter(|e| e.process.command == "kubelet")
        .collect();
    assert!(!evs.is_empty(), "the kubelet's write was not reported");
    for e in &evs {
        assert_eq!(e.event_type, "kubelet_write", "{e:#?}");
        assert_eq!(e.access, "write");
    }

    let mut h = Harness::start_with(|c| {
        c.ignore_own_opens = false;
        c.kubelet_writes = config_access_collector::model::settings::KubeletWrites::Drop;
    });
    let secret = h.secret.clone();
    h.sb.write_atomic(&secret, &[("password", b"new", 0o644)])
        .unwrap();
    let evs = h.drain(Duration::from_millis(300), Duration::from_secs(5));
    assert!(
        evs.iter().all(|e| e.process.command != "kubelet"),
        "{evs:#?}"
    );
    assert!(h.collector().stats().user.kubelet_dropped > 0);
}

#[test]
fn tmpfs_volume_created_after_start() {
    if !privileged("tmpfs_volume_created_after_start") {
        return;
    }
    let mut h = Harness::start();
    let dir =
        h.sb.add_volume(POD, VolumeType::Secret, "late-secret", true)
            .unwrap();
    h.sb.write_atomic(&dir, &[("tls.key", b"k", 0o644)])
        .unwrap();
    let found = h.wait_for(Duration::from_secs(2), |c| {
        c.registry()
            .by_mount_path(&dir)
            .is_some_and(|v| v.dir.ino == 1 && v.keys().any(|k| k == "tls.key"))
    });
    assert!(found, "the new tmpfs volume was not picked up within 2 s");
    let mut args = h.container(&["open:/etc/late/tls.key"]);
    args.binds.push(format!("{}:/etc/late", dir.display()));
    let (pid, results) = h.run(&args);
    assert_eq!(results[0].1, "ok");
    let ev = exactly_one(h.events_of(pid), "late tmpfs volume");
    assert_volume(&ev, "secret_access", "late-secret", "tls.key", &dir);
}

#[test]
fn subpath_single_file_bind_mount() {
    if !privileged("subpath_single_file_bind_mount") {
        return;
    }
    let mut h = Harness::start();
    // The kubelet resolves the subPath and bind-mounts the file under volume-subpaths/.
    let real = std::fs::canonicalize(h.config.join("app.yaml")).unwrap();
    let subpath =
        h.sb.kubelet_root()
            .join(format!("pods/{POD}/volume-subpaths/app-config/app/0"));
    h.sb.bind(&real, &subpath).unwrap();
    let mut args = h.container(&["open:/srv/app.yaml"]);
    args.binds = vec![format!("{}:/srv/app.yaml", subpath.display())];
    let (pid, results) = h.run(&args);
    assert_eq!(results[0].1, "ok");
    let ev = exactly_one(h.events_of(pid), "subPath");
    assert_volume(&ev, "configmap_access", "app-config", "app.yaml", &h.config);
    assert_eq!(ev.path.as_deref(), Some("/srv/app.yaml"));
}

#[test]
fn projected_service_account_token() {
    if !privileged("projected_service_account_token") {
        return;
    }
    let mut h = Harness::start();
    let (pid, results) =
        h.run(&h.container(&["open:/var/run/secrets/kubernetes.io/serviceaccount/token"]));
    assert_eq!(results[0].1, "ok");
    let ev = exactly_one(h.events_of(pid), "projected token");
    assert_volume(
        &ev,
        "projected_access",
        "kube-api-access-x7k2p",
        "token",
        &h.token,
    );
    assert_eq!(ev.volume_type.as_deref(), Some("projected"));
}

#[test]
fn denied_open_as_non_root_through_container_and_host_paths() {
    if !privileged("denied_open_as_non_root_through_container_and_host_paths") {
        return;
    }
    let mut h = Harness::start();
    // In a container, through a container path.
    let mut args = h.container(&["open:/etc/db/api-key", "wait"]);
    args.uid = Some(65534);
    let mut p = ContainerProc::spawn(Path::new(common::EXE), &args).unwrap();
    assert_eq!(p.next_result().unwrap().1, "EACCES");
    let ev = exactly_one(h.events_of(p.pid), "denied in container");
    p.finish().unwrap();
    assert_volume(&ev, "secret_access", "db-creds", "api-key", &h.secret);
    assert_eq!(
        (ev.result.as_str(), ev.access.as_str(), ev.process.uid),
        ("EACCES", "read", 65534)
    );
    assert_eq!(ev.path.as_deref(), Some("/etc/db/api-key"));

    // A short-lived process exec'd into a running container: it is gone before
    // the event is read, and is resolved through the container's main process.
    let mut main = ContainerProc::spawn(Path::new(common::EXE), &h.container(&["wait"])).unwrap();
    let exec = config_access_collector::demo::container::ExecArgs {
        join_mount_ns: Some(main.pid),
        chroot: Some(h.sb.container_root()),
        uid: Some(65534),
        steps: vec!["open:/etc/db/api-key".into()],
        ..Default::default()
    };
    let (pid, results) = h.run(&exec);
    assert_eq!(results[0].1, "EACCES");
    let ev = exactly_one(
        h.events_of(pid),
        "denied by an exited process in a container",
    );
    main.release();
    main.finish().unwrap();
    assert_volume(&ev, "secret_access", "db-creds", "api-key", &h.secret);

    // Host path, by a process that exits at once: resolved through its mount namespace.
    let host = h.secret.join("api-key");
    let args = config_access_collector::demo::container::ExecArgs {
        uid: Some(65534),
        steps: vec![format!("open:{}", host.display())],
        ..Default::default()
    };
    let (pid, results) = h.run(&args);
    assert_eq!(results[0].1, "EACCES");
    let ev = exactly_one(h.events_of(pid), "denied on host path");
    assert_volume(&ev, "secret_access", "db-creds", "api-key", &h.secret);
    assert_eq!(ev.result, "EACCES");
}

#[test]
fn failed_open_on_a_kubelet_volume_path_is_reported() {
    if !privileged("failed_open_on_a_kubelet_volume_path_is_reported") {
        return;
    }
    let mut h = Harness::start();
    let missing = h.secret.join("no-such-key");
    let args = config_access_collector::demo::container::ExecArgs {
        steps: vec![format!("open:{}", missing.display())],
        ..Default::default()
    };
    let (pid, results) = h.run(&args);
    assert_eq!(results[0].1, "ENOENT");
    let ev = exactly_one(h.events_of(pid), "ENOENT on volume path");
    assert_volume(&ev, "secret_access", "db-creds", "no-such-key", &h.secret);
    assert_eq!(ev.result, "ENOENT");
    // A failure elsewhere is not reported.
    let elsewhere = h.sb.scratch().join("no-such-file");
    let args = config_access_collector::demo::container::ExecArgs {
        steps: vec![format!("open:{}", elsewhere.display())],
        ..Default::default()
    };
    let (pid, _) = h.run(&args);
    assert!(h.events_of(pid).is_empty());
}

#[test]
fn negative_controls_yield_nothing() {
    if !privileged("negative_controls_yield_nothing") {
        return;
    }
    let mut h = Harness::start();
    let outside = h.sb.scratch().join("not-a-volume");
    std::fs::write(&outside, "x").unwrap();
    let mut args = h.container(&[
        "open:/etc/plain",
        "opath:/etc/db/password",
        "odir:/etc/db",
        "odir:/etc/config",
        "opath:/etc/config/app.yaml",
    ]);
    args.binds.push(format!("{}:/etc/plain", outside.display()));
    let (pid, results) = h.run(&args);
    assert!(results.iter().all(|r| r.1 == "ok"), "{results:?}");
    let evs = h.events_of(pid);
    assert!(
        evs.is_empty(),
        "outside file, O_PATH and directory opens must not be reported: {evs:#?}"
    );
}

#[test]
fn removed_volume_is_forgotten() {
    if !privileged("removed_volume_is_forgotten") {
        return;
    }
    let mut h = Harness::start();
    let args = h.container(&["wait", "open:/etc/db/password", "wait"]);
    let mut p = ContainerProc::spawn(Path::new(common::EXE), &args).unwrap();
    let secret = h.secret.clone();
    h.sb.remove_volume(&secret).unwrap();
    let gone = h.wait_for(Duration::from_secs(2), |c| {
        c.registry().by_mount_path(&secret).is_none()
    });
    assert!(gone, "removed volume still watched after 2 s");
    assert!(h
        .collector()
        .correlation()
        .mounts()
        .iter()
        .all(|(_, m)| !m.mount_path.ends_with("db-creds")));
    p.release();
    let (_, result) = p.next_result().unwrap();
    assert_eq!(result, "ok", "the container still holds the detached tmpfs");
    p.release();
    let pid = p.pid;
    p.finish().unwrap();
    let evs = h.events_of(pid);
    assert!(
        evs.is_empty(),
        "a removed volume's stale key must be gone: {evs:#?}"
    );
}

#[test]
fn correlation_map_holds_blake3_of_each_mount_path() {
    if !privileged("correlation_map_holds_blake3_of_each_mount_path") {
        return;
    }
    let h = Harness::start();
    let mounts = h.collector().correlation().mounts();
    assert_eq!(mounts.len(), 3);
    for (hash, info) in &mounts {
        assert_eq!(
            *hash,
            blake3::hash(info.mount_path.as_bytes())
                .to_hex()
                .to_string()
        );
        assert_eq!(info.pod_uid, POD);
        assert_eq!(info.is_secret, info.volume_type == "secret");
    }
}

#[test]
fn shutdown_leaves_no_programs_or_maps() {
    if !privileged("shutdown_leaves_no_programs_or_maps") {
        return;
    }
    let mut h = Harness::start();
    let (progs, maps) = h.collector().object_ids();
    assert!(progs.len() >= 5 && maps.len() >= 5, "{progs:?} {maps:?}");
    for id in &progs {
        assert!(libbpf_rs::Program::fd_from_id(*id).is_ok());
    }
    h.collector.take().unwrap().stop();
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let alive = || {
        progs
            .iter()
            .any(|id| libbpf_rs::Program::fd_from_id(*id).is_ok())
            || maps
                .iter()
                .any(|id| libbpf_rs::MapHandle::from_map_id(*id).is_ok())
    };
    while alive() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(), "programs or maps outlived the collector");
}

#[test]
fn cgroup_v1_fallback_id_is_carried() {
    if !privileged("cgroup_v1_fallback_id_is_carried") {
        return;
    }
    let v1 = Path::new("/sys/fs/cgroup/memory");
    if config_access_collector::enrich::cgroup::detect_v1_subsys("auto").is_none()
        || !v1.join("cgroup.procs").exists()
    {
        eprintln!(
            "SKIPPED cgroup_v1_fallback_id_is_carried: no cgroup v1 memory hierarchy on this host"
        );
        return;
    }
    let mut h = Harness::start();
    let dir = v1.join(format!("cac-test-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let v1_id = std::fs::metadata(&dir).unwrap().ino();
    let mut args = h.container(&["open:/etc/db/username"]);
    args.cgroup = Some(dir.clone());
    let (pid, results) = h.run(&args);
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(results[0].1, "ok");
    let ev = exactly_one(h.events_of(pid), "v1 cgroup");
    assert_eq!(
        ev.process.cgroup_v1_id, v1_id,
        "v1 id is the kernfs id of the v1 cgroup directory"
    );
}

#[test]
fn downward_api_volume_and_nested_item_paths() {
    if !privileged("downward_api_volume_and_nested_item_paths") {
        return;
    }
    let mut h = Harness::start();
    let dir =
        h.sb.add_volume(POD, VolumeType::DownwardApi, "podinfo", true)
            .unwrap();
    h.sb.write_atomic(
        &dir,
        &[
            ("labels", b"app=x", 0o644),
            ("meta/annotations", b"a=b", 0o644),
        ],
    )
    .unwrap();
    let ready = h.wait_for(Duration::from_secs(2), |c| {
        c.registry()
            .by_mount_path(&dir)
            .is_some_and(|v| v.files.len() == 2)
    });
    assert!(ready, "downward-api volume not picked up");
    let mut args = h.container(&[
        "open:/etc/podinfo/labels",
        "open:/etc/podinfo/meta/annotations",
    ]);
    args.binds.push(format!("{}:/etc/podinfo", dir.display()));
    let (pid, results) = h.run(&args);
    assert!(results.iter().all(|r| r.1 == "ok"), "{results:?}");
    let mut evs = h.events_of(pid);
    evs.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(evs.len(), 2, "{evs:#?}");
    assert_volume(&evs[0], "downward_api_access", "podinfo", "labels", &dir);
    assert_volume(
        &evs[1],
        "downward_api_access",
        "podinfo",
        "meta/annotations",
        &dir,
    );
    assert_eq!(evs[1].volume_type.as_deref(), Some("downward-api"));
}

#[test]
fn a_lone_event_does_not_wait_for_the_safety_net_timer() {
    if !privileged("a_lone_event_does_not_wait_for_the_safety_net_timer") {
        return;
    }
    // A 10 s safety net: only the kernel's wakeup can deliver the event sooner.
    let mut h = Harness::start_with(|c| c.flush_interval_ms = 10_000);
    h.drain(Duration::from_millis(300), Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(50));
    for round in 0..3 {
        // Another process: the collector drops its own opens.
        let start = std::time::Instant::now();
        let mut cat = std::process::Command::new("cat")
            .arg(h.secret.join("password"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = cat.id();
        let ev = h
            .events
            .recv_timeout(Duration::from_secs(20))
            .expect("the read is delivered");
        let took = start.elapsed();
        assert!(cat.wait().unwrap().success());
        assert_eq!(ev.process.pid, pid, "{ev:#?}");
        assert!(
            took < Duration::from_secs(2),
            "round {round}: delivered after {took:?}, as if by the 10 s timer"
        );
        // A quiet spell longer than the kernel's wakeup gap.
        std::thread::sleep(Duration::from_millis(5));
    }
}

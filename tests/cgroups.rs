//! cgroup resolution on real cgroups made on this machine.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::{privileged, POD};
use config_access_collector::demo::container::{ContainerProc, ExecArgs};
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::enrich::cgroup::{
    cgroup_v1_mount, CgroupResolver, QosClass, Resolution, Runtime, REWALK_INTERVAL,
};

const CID: &str = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9";

fn found(r: Resolution) -> std::sync::Arc<config_access_collector::enrich::cgroup::CgroupInfo> {
    match r {
        Resolution::Found(i) => i,
        Resolution::Unknown => panic!("cgroup not resolved"),
    }
}

#[test]
fn v2_pod_container_and_host_cgroups_resolve() {
    if !privileged("v2_pod_container_and_host_cgroups_resolve") {
        return;
    }
    let mut sb = Sandbox::new().unwrap();
    let rel = format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CID}.scope", POD.replace('-', "_"));
    let dir = sb.make_cgroup(&rel).unwrap();
    // A process really in the cgroup: its own /proc/<pid>/cgroup names it.
    let args = ExecArgs {
        cgroup: Some(dir.clone()),
        steps: vec!["wait".into()],
        ..ExecArgs::default()
    };
    let mut p = ContainerProc::spawn(Path::new(common::EXE), &args).unwrap();
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid)).unwrap();
    assert!(
        own.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&rel)),
        "{own}"
    );

    let resolver = CgroupResolver::for_host(None);
    let id = std::fs::metadata(&dir).unwrap().ino();
    let info = found(resolver.resolve(id, 0));
    assert_eq!(info.pod_uid.as_deref(), Some(POD));
    assert_eq!(info.qos, Some(QosClass::Burstable));
    assert_eq!(info.container_id.as_deref(), Some(CID));
    assert_eq!(info.runtime, Some(Runtime::Containerd));
    p.release();
    p.finish().unwrap();

    // The test's own cgroup is a host cgroup, not an error.
    let root = resolver.v2_root().unwrap();
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mine = mine.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let my_id = std::fs::metadata(root.join(mine.trim_start_matches('/')))
        .unwrap()
        .ino();
    assert!(found(resolver.resolve(my_id, 0)).is_host());
    assert!(
        found(resolver.resolve(1, 0)).is_host(),
        "the root cgroup is the host"
    );

    // A deleted cgroup is forgotten by the next walk.
    drop(sb);
    resolver.forget_deleted();
    assert_eq!(resolver.resolve(id, 0), Resolution::Unknown);
    std::thread::sleep(REWALK_INTERVAL + Duration::from_millis(50));
    assert_eq!(
        resolver.resolve(id, 0),
        Resolution::Unknown,
        "a miss re-walks and still finds nothing"
    );
}

#[test]
fn a_cgroup_made_since_the_last_walk_resolves_at_once_by_its_file_handle() {
    let test = "a_cgroup_made_since_the_last_walk_resolves_at_once_by_its_file_handle";
    if !privileged(test) {
        return;
    }
    let mut sb = Sandbox::new().unwrap();
    let resolver = CgroupResolver::for_host(None);
    // A walk now: the next one is not due for REWALK_INTERVAL.
    resolver.forget_deleted();
    let rel = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope",
        POD.replace('-', "_"),
        "9e".repeat(32)
    );
    let dir = sb.make_cgroup(&rel).unwrap();
    let id = std::fs::metadata(&dir).unwrap().ino();
    let started = std::time::Instant::now();
    let info = found(resolver.resolve(id, 0));
    assert!(started.elapsed() < REWALK_INTERVAL, "no walk was due");
    assert_eq!(info.path, format!("/{rel}"));
    assert_eq!(info.pod_uid.as_deref(), Some(POD));
    assert_eq!(info.container_id.as_deref(), Some("9e".repeat(32).as_str()));
}

#[test]
fn v1_fallback_resolves_cgroupfs_driver_paths() {
    if !privileged("v1_fallback_resolves_cgroupfs_driver_paths") {
        return;
    }
    let Some(v1) = cgroup_v1_mount("memory") else {
        eprintln!("SKIPPED v1_fallback_resolves_cgroupfs_driver_paths: no cgroup v1 memory hierarchy on this host");
        return;
    };
    let base = v1.join(format!("kubepods-test-{}", std::process::id()));
    let dir = base.join(format!("besteffort/pod{POD}/{CID}"));
    std::fs::create_dir_all(&dir).unwrap();
    let id = std::fs::metadata(&dir).unwrap().ino();
    let resolver = CgroupResolver::for_host(Some("memory"));
    let result = resolver.resolve(1, id);
    for d in [
        dir.clone(),
        dir.parent().unwrap().to_path_buf(),
        base.join("besteffort"),
        base.clone(),
    ] {
        let _ = std::fs::remove_dir(d);
    }
    let info = found(result);
    assert_eq!(info.pod_uid.as_deref(), Some(POD));
    assert_eq!(info.qos, Some(QosClass::BestEffort));
    assert_eq!(info.container_id.as_deref(), Some(CID));
}

//! Correlation maps in the kernel: kept exact by the process lifecycle (no
//! program on every syscall), or from the optional sampler; inherited at
//! fork, removed at exit and when the cgroup goes; the library API; the
//! troubleshooting commands; and the Service endpoint map `svc_endpoints`
//! as other collectors' programs find it, pinned.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::fake_apiserver::{endpoint_slice, service, Resource};
use common::svc_endpoints::kernel_lookup;
use common::{pod_cgroup, privileged, wait, Harness, POD};
use config_access_collector::agent::Collector;
use config_access_collector::config::Config;
use config_access_collector::demo::container::{ContainerProc, ExecArgs};
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::enrich::cgroup::CgroupResolver;
use config_access_collector::enrich::correlation::{
    ContainerPid, CorrelationMaps, CorrelationOp, MountInfo, PodInfo,
};
use config_access_collector::enrich::pods::NoMetadata;
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use serde_json::{json, Value};

const CID: &str = "77aa77aa77aa77aa77aa77aa77aa77aa77aa77aa77aa77aa77aa77aa77aa77aa";
const CID_EARLY: &str = "88bb88bb88bb88bb88bb88bb88bb88bb88bb88bb88bb88bb88bb88bb88bb88bb";
const CID_NEW: &str = "99cc99cc99cc99cc99cc99cc99cc99cc99cc99cc99cc99cc99cc99cc99cc99cc";

/// A shell running `script` (with `$CG` set to a cgroup directory); killed when dropped.
struct Shell(Child);

impl Shell {
    fn run(script: &str, cg: &Path) -> Self {
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("CG", cg)
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh starts");
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The next line the script printed.
    fn line(&mut self) -> String {
        let out = self.0.stdout.as_mut().expect("piped");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("read");
        line.trim().to_string()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Moves process `pid` into cgroup directory `cg`.
fn move_to(pid: u32, cg: &Path) {
    std::fs::write(cg.join("cgroup.procs"), pid.to_string()).expect("move into the cgroup");
}

fn entry(cg: &Path, cid: &str) -> Option<ContainerPid> {
    Some(ContainerPid {
        cgroup_id: std::fs::metadata(cg).unwrap().ino(),
        container_id: cid.into(),
    })
}

#[test]
fn lifecycle_keeps_the_maps_exact_without_a_sampler() {
    if !privileged("lifecycle_keeps_the_maps_exact_without_a_sampler") {
        return;
    }
    // A container process that started before the collector.
    let mut early_sb = Sandbox::new().unwrap();
    let cg_early = early_sb
        .make_cgroup(&pod_cgroup("besteffort", CID_EARLY))
        .unwrap();
    let mut early = Shell::run(
        "echo $$ > \"$CG/cgroup.procs\" && echo in && exec sleep 60",
        &cg_early,
    );
    assert_eq!(early.line(), "in");

    let (mut h, _api, _rt) = Harness::with_fake_api(CID, |c| {
        assert_eq!(c.syscall_sampling_rate, 0, "no sampler by default");
    });
    let corr = h.collector().correlation().clone();
    wait("the older process, from the /proc scan", || {
        corr.container_of_pid(early.pid()) == entry(&cg_early, CID_EARLY)
    });
    let early_id = std::fs::metadata(&cg_early).unwrap().ino();
    wait("its pod, named", || {
        corr.pod_by_cgroup(early_id)
            .is_some_and(|i| i.pod_name == "payments-api-0" && i.namespace == "payments")
    });

    // A process that joins a container and execs (how a runtime starts an exec session).
    let cg = h.sb.make_cgroup(&pod_cgroup("besteffort", CID)).unwrap();
    let mut exec = Shell::run(
        "echo $$ > \"$CG/cgroup.procs\" && echo in && exec sleep 60",
        &cg,
    );
    assert_eq!(exec.line(), "in");
    wait("the exec'd process", || {
        corr.container_of_pid(exec.pid()) == entry(&cg, CID)
    });

    // A child forked at once by the first process of a new container, before
    // user space has seen that container.
    let cg_new =
        h.sb.make_cgroup(&pod_cgroup("besteffort", CID_NEW))
            .unwrap();
    let mut forker = Shell::run(
        "echo $$ > \"$CG/cgroup.procs\"; sleep 60 & echo $!; wait",
        &cg_new,
    );
    let child: u32 = forker.line().parse().unwrap();
    wait("a child forked before the container was known", || {
        corr.container_of_pid(child) == entry(&cg_new, CID_NEW)
    });

    // A host process moved from container to container, then back to the host.
    let mut host = Shell::run("echo $$; exec sleep 60", Path::new("/"));
    let pid: u32 = host.line().parse().unwrap();
    assert_eq!(
        corr.container_of_pid(pid),
        None,
        "a host process has no entry"
    );
    move_to(pid, &cg);
    wait("moved into a container", || {
        corr.container_of_pid(pid) == entry(&cg, CID)
    });
    move_to(pid, &cg_new);
    wait("moved to another container", || {
        corr.container_of_pid(pid) == entry(&cg_new, CID_NEW)
    });
    let root = cg.ancestors().nth(4).expect("the cgroup2 root");
    move_to(pid, root);
    wait("moved back to the host", || {
        corr.container_of_pid(pid).is_none()
    });

    let _ = Command::new("kill").arg(child.to_string()).status();
    drop((early, exec, forker, host));
}

#[test]
fn sampler_fills_pod_and_pid_maps_fork_inherits_exit_removes() {
    if !privileged("sampler_fills_pod_and_pid_maps_fork_inherits_exit_removes") {
        return;
    }
    let (mut h, _api, _rt) = Harness::with_fake_api(CID, |c| c.syscall_sampling_rate = 1);
    let rel = pod_cgroup("besteffort", CID);
    let cg = h.sb.make_cgroup(&rel).unwrap();
    let cgroup_id = std::fs::metadata(&cg).unwrap().ino();
    let args = ExecArgs {
        cgroup: Some(cg),
        steps: vec!["wait".into(), "fork".into(), "wait".into()],
        ..ExecArgs::default()
    };
    let mut p = ContainerProc::spawn(Path::new(common::EXE), &args).unwrap();
    let corr = h.collector().correlation().clone();

    wait("pid -> container from the sampler", || {
        corr.container_of_pid(p.pid).is_some()
    });
    assert_eq!(
        corr.container_of_pid(p.pid),
        Some(ContainerPid {
            cgroup_id,
            container_id: CID.into()
        })
    );
    wait("cgroup -> pod with names", || {
        corr.pod_by_cgroup(cgroup_id)
            .is_some_and(|i| !i.pod_name.is_empty())
    });
    let info = corr.pod_by_cgroup(cgroup_id).unwrap();
    assert_eq!(
        (
            info.pod_uid.as_str(),
            info.namespace.as_str(),
            info.pod_name.as_str()
        ),
        (POD, "payments", "payments-api-0")
    );

    // Mark the parent so the child's entry can only come from the kernel's fork copy.
    let marker = ContainerPid {
        cgroup_id,
        container_id: "f".repeat(64),
    };
    corr.set_container_pid(p.pid, &marker).unwrap();
    p.release();
    let (_, child) = p.next_result().unwrap();
    let child: u32 = child.parse().unwrap();
    assert_eq!(
        corr.container_of_pid(child),
        Some(marker),
        "a fork copies the parent's entry in the kernel"
    );

    let parent = p.pid;
    p.release();
    p.finish().unwrap();
    wait("exit removes the entries", || {
        corr.container_of_pid(parent).is_none() && corr.container_of_pid(child).is_none()
    });
}

/// Keeps the kernel's `pid_samples` map full of records of processes that do
/// not exist (the correlator takes them out every second) until dropped.
struct FullRecords {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FullRecords {
    fn start(corr: &CorrelationMaps) -> Self {
        let map = &corr.kernel_maps().expect("kernel maps").pid_samples;
        let info = map.info().expect("pid_samples info");
        let (entries, value_size) = (info.info.max_entries, info.info.value_size as usize);
        let map = MapHandle::try_from(map).expect("a second handle");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let value = vec![0u8; value_size];
            while !flag.load(Ordering::Relaxed) {
                // Keys above any pid; zero cgroup ids never resolve.
                for key in 0..entries {
                    let _ = map.update(&(0x8000_0000 | key).to_ne_bytes(), &value, MapFlags::ANY);
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FullRecords {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_full_process_record_map_is_counted_and_rescanned() {
    if !privileged("a_full_process_record_map_is_counted_and_rescanned") {
        return;
    }
    let (mut h, _api, _rt) = Harness::with_fake_api(CID, |_| {});
    let corr = h.collector().correlation().clone();
    let kernel = corr.kernel_maps().expect("kernel maps");
    let full = FullRecords::start(&corr);
    // Each try moves a process into a container the collector has not
    // classified yet, so the kernel must write a record for it; the map
    // is full but for the moments after the correlator empties it.
    let mut shells = Vec::new();
    let placed = (0..10).find_map(|i| {
        let cid = format!("{i:x}").repeat(64)[..64].to_string();
        let cg = h.sb.make_cgroup(&pod_cgroup("besteffort", &cid)).unwrap();
        let mut sh = Shell::run("echo $$; exec sleep 60", Path::new("/"));
        let pid: u32 = sh.line().parse().unwrap();
        move_to(pid, &cg);
        shells.push(sh);
        std::thread::sleep(Duration::from_millis(50));
        (kernel.records_full() > 0).then_some((pid, cg, cid))
    });
    drop(full);
    let (pid, cg, cid) = placed.expect("the kernel counts a record it could not write");
    wait("the /proc rescan places the process", || {
        corr.container_of_pid(pid) == entry(&cg, &cid)
    });
    // The pass counts its operations after it writes the entries.
    wait("the rescan counted", || {
        corr.ops.get(CorrelationOp::SyncRescan) >= 1
    });
    drop(shells);
}

#[test]
fn library_api_round_trips_and_forgets_deleted_cgroups() {
    if !privileged("library_api_round_trips_and_forgets_deleted_cgroups") {
        return;
    }
    let mut h = Harness::start_with(|c| c.kube = config_access_collector::config::KubeMode::Off);
    let corr = h.collector().correlation().clone();
    let cg =
        h.sb.make_cgroup(&format!("kubepods/burstable/pod{POD}/{CID}"))
            .unwrap();
    let cgroup_id = std::fs::metadata(&cg).unwrap().ino();
    let info = PodInfo {
        pod_uid: POD.into(),
        namespace: "production".into(),
        pod_name: "nginx-deployment-xyz".into(),
        created_at: 1_705_833_045,
    };
    corr.add_pod_info(cgroup_id, info.clone()).unwrap();
    assert_eq!(corr.pod_by_cgroup(cgroup_id), Some(info));

    // add_container_pid resolves the process's container from its cgroup.
    let args = ExecArgs {
        cgroup: Some(cg.clone()),
        steps: vec!["wait".into()],
        ..ExecArgs::default()
    };
    let mut p = ContainerProc::spawn(Path::new(common::EXE), &args).unwrap();
    let resolver = CgroupResolver::for_host(None);
    let c = corr.add_container_pid(p.pid, &resolver).unwrap();
    assert_eq!(
        c,
        ContainerPid {
            cgroup_id,
            container_id: CID.into()
        }
    );
    assert_eq!(corr.container_of_pid(p.pid), Some(c));
    p.release();
    p.finish().unwrap();
    assert!(
        corr.add_container_pid(999_999_999, &resolver).is_err(),
        "an unknown pid is an error, not a panic"
    );

    let mount = MountInfo {
        name: "app-config".into(),
        namespace: Some("production".into()),
        mount_path: "/var/lib/kubelet/pods/x/volumes/kubernetes.io~configmap/app-config".into(),
        is_secret: false,
        volume_type: "configmap".into(),
        pod_uid: POD.into(),
    };
    let hash = config_access_collector::model::volume::path_hash(Path::new(&mount.mount_path));
    corr.add_mount_info(&hash, mount.clone());
    assert_eq!(corr.mount_info(&hash), Some(mount));

    // The cgroup goes away: the next sync drops its pod entry.
    std::fs::remove_dir(&cg).unwrap();
    let resolver = CgroupResolver::for_host(None);
    resolver.forget_deleted();
    corr.sync(&resolver, &NoMetadata);
    assert_eq!(corr.pod_by_cgroup(cgroup_id), None);
}

/// Runs `script` with `sh -c`; returns its stdout, failing with its stderr.
fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_troubleshooting_commands_find_the_programs_and_correlation_maps() {
    if !privileged("the_troubleshooting_commands_find_the_programs_and_correlation_maps") {
        return;
    }
    assert!(
        Path::new("/usr/sbin/bpftool").exists(),
        "bpftool is missing: install Debian's bpftool (scripts/dev.sh test does)"
    );
    let (mut h, _api, _rt) = Harness::with_fake_api(CID, |_| {});
    let corr = h.collector().correlation().clone();
    let cg = h.sb.make_cgroup(&pod_cgroup("besteffort", CID)).unwrap();
    let mut proc = Shell::run(
        "echo $$ > \"$CG/cgroup.procs\" && echo in && exec sleep 60",
        &cg,
    );
    assert_eq!(proc.line(), "in");
    let cgroup_id = std::fs::metadata(&cg).unwrap().ino();
    wait("the process and its pod in the maps", || {
        corr.container_of_pid(proc.pid()) == entry(&cg, CID)
            && corr
                .pod_by_cgroup(cgroup_id)
                .is_some_and(|i| i.pod_name == "payments-api-0")
    });

    // The commands of docs/troubleshooting.md, as written there.
    let progs = sh("bpftool prog list | grep trace_config_access");
    for name in ["openat", "openat2", "open", "creat", "open_by_handle_at"] {
        assert!(
            progs.contains(&format!("name trace_config_access_{name} ")),
            "{name}: {progs}"
        );
    }
    // Compared without whitespace: with several collectors running (other
    // tests), bpftool prints each map's elements one level deeper.
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    let pids = sh("bpftool map dump name container_pids");
    let want = format!(
        "\"key\": {}, \"value\": {{ \"cgroup_id\": {cgroup_id}, \"container_id\": \"{CID}\"",
        proc.pid()
    );
    assert!(
        squash(&pids).contains(&squash(&want)),
        "{want}\nnot in:\n{pids}"
    );
    let pods = sh("bpftool map dump name pod_info_map");
    let want = format!(
        "\"key\": {cgroup_id}, \"value\": {{ \"pod_uid\": \"{POD}\", \"namespace\": \"payments\", \"pod_name\": \"payments-api-0\","
    );
    assert!(
        squash(&pods).contains(&squash(&want)),
        "{want}\nnot in:\n{pods}"
    );
    drop(proc);
}

/// The kernel id of the map pinned at `pin`.
fn pinned_id(pin: &Path) -> u64 {
    let out = sh(&format!("bpftool -j map show pinned {}", pin.display()));
    serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_u64()
        .unwrap()
}

#[test]
fn the_service_endpoint_map_is_in_the_kernel_for_other_programs() {
    if !privileged("the_service_endpoint_map_is_in_the_kernel_for_other_programs") {
        return;
    }
    // A pin outside a bpf filesystem is refused at start, saying why.
    let sb = Sandbox::new().unwrap();
    let mut cfg = common::default_config(&sb);
    cfg.service_endpoints_pin = sb.scratch().join("svc_endpoints").display().to_string();
    let err = Collector::start_with_channel(&cfg).unwrap_err();
    let err = config_access_collector::logging::chain(&err);
    assert!(err.contains("is not on a bpf filesystem"), "{err}");

    let dir = Path::new("/sys/fs/bpf/cac-test-svc");
    let _ = std::fs::remove_dir_all(dir);
    let pin = dir.join("svc_endpoints");
    let pinned = |c: &mut Config| c.service_endpoints_pin = pin.display().to_string();
    let (h, api, _rt) = Harness::with_fake_api(CID, pinned);
    let grpc = json!([{"name": "grpc", "port": 9090, "protocol": "TCP", "targetPort": 9090}]);
    api.add_to(
        Resource::Services,
        service(
            "payments",
            "ledger",
            &["10.96.7.7", "fd00:96::7"],
            grpc.clone(),
        ),
    );
    let slice = |name: &str, ip: &str, pod: &str| {
        endpoint_slice(
            "payments",
            name,
            "ledger",
            "IPv4",
            &[(ip, pod)],
            grpc.clone(),
        )
    };
    api.add_to(
        Resource::EndpointSlices,
        slice("ledger-a", "10.1.7.7", "ledger-0"),
    );
    let lookup = |ip: &str, port: u16, protocol: u8| kernel_lookup(&pin, ip, port, protocol);
    wait("the endpoint in svc_endpoints", || {
        lookup("10.1.7.7", 9090, 6).is_some()
    });
    let cluster_ip = ("payments/ledger:grpc@".to_string(), 1);
    assert_eq!(lookup("10.96.7.7", 9090, 6), Some(cluster_ip.clone()));
    assert_eq!(lookup("fd00:96::7", 9090, 6), Some(cluster_ip.clone()));
    assert_eq!(
        lookup("10.1.7.7", 9090, 6),
        Some(("payments/ledger:grpc@uid-ledger-0".to_string(), 2))
    );
    assert_eq!(lookup("10.96.7.7", 9090, 17), None, "UDP is another key");
    assert_eq!(lookup("10.96.7.7", 9091, 6), None);

    // An update moves the port; a deleted slice takes its endpoint away.
    let moved = json!([{"name": "grpc", "port": 9091, "protocol": "TCP", "targetPort": 9090}]);
    api.modify_in(
        Resource::Services,
        service("payments", "ledger", &["10.96.7.7", "fd00:96::7"], moved),
    );
    api.delete_from(Resource::EndpointSlices, "payments/ledger-a");
    wait("the update and the delete in svc_endpoints", || {
        lookup("10.96.7.7", 9091, 6).is_some()
            && lookup("10.96.7.7", 9090, 6).is_none()
            && lookup("10.1.7.7", 9090, 6).is_none()
    });

    // The pin outlives the collector; the next one takes the same map over
    // and corrects what changed meanwhile.
    let id = pinned_id(&pin);
    drop(h);
    assert!(pin.exists(), "the pin outlives the collector");
    api.delete_from(Resource::Services, "payments/ledger");
    api.add_to(
        Resource::EndpointSlices,
        slice("ledger-b", "10.1.7.8", "ledger-1"),
    );
    let url = api.url();
    let h = Harness::start_with(|c| {
        c.kube_api_url = Some(url.clone());
        pinned(c);
    });
    wait("the map taken over, corrected", || {
        lookup("10.1.7.8", 9090, 6).is_some() && lookup("10.96.7.7", 9091, 6).is_none()
    });
    assert_eq!(pinned_id(&pin), id, "the same map, reused");
    drop(h);

    // A map of another shape is replaced.
    let h = Harness::start_with(|c| {
        c.kube_api_url = Some(url.clone());
        c.service_endpoints_max_entries = 1000;
        pinned(c);
    });
    wait("a new map, filled", || {
        lookup("10.1.7.8", 9090, 6).is_some()
    });
    assert_ne!(pinned_id(&pin), id, "a map of another size is replaced");
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}

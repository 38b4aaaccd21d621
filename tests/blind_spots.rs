//! Ways the collector could go blind or be misled without saying so, each
//! reproduced with real processes, mounts, namespaces and sockets: a volume
//! scan that fails for lack of file descriptors, a volume directory that is a
//! symlink, a stdout that stalls then closes, denied reads from mount
//! namespaces that die at once, the collector's own opens, a kubelet root
//! without mount propagation, and a kernel Service endpoint map that
//! refuses writes.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    fake_apiserver, open_n_times, pod_cgroup, privileged, sample, Harness, KeepAlive, EXE, POD,
};
use config_access_collector::config::KubeMode;
use config_access_collector::demo::container::ExecArgs;
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::enrich::services::{
    mirror_to_kernel, object_id, service_entries, KernelMirror, MapSettings, MirrorStats,
    ObjectKind, ServiceMap,
};
use config_access_collector::enrich::volumes::IgnoreReason;
use config_access_collector::kernel::probe::{
    Probe, ProbeOptions, ProbeStorage, ServiceEndpointsMap,
};
use config_access_collector::model::health::HealthBoard;
use config_access_collector::model::volume::VolumeType;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Waits up to `limit` for `cond`, failing with `what` otherwise.
fn wait_up_to(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The collector binary, run as a user runs it.
struct Agent {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    health: SocketAddr,
    metrics: SocketAddr,
}

impl Agent {
    /// Starts `run` on `sb` with `config` (YAML) and extra flags; waits until it started.
    fn start(sb: &Sandbox, config: &str, extra: &[&str], stdout: Stdio) -> Self {
        Self::start_under(&[], sb, config, extra, stdout)
    }

    /// Like [`Agent::start`], with the collector run by `wrapper` (a command
    /// and its flags, e.g. `unshare`).
    fn start_under(
        wrapper: &[&str],
        sb: &Sandbox,
        config: &str,
        extra: &[&str],
        stdout: Stdio,
    ) -> Self {
        let path = sb.scratch().join("config.yaml");
        std::fs::write(&path, config).unwrap();
        let mut command = match wrapper.split_first() {
            Some((prog, flags)) => {
                let mut c = Command::new(prog);
                c.args(flags).arg(EXE);
                c
            }
            None => Command::new(EXE),
        };
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .arg("--kubelet-root")
            .arg(sb.kubelet_root())
            .args([
                "--health-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--no-kube",
            ])
            .arg("--api-socket")
            .arg(sb.scratch().join("api.sock"))
            .args(extra)
            .env("CAC_LOG_LEVEL", "info")
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut agent = Self {
            child,
            log,
            health: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
        };
        wait_up_to(Duration::from_secs(30), "the collector to start", || {
            agent.logged("collector started")
        });
        agent.health = agent.addr("health endpoints listening");
        agent.metrics = agent.addr("metrics endpoint listening");
        agent
    }

    fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// The `addr=` of the log line containing `what`.
    fn addr(&self, what: &str) -> SocketAddr {
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in {log:#?}"));
        let addr = line
            .split("addr=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next();
        addr.unwrap().parse().unwrap()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM; returns whether the exit status was 0.
    fn terminate(mut self) -> (bool, Vec<String>) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().unwrap().clone();
        (status.success(), log)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets the soft RLIMIT_NOFILE of process `pid` (the hard limit stays).
fn set_nofile_soft(pid: i32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads the current one into `old`.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) },
        0
    );
    let new = libc::rlimit {
        rlim_cur: soft.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: both pointers are valid for the call.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) },
        0,
        "prlimit: {}",
        std::io::Error::last_os_error()
    );
}

/// A sandbox pod with Secret volume `creds` holding `password`.
fn secret_pod() -> (Sandbox, PathBuf) {
    let mut sb = Sandbox::new().unwrap();
    let dir = sb
        .add_volume(POD, VolumeType::Secret, "creds", true)
        .unwrap();
    sb.write_atomic(&dir, &[("password", b"x", 0o644)]).unwrap();
    (sb, dir)
}

/// Collects the JSON events the collector prints on stdout.
fn collect_stdout(child: &mut Child) -> Arc<Mutex<Vec<serde_json::Value>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock()
                .unwrap()
                .push(serde_json::from_str(&line).unwrap());
        }
    });
    events
}

fn events_of(events: &Mutex<Vec<serde_json::Value>>, pid: u32) -> usize {
    let events = events.lock().unwrap();
    events.iter().filter(|e| e["process"]["pid"] == pid).count()
}

#[test]
fn a_scan_without_file_descriptors_keeps_the_watch_set_and_degrades_health() {
    if !privileged("a_scan_without_file_descriptors_keeps_the_watch_set_and_degrades_health") {
        return;
    }
    let (sb, dir) = secret_pod();
    let mut agent = Agent::start(&sb, "rescan_interval_ms: 300\n", &[], Stdio::piped());
    let events = collect_stdout(&mut agent.child);
    let mut health = KeepAlive::connect(agent.health);
    let mut metrics = KeepAlive::connect(agent.metrics);
    assert_eq!(health.json("/healthz").1["status"], "healthy");
    let password = dir.join("password");
    let before = open_n_times(&password, 1);
    wait_up_to(Duration::from_secs(10), "the first event", || {
        events_of(&events, before) == 1
    });

    // No descriptor left: every scan of the volume tree fails from now on.
    set_nofile_soft(agent.pid(), 3);
    wait_up_to(Duration::from_secs(15), "a degraded health", || {
        let (status, body) = health.json("/healthz");
        status == 200
            && body["status"] == "degraded"
            && body["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["component"] == "volume_scan")
    });
    let (status, ready) = health.json("/readyz");
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["reason"].as_str().unwrap().contains("volume_scan"),
        "{ready}"
    );
    let (_, text) = metrics.get("/metrics");
    let failed = sample(
        &text,
        "kernel_monitor_volume_scans_total",
        &[("result", "failed")],
    );
    assert!(failed.is_some_and(|n| n >= 1.0), "{text}");
    std::thread::sleep(Duration::from_millis(1000));
    let during = open_n_times(&password, 1);
    wait_up_to(
        Duration::from_secs(10),
        "an event while scans fail (the watch set is kept)",
        || events_of(&events, during) == 1,
    );
    assert!(agent.logged("volume scan incomplete"));

    set_nofile_soft(agent.pid(), 1 << 16);
    wait_up_to(Duration::from_secs(15), "health to recover", || {
        health.json("/healthz").1["status"] == "healthy"
    });
    assert_eq!(health.json("/readyz").0, 200);
    assert!(agent.logged("volume scan recovered"));
    let (ok, log) = agent.terminate();
    assert!(ok, "{log:#?}");
}

#[test]
fn a_symlinked_volume_directory_is_ignored_not_followed() {
    if !privileged("a_symlinked_volume_directory_is_ignored_not_followed") {
        return;
    }
    let mut h = Harness::start();
    let elsewhere = h.sb.scratch().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("hostname"), "node-a").unwrap();
    let plugin = h.sb.volume_dir(POD, VolumeType::Secret, "x");
    std::os::unix::fs::symlink(&elsewhere, &plugin).unwrap();
    common::wait("the symlink to be seen and ignored", || {
        h.collector().watch_stats().ignored(IgnoreReason::Symlink) == 1
    });
    assert!(h.collector().registry().by_mount_path(&plugin).is_none());
    let (pid, results) = h.run(&ExecArgs {
        steps: vec![
            format!("open:{}", elsewhere.join("hostname").display()),
            format!("open:{}", plugin.join("hostname").display()),
        ],
        ..Default::default()
    });
    assert!(results.iter().all(|r| r.1 == "ok"), "{results:?}");
    let events = h.events_of(pid);
    assert!(
        events.is_empty(),
        "a symlink target is not a volume: {events:#?}"
    );
    // Real volumes are still watched.
    let (pid, _) = h.run(&ExecArgs {
        steps: vec![format!("open:{}", h.secret.join("password").display())],
        ..Default::default()
    });
    common::exactly_one(h.events_of(pid), "a read of a real volume");
}

#[test]
fn a_stalled_then_closed_stdout_does_not_stop_the_file_output() {
    if !privileged("a_stalled_then_closed_stdout_does_not_stop_the_file_output") {
        return;
    }
    let (sb, dir) = secret_pod();
    let file = sb.scratch().join("out/events.jsonl");
    let file_arg = file.to_str().unwrap().to_string();
    // One event per open: the test needs a stream of events, not summaries.
    let mut agent = Agent::start(
        &sb,
        "repeat_window_ms: 0\n",
        &["--output-file", &file_arg],
        Stdio::piped(),
    );
    // Nobody reads stdout: its pipe fills and its writer blocks.
    let stdout = agent.child.stdout.take().unwrap();
    let in_file = |pid: u32| {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("\"pid\":{pid},")))
            .count()
    };
    let password = dir.join("password");
    let first = open_n_times(&password, 2000);
    wait_up_to(Duration::from_secs(30), "2000 events in the file", || {
        in_file(first) == 2000
    });
    let mut health = KeepAlive::connect(agent.health);
    wait_up_to(
        Duration::from_secs(20),
        "stdout reported as stalled",
        || {
            let body = health.json("/healthz").1;
            body["status"] == "degraded"
                && body["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("output:stdout: blocked in one write"))
        },
    );

    // The reader of stdout goes away: stdout fails, the file goes on.
    drop(stdout);
    let second = open_n_times(&password, 500);
    wait_up_to(
        Duration::from_secs(30),
        "500 more events in the file",
        || in_file(second) == 500,
    );
    wait_up_to(Duration::from_secs(10), "stdout reported as failed", || {
        let (status, body) = health.json("/healthz");
        status == 200
            && body["reason"]
                .as_str()
                .is_some_and(|r| r.contains("output:stdout: failed"))
    });
    let (_, text) = KeepAlive::connect(agent.metrics).get("/metrics");
    common::assert_stdout_failed_file_ok(&text);
    let lost = sample(
        &text,
        "kernel_monitor_output_shed_total",
        &[("output", "stdout"), ("reason", "output_failed")],
    );
    assert!(lost.is_some_and(|n| n > 0.0), "{text}");
    let (ok, log) = agent.terminate();
    assert!(ok, "SIGTERM after a stdout EPIPE exits 0: {log:#?}");
}

/// Runs 20 container processes that each try to read `api-key` as uid 65534
/// (denied) and exit at once, taking their mount namespace with them.
fn twenty_denied_reads_from_dying_namespaces(h: &mut Harness) -> Vec<u32> {
    let cg = h.sb.make_cgroup(&pod_cgroup("burstable", CID)).unwrap();
    (0..20)
        .map(|_| {
            let mut args = h.container(&["open:/etc/db/api-key"]);
            args.cgroup = Some(cg.clone());
            args.uid = Some(65534);
            let (pid, results) = h.run(&args);
            assert_eq!(results[0].1, "EACCES");
            pid
        })
        .collect()
}

const CID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The denied-read tests must not overlap: they make and remove the same
/// container cgroup, and each collector sees every denied open on the node
/// (the other test's reads would count as `not_volume` or unresolved).
static DENIED_READS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn denied_reads_from_dying_mount_namespaces_are_all_reported() {
    if !privileged("denied_reads_from_dying_mount_namespaces_are_all_reported") {
        return;
    }
    let _serial = DENIED_READS.lock().unwrap_or_else(|e| e.into_inner());
    let (mut h, _api, _rt) = Harness::with_fake_api(CID, |_| {});
    let pids = twenty_denied_reads_from_dying_namespaces(&mut h);
    let events = h.drain(Duration::from_millis(500), Duration::from_secs(10));
    let reported: Vec<_> = events
        .iter()
        .filter(|e| pids.contains(&e.process.pid))
        .collect();
    assert_eq!(reported.len(), 20, "{reported:#?}");
    for ev in reported {
        assert_eq!(
            (
                ev.event_type.as_str(),
                ev.volume_name.as_deref(),
                ev.key.as_deref(),
                ev.result.as_str()
            ),
            ("secret_access", Some("db-creds"), Some("api-key"), "EACCES")
        );
        assert_eq!(
            ev.container.as_ref().and_then(|c| c.name.as_deref()),
            Some("app")
        );
    }
    let user = h.collector().stats().user;
    assert_eq!(
        (user.not_volume, user.denied_unresolved),
        (0, 0),
        "{user:?}"
    );
}

#[test]
fn denied_reads_from_dying_namespaces_standalone_are_reported_or_counted_unresolved() {
    if !privileged(
        "denied_reads_from_dying_namespaces_standalone_are_reported_or_counted_unresolved",
    ) {
        return;
    }
    let _serial = DENIED_READS.lock().unwrap_or_else(|e| e.into_inner());
    let mut h = Harness::start_with(|c| c.kube = KubeMode::Off);
    let pids = twenty_denied_reads_from_dying_namespaces(&mut h);
    let events = h.drain(Duration::from_millis(500), Duration::from_secs(10));
    let reported = events
        .iter()
        .filter(|e| pids.contains(&e.process.pid))
        .inspect(|e| assert_eq!(e.key.as_deref(), Some("api-key"), "{e:#?}"))
        .count() as u64;
    let user = h.collector().stats().user;
    assert_eq!(
        reported + user.denied_unresolved,
        20,
        "every denied read is reported or counted as unresolved: {user:?}"
    );
    assert_eq!(
        user.not_volume, 0,
        "never mistaken for not_a_volume_file: {user:?}"
    );
    // A loss is on /healthz too, not only in its counter.
    let dropped = h
        .collector()
        .health()
        .conditions()
        .into_iter()
        .find(|c| c.component == "events_dropped");
    assert_eq!(
        dropped.is_some(),
        user.denied_unresolved > 0,
        "{dropped:?} with {user:?}"
    );
}

#[test]
fn the_collectors_own_opens_are_not_matched() {
    if !privileged("the_collectors_own_opens_are_not_matched") {
        return;
    }
    let mut h = Harness::start();
    let own = std::process::id();
    // This process hosts the collector: its reads are the collector's own.
    drop(std::fs::File::open(h.secret.join("password")).unwrap());
    let missing = h.sb.kubelet_root().join(format!(
        "pods/{POD}/volumes/kubernetes.io~configmap/missing/key"
    ));
    assert!(std::fs::File::open(missing).is_err());
    let (pid, _) = h.run(&ExecArgs {
        steps: vec![format!("open:{}", h.secret.join("password").display())],
        ..Default::default()
    });
    common::exactly_one(h.events_of(pid), "another process's read");
    let events = h.drain(Duration::from_millis(300), Duration::from_secs(2));
    assert!(events.iter().all(|e| e.process.pid != own), "{events:#?}");
    let kernel = h.collector().stats().kernel;
    assert!(kernel.own >= 2, "own opens are counted: {kernel:?}");
}

/// Runs a collector in a mount namespace of its own whose mounts have
/// `propagation` (unshare's word), on a kubelet root that is a shared mount
/// on the host; mounts a new Secret volume after it started and reads it.
/// Returns its health and how many events that read gave.
fn later_volume_under(propagation: &str) -> (serde_json::Value, usize) {
    let mut sb = Sandbox::new().unwrap();
    let root = sb.kubelet_root();
    sb.bind(&root, &root).unwrap();
    nix::mount::mount(
        None::<&str>,
        &root,
        None::<&str>,
        nix::mount::MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    let flag = format!("--propagation={propagation}");
    let mut agent =
        Agent::start_under(&["unshare", "--mount", &flag], &sb, "", &[], Stdio::piped());
    let events = collect_stdout(&mut agent.child);
    let health = KeepAlive::connect(agent.health).json("/healthz").1;
    let dir = sb
        .add_volume(POD, VolumeType::Secret, "later", true)
        .unwrap();
    sb.write_atomic(&dir, &[("password", b"x", 0o644)]).unwrap();
    // The collector's watch has its chance to index the new volume.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = open_n_times(&dir.join("password"), 1);
    std::thread::sleep(Duration::from_millis(1000));
    let n = events_of(&events, pid);
    let (ok, log) = agent.terminate();
    assert!(ok, "{log:#?}");
    (health, n)
}

#[test]
fn a_kubelet_root_without_propagation_degrades_health_and_one_with_it_sees_later_volumes() {
    if !privileged(
        "a_kubelet_root_without_propagation_degrades_health_and_one_with_it_sees_later_volumes",
    ) {
        return;
    }
    let (health, n) = later_volume_under("private");
    assert_eq!(health["status"], "degraded", "{health:#}");
    let c = health["conditions"].as_array().unwrap();
    assert!(
        c.iter().any(|c| c["component"] == "mount_propagation"
            && c["reason"].as_str().unwrap().contains("HostToContainer")),
        "{health:#}"
    );
    assert_eq!(n, 0, "a private kubelet root does not see the later volume");
    let (health, n) = later_volume_under("slave");
    assert_eq!(health["status"], "healthy", "{health:#}");
    assert_eq!(n, 1, "HostToContainer (slave) sees the later volume's read");
}

/// A listed Service endpoint map with Services `shop/svc-0` … `shop/svc-{n-1}`,
/// each one cluster IP (10.96.9.i) and port 80.
fn listed_services(n: usize) -> Arc<ServiceMap> {
    let map = ServiceMap::new(MapSettings::default());
    for kind in [ObjectKind::Service, ObjectKind::EndpointSlice] {
        map.begin_relist(kind);
    }
    for i in 0..n {
        let svc = fake_apiserver::service(
            "shop",
            &format!("svc-{i}"),
            &[&format!("10.96.9.{i}")],
            serde_json::json!([{"port": 80, "protocol": "TCP", "targetPort": 80}]),
        );
        let svc = serde_json::from_value(svc).unwrap();
        map.apply(service_entries(&svc, map.names(), map.max_entries()).unwrap());
    }
    for kind in [ObjectKind::Service, ObjectKind::EndpointSlice] {
        map.end_relist(kind);
    }
    Arc::new(map)
}

#[test]
fn a_kernel_service_map_that_refuses_writes_is_counted_degrades_health_and_recovers() {
    if !privileged(
        "a_kernel_service_map_that_refuses_writes_is_counted_degrades_health_and_recovers",
    ) {
        return;
    }
    // A kernel map smaller than what it mirrors: its writes fail with E2BIG.
    let options = ProbeOptions {
        correlation: false,
        service_endpoints: Some(ServiceEndpointsMap {
            max_entries: 3,
            pin: None,
        }),
        ..ProbeOptions::default()
    };
    let mut storage = ProbeStorage::uninit();
    let probe = Probe::load(&mut storage, &options).expect("BPF loads");
    let kernel = probe.service_endpoints().unwrap().expect("svc_endpoints");
    let map = listed_services(5);
    let stats = Arc::new(MirrorStats::default());
    let health = Arc::new(HealthBoard::default());
    let mirror = KernelMirror {
        kernel,
        stats: Arc::clone(&stats),
        health: Some(Arc::clone(&health)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(mirror_to_kernel(Arc::clone(&map), mirror, async {
        let _ = stopped.await;
    }));
    let degraded = || {
        health
            .conditions()
            .iter()
            .find(|c| c.component == "service_map_kernel")
            .map(|c| c.reason.clone())
    };
    wait_up_to(Duration::from_secs(10), "the failed writes counted", || {
        stats.failures.load(Ordering::Relaxed) >= 2 && degraded().is_some()
    });
    let reason = degraded().unwrap();
    assert!(
        reason.contains("2 writes to the kernel map svc_endpoints failed"),
        "{reason}"
    );
    assert_eq!(stats.entries.load(Ordering::Relaxed), 3);

    // Two Services go: the next rebuild (5 s later) fits and clears it.
    for i in [3, 4] {
        let id = object_id(
            ObjectKind::Service,
            &ObjectMeta {
                namespace: Some("shop".into()),
                name: Some(format!("svc-{i}")),
                ..ObjectMeta::default()
            },
            map.names(),
        )
        .unwrap();
        map.delete(&id);
    }
    wait_up_to(Duration::from_secs(15), "the rebuild to clear it", || {
        degraded().is_none()
    });
    assert_eq!(stats.failures.load(Ordering::Relaxed), 2);
    assert_eq!(stats.entries.load(Ordering::Relaxed), 3);
    let _ = stop.send(());
    rt.block_on(task).unwrap();
}

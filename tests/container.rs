//! The collector the way a node runs it: the image built from the Dockerfile
//! (podman, on a locally bootstrapped Debian 12), started from the chart's
//! rendered DaemonSet pod template (tests/common/podspec.rs translates every
//! field to `podman run` on runc: drop ALL + four capabilities, read-only
//! root, hostPID, the kubelet directory with HostToContainer propagation, the
//! ConfigMap, env, args, limits; the test answers its probes as the kubelet
//! would), and workloads that runc starts from OCI bundles as containerd does
//! (cgroupsPath `/kubepods/besteffort/pod<uid>/<id>`, volumes bind-mounted
//! read-only from a kubelet-like tree of tmpfs volumes in AtomicWriter layout).
//!
//! Root only; with CI=true a missing podman, runc or mmdebstrap fails.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::fake_apiserver::{self, FakeApiServer, Resource};
use common::oci::{self, Spec, Workload};
use common::podspec::{self, PodmanRun};
use common::svc_endpoints::kernel_lookup;
use common::{privileged, sample, KeepAlive};
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::model::volume::VolumeType;
use nix::mount::{mount, MsFlags};
use serde_json::{json, Value};

/// One agent container at a time: each holds the node's BPF programs.
static NODE: Mutex<()> = Mutex::new(());

const NODE_NAME: &str = "node-e2e";
const AGENT_POD: &str = "0a9e7c1d-5e2e-4c0c-9d6f-c0ffee000001";
const POD_A: &str = "7c5b1a2e-3f4d-4e6a-8b9c-e2e0000000a1";
const POD_B: &str = "7c5b1a2e-3f4d-4e6a-8b9c-e2e0000000b2";

fn wait_up_to(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pod's network namespace, as a CNI plugin makes it: a veth pair with
/// the node's end in the host namespace.
struct PodNet {
    name: String,
    host_ip: Ipv4Addr,
    pod_ip: Ipv4Addr,
}

impl PodNet {
    fn new(name: &str, subnet: u8) -> Self {
        let ip = oci::need("ip", "iproute2");
        let _ = Command::new(&ip).args(["netns", "del", name]).output();
        let host = format!("cac-{subnet}h");
        let (host_ip, pod_ip) = (
            Ipv4Addr::new(10, 203, subnet, 1),
            Ipv4Addr::new(10, 203, subnet, 2),
        );
        for args in [
            vec!["netns", "add", name],
            vec![
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", name,
            ],
            vec!["addr", "add", &format!("{host_ip}/30"), "dev", &host],
            vec!["link", "set", &host, "up"],
            vec![
                "-n",
                name,
                "addr",
                "add",
                &format!("{pod_ip}/30"),
                "dev",
                "eth0",
            ],
            vec!["-n", name, "link", "set", "eth0", "up"],
            vec!["-n", name, "link", "set", "lo", "up"],
        ] {
            oci::run(Command::new(&ip).args(&args));
        }
        Self {
            name: name.into(),
            host_ip,
            pod_ip,
        }
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The kubelet's side of the node: a kubelet root on a shared mount (as on a
/// systemd host, where HostToContainer needs it), the agent's host
/// directories, and a fake API server on the node's end of the pod network.
struct Node {
    sb: Sandbox,
    /// The node's `serviceEndpoints.pinDir`, on the host's bpf filesystem.
    pin_dir: PathBuf,
    net: PodNet,
    api: FakeApiServer,
    _rt: tokio::runtime::Runtime,
}

impl Node {
    fn new(netns: &str, subnet: u8) -> Self {
        let mut sb = Sandbox::new().unwrap();
        let root = sb.kubelet_root();
        sb.bind(&root, &root).unwrap();
        mount(
            None::<&str>,
            &root,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        let net = PodNet::new(netns, subnet);
        let (api, rt) = fake_apiserver::start_blocking(SocketAddr::from((net.host_ip, 0)));
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/cac-test-{netns}"));
        let _ = std::fs::remove_dir_all(&pin_dir);
        Self {
            sb,
            pin_dir,
            net,
            api,
            _rt: rt,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.sb.scratch().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The chart rendered for this node: its kubelet root, host directories
    /// in the sandbox, the local image, the API server's URL.
    fn render(&self, extra: &[&str]) -> Vec<Value> {
        let helm = std::env::var("CAC_HELM")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                panic!("CAC_HELM is not set: scripts/dev.sh test installs helm and sets it")
            });
        let mut args: Vec<String> = vec!["--kube-version".into(), "1.31.0".into()];
        for (k, v) in [
            ("kubeletRoot", self.sb.kubelet_root().display().to_string()),
            ("apiSocket.hostDir", self.dir("run").display().to_string()),
            ("stateDir.hostPath", self.dir("state").display().to_string()),
            ("image.repository", oci::IMAGE_REPOSITORY.to_string()),
            ("image.tag", oci::IMAGE_TAG.to_string()),
            ("config.kube_api_url", self.api.url()),
            (
                "serviceEndpoints.pinDir",
                self.pin_dir.display().to_string(),
            ),
        ] {
            args.extend(["--set".into(), format!("{k}={v}")]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::helm::render(&helm, &args).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The pin outlives the agent, as on a node: the test removes it.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// The `--ulimit` flags of a container on a node: containerd 2 passes on
/// its own limits (systemd's default for it: nofile soft 1024, hard the
/// node's), and podman's own nproc ceiling is the kernel's pid_max.
fn node_ulimits() -> [String; 4] {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is valid for the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let nofile_hard = l.rlim_max;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut l) }, 0);
    let nproc = l.rlim_max.min(pid_max);
    [
        "--ulimit".into(),
        format!("nofile=1024:{nofile_hard}"),
        "--ulimit".into(),
        format!("nproc={nproc}:{nproc}"),
    ]
}

/// The agent's container, started by podman from the translated pod template.
struct AgentPod {
    name: String,
    run: PodmanRun,
    log: PathBuf,
    ip: Ipv4Addr,
    pid: u32,
}

impl AgentPod {
    fn start(node: &Node, docs: &[Value]) -> Self {
        let volumes = node.dir("configmaps");
        let run = podspec::translate(
            docs,
            &podspec::Node {
                name: NODE_NAME,
                netns: &node.net.path(),
                pod_uid: AGENT_POD,
                volumes_dir: &volumes,
            },
        )
        .unwrap();
        let name = "cac-collector".to_string();
        let podman = oci::need("podman", "podman");
        let _ = Command::new(&podman)
            .args(["rm", "--force", &name])
            .output();
        // The CRI log format the kubelet reads (`<time> stdout F <line>`).
        let log = node.dir("logs").join("collector.log");
        oci::run(
            Command::new(&podman)
                .args(["run", "--detach", "--runtime", "runc"])
                .args(["--log-driver", "k8s-file", "--log-opt"])
                .arg(format!("path={}", log.display()))
                .args(node_ulimits())
                .args(&run.flags)
                .arg(&run.image)
                .args(&run.args),
        );
        let out =
            oci::run(Command::new(&podman).args(["inspect", "--format", "{{.State.Pid}}", &name]));
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Self {
            name,
            run,
            log,
            ip: node.net.pod_ip,
            pid,
        }
    }

    /// Lines of one stream (stdout or stderr) of the container's log.
    fn lines(&self, stream: &str) -> Vec<String> {
        let Ok(f) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut partial = String::new();
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            let mut parts = line.splitn(4, ' ');
            let (_, s, tag, text) = (parts.next(), parts.next(), parts.next(), parts.next());
            if s != Some(stream) {
                continue;
            }
            partial.push_str(text.unwrap_or(""));
            if tag == Some("F") {
                out.push(std::mem::take(&mut partial));
            }
        }
        out
    }

    fn events(&self) -> Vec<Value> {
        self.lines("stdout")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn logged(&self, text: &str) -> bool {
        self.lines("stderr").iter().any(|l| l.contains(text))
    }

    /// GET over the pod network, as the kubelet's prober and Prometheus reach it.
    fn get(&self, port: u16, path: &str) -> Option<(u16, Value)> {
        let addr = SocketAddr::from((self.ip, port));
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Some(common::exchange(s, "GET", path, &[], b""))
    }

    /// The probes, as the kubelet runs them: the startup probe until it
    /// passes (within failureThreshold periods), then readiness and liveness.
    fn probe(&self) {
        let by_kind = |k: &str| {
            self.run
                .probes
                .iter()
                .find(|p| p.kind == k)
                .unwrap()
                .clone()
        };
        let startup = by_kind("startup");
        let deadline = Duration::from_secs(startup.period_s * startup.failure_threshold);
        wait_up_to(deadline, "the startup probe", || {
            self.get(startup.port, &startup.path)
                .is_some_and(|r| r.0 == 200)
        });
        for p in [by_kind("readiness"), by_kind("liveness")] {
            wait_up_to(
                Duration::from_secs(p.period_s * p.failure_threshold),
                &format!("the {} probe ({})", p.kind, p.path),
                || self.get(p.port, &p.path).is_some_and(|r| r.0 == 200),
            );
        }
    }

    fn health_port(&self) -> u16 {
        self.run.ports["health"]
    }

    /// The agent's process status lines (`CapEff:`, `NoNewPrivs:`, `VmRSS:`).
    fn status(&self, field: &str) -> String {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in the agent's status"))
            .trim()
            .to_string()
    }
}

impl Drop for AgentPod {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "5", &self.name])
            .output();
    }
}

/// A GET on the correlation API's Unix socket (a hostPath of the chart).
fn api_get(node: &Node, path: &str) -> (u16, Value) {
    let s = UnixStream::connect(node.dir("run").join("api.sock")).unwrap();
    common::exchange(s, "GET", path, &[], b"")
}

/// A Pod as the API server returns it, with named containers and ids, each
/// mounting the volumes at `mounts` ((volume, path) pairs, read-only) as the
/// runc bundles do: the collector maps a denied path of a process already
/// gone through them.
fn pod_object(
    uid: &str,
    name: &str,
    owner: &str,
    volumes: Value,
    mounts: &[(&str, &str)],
    containers: &[(&str, &str)],
) -> Value {
    let mut pod = fake_apiserver::pod(uid, name, "payments", NODE_NAME, volumes, containers[0].1);
    let owner_name = name.rsplit_once('-').map_or(name, |(n, _)| n);
    pod["metadata"]["ownerReferences"][0]["kind"] = json!(owner);
    pod["metadata"]["ownerReferences"][0]["name"] = json!(owner_name);
    pod["metadata"]["ownerReferences"][0]["apiVersion"] = json!(if owner == "Job" {
        "batch/v1"
    } else {
        "apps/v1"
    });
    let mounts: Vec<Value> = mounts
        .iter()
        .map(|(v, at)| json!({"name": v, "mountPath": at, "readOnly": true}))
        .collect();
    pod["spec"]["containers"] = json!(containers
        .iter()
        .map(|(n, _)| json!({"name": n, "image": format!("registry.example/{n}:1.0"), "volumeMounts": mounts}))
        .collect::<Vec<_>>());
    pod["status"]["containerStatuses"] = json!(containers
        .iter()
        .map(
            |(n, id)| json!({"name": n, "image": format!("registry.example/{n}:1.0"), "imageID": "",
            "ready": true, "restartCount": 0, "containerID": format!("containerd://{id}")})
        )
        .collect::<Vec<_>>());
    pod
}

/// The one event of container `cid` reading `key`, with its fields checked.
fn the_event<'a>(events: &'a [Value], cid: &str, key: &str) -> Option<&'a Value> {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["container"]["id"] == cid && e["key"] == key)
        .collect();
    assert!(
        found.len() <= 1,
        "more than one event of {cid} reading {key}: {found:#?}"
    );
    found.first().copied()
}

/// Asserts the fields an operator reads off an event.
fn check(e: &Value, pod: &str, command: &str, result: &str, session: &str) {
    assert_eq!(e["pod_uid"], pod, "{e:#}");
    assert_eq!(e["process"]["command"], command, "{e:#}");
    assert_eq!(e["result"], result, "{e:#}");
    assert_eq!(e["session"], session, "{e:#}");
    let cg = e["process"]["cgroup_path"].as_str().unwrap_or_default();
    assert!(
        cg.contains(&format!("/kubepods/besteffort/pod{pod}/")),
        "{e:#}"
    );
}

#[test]
fn the_chart_pod_on_podman_sees_workloads_started_by_runc() {
    if !privileged("the_chart_pod_on_podman_sees_workloads_started_by_runc") {
        return;
    }
    let _node_lock = NODE.lock().unwrap_or_else(|e| e.into_inner());
    let image = oci::image();
    let mut node = Node::new("cac-e2e-a", 1);

    // Pod A exists before the agent: a Secret volume (tmpfs, 0400 files) and
    // a ConfigMap volume (the node's disk).
    let secret = node
        .sb
        .add_volume(POD_A, VolumeType::Secret, "db-creds", true)
        .unwrap();
    node.sb
        .write_atomic(&secret, &[("password", b"p", 0o400)])
        .unwrap();
    let config = node
        .sb
        .add_volume(POD_A, VolumeType::ConfigMap, "app-config", false)
        .unwrap();
    node.sb
        .write_atomic(&config, &[("app.yaml", b"a: 1", 0o644)])
        .unwrap();
    let (app, sidecar) = (oci::container_id("a-app"), oci::container_id("a-sidecar"));
    node.api.add(pod_object(
        POD_A,
        "payments-0",
        "StatefulSet",
        json!([{"name": "db-creds", "secret": {"secretName": "db-credentials"}},
               {"name": "app-config", "configMap": {"name": "app-settings"}}]),
        &[("db-creds", "/etc/db"), ("app-config", "/etc/config")],
        &[("app", &app), ("sidecar", &sidecar)],
    ));

    let agent = AgentPod::start(&node, &node.render(&[]));
    agent.probe();
    // What the pod spec asked for is what the agent runs with.
    assert_eq!(agent.status("NoNewPrivs"), "1");
    let cap_eff = u64::from_str_radix(&agent.status("CapEff"), 16).unwrap();
    let want = [
        38u32, /* PERFMON */
        39,    /* BPF */
        19,    /* SYS_PTRACE */
        2,     /* DAC_READ_SEARCH */
    ]
    .iter()
    .fold(0u64, |m, c| m | 1 << c);
    assert_eq!(cap_eff, want, "CapEff {cap_eff:#x}");
    let (_, health) = agent.get(agent.health_port(), "/healthz").unwrap();
    assert_eq!(health["status"], "healthy", "{health:#}");

    // The agent pins the kernel Service endpoint map in the host directory
    // the chart mounts, where a program on the host finds its Services.
    node.api.add_to(
        Resource::Services,
        fake_apiserver::service(
            "shop",
            "web",
            &["10.96.3.3"],
            json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]),
        ),
    );
    let pin = node.pin_dir.join("svc_endpoints");
    wait_up_to(
        Duration::from_secs(20),
        "the Service in the pinned svc_endpoints",
        || pin.exists() && kernel_lookup(&pin, "10.96.3.3", 80, 6).is_some(),
    );
    assert_eq!(
        kernel_lookup(&pin, "10.96.3.3", 80, 6),
        Some(("shop/web:http@".to_string(), 1))
    );

    let pod_a_volumes: Vec<(PathBuf, &str)> =
        vec![(secret.clone(), "/etc/db"), (config.clone(), "/etc/config")];
    let work = node.dir("bundles");
    let mut app_c = Workload::new(
        &work,
        &Spec {
            pod_uid: POD_A,
            id: app.clone(),
            args: &[
                "sh",
                "-c",
                "cat /etc/db/password /etc/config/app.yaml >/dev/null && exec sleep 600",
            ],
            uid: 0,
            volumes: &pod_a_volumes,
        },
    );
    app_c.start();
    let mut sidecar_c = Workload::new(
        &work,
        &Spec {
            pod_uid: POD_A,
            id: sidecar.clone(),
            args: &["sh", "-c", "cat /etc/db/password; exec sleep 600"],
            uid: 1000,
            volumes: &pod_a_volumes,
        },
    );
    sidecar_c.start();
    wait_up_to(
        Duration::from_secs(20),
        "the workloads' three reads",
        || {
            let ev = agent.events();
            the_event(&ev, &app, "password").is_some()
                && the_event(&ev, &app, "app.yaml").is_some()
                && the_event(&ev, &sidecar, "password").is_some()
        },
    );
    let exec = app_c.exec(&["cat", "/etc/db/password"]);
    assert!(exec.status.success(), "{exec:?}");
    wait_up_to(Duration::from_secs(20), "the exec session's read", || {
        agent
            .events()
            .iter()
            .filter(|e| e["container"]["id"] == app.as_str())
            .count()
            == 3
    });

    // Pod B, a Job scheduled after the agent started: its Secret volume is a
    // new tmpfs on the host, seen by the agent only through propagation.
    let token = node
        .sb
        .add_volume(POD_B, VolumeType::Secret, "job-token", true)
        .unwrap();
    node.sb
        .write_atomic(&token, &[("token", b"t", 0o400)])
        .unwrap();
    let (migrate, check_c) = (oci::container_id("b-migrate"), oci::container_id("b-check"));
    node.api.add(pod_object(
        POD_B,
        "migrate-x7k2p",
        "Job",
        json!([{"name": "job-token", "secret": {"secretName": "migrate-token"}}]),
        &[("job-token", "/var/run/job")],
        &[("migrate", &migrate), ("check", &check_c)],
    ));
    wait_up_to(
        Duration::from_secs(20),
        "the new volume in the agent's mounts",
        || {
            let (_, mounts) = api_get(&node, "/v1/mounts");
            mounts.as_array().is_some_and(|m| {
                m.iter()
                    .any(|e| e["mount"]["mount_path"] == token.to_str().unwrap())
            })
        },
    );
    let job_volumes = vec![(token.clone(), "/var/run/job")];
    let out = Workload::new(
        &work,
        &Spec {
            pod_uid: POD_B,
            id: migrate.clone(),
            args: &["cat", "/var/run/job/token"],
            uid: 0,
            volumes: &job_volumes,
        },
    )
    .run_to_exit();
    assert!(out.status.success(), "{out:?}");
    // The Job-like container: its only process is denied and exits at once.
    let out = Workload::new(
        &work,
        &Spec {
            pod_uid: POD_B,
            id: check_c.clone(),
            args: &["cat", "/var/run/job/token"],
            uid: 1000,
            volumes: &job_volumes,
        },
    )
    .run_to_exit();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    wait_up_to(Duration::from_secs(20), "the Job's two reads", || {
        let ev = agent.events();
        the_event(&ev, &migrate, "token").is_some() && the_event(&ev, &check_c, "token").is_some()
    });

    let events = agent.events();
    let reads_of = |cid: &str| {
        events
            .iter()
            .filter(|e| e["container"]["id"] == cid)
            .collect::<Vec<_>>()
    };
    let app_reads = reads_of(&app);
    assert_eq!(app_reads.len(), 3, "{app_reads:#?}");
    for (i, session) in [(0, "init"), (1, "init"), (2, "exec")] {
        check(app_reads[i], POD_A, "cat", "ok", session);
    }
    assert_eq!(
        app_reads[0]["source"],
        json!({"kind": "Secret", "name": "db-credentials", "key": "password"})
    );
    assert_eq!(app_reads[1]["config_name"], "app-settings");
    assert_eq!(app_reads[2]["key"], "password");
    let side = the_event(&events, &sidecar, "password").unwrap();
    check(side, POD_A, "cat", "EACCES", "init");
    assert_eq!(side["process"]["uid"], 1000);
    assert_eq!(side["container"]["name"], "sidecar");
    let m = the_event(&events, &migrate, "token").unwrap();
    check(m, POD_B, "cat", "ok", "init");
    assert_eq!(m["workload"], json!({"kind": "Job", "name": "migrate"}));
    let c = the_event(&events, &check_c, "token").unwrap();
    check(c, POD_B, "cat", "EACCES", "init");
    assert_eq!(c["container"]["name"], "check");

    // Nothing was lost on the way.
    let (_, health) = agent.get(agent.health_port(), "/healthz").unwrap();
    assert_eq!(health["status"], "healthy", "{health:#}");
    let rss = agent.status("VmRSS");
    eprintln!(
        "image {} bytes ({:.1} MiB); agent VmRSS {rss} under a {} byte memory limit",
        image.size,
        image.size as f64 / 1048576.0,
        agent.run.memory_limit.unwrap()
    );
    drop(sidecar_c);
    drop(app_c);
    assert!(!agent.logged("panicked"), "{:#?}", agent.lines("stderr"));
}

/// Whether the peer closed `s` (a read returns 0 or fails) within `limit`.
fn closed_within(s: &mut (impl std::io::Read + ?Sized), limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let end = Instant::now() + limit;
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// Sets the soft RLIMIT_NOFILE of process `pid` (the hard limit stays).
fn set_nofile_soft(pid: u32, soft: u64) {
    let out = oci::run(
        Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={soft}:")),
    );
    assert!(out.status.success());
}

#[test]
fn the_hardening_holds_in_the_chart_pod_under_its_limits() {
    if !privileged("the_hardening_holds_in_the_chart_pod_under_its_limits") {
        return;
    }
    let _node_lock = NODE.lock().unwrap_or_else(|e| e.into_inner());
    oci::image();
    let mut node = Node::new("cac-e2e-b", 2);
    let secret = node
        .sb
        .add_volume(POD_A, VolumeType::Secret, "creds", true)
        .unwrap();
    node.sb
        .write_atomic(&secret, &[("password", b"p", 0o644)])
        .unwrap();
    let out_dir = node.dir("out");
    let volumes = json!([{"name": "out", "hostPath": {"path": out_dir, "type": "Directory"}}]);
    let mounts = json!([{"name": "out", "mountPath": "/var/log/cac"}]);
    let docs = node.render(&[
        "--set",
        "metrics.enabled=true",
        "--set",
        "config.repeat_window_ms=0",
        "--set",
        "config.rescan_interval_ms=300",
        "--set",
        "config.output_file=/var/log/cac/events.jsonl",
        "--set-json",
        &format!("extraVolumes={volumes}"),
        "--set-json",
        &format!("extraVolumeMounts={mounts}"),
    ]);
    let agent = AgentPod::start(&node, &docs);
    agent.probe();
    let (health, metrics) = (agent.health_port(), agent.run.ports["metrics"]);
    let password = secret.join("password");
    let in_file = |pid: u32| {
        std::fs::read_to_string(out_dir.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("\"pid\":{pid},")))
            .count()
    };
    // Connections made before the agent runs out of descriptors.
    let mut health_conn = KeepAlive::connect(SocketAddr::from((agent.ip, health)));
    let mut metrics_conn = KeepAlive::connect(SocketAddr::from((agent.ip, metrics)));
    let degraded_by = |h: &mut KeepAlive, component: &str| {
        let (status, body) = h.json("/healthz");
        status == 200
            && body["status"] == "degraded"
            && body["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["component"] == component))
    };

    // No file descriptor left: scans fail, health degrades, events go on.
    let first = common::open_n_times(&password, 1);
    wait_up_to(Duration::from_secs(10), "the first event", || {
        in_file(first) == 1
    });
    set_nofile_soft(agent.pid, 3);
    wait_up_to(
        Duration::from_secs(15),
        "a degraded health naming volume_scan",
        || degraded_by(&mut health_conn, "volume_scan"),
    );
    let during = common::open_n_times(&password, 1);
    wait_up_to(Duration::from_secs(10), "an event while scans fail", || {
        in_file(during) == 1
    });
    set_nofile_soft(agent.pid, 1024);
    wait_up_to(Duration::from_secs(15), "health to recover", || {
        health_conn.json("/healthz").1["status"] == "healthy"
    });

    // The node's log pipeline stalls (conmon stopped, as a stuck shim
    // would): stdout blocks, the file output goes on and health says so.
    let podman = oci::need("podman", "podman");
    let out = oci::run(Command::new(&podman).args([
        "inspect",
        "--format",
        "{{.State.ConmonPid}}",
        &agent.name,
    ]));
    let conmon =
        nix::unistd::Pid::from_raw(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap());
    nix::sys::signal::kill(conmon, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stalled = common::open_n_times(&password, 2000);
    wait_up_to(Duration::from_secs(30), "2000 events in the file", || {
        in_file(stalled) == 2000
    });
    wait_up_to(
        Duration::from_secs(20),
        "stdout reported as blocked",
        || {
            let (_, b) = health_conn.json("/healthz");
            b["reason"]
                .as_str()
                .is_some_and(|r| r.contains("output:stdout: blocked in one write"))
        },
    );
    // The log pipeline goes away: stdout fails, the file goes on.
    nix::sys::signal::kill(conmon, nix::sys::signal::Signal::SIGKILL).unwrap();
    let after = common::open_n_times(&password, 500);
    wait_up_to(
        Duration::from_secs(30),
        "500 more events in the file",
        || in_file(after) == 500,
    );
    wait_up_to(Duration::from_secs(10), "stdout reported as failed", || {
        let (_, b) = health_conn.json("/healthz");
        b["reason"]
            .as_str()
            .is_some_and(|r| r.contains("output:stdout: failed"))
    });
    let (_, text) = metrics_conn.get("/metrics");
    common::assert_stdout_failed_file_ok(&text);

    // Idle connections on the API socket and the health port are cut after
    // http_timeout_ms (10 s); health answers meanwhile.
    let sock = node.dir("run").join("api.sock");
    let mut idle: Vec<Box<dyn std::io::Read>> = Vec::new();
    for _ in 0..20 {
        let s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        idle.push(Box::new(s));
        let t = TcpStream::connect((agent.ip, health)).unwrap();
        t.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        idle.push(Box::new(t));
    }
    assert_eq!(
        health_conn.json("/healthz").0,
        200,
        "health answers beside 40 idle connections"
    );
    for s in &mut idle {
        assert!(
            closed_within(s.as_mut(), Duration::from_secs(30)),
            "an idle connection was not cut"
        );
    }
    let (_, text) = KeepAlive::connect(SocketAddr::from((agent.ip, metrics))).get("/metrics");
    for listener in ["api_socket", "health"] {
        let n = sample(
            &text,
            "kernel_monitor_api_timeouts_total",
            &[("listener", listener)],
        );
        assert!(n.is_some_and(|n| n >= 20.0), "{listener}: {n:?}\n{text}");
    }
    let rss = agent.status("VmRSS");
    eprintln!("agent VmRSS after 2,500 events with a stalled stdout: {rss}");
}

/// `package=version` pins of each stage's `apt-get install` lines.
fn pinned_packages(dockerfile: &str) -> Vec<(String, Vec<String>)> {
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for line in dockerfile.lines() {
        let t = line.trim().trim_end_matches('\\').trim();
        if let Some(from) = t.strip_prefix("FROM ") {
            stages.push((from.to_string(), Vec::new()));
            continue;
        }
        let Some((_, pins)) = stages.last_mut() else {
            continue;
        };
        for word in t.split_whitespace() {
            let pinned = word.split_once('=').is_some_and(|(name, version)| {
                name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
                    && version.starts_with(|c: char| c.is_ascii_digit())
            });
            if pinned {
                pins.push(word.to_string());
            }
        }
    }
    stages.retain(|(_, pins)| !pins.is_empty());
    stages
}

#[test]
fn the_dockerfiles_pinned_packages_install_on_debian_12() {
    if !privileged("the_dockerfiles_pinned_packages_install_on_debian_12") {
        return;
    }
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let stages = pinned_packages(&text);
    let names: Vec<&str> = stages.iter().map(|(from, _)| from.as_str()).collect();
    assert_eq!(
        names,
        ["${BUILDER_IMAGE} AS builder", "${RUNTIME_IMAGE} AS runtime"]
    );
    assert!(
        stages[0].1.iter().any(|p| p.starts_with("clang-19=")),
        "{stages:?}"
    );
    oci::base();
    // A point release replaces a pinned version on the mirror: apt, resolving
    // each stage's pins together (a simulated install), says so here before
    // a published build fails.
    for (stage, pins) in &stages {
        let out = Command::new(oci::need("podman", "podman"))
            .args(["run", "--rm", "--network=host", "--runtime", "runc"])
            .args(node_ulimits())
            .arg(oci::BASE_IMAGE)
            .args([
                "sh",
                "-c",
                "apt-get update -qq && apt-get install --simulate --no-install-recommends \"$@\"",
                "sh",
            ])
            .args(pins)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{stage}: {pins:?} do not install on Debian 12 today (bump the Dockerfile's pins):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// tests/io_uring_open.c, built once (static: it runs in any root filesystem).
fn io_uring_program() -> &'static Path {
    static PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("io_uring_open");
        oci::run(
            Command::new("cc")
                .args(["-O2", "-Wall", "-Werror", "-static", "-o"])
                .arg(&out)
                .arg(root.join("tests/io_uring_open.c")),
        );
        out
    })
}

/// Runs the io_uring opener in a runc container of the demo pod (uid `uid`,
/// its Secret volume at /etc/db); returns what it printed.
fn uring_open_in_container(
    h: &common::Harness,
    work: &Path,
    cid: &str,
    uid: u32,
    args: &[&str],
) -> String {
    let mut argv = vec!["/usr/local/bin/uring-open"];
    argv.extend_from_slice(args);
    let volumes = vec![
        (h.secret.clone(), "/etc/db"),
        (
            io_uring_program().to_path_buf(),
            "/usr/local/bin/uring-open",
        ),
    ];
    let out = Workload::new(
        work,
        &Spec {
            pod_uid: common::POD,
            id: cid.to_string(),
            args: &argv,
            uid,
            volumes: &volumes,
        },
    )
    .run_to_exit();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn io_uring_opens_from_a_runc_container_are_reported_like_any_other() {
    if !privileged("io_uring_opens_from_a_runc_container_are_reported_like_any_other") {
        return;
    }
    let _node_lock = NODE.lock().unwrap_or_else(|e| e.into_inner());
    oci::base();
    let cid = oci::container_id("uring");
    let (mut h, _api, _rt) = common::Harness::with_fake_api(&cid, |_| {});
    let work = h.sb.scratch().join("bundles");
    let of_container =
        |h: &mut common::Harness| -> Vec<config_access_collector::model::event::AccessEvent> {
            h.drain(Duration::from_millis(500), Duration::from_secs(10))
                .into_iter()
                .filter(|e| e.container.as_ref().is_some_and(|c| c.id == cid))
                .collect()
        };
    // Into the fd table (fd 4: 0-2 are stdio, 3 the ring), on an io_uring
    // worker thread, into fixed-file slot 0, and denied (uid 65534, a 0600 key).
    for (uid, args, result, key) in [
        (0, vec!["/etc/db/password"], "ok 4", "password"),
        (0, vec!["--async", "/etc/db/password"], "ok 4", "password"),
        (0, vec!["--fixed", "/etc/db/password"], "ok 0", "password"),
        (65534, vec!["/etc/db/api-key"], "err 13", "api-key"),
    ] {
        let printed = uring_open_in_container(&h, &work, &cid, uid, &args);
        assert_eq!(printed.trim(), result, "{args:?}");
        let events = of_container(&mut h);
        let e = common::exactly_one(events, &format!("io_uring open {args:?}"));
        assert_eq!(e.syscall, "io_uring", "{e:#?}");
        assert_eq!(e.key.as_deref(), Some(key), "{e:#?}");
        assert_eq!(e.pod_uid.as_deref(), Some(common::POD), "{e:#?}");
        assert_eq!(
            e.path.as_deref(),
            Some(format!("/etc/db/{key}").as_str()),
            "{e:#?}"
        );
        assert_eq!(e.process.command, "uring-open", "{e:#?}");
        assert_eq!(e.process.uid, uid, "{e:#?}");
        let want = if uid == 0 { "ok" } else { "EACCES" };
        assert_eq!(e.result, want, "{e:#?}");
        // Forced onto a worker thread ("iou-wrk-<pid>"): the process is named.
        // (Without IOSQE_ASYNC an open whose lookup is not cached goes there too.)
        if args[0] == "--async" {
            assert_ne!(e.process.tid, e.process.pid, "{e:#?}");
        }
    }
    // A success without a completion (IOSQE_CQE_SKIP_SUCCESS) cannot be
    // seen: it is counted, not silently missed.
    let before = h.collector().stats().kernel.uring_unobserved;
    let printed = uring_open_in_container(&h, &work, &cid, 0, &["--skip", "/etc/db/password"]);
    assert_eq!(printed.trim(), "ok -");
    assert_eq!(h.collector().stats().kernel.uring_unobserved, before + 1);
    assert!(of_container(&mut h).is_empty());
    let unseen = h.collector().health().conditions();
    let c = unseen
        .iter()
        .find(|c| c.component == "io_uring")
        .unwrap_or_else(|| panic!("no io_uring condition: {unseen:?}"));
    assert!(c.reason.contains("IOSQE_CQE_SKIP_SUCCESS"), "{c:?}");
}

//! Shared helpers of the integration tests: root checks, a collector on a
//! sandbox, and event collection per process.

#![allow(dead_code)]

pub mod fake_apiserver;
pub mod helm;
pub mod oci;
pub mod podspec;
pub mod receivers;
pub mod svc_endpoints;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config_access_collector::agent::Collector;
use config_access_collector::config::Config;
use config_access_collector::demo::container::{ContainerProc, ExecArgs};
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::demo::{build_pod, PodVolumes};
use config_access_collector::model::event::AccessEvent;
use serde_json::Value;

pub const POD: &str = config_access_collector::demo::POD_UID;
pub const EXE: &str = env!("CARGO_BIN_EXE_config-access-collector");

/// True when the test may use BPF. Off CI a non-root run skips with a reason;
/// with CI=true a missing privilege is a failure, never a skip.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: CI=true but not running as root; BPF tests must run in CI");
    }
    eprintln!("SKIPPED {test}: needs root to load BPF programs");
    false
}

/// A sandbox pod with three volumes and a running collector.
pub struct Harness {
    pub sb: Sandbox,
    pub collector: Option<Collector>,
    pub events: Receiver<Arc<AccessEvent>>,
    pub secret: PathBuf,
    pub config: PathBuf,
    pub token: PathBuf,
    pub pod: PodVolumes,
    pub backlog: Vec<AccessEvent>,
}

pub fn default_config(sb: &Sandbox) -> Config {
    Config {
        kubelet_root: sb.kubelet_root(),
        flush_interval_ms: 10,
        health_listen: "127.0.0.1:0".into(),
        api_socket: sb.scratch().join("api.sock").to_string_lossy().into_owned(),
        ..Config::default()
    }
}

impl Harness {
    /// Builds the pod, then starts the collector with `edit` applied to the config.
    pub fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        let mut sb = Sandbox::new().expect("sandbox");
        let pod = build_pod(&mut sb).expect("demo pod");
        let mut cfg = default_config(&sb);
        edit(&mut cfg);
        let (collector, events) =
            Collector::start_with_channel(&cfg).expect("collector starts (BPF must load)");
        Self {
            secret: pod.secret.clone(),
            config: pod.config.clone(),
            token: pod.token.clone(),
            pod,
            sb,
            collector: Some(collector),
            events,
            backlog: Vec::new(),
        }
    }

    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// A fake API server serving the demo pod (container `cid`), and a
    /// collector enriching from it once the pod is known.
    pub fn with_fake_api(
        cid: &str,
        edit: impl FnOnce(&mut Config),
    ) -> (Self, fake_apiserver::FakeApiServer, tokio::runtime::Runtime) {
        let (api, rt) = fake_apiserver::start_blocking("127.0.0.1:0".parse().unwrap());
        api.add(fake_apiserver::demo_pod(POD, cid));
        let url = api.url();
        let h = Self::start_with(|c| {
            c.kube_api_url = Some(url);
            edit(c);
        });
        let store = h.collector().pods().expect("kube mode").clone();
        wait("pod metadata from the fake API server", || {
            store.synced() && store.get(POD).is_some()
        });
        (h, api, rt)
    }

    pub fn collector(&self) -> &Collector {
        self.collector.as_ref().expect("running")
    }

    /// A container of the pod running `steps`.
    pub fn container(&self, steps: &[&str]) -> ExecArgs {
        self.pod.container(&self.sb.container_root(), steps)
    }

    /// Runs a sandboxed process to completion; returns its pid and step results.
    pub fn run(&self, args: &ExecArgs) -> (u32, Vec<(String, String)>) {
        let mut p = ContainerProc::spawn(Path::new(EXE), args).expect("spawn sandbox-exec");
        let pid = p.pid;
        let n = args
            .steps
            .iter()
            .filter(|s| !matches!(s.split(':').next(), Some("chdir" | "sleep" | "wait")))
            .count();
        let results = (0..n)
            .map(|_| p.next_result().expect("step result"))
            .collect();
        assert_eq!(p.finish().unwrap(), 0, "sandbox-exec failed");
        (pid, results)
    }

    /// Every event, until `quiet` passes without one (or `limit` passes).
    pub fn drain(&mut self, quiet: Duration, limit: Duration) -> Vec<AccessEvent> {
        let end = Instant::now() + limit;
        let mut out = std::mem::take(&mut self.backlog);
        while Instant::now() < end {
            match self.events.recv_timeout(quiet) {
                Ok(ev) => out.push(Arc::unwrap_or_clone(ev)),
                Err(_) => break,
            }
        }
        out
    }

    /// Events of process `pid` once the pipeline has gone quiet.
    pub fn events_of(&mut self, pid: u32) -> Vec<AccessEvent> {
        let all = self.drain(Duration::from_millis(300), Duration::from_secs(5));
        let (mine, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(|e| e.process.pid == pid);
        self.backlog = rest;
        mine
    }

    /// Waits until `pred` holds for the registry or `limit` passes.
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&Collector) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if pred(self.collector()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(c) = self.collector.take() {
            c.stop();
        }
    }
}

/// Waits up to 15 s for `cond`, failing the test with `what` otherwise.
pub fn wait(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// cgroup (relative to the cgroup2 mount) of container `cid` of the test pod,
/// as the systemd driver and containerd name it.
pub fn pod_cgroup(qos: &str, cid: &str) -> String {
    let uid = POD.replace('-', "_");
    format!("kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid}.slice/cri-containerd-{cid}.scope")
}

/// Asserts exactly one event and returns it.
pub fn exactly_one(events: Vec<AccessEvent>, what: &str) -> AccessEvent {
    assert_eq!(
        events.len(),
        1,
        "{what}: expected exactly one event, got {events:#?}"
    );
    events.into_iter().next().unwrap()
}

/// Reads from the demo pod's container `cid` (under a pod-like cgroup): the
/// Secret twice, the ConfigMap and the service-account token once each, then
/// one denied open (EACCES) of the Secret's `api-key` by uid 65534. Returns
/// the pids of the reader and of the denied process.
pub fn read_volumes(h: &mut Harness, cid: &str) -> (u32, u32) {
    let cg = h.sb.make_cgroup(&pod_cgroup("burstable", cid)).unwrap();
    let mut args = h.container(&[
        "open:/etc/db/password",
        "open:/etc/db/password",
        "open:/etc/config/app.yaml",
        "open:/var/run/secrets/kubernetes.io/serviceaccount/token",
    ]);
    args.cgroup = Some(cg.clone());
    let (reader, results) = h.run(&args);
    assert!(results.iter().all(|r| r.1 == "ok"), "{results:?}");
    // The denied process stays alive until its event is read: user space
    // resolves a denied path through the process's root.
    let mut denied = h.container(&["open:/etc/db/api-key", "wait"]);
    denied.cgroup = Some(cg);
    denied.uid = Some(65534);
    let mut p = ContainerProc::spawn(Path::new(EXE), &denied).unwrap();
    assert_eq!(p.next_result().unwrap().1, "EACCES");
    let intruder = p.pid;
    let evs = h.events_of(intruder);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    p.release();
    p.finish().unwrap();
    (reader, intruder)
}

/// One HTTP/1.1 exchange; returns the status and the JSON body.
pub fn exchange(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // The server may answer (and close) before reading a body it refuses.
    let _ = s.write_all(req.as_bytes()).and_then(|()| s.write_all(body));
    let mut raw = Vec::new();
    // Closing with our unread body still queued makes the server's side
    // report a reset after its whole answer: the answer is what counts.
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => {}
        Err(e) => panic!("{method} {path}: reading the answer: {e}"),
    }
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// The body of a chunked HTTP answer.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Opens `path` `n` times from a process of its own; returns its pid.
pub fn open_n_times(path: &Path, n: usize) -> u32 {
    let args = ExecArgs {
        steps: vec![format!("open:{}", path.display()); n],
        ..Default::default()
    };
    let mut p = ContainerProc::spawn(Path::new(EXE), &args).unwrap();
    for _ in 0..n {
        assert_eq!(p.next_result().unwrap().1, "ok");
    }
    let pid = p.pid;
    assert_eq!(p.finish().unwrap(), 0);
    pid
}

/// One HTTP/1.1 connection kept open across requests, so it still works
/// when the collector can no longer accept new ones.
pub struct KeepAlive {
    stream: BufReader<TcpStream>,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// GET `path`: status and body.
    pub fn get(&mut self, path: &str) -> (u16, String) {
        write!(
            self.stream.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: collector\r\n\r\n"
        )
        .unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut len = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    pub fn json(&mut self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get(path);
        (status, serde_json::from_str(&body).unwrap())
    }
}

/// Value of the Prometheus sample of metric `name` that has every label of `labels`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let matches = metric == name
            && labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

/// Asserts, from /metrics `text`, that stdout has failed and the file output
/// has not.
pub fn assert_stdout_failed_file_ok(text: &str) {
    let failed = |output| sample(text, "kernel_monitor_output_failed", &[("output", output)]);
    assert_eq!(failed("stdout"), Some(1.0), "{text}");
    assert_eq!(failed("file"), Some(0.0), "{text}");
}

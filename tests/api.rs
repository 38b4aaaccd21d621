//! Health and correlation API over real HTTP: the Unix socket, TCP with and
//! without the write token, bad requests, and random requests that must never
//! produce a 5xx.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::fake_apiserver::{demo_pod, start_blocking};
use common::{exchange, privileged, wait, Harness, POD};
use config_access_collector::api::{openapi_json, ApiServer, ApiState, Heartbeat, Listeners};
use config_access_collector::demo::container::{ContainerProc, ExecArgs};
use config_access_collector::enrich::cgroup::CgroupResolver;
use config_access_collector::enrich::correlation::CorrelationMaps;
use config_access_collector::kernel::probe::{Probe, ProbeOptions, ProbeStorage};
use serde_json::{json, Value};

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn health_and_readiness() {
    if !privileged("health_and_readiness") {
        return;
    }
    let h = Harness::start_with(|c| c.kube = config_access_collector::config::KubeMode::Off);
    let addr = h.collector().api().unwrap().health_addr.unwrap();
    let tcp = || std::net::TcpStream::connect(addr).unwrap();
    let (status, body) = exchange(tcp(), "GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{body}");
    for (k, v) in [
        ("status", json!("healthy")),
        ("ebpf_loaded", json!(true)),
        ("focus", json!("config_access")),
        ("ring_buffer_active", json!(true)),
    ] {
        assert_eq!(body[k], v, "{body}");
    }
    assert!(body["events_processed"].is_u64());
    let (status, body) = exchange(tcp(), "GET", "/readyz", &[], b"");
    assert_eq!((status, &body["ready"]), (200, &json!(true)));
    let (status, body) = exchange(tcp(), "POST", "/healthz", &[], b"");
    assert_eq!(status, 405);
    assert!(body["error"].is_string());
    let (status, _) = exchange(tcp(), "GET", "/v1/mounts", &[], b"");
    assert_eq!(status, 404, "the health port serves health only");
}

#[test]
fn unhealthy_when_the_reader_stalls_or_programs_are_gone() {
    if !privileged("unhealthy_when_the_reader_stalls_or_programs_are_gone") {
        return;
    }
    let mut storage = ProbeStorage::uninit();

    let probe = Probe::load(
        &mut storage,
        &ProbeOptions {
            sample_every: 0,
            ..ProbeOptions::default()
        },
    )
    .unwrap();
    let heartbeat = std::sync::Arc::new(Heartbeat::default());
    heartbeat.beat();
    let state = ApiState {
        kernel_stats: probe.stats_reader().unwrap(),
        user_stats: Default::default(),
        attachment: probe.attachment(),
        heartbeat: heartbeat.clone(),
        stall_after: Duration::from_millis(300),
        pods: std::sync::Arc::new(config_access_collector::enrich::pods::NoMetadata),
        correlation: std::sync::Arc::new(CorrelationMaps::new()),
        registry: None,
        cgroups: std::sync::Arc::new(CgroupResolver::for_host(None)),
        health: Default::default(),
        outputs: Vec::new(),
        services: None,
        usage: std::sync::Arc::new(config_access_collector::usage::Usage::new(
            Default::default(),
            Box::new(Vec::new),
            Default::default(),
            std::sync::Arc::new(config_access_collector::enrich::pods::NoMetadata),
        )),
    };
    let server = ApiServer::start(
        &Listeners {
            health: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        std::sync::Arc::new(state),
    )
    .unwrap();
    let get = || {
        exchange(
            std::net::TcpStream::connect(server.health_addr.unwrap()).unwrap(),
            "GET",
            "/healthz",
            &[],
            b"",
        )
    };
    assert_eq!(get().0, 200);
    std::thread::sleep(Duration::from_millis(400));
    let (status, body) = get();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ring_buffer_active"], false);
    assert!(
        body["reason"].as_str().unwrap().contains("reader"),
        "{body}"
    );
    heartbeat.beat();
    drop(probe);
    wait("programs unloaded", || {
        get().0 == 503 && get().1["ebpf_loaded"] == false
    });
    assert!(get().1["reason"]
        .as_str()
        .unwrap()
        .contains("no longer loaded"));
}

#[test]
fn readiness_waits_for_the_first_pod_list() {
    if !privileged("readiness_waits_for_the_first_pod_list") {
        return;
    }
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start_with(|c| c.kube_api_url = Some(format!("http://{addr}")));
    let health = h.collector().api().unwrap().health_addr.unwrap();
    let ready = || {
        exchange(
            std::net::TcpStream::connect(health).unwrap(),
            "GET",
            "/readyz",
            &[],
            b"",
        )
    };
    let (status, body) = ready();
    assert_eq!(status, 503, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("pod list"));
    let (api, _rt) = start_blocking(addr);
    api.add(demo_pod(POD, &"ab".repeat(32)));
    wait("ready after the first list", || ready().0 == 200);
}

#[test]
fn correlation_api_over_the_unix_socket() {
    if !privileged("correlation_api_over_the_unix_socket") {
        return;
    }
    let cid = "cd".repeat(32);
    let (mut h, _api, _rt) = Harness::with_fake_api(&cid, |_| {});
    let sock = h.sb.scratch().join("api.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().mode() & 0o777,
        0o660,
        "socket mode from config"
    );
    let call = |m: &str, p: &str, b: &[u8]| {
        exchange(UnixStream::connect(&sock).unwrap(), m, p, &[JSON], b)
    };

    // Mounts: the watched volumes, by hash.
    let (status, mounts) = call("GET", "/v1/mounts", b"");
    assert_eq!(status, 200);
    let list = mounts.as_array().unwrap();
    assert_eq!(list.len(), 3, "{mounts}");
    let secret = list
        .iter()
        .find(|m| m["mount"]["is_secret"] == true)
        .unwrap();
    let hash = secret["path_hash"].as_str().unwrap();
    assert_eq!(
        hash,
        blake3::hash(secret["mount"]["mount_path"].as_str().unwrap().as_bytes())
            .to_hex()
            .to_string()
    );
    let (status, one) = call("GET", &format!("/v1/mounts/{hash}"), b"");
    assert_eq!((status, &one["name"]), (200, &json!("db-creds")));

    // A process in the pod's container: pod and container by pid.
    let cg =
        h.sb.make_cgroup(&common::pod_cgroup("burstable", &cid))
            .unwrap();
    let cgroup_id = std::fs::metadata(&cg).unwrap().ino();
    let mut p = ContainerProc::spawn(
        Path::new(common::EXE),
        &ExecArgs {
            cgroup: Some(cg),
            steps: vec!["wait".into()],
            ..ExecArgs::default()
        },
    )
    .unwrap();
    let (status, c) = call("GET", &format!("/v1/containers/by-pid/{}", p.pid), b"");
    assert_eq!(
        (status, &c["container_id"], &c["cgroup_id"]),
        (200, &json!(cid), &json!(cgroup_id))
    );
    let (status, pod) = call("GET", &format!("/v1/pods/by-pid/{}", p.pid), b"");
    assert_eq!(
        (status, &pod["pod_uid"], &pod["pod_name"]),
        (200, &json!(POD), &json!("payments-api-0")),
        "{pod}"
    );
    let (status, added) = call(
        "POST",
        "/v1/container-pids",
        &json_body(&json!({"pid": p.pid})),
    );
    assert_eq!((status, &added["container_id"]), (201, &json!(cid)));
    assert_eq!(
        h.collector()
            .correlation()
            .container_of_pid(p.pid)
            .unwrap()
            .container_id,
        cid
    );
    p.release();
    p.finish().unwrap();

    // Writes mirroring the Go API.
    let info = json!({"cgroup_id": 4242, "pod_uid": POD, "namespace": "production", "pod_name": "nginx-deployment-xyz", "created_at": 1705833045});
    assert_eq!(call("POST", "/v1/pod-info", &json_body(&info)).0, 201);
    let (status, got) = call("GET", "/v1/pods/by-cgroup/4242", b"");
    assert_eq!(
        (status, &got["pod_name"]),
        (200, &json!("nginx-deployment-xyz"))
    );
    let mount = json!({"name": "app-config", "namespace": "production", "mount_path": "/var/lib/kubelet/pods/x/volumes/kubernetes.io~configmap/app-config", "is_secret": false, "volume_type": "configmap", "pod_uid": POD});
    let (status, ph) = call("POST", "/v1/mounts", &json_body(&mount));
    assert_eq!(status, 201);
    assert_eq!(
        ph["path_hash"],
        blake3::hash(b"/var/lib/kubelet/pods/x/volumes/kubernetes.io~configmap/app-config")
            .to_hex()
            .to_string()
    );
    let (status, pv) = call("GET", &format!("/v1/pods/{POD}"), b"");
    assert_eq!(
        (status, &pv["namespace"], &pv["containers"][0]["id"]),
        (200, &json!("payments"), &json!(cid))
    );

    // Bad requests: 4xx with a JSON reason.
    let bad: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("POST", "/v1/pod-info".into(), b"{not json".to_vec(), 400),
        (
            "POST",
            "/v1/pod-info".into(),
            json_body(
                &json!({"cgroup_id": -1, "pod_uid": "u", "namespace": "n", "pod_name": "p", "created_at": 0}),
            ),
            400,
        ),
        (
            "POST",
            "/v1/pod-info".into(),
            json_body(
                &json!({"cgroup_id": 1, "pod_uid": "u".repeat(37), "namespace": "n", "pod_name": "p", "created_at": 0}),
            ),
            400,
        ),
        (
            "POST",
            "/v1/container-pids".into(),
            json_body(&json!({"pid": 4_000_000_000u32})),
            404,
        ),
        (
            "POST",
            "/v1/container-pids".into(),
            json_body(&json!({"pid": 1, "extra": true})),
            400,
        ),
        (
            "POST",
            "/v1/mounts".into(),
            json_body(
                &json!({"name": "x", "namespace": null, "mount_path": "relative", "is_secret": false, "volume_type": "secret", "pod_uid": "u"}),
            ),
            400,
        ),
        ("POST", "/v1/mounts".into(), vec![b' '; 70 * 1024], 413),
        ("GET", "/v1/pods/by-cgroup/abc".into(), vec![], 400),
        ("GET", "/v1/pods/by-cgroup/99999999999".into(), vec![], 404),
        ("GET", "/v1/pods/by-pid/-3".into(), vec![], 400),
        ("GET", "/v1/mounts/nope".into(), vec![], 404),
        ("DELETE", "/v1/mounts".into(), vec![], 405),
        ("GET", "/v2/anything".into(), vec![], 404),
    ];
    for (m, p, b, want) in bad {
        let (status, body) = call(m, &p, &b);
        assert_eq!(status, want, "{m} {p}: {body}");
        assert!(
            body["error"].is_string(),
            "{m} {p}: error body must be JSON: {body}"
        );
    }
    h.backlog.clear();
}

#[test]
fn tcp_api_reads_are_open_and_writes_need_the_token() {
    if !privileged("tcp_api_reads_are_open_and_writes_need_the_token") {
        return;
    }
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tf = token_file.clone();
    let h = Harness::start_with(move |c| {
        c.kube = config_access_collector::config::KubeMode::Off;
        c.api_listen = Some("127.0.0.1:0".into());
        c.api_token_file = Some(tf);
    });
    let addr = h.collector().api().unwrap().tcp_addr.unwrap();
    let call = |m: &str, p: &str, hs: &[(&str, &str)], b: &[u8]| {
        exchange(std::net::TcpStream::connect(addr).unwrap(), m, p, hs, b)
    };
    assert_eq!(
        call("GET", "/v1/mounts", &[], b"").0,
        200,
        "reads need no token"
    );
    let mount = json_body(
        &json!({"name": "x", "namespace": null, "mount_path": "/m", "is_secret": true, "volume_type": "secret", "pod_uid": "u"}),
    );
    assert_eq!(call("POST", "/v1/mounts", &[JSON], &mount).0, 401);
    assert_eq!(
        call(
            "POST",
            "/v1/mounts",
            &[JSON, ("Authorization", "Bearer wrong")],
            &mount
        )
        .0,
        403
    );
    assert_eq!(
        call(
            "POST",
            "/v1/mounts",
            &[JSON, ("Authorization", "Bearer s3cr3t-token")],
            &mount
        )
        .0,
        201
    );
    let (status, doc) = call("GET", "/v1/openapi.json", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(doc, serde_json::from_str::<Value>(&openapi_json()).unwrap());
}

#[test]
fn tcp_api_without_a_token_refuses_writes() {
    if !privileged("tcp_api_without_a_token_refuses_writes") {
        return;
    }
    let h = Harness::start_with(|c| {
        c.kube = config_access_collector::config::KubeMode::Off;
        c.api_listen = Some("127.0.0.1:0".into());
    });
    let addr = h.collector().api().unwrap().tcp_addr.unwrap();
    let (status, body) = exchange(
        std::net::TcpStream::connect(addr).unwrap(),
        "POST",
        "/v1/container-pids",
        &[JSON],
        br#"{"pid":1}"#,
    );
    assert_eq!(status, 403, "{body}");
}

#[test]
fn openapi_document_in_docs_is_current() {
    let kept =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    let kept: Value = serde_json::from_str(&kept).unwrap();
    let served: Value = serde_json::from_str(&openapi_json()).unwrap();
    assert_eq!(
        kept, served,
        "docs/openapi.json is stale: run `config-access-collector openapi > docs/openapi.json`"
    );
}

/// Random methods, paths and bodies against the Unix socket: never a 5xx,
/// every error a JSON body.
#[test]
fn random_requests_never_get_a_server_error() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    if !privileged("random_requests_never_get_a_server_error") {
        return;
    }
    let h = Harness::start_with(|c| c.kube = config_access_collector::config::KubeMode::Off);
    let sock = h.sb.scratch().join("api.sock");
    let segment = prop_oneof![
        Just("v1".to_string()),
        Just("pods".to_string()),
        Just("by-pid".to_string()),
        Just("by-cgroup".to_string()),
        Just("mounts".to_string()),
        Just("containers".to_string()),
        Just("pod-info".to_string()),
        Just("container-pids".to_string()),
        Just("usage".to_string()),
        Just("unread".to_string()),
        Just("rotations".to_string()),
        Just("startup-only".to_string()),
        Just("report".to_string()),
        Just("objects".to_string()),
        Just("Secret".to_string()),
        Just("baseline".to_string()),
        Just("Pod".to_string()),
        "[0-9]{1,25}",
        "-?[0-9]{1,5}",
        "[a-zA-Z0-9%._~-]{0,12}",
    ];
    let body = prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..200),
        Just(br#"{"pid": 1}"#.to_vec()),
        Just(br#"{"cgroup_id": 18446744073709551615, "pod_uid": "", "namespace": "", "pod_name": "", "created_at": 9223372036854775807}"#.to_vec()),
        Just(br#"{"name": "", "namespace": null, "mount_path": "/", "is_secret": false, "volume_type": "", "pod_uid": ""}"#.to_vec()),
    ];
    let strategy = (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
        proptest::collection::vec(segment, 1..5),
        body,
    );
    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    runner
        .run(&strategy, |(method, segments, body)| {
            let path = format!("/{}", segments.join("/"));
            let (status, reply) = exchange(
                UnixStream::connect(&sock).unwrap(),
                method,
                &path,
                &[JSON],
                &body,
            );
            prop_assert!(status < 500, "{} {} -> {} {}", method, path, status, reply);
            if status >= 400 {
                prop_assert!(
                    reply["error"].is_string(),
                    "{} {} -> {} without a JSON error: {}",
                    method,
                    path,
                    status,
                    reply
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn an_empty_token_file_stops_the_start() {
    if !privileged("an_empty_token_file_stops_the_start") {
        return;
    }
    let sb = config_access_collector::demo::sandbox::Sandbox::new().unwrap();
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "  \n").unwrap();
    let mut cfg = common::default_config(&sb);
    cfg.kube = config_access_collector::config::KubeMode::Off;
    cfg.api_listen = Some("127.0.0.1:0".into());
    cfg.api_token_file = Some(token.path().to_path_buf());
    let Err(err) = config_access_collector::agent::Collector::start(&cfg, Vec::new()) else {
        panic!("an empty token file is refused");
    };
    assert!(err.to_string().contains("is empty"), "{err}");
}

// ---------------------------------------------------------------------------
// Listener limits, write bounds, the socket file, and the 413 a client that
// sends its whole body first still receives.

/// A connected stream whose read timeout can be set.
trait Conn: Read + Write {
    fn read_timeout(&self, d: Duration);
}

impl Conn for std::net::TcpStream {
    fn read_timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}

impl Conn for UnixStream {
    fn read_timeout(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}

/// Whether the server has closed `s` (EOF or reset); what it sent before is
/// appended to `got`. Waits at most `wait`.
fn is_closed(s: &mut impl Conn, wait: Duration, got: &mut Vec<u8>) -> bool {
    s.read_timeout(wait);
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Waits until the server has closed every connection of `conns`, failing
/// with `what` after `limit`.
fn wait_all_closed<C: Conn>(what: &str, conns: &mut [C], limit: Duration) {
    let end = std::time::Instant::now() + limit;
    let mut open: Vec<usize> = (0..conns.len()).collect();
    while !open.is_empty() {
        assert!(
            std::time::Instant::now() < end,
            "{what}: {} of {} connections still open after {limit:?}",
            open.len(),
            conns.len()
        );
        open.retain(|&i| !is_closed(&mut conns[i], Duration::from_millis(20), &mut Vec::new()));
    }
}

fn get_health(addr: std::net::SocketAddr) -> (u16, Value) {
    exchange(
        std::net::TcpStream::connect(addr).unwrap(),
        "GET",
        "/healthz",
        &[],
        b"",
    )
}

/// The value of the Prometheus sample `name` with label `listener`.
fn listener_sample(metrics: std::net::SocketAddr, name: &str, listener: &str) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(metrics).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let label = format!("listener=\"{listener}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn idle_and_slow_connections_are_cut_and_health_answers_meanwhile() {
    use config_access_collector::api::ListenerKind;
    use std::sync::atomic::{AtomicBool, Ordering};
    if !privileged("idle_and_slow_connections_are_cut_and_health_answers_meanwhile") {
        return;
    }
    const N: usize = 40;
    let h = Harness::start_with(|c| {
        c.kube = config_access_collector::config::KubeMode::Off;
        c.api_listen = Some("127.0.0.1:0".into());
        c.metrics_listen = "127.0.0.1:0".into();
        c.http_timeout_ms = 1000;
    });
    let api = h.collector().api().unwrap();
    let (tcp, health, metrics) = (
        api.tcp_addr.unwrap(),
        api.health_addr.unwrap(),
        api.metrics_addr.unwrap(),
    );
    let sock = h.sb.scratch().join("api.sock");
    let stats = api.stats();

    // N idle connections on the socket, N idle ones on the health port, and
    // N that send a request head one byte every 200 ms and never finish it.
    let mut idle: Vec<UnixStream> = (0..N)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let mut idle_health: Vec<std::net::TcpStream> = (0..N / 2)
        .map(|_| std::net::TcpStream::connect(health).unwrap())
        .collect();
    let mut slow: Vec<std::net::TcpStream> = (0..N)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(tcp).unwrap();
            s.write_all(b"GET /v1/mounts HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // And one whose body trickles in: the whole request has a deadline.
    let mut slow_body = UnixStream::connect(&sock).unwrap();
    slow_body
        .write_all(b"POST /v1/container-pids HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        .unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let mut trickled: Vec<Box<dyn Write + Send>> = slow
        .iter()
        .map(|s| Box::new(s.try_clone().unwrap()) as Box<dyn Write + Send>)
        .collect();
    trickled.push(Box::new(slow_body.try_clone().unwrap()));
    let trickler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for s in &mut trickled {
                    let _ = s.write_all(b" ");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // Health answers during the flood. (No wait for every connection to be
    // counted: on a slow machine the first ones may time out before the
    // last are accepted.)
    for _ in 0..3 {
        let (status, body) = get_health(health);
        assert_eq!(status, 200, "{body}");
    }

    // Every one of them is cut once the timeout (1 s) passes.
    let limit = Duration::from_secs(30);
    wait_all_closed("idle on the socket", &mut idle, limit);
    wait_all_closed("idle on the health port", &mut idle_health, limit);
    wait_all_closed("slow request heads", &mut slow, limit);
    let mut answer = Vec::new();
    let end = std::time::Instant::now() + limit;
    while !is_closed(&mut slow_body, Duration::from_millis(100), &mut answer) {
        assert!(
            std::time::Instant::now() < end,
            "the trickled body was not cut"
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("http_timeout_ms"), "{answer}");
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();

    // Counted, and nothing stays open.
    for (kind, n) in [
        (ListenerKind::ApiSocket, N + 1),
        (ListenerKind::ApiTcp, N),
        (ListenerKind::Health, N / 2),
    ] {
        let c = stats.get(kind);
        wait("the connections to be closed", || {
            c.open.load(Ordering::Relaxed) == 0
        });
        assert!(
            c.timeouts.load(Ordering::Relaxed) >= n as u64,
            "{kind:?}: {} timeouts",
            c.timeouts.load(Ordering::Relaxed)
        );
        assert!(
            listener_sample(metrics, "kernel_monitor_api_timeouts_total", kind.name())
                .is_some_and(|v| v >= n as f64),
            "{kind:?} in /metrics"
        );
    }
    assert_eq!(get_health(health).0, 200);
}

#[test]
fn connections_over_the_budget_are_refused_and_health_has_its_own() {
    use config_access_collector::api::ListenerKind;
    use std::sync::atomic::Ordering;
    if !privileged("connections_over_the_budget_are_refused_and_health_has_its_own") {
        return;
    }
    let h = Harness::start_with(|c| {
        c.kube = config_access_collector::config::KubeMode::Off;
        c.metrics_listen = "127.0.0.1:0".into();
        c.api_max_connections = 4;
        c.health_max_connections = 2;
        c.http_timeout_ms = 60_000;
    });
    let api = h.collector().api().unwrap();
    let (health, metrics) = (api.health_addr.unwrap(), api.metrics_addr.unwrap());
    let sock = h.sb.scratch().join("api.sock");
    let stats = api.stats();
    let open = |k: ListenerKind| stats.get(k).open.load(Ordering::Relaxed);

    // The API's budget is taken by idle connections: the next ones are closed.
    let mut held: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    wait("4 open API connections", || {
        open(ListenerKind::ApiSocket) == 4
    });
    let mut extra: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    wait_all_closed("over the API budget", &mut extra, Duration::from_secs(10));
    assert!(
        stats
            .get(ListenerKind::ApiSocket)
            .refused
            .load(Ordering::Relaxed)
            >= 3
    );
    // The held ones still work, and health answers on its own budget.
    let (status, _) = exchange(&mut held[0], "GET", "/v1/mounts", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(get_health(health).0, 200);

    // Health's budget is its own: filled, it refuses too, and frees up.
    wait("earlier health connections closed", || {
        open(ListenerKind::Health) == 0
    });
    let mut held_health: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(health).unwrap())
        .collect();
    wait("2 open health connections", || {
        open(ListenerKind::Health) == 2
    });
    let mut over = vec![std::net::TcpStream::connect(health).unwrap()];
    wait_all_closed("over the health budget", &mut over, Duration::from_secs(10));
    assert!(
        stats
            .get(ListenerKind::Health)
            .refused
            .load(Ordering::Relaxed)
            >= 1
    );
    drop(held_health.pop());
    wait("a health connection freed", || {
        open(ListenerKind::Health) == 1
    });
    assert_eq!(get_health(health).0, 200);

    // A freed API slot serves the next client.
    drop(held.drain(..2));
    wait("API connections freed", || {
        open(ListenerKind::ApiSocket) <= 2
    });
    let (status, _) = exchange(
        UnixStream::connect(&sock).unwrap(),
        "GET",
        "/v1/mounts",
        &[],
        b"",
    );
    assert_eq!(status, 200);

    wait("the client's connection closed", || {
        open(ListenerKind::ApiSocket) == 2
    });
    assert!(listener_sample(
        metrics,
        "kernel_monitor_api_connections_refused_total",
        "api_socket"
    )
    .is_some_and(|v| v >= 3.0));
    assert_eq!(
        listener_sample(metrics, "kernel_monitor_api_connections_open", "api_socket"),
        Some(2.0)
    );
}

#[test]
fn write_endpoints_bound_and_validate_what_they_store() {
    use config_access_collector::enrich::correlation::PodInfo;
    if !privileged("write_endpoints_bound_and_validate_what_they_store") {
        return;
    }
    let h = Harness::start_with(|c| {
        c.kube = config_access_collector::config::KubeMode::Off;
        c.api_max_mounts = 3;
        // No sampler: its sync would drop the pod_info entries of unknown cgroups.
        c.syscall_sampling_rate = 0;
    });
    let sock = h.sb.scratch().join("api.sock");
    let call = |m: &str, p: &str, b: &[u8]| {
        exchange(UnixStream::connect(&sock).unwrap(), m, p, &[JSON], b)
    };
    let refused = |m: &str, p: &str, b: Vec<u8>, want: u16, says: &str| {
        let (status, body) = call(m, p, &b);
        assert_eq!(status, want, "{m} {p}: {body}");
        let reason = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no JSON reason: {body}"));
        assert!(
            reason.contains(says),
            "{m} {p}: {reason:?} does not mention {says:?}"
        );
    };
    let mount = |path: &str| {
        json!({"name": "creds", "namespace": "prod", "mount_path": path, "is_secret": true,
               "volume_type": "secret", "pod_uid": "u"})
    };

    // Over-long and malformed fields, and unknown fields: 400 naming the field.
    let long_path = format!("/{}", "p".repeat(60_000));
    refused(
        "POST",
        "/v1/mounts",
        json_body(&mount(&long_path)),
        400,
        "mount_path",
    );
    let mut m = mount("/a");
    m["name"] = json!("n".repeat(254));
    refused("POST", "/v1/mounts", json_body(&m), 400, "name");
    let mut m = mount("/a");
    m["pod_uid"] = json!("line\nbreak");
    refused("POST", "/v1/mounts", json_body(&m), 400, "pod_uid");
    let mut m = mount("/a");
    m["extra"] = json!(1);
    refused("POST", "/v1/mounts", json_body(&m), 400, "extra");
    let mut m = mount("/a");
    m["volume_type"] = json!("hostpath");
    refused("POST", "/v1/mounts", json_body(&m), 400, "volume_type");
    let info = |name: &str| json!({"cgroup_id": 77, "pod_uid": "u", "namespace": "n", "pod_name": name, "created_at": 1});
    refused(
        "POST",
        "/v1/pod-info",
        json_body(&info(&"p".repeat(128))),
        400,
        "pod_name",
    );
    refused(
        "POST",
        "/v1/pod-info",
        json_body(&info("caf\u{e9}")),
        400,
        "pod_name",
    );
    let mut i = info("p");
    i["labels"] = json!({});
    refused("POST", "/v1/pod-info", json_body(&i), 400, "labels");
    refused(
        "POST",
        "/v1/container-pids",
        br#"{"pid": 1.5}"#.to_vec(),
        400,
        "pid",
    );
    // A head over 16 KiB is refused before any handler runs.
    let big = "h".repeat(20 * 1024);
    let (status, _) = exchange(
        UnixStream::connect(&sock).unwrap(),
        "GET",
        "/v1/mounts",
        &[("X-Big", &big)],
        b"",
    );
    assert_eq!(status, 431);

    // Whole numbers written as floats are numbers all the same.
    let me = std::process::id();
    let (status, body) = call(
        "POST",
        "/v1/container-pids",
        format!(r#"{{"pid": {me}.0}}"#).as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    let mut i = info("p");
    i["cgroup_id"] = json!(78.0);
    assert_eq!(call("POST", "/v1/pod-info", &json_body(&i)).0, 201);
    assert_eq!(call("GET", "/v1/pods/by-cgroup/78", b"").0, 200);

    // Posted mounts are bounded (api_max_mounts: 3): 409, then a DELETE frees one.
    let mut hashes = Vec::new();
    for p in ["/m/1", "/m/2", "/m/3"] {
        let (status, body) = call("POST", "/v1/mounts", &json_body(&mount(p)));
        assert_eq!(status, 201, "{body}");
        hashes.push(body["path_hash"].as_str().unwrap().to_string());
    }
    refused(
        "POST",
        "/v1/mounts",
        json_body(&mount("/m/4")),
        409,
        "api_max_mounts",
    );
    assert_eq!(
        call("POST", "/v1/mounts", &json_body(&mount("/m/1"))).0,
        201,
        "replacing is not adding"
    );
    let (status, _) = call("DELETE", &format!("/v1/mounts/{}", hashes[0]), b"");
    assert_eq!(status, 204);
    refused(
        "DELETE",
        &format!("/v1/mounts/{}", hashes[0]),
        vec![],
        404,
        "not found",
    );
    assert_eq!(
        call("POST", "/v1/mounts", &json_body(&mount("/m/4"))).0,
        201
    );
    // The watched volumes are not the API's to delete, and do not count.
    let watched = h
        .collector()
        .correlation()
        .mounts()
        .into_iter()
        .find(|(_, m)| {
            m.mount_path
                .starts_with(h.sb.kubelet_root().to_str().unwrap())
        })
        .expect("a watched volume")
        .0;
    refused(
        "DELETE",
        &format!("/v1/mounts/{watched}"),
        vec![],
        409,
        "watched volume",
    );
    assert_eq!(h.collector().correlation().posted_mounts(), 3);

    // A full kernel pod_info table: 409 with the reason, not a 5xx.
    let c = h.collector().correlation();
    let mut id = 1_000_000u64;
    loop {
        let pod = PodInfo {
            pod_uid: "u".into(),
            namespace: "n".into(),
            pod_name: "p".into(),
            created_at: 0,
        };
        match c.add_pod_info(id, pod) {
            Ok(()) => id += 1,
            Err(config_access_collector::enrich::correlation::CorrelationError::Full {
                ..
            }) => break,
            Err(e) => panic!("filling pod_info: {e}"),
        }
        assert!(id < 1_000_000 + 100_000, "pod_info never filled up");
    }
    let mut i = info("p");
    i["cgroup_id"] = json!(5);
    refused("POST", "/v1/pod-info", json_body(&i), 409, "full");
}

/// Runs the collector binary on an empty kubelet root with the API socket at
/// `sock`; returns the child and a receiver of its stderr lines.
fn spawn_binary(
    root: &Path,
    sock: &Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    std::fs::create_dir_all(root.join("pods")).unwrap();
    let mut child = std::process::Command::new(common::EXE)
        .arg("run")
        .arg("--kubelet-root")
        .arg(root)
        .args(["--health-listen", "127.0.0.1:0", "--no-kube"])
        .arg("--api-socket")
        .arg(sock)
        .env("CAC_LOG_LEVEL", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for the child to exit (at most 30 s); returns its status and stderr.
fn exit_of(
    child: &mut std::process::Child,
    rx: &std::sync::mpsc::Receiver<String>,
) -> (std::process::ExitStatus, String) {
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            return (status, rx.try_iter().collect::<Vec<_>>().join("\n"));
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("the collector did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn only_a_socket_the_collector_created_is_ever_removed() {
    if !privileged("only_a_socket_the_collector_created_is_ever_removed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("kubelet");
    let sock = dir.path().join("run/api.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();

    // A regular file or a directory there: the start is refused, naming the key.
    for (make, kind) in [
        (
            Box::new(|p: &Path| std::fs::write(p, "operator data\n").unwrap())
                as Box<dyn Fn(&Path)>,
            "regular file",
        ),
        (
            Box::new(|p: &Path| std::fs::create_dir(p).unwrap()),
            "directory",
        ),
    ] {
        make(&sock);
        let (mut child, rx) = spawn_binary(&root, &sock);
        let (status, log) = exit_of(&mut child, &rx);
        assert!(!status.success(), "started over a {kind}: {log}");
        assert!(log.contains("api_socket") && log.contains(kind), "{log}");
        let m = std::fs::symlink_metadata(&sock).expect("the file survives");
        if m.is_file() {
            assert_eq!(std::fs::read_to_string(&sock).unwrap(), "operator data\n");
            std::fs::remove_file(&sock).unwrap();
        } else {
            assert!(m.is_dir());
            std::fs::remove_dir(&sock).unwrap();
        }
    }

    // A socket another process answers on is not taken over.
    let live = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (mut child, rx) = spawn_binary(&root, &sock);
    let (status, log) = exit_of(&mut child, &rx);
    assert!(!status.success() && log.contains("api_socket"), "{log}");
    drop(live);

    // A stale socket (its server gone) is replaced.
    assert!(
        std::fs::symlink_metadata(&sock).is_ok(),
        "stale socket left behind"
    );
    let (mut child, rx) = spawn_binary(&root, &sock);
    let mut log = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !log.iter().any(|l: &String| l.contains("collector started")) {
        assert!(std::time::Instant::now() < end, "did not start: {log:#?}");
        assert!(child.try_wait().unwrap().is_none(), "exited: {log:#?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            log.push(l);
        }
    }
    let (status, _) = exchange(
        UnixStream::connect(&sock).unwrap(),
        "GET",
        "/v1/mounts",
        &[],
        b"",
    );
    assert_eq!(status, 200);

    // Replaced while the collector runs: the new file survives the stop.
    std::fs::remove_file(&sock).unwrap();
    std::fs::write(&sock, "written later\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, log) = exit_of(&mut child, &rx);
    assert!(status.success(), "{log}");
    let left = std::fs::read_to_string(&sock)
        .expect("the file written in the socket's place survives the stop");
    assert_eq!(left, "written later\n");

    // And the collector's own socket is removed at stop.
    std::fs::remove_file(&sock).unwrap();
    let (mut child, rx) = spawn_binary(&root, &sock);
    wait("the socket", || UnixStream::connect(&sock).is_ok());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, log) = exit_of(&mut child, &rx);
    assert!(status.success(), "{log}");
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "socket left behind"
    );
}

/// Sends a 3 MB body with Python's http.client (which writes the whole body
/// before it reads) to the socket or a TCP address; returns its output.
const PY_BIG_POST: &str = r#"
import http.client, json, socket, sys
target, token = sys.argv[1], sys.argv[2]
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(target)
if target.startswith("/"):
    conn = Unix("localhost", timeout=30)
else:
    host, port = target.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
body = b'{"pid": 1, "pad": "' + b"x" * 3_000_000 + b'"}'
headers = {"Content-Type": "application/json"}
if token:
    headers["Authorization"] = "Bearer " + token
conn.request("POST", "/v1/container-pids", body=body, headers=headers)
resp = conn.getresponse()
print(resp.status, json.loads(resp.read())["error"])
"#;

#[test]
fn an_oversized_body_gets_its_413_through_python_http_client() {
    if !privileged("an_oversized_body_gets_its_413_through_python_http_client") {
        return;
    }
    // Any Python 3 will do: http.client is in the standard library.
    let python = std::env::var_os("CAC_TEST_PYTHON").unwrap_or_else(|| "python3".into());
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "t0ken\n").unwrap();
    let tf = token_file.clone();
    let h = Harness::start_with(move |c| {
        c.kube = config_access_collector::config::KubeMode::Off;
        c.api_listen = Some("127.0.0.1:0".into());
        c.api_token_file = Some(tf);
    });
    let tcp = h.collector().api().unwrap().tcp_addr.unwrap().to_string();
    let sock = h.sb.scratch().join("api.sock");
    for (target, token) in [(sock.to_str().unwrap(), ""), (tcp.as_str(), "t0ken")] {
        for round in 0..3 {
            let out = std::process::Command::new(&python)
                .args(["-c", PY_BIG_POST, target, token])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.starts_with("413 "),
                "{target} (round {round}): {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// schemathesis (PyPI) against the served OpenAPI document: every check, a
/// bounded number of examples per operation, no finding allowed. One worker:
/// with two, CPython 3.11's AST conversion (hypothesis describing a filter)
/// races between the threads and aborts with "AST constructor recursion
/// depth mismatch", a failure of the tool, not of the API.
#[test]
fn schemathesis_finds_nothing_against_the_served_document() {
    const TEST: &str = "schemathesis_finds_nothing_against_the_served_document";
    if !privileged(TEST) {
        return;
    }
    let Some(python) = common::receivers::python(TEST) else {
        return;
    };
    let has_it = std::process::Command::new(&python)
        .args(["-c", "import schemathesis"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_it {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{TEST}: schemathesis is not installed in {} (run `bash scripts/dev.sh test`)",
                python.display()
            );
        }
        eprintln!("SKIPPED {TEST}: schemathesis is not installed (run `bash scripts/dev.sh test`)");
        return;
    }
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "st-token\n").unwrap();
    let tf = token_file.clone();
    let h = Harness::start_with(move |c| {
        c.kube = config_access_collector::config::KubeMode::Off;
        c.api_listen = Some("127.0.0.1:0".into());
        c.api_token_file = Some(tf);
    });
    let base = format!("http://{}", h.collector().api().unwrap().tcp_addr.unwrap());
    let mut child = std::process::Command::new(&python)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{base}/v1/openapi.json"))
        .args(["--url", &base, "--checks", "all", "--max-examples", "60"])
        .args(["--request-timeout", "20", "--workers", "1"])
        .args(["-H", "Authorization: Bearer st-token"])
        .current_dir(token_dir.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Files, not pipes: a long report must not block the run.
        .stdout(std::fs::File::create(token_dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(token_dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let stdout =
                std::fs::read_to_string(token_dir.path().join("stdout")).unwrap_or_default();
            panic!("{TEST}: schemathesis ran longer than 600 s:\n{stdout}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = child.wait().unwrap();
    let stdout = std::fs::read_to_string(token_dir.path().join("stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(token_dir.path().join("stderr")).unwrap_or_default();
    assert!(
        status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
}

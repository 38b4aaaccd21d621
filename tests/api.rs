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
use common::{privileged, wait, Harness, POD};
use config_access_collector::api::{openapi_json, ApiServer, ApiState, Heartbeat, Listeners};
use config_access_collector::cgroup::CgroupResolver;
use config_access_collector::container::{ContainerProc, ExecArgs};
use config_access_collector::correlation::CorrelationMaps;
use config_access_collector::probe::{Probe, ProbeOptions};
use serde_json::{json, Value};

/// One HTTP/1.1 exchange; returns the status and the JSON body.
fn exchange(
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
    let probe = Probe::load(&ProbeOptions {
        sample_every: 0,
        ..ProbeOptions::default()
    })
    .unwrap();
    let heartbeat = std::sync::Arc::new(Heartbeat::default());
    heartbeat.beat();
    let state = ApiState {
        kernel_stats: probe.stats_reader().unwrap(),
        user_stats: Default::default(),
        attachment: probe.attachment(),
        heartbeat: heartbeat.clone(),
        stall_after: Duration::from_millis(300),
        pods: None,
        correlation: std::sync::Arc::new(CorrelationMaps::new()),
        registry: None,
        cgroups: std::sync::Arc::new(CgroupResolver::for_host(None)),
        health: Default::default(),
        outputs: Vec::new(),
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
    let sb = config_access_collector::sandbox::Sandbox::new().unwrap();
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "  \n").unwrap();
    let mut cfg = common::default_config(&sb);
    cfg.kube = config_access_collector::config::KubeMode::Off;
    cfg.api_listen = Some("127.0.0.1:0".into());
    cfg.api_token_file = Some(token.path().to_path_buf());
    let Err(err) = config_access_collector::collector::Collector::start(&cfg, Vec::new()) else {
        panic!("an empty token file is refused");
    };
    assert!(err.to_string().contains("is empty"), "{err}");
}

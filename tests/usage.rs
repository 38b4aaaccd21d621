//! The usage ledger and its answers on the real BPF programs and the
//! sandbox, through the correlation API over its Unix socket: which files of
//! the demo pod's volumes were never read, how sure that is, and what to
//! change in the pod spec.

mod common;

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::{exchange, pod_cgroup, privileged, wait, Harness, EXE, POD};
use config_access_collector::agent::Collector;
use config_access_collector::config::Config;
use config_access_collector::demo::container::{ContainerProc, ExecArgs};
use serde_json::Value;

/// `GET path` on the harness's API socket.
fn get(h: &Harness, path: &str) -> (u16, Value) {
    let sock = h.sb.scratch().join("api.sock");
    exchange(UnixStream::connect(sock).unwrap(), "GET", path, &[], b"")
}

/// What `GET /v1/usage/pods/{POD}` says of key `key` (the answer must be 200).
fn key_usage(h: &Harness, key: &str) -> Value {
    let (status, keys) = get(h, &format!("/v1/usage/pods/{POD}"));
    assert_eq!(status, 200, "{keys}");
    keys.as_array()
        .and_then(|k| k.iter().find(|k| k["key"] == key))
        .cloned()
        .unwrap_or_else(|| panic!("no {key} in {keys:#}"))
}

/// The listed mount of volume `name`.
fn mount<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["mounts"]
        .as_array()?
        .iter()
        .find(|m| m["volume"] == name)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn unread_keys_mounts_and_tokens_with_evidence_and_suggestions() {
    if !privileged("unread_keys_mounts_and_tokens_with_evidence_and_suggestions") {
        return;
    }
    let cid = "e1".repeat(32);
    let (mut h, _api, _rt) = Harness::with_fake_api(&cid, |c| c.unused_after = "1s".into());
    // The pod's container (its cgroup names it) reads one key of the Secret.
    let mut args = h.container(&["open:/etc/db/password"]);
    args.cgroup = Some(h.sb.make_cgroup(&pod_cgroup("burstable", &cid)).unwrap());
    let (_, results) = h.run(&args);
    assert_eq!(results[0].1, "ok");

    // Nothing is claimed before a volume has been watched for unused_after.
    wait("the read in the ledger", || {
        let (_, keys) = get(&h, &format!("/v1/usage/pods/{POD}"));
        keys.as_array().is_some_and(|k| !k.is_empty())
    });
    std::thread::sleep(Duration::from_millis(1100));
    let (status, report) = get(&h, "/v1/usage/unread");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["unused_after_secs"], 1);

    // The Secret, read for one key of three.
    let db = mount(&report, "db-creds").unwrap_or_else(|| panic!("{report:#}"));
    let never: Vec<&str> = db["keys_never_read"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["key"].as_str())
        .collect();
    assert_eq!(never, ["api-key", "username"], "{db:#}");
    assert_eq!(strings(&db["keys_read"]), ["password"]);
    assert_eq!(db["keys_never_read"][0]["source"]["kind"], "Secret");
    assert_eq!(db["keys_never_read"][0]["source"]["name"], "db-credentials");
    assert_eq!(
        (db["namespace"].as_str(), db["pod_name"].as_str()),
        (Some("payments"), Some("payments-api-0"))
    );
    assert_eq!(db["evidence"]["status"], "complete", "{db:#}");
    assert!(db["evidence"]["window_secs"].as_u64().unwrap() >= 1);
    assert_eq!(db["suggestion"], "items: [{key: password, path: password}]");

    // The ConfigMap and the service-account token, never read.
    let cm = mount(&report, "app-config").expect("the ConfigMap volume");
    assert_eq!(strings(&cm["keys_read"]), Vec::<&str>::new());
    // `items` remapped: the file app.yaml is key config.yaml of app-settings.
    let source = &cm["keys_never_read"][0]["source"];
    assert_eq!(
        (source["name"].as_str(), source["key"].as_str()),
        (Some("app-settings"), Some("config.yaml"))
    );
    assert!(cm["suggestion"]
        .as_str()
        .unwrap()
        .starts_with("remove volume"));
    let token = mount(&report, "kube-api-access-x7k2p").expect("the token volume");
    assert_eq!(token["suggestion"], "automountServiceAccountToken: false");

    // Per pod: the read key, its count and its reader.
    let password = key_usage(&h, "password");
    assert_eq!(
        (password["reads"].as_u64(), password["denied"].as_u64()),
        (Some(1), Some(0))
    );
    let reader = &password["readers"][0];
    assert_eq!(
        (reader["container"].as_str(), reader["command"].as_str()),
        (Some("app"), Some("config-access-c")),
        "{password:#}"
    );
    let (status, err) = get(&h, "/v1/usage/pods/no-such-pod");
    assert_eq!(status, 404, "{err}");
    assert!(err["error"].as_str().unwrap().contains("no-such-pod"));

    // The same answer from `report`, as an operator runs it in the agent's pod.
    let sock = h.sb.scratch().join("api.sock");
    let report = |args: &[&str]| {
        Command::new(EXE)
            .arg("report")
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .expect("report runs")
    };
    let table = report(&[]);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8(table.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.contains("db-creds (secret)"))
        .unwrap_or_else(|| panic!("{text}"));
    for cell in [
        "payments/payments-api-0",
        "Secret db-credentials",
        "api-key, username",
        "password",
    ] {
        assert!(row.contains(cell), "{cell:?} in {row:?}");
    }
    let json = report(&["--output", "json"]);
    assert!(json.status.success(), "{json:?}");
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        mount(&json, "db-creds").unwrap()["keys_read"][0],
        "password"
    );
    let missing = Command::new(EXE)
        .args(["report", "--socket", "/nonexistent/api.sock"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("/nonexistent/api.sock"), "{err}");
}

#[test]
fn a_kernel_drop_in_the_window_makes_never_read_unknown() {
    if !privileged("a_kernel_drop_in_the_window_makes_never_read_unknown") {
        return;
    }
    // One event per open and the smallest ring: a burst of opens overflows it.
    let h = Harness::start_with(|c| {
        c.unused_after = "1s".into();
        c.repeat_window_ms = 0;
        c.ring_buffer_bytes = 4096;
    });
    let (_, results) = h.run(&h.container(&["flood:20000:/etc/db/password"]));
    assert_eq!(results[0].1, "20000");
    wait("a kernel drop", || {
        h.collector().stats().kernel.dropped_ringbuf > 0
    });
    // The loss is on /healthz too, not only in its counter.
    let (status, health) = get_health(&h);
    assert_eq!(status, 200);
    assert_eq!(health["status"], "degraded", "{health:#}");
    let ring = health["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "ring_buffer")
        .unwrap_or_else(|| panic!("{health:#}"));
    assert!(
        ring["reason"]
            .as_str()
            .unwrap()
            .contains("lost because the ring buffer was full"),
        "{ring:#}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let (_, report) = get(&h, "/v1/usage/unread");
    let db = mount(&report, "db-creds").unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(db["evidence"]["status"], "unknown", "{db:#}");
    assert_eq!(strings(&db["evidence"]["reasons"]), ["ring_buffer_full"]);
    assert_eq!(db["suggestion"], Value::Null, "no advice without evidence");
}

#[test]
fn a_restart_keeps_the_ledger_and_records_the_gap_and_bad_state_starts_fresh() {
    if !privileged("a_restart_keeps_the_ledger_and_records_the_gap_and_bad_state_starts_fresh") {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let edit = |c: &mut Config| {
        c.unused_after = "1s".into();
        c.state_dir = state.path().to_string_lossy().into_owned();
    };
    let mut h = Harness::start_with(edit);
    let (_, results) = h.run(&h.container(&["open:/etc/db/password"]));
    assert_eq!(results[0].1, "ok");
    wait("the read in the ledger", || {
        let (_, keys) = get(&h, &format!("/v1/usage/pods/{POD}"));
        keys.as_array().is_some_and(|k| !k.is_empty())
    });
    let restart = |h: &mut Harness| {
        h.collector.take().expect("running").stop();
        let mut cfg = common::default_config(&h.sb);
        edit(&mut cfg);
        let (collector, events) = Collector::start_with_channel(&cfg).expect("restarts");
        h.collector = Some(collector);
        h.events = events;
    };
    restart(&mut h);
    let file = state.path().join("usage-ledger.json");
    assert!(file.exists(), "saved at stop");

    // The read before the restart is still there; the downtime is a gap and a loss.
    let password = key_usage(&h, "password");
    assert_eq!(password["reads"], 1);
    std::thread::sleep(Duration::from_millis(200));
    let (_, report) = get(&h, "/v1/usage/unread");
    assert_eq!(
        report["gaps"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
    let db = mount(&report, "db-creds").unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(strings(&db["keys_read"]), ["password"]);
    assert_eq!(db["evidence"]["status"], "unknown", "{db:#}");
    assert_eq!(strings(&db["evidence"]["reasons"]), ["collector_down"]);
    // A stretch of unused_after after the restart is complete again.
    std::thread::sleep(Duration::from_millis(1100));
    let (_, report) = get(&h, "/v1/usage/unread");
    let db = mount(&report, "db-creds").unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(db["evidence"]["status"], "complete", "{db:#}");

    // A corrupt state: the collector starts, with an empty ledger.
    h.collector.take().expect("running").stop();
    std::fs::write(&file, b"{\"version\": 1, \"keys\": [oops").unwrap();
    let mut cfg = common::default_config(&h.sb);
    edit(&mut cfg);
    let (collector, events) = Collector::start_with_channel(&cfg).expect("starts fresh");
    h.collector = Some(collector);
    h.events = events;
    let (status, keys) = get(&h, &format!("/v1/usage/pods/{POD}"));
    assert_eq!((status, keys), (200, serde_json::json!([])));
}

/// The cluster-wide question of docs/metrics.md, "which Secrets and
/// ConfigMaps are mounted somewhere and read nowhere", as documented.
const MOUNTED_READ_NOWHERE: &str = r#"sum by (namespace, kind, name) (max_over_time(kernel_monitor_object_mounting_pods[7d]))
unless on (namespace, kind, name)
(sum by (namespace, kind, name) (max_over_time(kernel_monitor_object_reading_pods[7d])) > 0)"#;

#[test]
fn two_nodes_scraped_by_prometheus_answer_mounted_somewhere_read_nowhere() {
    let test = "two_nodes_scraped_by_prometheus_answer_mounted_somewhere_read_nowhere";
    if !privileged(test) {
        return;
    }
    let Some(bin) = common::receivers::prometheus(test) else {
        return;
    };
    // Two "nodes", each a collector on its own kubelet tree with the demo pod.
    // (Each has its own fake API server: no node selector needed.)
    let node = |cid: &str| Harness::with_fake_api(cid, |c| c.metrics_listen = "127.0.0.1:0".into());
    let (mut a, _api_a, _rt_a) = node(&"a1".repeat(32));
    let (b, _api_b, _rt_b) = node(&"b2".repeat(32));
    // On node a the pod reads its ConfigMap; on node b nothing is read.
    let mut args = a.container(&["open:/etc/config/app.yaml"]);
    args.cgroup = Some(
        a.sb.make_cgroup(&pod_cgroup("burstable", &"a1".repeat(32)))
            .unwrap(),
    );
    let (_, results) = a.run(&args);
    assert_eq!(results[0].1, "ok");
    wait("the read in node a's ledger", || {
        let (_, keys) = get(&a, &format!("/v1/usage/pods/{POD}"));
        keys.as_array().is_some_and(|k| !k.is_empty())
    });
    let addr = |h: &Harness| h.collector().api().unwrap().metrics_addr.expect("metrics");
    let prom = common::receivers::Prometheus::start_scraping(&bin, &[addr(&a), addr(&b)]);
    prom.wait_for_value(
        r#"count(kernel_monitor_object_reading_pods{name="app-settings"} > 0)"#,
        1.0,
        Duration::from_secs(30),
    )
    .expect("node a's read scraped");
    prom.wait_for_value(
        r#"sum(kernel_monitor_object_mounting_pods{name="db-credentials"})"#,
        2.0,
        Duration::from_secs(30),
    )
    .expect("both nodes scraped");
    let mut found: Vec<String> = prom
        .query(MOUNTED_READ_NOWHERE)
        .expect("the query runs")
        .iter()
        .map(|s| {
            let m = &s["metric"];
            format!("{} {} {}", m["namespace"], m["kind"], m["name"]).replace('"', "")
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "payments ConfigMap kube-root-ca.crt",
            "payments Secret db-credentials"
        ],
        "mounted on both nodes; app-settings was read on node a"
    );
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    assert!(
        docs.contains(MOUNTED_READ_NOWHERE),
        "the query is the documented one"
    );
}

#[test]
fn an_unwritable_state_directory_degrades_health_and_is_counted() {
    if !privileged("an_unwritable_state_directory_degrades_health_and_is_counted") {
        return;
    }
    // The state directory would be below a regular file: it cannot be made.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let state_dir = file.join("state").to_string_lossy().into_owned();
    let h = Harness::start_with(|c| c.state_dir = state_dir.clone());
    let conditions = h.collector().health().conditions();
    let c = conditions
        .iter()
        .find(|c| c.component == "usage_state")
        .unwrap_or_else(|| panic!("{conditions:?}"));
    assert!(c.reason.contains("cannot be saved"), "{c:?}");
    let (status, body) = get_health(&h);
    assert_eq!(status, 200, "degraded, not unhealthy: {body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(h.collector().usage().saves(), (0, 1));
}

/// `GET /healthz` on the harness's health port.
fn get_health(h: &Harness) -> (u16, Value) {
    let addr = h.collector().api().unwrap().health_addr.unwrap();
    exchange(
        std::net::TcpStream::connect(addr).unwrap(),
        "GET",
        "/healthz",
        &[],
        b"",
    )
}

/// The demo pod with a second container `sidecar` (runtime id `sidecar`),
/// both running since `started_at` (RFC 3339).
fn two_container_pod(app: &str, sidecar: &str, started_at: &str) -> Value {
    let mut pod = common::fake_apiserver::demo_pod(POD, app);
    let spec = pod["spec"]["containers"].as_array_mut().unwrap();
    spec.push(serde_json::json!({"name": "sidecar", "image": "registry.example/sidecar:1.0"}));
    let statuses = pod["status"]["containerStatuses"].as_array_mut().unwrap();
    statuses.push(serde_json::json!({"name": "sidecar", "image": "registry.example/sidecar:1.0",
        "imageID": "", "ready": true, "restartCount": 0, "containerID": format!("containerd://{sidecar}")}));
    for s in statuses {
        s["state"] = serde_json::json!({"running": {"startedAt": started_at}});
    }
    pod
}

/// Now, to the second, as the API server writes times.
fn api_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Serves the two-container pod and waits until the collector knows both containers' starts.
fn serve_two_containers(
    h: &Harness,
    api: &common::fake_apiserver::FakeApiServer,
    app: &str,
    sidecar: &str,
) {
    api.modify(two_container_pod(app, sidecar, &api_now()));
    let store = h.collector().pods().expect("kube mode").clone();
    wait("both containers in the pod metadata", || {
        store.get(POD).is_some_and(|p| {
            p.containers.len() == 2 && p.containers.iter().all(|c| c.started_at.is_some())
        })
    });
}

/// A long-running process of container `cid` (command `comm`) running `steps`.
fn start_reader(h: &mut Harness, cid: &str, comm: &str, steps: &[&str]) -> ContainerProc {
    let cgroup = h.sb.make_cgroup(&pod_cgroup("burstable", cid)).unwrap();
    let args = ExecArgs {
        cgroup: Some(cgroup),
        comm: Some(comm.into()),
        ..h.container(steps)
    };
    ContainerProc::spawn(std::path::Path::new(EXE), &args).expect("spawn sandbox-exec")
}

/// The readers `GET /v1/usage/rotations` lists for volume `volume`, and the volume.
fn rotated(h: &Harness, volume: &str) -> Option<Value> {
    let (status, report) = get(h, "/v1/usage/rotations");
    assert_eq!(status, 200, "{report}");
    report["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["volume"] == volume)
        .cloned()
}

fn reader<'a>(volume: &'a Value, key: &str, container: &str) -> &'a Value {
    volume["readers"]
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|r| r["key"] == key && r["container"] == container)
        })
        .unwrap_or_else(|| panic!("no reader of {key} in {container}: {volume:#}"))
}

#[test]
fn after_a_rotation_readers_that_did_not_re_read_are_stale_and_a_token_is_flagged() {
    if !privileged("after_a_rotation_readers_that_did_not_re_read_are_stale_and_a_token_is_flagged")
    {
        return;
    }
    let (app, sidecar) = ("a1".repeat(32), "b2".repeat(32));
    let (mut h, api, _rt) = Harness::with_fake_api(&app, |_| {});
    serve_two_containers(&h, &api, &app, &sidecar);
    // A reads the password and waits; B reads the password and the token once.
    let mut a = start_reader(
        &mut h,
        &app,
        "app-a",
        &[
            "open:/etc/db/password",
            "wait",
            "open:/etc/db/password",
            "wait",
        ],
    );
    let token = "open:/var/run/secrets/kubernetes.io/serviceaccount/token";
    let b = start_reader(
        &mut h,
        &sidecar,
        "sidecar-b",
        &["open:/etc/db/password", token, "wait"],
    );
    let mut b = b;
    assert_eq!(a.next_result().unwrap().1, "ok");
    assert_eq!(b.next_result().unwrap().1, "ok");
    assert_eq!(b.next_result().unwrap().1, "ok");
    wait("both readers in the ledger", || {
        let (_, keys) = get(&h, &format!("/v1/usage/pods/{POD}"));
        let readers = |key: &str| {
            keys.as_array()
                .and_then(|k| k.iter().find(|k| k["key"] == key))
                .map_or(0, |k| k["readers"].as_array().map_or(0, Vec::len))
        };
        readers("password") == 2 && readers("token") == 1
    });
    assert!(rotated(&h, "db-creds").is_none(), "nothing rotated yet");

    // The kubelet updates the Secret and refreshes the token.
    let (secret, token_dir) = (h.secret.clone(), h.token.clone());
    h.sb.write_atomic(
        &secret,
        &[
            ("username", b"app", 0o644),
            ("password", b"n3w", 0o644),
            ("api-key", b"k", 0o600),
        ],
    )
    .unwrap();
    h.sb.write_atomic(
        &token_dir,
        &[
            ("token", b"eyK", 0o644),
            ("ca.crt", b"-----", 0o644),
            ("namespace", b"payments", 0o644),
        ],
    )
    .unwrap();
    wait("both rotations seen", || {
        ["db-creds", "kube-api-access-x7k2p"].iter().all(|v| {
            rotated(&h, v).is_some_and(|r| r["rotations"].as_array().map(Vec::len) == Some(1))
        })
    });
    // A re-reads; B does not.
    a.release();
    assert_eq!(a.next_result().unwrap().1, "ok");
    wait("A's re-read in the ledger", || {
        rotated(&h, "db-creds").is_some_and(|v| reader(&v, "password", "app")["current"] == true)
    });
    std::thread::sleep(Duration::from_millis(1100));
    let db = rotated(&h, "db-creds").unwrap();
    let rotation = &db["rotations"][0];
    assert_eq!(rotation["to"], db["revision"], "{db:#}");
    let ra = reader(&db, "password", "app");
    assert_eq!(
        (ra["command"].as_str(), ra["stale"].as_bool()),
        (Some("app-a"), Some(false)),
        "{ra:#}"
    );
    let rb = reader(&db, "password", "sidecar");
    assert_eq!(
        (
            rb["command"].as_str(),
            rb["stale"].as_bool(),
            rb["running"].as_bool(),
            rb["pid"].as_u64()
        ),
        (
            Some("sidecar-b"),
            Some(true),
            Some(true),
            Some(u64::from(b.pid))
        ),
        "{rb:#}"
    );
    assert_eq!(rb["revision"], rotation["from"]);
    assert_eq!(rb["stale_since"], rotation["at"]);
    assert!(rb["stale_secs"].as_u64().is_some_and(|s| s >= 1), "{rb:#}");
    assert_eq!(rb["warning"], Value::Null);
    let tok = rotated(&h, "kube-api-access-x7k2p").unwrap();
    let rt = reader(&tok, "token", "sidecar");
    assert_eq!(rt["stale"], true, "{rt:#}");
    assert!(rt["warning"]
        .as_str()
        .unwrap()
        .contains("service-account token"));
    let (_, report) = get(&h, "/v1/usage/rotations");
    assert_eq!(report["stale_readers"], 2, "{report:#}");

    // The events carry the revision each open was of.
    let revisions: Vec<Option<String>> = h
        .events_of(a.pid)
        .iter()
        .map(|e| e.revision.clone())
        .collect();
    assert_eq!(
        revisions,
        [
            rotation["from"].as_str().map(str::to_string),
            rotation["to"].as_str().map(str::to_string)
        ]
    );

    // The Secret's blast radius: who mounts it, who reads it, who is stale.
    let (status, radius) = get(&h, "/v1/usage/objects/payments/Secret/db-credentials");
    assert_eq!(status, 200, "{radius}");
    assert_eq!(
        (
            radius["mounting_pods"].as_u64(),
            radius["reading_pods"].as_u64(),
            radius["stale_readers"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{radius:#}"
    );
    let m = &radius["mounts"][0];
    assert_eq!(
        strings(&m["keys_mounted"]),
        ["api-key", "password", "username"]
    );
    assert_eq!(strings(&m["keys_read"]), ["password"]);
    assert_eq!(strings(&m["reading_containers"]), ["app", "sidecar"]);
    assert_eq!(radius["reading_workloads"][0]["name"], "payments-api-0");
    let (status, err) = get(&h, "/v1/usage/objects/payments/Pod/x");
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]
        .as_str()
        .unwrap()
        .contains("Secret or ConfigMap"));
    let (status, _) = get(&h, "/v1/usage/objects/payments/secret/nothing-here");
    assert_eq!(status, 404);

    // The report shows the stale reader and the token warning.
    let out = Command::new(EXE)
        .args(["report", "--socket"])
        .arg(h.sb.scratch().join("api.sock"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.contains("sidecar-b") && l.contains("db-creds"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("STALE for"), "{row}");
    assert!(text.contains("holds a service-account token"), "{text}");

    // Once B exits, nobody runs on the old content.
    assert_eq!(b.finish().unwrap(), 0);
    let (_, report) = get(&h, "/v1/usage/rotations");
    assert_eq!(report["stale_readers"], 0, "{report:#}");
    a.release();
    assert_eq!(a.finish().unwrap(), 0);
}

#[test]
fn keys_read_only_in_the_startup_window_are_startup_only() {
    if !privileged("keys_read_only_in_the_startup_window_are_startup_only") {
        return;
    }
    let (app, sidecar) = ("c3".repeat(32), "d4".repeat(32));
    let (mut h, api, _rt) = Harness::with_fake_api(&app, |c| c.startup_window = "3s".into());
    serve_two_containers(&h, &api, &app, &sidecar);
    let started = std::time::Instant::now();
    // At start: the config and the password; after the window: the password again.
    let mut a = start_reader(
        &mut h,
        &app,
        "app",
        &[
            "chdir:/etc/config",
            "open:app.yaml",
            "open:/etc/db/password",
            "wait",
            "open:/etc/db/password",
        ],
    );
    assert_eq!(a.next_result().unwrap().1, "ok");
    assert_eq!(a.next_result().unwrap().1, "ok");
    // Within the window nothing is startup-only yet.
    let (status, early) = get(&h, "/v1/usage/startup-only");
    assert_eq!(status, 200, "{early}");
    assert_eq!(early["reads"], serde_json::json!([]), "{early:#}");
    std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    a.release();
    assert_eq!(a.next_result().unwrap().1, "ok");
    assert_eq!(a.finish().unwrap(), 0);
    wait("the late read in the ledger", || {
        key_usage(&h, "password")["reads"] == 2
    });
    let (_, report) = get(&h, "/v1/usage/startup-only");
    assert_eq!(report["startup_window_secs"], 3);
    let reads = report["reads"].as_array().unwrap();
    assert_eq!(reads.len(), 1, "{report:#}");
    assert_eq!(
        (reads[0]["key"].as_str(), reads[0]["container"].as_str()),
        (Some("app.yaml"), Some("app"))
    );
    assert_eq!(reads[0]["source"]["key"], "config.yaml");
}

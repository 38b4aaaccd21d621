//! Metrics and event logs reach real peers: an OTLP receiver on the official
//! opentelemetry-proto (gRPC and HTTP/protobuf) and Prometheus from apt,
//! driven by real BPF events; and an OTLP endpoint that is down or
//! black-holing costs nothing but counted, shed data.

mod common;

use std::time::{Duration, Instant};

use common::receivers::{self, attrs, scrape, value, OtlpReceiver, Prometheus};
use common::{privileged, read_volumes, wait, Harness, POD};
use config_access_collector::config::{Config, OtlpProtocol};
use config_access_collector::demo::container::ExecArgs;

const CID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn otlp_end_to_end(test: &str, protocol: OtlpProtocol) {
    if !privileged(test) {
        return;
    }
    let Some(py) = receivers::python(test) else {
        return;
    };
    let rx = OtlpReceiver::start(&py);
    let endpoint = match protocol {
        OtlpProtocol::Grpc => format!("http://127.0.0.1:{}", rx.grpc_port),
        OtlpProtocol::HttpProtobuf => format!("http://127.0.0.1:{}", rx.http_port),
    };
    let (mut h, _api, _rt) = Harness::with_fake_api(CID, |c: &mut Config| {
        // One record per open: every open has its latency and its log record.
        c.repeat_window_ms = 0;
        c.node_name = Some("node-a".into());
        c.otlp_endpoint = Some(endpoint);
        c.otlp_protocol = protocol;
        c.otlp_logs = true;
        c.metrics_export_interval_ms = 300;
        c.metrics_access_labels
            .push(config_access_collector::config::AccessLabel::Pod);
    });
    let (reader, intruder) = read_volumes(&mut h, CID);

    // Metrics: wait for an export that has counted everything.
    let want_transport = match protocol {
        OtlpProtocol::Grpc => "grpc",
        OtlpProtocol::HttpProtobuf => "http",
    };
    let secret = [("namespace", "payments"), ("secret", "db-credentials")];
    let mut last = None;
    let mut seen = None;
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        let reqs = rx.requests("metrics");
        if let Some((transport, req)) = reqs.last() {
            assert_eq!(transport, want_transport);
            seen = Some((
                reqs.len(),
                receivers::points(req, "kernel_monitor_secret_access"),
                receivers::points(req, "kernel_monitor_access"),
            ));
            if value(req, "kernel_monitor_secret_access", &secret) == Some(3.0)
                && value(req, "kernel_monitor_access", &[("result", "EACCES")]) == Some(1.0)
            {
                last = Some(req.clone());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let req = last.unwrap_or_else(|| {
        panic!("no OTLP metrics export with every access counted; last seen: {seen:#?}")
    });
    let res = attrs(&req["resource_metrics"][0]["resource"]["attributes"]);
    assert_eq!(res["service.name"], "config-access-collector");
    assert_eq!(res["service.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(res["k8s.node.name"], "node-a");
    assert!(!res["host.name"].is_empty());

    let counter = receivers::points(&req, "kernel_monitor_secret_access");
    assert_eq!(
        counter[0].monotonic,
        Some(true),
        "a monotonic sum becomes a Prometheus counter (_total)"
    );
    assert_eq!(
        value(
            &req,
            "kernel_monitor_configmap_access",
            &[("namespace", "payments"), ("configmap", "app-settings")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &req,
            "kernel_monitor_serviceaccount_token_access",
            &[("namespace", "payments"), ("serviceaccount", "default")]
        ),
        Some(1.0)
    );
    let ok_secret = [
        ("namespace", "payments"),
        ("workload_kind", "StatefulSet"),
        ("workload", "payments-api-0"),
        ("pod", "payments-api-0"),
        ("volume_type", "secret"),
        ("result", "ok"),
    ];
    assert_eq!(value(&req, "kernel_monitor_access", &ok_secret), Some(2.0));
    assert_eq!(
        value(
            &req,
            "kernel_monitor_processing_duration_ms",
            &[("event_type", "secret_access")]
        ),
        Some(3.0),
        "histogram count of secret accesses"
    );
    let lookups = value(
        &req,
        "kernel_monitor_pod_correlation",
        &[("operation", "cgroup_lookup")],
    );
    assert!(lookups >= Some(5.0), "cgroup lookups: {lookups:?}");
    assert!(
        value(
            &req,
            "kernel_monitor_events_emitted",
            &[("output", "channel")]
        ) >= Some(5.0)
    );
    assert!(value(&req, "kernel_monitor_events_matched", &[]) >= Some(5.0));
    assert_eq!(value(&req, "kernel_monitor_known_pods", &[]), Some(1.0));
    assert_eq!(
        value(
            &req,
            "kernel_monitor_watched_volumes",
            &[("volume_type", "secret")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &req,
            "kernel_monitor_events_dropped",
            &[("reason", "ring_buffer_full")]
        ),
        Some(0.0)
    );
    for p in receivers::points(&req, "kernel_monitor_access") {
        assert!(
            p.attrs
                .keys()
                .all(|k| !k.contains("pid") && !k.contains("path")),
            "unbounded label on {p:?}"
        );
    }

    // Logs: one record per access, attributes in OTel names.
    wait("5 OTLP log records", || {
        rx.log_records()
            .iter()
            .filter(|r| {
                let a = attrs(&r["attributes"]);
                [reader, intruder]
                    .iter()
                    .any(|p| a.get("process.pid") == Some(&p.to_string()))
            })
            .count()
            == 5
    });
    let records = rx.log_records();
    let find = |key: &str, pid: u32| {
        records
            .iter()
            .find(|r| {
                let a = attrs(&r["attributes"]);
                a.get("file.name").map(String::as_str) == Some(key)
                    && a.get("process.pid") == Some(&pid.to_string())
            })
            .unwrap_or_else(|| panic!("no log record for {key}"))
            .clone()
    };
    let pw = find("password", reader);
    let a = attrs(&pw["attributes"]);
    for (k, v) in [
        ("k8s.namespace.name", "payments"),
        ("k8s.pod.name", "payments-api-0"),
        ("k8s.pod.uid", POD),
        ("k8s.container.name", "app"),
        ("container.id", CID),
        ("k8s.statefulset.name", "payments-api-0"),
        ("k8s.volume.name", "db-creds"),
        ("config_access.object.kind", "Secret"),
        ("config_access.object.name", "db-credentials"),
        ("config_access.event_type", "secret_access"),
        ("config_access.result", "ok"),
        ("file.path", "/etc/db/password"),
    ] {
        assert_eq!(a.get(k).map(String::as_str), Some(v), "{k} in {a:#?}");
    }
    assert_eq!(pw["event_name"], "config_access");
    assert_eq!(pw["severity_text"], "INFO");
    assert!(pw["time_unix_nano"].as_str().is_some_and(|t| t != "0"));
    let denied = find("api-key", intruder);
    let a = attrs(&denied["attributes"]);
    assert_eq!(a["error.type"], "EACCES");
    assert_eq!(a["process.user.id"], "65534");
    assert_eq!(denied["severity_text"], "WARN");
    let token = find("token", reader);
    assert_eq!(
        attrs(&token["attributes"])["config_access.service_account_token"],
        "true"
    );
    let (_, logs_req) = rx.requests("logs").pop().unwrap();
    let res = attrs(&logs_req["resource_logs"][0]["resource"]["attributes"]);
    assert_eq!(res["k8s.node.name"], "node-a");
}

#[test]
fn otlp_metrics_and_event_logs_over_grpc() {
    otlp_end_to_end("otlp_metrics_and_event_logs_over_grpc", OtlpProtocol::Grpc);
}

#[test]
fn otlp_metrics_and_event_logs_over_http_protobuf() {
    otlp_end_to_end(
        "otlp_metrics_and_event_logs_over_http_protobuf",
        OtlpProtocol::HttpProtobuf,
    );
}

#[test]
fn prometheus_scrapes_the_metrics_endpoint() {
    let test = "prometheus_scrapes_the_metrics_endpoint";
    if !privileged(test) {
        return;
    }
    let Some(bin) = receivers::prometheus(test) else {
        return;
    };
    let (mut h, _api, _rt) = Harness::with_fake_api(CID, |c: &mut Config| {
        c.metrics_listen = "127.0.0.1:0".into();
    });
    read_volumes(&mut h, CID);
    let addr = h
        .collector()
        .api()
        .unwrap()
        .metrics_addr
        .expect("metrics listener");
    // The reader opened the Secret's password twice: one event, then (after
    // the repeat window) a summary of one more open; the counter counts both.
    let secret = |text: &str| {
        receivers::sample(
            text,
            "kernel_monitor_secret_access_total",
            &[("namespace", "payments"), ("secret", "db-credentials")],
        )
    };
    let end = Instant::now() + Duration::from_secs(10);
    let mut text = scrape(addr);
    while secret(&text) != Some(3.0) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        text = scrape(addr);
    }
    assert_eq!(secret(&text), Some(3.0), "{text}");
    assert_eq!(
        receivers::sample(&text, "kernel_monitor_opens_repeated_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("# TYPE kernel_monitor_processing_duration_ms histogram"));
    assert!(text.contains("kernel_monitor_pod_correlation_total{operation=\"cgroup_lookup\""));

    let prom = Prometheus::start(&bin, addr);
    prom.wait_for_value(
        r#"sum(kernel_monitor_secret_access_total{namespace="payments",secret="db-credentials"})"#,
        3.0,
        Duration::from_secs(30),
    )
    .unwrap();
    prom.wait_for_value(
        r#"sum(kernel_monitor_configmap_access_total{configmap="app-settings"})"#,
        1.0,
        Duration::from_secs(10),
    )
    .unwrap();
    prom.wait_for_value(
        r#"sum(kernel_monitor_access_total{result="EACCES",workload_kind="StatefulSet"})"#,
        1.0,
        Duration::from_secs(10),
    )
    .unwrap();
}

/// Many accesses with the OTLP endpoint unusable: the JSON output still gets
/// every event, and every event log is exported or counted as shed.
fn unusable_endpoint(test: &str, endpoint: String, protocol: OtlpProtocol) {
    let mut h = Harness::start_with(|c: &mut Config| {
        c.repeat_window_ms = 0;
        c.otlp_endpoint = Some(endpoint);
        c.otlp_protocol = protocol;
        c.otlp_logs = true;
        c.otlp_logs_queue = 16;
        c.otlp_logs_batch = 4;
        c.otlp_timeout_ms = 300;
        c.metrics_export_interval_ms = 200;
        c.metrics_listen = "127.0.0.1:0".into();
        c.shutdown_timeout_ms = 1000;
    });
    let n = 300;
    let steps: Vec<String> = (0..n)
        .map(|_| "open:/etc/db/password".to_string())
        .collect();
    let args = ExecArgs {
        steps,
        ..h.container(&[])
    };
    let (pid, _) = h.run(&args);
    let evs = h.events_of(pid);
    assert_eq!(
        evs.len(),
        n,
        "{test}: the JSON output must not wait for OTLP"
    );

    let addr = h.collector().api().unwrap().metrics_addr.unwrap();
    let shed = |text: &str, reason: &str| {
        receivers::sample(
            text,
            "kernel_monitor_output_shed_total",
            &[("output", "otlp_logs"), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    wait("metric and log export failures to be counted", || {
        let text = scrape(addr);
        receivers::sample(
            &text,
            "kernel_monitor_export_errors_total",
            &[("signal", "metrics")],
        ) >= Some(1.0)
            && shed(&text, "export_failed") >= 4.0
    });
    let text = scrape(addr);
    assert!(
        shed(&text, "queue_full") > 0.0,
        "{test}: a 16-event queue in front of a dead endpoint must shed, not grow"
    );
    let health = receivers::http()
        .get(format!(
            "http://{}/healthz",
            h.collector().api().unwrap().health_addr.unwrap()
        ))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200, "{test}: still healthy");

    let started = Instant::now();
    let c = h.collector.take().unwrap();
    c.stop();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "{test}: shutdown is bounded (took {took:?})"
    );
}

#[test]
fn otlp_endpoint_down_costs_only_counted_data() {
    let test = "otlp_endpoint_down_costs_only_counted_data";
    if !privileged(test) {
        return;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    unusable_endpoint(
        test,
        format!("http://127.0.0.1:{port}"),
        OtlpProtocol::HttpProtobuf,
    );
}

#[test]
fn otlp_black_hole_costs_only_counted_data() {
    let test = "otlp_black_hole_costs_only_counted_data";
    if !privileged(test) {
        return;
    }
    // Accepts connections and never answers.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming() {
            held.push(s);
        }
    });
    unusable_endpoint(test, format!("http://127.0.0.1:{port}"), OtlpProtocol::Grpc);
}

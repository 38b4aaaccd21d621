//! The Service endpoint map over real HTTP, without the kernel side: the
//! `/v1/services/*` routes served alone (the correlation API merges the same
//! router), lookups by IP:port (IPv4, IPv6, IPv4-mapped) and by pod, and
//! every refusal with its status and JSON reason: bad parameters (400),
//! unknown addresses and pods (404), the map off (404 saying so) or not
//! listed yet (503).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::exchange;
use common::fake_apiserver::{endpoint_slice, service};
use config_access_collector::api::{openapi_json, services_router};
use config_access_collector::enrich::services::{
    service_entries, slice_entries, MapSettings, ObjectKind, ServiceMap,
};
use serde_json::{json, Value};

/// Serves `router` on 127.0.0.1 until the returned runtime is dropped.
fn serve(map: Option<Arc<ServiceMap>>) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let _ = axum::serve(listener, services_router(map)).await;
    });
    (addr, rt)
}

/// The raw answer, headers included.
fn raw_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    exchange(TcpStream::connect(addr).unwrap(), "GET", path, &[], b"")
}

/// Asserts that `path` is answered `status` with a JSON `error` containing `reason`.
fn refused(addr: SocketAddr, path: &str, status: u16, reason: &str) {
    let (got, body) = get(addr, path);
    assert_eq!(got, status, "{path}: {body}");
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{path}: {body}"));
    assert!(error.contains(reason), "{path}: {error}");
}

/// A listed map: Service `shop/web` (dual-stack, http 80 TCP and dns 53
/// UDP), its IPv4 slice (web-0, web-1) and IPv6 slice (web-0).
fn shop() -> Arc<ServiceMap> {
    let map = ServiceMap::new(MapSettings::default());
    for kind in [ObjectKind::Service, ObjectKind::EndpointSlice] {
        map.begin_relist(kind);
    }
    let svc = service(
        "shop",
        "web",
        &["10.96.0.10", "fd00:10::a"],
        json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
               {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]),
    );
    let ports = json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]);
    let v4 = endpoint_slice(
        "shop",
        "web-x1",
        "web",
        "IPv4",
        &[("10.1.0.5", "web-0"), ("10.1.0.6", "web-1")],
        ports.clone(),
    );
    let v6 = endpoint_slice(
        "shop",
        "web-y1",
        "web",
        "IPv6",
        &[("fd00:1::5", "web-0")],
        ports,
    );
    let limit = map.max_entries();
    map.apply(service_entries(&serde_json::from_value(svc).unwrap(), map.names(), limit).unwrap());
    for s in [v4, v6] {
        map.apply(slice_entries(&serde_json::from_value(s).unwrap(), map.names(), limit).unwrap());
    }
    for kind in [ObjectKind::Service, ObjectKind::EndpointSlice] {
        map.end_relist(kind);
    }
    Arc::new(map)
}

#[test]
fn lookups_by_address_and_port() {
    let (addr, _rt) = serve(Some(shop()));
    let (status, body) = get(addr, "/v1/services/by-endpoint?ip=10.96.0.10&port=80");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"ip": "10.96.0.10", "port": 80, "protocol": "TCP", "targets": [
            {"role": "cluster_ip", "namespace": "shop", "service": "web", "port_name": "http", "pod": null}]})
    );
    // An endpoint: the target port, the pod behind it. IPv6, protocol in any case.
    let (status, body) = get(
        addr,
        "/v1/services/by-endpoint?ip=fd00:1::5&port=5353&protocol=udp",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["targets"],
        json!([{"role": "endpoint", "namespace": "shop", "service": "web", "port_name": "dns",
                "pod": {"uid": "uid-web-0", "namespace": "shop", "name": "web-0"}}])
    );
    assert_eq!(body["protocol"], "UDP");
    // An IPv4-mapped IPv6 address (as a dual-stack socket reports a v4 peer) is its IPv4 address.
    let (status, body) = get(
        addr,
        "/v1/services/by-endpoint?ip=::ffff:10.1.0.6&port=8080",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ip"], "10.1.0.6");
    assert_eq!(body["targets"][0]["pod"]["name"], "web-1");
    // Known address, other port or protocol: not a Service's.
    for path in [
        "/v1/services/by-endpoint?ip=10.96.0.10&port=8080",
        "/v1/services/by-endpoint?ip=10.96.0.10&port=53",
        "/v1/services/by-endpoint?ip=10.9.9.9&port=80&protocol=SCTP",
    ] {
        refused(addr, path, 404, "no Service has");
    }
}

#[test]
fn lookups_by_pod() {
    let (addr, _rt) = serve(Some(shop()));
    let (status, body) = get(addr, "/v1/services/by-pod/uid-web-0");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["pod"],
        json!({"uid": "uid-web-0", "namespace": "shop", "name": "web-0"})
    );
    let endpoints: Vec<String> = body["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}/{}:{}",
                e["ip"], e["port"], e["protocol"], e["namespace"], e["service"], e["port_name"]
            )
        })
        .collect();
    assert_eq!(
        endpoints,
        [
            r#""10.1.0.5" 5353 "UDP" "shop"/"web":"dns""#,
            r#""10.1.0.5" 8080 "TCP" "shop"/"web":"http""#,
            r#""fd00:1::5" 5353 "UDP" "shop"/"web":"dns""#,
            r#""fd00:1::5" 8080 "TCP" "shop"/"web":"http""#,
        ]
    );
    refused(
        addr,
        "/v1/services/by-pod/uid-unknown",
        404,
        "backs no Service endpoint",
    );
}

#[test]
fn bad_requests_are_400_with_a_reason() {
    let (addr, _rt) = serve(Some(shop()));
    for (query, reason) in [
        ("port=80", "ip is missing"),
        ("ip=10.96.0.10", "port is missing"),
        ("ip=10.96.0&port=80", "ip must be an IPv4 or IPv6 address"),
        (
            "ip=web.shop.svc&port=80",
            "ip must be an IPv4 or IPv6 address",
        ),
        ("ip=10.96.0.10&port=0", "port must be 1 to 65535"),
        ("ip=10.96.0.10&port=65536", "port must be 1 to 65535"),
        ("ip=10.96.0.10&port=http", "port must be 1 to 65535"),
        (
            "ip=10.96.0.10&port=80&protocol=ICMP",
            "protocol must be TCP, UDP or SCTP",
        ),
        (
            "ip=10.96.0.10&port=80&namespace=shop",
            "unknown query parameter \"namespace\"",
        ),
        (
            "ip=10.96.0.10&port=80&protocol=%FF",
            "protocol must be TCP, UDP or SCTP",
        ),
    ] {
        refused(
            addr,
            &format!("/v1/services/by-endpoint?{query}"),
            400,
            reason,
        );
    }
    let (status, body) = exchange(
        TcpStream::connect(addr).unwrap(),
        "POST",
        "/v1/services/by-endpoint?ip=10.96.0.10&port=80",
        &[],
        b"",
    );
    assert_eq!(status, 405, "{body}");
    assert!(body["error"].is_string());
}

#[test]
fn off_standalone_and_not_yet_listed_say_so() {
    let (addr, _rt) = serve(None);
    for path in [
        "/v1/services/by-endpoint?ip=10.96.0.10&port=80",
        "/v1/services/by-pod/u",
    ] {
        refused(addr, path, 404, "map is off (service_endpoints: false");
    }

    let standalone = Arc::new(ServiceMap::new(MapSettings::default()));
    standalone.set_standalone();
    let (addr, _rt2) = serve(Some(standalone));
    refused(
        addr,
        "/v1/services/by-endpoint?ip=10.96.0.10&port=80",
        404,
        "no Kubernetes API server",
    );

    // Not listed yet: what it holds is answered, a miss is 503 (retry), not 404.
    let waiting = Arc::new(ServiceMap::new(MapSettings::default()));
    let svc = service("shop", "web", &["10.96.0.10"], json!([{"port": 80}]));
    waiting.apply(
        service_entries(&serde_json::from_value(svc).unwrap(), waiting.names(), 10).unwrap(),
    );
    let (addr, _rt3) = serve(Some(Arc::clone(&waiting)));
    let (status, body) = get(addr, "/v1/services/by-endpoint?ip=10.96.0.10&port=80");
    assert_eq!(
        (status, &body["targets"][0]["port_name"]),
        (200, &Value::Null),
        "{body}"
    );
    let (status, body) = get(addr, "/v1/services/by-endpoint?ip=10.96.0.11&port=80");
    assert_eq!(status, 503, "{body}");
    let raw = raw_get(addr, "/v1/services/by-endpoint?ip=10.96.0.11&port=80");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
    assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");
    for kind in [ObjectKind::Service, ObjectKind::EndpointSlice] {
        waiting.begin_relist(kind);
        waiting.end_relist(kind);
    }
    let (status, _) = get(addr, "/v1/services/by-endpoint?ip=10.96.0.11&port=80");
    assert_eq!(status, 404, "listed: a miss is a miss");
}

#[test]
fn the_openapi_document_describes_both_routes() {
    let doc: Value = serde_json::from_str(&openapi_json()).unwrap();
    let by_endpoint = &doc["paths"]["/v1/services/by-endpoint"]["get"];
    let params: Vec<&str> = by_endpoint["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["ip", "port", "protocol"]);
    let by_pod = &doc["paths"]["/v1/services/by-pod/{uid}"]["get"];
    for status in ["200", "400", "404", "503"] {
        assert!(by_endpoint["responses"][status].is_object(), "{status}");
        assert!(by_pod["responses"][status].is_object(), "{status}");
    }
    assert!(doc["components"]["schemas"]["ServiceEndpoint"].is_object());
    assert!(doc["components"]["schemas"]["PodServices"].is_object());
}

//! The Service endpoint map against the fake API server, which speaks the
//! real list/watch protocol with real Service and EndpointSlice JSON: the
//! map converges through adds, updates and deletes, dual-stack (IPv4 and
//! IPv6) addresses, a 410 Gone that forces a relist of both resources, and a
//! bound that counts what it leaves out.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_apiserver::{endpoint_slice, service, FakeApiServer, Resource};
use config_access_collector::enrich::pods::client;
use config_access_collector::enrich::services::{
    watch_service_map, EndpointKey, MapSettings, Protocol, Role, ServiceMap, Target,
};
use config_access_collector::model::health::HealthBoard;
use serde_json::json;

async fn until(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn key(ip: &str, port: u16, protocol: Protocol) -> EndpointKey {
    EndpointKey::new(ip.parse::<IpAddr>().unwrap(), port, protocol)
}

fn tcp(ip: &str, port: u16) -> EndpointKey {
    key(ip, port, Protocol::Tcp)
}

/// `namespace/service:port_name@pod` of each target.
fn described(targets: &[Target]) -> Vec<String> {
    targets
        .iter()
        .map(|t| {
            let mut s = format!(
                "{}/{}:{}",
                t.service.namespace,
                t.service.name,
                t.service.port_name.as_deref().unwrap_or("-")
            );
            if let Some(p) = &t.pod {
                s += &format!("@{}/{}({})", p.namespace, p.name, p.uid);
            }
            s
        })
        .collect()
}

fn at(map: &ServiceMap, k: EndpointKey) -> Vec<String> {
    described(&map.lookup(&k))
}

fn web_ports() -> serde_json::Value {
    json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
           {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}])
}

fn slice_ports() -> serde_json::Value {
    json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}])
}

/// Lists made so far of `resource` (requests without `watch`).
fn lists(api: &FakeApiServer, resource: Resource) -> usize {
    api.requests_for(resource)
        .iter()
        .filter(|q| q.get("watch").is_none())
        .count()
}

struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(api: &FakeApiServer, map: &Arc<ServiceMap>) -> Self {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let c = client(Some(&api.url())).await.unwrap();
        let task = tokio::spawn(watch_service_map(c, Arc::clone(map), async move {
            let _ = stop_rx.await;
        }));
        Self {
            stop: Some(stop_tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("watchers stop")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_converges_through_adds_updates_deletes_and_a_410_relist() {
    let api = FakeApiServer::start("127.0.0.1:0".parse().unwrap()).await;
    api.add_to(
        Resource::Services,
        service("shop", "web", &["10.96.0.10", "fd00:10::a"], web_ports()),
    );
    api.add_to(
        Resource::Services,
        service(
            "shop",
            "db",
            &["10.96.0.20"],
            json!([{"port": 5432, "protocol": "TCP", "targetPort": 5432}]),
        ),
    );
    let v4 = [("10.1.0.5", "web-0"), ("10.1.0.6", "web-1")];
    api.add_to(
        Resource::EndpointSlices,
        endpoint_slice("shop", "web-x1", "web", "IPv4", &v4, slice_ports()),
    );
    api.add_to(
        Resource::EndpointSlices,
        endpoint_slice(
            "shop",
            "web-y1",
            "web",
            "IPv6",
            &[("fd00:1::5", "web-0")],
            slice_ports(),
        ),
    );

    let map = Arc::new(ServiceMap::new(MapSettings::default()));
    let watch = Running::start(&api, &map).await;
    until("initial lists", || map.synced()).await;

    // Cluster IPs of both families, each port, its name (none for db's only port).
    assert_eq!(at(&map, tcp("10.96.0.10", 80)), ["shop/web:http"]);
    assert_eq!(at(&map, tcp("fd00:10::a", 80)), ["shop/web:http"]);
    assert_eq!(
        at(&map, key("fd00:10::a", 53, Protocol::Udp)),
        ["shop/web:dns"]
    );
    assert!(at(&map, tcp("10.96.0.10", 53)).is_empty(), "dns is UDP");
    assert_eq!(at(&map, tcp("10.96.0.20", 5432)), ["shop/db:-"]);
    assert_eq!(
        map.lookup(&tcp("10.96.0.20", 5432))[0].service.role,
        Role::ClusterIp
    );
    // Endpoints: the target port, to the Service port's name and the pod.
    assert_eq!(
        at(&map, tcp("10.1.0.5", 8080)),
        ["shop/web:http@shop/web-0(uid-web-0)"]
    );
    assert_eq!(
        at(&map, key("10.1.0.6", 5353, Protocol::Udp)),
        ["shop/web:dns@shop/web-1(uid-web-1)"]
    );
    assert_eq!(
        at(&map, tcp("fd00:1::5", 8080)),
        ["shop/web:http@shop/web-0(uid-web-0)"]
    );
    assert!(
        at(&map, tcp("10.1.0.5", 80)).is_empty(),
        "endpoints answer on the target port"
    );
    // By pod: web-0 backs both families' endpoints, both ports (sorted by IP, port).
    let keys: Vec<EndpointKey> = map
        .by_pod("uid-web-0")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        [
            key("10.1.0.5", 5353, Protocol::Udp),
            tcp("10.1.0.5", 8080),
            key("fd00:1::5", 5353, Protocol::Udp),
            tcp("fd00:1::5", 8080),
        ]
    );

    // Updates: a pod replaced in the slice, a port added to the Service.
    let replaced = [("10.1.0.5", "web-0"), ("10.1.0.7", "web-2")];
    api.modify_in(
        Resource::EndpointSlices,
        endpoint_slice("shop", "web-x1", "web", "IPv4", &replaced, slice_ports()),
    );
    until("slice update", || {
        !map.lookup(&tcp("10.1.0.7", 8080)).is_empty()
    })
    .await;
    assert!(at(&map, tcp("10.1.0.6", 8080)).is_empty());
    assert!(map.by_pod("uid-web-1").is_empty());
    let mut ports = web_ports();
    ports
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "grpc", "port": 9000, "protocol": "TCP", "targetPort": 9000}));
    api.modify_in(
        Resource::Services,
        service("shop", "web", &["10.96.0.10", "fd00:10::a"], ports),
    );
    until("service update", || {
        !map.lookup(&tcp("fd00:10::a", 9000)).is_empty()
    })
    .await;
    assert_eq!(at(&map, tcp("10.96.0.10", 9000)), ["shop/web:grpc"]);

    // Delete.
    api.delete_from(Resource::Services, "shop/db");
    until("service delete", || {
        map.lookup(&tcp("10.96.0.20", 5432)).is_empty()
    })
    .await;

    // 410 Gone: changes while the watchers are away, history compacted: both relist.
    let before = (
        lists(&api, Resource::Services),
        lists(&api, Resource::EndpointSlices),
    );
    api.compact();
    api.drop_watches();
    api.delete_from(Resource::EndpointSlices, "shop/web-y1");
    api.add_to(
        Resource::Services,
        service(
            "shop",
            "cache",
            &["10.96.0.30"],
            json!([{"name": "redis", "port": 6379}]),
        ),
    );
    api.add_to(
        Resource::EndpointSlices,
        endpoint_slice(
            "shop",
            "cache-a",
            "cache",
            "IPv4",
            &[("10.1.0.9", "cache-0")],
            json!([{"name": "redis", "port": 6379}]),
        ),
    );
    api.compact();
    until("relist after 410", || {
        map.lookup(&tcp("fd00:1::5", 8080)).is_empty()
            && !map.lookup(&tcp("10.1.0.9", 6379)).is_empty()
            && !map.lookup(&tcp("10.96.0.30", 6379)).is_empty()
            && lists(&api, Resource::Services) > before.0
    })
    .await;
    let after = (
        lists(&api, Resource::Services),
        lists(&api, Resource::EndpointSlices),
    );
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "410 Gone must force new lists: {before:?} -> {after:?}"
    );
    assert_eq!(at(&map, tcp("10.96.0.30", 6379)), ["shop/cache:redis"]);
    assert_eq!(
        at(&map, tcp("10.1.0.9", 6379)),
        ["shop/cache:redis@shop/cache-0(uid-cache-0)"]
    );
    assert_eq!(
        at(&map, tcp("10.1.0.5", 8080)),
        ["shop/web:http@shop/web-0(uid-web-0)"],
        "kept through the relist"
    );
    assert_eq!(
        map.by_pod("uid-web-0").len(),
        2,
        "only the IPv4 slice is left"
    );
    // What is left, exactly: web (2 IPs x 3 ports), cache (1), web-x1 (2 x 2), cache-a (1).
    assert_eq!(map.entry_count(), 6 + 1 + 4 + 1);

    // A consumer mirroring the map sees every key with one target.
    let snap = map.entries();
    assert_eq!(snap.entries.len(), map.len());
    assert_eq!(snap.generation, map.generation());
    watch.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_map_counts_what_it_leaves_out_until_it_fits() {
    let api = FakeApiServer::start("127.0.0.1:0".parse().unwrap()).await;
    // 2 cluster IPs x 2 ports: 4 entries.
    api.add_to(
        Resource::Services,
        service("shop", "web", &["10.96.0.10", "fd00:10::a"], web_ports()),
    );
    let health = Arc::new(HealthBoard::default());
    let map =
        Arc::new(ServiceMap::new(MapSettings { max_entries: 5 }).with_health(Arc::clone(&health)));
    let watch = Running::start(&api, &map).await;
    until("initial lists", || map.synced()).await;
    assert_eq!((map.entry_count(), map.overflow()), (4, 0));
    assert!(health.conditions().is_empty());

    // 3 endpoints x 2 ports: 6 entries, room for 1.
    let three = [
        ("10.1.0.5", "web-0"),
        ("10.1.0.6", "web-1"),
        ("10.1.0.7", "web-2"),
    ];
    api.add_to(
        Resource::EndpointSlices,
        endpoint_slice("shop", "web-x1", "web", "IPv4", &three, slice_ports()),
    );
    until("overflow counted", || map.overflow() == 5).await;
    assert_eq!(map.entry_count(), 5);
    assert_eq!(map.incomplete_objects(), 1);
    let conditions = health.conditions();
    assert_eq!(conditions.len(), 1, "{conditions:?}");
    assert_eq!(conditions[0].component, "service_map");
    assert!(map.lookup(&tcp("10.1.0.7", 8080)).is_empty(), "left out");

    // The Service goes; the slice fits at its next update, and the condition clears.
    api.delete_from(Resource::Services, "shop/web");
    until("service delete", || map.entry_count() == 1).await;
    api.modify_in(
        Resource::EndpointSlices,
        endpoint_slice("shop", "web-x1", "web", "IPv4", &three[1..], slice_ports()),
    );
    until("slice fits", || map.entry_count() == 4).await;
    assert_eq!(map.incomplete_objects(), 0);
    assert!(health.conditions().is_empty(), "{:?}", health.conditions());
    assert_eq!(map.overflow(), 5, "the counter counts, it does not forget");
    watch.stop().await;
}

//! The pod watcher against a fake API server that speaks the real list/watch
//! protocol: the store converges through adds, updates, deletes, bookmarks,
//! a 410 Gone that forces a relist, dropped connections, and an API server
//! that is down at start.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_apiserver::{pod, FakeApiServer};
use config_access_collector::enrich::pods::{
    client, watch_pods, LabelFilter, PodStore, WatchSettings,
};
use serde_json::json;

const CID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

async fn until(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn uid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn settings() -> WatchSettings {
    WatchSettings {
        node_name: Some("node-a".into()),
        labels: LabelFilter(vec!["app".into()]),
    }
}

fn secret_volume(name: &str, secret: &str) -> serde_json::Value {
    json!([{"name": name, "secret": {"secretName": secret}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_converges_through_watch_events_bookmarks_gone_and_drops() {
    let api = FakeApiServer::start("127.0.0.1:0".parse().unwrap()).await;
    api.add(pod(
        &uid(1),
        "web-0",
        "shop",
        "node-a",
        secret_volume("creds", "db-credentials"),
        CID,
    ));
    api.add(pod(&uid(2), "web-1", "shop", "node-a", json!([]), CID));
    api.add(pod(&uid(3), "other", "shop", "node-b", json!([]), CID));

    let store = Arc::new(PodStore::new(Duration::from_secs(30)));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let c = client(Some(&api.url())).await.unwrap();
    let task = tokio::spawn(watch_pods(c, settings(), Arc::clone(&store), async move {
        let _ = stop_rx.await;
    }));

    until("initial list", || store.synced() && store.len() == 2).await;
    assert!(
        store.get(&uid(3)).is_none(),
        "the field selector keeps other nodes' pods out"
    );
    let p1 = store.get(&uid(1)).unwrap();
    assert_eq!((&*p1.name, &*p1.namespace), ("web-0", "shop"));
    assert_eq!(
        p1.source_of("creds", "password").unwrap().name.as_deref(),
        Some("db-credentials")
    );
    assert_eq!(&*p1.container_by_id(CID).unwrap().name, "app");
    let first = api.requests();
    assert!(
        first
            .iter()
            .all(|q| q.get("fieldSelector").map(String::as_str) == Some("spec.nodeName=node-a")),
        "{first:?}"
    );

    // Watch events: add, modify, delete.
    api.add(pod(&uid(4), "web-2", "shop", "node-a", json!([]), CID));
    until("added pod", || store.get(&uid(4)).is_some()).await;
    let mut changed = pod(
        &uid(1),
        "web-0",
        "shop",
        "node-a",
        secret_volume("creds", "rotated-credentials"),
        CID,
    );
    changed["metadata"]["labels"]["app"] = json!("web-v2");
    api.modify(changed);
    until("modified pod", || {
        store
            .get(&uid(1))
            .is_some_and(|p| p.label("app") == Some("web-v2"))
    })
    .await;
    assert_eq!(
        store
            .get(&uid(1))
            .unwrap()
            .source_of("creds", "k")
            .unwrap()
            .name
            .as_deref(),
        Some("rotated-credentials")
    );
    api.delete(&uid(2));
    until("deleted pod", || store.len() == 2).await;
    assert!(
        store.get(&uid(2)).is_some(),
        "a deleted pod stays resolvable for the grace period"
    );

    // A bookmark advances the resource version the next watch resumes from.
    api.bookmark();
    let bookmark_rv = api.resource_version();
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.drop_watches();
    until("reconnect after bookmark", || {
        api.requests().iter().any(|q| {
            q.get("watch").is_some() && q.get("resourceVersion") == Some(&bookmark_rv.to_string())
        })
    })
    .await;

    // Dropped connection: events after the reconnect still arrive.
    api.add(pod(&uid(5), "web-3", "shop", "node-a", json!([]), CID));
    until("pod added after reconnect", || store.get(&uid(5)).is_some()).await;

    // 410 Gone: history is compacted while the client is away; it must relist.
    let lists_before = api
        .requests()
        .iter()
        .filter(|q| q.get("watch").is_none())
        .count();
    api.compact();
    api.drop_watches();
    api.delete(&uid(4));
    api.add(pod(&uid(6), "web-4", "shop", "node-a", json!([]), CID));
    api.compact();
    until("relist after 410", || {
        store.get(&uid(6)).is_some() && store.len() == 3
    })
    .await;
    let lists_after = api
        .requests()
        .iter()
        .filter(|q| q.get("watch").is_none())
        .count();
    assert!(lists_after > lists_before, "410 Gone must force a new list");
    let mut live: Vec<u32> = (1..=6)
        .filter(|n| store.get(&uid(*n)).is_some_and(|_| true))
        .collect();
    live.retain(|n| *n != 2 && *n != 4);
    assert_eq!(live, [1, 5, 6]);

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("watcher stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_at_start_then_up() {
    // Reserve a port, then leave it closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let store = Arc::new(PodStore::new(Duration::from_secs(30)));
    let c = client(Some(&format!("http://{addr}"))).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(watch_pods(c, settings(), Arc::clone(&store), async move {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!store.synced(), "nothing to sync from yet");

    let api = FakeApiServer::start(addr).await;
    api.add(pod(&uid(7), "late", "ns", "node-a", json!([]), CID));
    until("sync once the API server is up", || {
        store.synced() && store.get(&uid(7)).is_some()
    })
    .await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("watcher stops")
        .unwrap();
}

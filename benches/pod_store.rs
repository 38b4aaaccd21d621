//! Memory and lookup cost of the pod metadata store.
//!
//! `cargo bench --bench pod_store` loads 10,000 pods (3 volumes and 2
//! containers each, realistic labels and owners) into the store and prints
//! the resident memory the store added and the mean latency of the lookups
//! enrichment makes per event.

use std::hint::black_box;
use std::time::{Duration, Instant};

use config_access_collector::enrich::pods::{LabelFilter, PodMeta, PodStore};
use k8s_openapi::api::core::v1::Pod;

const PODS: usize = 10_000;

mod common;

use common::{live_heap, rss_kib};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fn uid(i: usize) -> String {
    format!("{:08x}-1b2c-4d3e-8f40-{:012x}", i, i * 7919)
}

fn pod(i: usize) -> Pod {
    let name = format!("checkout-service-7d9f8b6c5d-{i:05}");
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name, "namespace": format!("team-{}", i % 50), "uid": uid(i), "resourceVersion": "123456",
            "labels": {"app": "checkout", "app.kubernetes.io/name": "checkout", "app.kubernetes.io/version": "1.4.2",
                       "pod-template-hash": "7d9f8b6c5d", "team": "payments"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-01-21T10:30:45Z", "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-service-7d9f8b6c5d", "uid": "r", "controller": true}]
        },
        "spec": {
            "nodeName": "node-a", "serviceAccountName": "checkout",
            "containers": [
                {"name": "app", "image": "registry.example.com/shop/checkout:1.4.2", "env": [{"name": "A", "value": "b"}]},
                {"name": "envoy", "image": "envoyproxy/envoy:v1.30.1"}
            ],
            "volumes": [
                {"name": "db-creds", "secret": {"secretName": "checkout-db-credentials"}},
                {"name": "config", "configMap": {"name": "checkout-config", "items": [{"key": "config.yaml", "path": "app.yaml"}]}},
                {"name": "kube-api-access-x7k2p", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
                ]}}
            ]
        },
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 0, "containerID": format!("containerd://{:064x}", i)},
            {"name": "envoy", "image": "y", "imageID": "", "ready": true, "restartCount": 0, "containerID": format!("containerd://{:064x}", i + PODS)}
        ]}
    }))
    .unwrap()
}

fn main() {
    let filter = LabelFilter(vec!["app".into(), "app.kubernetes.io/*".into()]);
    let store = PodStore::new(Duration::from_secs(60));
    // Warm the allocator and the code paths, then measure from a settled base.
    store.apply(PodMeta::from_pod(&pod(PODS + 1), &filter, store.names()).unwrap());
    let before = rss_kib();
    let heap_before = live_heap();
    for i in 0..PODS {
        // Each Pod is converted and dropped at once, as the watcher does.
        store.apply(PodMeta::from_pod(&pod(i), &filter, store.names()).unwrap());
    }
    let after = rss_kib();
    let heap = live_heap() - heap_before;

    let uids: Vec<String> = (0..PODS).map(uid).collect();
    let ids: Vec<String> = (0..PODS).map(|i| format!("{:064x}", i)).collect();
    let rounds = 100;
    let t = Instant::now();
    for r in 0..rounds {
        for (i, u) in uids.iter().enumerate() {
            let p = store.get(u).unwrap();
            black_box(p.source_of("db-creds", "password"));
            black_box(p.container_by_id(&ids[(i + r) % PODS]));
        }
    }
    let per_event = t.elapsed().as_nanos() as f64 / (rounds * PODS) as f64;
    let t = Instant::now();
    for _ in 0..rounds {
        for u in &uids {
            black_box(store.get(u));
        }
    }
    let per_get = t.elapsed().as_nanos() as f64 / (rounds * PODS) as f64;

    println!("pods in store:                    {}", store.len());
    println!(
        "heap held by the store:           {:.1} MiB",
        heap as f64 / (1024.0 * 1024.0)
    );
    println!(
        "resident memory added by store:   {:.1} MiB",
        (after.saturating_sub(before)) as f64 / 1024.0
    );
    println!("store.get(uid):                   {per_get:.0} ns");
    println!("get + source_of + container_by_id:{per_event:.0} ns");
}

//! Memory and lookup cost of the Service endpoint map.
//!
//! `cargo bench --bench service_map` loads 10,000 Services (one in ten
//! dual-stack; two ports each) and their EndpointSlices with 100,000
//! endpoints in all (10 per Service, each a pod; a dual-stack Service's
//! endpoints split between an IPv4 and an IPv6 slice; two ports per slice),
//! converting and dropping each object as the watchers do. It prints the
//! heap the map holds and the resident memory it added, the load and relist
//! times, and the mean time of a lookup by address (hit and miss), by pod,
//! of a full snapshot and of a change-log read. As root, it also loads the
//! BPF object and writes the map's snapshot into the kernel's
//! `svc_endpoints`: the time that takes (a rebuild), the kernel memory the
//! map then uses (`bpftool map show`: the map's own accounting), and what
//! another program's lookup in it costs (`lookup_svc_endpoints` of
//! `bpf/floor.bpf.c`, given the map and run with BPF_PROG_TEST_RUN, against
//! an empty program).
//! `SERVICE_MAP_SERVICES` and `SERVICE_MAP_ENDPOINTS_PER_SERVICE` change the
//! sizes.

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::time::Instant;

use config_access_collector::enrich::services::{
    kernel_addr, kernel_value, service_entries, slice_entries, EndpointKey, MapSettings,
    ObjectKind, Protocol, ServiceMap,
};
use config_access_collector::kernel::decode::{bytes_of, endpoint_key, EndpointAddr};
use config_access_collector::kernel::probe::{
    Probe, ProbeOptions, ProbeStorage, ServiceEndpointsMap,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::MapHandle;
use serde_json::json;

mod common;

use common::{live_heap, rss_kib};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Service `i`'s IPv4 cluster IP (10.96.0.0/12).
fn cluster_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_0000 + i as u32)
}

fn cluster_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, (i >> 16) as u16, i as u16)
}

/// Endpoint `n`'s pod IP (10.0.0.0/8 from 10.1.0.0).
fn pod_v4(n: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a01_0000 + n as u32)
}

fn pod_v6(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x1, 0, 0, 0, 0, (n >> 16) as u16, n as u16)
}

fn pod_uid(n: usize) -> String {
    format!("{:08x}-1b2c-4d3e-8f40-{:012x}", n, n * 7919)
}

fn dual(i: usize) -> bool {
    i.is_multiple_of(10)
}

fn service(i: usize) -> Service {
    let mut ips = vec![cluster_v4(i).to_string()];
    if dual(i) {
        ips.push(cluster_v6(i).to_string());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("checkout-{i}"), "namespace": format!("team-{}", i % 50),
            "uid": format!("svc-{i}"), "resourceVersion": "123456", "labels": {"app": "checkout"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\"}"}},
        "spec": {"type": "ClusterIP", "clusterIP": ips[0], "clusterIPs": ips, "selector": {"app": format!("checkout-{i}")},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                      {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090}]}
    }))
    .unwrap()
}

/// Service `i`'s slice of `family` with endpoints `first..first + n`.
fn slice(i: usize, family: &str, first: usize, n: usize) -> EndpointSlice {
    let endpoints: Vec<_> = (first..first + n)
        .map(|e| {
            let addr = if family == "IPv6" { pod_v6(e).to_string() } else { pod_v4(e).to_string() };
            json!({"addresses": [addr], "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": format!("node-{}", e % 100), "zone": "zone-a",
                "targetRef": {"kind": "Pod", "namespace": format!("team-{}", i % 50),
                    "name": format!("checkout-{i}-7d9f8b6c5d-{e:06}"), "uid": pod_uid(e)}})
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": family,
        "metadata": {"name": format!("checkout-{i}-{}", family.to_lowercase()), "namespace": format!("team-{}", i % 50),
            "labels": {"kubernetes.io/service-name": format!("checkout-{i}"),
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090, "protocol": "TCP"}]
    }))
    .unwrap()
}

/// Loads (or relists) every object into `map`, each converted and dropped at once.
fn load(map: &ServiceMap, services: usize, per: usize) {
    for kind in [ObjectKind::Service, ObjectKind::EndpointSlice] {
        map.begin_relist(kind);
    }
    let limit = map.max_entries();
    for i in 0..services {
        map.apply(service_entries(&service(i), map.names(), limit).unwrap());
        let first = i * per;
        let slices = if dual(i) {
            vec![
                slice(i, "IPv4", first, per / 2),
                slice(i, "IPv6", first + per / 2, per - per / 2),
            ]
        } else {
            vec![slice(i, "IPv4", first, per)]
        };
        for s in slices {
            map.apply(slice_entries(&s, map.names(), limit).unwrap());
        }
    }
    for kind in [ObjectKind::Service, ObjectKind::EndpointSlice] {
        map.end_relist(kind);
    }
}

/// Mean ns of `f` over `keys`, `rounds` times.
fn mean_ns<T>(keys: &[T], rounds: usize, mut f: impl FnMut(&T)) -> f64 {
    let t = Instant::now();
    for _ in 0..rounds {
        for k in keys {
            f(k);
        }
    }
    t.elapsed().as_nanos() as f64 / (rounds * keys.len()) as f64
}

fn main() {
    let services = env("SERVICE_MAP_SERVICES", 10_000);
    let per = env("SERVICE_MAP_ENDPOINTS_PER_SERVICE", 10);
    let map = ServiceMap::new(MapSettings::default());
    // Warm the allocator and the code paths on a small map first.
    load(&ServiceMap::new(MapSettings::default()), 10, per);
    let (rss_before, heap_before) = (rss_kib(), live_heap());
    let t = Instant::now();
    load(&map, services, per);
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let (rss_after, heap) = (rss_kib(), live_heap() - heap_before);
    let t = Instant::now();
    load(&map, services, per);
    let relist_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(
        live_heap() - heap_before,
        heap,
        "a relist of the same objects holds nothing more"
    );

    let endpoints = services * per;
    let mut hits: Vec<EndpointKey> = (0..endpoints)
        .step_by(7)
        .map(|n| {
            let ip = if dual(n / per) && n % per >= per / 2 {
                IpAddr::V6(pod_v6(n))
            } else {
                IpAddr::V4(pod_v4(n))
            };
            EndpointKey::new(ip, 8080, Protocol::Tcp)
        })
        .collect();
    hits.extend(
        (0..services).map(|i| EndpointKey::new(IpAddr::V4(cluster_v4(i)), 80, Protocol::Tcp)),
    );
    let misses: Vec<EndpointKey> = hits
        .iter()
        .map(|k| EndpointKey::new(k.ip, 81, Protocol::Tcp))
        .collect();
    assert!(
        hits.iter().all(|k| !map.lookup(k).is_empty()),
        "every hit is in the map"
    );
    let uids: Vec<String> = (0..endpoints).step_by(7).map(pod_uid).collect();
    let rounds = 20;
    let hit_ns = mean_ns(&hits, rounds, |k| {
        black_box(map.lookup(k));
    });
    let miss_ns = mean_ns(&misses, rounds, |k| {
        black_box(map.lookup(k));
    });
    let pod_ns = mean_ns(&uids, rounds, |u| {
        black_box(map.by_pod(u));
    });
    let t = Instant::now();
    let snapshot = map.entries();
    let snapshot_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    black_box(map.changes_since(snapshot.generation.saturating_sub(100)));
    let changes_us = t.elapsed().as_secs_f64() * 1e6;

    let entries = map.entry_count();
    println!(
        "{services} Services ({} dual-stack), {endpoints} endpoints, 2 ports each:",
        services.div_ceil(10)
    );
    println!(
        "  keys {} / entries {entries} / objects {}",
        map.len(),
        map.objects()
    );
    println!(
        "  heap held by the map: {:.1} MiB ({:.0} bytes per entry), RSS added {:.1} MiB",
        heap as f64 / (1024.0 * 1024.0),
        heap as f64 / entries as f64,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0
    );
    println!(
        "  load (convert + apply): {load_ms:.0} ms; relist of the same objects: {relist_ms:.0} ms"
    );
    println!("  lookup by IP:port, hit: {hit_ns:.0} ns; miss: {miss_ns:.0} ns");
    println!("  lookup by pod UID: {pod_ns:.0} ns");
    println!("  full snapshot (entries()): {snapshot_ms:.1} ms for {} keys; changes_since (last 100 generations): {changes_us:.0} us", snapshot.entries.len());
    if nix::unistd::geteuid().is_root() {
        kernel_map(&map);
    } else {
        println!("  (not root: the kernel map svc_endpoints is not measured)");
    }
}

/// Writes `map`'s snapshot into a freshly loaded `svc_endpoints` (bound:
/// the default 500,000), and prints the time and the kernel's memory.
fn kernel_map(map: &ServiceMap) {
    let options = ProbeOptions {
        correlation: false,
        service_endpoints: Some(ServiceEndpointsMap {
            max_entries: u32::try_from(map.max_entries()).unwrap(),
            pin: None,
        }),
        ..ProbeOptions::default()
    };
    let mut storage = ProbeStorage::uninit();
    let probe = Probe::load(&mut storage, &options).expect("the BPF object loads");
    let kernel = probe.service_endpoints().unwrap().expect("svc_endpoints");
    let (id, empty) = svc_map(&probe);
    let snapshot = map.entries();
    let t = Instant::now();
    for (key, target) in &snapshot.entries {
        kernel
            .put(kernel_addr(*key), &kernel_value(target))
            .expect("the kernel map takes every key");
    }
    let write_ms = t.elapsed().as_secs_f64() * 1e3;
    let (_, full) = svc_map(&probe);
    let n = snapshot.entries.len();
    println!(
        "  kernel map svc_endpoints: {n} keys written in {write_ms:.0} ms ({:.2} us each); memory {:.1} MiB ({:.0} bytes per key), {:.2} MiB when empty",
        write_ms * 1e3 / n as f64,
        full as f64 / (1024.0 * 1024.0),
        (full - empty) as f64 / n as f64,
        empty as f64 / (1024.0 * 1024.0)
    );
    let key = |addr: EndpointAddr| bytes_of(&endpoint_key(addr)).to_vec();
    let sample: Vec<EndpointAddr> = snapshot
        .entries
        .iter()
        .step_by(n / 64)
        .map(|(k, _)| kernel_addr(*k))
        .collect();
    let hits: Vec<Vec<u8>> = sample.iter().map(|a| key(*a)).collect();
    let misses: Vec<Vec<u8>> = sample
        .iter()
        .map(|a| key(EndpointAddr { port: 1, ..*a }))
        .collect();
    let (hit, miss, floor) = bpf_lookups(id, &hits, &misses);
    println!(
        "  another program's lookup (XDP, BPF_PROG_TEST_RUN, {} keys): hit {hit:.0} ns, miss {miss:.0} ns, empty program {floor:.0} ns: the lookup adds {:.0} / {:.0} ns",
        hits.len(),
        hit - floor,
        miss - floor
    );
}

/// The probe's `svc_endpoints` as `bpftool map show` reports it: its id,
/// and its memory as the kernel accounts it (bytes).
fn svc_map(probe: &Probe<'_>) -> (u32, u64) {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "name", "svc_endpoints"])
        .output()
        .expect("bpftool runs");
    let maps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool -j");
    // One match is printed as an object, several as an array.
    let maps = match maps {
        serde_json::Value::Array(all) => all,
        one => vec![one],
    };
    let ids = probe.object_ids().1;
    maps.iter()
        .find_map(|m| {
            let id = u32::try_from(m["id"].as_u64()?).ok()?;
            ids.contains(&id)
                .then(|| Some((id, m["bytes_memlock"].as_u64()?)))?
        })
        .expect("bpftool shows the probe's svc_endpoints")
}

/// Mean run time (ns) of another program's lookup in the map with id
/// `map_id`, for `hits` and `misses` (keys as the ABI lays them out), and
/// of an empty program: `floor.bpf.c`'s XDP programs, given the map and run
/// with BPF_PROG_TEST_RUN, each key `REPEAT` times.
fn bpf_lookups(map_id: u32, hits: &[Vec<u8>], misses: &[Vec<u8>]) -> (f64, f64, f64) {
    const REPEAT: u32 = 20_000;
    let map = MapHandle::from_map_id(map_id).expect("the map by id");
    let mut storage = MaybeUninit::uninit();
    let mut open = common::floor::FloorSkelBuilder::default()
        .open(&mut storage)
        .expect("open the floor object");
    open.maps
        .svc_endpoints
        .reuse_fd(map.as_fd())
        .expect("reuse the collector's map");
    let mut skel = open.load().expect("load the floor object");
    const PASS: u32 = 2;
    const DROP: u32 = 1;
    let progs = &mut skel.progs;
    (
        mean_run(&mut progs.lookup_svc_endpoints, hits, PASS, REPEAT),
        mean_run(&mut progs.lookup_svc_endpoints, misses, DROP, REPEAT),
        mean_run(&mut progs.floor_xdp, hits, PASS, REPEAT),
    )
}

/// Mean run time (ns) of `prog` over `keys` (each `repeat` times, as packet
/// data), checking its verdict.
fn mean_run(prog: &mut libbpf_rs::ProgramMut<'_>, keys: &[Vec<u8>], want: u32, repeat: u32) -> f64 {
    let total: f64 = keys
        .iter()
        .map(|key| {
            let out = prog
                .test_run(libbpf_rs::ProgramInput {
                    data_in: Some(key),
                    repeat,
                    ..Default::default()
                })
                .expect("BPF_PROG_TEST_RUN");
            assert_eq!(out.return_value, want, "XDP verdict");
            out.duration.as_nanos() as f64
        })
        .sum();
    total / keys.len() as f64
}

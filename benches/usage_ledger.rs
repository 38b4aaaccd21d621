//! Memory and cost of the usage ledger on a large node.
//!
//! `cargo bench --bench usage_ledger` records the accesses of 10,000 pods ×
//! 3 volumes × 5 keys (150,000 keys: every key read by two readers, then a
//! summary of repeated opens by the first) and prints: the heap the ledger
//! holds and the RSS it added, the mean cost of recording one event (the
//! `usage-ledger` thread's work per access), the time of one
//! `GET /v1/usage/unread` answer over the 30,000 volumes (every volume has
//! unread keys: one key in five is read), and the size and times of saving
//! and loading the state. `USAGE_PODS` changes the number of pods.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use config_access_collector::enrich::pods::NoMetadata;
use config_access_collector::enrich::volumes::{Volume, VolumeFile};
use config_access_collector::model::event::{AccessEvent, ContainerRef, ProcessInfo, Repeats};
use config_access_collector::model::volume::{FileId, VolumeType};
use config_access_collector::usage::answers;
use config_access_collector::usage::baseline::{Baseline, BaselineSettings};
use config_access_collector::usage::ledger::{Ledger, LedgerSettings, LedgerState};
use config_access_collector::usage::state;

const VOLUMES: usize = 3;
const KEYS: usize = 5;

mod common;

use common::{live_heap, rss_kib};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fn uid(i: usize) -> String {
    format!("{:08x}-1b2c-4d3e-8f40-{:012x}", i, i * 7919)
}

fn volume_name(v: usize) -> String {
    ["db-credentials", "app-settings", "tls-bundle"][v % 3].to_string()
}

fn key_name(k: usize) -> String {
    ["password", "username", "api-key", "config.yaml", "ca.crt"][k % 5].to_string()
}

/// The watched volumes: each pod's three volumes with five keys.
fn volumes(pods: usize) -> Vec<Arc<Volume>> {
    (0..pods)
        .flat_map(|p| (0..VOLUMES).map(move |v| (p, v)))
        .enumerate()
        .map(|(id, (p, v))| {
            let revision: Arc<str> = Arc::from("..2026_12_03_10_00_00.1");
            let files: HashMap<u64, VolumeFile> = (0..KEYS)
                .map(|k| {
                    let file = VolumeFile {
                        key: key_name(k),
                        revision: Some(Arc::clone(&revision)),
                    };
                    ((id * KEYS + k) as u64, file)
                })
                .collect();
            Arc::new(Volume {
                id: id as u32,
                pod_uid: uid(p),
                volume_type: VolumeType::Secret,
                name: volume_name(v),
                mount_path: format!(
                    "/var/lib/kubelet/pods/{}/volumes/kubernetes.io~secret/{}",
                    uid(p),
                    volume_name(v)
                )
                .into(),
                path_hash: String::new(),
                dir: FileId {
                    dev: 0x10,
                    ino: id as u64,
                },
                files,
                revision: Some(revision),
            })
        })
        .collect()
}

/// ns per event of the baseline's check once every access is learned (the
/// common case), and how many events it flagged. The events are this
/// process's, so their executable is known as in the pipeline.
fn baseline_cost(events: &[AccessEvent]) -> (f64, usize) {
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    let mut mine: Vec<AccessEvent> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.process.pid = std::process::id();
            e.process.command = comm.trim_end().to_string();
            e
        })
        .collect();
    let baseline = Baseline::new(BaselineSettings {
        learning: Duration::from_secs(3600),
        max_workloads: usize::MAX,
        ..BaselineSettings::default()
    });
    // Learning: every access once.
    for e in &mine {
        baseline.check(&mut e.clone());
    }
    // The fastest of 5 passes of at least 200,000 checks each.
    let rounds = 200_000_usize.div_ceil(mine.len());
    let ns = (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..rounds {
                for e in mine.iter_mut() {
                    baseline.check(black_box(e));
                }
            }
            started.elapsed().as_nanos() as f64 / (rounds * mine.len()) as f64
        })
        .fold(f64::INFINITY, f64::min);
    let flagged = mine.iter().filter(|e| e.anomaly.is_some()).count();
    (ns, flagged)
}

/// An enriched access event as the pipeline makes it.
fn event(pod: usize, v: usize, k: usize, reader: usize) -> AccessEvent {
    AccessEvent {
        event_type: "secret_access".into(),
        timestamp: "2026-12-03T16:00:00.123456789Z".into(),
        pod_uid: Some(uid(pod)),
        namespace: Some(format!("team-{}", pod % 50)),
        pod_name: Some(format!("checkout-service-7d9f8b6c5d-{pod:05}")),
        config_name: Some(volume_name(v)),
        volume_name: Some(volume_name(v)),
        volume_type: Some(VolumeType::Secret),
        key: Some(key_name(k)),
        revision: Some("..2026_12_03_10_00_00.1".into()),
        path: Some(format!("/etc/secrets/{}", key_name(k))),
        mount_path: None,
        access: "read".into(),
        result: "ok".into(),
        syscall: "openat".into(),
        process: ProcessInfo {
            pid: 4000 + reader as u32,
            tid: 4000 + reader as u32,
            command: ["app-server", "envoy"][reader % 2].into(),
            uid: 1000,
            gid: 1000,
            cgroup_id: 7000 + pod as u64,
            cgroup_v1_id: 0,
            mnt_ns: 4026531840,
            cgroup_path: None,
        },
        container: Some(ContainerRef {
            id: format!("{pod:064x}"),
            name: Some(["app", "proxy"][reader % 2].into()),
            image: Some("registry.example/app:1.4.2".into()),
        }),
        reader_pod_uid: Some(uid(pod)),
        workload: None,
        service_account: Some("default".into()),
        labels: Default::default(),
        service_account_token: false,
        source: None,
        session: None,
        foreign_read: None,
        anomaly: None,
        repeats: None,
    }
}

fn main() {
    let pods: usize = std::env::var("USAGE_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let vols = volumes(pods);
    // One key in five of every volume is read: by two readers, then again
    // by the first in a summary of repeated opens.
    let mut events = Vec::new();
    for p in 0..pods {
        for v in 0..VOLUMES {
            events.push(event(p, v, 0, 0));
            events.push(event(p, v, 0, 1));
            let mut summary = event(p, v, 0, 0);
            summary.repeats = Some(Repeats {
                count: 41,
                since: "2026-12-03T16:00:00Z".into(),
            });
            events.push(summary);
        }
    }
    let now = SystemTime::now();
    let (heap0, rss0) = (live_heap(), rss_kib());
    let mut ledger = Ledger::new(LedgerSettings::default());
    ledger.sync_volumes(&vols, now - Duration::from_secs(2 * 86400));
    let started = Instant::now();
    for ev in &events {
        ledger.record(black_box(ev), now);
    }
    let per_event = started.elapsed().as_nanos() as f64 / events.len() as f64;
    let heap = live_heap() - heap0;
    let rss = rss_kib().saturating_sub(rss0);

    let started = Instant::now();
    let unread = answers::unread(&ledger, &vols, &NoMetadata, Duration::from_secs(86400), now);
    let answer = started.elapsed();
    assert_eq!(unread.len(), pods * VOLUMES, "every volume has unread keys");

    let dir = tempfile::tempdir().unwrap();
    let path = state::state_file(dir.path());
    let started = Instant::now();
    state::save(&path, &ledger.state(now)).unwrap();
    let saved = started.elapsed();
    let size = std::fs::metadata(&path).unwrap().len();
    let started = Instant::now();
    let back: LedgerState = state::load(&path).unwrap().expect("the saved state");
    let loaded = started.elapsed();
    assert_eq!(back.keys.len(), ledger.len());

    let (baseline_ns, baseline_flagged) = baseline_cost(&events);

    println!(
        "{pods} pods x {VOLUMES} volumes x {KEYS} keys ({} keys read, {} events recorded):",
        ledger.len(),
        events.len()
    );
    println!(
        "  ledger heap {:.1} MiB, RSS added {:.1} MiB",
        heap as f64 / 1048576.0,
        rss as f64 / 1024.0
    );
    println!("  record: {per_event:.0} ns per event (the usage-ledger thread)");
    println!(
        "  baseline check: {baseline_ns:.0} ns per event of a learned access (the reader thread; {baseline_flagged} flagged)"
    );
    println!(
        "  GET /v1/usage/unread over {} volumes: {:.1} ms",
        vols.len(),
        answer.as_secs_f64() * 1e3
    );
    println!(
        "  state: {:.1} MiB, saved in {:.0} ms, loaded in {:.0} ms",
        size as f64 / 1048576.0,
        saved.as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3
    );
}

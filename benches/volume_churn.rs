//! Memory of a real collector through volume churn: leak or allocator retention?
//!
//! `sudo cargo bench --bench volume_churn` (add `--features system-allocator`
//! to run on the system allocator instead of mimalloc) runs, on a sandbox
//! kubelet root, cycles of: create 1,000 volume directories the way the
//! kubelet does (200 pods of 5 volumes: 2 Secrets and 1 projected volume on
//! a tmpfs of their own, 2 ConfigMaps as plain directories, each filled by an
//! atomic write), wait until the collector watches all of them, remove them
//! (unmount, then remove the pod directories) and wait until it watches none.
//!
//! Two collectors, one after the other:
//! - in this process (`Collector::start`), where a counting wrapper around
//!   the global allocator gives the live heap (bytes allocated and not yet
//!   freed) beside RSS; after the last cycle the allocator is asked to give
//!   back what it holds (`mi_collect(true)` on every thread's heap that
//!   is idle, or `malloc_trim(0)`), and RSS is read again;
//! - the release binary as its own process (`run`), RSS only, as an operator
//!   sees it.
//!
//! A leak shows as live heap (and RSS) growing with every cycle; retention
//! as RSS above the baseline that stops growing after the first cycle while
//! the live heap is back near its baseline.
//!
//! Environment: `CHURN_CYCLES` (default 5), `CHURN_PODS` (default 200; five
//! volumes each), `CHURN_ONLY=inproc|process`, `CHURN_LOG` (the in-process
//! collector's log filter, default `warn`; `info` logs every volume, as the
//! binary does).

use std::alloc::{GlobalAlloc, Layout};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use config_access_collector::agent::Collector;
use config_access_collector::config::{Config, KubeMode};
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::model::volume::VolumeType;

mod common;

const EXE: &str = env!("CARGO_BIN_EXE_config-access-collector");

/// Counts live heap bytes (requested sizes) of the wrapped allocator.
struct Counting<A>(A);

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the wrapped allocator unchanged, only
// counting the sizes of successful calls.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { self.0.dealloc(p, l) };
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { self.0.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        }
        q
    }
}

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOC: Counting<mimalloc::MiMalloc> = Counting(mimalloc::MiMalloc);

#[cfg(feature = "system-allocator")]
#[global_allocator]
static ALLOC: Counting<std::alloc::System> = Counting(std::alloc::System);

#[cfg(not(feature = "system-allocator"))]
const ALLOCATOR: &str = "mimalloc";
#[cfg(feature = "system-allocator")]
const ALLOCATOR: &str = "system (glibc malloc)";

/// Asks the allocator to return the free memory it holds to the kernel.
#[cfg(not(feature = "system-allocator"))]
fn release_free_memory() {
    // Part of the mimalloc library the crate links (declared by
    // libmimalloc-sys only under its `extended` feature).
    extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes no pointers and may be called at any time.
    unsafe { mi_collect(true) }
}

#[cfg(feature = "system-allocator")]
fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmRSS of process `pid` (`self` for this one), in KiB.
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One cycle's pods and their volume directories.
struct Churn {
    pods: Vec<PathBuf>,
    volumes: Vec<PathBuf>,
}

/// Creates `pods` pods of five volumes each, written the kubelet's way.
fn create(sb: &mut Sandbox, cycle: usize, pods: usize) -> Churn {
    let mut churn = Churn {
        pods: Vec::new(),
        volumes: Vec::new(),
    };
    for p in 0..pods {
        let uid = format!("c{cycle:04}{p:04}-0000-4000-8000-00000000c0de");
        for (kind, name, tmpfs) in [
            (VolumeType::Secret, "db-creds", true),
            (VolumeType::Secret, "tls", true),
            (VolumeType::Projected, "kube-api-access-x7k2p", true),
            (VolumeType::ConfigMap, "app-config", false),
            (VolumeType::ConfigMap, "feature-flags", false),
        ] {
            let dir = sb.add_volume(&uid, kind, name, tmpfs).expect("volume dir");
            sb.write_atomic(&dir, &[("key", b"value", 0o644)])
                .expect("atomic write");
            churn.volumes.push(dir);
        }
        churn.pods.push(sb.kubelet_root().join("pods").join(&uid));
    }
    churn
}

/// Unmounts and removes every volume, then the pod directories.
fn remove(sb: &mut Sandbox, churn: Churn) {
    for v in &churn.volumes {
        sb.remove_volume(v).expect("remove volume");
    }
    for p in &churn.pods {
        std::fs::remove_dir_all(p).expect("remove pod dir");
    }
}

/// Waits until `count()` is `want` (at most 120 s).
fn wait_until(what: &str, want: usize, count: impl Fn() -> usize) {
    let end = Instant::now() + Duration::from_secs(120);
    while count() != want {
        if Instant::now() > end {
            eprintln!(
                "volume_churn: timed out waiting for {what}: {} of {want}",
                count()
            );
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lets the collector's threads go idle before a measurement.
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

fn config(sb: &Sandbox) -> Config {
    Config {
        kubelet_root: sb.kubelet_root(),
        kube: KubeMode::Off,
        health_listen: "off".into(),
        api_socket: "off".into(),
        ..Config::default()
    }
}

fn in_process(cycles: usize, pods: usize) {
    // As the binary does, so that its log lines are part of what is measured.
    config_access_collector::logging::init(
        &std::env::var("CHURN_LOG").unwrap_or_else(|_| "warn".into()),
    );
    let mut sb = Sandbox::new().expect("sandbox");
    let (collector, events) =
        Collector::start_with_channel(&config(&sb)).expect("collector starts");
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    let drain = std::thread::spawn(move || {
        for _ in events {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    settle();
    let (rss0, heap0) = (rss_kib("self"), LIVE.load(Ordering::Relaxed));
    println!("\nin process, {ALLOCATOR}: {} volumes per cycle", pods * 5);
    println!("| after | RSS MiB | RSS - baseline | live heap MiB | heap - baseline |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let row = |what: &str| {
        let (rss, heap) = (rss_kib("self"), LIVE.load(Ordering::Relaxed));
        println!(
            "| {what} | {:.1} | {:+.1} | {:.2} | {:+.3} |",
            mib(rss),
            mib(rss) - mib(rss0),
            heap as f64 / 1048576.0,
            (heap - heap0) as f64 / 1048576.0
        );
    };
    row("start (baseline)");
    let registry = Arc::clone(collector.registry());
    for cycle in 1..=cycles {
        let churn = create(&mut sb, cycle, pods);
        wait_until("every volume watched", pods * 5, || {
            registry.volumes().len()
        });
        if cycle == 1 {
            settle();
            row(&format!("{} volumes watched (cycle 1)", pods * 5));
        }
        remove(&mut sb, churn);
        wait_until("no volume watched", 0, || registry.volumes().len());
        settle();
        row(&format!("churn cycle {cycle}"));
    }
    release_free_memory();
    row("allocator asked to release free memory");
    let stats = collector.stop();
    drop(registry);
    drain.join().unwrap();
    println!(
        "(events received: {}; collector stats: {stats:?})",
        received.load(Ordering::Relaxed)
    );
}

fn as_process(cycles: usize, pods: usize) {
    let mut sb = Sandbox::new().expect("sandbox");
    let mut child = Command::new(EXE)
        .arg("run")
        .arg("--kubelet-root")
        .arg(sb.kubelet_root())
        .args(["--no-kube", "--health-listen", "off", "--api-socket", "off"])
        .env("CAC_LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the collector");
    let pid = child.id().to_string();
    let watching = Arc::new(AtomicIsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let (w, s) = (Arc::clone(&watching), Arc::clone(&started));
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("watching volume") {
                w.fetch_add(1, Ordering::Relaxed);
            } else if line.contains("volume gone") {
                w.fetch_sub(1, Ordering::Relaxed);
            } else if line.contains("collector started") {
                s.store(1, Ordering::Relaxed);
            }
        }
    });
    wait_until("the collector to start", 1, || {
        started.load(Ordering::Relaxed)
    });
    settle();
    let rss0 = rss_kib(&pid);
    println!(
        "\nthe binary as its own process ({}): {} volumes per cycle",
        std::path::Path::new(EXE).display(),
        pods * 5
    );
    println!("| after | RSS MiB | RSS - baseline |");
    println!("| --- | ---: | ---: |");
    let row = |what: &str| {
        let rss = rss_kib(&pid);
        println!(
            "| {what} | {:.1} | {:+.1} |",
            mib(rss),
            mib(rss) - mib(rss0)
        );
    };
    row("start (baseline)");
    let count = || watching.load(Ordering::Relaxed).max(0) as usize;
    for cycle in 1..=cycles {
        let churn = create(&mut sb, cycle, pods);
        wait_until("every volume watched", pods * 5, count);
        if cycle == 1 {
            settle();
            row(&format!("{} volumes watched (cycle 1)", pods * 5));
        }
        remove(&mut sb, churn);
        wait_until("no volume watched", 0, count);
        settle();
        row(&format!("churn cycle {cycle}"));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let _ = reader.join();
}

fn main() {
    common::require_root("volume_churn");
    let cycles = env_usize("CHURN_CYCLES", 5);
    let pods = env_usize("CHURN_PODS", 200);
    let only = std::env::var("CHURN_ONLY").unwrap_or_default();
    if only != "process" {
        in_process(cycles, pods);
    }
    if only != "inproc" {
        as_process(cycles, pods);
    }
}

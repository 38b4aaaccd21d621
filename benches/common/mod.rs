//! Shared parts of the benchmarks: the floor's skeleton (the empty and
//! reference programs of `bpf/floor.bpf.c`), opening a sandbox volume's
//! file, and measuring the heap and RSS a structure adds.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::model::volume::VolumeType;

/// The skeleton of `bpf/floor.bpf.c`.
pub mod floor {
    #![allow(
        clippy::all,
        missing_docs,
        non_camel_case_types,
        non_upper_case_globals,
        unused_imports
    )]
    include!(concat!(env!("OUT_DIR"), "/floor.skel.rs"));
}

/// Exits with a message unless running as root (the benchmarks load BPF programs).
pub fn require_root(bench: &str) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("{bench}: run as root (it loads BPF programs)");
        std::process::exit(1);
    }
}

/// A sandbox with one Secret volume; returns it and the path of its `password` file.
pub fn secret_volume() -> (Sandbox, PathBuf) {
    let mut sb = Sandbox::new().unwrap();
    let dir = sb
        .add_volume("bench-pod", VolumeType::Secret, "creds", true)
        .unwrap();
    sb.write_atomic(&dir, &[("password", b"x", 0o644)]).unwrap();
    let file = dir.join("password");
    (sb, file)
}

/// Opens `path` `rate` times a second for `secs` seconds; returns how many.
pub fn produce(path: &Path, rate: u64, secs: f64) -> u64 {
    let total = (rate as f64 * secs) as u64;
    let start = Instant::now();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        drop(std::fs::File::open(path).expect("open"));
    }
    total
}

/// target/bench/, where the benchmarks leave their machine-readable output
/// (`scripts/plots.py` reads it).
pub fn bench_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    dir
}

/// Counts live heap bytes, to report a structure's own size beside RSS: a
/// bench that measures memory declares
/// `#[global_allocator] static ALLOC: common::Counting = common::Counting;`.
pub struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}

/// Live heap bytes (with [`Counting`] as the global allocator).
pub fn live_heap() -> isize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Resident memory of this process, KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

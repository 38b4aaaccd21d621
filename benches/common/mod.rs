//! Shared parts of the benchmarks that open a sandbox volume's file.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::model::volume::VolumeType;

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

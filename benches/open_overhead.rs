//! Cost of the kernel programs on the syscalls they watch.
//!
//! `cargo bench --bench open_overhead` (as root) prints nanoseconds per
//! operation, median of several rounds, for:
//! - openat+close of a cached file off the volume tree, with nothing attached,
//!   with the open programs attached (file on a device without volumes, and on
//!   the device holding a disk-backed ConfigMap volume, where the dentry walk runs),
//! - openat+close of a watched volume file (a matched event, read and
//!   serialized by the collector),
//! - getppid() with nothing attached and with the sampler at 1/100 and 1/1,
//!   the cost the sampler adds to every syscall.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use config_access_collector::collector::Collector;
use config_access_collector::config::Config;
use config_access_collector::probe::{Probe, ProbeOptions};
use config_access_collector::sandbox::Sandbox;
use config_access_collector::volumes::VolumeType;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

const OPS: u32 = 200_000;
const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ns_per_op(mut op: impl FnMut()) -> f64 {
    for _ in 0..OPS / 10 {
        op();
    }
    median(
        (0..ROUNDS)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..OPS {
                    op();
                }
                t.elapsed().as_nanos() as f64 / f64::from(OPS)
            })
            .collect(),
    )
}

fn open_close(path: &Path) -> f64 {
    ns_per_op(|| {
        let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).expect("open");
        drop(black_box(fd));
    })
}

fn getppid() -> f64 {
    ns_per_op(|| {
        black_box(nix::unistd::getppid());
    })
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("open_overhead: run as root (it loads BPF programs)");
        std::process::exit(1);
    }
    let mut sb = Sandbox::new().expect("sandbox");
    let cm = sb.add_volume("bench-pod", VolumeType::ConfigMap, "cfg", false).unwrap();
    sb.write_atomic(&cm, &[("app.yaml", b"x", 0o644)]).unwrap();
    // Off the volume tree: one file on the volume's device, one on another device.
    let same_dev = sb.scratch().join("plain");
    std::fs::write(&same_dev, "x").unwrap();
    let other_dir = sb.scratch().join("tmpfs");
    std::fs::create_dir_all(&other_dir).unwrap();
    sb.mount_tmpfs(&other_dir).unwrap();
    let other_dev = other_dir.join("plain");
    std::fs::write(&other_dev, "x").unwrap();
    let volume_file = cm.join("app.yaml");

    let rows: Vec<(&str, f64)> = {
        let base_open = open_close(&same_dev);
        let base_syscall = getppid();
        let (unmatched_other, unmatched_same, matched) = {
            let cfg = Config { kubelet_root: sb.kubelet_root(), syscall_sampling_rate: 0, flush_interval_ms: 10, ..Config::default() };
            let (collector, events) = Collector::start(&cfg).expect("collector");
            let sink = std::thread::spawn(move || {
                config_access_collector::output::write_json_lines(&events, std::io::sink()).unwrap()
            });
            let r = (open_close(&other_dev), open_close(&same_dev), open_close(&volume_file));
            let stats = collector.stop();
            let written = sink.join().unwrap();
            eprintln!("matched-open run: {stats:?}, {written} JSON lines written");
            r
        };
        let sampled = |every| {
            let _p = Probe::load(&ProbeOptions { sample_every: every, ..ProbeOptions::default() }).expect("probe");
            getppid()
        };
        let s100 = sampled(100);
        let s1 = sampled(1);
        vec![
            ("openat+close, nothing attached", base_open),
            ("openat+close, attached, file on another device", unmatched_other),
            ("openat+close, attached, file on a volume's device", unmatched_same),
            ("openat+close, watched volume file (event emitted)", matched),
            ("getppid, nothing attached", base_syscall),
            ("getppid, sampler 1/100", s100),
            ("getppid, sampler 1/1", s1),
        ]
    };
    println!("{:<55} {:>10} {:>10}", "operation", "ns/op", "added");
    for (i, (name, ns)) in rows.iter().enumerate() {
        let base = if i < 4 { rows[0].1 } else { rows[4].1 };
        println!("{name:<55} {ns:>10.0} {:>+10.0}", ns - base);
    }
}

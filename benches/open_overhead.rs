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

use config_access_collector::agent::Collector;
use config_access_collector::config::Config;
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::kernel::probe::{Probe, ProbeOptions, ProbeStorage};
use config_access_collector::model::volume::VolumeType;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

const OPS: u32 = 100_000;
const ROUNDS: usize = 9;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ns_per_op(mut op: impl FnMut()) -> f64 {
    for _ in 0..OPS / 10 {
        op();
    }
    let t = Instant::now();
    for _ in 0..OPS {
        op();
    }
    t.elapsed().as_nanos() as f64 / f64::from(OPS)
}

/// (run count, run time ns) of the given programs, summed; the kernel keeps
/// these while `kernel.bpf_stats_enabled` is 1.
fn bpf_run_stats(ids: &[u32]) -> (u64, u64) {
    libbpf_rs::query::ProgInfoIter::default()
        .filter(|p| ids.contains(&p.id))
        .fold((0, 0), |(c, t), p| (c + p.run_cnt, t + p.run_time_ns))
}

/// Runs `measure`, returning its result and the programs' mean ns per run meanwhile.
fn with_bpf_time(ids: &[u32], measure: impl FnOnce() -> f64) -> (f64, f64) {
    let (c0, t0) = bpf_run_stats(ids);
    let wall = measure();
    let (c1, t1) = bpf_run_stats(ids);
    (wall, (t1 - t0) as f64 / (c1 - c0).max(1) as f64)
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
    let cm = sb
        .add_volume("bench-pod", VolumeType::ConfigMap, "cfg", false)
        .unwrap();
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

    let stats_switch = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_switch).unwrap_or_else(|_| "0".into());
    std::fs::write(stats_switch, "1").expect("enable BPF run-time stats");
    // Rounds interleave the configurations so drift hits them all alike.
    let mut m: [Vec<f64>; 8] = Default::default();
    let mut b: [Vec<f64>; 8] = Default::default();
    for _ in 0..ROUNDS {
        // Let the previous round's programs and maps be freed first.
        std::thread::sleep(std::time::Duration::from_millis(200));
        m[0].push(open_close(&other_dev));
        m[1].push(open_close(&same_dev));
        m[2].push(getppid());
        {
            let cfg = Config {
                kubelet_root: sb.kubelet_root(),
                syscall_sampling_rate: 0,
                flush_interval_ms: 10,
                health_listen: "off".into(),
                api_socket: "off".into(),
                // The bench process opens the volume file itself.
                ignore_own_opens: false,
                ..Config::default()
            };
            let (collector, events) = Collector::start_with_channel(&cfg).expect("collector");
            let counted =
                std::sync::Arc::new(config_access_collector::output::OutputStats::new("bench"));
            let sink = std::thread::spawn(move || {
                config_access_collector::output::write_json_lines(
                    &events,
                    &mut std::io::sink(),
                    &counted,
                );
                counted.delivered.load(std::sync::atomic::Ordering::Relaxed)
            });
            let (progs, _) = collector.object_ids();
            for (slot, file) in [(3, &other_dev), (4, &same_dev), (5, &volume_file)] {
                let (wall, bpf) = with_bpf_time(&progs, || open_close(file));
                m[slot].push(wall);
                b[slot].push(bpf);
            }
            let stats = collector.stop();
            let written = sink.join().unwrap();
            assert!(
                stats.kernel.matched > 0,
                "no matched opens: {:?}",
                stats.kernel
            );
            assert_eq!(
                stats.kernel.matched,
                stats.kernel.delivered + stats.kernel.dropped_ringbuf
            );
            eprintln!(
                "matched-open round: kernel {:?}, {written} JSON lines",
                stats.kernel
            );
        }
        for (slot, every) in [(6, 100), (7, 1)] {
            let mut storage = ProbeStorage::uninit();

            let p = Probe::load(
                &mut storage,
                &ProbeOptions {
                    sample_every: every,
                    ..ProbeOptions::default()
                },
            )
            .expect("probe");
            let (progs, _) = p.object_ids();
            let (wall, bpf) = with_bpf_time(&progs, getppid);
            m[slot].push(wall);
            b[slot].push(bpf);
        }
    }
    let _ = std::fs::write(stats_switch, stats_before.trim());
    let m: Vec<f64> = m.into_iter().map(median).collect();
    let b: Vec<f64> = b
        .into_iter()
        .map(|v| if v.is_empty() { f64::NAN } else { median(v) })
        .collect();
    let rows = [
        ("openat+close, nothing attached, tmpfs file", 0, 0),
        ("openat+close, nothing attached, disk file", 1, 1),
        ("openat+close, attached, tmpfs without volumes", 3, 0),
        ("openat+close, attached, disk holding a volume", 4, 1),
        ("openat+close, watched volume file (event emitted)", 5, 1),
        ("getppid, nothing attached", 2, 2),
        ("getppid, sampler 1/100", 6, 2),
        ("getppid, sampler 1/1", 7, 2),
    ];
    println!(
        "{:<52} {:>8} {:>8} {:>12}",
        "operation (median of rounds)", "ns/op", "added", "BPF ns/run"
    );
    for (name, i, base) in rows {
        let bpf = if b[i].is_nan() {
            "-".to_string()
        } else {
            format!("{:.0}", b[i])
        };
        println!(
            "{name:<52} {:>8.0} {:>+8.0} {bpf:>12}",
            m[i],
            m[i] - m[base]
        );
    }
}

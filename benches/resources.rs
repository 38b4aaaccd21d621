//! Collector resources and loss-free rate with every output on.
//!
//! `sudo cargo bench --bench resources` runs the real binary as its own
//! process (JSON lines to /dev/null, OTLP metrics every 10 s and one OTLP
//! log record per access over gRPC to a rotel collector with a black-hole
//! exporter, Prometheus `/metrics` on) against a sandbox volume, opens the
//! volume's file from this process at fixed rates, and prints:
//! - RSS idle and at 10k accesses/s; CPU (% of one core) idle, at 1k and 10k/s;
//! - the highest steady rate without loss with JSON + OTLP metrics, and with
//!   OTLP logs on as well (loss = kernel ring drops + any output's shedding,
//!   or an open not counted in `kernel_monitor_access_total`): with the
//!   default config, where one process's repeated opens of the file are
//!   counted in the kernel and reported in summaries (from 2 threads, up to
//!   1M/s), and with `repeat_window_ms: 0`, every open an event.
//!
//! The CPU and RSS rows run with `repeat_window_ms: 0` (every access an
//! event), the load they are meant to show.
//!
//! rotel comes from PyPI (`scripts/dev.sh test` installs it into
//! target/pyvenv); set ROTEL_AGENT to use another binary. The receiver's
//! own CPU (it shares the 2 cores) is printed beside each ramp step.
//! `RESOURCES_EXE` runs another build of the collector (to compare two
//! trees in interleaved runs); `RESOURCES_ONLY=ramps` skips the CPU and RSS
//! rows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use config_access_collector::demo::sandbox::Sandbox;

mod common;
use common::produce;

const EXE: &str = env!("CARGO_BIN_EXE_config-access-collector");

/// The collector binary: this tree's, or `RESOURCES_EXE`.
fn exe() -> PathBuf {
    std::env::var_os("RESOURCES_EXE").map_or_else(|| PathBuf::from(EXE), PathBuf::from)
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn rotel() -> PathBuf {
    if let Some(p) = std::env::var_os("ROTEL_AGENT") {
        return PathBuf::from(p);
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            eprintln!("resources: no rotel-agent under {}; run `bash scripts/dev.sh test` or set ROTEL_AGENT", lib.display());
            std::process::exit(1)
        })
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// (CPU seconds used, RSS in KiB, peak RSS in KiB) of `pid`.
fn usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (cpu, kib("VmRSS:"), kib("VmHWM:"))
}

/// Sum of every sample of `name` in Prometheus text whose labels contain `filter`.
fn total(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(filter))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn scrape(addr: SocketAddr) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::get(format!("http://{addr}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// Accesses counted so far (events of one open, and the opens in summaries
/// of repeats), and events lost: kernel ring drops plus every output's
/// shedding. Denied opens the collector could not place are left out: the
/// bench's opens are never denied, so those come from other processes on
/// the machine (another test run, say), not from the load measured here.
fn lost(addr: SocketAddr) -> (f64, f64) {
    let t = scrape(addr);
    let counted = total(&t, "kernel_monitor_access_total", "");
    let dropped = total(&t, "kernel_monitor_events_dropped_total", "");
    let others = total(
        &t,
        "kernel_monitor_events_dropped_total",
        "reason=\"denied_unresolved\"",
    );
    let lost = dropped - others + total(&t, "kernel_monitor_output_shed_total", "");
    (counted, lost)
}

struct Running {
    proc: Proc,
    metrics: SocketAddr,
}

/// The collector with every open an event of its own (`repeat_window_ms: 0`),
/// or with repeats counted in the kernel (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeats {
    Default,
    EveryOpen,
}

fn start_collector(sb: &Sandbox, otlp: SocketAddr, logs: bool, repeats: Repeats) -> Running {
    let metrics = free_addr();
    let mut cmd = Command::new(exe());
    if repeats == Repeats::EveryOpen {
        let path = sb.scratch().join("every-open.yaml");
        std::fs::write(&path, "repeat_window_ms: 0\n").expect("write the config file");
        cmd.env("CAC_CONFIG", path);
    }
    cmd.arg("run")
        .arg("--kubelet-root")
        .arg(sb.kubelet_root())
        .args(["--no-kube", "--health-listen", "off", "--api-socket", "off"])
        .arg("--otlp-endpoint")
        .arg(format!("http://{otlp}"))
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "10000")
        .env("CAC_LOG_LEVEL", "warn")
        .stdout(Stdio::null());
    if logs {
        cmd.arg("--otlp-logs");
    }
    let proc = Proc(cmd.spawn().expect("start the collector"));
    let end = Instant::now() + Duration::from_secs(20);
    while !scrape(metrics).contains("kernel_monitor_watched_volumes") {
        assert!(Instant::now() < end, "collector did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    Running { proc, metrics }
}

/// Opens `file` at `rate` for `secs` from `threads` threads (one process:
/// the same file by the same process, as an application's workers do);
/// returns the opens and the rate reached.
fn produce_from(file: &Path, rate: u64, secs: f64, threads: u64) -> (u64, f64) {
    let t0 = Instant::now();
    let opens = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| produce(file, rate / threads, secs)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum::<u64>()
    });
    (opens, opens as f64 / t0.elapsed().as_secs_f64())
}

/// How a ramp runs: producer threads, and how long to wait for the last
/// counts (summaries come within two windows of the last open).
#[derive(Debug, Clone, Copy)]
struct Load {
    threads: u64,
    settle: Duration,
}

/// Highest rate of `rates` (3 s each) with nothing lost: every open counted
/// in `kernel_monitor_access_total` (events, and opens in summaries), no
/// event dropped or shed, and the rate reached within 5%; `receiver`'s CPU
/// is printed too.
fn ramp(c: &Running, file: &Path, rates: &[u64], load: Load, receiver: u32) -> u64 {
    let mut best = 0;
    for &rate in rates {
        let (c0, l0) = lost(c.metrics);
        let (rx0, t0) = (usage(receiver).0, Instant::now());
        let (opens, reached) = produce_from(file, rate, 3.0, load.threads);
        std::thread::sleep(load.settle);
        let rx = (usage(receiver).0 - rx0) / t0.elapsed().as_secs_f64() * 100.0;
        let (c1, l1) = lost(c.metrics);
        let (counted, lost) = (c1 - c0, l1 - l0);
        let opens = opens as f64;
        println!(
            "  {rate:>7}/s: reached {reached:>8.0}/s, opens {opens:>8}, counted {counted:>8}, lost {lost:>7}, receiver CPU {rx:>5.1}%"
        );
        if lost == 0.0 && counted == opens && reached >= 0.95 * rate as f64 {
            best = rate;
        } else {
            break;
        }
    }
    best
}

fn main() {
    common::require_root("resources");
    let (sb, file) = common::secret_volume();
    let otlp = free_addr();
    let rotel = Proc(
        Command::new(rotel())
            .args(["start", "--otlp-grpc-endpoint"])
            .arg(otlp.to_string())
            .arg("--otlp-http-endpoint")
            .arg(free_addr().to_string())
            .args(["--exporter", "blackhole"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rotel"),
    );

    let receiver = rotel.0.id();
    if std::env::var("RESOURCES_ONLY").as_deref() != Ok("ramps") {
        resources(&sb, &file, otlp);
    }

    let aggregated = Load {
        threads: 2,
        settle: Duration::from_millis(3500),
    };
    let rates = [100_000, 250_000, 500_000, 750_000, 1_000_000];
    println!(
        "ramp, default config (repeats counted in the kernel), JSON + OTLP metrics, 2 threads:"
    );
    let c = start_collector(&sb, otlp, false, Repeats::Default);
    let best_default = ramp(&c, &file, &rates, aggregated, receiver);
    drop(c);
    println!("ramp, default config, JSON + OTLP metrics + OTLP logs, 2 threads:");
    let c = start_collector(&sb, otlp, true, Repeats::Default);
    let best_default_logs = ramp(&c, &file, &rates, aggregated, receiver);
    drop(c);

    let every = Load {
        threads: 1,
        settle: Duration::from_secs(2),
    };
    let rates = [25_000, 50_000, 100_000, 150_000, 200_000, 250_000, 300_000];
    println!("ramp, every open an event (repeat_window_ms 0), JSON + OTLP metrics:");
    let c = start_collector(&sb, otlp, false, Repeats::EveryOpen);
    let best = ramp(&c, &file, &rates, every, receiver);
    drop(c);
    println!("ramp, every open an event, JSON + OTLP metrics + OTLP logs:");
    let c = start_collector(&sb, otlp, true, Repeats::EveryOpen);
    let logs_rates = [
        5_000, 10_000, 15_000, 25_000, 50_000, 100_000, 150_000, 200_000,
    ];
    let best_logs = ramp(&c, &file, &logs_rates, every, receiver);
    drop(c);
    println!(
        "highest steady rate without loss, default config: {best_default}/s (JSON + OTLP metrics), \
         {best_default_logs}/s (with OTLP logs too)"
    );
    println!(
        "highest steady rate without loss, every open an event: {best}/s (JSON + OTLP metrics), \
         {best_logs}/s (with OTLP logs too)"
    );
}

/// CPU and RSS idle and at fixed rates, with and without OTLP logs.
fn resources(sb: &Sandbox, file: &Path, otlp: SocketAddr) {
    let c = start_collector(sb, otlp, true, Repeats::EveryOpen);
    let pid = c.proc.0.id();
    let measure = |label: &str, rate: u64| {
        let secs = 10.0;
        let (cpu0, _, _) = usage(pid);
        let t0 = Instant::now();
        if rate == 0 {
            std::thread::sleep(Duration::from_secs_f64(secs));
        } else {
            produce(file, rate, secs);
        }
        let (cpu1, rss, peak) = usage(pid);
        let pct = (cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
        println!(
            "{label:<10} CPU {pct:>5.2}% of one core, RSS {:>5.1} MiB (peak {:>5.1} MiB)",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    };
    println!("collector with JSON + OTLP metrics (10 s) + OTLP logs (gRPC) + /metrics:");
    std::thread::sleep(Duration::from_secs(3));
    measure("idle", 0);
    measure("1k/s", 1_000);
    measure("10k/s", 10_000);
    let (_, l) = lost(c.metrics);
    println!("lost during the runs above: {l}");
    drop(c);
    println!("collector with JSON + OTLP metrics (10 s) + /metrics, no OTLP logs:");
    let c = start_collector(sb, otlp, false, Repeats::EveryOpen);
    let pid = c.proc.0.id();
    std::thread::sleep(Duration::from_secs(3));
    let measure = |label: &str, rate: u64| {
        let (cpu0, _, _) = usage(pid);
        let t0 = Instant::now();
        produce(file, rate, 10.0);
        let (cpu1, rss, _) = usage(pid);
        let pct = (cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
        println!(
            "{label:<10} CPU {pct:>5.2}% of one core, RSS {:>5.1} MiB",
            rss as f64 / 1024.0
        );
    };
    measure("1k/s", 1_000);
    measure("10k/s", 10_000);
    drop(c);
}

//! End-to-end latency and loss-free throughput of the pipeline.
//!
//! `sudo cargo bench --bench e2e_latency` opens a file of a watched volume at
//! fixed rates with the default configuration (adaptive wakeups,
//! `flush_interval_ms` 50 as the safety net, no sampler) but
//! `repeat_window_ms: 0`, so that every open is an event of its own, and, for every
//! event, measures the time from the kernel's timestamp (syscall exit) to
//! the moment its JSON line has been written (to a sink). It prints
//! p50/p90/p99/max latency at 1k and 10k opens/s (`LATENCY_SECS` seconds
//! each, default 5) and writes every sample to `target/bench/e2e_latency.json`
//! (`scripts/plots.py` draws them); then it ramps the rate and reports the
//! highest one at which nothing was lost (kernel drops + output shedding).
//! JSON output only; `benches/resources.rs` measures the collector with OTLP
//! export on as well.

use std::io::Write;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use config_access_collector::agent::Collector;
use config_access_collector::config::{Config, KubeMode};
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::model::event::AccessEvent;

mod common;
use common::produce;

/// Consumes events like the JSON writer does; returns per-event latencies.
fn consume(events: &Receiver<std::sync::Arc<AccessEvent>>, stop_after: Duration) -> Vec<Duration> {
    let mut sink = std::io::sink();
    let mut lat = Vec::new();
    let mut line = Vec::with_capacity(1024);
    while let Ok(ev) = events.recv_timeout(stop_after) {
        line.clear();
        serde_json::to_writer(&mut line, &*ev).unwrap();
        line.push(b'\n');
        sink.write_all(&line).unwrap();
        let ts = chrono::DateTime::parse_from_rfc3339(&ev.timestamp).unwrap();
        let now = chrono::Utc::now();
        lat.push(
            (now - ts.with_timezone(&chrono::Utc))
                .to_std()
                .unwrap_or_default(),
        );
    }
    lat
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One run at `rate`: (opens, events, lost, sorted latencies).
fn run(
    sb: &Sandbox,
    file: &std::path::Path,
    rate: u64,
    secs: f64,
) -> (u64, usize, u64, Vec<Duration>) {
    let cfg = Config {
        kubelet_root: sb.kubelet_root(),
        kube: KubeMode::Off,
        health_listen: "off".into(),
        api_socket: "off".into(),
        // The bench process opens the volume file itself.
        ignore_own_opens: false,
        // Every open an event: with the default window the loop's opens
        // after the first are summaries, a window later by design.
        repeat_window_ms: 0,
        ..Config::default()
    };
    let (collector, events) = Collector::start_with_channel(&cfg).expect("collector");
    let consumer = std::thread::spawn(move || consume(&events, Duration::from_secs(2)));
    let opens = produce(file, rate, secs);
    std::thread::sleep(Duration::from_millis(cfg.flush_interval_ms * 2 + 100));
    let stats = collector.stop();
    let mut lat = consumer.join().unwrap();
    lat.sort();
    let lost = stats.kernel.dropped_ringbuf + stats.outputs_lost;
    (opens, lat.len(), lost, lat)
}

fn main() {
    common::require_root("e2e_latency");
    let (sb, file) = common::secret_volume();
    let secs: f64 = std::env::var("LATENCY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let defaults = Config::default();
    let started = chrono::Utc::now();

    println!(
        "default config but repeat_window_ms 0 (flush_interval_ms {}, syscall_sampling_rate {}), {secs} s per rate:",
        defaults.flush_interval_ms, defaults.syscall_sampling_rate
    );
    println!(
        "{:<14} {:>8} {:>8} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "rate", "opens", "events", "lost", "p50", "p90", "p99", "max"
    );
    let mut runs = Vec::new();
    for rate in [1_000, 10_000] {
        let (o, e, l, lat) = run(&sb, &file, rate, secs);
        let [p50, p90, p99] = [0.5, 0.9, 0.99].map(|p| pct(&lat, p));
        let max = lat.last().copied().unwrap_or_default();
        println!(
            "{:<14} {o:>8} {e:>8} {l:>6} {p50:>10.2?} {p90:>10.2?} {p99:>10.2?} {max:>10.2?}",
            format!("{rate}/s")
        );
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        runs.push(serde_json::json!({
            "rate": rate,
            "opens": o,
            "events": e,
            "lost": l,
            "p50_us": us(p50),
            "p90_us": us(p90),
            "p99_us": us(p99),
            "max_us": us(max),
            "samples_us": lat.iter().map(|d| (us(*d) * 10.0).round() / 10.0).collect::<Vec<_>>(),
        }));
    }
    let out = common::bench_dir().join("e2e_latency.json");
    let doc = serde_json::json!({
        "bench": "e2e_latency",
        "started": started.to_rfc3339(),
        "flush_interval_ms": defaults.flush_interval_ms,
        "seconds_per_rate": secs,
        "runs": runs,
    });
    std::fs::write(&out, serde_json::to_string(&doc).unwrap()).expect("write results");
    println!("samples: {}", out.display());

    let mut best = 0;
    for rate in [25_000, 50_000, 100_000, 150_000, 200_000, 300_000] {
        let (o, e, l, lat) = run(&sb, &file, rate, 2.0);
        println!(
            "{:<14} {o:>8} {e:>8} {l:>6} {:>10.2?} {:>10} {:>10.2?}",
            format!("ramp {rate}/s"),
            pct(&lat, 0.5),
            "",
            pct(&lat, 0.99)
        );
        if l == 0 && e as u64 >= o {
            best = rate;
        } else {
            break;
        }
    }
    println!("highest steady rate without loss (JSON on, every open an event): {best}/s");
}

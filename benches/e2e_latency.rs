//! End-to-end latency and loss-free throughput of the pipeline.
//!
//! `sudo cargo bench --bench e2e_latency` opens a file of a watched volume at
//! fixed rates and, for every event, measures the time from the kernel's
//! timestamp (syscall exit) to the moment its JSON line has been written
//! (to a sink). It prints p50/p99 latency at 1k and 10k opens/s, then ramps
//! the rate and reports the highest one at which nothing was lost (kernel
//! drops + output shedding). JSON output only; `benches/resources.rs`
//! measures the collector with OTLP export on as well.

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

/// One run at `rate`: (opens, events, lost, p50, p99).
fn run(
    sb: &Sandbox,
    file: &std::path::Path,
    flush_ms: u64,
    rate: u64,
    secs: f64,
) -> (u64, usize, u64, Duration, Duration) {
    let cfg = Config {
        kubelet_root: sb.kubelet_root(),
        flush_interval_ms: flush_ms,
        syscall_sampling_rate: 100,
        kube: KubeMode::Off,
        health_listen: "off".into(),
        api_socket: "off".into(),
        // The bench process opens the volume file itself.
        ignore_own_opens: false,
        ..Config::default()
    };
    let (collector, events) = Collector::start_with_channel(&cfg).expect("collector");
    let consumer = std::thread::spawn(move || consume(&events, Duration::from_secs(2)));
    let opens = produce(file, rate, secs);
    std::thread::sleep(Duration::from_millis(flush_ms * 2 + 100));
    let stats = collector.stop();
    let mut lat = consumer.join().unwrap();
    lat.sort();
    let lost = stats.kernel.dropped_ringbuf + stats.outputs_lost;
    (opens, lat.len(), lost, pct(&lat, 0.5), pct(&lat, 0.99))
}

fn main() {
    common::require_root("e2e_latency");
    let (sb, file) = common::secret_volume();

    println!(
        "{:<34} {:>8} {:>8} {:>6} {:>10} {:>10}",
        "run", "opens", "events", "lost", "p50", "p99"
    );
    for flush in [50, 5] {
        for rate in [1_000, 10_000] {
            let (o, e, l, p50, p99) = run(&sb, &file, flush, rate, 3.0);
            println!(
                "{:<34} {o:>8} {e:>8} {l:>6} {:>10.2?} {:>10.2?}",
                format!("{rate}/s, flush_interval_ms {flush}"),
                p50,
                p99
            );
        }
    }
    let mut best = 0;
    for rate in [25_000, 50_000, 100_000, 150_000, 200_000, 300_000] {
        let (o, e, l, p50, p99) = run(&sb, &file, 50, rate, 2.0);
        println!(
            "{:<34} {o:>8} {e:>8} {l:>6} {:>10.2?} {:>10.2?}",
            format!("ramp {rate}/s"),
            p50,
            p99
        );
        if l == 0 && e as u64 >= o {
            best = rate;
        } else {
            break;
        }
    }
    println!("highest steady rate without loss (JSON on, flush 50 ms): {best}/s");
}

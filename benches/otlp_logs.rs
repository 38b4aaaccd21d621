//! The OTLP log output alone: its cost per record and its throughput.
//!
//! `cargo bench --bench otlp_logs` starts a rotel collector with a
//! black-hole exporter (as `resources` does), starts the OTLP log output
//! the way the agent does (the same exporter settings, queue and batch
//! size) and pushes `OTLP_LOGS_N` (default 200,000) fully enriched access
//! events into its queue as fast as it takes them, for `OTLP_LOGS_ROUNDS`
//! (default 5) rounds per protocol (`OTLP_LOGS_PROTOCOLS`, default
//! `grpc,http`). It prints, per round, the records per second the output
//! sustained, the CPU time per record of this process (every thread, and
//! each thread of the output) and of the receiver, and the medians. First it
//! times the encoder alone (`LogsRequest::push` and `take`, on this thread,
//! in batches of 512), which other load on the machine disturbs much less.
//! No BPF, no root.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config_access_collector::model::event::AccessEvent;
use config_access_collector::model::settings::OtlpProtocol;
use config_access_collector::output::otlp_logs::EventLogOutput;
use config_access_collector::output::otlp_proto::LogsRequest;
use config_access_collector::output::telemetry::{OtlpSettings, Telemetry, TelemetrySettings};
use config_access_collector::output::OutputStats;

/// The collector's allocator (src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An access as enrichment makes it in a cluster: every field set.
const EVENT: &str = r#"{"event_type":"secret_access","timestamp":"2026-11-21T17:04:01.179182086Z",
"pod_uid":"7f0c3a52-93d4-4b8e-9a61-2f5c8d1e0b47","namespace":"payments","pod_name":"payments-api-0",
"config_name":"db-credentials","volume_name":"db-creds","volume_type":"secret","key":"password",
"path":"/etc/db/password",
"mount_path":"/var/lib/kubelet/pods/7f0c3a52-93d4-4b8e-9a61-2f5c8d1e0b47/volumes/kubernetes.io~secret/db-creds",
"access":"read","result":"ok","syscall":"openat","process":{"pid":48213,"tid":48213,
"command":"payments-api","uid":1000,"gid":1000,"cgroup_id":18374,"cgroup_v1_id":0,"mnt_ns":4026532871,
"cgroup_path":"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7f0c3a52_93d4_4b8e_9a61_2f5c8d1e0b47.slice/cri-containerd-0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9.scope"},
"container":{"id":"0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9","name":"app",
"image":"registry.example.com/payments/api:1.42.0"},"reader_pod_uid":"7f0c3a52-93d4-4b8e-9a61-2f5c8d1e0b47",
"workload":{"kind":"StatefulSet","name":"payments-api"},"service_account":"payments",
"labels":{"app":"payments-api","team":"payments"},
"source":{"kind":"Secret","name":"db-credentials","key":"password"},"service_account_token":false}"#;

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
            eprintln!(
                "otlp_logs: no rotel-agent under {}; run `bash scripts/dev.sh test` or set ROTEL_AGENT",
                lib.display()
            );
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

/// CPU seconds of each thread of this process, by thread name.
fn thread_cpu() -> BTreeMap<String, f64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks;
        *out.entry(name).or_insert(0.0) += cpu;
    }
    out
}

/// CPU seconds of process `pid` so far.
fn pid_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks
}

/// CPU seconds of this process so far (every thread, gone ones too).
fn process_cpu() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// CPU seconds of the calling thread so far.
fn this_thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// CPU time per record of encoding `n` copies of `ev` into requests of 512
/// records, in nanoseconds.
fn encoder_alone(ev: &AccessEvent, n: usize) -> f64 {
    let resource = opentelemetry_sdk::Resource::builder().build();
    let mut req = LogsRequest::new(&resource, "config-access-collector", "0");
    let t0 = this_thread_cpu();
    for _ in 0..n {
        req.push(ev);
        if req.len() == 512 {
            std::hint::black_box(req.take());
        }
    }
    std::hint::black_box(req.take());
    (this_thread_cpu() - t0) / n as f64 * 1e9
}

struct Round {
    rate: f64,
    us_per_record: f64,
    /// CPU of the receiver per record.
    rotel_us: f64,
    threads: BTreeMap<String, f64>,
}

fn round(telemetry: &Telemetry, n: usize, ev: &Arc<AccessEvent>, rotel: u32) -> Round {
    let exporter = telemetry.log_exporter().unwrap().unwrap();
    let stats = Arc::new(OutputStats::new("otlp_logs"));
    // The agent's default queue and batch size.
    let (tx, rx) = std::sync::mpsc::sync_channel(4096);
    let out =
        EventLogOutput::spawn(exporter, telemetry.resource(), rx, 512, Arc::clone(&stats)).unwrap();
    let before = thread_cpu();
    let cpu0 = process_cpu();
    let rotel0 = pid_cpu(rotel);
    let t0 = Instant::now();
    // The worker's threads exist now; their CPU is read before they end.
    let mut during = BTreeMap::new();
    for i in 0..n {
        tx.send(Arc::clone(ev)).unwrap();
        if i == n - 1 {
            during = thread_cpu();
        }
    }
    drop(tx);
    out.finish(Instant::now() + Duration::from_secs(60));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu0;
    let rotel_cpu = pid_cpu(rotel) - rotel0;
    let delivered = stats.delivered.load(Ordering::Relaxed);
    assert_eq!(delivered, n as u64, "every record delivered: {stats:?}");
    let threads = during
        .into_iter()
        .map(|(k, v)| {
            let per = (v - before.get(&k).copied().unwrap_or(0.0)) / n as f64 * 1e6;
            (k, per)
        })
        .filter(|(_, v)| *v > 0.05)
        .collect();
    Round {
        rate: n as f64 / wall,
        us_per_record: cpu / n as f64 * 1e6,
        rotel_us: rotel_cpu / n as f64 * 1e6,
        threads,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let n: usize = env("OTLP_LOGS_N", "200000").parse().unwrap();
    let rounds: usize = env("OTLP_LOGS_ROUNDS", "5").parse().unwrap();
    let protocols = env("OTLP_LOGS_PROTOCOLS", "grpc,http");
    let ev: Arc<AccessEvent> = Arc::new(serde_json::from_str(EVENT).unwrap());

    let (grpc, http) = (free_addr(), free_addr());
    let rotel_proc = Proc(
        Command::new(rotel())
            .args(["start", "--otlp-grpc-endpoint"])
            .arg(grpc.to_string())
            .arg("--otlp-http-endpoint")
            .arg(http.to_string())
            .args(["--exporter", "blackhole"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rotel"),
    );
    let rotel_pid = rotel_proc.0.id();
    let up = Instant::now() + Duration::from_secs(10);
    while [grpc, http]
        .iter()
        .any(|a| std::net::TcpStream::connect(a).is_err())
    {
        assert!(Instant::now() < up, "rotel did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }

    let encoder: Vec<f64> = (0..=rounds)
        .map(|_| encoder_alone(&ev, n))
        .skip(1)
        .collect();
    println!(
        "encoder alone: {:.0} ns CPU/record (median of {rounds} rounds of {n}; {:.0} to {:.0})",
        median(encoder.clone()),
        encoder.iter().copied().fold(f64::INFINITY, f64::min),
        encoder.iter().copied().fold(0.0, f64::max),
    );
    println!("OTLP log output, {n} records per round, {rounds} rounds:");
    for p in protocols.split(',') {
        let (protocol, addr) = match p {
            "grpc" => (OtlpProtocol::Grpc, grpc),
            "http" => (OtlpProtocol::HttpProtobuf, http),
            other => panic!("OTLP_LOGS_PROTOCOLS: unknown protocol {other}"),
        };
        let telemetry = Telemetry::start(&TelemetrySettings {
            otlp: Some(OtlpSettings {
                endpoint: format!("http://{addr}"),
                protocol,
                headers: Default::default(),
                timeout: Duration::from_secs(10),
            }),
            otlp_logs: true,
            ..Default::default()
        })
        .unwrap();
        // One round to warm up connections and allocator.
        round(&telemetry, n / 10, &ev, rotel_pid);
        let mut rates = Vec::new();
        let mut costs = Vec::new();
        for r in 0..rounds {
            let res = round(&telemetry, n, &ev, rotel_pid);
            let threads: Vec<String> = res
                .threads
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            println!(
                "  {p:<4} round {r}: {:>8.0} records/s, {:>6.2} us CPU/record ({}), receiver {:.2} us/record",
                res.rate,
                res.us_per_record,
                threads.join(", "),
                res.rotel_us
            );
            rates.push(res.rate);
            costs.push(res.us_per_record);
        }
        println!(
            "{p:<4} median: {:>8.0} records/s, {:>6.2} us CPU/record",
            median(rates),
            median(costs)
        );
        telemetry.shutdown(Duration::from_secs(1));
    }
}

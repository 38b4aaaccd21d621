//! Cost of the kernel programs on the syscalls they watch, side by side with
//! the floor and with the tools a user would pick instead.
//!
//! `sudo cargo bench --bench open_overhead` runs, in every round and in an
//! order that rotates from round to round, each configuration once:
//! - nothing attached;
//! - the floor: empty programs on exactly the hooks the collector needs for
//!   open detection (`bpf/floor.bpf.c`, tracepoints
//!   `syscalls/sys_exit_{openat,openat2,open,creat,open_by_handle_at}`),
//!   and the same plus, for the optional sampler, an empty program on every
//!   syscall as `tp_btf/sys_enter` (the sampler's hook), `raw_tp/sys_enter`
//!   and the classic tracepoint `raw_syscalls/sys_enter`, or on a timer
//!   instead (a cpu-clock perf event, 1 kHz per CPU) (getppid only);
//! - the collector with the default configuration (in this process, JSON
//!   lines written to a sink; the loop's matched opens after the first are
//!   repeats, counted in the kernel), and with `repeat_window_ms: 0` (every
//!   matched open emitted; matched opens only);
//! - the collector's programs with the optional sampler at 1/100 and 1/1
//!   (getppid only);
//! - the reference reject path (`reject_*` in `bpf/floor.bpf.c`: task, fd
//!   slot, file device against a global array; unmatched opens only), the
//!   least a real reject path can cost;
//! - libbpf-tools `opensnoop -p <unused pid>` and a bpftrace one-liner on
//!   `sys_enter_openat` that keeps paths under the kubelet's pod directory.
//!
//! Each configuration runs: getppid() (the per-syscall tax), openat+close of
//! a cached file on a tmpfs without volumes and on the disk filesystem that
//! holds a disk-backed ConfigMap volume (unmatched opens), and of a file of
//! that volume (a matched open: an event, or a counted repeat). getppid is
//! timed in `SYSCALL_SLICES` slices and its ns/op is the fastest slice's: a
//! pure per-call cost only ever grows when the loop is preempted (by the
//! collector's threads, by anything else on the 2 cores), and the fastest
//! slice leaves those out, so a few ns of tax stand out from the noise.
//! It prints medians over the rounds
//! (`OVERHEAD_ROUNDS`, default 15) of ns/op, of the per-round differences
//! to nothing attached and to the floor, and of the BPF run time per
//! operation (`kernel.bpf_stats_enabled=1`), also less the run time of an
//! empty program (the statistics' own cost), and checks the targets.
//! Machine-readable results go to `target/bench/open_overhead.json`
//! (`scripts/plots.py` draws them). `OVERHEAD_PEERS=off` leaves the peers out.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config_access_collector::agent::Collector;
use config_access_collector::config::{Config, KubeMode};
use config_access_collector::demo::sandbox::Sandbox;
use config_access_collector::kernel::probe::{Probe, ProbeOptions, ProbeStorage};
use config_access_collector::model::volume::VolumeType;
use config_access_collector::output::{write_json_lines, OutputStats};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

mod common;

/// Timed operations per measurement (after a tenth as many to warm up).
const OPEN_OPS: u32 = 50_000;
const SYSCALL_OPS: u32 = 500_000;
/// Slices of a getppid measurement (see the module docs).
const SYSCALL_SLICES: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Getppid,
    OpenTmpfs,
    OpenDisk,
    OpenMatched,
}

impl Op {
    const ALL: [Op; 4] = [Op::Getppid, Op::OpenTmpfs, Op::OpenDisk, Op::OpenMatched];

    fn name(self) -> &'static str {
        match self {
            Op::Getppid => "getppid",
            Op::OpenTmpfs => "open, tmpfs without volumes",
            Op::OpenDisk => "open, disk fs holding a volume",
            Op::OpenMatched => "open, watched volume file",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Op::Getppid => "getppid",
            Op::OpenTmpfs => "open_tmpfs",
            Op::OpenDisk => "open_disk",
            Op::OpenMatched => "open_matched",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    Nothing,
    Floor,
    FloorSysEnter,
    FloorRawTp,
    FloorTpSysEnter,
    FloorPerfEvent,
    Reject,
    Collector,
    CollectorEveryOpen,
    Sampler100,
    Sampler1,
    Opensnoop,
    Bpftrace,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Nothing => "nothing attached",
            Setup::Floor => "floor (empty sys_exit_open*)",
            Setup::FloorSysEnter => "floor + empty tp_btf/sys_enter",
            Setup::FloorRawTp => "floor + empty raw_tp/sys_enter",
            Setup::FloorTpSysEnter => "floor + empty tp raw_syscalls/sys_enter",
            Setup::FloorPerfEvent => "floor + empty perf_event 1 kHz/CPU",
            Setup::Reject => "reference reject path",
            Setup::Collector => "collector, default config",
            Setup::CollectorEveryOpen => "collector, repeat_window_ms 0",
            Setup::Sampler100 => "collector progs, sampler 1/100",
            Setup::Sampler1 => "collector progs, sampler 1/1",
            Setup::Opensnoop => "opensnoop -p <unused pid>",
            Setup::Bpftrace => "bpftrace prefix one-liner",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Setup::Nothing => "nothing",
            Setup::Floor => "floor",
            Setup::FloorSysEnter => "floor_sys_enter",
            Setup::FloorRawTp => "floor_raw_tp",
            Setup::FloorTpSysEnter => "floor_tp_sys_enter",
            Setup::FloorPerfEvent => "floor_perf_event",
            Setup::Reject => "reject",
            Setup::Collector => "collector",
            Setup::CollectorEveryOpen => "collector_every_open",
            Setup::Sampler100 => "sampler_100",
            Setup::Sampler1 => "sampler_1",
            Setup::Opensnoop => "opensnoop",
            Setup::Bpftrace => "bpftrace",
        }
    }

    /// The operations measured under this setup: the sampler rows only show
    /// the per-syscall tax (with no reader, matched opens would fill the
    /// ring); without repeat aggregation only matched opens change.
    fn ops(self) -> &'static [Op] {
        match self {
            Setup::Sampler100
            | Setup::Sampler1
            | Setup::FloorRawTp
            | Setup::FloorTpSysEnter
            | Setup::FloorPerfEvent => &[Op::Getppid],
            Setup::CollectorEveryOpen => &[Op::OpenMatched],
            Setup::Reject => &[Op::OpenTmpfs, Op::OpenDisk],
            _ => &Op::ALL,
        }
    }
}

/// One measurement: wall ns per op, BPF run time per op, program runs per op.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ns: f64,
    bpf_ns: f64,
    runs: f64,
}

struct Files {
    tmpfs: PathBuf,
    disk: PathBuf,
    matched: PathBuf,
    /// The kubelet pod directory prefix the bpftrace one-liner filters on.
    pods_prefix: String,
}

impl Files {
    fn path(&self, op: Op) -> &Path {
        match op {
            Op::Getppid => unreachable!("getppid opens nothing"),
            Op::OpenTmpfs => &self.tmpfs,
            Op::OpenDisk => &self.disk,
            Op::OpenMatched => &self.matched,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// (run count, run time ns) of the given programs, summed; the kernel keeps
/// these while `kernel.bpf_stats_enabled` is 1.
fn bpf_run_stats(ids: &[u32]) -> (u64, u64) {
    if ids.is_empty() {
        return (0, 0);
    }
    libbpf_rs::query::ProgInfoIter::default()
        .filter(|p| ids.contains(&p.id))
        .fold((0, 0), |(c, t), p| (c + p.run_cnt, t + p.run_time_ns))
}

fn open_close(path: &Path) {
    let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).expect("open");
    drop(black_box(fd));
}

/// Runs `op` (warm-up, then timed), reading the programs' run time around the timed part.
fn measure(op: Op, files: &Files, progs: &[u32]) -> Sample {
    let ops = if op == Op::Getppid {
        SYSCALL_OPS
    } else {
        OPEN_OPS
    };
    let once = || match op {
        Op::Getppid => {
            black_box(nix::unistd::getppid());
        }
        _ => open_close(files.path(op)),
    };
    for _ in 0..ops / 10 {
        once();
    }
    let slices = if op == Op::Getppid { SYSCALL_SLICES } else { 1 };
    let per_slice = ops / slices;
    let (c0, t0) = bpf_run_stats(progs);
    let ns = (0..slices)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_slice {
                once();
            }
            start.elapsed().as_nanos() as f64 / f64::from(per_slice)
        })
        .fold(f64::INFINITY, f64::min);
    let (c1, t1) = bpf_run_stats(progs);
    Sample {
        ns,
        bpf_ns: (t1 - t0) as f64 / f64::from(ops),
        runs: (c1 - c0) as f64 / f64::from(ops),
    }
}

/// Whether `cmd` is an executable on PATH.
fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(cmd))
            .find(|p| p.is_file())
    })
}

/// The ids of the BPF programs process `pid` holds open (from /proc/<pid>/fdinfo).
fn prog_ids_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = dir
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A peer tool running as a child process; killed and reaped on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and waits until its programs are attached: they are loaded
/// (held in the child's fd table) and run when this process opens a file.
fn start_peer(mut cmd: Command, name: &str, probe_file: &Path) -> (Peer, Vec<u32>) {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let peer = Peer(child);
    let pid = peer.0.id();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = prog_ids_of(pid);
        if !ids.is_empty() {
            let (c0, _) = bpf_run_stats(&ids);
            for _ in 0..100 {
                open_close(probe_file);
            }
            let (c1, _) = bpf_run_stats(&ids);
            if c1 > c0 {
                // Let a late second program (a BEGIN probe, an exit program) settle.
                std::thread::sleep(Duration::from_millis(200));
                return (peer, prog_ids_of(pid));
            }
        }
        assert!(Instant::now() < end, "{name} did not attach within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pid no process has (opensnoop then filters out every open in the kernel).
fn unused_pid() -> u32 {
    (3_000_000..4_000_000)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("an unused pid")
}

fn bpftrace_program(prefix: &str) -> String {
    format!(
        "tracepoint:syscalls:sys_enter_openat /strncmp(str(args->filename), \"{prefix}\", {}) == 0/ \
         {{ printf(\"%d %s %s\\n\", pid, comm, str(args->filename)); }}",
        prefix.len()
    )
}

/// Runs every operation of `setup` with it attached.
fn run_setup(setup: Setup, sb: &Sandbox, files: &Files) -> Vec<(Op, Sample)> {
    let run_ops = |progs: &[u32]| -> Vec<(Op, Sample)> {
        setup
            .ops()
            .iter()
            .map(|&op| (op, measure(op, files, progs)))
            .collect()
    };
    match setup {
        Setup::Nothing => run_ops(&[]),
        Setup::Floor
        | Setup::FloorSysEnter
        | Setup::FloorRawTp
        | Setup::FloorTpSysEnter
        | Setup::FloorPerfEvent
        | Setup::Reject => {
            let mut storage = MaybeUninit::uninit();
            let mut open = common::floor::FloorSkelBuilder::default()
                .open(&mut storage)
                .expect("open the floor object");
            let p = &mut open.progs;
            p.floor_sys_enter
                .set_autoload(setup == Setup::FloorSysEnter);
            p.floor_raw_sys_enter
                .set_autoload(setup == Setup::FloorRawTp);
            p.floor_tp_sys_enter
                .set_autoload(setup == Setup::FloorTpSysEnter);
            p.floor_perf_event
                .set_autoload(setup == Setup::FloorPerfEvent);
            p.floor_perf_event.set_autoattach(false);
            // Run by the service_map benchmark, not attached here.
            p.lookup_svc_endpoints.set_autoload(false);
            p.floor_xdp.set_autoload(false);
            // The reference reject path replaces the empty open programs.
            let reject = setup == Setup::Reject;
            p.floor_openat.set_autoload(!reject);
            p.floor_openat2.set_autoload(!reject);
            p.floor_open.set_autoload(!reject);
            p.floor_creat.set_autoload(!reject);
            p.floor_open_by_handle_at.set_autoload(!reject);
            p.reject_openat.set_autoload(reject);
            p.reject_openat2.set_autoload(reject);
            p.reject_open.set_autoload(reject);
            p.reject_creat.set_autoload(reject);
            p.reject_open_by_handle_at.set_autoload(reject);
            let mut skel = open.load().expect("load the floor programs");
            skel.attach().expect("attach the floor programs");
            let _timers = (setup == Setup::FloorPerfEvent)
                .then(|| cpu_clock_timers(&skel.progs.floor_perf_event));
            use std::os::fd::AsFd;
            let progs: Vec<u32> = skel
                .object()
                .progs()
                .filter_map(|p| libbpf_rs::Program::id_from_fd(p.as_fd()).ok())
                .collect();
            run_ops(&progs)
        }
        Setup::Collector | Setup::CollectorEveryOpen => {
            let defaults = Config::default();
            let cfg = Config {
                kubelet_root: sb.kubelet_root(),
                kube: KubeMode::Off,
                health_listen: "off".into(),
                api_socket: "off".into(),
                // The bench process opens the volume file itself.
                ignore_own_opens: false,
                // By default the loop's opens after the first are repeats, counted in the kernel.
                repeat_window_ms: match setup {
                    Setup::CollectorEveryOpen => 0,
                    _ => defaults.repeat_window_ms,
                },
                ..defaults
            };
            let (collector, events) = Collector::start_with_channel(&cfg).expect("collector");
            let counted = Arc::new(OutputStats::new("bench"));
            let sink = std::thread::spawn(move || {
                write_json_lines(&events, &mut std::io::sink(), &counted);
                counted.delivered.load(Ordering::Relaxed)
            });
            let (progs, _) = collector.object_ids();
            let out = run_ops(&progs);
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
                "collector round: kernel {:?}, {written} JSON lines",
                stats.kernel
            );
            out
        }
        Setup::Sampler100 | Setup::Sampler1 => {
            let mut storage = ProbeStorage::uninit();
            let probe = Probe::load(
                &mut storage,
                &ProbeOptions {
                    sample_every: if setup == Setup::Sampler1 { 1 } else { 100 },
                    ..ProbeOptions::default()
                },
            )
            .expect("probe");
            let (progs, _) = probe.object_ids();
            run_ops(&progs)
        }
        Setup::Opensnoop => {
            let mut cmd = Command::new("opensnoop");
            cmd.arg("-p").arg(unused_pid().to_string());
            let (_peer, progs) = start_peer(cmd, "opensnoop", &files.tmpfs);
            run_ops(&progs)
        }
        Setup::Bpftrace => {
            let mut cmd = Command::new("bpftrace");
            cmd.arg("-e").arg(bpftrace_program(&files.pods_prefix));
            let (_peer, progs) = start_peer(cmd, "bpftrace", &files.tmpfs);
            run_ops(&progs)
        }
    }
}

/// Sample period of the timer-driven floor row: 1 ms of CPU clock, 1 kHz per CPU.
const TIMER_PERIOD_NS: u64 = 1_000_000;

/// Runs `prog` on a cpu-clock perf event of every CPU, every
/// [`TIMER_PERIOD_NS`] (a timer-driven sampler: nothing per syscall).
/// The returned links and events stop it when dropped.
fn cpu_clock_timers(prog: &libbpf_rs::ProgramMut<'_>) -> Vec<(OwnedFd, libbpf_rs::Link)> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..cpus)
        .map(|cpu| {
            // SAFETY: an all-zero perf_event_attr is valid (every field is an integer).
            let mut attr: libbpf_rs::libbpf_sys::perf_event_attr = unsafe { std::mem::zeroed() };
            attr.type_ = libbpf_rs::libbpf_sys::PERF_TYPE_SOFTWARE;
            attr.config = u64::from(libbpf_rs::libbpf_sys::PERF_COUNT_SW_CPU_CLOCK);
            attr.size = std::mem::size_of::<libbpf_rs::libbpf_sys::perf_event_attr>() as u32;
            attr.__bindgen_anon_1.sample_period = TIMER_PERIOD_NS;
            // SAFETY: perf_event_open reads `attr` and returns a new fd or -1.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    &attr as *const libbpf_rs::libbpf_sys::perf_event_attr,
                    -1,
                    cpu as libc::c_int,
                    -1,
                    libbpf_rs::libbpf_sys::PERF_FLAG_FD_CLOEXEC,
                )
            };
            assert!(
                fd >= 0,
                "perf_event_open(cpu-clock, cpu {cpu}): {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: the syscall returned a new fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            let link = prog
                .attach_perf_event(fd.as_raw_fd())
                .expect("attach the timer program");
            (fd, link)
        })
        .collect()
}

/// Exits with a clear message when a peer tool is missing.
fn require_tool(cmd: &str, package: &str) {
    if which(cmd).is_none() {
        eprintln!(
            "open_overhead: `{cmd}` not found on PATH: install the apt package {package} \
             (apt-get install {package}), or set OVERHEAD_PEERS=off to leave the peers out"
        );
        std::process::exit(1);
    }
}

fn main() {
    common::require_root("open_overhead");
    let peers = std::env::var("OVERHEAD_PEERS").map_or(true, |v| v != "off");
    if peers {
        require_tool("opensnoop", "libbpf-tools");
        require_tool("bpftrace", "bpftrace");
    }
    let rounds: usize = std::env::var("OVERHEAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);

    let mut sb = Sandbox::new().expect("sandbox");
    // A disk-backed ConfigMap volume: its filesystem is the one the sandbox lives on.
    let cm = sb
        .add_volume("bench-pod", VolumeType::ConfigMap, "cfg", false)
        .unwrap();
    sb.write_atomic(&cm, &[("app.yaml", b"x", 0o644)]).unwrap();
    let disk = sb.scratch().join("plain");
    std::fs::write(&disk, "x").unwrap();
    let tmpfs_dir = sb.scratch().join("tmpfs");
    std::fs::create_dir_all(&tmpfs_dir).unwrap();
    sb.mount_tmpfs(&tmpfs_dir).unwrap();
    let tmpfs = tmpfs_dir.join("plain");
    std::fs::write(&tmpfs, "x").unwrap();
    let files = Files {
        tmpfs,
        disk,
        matched: cm.join("app.yaml"),
        pods_prefix: format!("{}/pods/", sb.kubelet_root().display()),
    };

    let mut setups = vec![
        Setup::Nothing,
        Setup::Floor,
        Setup::FloorSysEnter,
        Setup::FloorRawTp,
        Setup::FloorTpSysEnter,
        Setup::FloorPerfEvent,
        Setup::Reject,
        Setup::Collector,
        Setup::CollectorEveryOpen,
        Setup::Sampler100,
        Setup::Sampler1,
    ];
    if peers {
        setups.extend([Setup::Opensnoop, Setup::Bpftrace]);
    }

    let stats_switch = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_switch).unwrap_or_else(|_| "0".into());
    std::fs::write(stats_switch, "1").expect("enable BPF run-time stats");
    let started = chrono::Utc::now();
    // samples[(setup, op)][round]
    let mut samples: BTreeMap<(Setup, Op), Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        // Each round runs every setup once, starting one further along.
        for k in 0..setups.len() {
            let setup = setups[(round + k) % setups.len()];
            // Let the previous setup's programs and maps be freed first.
            std::thread::sleep(Duration::from_millis(100));
            for (op, s) in run_setup(setup, &sb, &files) {
                samples.entry((setup, op)).or_default().push(s);
            }
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    let _ = std::fs::write(stats_switch, stats_before.trim());

    report(&setups, &samples, rounds, started);
}

/// Median over rounds of `f(sample of this round, sample of `base` in the same round)`.
fn paired(
    samples: &BTreeMap<(Setup, Op), Vec<Sample>>,
    setup: Setup,
    base: Setup,
    op: Op,
    f: impl Fn(&Sample, &Sample) -> f64,
) -> f64 {
    let (Some(a), Some(b)) = (samples.get(&(setup, op)), samples.get(&(base, op))) else {
        return f64::NAN;
    };
    median(a.iter().zip(b).map(|(a, b)| f(a, b)).collect())
}

fn report(
    setups: &[Setup],
    samples: &BTreeMap<(Setup, Op), Vec<Sample>>,
    rounds: usize,
    started: chrono::DateTime<chrono::Utc>,
) {
    // An empty program's run time (the statistics' own cost): the floor's, on tmpfs opens.
    let empty_run_ns = median(
        samples[&(Setup::Floor, Op::OpenTmpfs)]
            .iter()
            .map(|s| s.bpf_ns / s.runs)
            .collect(),
    );
    println!(
        "medians of {rounds} interleaved rounds; {OPEN_OPS} opens / {SYSCALL_OPS} getppid (fastest of {SYSCALL_SLICES} slices) per measurement; \
         empty program {empty_run_ns:.0} ns/run (subtracted in 'BPF-empty')"
    );
    println!(
        "{:<32} {:<31} {:>7} {:>8} {:>8} {:>9} {:>6} {:>10}",
        "setup", "operation", "ns/op", "-nothing", "-floor", "BPF ns/op", "runs", "BPF-empty"
    );
    let mut rows = Vec::new();
    for op in Op::ALL {
        for &setup in setups {
            let Some(v) = samples.get(&(setup, op)) else {
                continue;
            };
            let ns = median(v.iter().map(|s| s.ns).collect());
            let vs_nothing = paired(samples, setup, Setup::Nothing, op, |a, b| a.ns - b.ns);
            let vs_floor = paired(samples, setup, Setup::Floor, op, |a, b| a.ns - b.ns);
            let bpf_ns = median(v.iter().map(|s| s.bpf_ns).collect());
            let runs = median(v.iter().map(|s| s.runs).collect());
            let above_empty = median(v.iter().map(|s| s.bpf_ns - s.runs * empty_run_ns).collect());
            println!(
                "{:<32} {:<31} {ns:>7.0} {vs_nothing:>+8.0} {vs_floor:>+8.0} {bpf_ns:>9.0} {runs:>6.2} {above_empty:>10.0}",
                setup.name(),
                op.name(),
            );
            rows.push(serde_json::json!({
                "setup": setup.key(),
                "setup_name": setup.name(),
                "op": op.key(),
                "op_name": op.name(),
                "ns_per_op": ns,
                "vs_nothing_ns": vs_nothing,
                "vs_floor_ns": vs_floor,
                "bpf_ns_per_op": bpf_ns,
                "bpf_runs_per_op": runs,
                "bpf_above_empty_ns": above_empty,
                "rounds_ns_per_op": v.iter().map(|s| s.ns).collect::<Vec<_>>(),
                "rounds_bpf_ns_per_op": v.iter().map(|s| s.bpf_ns).collect::<Vec<_>>(),
            }));
        }
        println!();
    }

    let above_empty = |setup: Setup, op: Op| {
        let v = &samples[&(setup, op)];
        median(v.iter().map(|s| s.bpf_ns - s.runs * empty_run_ns).collect())
    };
    let collector = |op: Op| above_empty(Setup::Collector, op);
    let tax = paired(
        samples,
        Setup::Collector,
        Setup::Floor,
        Op::Getppid,
        |a, b| a.ns - b.ns,
    );
    let targets = [
        ("per-syscall tax (getppid) vs floor, ns", tax, 5.0),
        (
            "unmatched open, tmpfs: BPF ns above empty",
            collector(Op::OpenTmpfs),
            50.0,
        ),
        (
            "unmatched open, disk with volumes: BPF ns above empty",
            collector(Op::OpenDisk),
            80.0,
        ),
        (
            "matched open, emitted: BPF ns above empty",
            above_empty(Setup::CollectorEveryOpen, Op::OpenMatched),
            350.0,
        ),
        (
            "matched open, a repeat (counted): BPF ns above empty",
            collector(Op::OpenMatched),
            350.0,
        ),
    ];
    println!("targets (collector, default config):");
    let mut checks = Vec::new();
    for (name, value, limit) in targets {
        let met = value <= limit;
        println!(
            "  {name:<55} {value:>7.0} (<= {limit:.0}): {}",
            if met { "met" } else { "NOT met" }
        );
        checks
            .push(serde_json::json!({"target": name, "value": value, "limit": limit, "met": met}));
    }
    // The machine's speed drifts from run to run: the reference reject path,
    // measured in the same rounds, tells the collector's own margin.
    let reference = |op: Op| above_empty(Setup::Reject, op);
    println!(
        "unmatched opens against the reference reject path (same rounds, BPF ns above empty):"
    );
    let mut vs_reference = Vec::new();
    for op in [Op::OpenTmpfs, Op::OpenDisk] {
        let (c, r) = (collector(op), reference(op));
        println!(
            "  {:<31} collector {c:>5.0}, reference {r:>5.0}, difference {:>+5.0}",
            op.name(),
            c - r
        );
        vs_reference.push(serde_json::json!({"op": op.key(), "collector": c, "reference": r}));
    }

    let out = common::bench_dir().join("open_overhead.json");
    let doc = serde_json::json!({
        "bench": "open_overhead",
        "started": started.to_rfc3339(),
        "rounds": rounds,
        "open_ops": OPEN_OPS,
        "syscall_ops": SYSCALL_OPS,
        "syscall_slices": SYSCALL_SLICES,
        "empty_program_ns_per_run": empty_run_ns,
        "rows": rows,
        "targets": checks,
        "vs_reference": vs_reference,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).expect("write results");
    println!("results: {}", out.display());
}

//! `sandbox-exec`: a container-like process for the demo and the tests.
//!
//! It joins a cgroup, enters a new mount namespace, bind-mounts volumes at
//! container paths, chroots, drops to another uid, then performs the open
//! steps it was given and reports each result as one JSON line on stdout.
//! Files are opened and closed, never read.

use std::io::{BufRead, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, openat, openat2, OFlag, OpenHow};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, setgid, setuid, Gid, Uid};

/// Setup and steps of one sandboxed process.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExecArgs {
    /// cgroup directory to join first.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Enter a new mount namespace.
    #[arg(long)]
    pub unshare_mount: bool,
    /// Join the mount namespace of this process instead (as `kubectl exec` does).
    #[arg(long, value_name = "PID")]
    pub join_mount_ns: Option<u32>,
    /// Run the steps as the init (pid 1) of a new pid namespace, as a container's first process.
    #[arg(long)]
    pub unshare_pid: bool,
    /// Join the pid namespace of this process and run the steps in a child
    /// made there (setns, then fork: how `runc exec` enters a container).
    #[arg(long, value_name = "PID")]
    pub join_pid_ns: Option<u32>,
    /// Bind mounts SRC:DST (DST inside --chroot when given), made in the new namespace.
    #[arg(long = "bind", value_name = "SRC:DST")]
    pub binds: Vec<String>,
    /// New root directory.
    #[arg(long)]
    pub chroot: Option<PathBuf>,
    /// Run the steps as this uid (and gid).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Command name (comm) to take, as a container's process would have.
    #[arg(long)]
    pub comm: Option<String>,
    /// Steps: open:P, sys_open:P (open(2) itself), openat2:P, write:P, opath:P, odir:P, at:DIR:P (openat relative
    /// to a dirfd of DIR), chdir:D, sleep:MS, wait (until stdin has a line or closes),
    /// fork (a child that sleeps until this process dies; reports its pid), flood:N:P (opens and
    /// closes P N times as fast as it can; reports how many opens succeeded), child:STEP (runs
    /// STEP in a child process and waits for it).
    pub steps: Vec<String>,
}

fn errno_name(e: nix::Error) -> String {
    format!("{e:?}")
}

fn report(out: &mut impl Write, step: &str, result: Result<OwnedFd, nix::Error>) {
    let result = match result {
        Ok(_) => "ok".to_string(),
        Err(e) => errno_name(e),
    };
    let _ = writeln!(
        out,
        "{}",
        serde_json::json!({"step": step, "result": result})
    );
    let _ = out.flush();
}

/// open(2) itself (not openat), which the C library no longer uses.
fn legacy_open(path: &str) -> Result<OwnedFd, nix::Error> {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(path).map_err(|_| nix::Error::EINVAL)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::syscall(libc::SYS_open, c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let fd = i32::try_from(fd).map_err(|_| nix::Error::EINVAL)?;
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The process's id in the initial pid namespace (`/proc/self` names it
/// while the host's /proc is visible, before any chroot).
fn host_pid() -> u32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse().ok())
        .unwrap_or_else(std::process::id)
}

/// Waits for `child` and exits with its status: the parent's part after a
/// fork that put the child in a pid namespace.
fn exit_with(child: nix::unistd::Pid) -> ! {
    let code = match nix::sys::wait::waitpid(child, None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
        _ => 1,
    };
    std::process::exit(code)
}

/// Enters a new or another process's pid namespace: the namespace applies
/// to children, so this forks, and only the child returns.
fn enter_pid_ns(args: &ExecArgs) -> Result<(), String> {
    if args.unshare_pid {
        unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare pid: {e}"))?;
    } else if let Some(pid) = args.join_pid_ns {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/pid"))
            .map_err(|e| format!("pid namespace of {pid}: {e}"))?;
        nix::sched::setns(ns, CloneFlags::CLONE_NEWPID).map_err(|e| format!("setns pid: {e}"))?;
    } else {
        return Ok(());
    }
    // SAFETY: sandbox-exec is single-threaded here.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => Ok(()),
        nix::unistd::ForkResult::Parent { child } => exit_with(child),
    }
}

/// Sets the process up; returns its id in the initial pid namespace.
fn setup(args: &ExecArgs) -> Result<u32, String> {
    if let Some(comm) = &args.comm {
        let name = std::ffi::CString::new(comm.as_str())
            .map_err(|_| "--comm has a NUL byte".to_string())?;
        nix::sys::prctl::set_name(&name).map_err(|e| format!("naming the process: {e}"))?;
    }
    if let Some(cg) = &args.cgroup {
        std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("joining cgroup {}: {e}", cg.display()))?;
    }
    if let Some(pid) = args.join_mount_ns {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
            .map_err(|e| format!("mount namespace of {pid}: {e}"))?;
        nix::sched::setns(ns, CloneFlags::CLONE_NEWNS).map_err(|e| format!("setns: {e}"))?;
    }
    enter_pid_ns(args)?;
    let pid = host_pid();
    if args.unshare_mount {
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("making / private: {e}"))?;
    }
    for b in &args.binds {
        let (src, dst) = b
            .split_once(':')
            .ok_or_else(|| format!("--bind {b}: expected SRC:DST"))?;
        let dst = match &args.chroot {
            Some(root) => root.join(dst.trim_start_matches('/')),
            None => PathBuf::from(dst),
        };
        super::sandbox::make_mountpoint(Path::new(src), &dst)
            .map_err(|e| format!("mountpoint {}: {e}", dst.display()))?;
        mount(
            Some(src),
            &dst,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind {src} -> {}: {e}", dst.display()))?;
    }
    if let Some(root) = &args.chroot {
        chroot(root).map_err(|e| format!("chroot {}: {e}", root.display()))?;
        chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    }
    if let Some(uid) = args.uid {
        setgid(Gid::from_raw(uid)).map_err(|e| format!("setgid: {e}"))?;
        setuid(Uid::from_raw(uid)).map_err(|e| format!("setuid: {e}"))?;
    }
    Ok(pid)
}

fn step(out: &mut impl Write, s: &str) -> Result<(), String> {
    let (op, arg) = s.split_once(':').unwrap_or((s, ""));
    let ro = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    match op {
        "open" => report(out, s, open(arg, ro, Mode::empty())),
        "write" => report(
            out,
            s,
            open(arg, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()),
        ),
        "opath" => report(
            out,
            s,
            open(arg, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()),
        ),
        "odir" => report(out, s, open(arg, ro | OFlag::O_DIRECTORY, Mode::empty())),
        "openat2" => {
            let cwd = open(".", OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
                .map_err(|e| e.to_string())?;
            report(out, s, openat2(&cwd, arg, OpenHow::new().flags(ro)))
        }
        "at" => {
            let (dir, path) = arg
                .split_once(':')
                .ok_or_else(|| format!("{s}: expected at:DIR:PATH"))?;
            let dirfd = open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
                .map_err(|e| format!("{dir}: {e}"))?;
            report(out, s, openat(&dirfd, path, ro, Mode::empty()));
        }
        "sys_open" => report(out, s, legacy_open(arg)),
        "child" => {
            // SAFETY: sandbox-exec is single-threaded; the child runs one step and exits.
            match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
                nix::unistd::ForkResult::Child => {
                    let code = i32::from(step(out, arg).is_err()) * 2;
                    let _ = out.flush();
                    std::process::exit(code)
                }
                nix::unistd::ForkResult::Parent { child } => {
                    nix::sys::wait::waitpid(child, None).map_err(|e| format!("wait: {e}"))?;
                }
            }
        }
        "fork" => {
            // SAFETY: sandbox-exec is single-threaded; the child only calls
            // async-signal-safe functions before it sleeps.
            let parent = nix::unistd::getpid();
            match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
                nix::unistd::ForkResult::Child => {
                    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                    // The parent may have exited before the signal was armed.
                    if nix::unistd::getppid() != parent {
                        std::process::exit(0);
                    }
                    loop {
                        nix::unistd::pause();
                    }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    let _ = writeln!(
                        out,
                        "{}",
                        serde_json::json!({"step": s, "result": child.as_raw().to_string()})
                    );
                    let _ = out.flush();
                }
            }
        }
        "flood" => {
            let (n, path) = arg
                .split_once(':')
                .ok_or_else(|| format!("{s}: expected flood:N:PATH"))?;
            let n: u64 = n.parse().map_err(|_| format!("{s}: bad count"))?;
            let ok = (0..n)
                .filter(|_| open(path, ro, Mode::empty()).is_ok())
                .count();
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({"step": s, "result": ok.to_string()})
            );
            let _ = out.flush();
        }
        "chdir" => chdir(arg).map_err(|e| format!("chdir {arg}: {e}"))?,
        "sleep" => std::thread::sleep(std::time::Duration::from_millis(
            arg.parse().map_err(|_| format!("{s}: bad ms"))?,
        )),
        "wait" => {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        }
        _ => return Err(format!("unknown step {s}")),
    }
    Ok(())
}

/// Runs the sandboxed process; returns the exit code.
pub fn run(args: &ExecArgs) -> i32 {
    let pid = match setup(args) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("sandbox-exec: {e}");
            return 2;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::json!({"ready": pid}));
    let _ = out.flush();
    for s in &args.steps {
        if let Err(e) = step(&mut out, s) {
            eprintln!("sandbox-exec: {e}");
            return 2;
        }
    }
    0
}

/// A running `sandbox-exec` child.
#[derive(Debug)]
pub struct ContainerProc {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// Its process id.
    pub pid: u32,
}

impl ContainerProc {
    /// Starts `exe sandbox-exec` with `args` and waits until its setup is done.
    pub fn spawn(exe: &Path, args: &ExecArgs) -> std::io::Result<Self> {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("sandbox-exec");
        if let Some(c) = &args.cgroup {
            cmd.arg("--cgroup").arg(c);
        }
        if args.unshare_mount {
            cmd.arg("--unshare-mount");
        }
        if let Some(pid) = args.join_mount_ns {
            cmd.arg("--join-mount-ns").arg(pid.to_string());
        }
        if args.unshare_pid {
            cmd.arg("--unshare-pid");
        }
        if let Some(pid) = args.join_pid_ns {
            cmd.arg("--join-pid-ns").arg(pid.to_string());
        }
        for b in &args.binds {
            cmd.arg("--bind").arg(b);
        }
        if let Some(r) = &args.chroot {
            cmd.arg("--chroot").arg(r);
        }
        if let Some(u) = args.uid {
            cmd.arg("--uid").arg(u.to_string());
        }
        if let Some(c) = &args.comm {
            cmd.arg("--comm").arg(c);
        }
        cmd.arg("--").args(&args.steps);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn()?;
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let ready: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
            std::io::Error::other(format!("sandbox-exec failed to start (said {line:?})"))
        })?;
        let pid = ready["ready"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| std::io::Error::other("no pid"))?;
        Ok(Self { child, stdout, pid })
    }

    /// Reads the next step result (`{"step": ..., "result": ...}`).
    pub fn next_result(&mut self) -> std::io::Result<(String, String)> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::other(format!("{e}: {line:?}")))?;
        Ok((
            v["step"].as_str().unwrap_or_default().to_string(),
            v["result"].as_str().unwrap_or_default().to_string(),
        ))
    }

    /// Releases a `wait` step.
    pub fn release(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"\n");
            let _ = stdin.flush();
        }
    }

    /// Closes stdin and waits for the process; returns its exit code.
    pub fn finish(mut self) -> std::io::Result<i32> {
        drop(self.child.stdin.take());
        let status = self.child.wait()?;
        Ok(status.code().unwrap_or(-1))
    }
}

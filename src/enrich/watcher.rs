//! Follows volume directories as they appear, are (re)mounted or disappear.
//!
//! A thread sleeps in poll(2) on an inotify instance (pod, plugin and volume
//! directories, so AtomicWriter's `..data` swaps are seen too), on
//! `/proc/self/mountinfo` (POLLPRI on every mount-table change, which is how a
//! tmpfs mounted over a volume directory is noticed) and on a stop eventfd. Any
//! wake-up triggers a debounced rescan that [`VolumeRegistry::apply`]s the
//! result. A periodic rescan is the safety net for changes no watch reports.
//!
//! A scan that cannot read a directory (out of file descriptors, say) changes
//! nothing under it, logs a warning, raises the `volume_scan` condition on
//! the health board and is retried after 1 s, doubling up to the rescan
//! interval; the first clean scan clears the condition. Entries the scan
//! leaves out (symlinks, directories deeper than the kernel walk) are logged
//! once each and counted in [`WatchStats`].
//!
//! At start it also checks that the kubelet root receives the host's later
//! mounts ([`propagation`]); a private one raises `mount_propagation`.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::EventFd;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::correlation::{CorrelationMaps, MountInfo};
use super::volumes::propagation::{self, Propagation};
use super::volumes::{scan, Changes, IgnoreReason, Ignored, VolumeError, VolumeRegistry};
use crate::kernel::maps::KernelDirs;
use crate::model::health::{HealthBoard, Severity};
use crate::model::volume::VolumeType;

/// Health component of the volume watch.
pub const COMPONENT: &str = "volume_scan";
/// Health component of a kubelet root that does not receive the host's mounts.
pub const PROPAGATION_COMPONENT: &str = "mount_propagation";
/// First retry delay after a failed scan.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Counters of the volume watch.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Scans that read everything.
    pub scans_ok: AtomicU64,
    /// Scans that could not read some directory or write some kernel entry.
    pub scans_failed: AtomicU64,
    /// Entries the last scan left out, by reason.
    ignored: Mutex<BTreeMap<IgnoreReason, u64>>,
}

impl WatchStats {
    /// Entries the last scan left out with `reason`.
    pub fn ignored(&self, reason: IgnoreReason) -> u64 {
        let ignored = self.ignored.lock().unwrap_or_else(|e| e.into_inner());
        ignored.get(&reason).copied().unwrap_or(0)
    }
}

/// What the watcher shares with the rest of the collector.
#[derive(Debug, Clone)]
pub struct WatchShared {
    pub registry: Arc<VolumeRegistry>,
    pub correlation: Arc<CorrelationMaps>,
    pub health: Arc<HealthBoard>,
    pub stats: Arc<WatchStats>,
}

/// What to watch and how often to rescan.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Directory that holds `pods/`.
    pub kubelet_root: PathBuf,
    /// Plugins to watch.
    pub types: Vec<VolumeType>,
    /// Interval of the safety-net rescan.
    pub rescan_interval: Duration,
    /// Quiet time after a change before rescanning, to batch bursts.
    pub debounce: Duration,
}

/// The running watcher thread; stopping it leaves the maps as they are.
#[derive(Debug)]
pub struct VolumeWatcher {
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

struct State {
    config: WatchConfig,
    shared: WatchShared,
    kernel: KernelDirs,
    inotify: Inotify,
    /// Ignored paths already warned about (those of the last scan).
    warned: HashSet<PathBuf>,
}

fn create_err(what: &'static str) -> impl FnOnce(nix::Error) -> VolumeError {
    move |e| VolumeError::Create {
        what,
        source: std::io::Error::from(e),
    }
}

impl State {
    /// Rescans, updates kernel and correlation maps, and refreshes the watches;
    /// returns whether everything could be read and written.
    fn rescan(&mut self) -> bool {
        let report = scan(&self.config.kubelet_root, &self.config.types);
        let unverified = report.unverified();
        let changes = self
            .shared
            .registry
            .apply(report.found, &unverified, &mut self.kernel);
        self.publish(&changes);
        self.note_ignored(&report.ignored);
        let mut problems: Vec<String> = report
            .failed
            .iter()
            .map(|f| format!("reading {}: {}", f.path.display(), f.error))
            .collect();
        problems.extend(
            changes
                .failed
                .iter()
                .map(|(path, e)| format!("adding {} to the kernel map: {e}", path.display())),
        );
        problems.extend(self.add_watches());
        self.report(&problems);
        problems.is_empty()
    }

    /// Updates the correlation maps and logs what changed.
    fn publish(&self, changes: &Changes) {
        let correlation = &self.shared.correlation;
        for v in changes.added.iter().chain(&changes.rekeyed) {
            correlation.add_mount_info(&v.path_hash, MountInfo::from_volume(v));
        }
        for v in &changes.removed {
            correlation.remove_mount_info(&v.path_hash);
        }
        for v in &changes.added {
            tracing::info!(pod_uid = %v.pod_uid, volume = %v.name, kind = v.volume_type.as_str(), path = %v.mount_path.display(), "watching volume");
        }
        for v in &changes.rekeyed {
            tracing::info!(pod_uid = %v.pod_uid, volume = %v.name, "volume remounted");
        }
        for v in &changes.removed {
            tracing::info!(pod_uid = %v.pod_uid, volume = %v.name, "volume gone");
        }
    }

    /// Counts the ignored entries and warns once per path.
    fn note_ignored(&mut self, ignored: &[Ignored]) {
        let mut by_reason = BTreeMap::new();
        for i in ignored {
            *by_reason.entry(i.reason).or_insert(0) += 1;
            if !self.warned.contains(&i.path) {
                tracing::warn!(path = %i.path.display(), reason = i.reason.as_str(), "volume entry ignored: {}", match i.reason {
                    IgnoreReason::Symlink => "a symlink where a real directory must be (never followed)",
                    IgnoreReason::NotADirectory => "not a directory",
                    IgnoreReason::TooDeep => "deeper than the kernel's walk reaches: opens of its files are not reported",
                    IgnoreReason::Unindexed => "more files than the index holds: their opens are reported without a key",
                });
            }
        }
        self.warned = ignored.iter().map(|i| i.path.clone()).collect();
        *self
            .shared
            .stats
            .ignored
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = by_reason;
    }

    /// Counts the scan, and raises or clears the `volume_scan` condition.
    fn report(&self, problems: &[String]) {
        let stats = &self.shared.stats;
        if problems.is_empty() {
            stats.scans_ok.fetch_add(1, Ordering::Relaxed);
            if self.shared.health.clear(COMPONENT) {
                tracing::info!("volume scan recovered: the watched volumes are complete again");
            }
            return;
        }
        stats.scans_failed.fetch_add(1, Ordering::Relaxed);
        for p in problems {
            tracing::warn!(
                "volume scan incomplete: {p}; volumes there are kept as they were, retrying"
            );
        }
        self.shared.health.raise(
            COMPONENT,
            Severity::Degraded,
            format!(
                "the last volume scan failed ({} problem(s), first: {}); volumes there are kept as they were and new ones may be missed until a retry succeeds",
                problems.len(),
                problems[0]
            ),
        );
    }

    /// Watches every directory whose change can add, remove or remount a
    /// volume; returns the watches that could not be added (gone is fine).
    fn add_watches(&self) -> Vec<String> {
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ONLYDIR;
        // Below pods/ a symlink is never followed (IN_DONT_FOLLOW).
        let below = mask | AddWatchFlags::IN_DONT_FOLLOW;
        let mut problems = Vec::new();
        let mut watch = |path: &Path, mask| match self.inotify.add_watch(path, mask) {
            Ok(_) | Err(nix::Error::ENOENT | nix::Error::ENOTDIR | nix::Error::ELOOP) => {}
            Err(e) => problems.push(format!("watching {}: {e}", path.display())),
        };
        let root = &self.config.kubelet_root;
        let pods = root.join("pods");
        // Re-adding an existing watch is cheap and returns the same descriptor;
        // the kernel drops watches of deleted directories by itself.
        watch(root, mask);
        watch(&pods, mask);
        if let Ok(entries) = std::fs::read_dir(&pods) {
            for pod in entries.flatten() {
                let volumes = pod.path().join("volumes");
                watch(&pod.path(), below);
                watch(&volumes, below);
                for t in &self.config.types {
                    watch(&volumes.join(t.plugin_dir()), below);
                }
            }
        }
        for v in self.shared.registry.volumes() {
            watch(&v.mount_path, below);
        }
        problems
    }
}

impl VolumeWatcher {
    /// Scans once (so the kernel map is filled when this returns), then follows changes.
    pub fn start(
        config: WatchConfig,
        shared: WatchShared,
        kernel: KernelDirs,
    ) -> Result<Self, VolumeError> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(create_err("an inotify instance"))?;
        let mountinfo_path = std::path::Path::new("/proc/self/mountinfo");
        let mountinfo = File::open(mountinfo_path).map_err(|source| VolumeError::Watch {
            path: mountinfo_path.to_path_buf(),
            source,
        })?;
        let stop = Arc::new(
            EventFd::from_value_and_flags(0, nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)
                .map_err(create_err("the watcher's stop eventfd"))?,
        );
        let mut state = State {
            config,
            shared,
            kernel,
            inotify,
            warned: HashSet::new(),
        };
        report_propagation(&state.config.kubelet_root, &state.shared.health);
        let ok = state.rescan();
        let stop_thread = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("volume-watcher".into())
            .spawn(move || watch_loop(state, mountinfo, &stop_thread, ok))
            .map_err(VolumeError::Thread)?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VolumeWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Logs how the kubelet's later mounts reach this process, and raises a
/// kubelet root that does not receive them (degraded, for good: it is how
/// the collector was started).
fn report_propagation(root: &Path, health: &HealthBoard) {
    match propagation::check(root) {
        Propagation::HostNamespace => {
            tracing::debug!("in the host's mount namespace: every volume mount is seen");
        }
        Propagation::Received { mount_point } => tracing::debug!(
            mount_point = %mount_point.display(),
            "the kubelet root receives the host's mounts"
        ),
        Propagation::Private { mount_point } => {
            let reason = format!(
                "the kubelet root {} is on a mount ({}) that does not receive the host's mounts: volumes the kubelet mounts from now on are not seen and their reads not reported; mount it with mountPropagation: HostToContainer (the chart does), from a shared mount on the host",
                root.display(),
                mount_point.display()
            );
            tracing::error!("{reason}");
            health.raise(PROPAGATION_COMPONENT, Severity::Degraded, reason);
        }
        Propagation::Unknown { reason } => tracing::warn!(
            %reason,
            "could not tell whether the kubelet's later mounts reach the collector"
        ),
    }
}

/// How long to wait before the next scan: the rescan interval, or the
/// retry delay (doubling from [`FIRST_RETRY`]) while scans fail.
fn next_wait(interval: Duration, retry: &mut Option<Duration>, ok: bool) -> Duration {
    if ok {
        *retry = None;
        return interval;
    }
    let next = retry.map_or(FIRST_RETRY, |d| d * 2).min(interval);
    *retry = Some(next);
    next
}

fn watch_loop(mut state: State, mountinfo: File, stop: &EventFd, first_ok: bool) {
    let interval = state.config.rescan_interval;
    let mut retry = None;
    let mut wait = next_wait(interval, &mut retry, first_ok);
    loop {
        let until = Instant::now() + wait;
        let (changed, stopped) = {
            let mut fds = [
                PollFd::new(state.inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(mountinfo.as_fd(), PollFlags::POLLPRI),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            let timeout = PollTimeout::try_from(until.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("volume watcher poll failed: {e}");
                    std::thread::sleep(wait);
                }
            }
            let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
            (ready(0) || ready(1), ready(2))
        };
        if stopped {
            return;
        }
        if changed {
            // Let a burst (a pod's volumes being set up) settle, then drain it.
            std::thread::sleep(state.config.debounce);
            while state.inotify.read_events().is_ok_and(|e| !e.is_empty()) {}
        }
        let ok = state.rescan();
        wait = next_wait(interval, &mut retry, ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_scans_retry_from_one_second_doubling_up_to_the_interval() {
        let interval = Duration::from_secs(5);
        let mut retry = None;
        let waits: Vec<u64> = [false, false, false, false, true, false]
            .into_iter()
            .map(|ok| next_wait(interval, &mut retry, ok).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 5, 5, 1]);
    }
}

//! Follows volume directories as they appear, are (re)mounted or disappear.
//!
//! A thread sleeps in poll(2) on an inotify instance (pod, plugin and volume
//! directories, so AtomicWriter's `..data` swaps are seen too), on
//! `/proc/self/mountinfo` (POLLPRI on every mount-table change, which is how a
//! tmpfs mounted over a volume directory is noticed) and on a stop eventfd. Any
//! wake-up triggers a debounced rescan that [`VolumeRegistry::apply`]s the
//! result. A periodic rescan is the safety net for changes no watch reports.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::EventFd;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::correlation::{CorrelationMaps, MountInfo};
use crate::volumes::{scan, Changes, KernelDirs, VolumeError, VolumeRegistry, VolumeType};

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
    registry: Arc<VolumeRegistry>,
    kernel: KernelDirs,
    correlation: Arc<CorrelationMaps>,
    inotify: Inotify,
}

fn io_err(path: &std::path::Path, e: nix::Error) -> VolumeError {
    VolumeError::Watch {
        path: path.to_path_buf(),
        source: std::io::Error::from(e),
    }
}

impl State {
    /// Rescans, updates kernel and correlation maps, and refreshes the watches.
    fn rescan(&mut self) -> Result<Changes, VolumeError> {
        let found = scan(&self.config.kubelet_root, &self.config.types);
        let changes = self.registry.apply(found, &mut self.kernel)?;
        for v in changes.added.iter().chain(&changes.rekeyed) {
            self.correlation
                .add_mount_info(&v.path_hash, MountInfo::from_volume(v));
        }
        for v in &changes.removed {
            self.correlation.remove_mount_info(&v.path_hash);
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
        self.add_watches();
        Ok(changes)
    }

    /// Watches every directory whose change can add, remove or remount a volume.
    fn add_watches(&self) {
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ONLYDIR;
        let root = &self.config.kubelet_root;
        let pods = root.join("pods");
        // Re-adding an existing watch is cheap and returns the same descriptor;
        // the kernel drops watches of deleted directories by itself.
        let _ = self.inotify.add_watch(root, mask);
        let _ = self.inotify.add_watch(&pods, mask);
        let Ok(entries) = std::fs::read_dir(&pods) else {
            return;
        };
        for pod in entries.flatten() {
            let volumes = pod.path().join("volumes");
            let _ = self.inotify.add_watch(&pod.path(), mask);
            let _ = self.inotify.add_watch(&volumes, mask);
            for t in &self.config.types {
                let _ = self.inotify.add_watch(&volumes.join(t.plugin_dir()), mask);
            }
        }
        for v in self.registry.volumes() {
            let _ = self.inotify.add_watch(&v.mount_path, mask);
        }
    }
}

impl VolumeWatcher {
    /// Scans once (so the kernel map is filled when this returns), then follows changes.
    pub fn start(
        config: WatchConfig,
        registry: Arc<VolumeRegistry>,
        kernel: KernelDirs,
        correlation: Arc<CorrelationMaps>,
    ) -> Result<Self, VolumeError> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| io_err(&config.kubelet_root, e))?;
        let mountinfo_path = std::path::Path::new("/proc/self/mountinfo");
        let mountinfo = File::open(mountinfo_path).map_err(|source| VolumeError::Watch {
            path: mountinfo_path.to_path_buf(),
            source,
        })?;
        let stop = Arc::new(
            EventFd::from_value_and_flags(0, nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)
                .map_err(|e| io_err(&config.kubelet_root, e))?,
        );
        let mut state = State {
            config,
            registry,
            kernel,
            correlation,
            inotify,
        };
        state.rescan()?;
        let stop_thread = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("volume-watcher".into())
            .spawn(move || watch_loop(state, mountinfo, &stop_thread))
            .map_err(|source| VolumeError::Watch {
                path: PathBuf::from("volume-watcher thread"),
                source,
            })?;
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

fn watch_loop(mut state: State, mountinfo: File, stop: &EventFd) {
    let interval = state.config.rescan_interval;
    let timeout = PollTimeout::try_from(interval).unwrap_or(PollTimeout::MAX);
    loop {
        let (changed, stopped) = {
            let mut fds = [
                PollFd::new(state.inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(mountinfo.as_fd(), PollFlags::POLLPRI),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("volume watcher poll failed: {e}");
                    std::thread::sleep(interval);
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
        if let Err(e) = state.rescan() {
            tracing::error!("volume rescan failed: {}", crate::logging::chain(&e));
        }
    }
}

//! Resolution of denied opens (EACCES/EPERM) in user space.
//!
//! A denied open creates no file, so the kernel cannot identify it by object.
//! The path is resolved here the way the process would have resolved it:
//! absolute paths under `/proc/<pid>/root` (with `RESOLVE_IN_ROOT`, so the
//! container's absolute symlinks stay in the container), relative paths under
//! `/proc/<pid>/cwd` or `/proc/<pid>/fd/<dirfd>`. The result is opened with
//! `O_PATH` only (never read) and its (device, inode) looked up among the files
//! of the watched volumes. When the process has already exited, an absolute
//! path is resolved through another process of the same mount namespace.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{open, openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode};

use crate::decode::{FileId, KernelEvent};
use crate::volumes::{kernel_dev, Volume, VolumeRegistry};

const AT_FDCWD: i32 = -100;
/// Upper bound of /proc entries examined when looking for a peer process.
const MAX_PEER_SCAN: usize = 65536;

fn open_dir(path: &Path) -> Option<OwnedFd> {
    open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

fn identity(fd: &OwnedFd) -> Option<FileId> {
    let st = fstat(fd).ok()?;
    Some(FileId {
        dev: kernel_dev(st.st_dev),
        ino: st.st_ino,
    })
}

/// Kernel identity of `path` as process `pid` sees it.
fn resolve_in(pid: u32, dirfd: Option<i32>, path: &Path) -> Option<FileId> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if path.is_absolute() {
        let root = open_dir(&proc.join("root"))?;
        let rel = path.strip_prefix("/").unwrap_or(path);
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT);
        let fd = openat2(&root, rel, how).ok()?;
        return identity(&fd);
    }
    let base = match dirfd {
        None | Some(AT_FDCWD) => proc.join("cwd"),
        Some(fd) if fd >= 0 => proc.join("fd").join(fd.to_string()),
        Some(_) => return None,
    };
    let base = open_dir(&base)?;
    let fd = openat(&base, path, flags, Mode::empty()).ok()?;
    identity(&fd)
}

/// Some live process in mount namespace `mnt_ns` other than `exclude`.
fn peer_in_mount_ns(mnt_ns: u32, exclude: u32) -> Option<u32> {
    let entries = fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .take(MAX_PEER_SCAN)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != exclude)
        .find(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/mnt")).is_ok_and(|m| m.ino() == u64::from(mnt_ns))
        })
}

/// The watched volume file a denied open named, with its key.
pub fn resolve(ev: &KernelEvent, registry: &VolumeRegistry) -> Option<(Arc<Volume>, String)> {
    let path = ev.path.as_deref()?;
    let id = resolve_in(ev.tgid, ev.dirfd, path).or_else(|| {
        // The process is gone (or a zombie whose root is unreadable): only an
        // absolute path can still be resolved, through a peer in its mount namespace.
        if !path.is_absolute() {
            return None;
        }
        let peer = peer_in_mount_ns(ev.mnt_ns, ev.tgid)?;
        resolve_in(peer, None, path)
    })?;
    registry.find_file(id)
}

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
//!
//! When the whole mount namespace is gone too (a Job's only process that exits
//! right after the read), the path is mapped through the reader container's
//! `volumeMounts` from its pod spec: the longest mount path that is a prefix
//! of the denied path names the volume, the rest (under its `subPath`) the
//! key. What none of these can place is [`Resolved::Unresolved`]: counted
//! under its own reason, never mistaken for "not a volume file".

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{open, openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode};

use super::pods::ContainerMeta;
use super::volumes::{Volume, VolumeRegistry};
use crate::kernel::decode::KernelEvent;
use crate::model::volume::{kernel_dev, FileId};

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

/// What a denied open named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A watched volume, and the key inside it when the path names one.
    Volume(Arc<Volume>, Option<String>),
    /// A file, or a missing path, outside every watched volume.
    NotAVolumeFile,
    /// Neither the process, nor its mount namespace, nor its container's spec could place the path.
    Unresolved,
}

/// Resolves a denied open through the live process, or a peer of its mount namespace.
pub fn resolve(ev: &KernelEvent, registry: &VolumeRegistry) -> Resolved {
    let Some(path) = ev.path.as_deref() else {
        return Resolved::Unresolved;
    };
    let by = |pid: u32, dirfd: Option<i32>| -> Option<Resolved> {
        // The process's root (or cwd) must be reachable for an answer either way.
        let base = if path.is_absolute() || matches!(dirfd, None | Some(AT_FDCWD)) {
            if path.is_absolute() {
                "root"
            } else {
                "cwd"
            }
        } else {
            "fd"
        };
        let id = resolve_in(pid, dirfd, path);
        if id.is_none() && !PathBuf::from(format!("/proc/{pid}/{base}")).exists() {
            return None;
        }
        Some(match id.and_then(|id| registry.find_file(id)) {
            Some((v, key)) => Resolved::Volume(v, Some(key)),
            None => Resolved::NotAVolumeFile,
        })
    };
    if let Some(r) = by(ev.tgid, ev.dirfd) {
        return r;
    }
    // The process is gone (or a zombie whose root is unreadable): only an
    // absolute path can still be resolved, through a peer in its mount namespace.
    if !path.is_absolute() {
        return Resolved::Unresolved;
    }
    peer_in_mount_ns(ev.mnt_ns, ev.tgid)
        .and_then(|peer| by(peer, None))
        .unwrap_or(Resolved::Unresolved)
}

/// Maps an absolute container `path` through `container`'s volume mounts
/// (longest mount path first) to a watched volume of pod `pod_uid`.
pub fn resolve_by_spec(
    path: &Path,
    pod_uid: &str,
    container: &ContainerMeta,
    registry: &VolumeRegistry,
) -> Resolved {
    if !path.is_absolute() {
        return Resolved::Unresolved;
    }
    let mount = container
        .mounts
        .iter()
        .filter(|m| path.starts_with(Path::new(&*m.path)))
        .max_by_key(|m| m.path.len());
    let Some(mount) = mount else {
        return Resolved::NotAVolumeFile;
    };
    let Some(volume) = registry.by_pod_volume(pod_uid, &mount.volume) else {
        return Resolved::Unresolved;
    };
    let rest = path.strip_prefix(Path::new(&*mount.path)).unwrap_or(path);
    let inside = mount
        .sub_path
        .as_deref()
        .map_or_else(PathBuf::new, PathBuf::from)
        .join(rest);
    let key: Vec<String> = inside
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .filter(|c| !c.starts_with(".."))
        .collect();
    Resolved::Volume(volume, (!key.is_empty()).then(|| key.join("/")))
}

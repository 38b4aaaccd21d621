//! A kubelet-like sandbox for the demo and the tests: a temporary kubelet root
//! with pods and volumes in the kubelet's layout (tmpfs-backed Secret and
//! projected volumes, a disk-backed ConfigMap volume in AtomicWriter layout),
//! pod-like cgroups, and a container root for bind mounts. Everything it
//! creates is removed when it is dropped.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::enrich::cgroup::cgroup2_mount;
use crate::model::volume::VolumeType;

/// A temporary kubelet-like tree.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
    generation: u32,
}

impl Sandbox {
    /// Creates an empty kubelet root with `pods/`.
    pub fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("cac-sandbox-").tempdir()?;
        fs::create_dir_all(dir.path().join("kubelet/pods"))?;
        fs::create_dir_all(dir.path().join("rootfs"))?;
        Ok(Self {
            dir,
            mounts: Vec::new(),
            cgroups: Vec::new(),
            generation: 0,
        })
    }

    /// The directory that plays `/var/lib/kubelet`.
    pub fn kubelet_root(&self) -> PathBuf {
        self.dir.path().join("kubelet")
    }

    /// An empty directory for a container's root.
    pub fn container_root(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// A scratch directory outside the kubelet tree.
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        let _ = fs::create_dir_all(&p);
        p
    }

    /// Host path of a pod's volume directory.
    pub fn volume_dir(&self, pod_uid: &str, kind: VolumeType, name: &str) -> PathBuf {
        self.kubelet_root()
            .join("pods")
            .join(pod_uid)
            .join("volumes")
            .join(kind.plugin_dir())
            .join(name)
    }

    /// Creates a volume directory; `tmpfs` mounts a tmpfs on it as the kubelet
    /// does for Secret, projected and downward-API volumes.
    pub fn add_volume(
        &mut self,
        pod_uid: &str,
        kind: VolumeType,
        name: &str,
        tmpfs: bool,
    ) -> io::Result<PathBuf> {
        let dir = self.volume_dir(pod_uid, kind, name);
        fs::create_dir_all(&dir)?;
        if tmpfs {
            self.mount_tmpfs(&dir)?;
        }
        Ok(dir)
    }

    /// Mounts a tmpfs on `dir` (unmounted on drop).
    pub fn mount_tmpfs(&mut self, dir: &Path) -> io::Result<()> {
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=1m"),
        )?;
        self.mounts.push(dir.to_path_buf());
        Ok(())
    }

    /// Bind-mounts `src` on `dst`, creating `dst` as a file or directory like `src`.
    pub fn bind(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        make_mountpoint(src, dst)?;
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
        self.mounts.push(dst.to_path_buf());
        Ok(())
    }

    /// Unmounts and removes a volume directory, as the kubelet does when a pod goes.
    pub fn remove_volume(&mut self, dir: &Path) -> io::Result<()> {
        if let Some(i) = self.mounts.iter().position(|m| m == dir) {
            umount2(dir, MntFlags::MNT_DETACH)?;
            self.mounts.remove(i);
        }
        fs::remove_dir_all(dir)
    }

    /// Writes `files` into a volume the way the kubelet's AtomicWriter does:
    /// a new `..<timestamp>` directory, `..data` swapped to it by rename, and
    /// one `key -> ..data/key` symlink per key. Runs on a thread named
    /// `kubelet`, so the collector sees the writes as the kubelet's.
    pub fn write_atomic(&mut self, dir: &Path, files: &[(&str, &[u8], u32)]) -> io::Result<()> {
        self.generation += 1;
        let ts = format!(
            "..2024_01_21_10_30_{:02}.{:09}",
            self.generation % 60,
            self.generation
        );
        let dir = dir.to_path_buf();
        let files: Vec<(String, Vec<u8>, u32)> = files
            .iter()
            .map(|(k, v, m)| (k.to_string(), v.to_vec(), *m))
            .collect();
        std::thread::Builder::new()
            .name("kubelet".into())
            .spawn(move || atomic_write(&dir, &ts, &files))?
            .join()
            .map_err(|_| io::Error::other("atomic writer thread panicked"))?
    }

    /// Creates a cgroup (path relative to the cgroup2 mount) removed on drop.
    pub fn make_cgroup(&mut self, rel: &str) -> io::Result<PathBuf> {
        let root = cgroup2_mount().ok_or_else(|| io::Error::other("cgroup2 is not mounted"))?;
        let path = root.join(rel);
        let mut cur = root.clone();
        for part in Path::new(rel).components() {
            cur.push(part);
            if !cur.exists() {
                fs::create_dir(&cur)?;
                self.cgroups.push(cur.clone());
            }
        }
        Ok(path)
    }
}

fn atomic_write(dir: &Path, ts: &str, files: &[(String, Vec<u8>, u32)]) -> io::Result<()> {
    let new = dir.join(ts);
    fs::create_dir(&new)?;
    for (key, value, mode) in files {
        let p = new.join(key);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&p, value)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
    }
    let old = fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    symlink(ts, &tmp)?;
    fs::rename(&tmp, dir.join("..data"))?;
    for (key, _, _) in files {
        let top = key.split('/').next().unwrap_or(key);
        let link = dir.join(top);
        if fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{top}"), &link)?;
        }
    }
    if let Some(old) = old {
        fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}

/// Creates `dst` as an empty file or directory matching `src`.
pub fn make_mountpoint(src: &Path, dst: &Path) -> io::Result<()> {
    if src.is_dir() {
        fs::create_dir_all(dst)
    } else {
        if let Some(p) = dst.parent() {
            fs::create_dir_all(p)?;
        }
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dst)
            .map(drop)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
        for c in self.cgroups.iter().rev() {
            let _ = fs::remove_dir(c);
        }
    }
}

//! Volume discovery: finds the kubelet's Secret, ConfigMap, projected and
//! downward-API volume directories and keeps the kernel's `watched_dirs` map
//! and the user-space [`VolumeRegistry`] in step with them.
//!
//! A volume directory is `<kubelet-root>/pods/<pod-uid>/volumes/kubernetes.io~<plugin>/<volume-name>`.
//! Its kernel identity is (device, inode) as the kernel encodes them: the
//! device number from `stat()` is converted from glibc's encoding to the
//! kernel's `major << 20 | minor` ([`kernel_dev`]), and a directory that is the
//! root of its own tmpfs (Secret, projected and downward-API volumes) is inode
//! 1 on a device of its own. A rescan after every (re)mount refreshes the
//! identity, since a key taken before the kubelet mounts the tmpfs names the
//! directory underneath.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::abi::types::{cac_dir_info, cac_volume_type};
use crate::decode::{bytes_of, dir_key, FileId};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("updating BPF map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("watching {path}")]
    Watch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Kubelet volume plugins whose files the collector watches.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeType {
    Secret,
    #[serde(rename = "configmap")]
    ConfigMap,
    Projected,
    DownwardApi,
}

impl VolumeType {
    /// Every watched plugin.
    pub const ALL: [VolumeType; 4] = [
        VolumeType::Secret,
        VolumeType::ConfigMap,
        VolumeType::Projected,
        VolumeType::DownwardApi,
    ];

    /// The plugin's directory name under `volumes/`.
    pub fn plugin_dir(self) -> &'static str {
        match self {
            VolumeType::Secret => "kubernetes.io~secret",
            VolumeType::ConfigMap => "kubernetes.io~configmap",
            VolumeType::Projected => "kubernetes.io~projected",
            VolumeType::DownwardApi => "kubernetes.io~downward-api",
        }
    }

    /// The plugin for a directory name under `volumes/`.
    pub fn from_plugin_dir(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.plugin_dir() == name)
    }

    /// Short name used in events (`volume_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeType::Secret => "secret",
            VolumeType::ConfigMap => "configmap",
            VolumeType::Projected => "projected",
            VolumeType::DownwardApi => "downward-api",
        }
    }

    /// `event_type` of a pod's access to this kind of volume.
    pub fn event_type(self) -> &'static str {
        match self {
            VolumeType::Secret => "secret_access",
            VolumeType::ConfigMap => "configmap_access",
            VolumeType::Projected => "projected_access",
            VolumeType::DownwardApi => "downward_api_access",
        }
    }

    fn abi(self) -> u32 {
        match self {
            VolumeType::Secret => cac_volume_type::CAC_VOL_SECRET.0,
            VolumeType::ConfigMap => cac_volume_type::CAC_VOL_CONFIGMAP.0,
            VolumeType::Projected => cac_volume_type::CAC_VOL_PROJECTED.0,
            VolumeType::DownwardApi => cac_volume_type::CAC_VOL_DOWNWARD_API.0,
        }
    }
}

/// Converts a `stat()` device number (glibc encoding) to the kernel's `s_dev`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = nix::sys::stat::major(st_dev) as u32;
    let minor = nix::sys::stat::minor(st_dev) as u32;
    (major << 20) | (minor & 0xf_ffff)
}

/// Kernel identity of a path (following symlinks).
pub fn file_id(path: &Path) -> std::io::Result<FileId> {
    let md = fs::metadata(path)?;
    Ok(FileId {
        dev: kernel_dev(md.dev()),
        ino: md.ino(),
    })
}

/// blake3 hash (hex) of a volume's host path: the key of the mount correlation map.
pub fn path_hash(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    blake3::hash(path.as_os_str().as_bytes())
        .to_hex()
        .to_string()
}

/// A watched volume directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Id carried by kernel events.
    pub id: u32,
    pub pod_uid: String,
    pub volume_type: VolumeType,
    /// The pod's volume name (the directory name).
    pub name: String,
    /// Host path of the volume directory.
    pub mount_path: PathBuf,
    /// blake3 of `mount_path`.
    pub path_hash: String,
    /// Kernel identity of the directory.
    pub dir: FileId,
    /// Inode of each file inside -> key (path inside the volume, without `..<timestamp>/`).
    pub files: HashMap<u64, String>,
}

/// One volume directory as found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundVolume {
    pub pod_uid: String,
    pub volume_type: VolumeType,
    pub name: String,
    pub mount_path: PathBuf,
    pub dir: FileId,
    pub files: HashMap<u64, String>,
}

/// Bounds of the per-volume file index (a volume holds a handful of keys).
const MAX_INDEX_DEPTH: usize = 8;
const MAX_INDEX_FILES: usize = 4096;

/// Maps each regular file under a volume directory to its key.
///
/// AtomicWriter layout: visible keys are symlinks into `..data`, itself a
/// symlink to `..<timestamp>/`; the real files live in the timestamped
/// directories, whose name is dropped from the key. Symlinks are not followed.
pub fn index_files(dir: &Path) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((path, prefix, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            if out.len() >= MAX_INDEX_FILES {
                return out;
            }
            let Ok(ft) = entry.file_type() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if ft.is_file() {
                if let Ok(md) = entry.metadata() {
                    out.insert(md.ino(), format!("{prefix}{name}"));
                }
            } else if ft.is_dir() && depth < MAX_INDEX_DEPTH {
                let sub = if name.starts_with("..") {
                    prefix.clone()
                } else {
                    format!("{prefix}{name}/")
                };
                stack.push((entry.path(), sub, depth + 1));
            }
        }
    }
    out
}

/// Lists the volume directories of the watched plugins under `<kubelet_root>/pods`.
pub fn scan(kubelet_root: &Path, types: &[VolumeType]) -> Vec<FoundVolume> {
    let mut found = Vec::new();
    let Ok(pods) = fs::read_dir(kubelet_root.join("pods")) else {
        return found;
    };
    for pod in pods.flatten() {
        let pod_uid = pod.file_name().to_string_lossy().into_owned();
        for &volume_type in types {
            let plugin = pod.path().join("volumes").join(volume_type.plugin_dir());
            let Ok(volumes) = fs::read_dir(&plugin) else {
                continue;
            };
            for volume in volumes.flatten() {
                let mount_path = volume.path();
                let Ok(md) = fs::metadata(&mount_path) else {
                    continue;
                };
                if !md.is_dir() {
                    continue;
                }
                found.push(FoundVolume {
                    pod_uid: pod_uid.clone(),
                    volume_type,
                    name: volume.file_name().to_string_lossy().into_owned(),
                    files: index_files(&mount_path),
                    dir: FileId {
                        dev: kernel_dev(md.dev()),
                        ino: md.ino(),
                    },
                    mount_path,
                });
            }
        }
    }
    found
}

/// What a [`VolumeRegistry::apply`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<Arc<Volume>>,
    pub removed: Vec<Arc<Volume>>,
    /// Volumes whose directory identity changed (mounted or remounted).
    pub rekeyed: Vec<Arc<Volume>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.rekeyed.is_empty()
    }
}

/// The kernel maps of watched directories and of their devices.
#[derive(Debug)]
pub struct KernelDirs {
    dirs: MapHandle,
    devs: MapHandle,
    dev_refs: HashMap<u32, u32>,
}

impl KernelDirs {
    pub fn new(dirs: MapHandle, devs: MapHandle) -> Self {
        Self {
            dirs,
            devs,
            dev_refs: HashMap::new(),
        }
    }

    fn insert(&mut self, volume: &Volume) -> Result<(), VolumeError> {
        let info = cac_dir_info {
            volume_id: volume.id,
            volume_type: volume.volume_type.abi(),
        };
        self.dirs
            .update(
                bytes_of(&dir_key(volume.dir)),
                bytes_of(&info),
                MapFlags::ANY,
            )
            .map_err(|source| VolumeError::Map {
                map: "watched_dirs",
                source,
            })?;
        let refs = self.dev_refs.entry(volume.dir.dev).or_insert(0);
        *refs += 1;
        self.devs
            .update(
                &volume.dir.dev.to_ne_bytes(),
                &refs.to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(|source| VolumeError::Map {
                map: "watched_devs",
                source,
            })
    }

    fn remove(&mut self, dir: FileId) -> Result<(), VolumeError> {
        // A missing entry is not an error: the goal is its absence.
        let _ = self.dirs.delete(bytes_of(&dir_key(dir)));
        if let Some(refs) = self.dev_refs.get_mut(&dir.dev) {
            *refs -= 1;
            if *refs == 0 {
                self.dev_refs.remove(&dir.dev);
                let _ = self.devs.delete(&dir.dev.to_ne_bytes());
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<u32, Arc<Volume>>,
    by_path: BTreeMap<PathBuf, u32>,
    by_file: HashMap<FileId, u32>,
    next_id: u32,
}

/// The watched volumes, shared between the watcher and the event pipeline.
#[derive(Debug, Default)]
pub struct VolumeRegistry {
    inner: RwLock<Inner>,
}

impl VolumeRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The volume with this id.
    pub fn get(&self, id: u32) -> Option<Arc<Volume>> {
        self.inner.read().ok()?.by_id.get(&id).cloned()
    }

    /// The volume whose host path is `path`.
    pub fn by_mount_path(&self, path: &Path) -> Option<Arc<Volume>> {
        let inner = self.inner.read().ok()?;
        inner
            .by_path
            .get(path)
            .and_then(|id| inner.by_id.get(id))
            .cloned()
    }

    /// The volume holding the file with this identity, and the file's key.
    pub fn find_file(&self, file: FileId) -> Option<(Arc<Volume>, String)> {
        let inner = self.inner.read().ok()?;
        let volume = inner
            .by_file
            .get(&file)
            .and_then(|id| inner.by_id.get(id))?;
        let key = volume.files.get(&file.ino)?.clone();
        Some((Arc::clone(volume), key))
    }

    /// Every watched volume, by host path.
    pub fn volumes(&self) -> Vec<Arc<Volume>> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        inner
            .by_path
            .values()
            .filter_map(|id| inner.by_id.get(id).cloned())
            .collect()
    }

    /// Makes the registry and the kernel map match a fresh scan.
    pub fn apply(
        &self,
        found: Vec<FoundVolume>,
        kernel: &mut KernelDirs,
    ) -> Result<Changes, VolumeError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut changes = Changes::default();
        let mut seen = HashMap::with_capacity(found.len());
        for f in found {
            let old = inner
                .by_path
                .get(&f.mount_path)
                .and_then(|id| inner.by_id.get(id))
                .cloned();
            let id = match &old {
                Some(v) => v.id,
                None => {
                    inner.next_id = inner.next_id.wrapping_add(1).max(1);
                    inner.next_id
                }
            };
            let volume = Arc::new(Volume {
                id,
                path_hash: path_hash(&f.mount_path),
                pod_uid: f.pod_uid,
                volume_type: f.volume_type,
                name: f.name,
                mount_path: f.mount_path,
                dir: f.dir,
                files: f.files,
            });
            match &old {
                None => {
                    kernel.insert(&volume)?;
                    changes.added.push(Arc::clone(&volume));
                }
                Some(o) if o.dir != volume.dir => {
                    kernel.remove(o.dir)?;
                    kernel.insert(&volume)?;
                    changes.rekeyed.push(Arc::clone(&volume));
                }
                Some(_) => {}
            }
            if let Some(o) = &old {
                for ino in o.files.keys() {
                    inner.by_file.remove(&FileId {
                        dev: o.dir.dev,
                        ino: *ino,
                    });
                }
            }
            for ino in volume.files.keys() {
                inner.by_file.insert(
                    FileId {
                        dev: volume.dir.dev,
                        ino: *ino,
                    },
                    id,
                );
            }
            seen.insert(volume.mount_path.clone(), ());
            inner.by_path.insert(volume.mount_path.clone(), id);
            inner.by_id.insert(id, volume);
        }
        let gone: Vec<PathBuf> = inner
            .by_path
            .keys()
            .filter(|p| !seen.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            let Some(id) = inner.by_path.remove(&path) else {
                continue;
            };
            let Some(volume) = inner.by_id.remove(&id) else {
                continue;
            };
            kernel.remove(volume.dir)?;
            for ino in volume.files.keys() {
                if inner.by_file.get(&FileId {
                    dev: volume.dir.dev,
                    ino: *ino,
                }) == Some(&id)
                {
                    inner.by_file.remove(&FileId {
                        dev: volume.dir.dev,
                        ino: *ino,
                    });
                }
            }
            changes.removed.push(volume);
        }
        Ok(changes)
    }
}

/// A path that names the kubelet volume tree, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    pub pod_uid: String,
    pub volume_type: VolumeType,
    pub volume_name: String,
    /// Host path of the volume directory.
    pub mount_path: PathBuf,
    /// Path inside the volume without `..<timestamp>/` parts; `None` for the directory itself.
    pub key: Option<String>,
}

/// Parses `.../pods/<uid>/volumes/kubernetes.io~<plugin>/<volume>[/<key>]`.
pub fn parse_volume_path(path: &Path) -> Option<VolumePath> {
    let parts: Vec<&str> = path.to_str()?.split('/').collect();
    let at = parts.iter().position(|p| p.starts_with("kubernetes.io~"))?;
    if at < 3 || parts[at - 1] != "volumes" || parts[at - 3] != "pods" {
        return None;
    }
    let volume_type = VolumeType::from_plugin_dir(parts[at])?;
    let volume_name = parts.get(at + 1).filter(|s| !s.is_empty())?.to_string();
    let key: Vec<&str> = parts[at + 2..]
        .iter()
        .copied()
        .filter(|p| !p.is_empty() && !p.starts_with(".."))
        .collect();
    Some(VolumePath {
        pod_uid: parts[at - 2].to_string(),
        volume_type,
        mount_path: parts[..at + 2].join("/").into(),
        volume_name,
        key: (!key.is_empty()).then(|| key.join("/")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding() {
        // ext4 on 254:0 is 0xfe00 from stat(), 0x0fe00000 in the kernel.
        assert_eq!(kernel_dev(0xfe00), 0x0fe0_0000);
        assert_eq!(kernel_dev(nix::sys::stat::makedev(0, 52)), 52);
        assert_eq!(kernel_dev(nix::sys::stat::makedev(8, 300)), (8 << 20) | 300);
    }

    #[test]
    fn index_drops_timestamp_dirs_and_skips_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let ts = d.path().join("..2024_01_01_00_00_00.123");
        fs::create_dir_all(ts.join("nested")).unwrap();
        fs::write(ts.join("password"), "x").unwrap();
        fs::write(ts.join("nested/inner"), "x").unwrap();
        std::os::unix::fs::symlink("..2024_01_01_00_00_00.123", d.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/password", d.path().join("password")).unwrap();
        fs::write(d.path().join("plain"), "x").unwrap();
        let idx = index_files(d.path());
        let mut keys: Vec<_> = idx.values().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["nested/inner", "password", "plain"]);
        let ino = fs::metadata(ts.join("password")).unwrap().ino();
        assert_eq!(idx[&ino], "password");
    }

    #[test]
    fn scan_finds_only_watched_plugins() {
        let d = tempfile::tempdir().unwrap();
        let vols = d.path().join("pods/uid-1/volumes");
        fs::create_dir_all(vols.join("kubernetes.io~secret/creds")).unwrap();
        fs::create_dir_all(vols.join("kubernetes.io~configmap/cfg")).unwrap();
        fs::create_dir_all(vols.join("kubernetes.io~empty-dir/scratch")).unwrap();
        let mut found = scan(d.path(), &[VolumeType::Secret, VolumeType::Projected]);
        assert_eq!(found.len(), 1);
        let v = found.pop().unwrap();
        assert_eq!((v.pod_uid.as_str(), v.name.as_str()), ("uid-1", "creds"));
        assert_eq!(v.volume_type, VolumeType::Secret);
        assert_eq!(scan(d.path(), &VolumeType::ALL).len(), 2);
        assert!(scan(&d.path().join("missing"), &VolumeType::ALL).is_empty());
    }

    #[test]
    fn parses_kubelet_volume_paths() {
        let p = parse_volume_path(Path::new(
            "/var/lib/kubelet/pods/abc/volumes/kubernetes.io~secret/db/..2024_x/password",
        ))
        .unwrap();
        assert_eq!(p.pod_uid, "abc");
        assert_eq!(p.volume_type, VolumeType::Secret);
        assert_eq!(p.volume_name, "db");
        assert_eq!(
            p.mount_path,
            Path::new("/var/lib/kubelet/pods/abc/volumes/kubernetes.io~secret/db")
        );
        assert_eq!(p.key.as_deref(), Some("password"));
        assert!(parse_volume_path(Path::new("/etc/passwd")).is_none());
        assert!(parse_volume_path(Path::new("/x/volumes/kubernetes.io~secret/db")).is_none());
        assert!(parse_volume_path(Path::new("/pods/u/volumes/kubernetes.io~nfs/db/k")).is_none());
    }

    #[test]
    fn path_hash_is_blake3_hex() {
        let h = path_hash(Path::new(
            "/var/lib/kubelet/pods/a/volumes/kubernetes.io~secret/s",
        ));
        assert_eq!(h.len(), 64);
        assert_eq!(
            h,
            blake3::hash(b"/var/lib/kubelet/pods/a/volumes/kubernetes.io~secret/s")
                .to_hex()
                .to_string()
        );
    }
}

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

/// Directories below a volume directory whose files the kernel can still
/// match: its dentry walk checks `CAC_MAX_WALK` ancestors of an opened file.
pub const MAX_FILE_DEPTH: usize = crate::abi::types::cac_limits::CAC_MAX_WALK.0 as usize - 1;
/// Most files indexed per volume (a volume holds a handful of keys).
pub const MAX_INDEX_FILES: usize = 4096;

/// Why a scan left an entry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IgnoreReason {
    /// A pod, `volumes`, plugin or volume directory that is a symlink (never followed).
    Symlink,
    /// A volume entry that is not a directory.
    NotADirectory,
    /// A directory inside a volume deeper than the kernel's walk reaches: opens of its files are not seen.
    TooDeep,
    /// Files of a volume beyond [`MAX_INDEX_FILES`]: opens are seen, their key is not known.
    Unindexed,
}

impl IgnoreReason {
    /// Every reason, for metrics.
    pub const ALL: [IgnoreReason; 4] = [
        IgnoreReason::Symlink,
        IgnoreReason::NotADirectory,
        IgnoreReason::TooDeep,
        IgnoreReason::Unindexed,
    ];

    /// Label value of `kernel_monitor_volume_entries_ignored{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::Symlink => "symlink",
            IgnoreReason::NotADirectory => "not_a_directory",
            IgnoreReason::TooDeep => "walk_too_deep",
            IgnoreReason::Unindexed => "index_full",
        }
    }
}

/// An entry a scan left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub path: PathBuf,
    pub reason: IgnoreReason,
}

/// A directory a scan could not read (other than gone): what is under it is unverified.
#[derive(Debug)]
pub struct ScanFailure {
    pub path: PathBuf,
    pub error: std::io::Error,
}

/// The result of a scan: the volumes it could verify, where it failed, what it left out.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub found: Vec<FoundVolume>,
    /// Directories that could not be read; volumes under them are kept as they were.
    pub failed: Vec<ScanFailure>,
    pub ignored: Vec<Ignored>,
}

impl ScanReport {
    /// Paths under which nothing could be verified.
    pub fn unverified(&self) -> Vec<PathBuf> {
        self.failed.iter().map(|f| f.path.clone()).collect()
    }

    fn ignore(&mut self, path: PathBuf, reason: IgnoreReason) {
        self.ignored.push(Ignored { path, reason });
    }

    /// Lists `dir`: `None` when it is gone (not an error) or unreadable (recorded as a failure).
    fn list(&mut self, dir: &Path) -> Option<Vec<fs::DirEntry>> {
        let read = fs::read_dir(dir).and_then(|entries| entries.collect::<Result<Vec<_>, _>>());
        match read {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                self.failed.push(ScanFailure {
                    path: dir.to_path_buf(),
                    error,
                });
                None
            }
        }
    }

    /// `path` if it is a real directory (not followed if a symlink); anything else is left out.
    fn real_dir(&mut self, path: PathBuf, volume: bool) -> Option<(PathBuf, fs::Metadata)> {
        match fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => Some((path, md)),
            Ok(md) if md.file_type().is_symlink() => {
                self.ignore(path, IgnoreReason::Symlink);
                None
            }
            Ok(_) => {
                if volume {
                    self.ignore(path, IgnoreReason::NotADirectory);
                }
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                self.failed.push(ScanFailure { path, error });
                None
            }
        }
    }
}

/// The files of one volume directory.
#[derive(Debug, Default)]
pub struct FileIndex {
    /// Inode -> key.
    pub files: HashMap<u64, String>,
    /// Directories deeper than [`MAX_FILE_DEPTH`] (not listed).
    pub too_deep: Vec<PathBuf>,
    /// Files beyond [`MAX_INDEX_FILES`].
    pub unindexed: usize,
}

/// Maps each regular file under a volume directory to its key.
///
/// AtomicWriter layout: visible keys are symlinks into `..data`, itself a
/// symlink to `..<timestamp>/`; the real files live in the timestamped
/// directories, whose name is dropped from the key. Symlinks are not
/// followed. A directory that cannot be read fails the whole index, so a
/// caller never mistakes an unreadable volume for an empty one.
pub fn index_files(dir: &Path) -> std::io::Result<FileIndex> {
    let mut out = FileIndex::default();
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((path, prefix, depth)) = stack.pop() {
        if depth > MAX_FILE_DEPTH {
            out.too_deep.push(path);
            continue;
        }
        for entry in fs::read_dir(&path)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if ft.is_file() {
                if out.files.len() >= MAX_INDEX_FILES {
                    out.unindexed += 1;
                } else {
                    out.files
                        .insert(entry.metadata()?.ino(), format!("{prefix}{name}"));
                }
            } else if ft.is_dir() {
                let sub = if name.starts_with("..") {
                    prefix.clone()
                } else {
                    format!("{prefix}{name}/")
                };
                stack.push((entry.path(), sub, depth + 1));
            }
        }
    }
    Ok(out)
}

/// Lists the volume directories of the watched plugins under `<kubelet_root>/pods`.
///
/// Pod, `volumes`, plugin and volume directories must be real directories:
/// a symlink is never followed (it could point the kernel map at any host
/// directory) and is reported as ignored. A directory that cannot be read is
/// reported as failed, and what lies under it is left as it was by
/// [`VolumeRegistry::apply`]: a scan never drops what it could not verify.
pub fn scan(kubelet_root: &Path, types: &[VolumeType]) -> ScanReport {
    let mut report = ScanReport::default();
    let Some(pods) = report.list(&kubelet_root.join("pods")) else {
        return report;
    };
    for pod in pods {
        let pod_uid = pod.file_name().to_string_lossy().into_owned();
        let Some((pod_dir, _)) = report.real_dir(pod.path(), false) else {
            continue;
        };
        let Some((volumes, _)) = report.real_dir(pod_dir.join("volumes"), false) else {
            continue;
        };
        for &volume_type in types {
            let Some((plugin, _)) = report.real_dir(volumes.join(volume_type.plugin_dir()), false)
            else {
                continue;
            };
            let Some(entries) = report.list(&plugin) else {
                continue;
            };
            for volume in entries {
                let Some((mount_path, md)) = report.real_dir(volume.path(), true) else {
                    continue;
                };
                add_volume(&mut report, &pod_uid, volume_type, mount_path, &md);
            }
        }
    }
    report
}

fn add_volume(
    report: &mut ScanReport,
    pod_uid: &str,
    volume_type: VolumeType,
    mount_path: PathBuf,
    md: &fs::Metadata,
) {
    let index = match index_files(&mount_path) {
        Ok(index) => index,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => {
            report.failed.push(ScanFailure {
                path: mount_path,
                error,
            });
            return;
        }
    };
    for path in index.too_deep {
        report.ignore(path, IgnoreReason::TooDeep);
    }
    if index.unindexed > 0 {
        report.ignore(mount_path.clone(), IgnoreReason::Unindexed);
    }
    report.found.push(FoundVolume {
        pod_uid: pod_uid.to_string(),
        volume_type,
        name: mount_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        files: index.files,
        dir: FileId {
            dev: kernel_dev(md.dev()),
            ino: md.ino(),
        },
        mount_path,
    });
}

/// What a [`VolumeRegistry::apply`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<Arc<Volume>>,
    pub removed: Vec<Arc<Volume>>,
    /// Volumes whose directory identity changed (mounted or remounted).
    pub rekeyed: Vec<Arc<Volume>>,
    /// Volumes whose kernel entry could not be written; they are retried by the next scan.
    pub failed: Vec<(PathBuf, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.rekeyed.is_empty()
            && self.failed.is_empty()
    }
}

/// Where the watched directories live in the kernel; [`KernelDirs`], or
/// [`NoKernel`] where only the registry is wanted.
pub trait DirMap {
    /// Adds `volume`'s directory; on error nothing was added.
    fn insert(&mut self, volume: &Volume) -> Result<(), VolumeError>;
    /// Removes a directory (missing is not an error).
    fn remove(&mut self, dir: FileId);
}

/// A [`DirMap`] that keeps nothing.
#[derive(Debug, Default)]
pub struct NoKernel;

impl DirMap for NoKernel {
    fn insert(&mut self, _: &Volume) -> Result<(), VolumeError> {
        Ok(())
    }
    fn remove(&mut self, _: FileId) {}
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
}

impl DirMap for KernelDirs {
    fn insert(&mut self, volume: &Volume) -> Result<(), VolumeError> {
        let info = cac_dir_info {
            volume_id: volume.id,
            volume_type: volume.volume_type.abi(),
        };
        let key = dir_key(volume.dir);
        self.dirs
            .update(bytes_of(&key), bytes_of(&info), MapFlags::ANY)
            .map_err(|source| VolumeError::Map {
                map: "watched_dirs",
                source,
            })?;
        let refs = self.dev_refs.get(&volume.dir.dev).copied().unwrap_or(0) + 1;
        let dev = self.devs.update(
            &volume.dir.dev.to_ne_bytes(),
            &refs.to_ne_bytes(),
            MapFlags::ANY,
        );
        if let Err(source) = dev {
            let _ = self.dirs.delete(bytes_of(&key));
            return Err(VolumeError::Map {
                map: "watched_devs",
                source,
            });
        }
        self.dev_refs.insert(volume.dir.dev, refs);
        Ok(())
    }

    fn remove(&mut self, dir: FileId) {
        // A missing entry is not an error: the goal is its absence.
        let _ = self.dirs.delete(bytes_of(&dir_key(dir)));
        if let Some(refs) = self.dev_refs.get_mut(&dir.dev) {
            *refs -= 1;
            if *refs == 0 {
                self.dev_refs.remove(&dir.dev);
                let _ = self.devs.delete(&dir.dev.to_ne_bytes());
            }
        }
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

    /// Makes the registry and the kernel map match a scan: adds and rekeys
    /// what was `found`, and removes what is gone, except volumes under an
    /// `unverified` path (the scan could not read there: they are kept).
    /// A kernel entry that cannot be written leaves that volume as it was.
    pub fn apply(
        &self,
        found: Vec<FoundVolume>,
        unverified: &[PathBuf],
        kernel: &mut impl DirMap,
    ) -> Changes {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut changes = Changes::default();
        let mut seen = std::collections::HashSet::with_capacity(found.len());
        for f in found {
            seen.insert(f.mount_path.clone());
            inner.upsert(f, kernel, &mut changes);
        }
        let gone: Vec<PathBuf> = inner
            .by_path
            .keys()
            .filter(|p| !seen.contains(*p) && !unverified.iter().any(|u| p.starts_with(u)))
            .cloned()
            .collect();
        for path in gone {
            if let Some(volume) = inner.remove(&path) {
                kernel.remove(volume.dir);
                changes.removed.push(volume);
            }
        }
        changes
    }

    /// Every watched volume of pod `pod_uid`, by volume name.
    pub fn by_pod_volume(&self, pod_uid: &str, volume: &str) -> Option<Arc<Volume>> {
        let inner = self.inner.read().ok()?;
        inner
            .by_id
            .values()
            .find(|v| v.pod_uid == pod_uid && v.name == volume)
            .cloned()
    }
}

impl Inner {
    fn new_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Adds or refreshes one found volume.
    fn upsert(&mut self, f: FoundVolume, kernel: &mut impl DirMap, changes: &mut Changes) {
        let old = self
            .by_path
            .get(&f.mount_path)
            .and_then(|id| self.by_id.get(id))
            .cloned();
        let id = old.as_ref().map_or_else(|| self.new_id(), |v| v.id);
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
        let rekey = old.as_ref().is_some_and(|o| o.dir != volume.dir);
        if old.is_none() || rekey {
            if let Err(e) = kernel.insert(&volume) {
                changes
                    .failed
                    .push((volume.mount_path.clone(), crate::logging::chain(&e)));
                return;
            }
        }
        match &old {
            None => changes.added.push(Arc::clone(&volume)),
            Some(o) if rekey => {
                kernel.remove(o.dir);
                changes.rekeyed.push(Arc::clone(&volume));
            }
            Some(_) => {}
        }
        if let Some(o) = &old {
            self.unindex(o);
        }
        for ino in volume.files.keys() {
            self.by_file.insert(
                FileId {
                    dev: volume.dir.dev,
                    ino: *ino,
                },
                id,
            );
        }
        self.by_path.insert(volume.mount_path.clone(), id);
        self.by_id.insert(id, volume);
    }

    /// Drops `volume`'s files from the file index (those still pointing at it).
    fn unindex(&mut self, volume: &Volume) {
        for ino in volume.files.keys() {
            let file = FileId {
                dev: volume.dir.dev,
                ino: *ino,
            };
            if self.by_file.get(&file) == Some(&volume.id) {
                self.by_file.remove(&file);
            }
        }
    }

    fn remove(&mut self, path: &Path) -> Option<Arc<Volume>> {
        let id = self.by_path.remove(path)?;
        let volume = self.by_id.remove(&id)?;
        self.unindex(&volume);
        Some(volume)
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
        let idx = index_files(d.path()).unwrap().files;
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
        let mut found = scan(d.path(), &[VolumeType::Secret, VolumeType::Projected]).found;
        assert_eq!(found.len(), 1);
        let v = found.pop().unwrap();
        assert_eq!((v.pod_uid.as_str(), v.name.as_str()), ("uid-1", "creds"));
        assert_eq!(v.volume_type, VolumeType::Secret);
        assert_eq!(scan(d.path(), &VolumeType::ALL).found.len(), 2);
        let missing = scan(&d.path().join("missing"), &VolumeType::ALL);
        assert!(missing.found.is_empty() && missing.failed.is_empty());
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

    fn volume_tree() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let plugin = d.path().join("pods/uid-1/volumes/kubernetes.io~secret");
        fs::create_dir_all(plugin.join("creds")).unwrap();
        fs::write(plugin.join("creds/password"), "x").unwrap();
        (d, plugin)
    }

    #[test]
    fn symlinked_volume_dirs_and_parents_are_ignored_not_followed() {
        let (d, plugin) = volume_tree();
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir_all(elsewhere.join("volumes/kubernetes.io~secret/x")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, plugin.join("etc")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.path().join("pods/uid-2")).unwrap();
        fs::write(plugin.join("stray-file"), "").unwrap();
        let report = scan(d.path(), &VolumeType::ALL);
        let names: Vec<_> = report.found.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["creds"]);
        let mut ignored: Vec<_> = report
            .ignored
            .iter()
            .map(|i| {
                (
                    i.path.strip_prefix(d.path()).unwrap().to_path_buf(),
                    i.reason,
                )
            })
            .collect();
        ignored.sort();
        assert_eq!(
            ignored,
            [
                (
                    PathBuf::from("pods/uid-1/volumes/kubernetes.io~secret/etc"),
                    IgnoreReason::Symlink
                ),
                (
                    PathBuf::from("pods/uid-1/volumes/kubernetes.io~secret/stray-file"),
                    IgnoreReason::NotADirectory
                ),
                (PathBuf::from("pods/uid-2"), IgnoreReason::Symlink),
            ]
        );
    }

    #[test]
    fn directories_deeper_than_the_kernel_walk_are_reported() {
        let (_d, plugin) = volume_tree();
        let ts = plugin.join("creds/..2024_01_01");
        let mut deep = ts.clone();
        for i in 0..MAX_FILE_DEPTH {
            deep.push(format!("d{i}"));
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.parent().unwrap().join("reachable"), "x").unwrap();
        fs::write(deep.join("unreachable"), "x").unwrap();
        let index = index_files(&plugin.join("creds")).unwrap();
        assert!(index
            .files
            .values()
            .any(|k| k.ends_with("reachable") && !k.ends_with("unreachable")));
        assert!(!index.files.values().any(|k| k.ends_with("unreachable")));
        assert_eq!(index.too_deep, [deep]);
    }

    fn found(path: &Path, ino: u64) -> FoundVolume {
        FoundVolume {
            pod_uid: "uid-1".into(),
            volume_type: VolumeType::Secret,
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            mount_path: path.to_path_buf(),
            dir: FileId { dev: 7, ino },
            files: HashMap::from([(ino + 100, "key".to_string())]),
        }
    }

    /// A kernel map that refuses every insert, like a full or unwritable map.
    struct Refusing;
    impl DirMap for Refusing {
        fn insert(&mut self, _: &Volume) -> Result<(), VolumeError> {
            Err(VolumeError::Watch {
                path: PathBuf::from("watched_dirs"),
                source: std::io::Error::from_raw_os_error(libc::E2BIG),
            })
        }
        fn remove(&mut self, _: FileId) {
            panic!("nothing may be removed when the new key cannot be written");
        }
    }

    #[test]
    fn a_scan_never_drops_what_it_could_not_verify() {
        let registry = VolumeRegistry::new();
        let a = PathBuf::from("/k/pods/uid-1/volumes/kubernetes.io~secret/a");
        let b = PathBuf::from("/k/pods/uid-2/volumes/kubernetes.io~secret/b");
        let c = registry.apply(vec![found(&a, 1), found(&b, 2)], &[], &mut NoKernel);
        assert_eq!(c.added.len(), 2);
        // uid-2 could not be read: b stays; the pods dir could not be read: both stay.
        let c = registry.apply(
            vec![found(&a, 1)],
            &[PathBuf::from("/k/pods/uid-2")],
            &mut NoKernel,
        );
        assert!(c.is_empty(), "{c:?}");
        let c = registry.apply(vec![], &[PathBuf::from("/k/pods")], &mut NoKernel);
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(registry.volumes().len(), 2);
        // A verified absence removes.
        let c = registry.apply(vec![found(&a, 1)], &[], &mut NoKernel);
        assert_eq!(c.removed.len(), 1);
        assert!(registry.find_file(FileId { dev: 7, ino: 102 }).is_none());
        assert!(registry.find_file(FileId { dev: 7, ino: 101 }).is_some());
    }

    #[test]
    fn a_kernel_write_failure_keeps_the_old_entry_and_is_reported() {
        let registry = VolumeRegistry::new();
        let a = PathBuf::from("/k/pods/uid-1/volumes/kubernetes.io~secret/a");
        registry.apply(vec![found(&a, 1)], &[], &mut NoKernel);
        let c = registry.apply(vec![found(&a, 5)], &[], &mut Refusing);
        assert_eq!(c.failed.len(), 1, "{c:?}");
        assert!(c.rekeyed.is_empty());
        assert_eq!(
            registry.by_mount_path(&a).unwrap().dir.ino,
            1,
            "the old key stays"
        );
        let b = PathBuf::from("/k/pods/uid-1/volumes/kubernetes.io~secret/b");
        let c = registry.apply(vec![found(&a, 1), found(&b, 2)], &[], &mut Refusing);
        assert_eq!((c.added.len(), c.failed.len()), (0, 1));
        assert!(
            registry.by_mount_path(&b).is_none(),
            "retried by the next scan"
        );
    }
}

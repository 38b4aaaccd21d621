//! Scanning the kubelet volume tree: what is there, what could not be
//! read, and what was left out on purpose.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{FoundVolume, VolumeFile};
use crate::kernel::abi::types::cac_limits;
use crate::model::volume::{kernel_dev, FileId, VolumeType};

/// Directories below a volume directory whose files the kernel can still
/// match: its dentry walk checks `CAC_MAX_WALK` ancestors of an opened file.
pub const MAX_FILE_DEPTH: usize = cac_limits::CAC_MAX_WALK.0 as usize - 1;
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
    /// Inode -> key and revision.
    pub files: HashMap<u64, VolumeFile>,
    /// Directories deeper than [`MAX_FILE_DEPTH`] (not listed).
    pub too_deep: Vec<PathBuf>,
    /// Files beyond [`MAX_INDEX_FILES`].
    pub unindexed: usize,
}

/// Maps each regular file under a volume directory to its key.
///
/// AtomicWriter layout: visible keys are symlinks into `..data`, itself a
/// symlink to `..<timestamp>/`; the real files live in the timestamped
/// directories, whose name is dropped from the key and kept as the file's
/// revision. Symlinks are not
/// followed. A directory that cannot be read fails the whole index, so a
/// caller never mistakes an unreadable volume for an empty one.
pub fn index_files(dir: &Path) -> std::io::Result<FileIndex> {
    let mut out = FileIndex::default();
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize, None)];
    while let Some((path, prefix, depth, revision)) = stack.pop() {
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
                    let file = VolumeFile {
                        key: format!("{prefix}{name}"),
                        revision: revision.clone(),
                    };
                    out.files.insert(entry.metadata()?.ino(), file);
                }
            } else if ft.is_dir() {
                let (sub, rev) = if name.starts_with("..") {
                    let rev = revision.clone().or_else(|| Some(Arc::from(name.as_str())));
                    (prefix.clone(), rev)
                } else {
                    (format!("{prefix}{name}/"), revision.clone())
                };
                stack.push((entry.path(), sub, depth + 1, rev));
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
        revision: revision_of(&mount_path),
        dir: FileId {
            dev: kernel_dev(md.dev()),
            ino: md.ino(),
        },
        mount_path,
    });
}

/// The revision volume `dir` shows now: the name of the `..<timestamp>`
/// directory its `..data` symlink points to.
pub fn revision_of(dir: &Path) -> Option<Arc<str>> {
    let target = fs::read_link(dir.join("..data")).ok()?;
    Some(Arc::from(target.file_name()?.to_string_lossy().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut keys: Vec<_> = idx.values().map(|f| f.key.clone()).collect();
        keys.sort();
        assert_eq!(keys, ["nested/inner", "password", "plain"]);
        let ino = fs::metadata(ts.join("password")).unwrap().ino();
        assert_eq!(idx[&ino].key, "password");
        let ts_name = "..2024_01_01_00_00_00.123";
        assert_eq!(idx[&ino].revision.as_deref(), Some(ts_name));
        let inner = fs::metadata(ts.join("nested/inner")).unwrap().ino();
        assert_eq!(idx[&inner].revision.as_deref(), Some(ts_name));
        let plain = fs::metadata(d.path().join("plain")).unwrap().ino();
        assert_eq!(idx[&plain].revision, None);
        assert_eq!(revision_of(d.path()).as_deref(), Some(ts_name));
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
            .any(|f| f.key.ends_with("reachable") && !f.key.ends_with("unreachable")));
        assert!(!index.files.values().any(|f| f.key.ends_with("unreachable")));
        assert_eq!(index.too_deep, [deep]);
    }
}

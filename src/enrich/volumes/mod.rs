//! Volume discovery: finds the kubelet's Secret, ConfigMap, projected and
//! downward-API volume directories ([`scan`]), keeps the user-space
//! [`VolumeRegistry`] and the kernel's `watched_dirs` map in step with them
//! ([`registry`]), watches for changes ([`watcher`](super::watcher)), and
//! parses kubelet volume paths ([`path`]).
//!
//! A volume directory is `<kubelet-root>/pods/<pod-uid>/volumes/kubernetes.io~<plugin>/<volume-name>`.
//! Its kernel identity is (device, inode) as the kernel encodes them: the
//! device number from `stat()` is converted from glibc's encoding to the
//! kernel's `major << 20 | minor` ([`kernel_dev`](crate::model::volume::kernel_dev)),
//! and a directory that is the root of its own tmpfs (Secret, projected and
//! downward-API volumes) is inode 1 on a device of its own. A rescan after
//! every (re)mount refreshes the identity, since a key taken before the
//! kubelet mounts the tmpfs names the directory underneath.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::kernel::maps::{KernelDirs, MapError};
use crate::model::volume::{FileId, VolumeType};

pub mod path;
pub mod propagation;
pub mod registry;
pub mod scan;

pub use path::{parse_volume_path, VolumePath};
pub use registry::VolumeRegistry;
pub use scan::{
    index_files, revision_of, scan, FileIndex, IgnoreReason, Ignored, ScanFailure, ScanReport,
    MAX_FILE_DEPTH, MAX_INDEX_FILES,
};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("watching {path}")]
    Watch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {what}")]
    Create {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the volume-watcher thread")]
    Thread(#[source] std::io::Error),
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
    /// Inode of each file inside -> its key and revision.
    pub files: HashMap<u64, VolumeFile>,
    /// The revision the volume shows now: the `..<timestamp>` directory
    /// `..data` points to (AtomicWriter volumes; `None` for others).
    pub revision: Option<Arc<str>>,
}

/// A file of a volume directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Path inside the volume, without the `..<timestamp>/` part.
    pub key: String,
    /// The `..<timestamp>` directory the file lives in (`None` outside one).
    pub revision: Option<Arc<str>>,
}

impl Volume {
    /// The keys of the volume's files.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.files.values().map(|f| &f.key)
    }
}

/// One volume directory as found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundVolume {
    pub pod_uid: String,
    pub volume_type: VolumeType,
    pub name: String,
    pub mount_path: PathBuf,
    pub dir: FileId,
    pub files: HashMap<u64, VolumeFile>,
    pub revision: Option<Arc<str>>,
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

impl DirMap for KernelDirs {
    fn insert(&mut self, volume: &Volume) -> Result<(), VolumeError> {
        Ok(KernelDirs::insert(
            self,
            volume.dir,
            volume.id,
            volume.volume_type,
        )?)
    }

    fn remove(&mut self, dir: FileId) {
        KernelDirs::remove(self, dir);
    }
}

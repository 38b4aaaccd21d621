//! The registry of watched volumes, and how a scan is applied to it and
//! to the kernel map.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{Changes, DirMap, FoundVolume, Volume};
use crate::model::volume::{path_hash, FileId};

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
        let key = volume.files.get(&file.ino)?.key.clone();
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
            revision: f.revision,
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

#[cfg(test)]
mod tests {
    use super::super::{NoKernel, VolumeError};
    use super::*;
    use crate::model::volume::VolumeType;

    fn found(path: &Path, ino: u64) -> FoundVolume {
        FoundVolume {
            pod_uid: "uid-1".into(),
            volume_type: VolumeType::Secret,
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            mount_path: path.to_path_buf(),
            dir: FileId { dev: 7, ino },
            files: HashMap::from([(
                ino + 100,
                super::super::VolumeFile {
                    key: "key".into(),
                    revision: None,
                },
            )]),
            revision: None,
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

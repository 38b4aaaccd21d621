//! The ledger's state on disk, so that a restart keeps what was seen:
//! `<state_dir>/usage-ledger.json`, a JSON document (serde), written
//! atomically (a temporary file in the same directory, synced, then renamed
//! over the old one) and bounded by the ledger's own bounds. A missing file
//! starts an empty ledger; an unreadable or corrupt one too, with one
//! warning, never a crash.

use std::path::{Path, PathBuf};

use super::ledger::LedgerState;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading the usage state {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the usage state {path} is not a state this version can read")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the usage state {path} has version {found}, this collector reads {expected}")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "the usage state {path} has {size} bytes, more than the {MAX_STATE_BYTES} a state can have"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("writing the usage state {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The largest state read: far above what the ledger's bounds allow
/// (250,000 keys of 8 readers), so only a foreign file is refused.
pub const MAX_STATE_BYTES: u64 = 1 << 30;

/// The state file in `dir`.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("usage-ledger.json")
}

/// The baseline's state file beside the ledger's `state_file`.
pub fn baseline_file(state_file: &Path) -> PathBuf {
    state_file.with_file_name("baseline.json")
}

/// A state document with a version number.
pub trait Versioned: serde::Serialize + serde::de::DeserializeOwned {
    /// The version this collector writes and reads.
    const VERSION: u32;
    /// The version the document says it has.
    fn version(&self) -> u32;
}

impl Versioned for LedgerState {
    const VERSION: u32 = LedgerState::VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

/// The saved state, `None` when there is none yet.
pub fn load<T: Versioned>(path: &Path) -> Result<Option<T>, StateError> {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.len() > MAX_STATE_BYTES {
            return Err(StateError::TooLarge {
                path: path.into(),
                size: meta.len(),
            });
        }
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let state: T = serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
        path: path.into(),
        source,
    })?;
    if state.version() != T::VERSION {
        return Err(StateError::Version {
            path: path.into(),
            found: state.version(),
            expected: T::VERSION,
        });
    }
    Ok(Some(state))
}

/// Replaces the state at `path` with `state`, atomically: a reader (or a
/// crash) sees the old state or the new one, never a part.
pub fn save<T: serde::Serialize>(path: &Path, state: &T) -> Result<(), StateError> {
    let write = |source| StateError::Write {
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
    let mut out = std::io::BufWriter::new(tmp);
    serde_json::to_writer(&mut out, state).map_err(|e| write(e.into()))?;
    let tmp = out.into_inner().map_err(|e| write(e.into_error()))?;
    tmp.as_file().sync_all().map_err(write)?;
    tmp.persist(path).map_err(|e| write(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::ledger::{FileKey, Gap, KeyUsage};

    fn state() -> LedgerState {
        LedgerState {
            version: LedgerState::VERSION,
            saved_at: 100,
            keys: vec![(
                FileKey {
                    pod_uid: "pod-1".into(),
                    volume: "creds".into(),
                    key: "a".into(),
                },
                KeyUsage {
                    reads: 3,
                    ..KeyUsage::default()
                },
            )],
            volumes: Vec::new(),
            losses: Vec::new(),
            gaps: vec![Gap { from: 1, to: 2 }],
        }
    }

    #[test]
    fn saved_states_load_back_and_bad_ones_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_file(&dir.path().join("sub"));
        assert_eq!(load::<LedgerState>(&path).unwrap(), None, "no state yet");
        save(&path, &state()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
        std::fs::write(&path, b"{\"version\": 1, \"keys\": [").unwrap();
        assert!(matches!(
            load::<LedgerState>(&path),
            Err(StateError::Corrupt { .. })
        ));
        let mut newer = state();
        newer.version = 99;
        save(&path, &newer).unwrap();
        assert!(matches!(
            load::<LedgerState>(&path),
            Err(StateError::Version { found: 99, .. })
        ));
        let huge = std::fs::File::create(&path).unwrap();
        huge.set_len(MAX_STATE_BYTES + 1).unwrap();
        assert!(matches!(
            load::<LedgerState>(&path),
            Err(StateError::TooLarge { .. })
        ));
        save(&path, &state()).unwrap();
        // Only the state file is left: the temporary files were renamed.
        let files: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, [std::ffi::OsString::from("usage-ledger.json")]);
    }
}

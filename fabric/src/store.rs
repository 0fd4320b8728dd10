//! Records in `state_dir`: small JSON files written atomically (write to a temporary file in the
//! same directory, then rename), so a crash mid-write never leaves a half-written record behind.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where records of one kind (`pools`, `policies`, `endpoints`, `replicas`) live.
pub fn kind_dir(state_dir: &Path, kind: &str) -> PathBuf {
    state_dir.join(kind)
}

/// Opens (creating) a lock file, for an exclusive `flock` on it.
pub fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Writes `value` as JSON to `path` atomically, creating the directory.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    replace_json(path, value, true)
}

/// Writes `value` as JSON to `path` atomically (a temporary file renamed over it), synced to
/// the disk first when `sync`. Unsynced, the new file survives the process being killed or
/// crashing at any point (the kernel has it), though not necessarily the machine losing power:
/// for records written on a hot path.
pub fn replace_json<T: Serialize>(path: &Path, value: &T, sync: bool) -> std::io::Result<()> {
    // Rendered whole first: serde_json writes each token as it goes, and the file is
    // unbuffered, so rendering into it made a write call per token (the quota file is replaced
    // every few thousand requests of a busy key).
    replace_bytes(path, &serde_json::to_vec_pretty(value)?, sync)
}

/// Writes `bytes` to `path` atomically, creating the directory: a temporary file in the same
/// directory (created readable by its owner only), synced to the disk when `sync`, then renamed
/// over `path`.
fn replace_bytes(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    if sync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes a secret to `path` atomically, creating the directory; the file is readable by its
/// owner only (a temporary file is created with mode 0600 and renamed, so the secret is never
/// readable by others, even briefly).
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    replace_bytes(path, content.as_bytes(), true)
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The record.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not the JSON record it should be.
    #[error("{} is corrupt: {source}", path.display())]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// Reads a JSON record; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes a record; a missing one is fine.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pools/a.json");
        write_json(&path, &serde_json::json!({"name": "a"})).unwrap();
        let back: serde_json::Value = read_json(&path).unwrap().unwrap();
        assert_eq!(back["name"], "a");
        assert!(
            read_json::<serde_json::Value>(&dir.path().join("none.json"))
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, "{").unwrap();
        let err = read_json::<serde_json::Value>(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("corrupt"), "{err}");
        remove(&path).unwrap();
        remove(&path).unwrap();
    }
}

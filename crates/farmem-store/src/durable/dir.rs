//! The data directory: its lock, and the names of its log segments and snapshots.
//!
//! ```text
//! DIR/LOCK                    held (flock) by the server using the directory
//! DIR/wal-<n>.log             log segment n (16 hex digits)
//! DIR/snap-<n>.snap           snapshot taken when segment n started; segments >= n apply after it
//! DIR/snap-<n>.tmp            a snapshot being written (removed at recovery)
//! ```

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::DurableError;

/// An open, locked data directory.
#[derive(Debug)]
pub(crate) struct DataDir {
    path: PathBuf,
    /// Holds the lock for as long as the directory is in use.
    _lock: File,
}

/// What a directory holds.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Log segment numbers, ascending.
    pub(crate) segments: Vec<u64>,
    /// Complete snapshot numbers, ascending.
    pub(crate) snapshots: Vec<u64>,
    /// Unfinished snapshot files.
    pub(crate) partial: Vec<PathBuf>,
}

/// Maps an I/O error on `path` to a [`DurableError`].
pub(crate) fn io_err(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> DurableError + use<> {
    let path = path.to_path_buf();
    move |source| DurableError::Io { what, path, source }
}

fn parse(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (hex.len() == 16).then_some(())?;
    u64::from_str_radix(hex, 16).ok()
}

impl DataDir {
    /// Opens (creating it if needed) and locks `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, DurableError> {
        std::fs::create_dir_all(path).map_err(io_err("cannot create data directory", path))?;
        let lock_path = path.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("cannot open lock file", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DurableError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err("cannot lock", &lock_path)(e));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Path of log segment `n`.
    pub(crate) fn segment(&self, n: u64) -> PathBuf {
        self.path.join(format!("wal-{n:016x}.log"))
    }

    /// Path of snapshot `n`.
    pub(crate) fn snapshot(&self, n: u64) -> PathBuf {
        self.path.join(format!("snap-{n:016x}.snap"))
    }

    /// Path of snapshot `n` while it is written.
    pub(crate) fn snapshot_tmp(&self, n: u64) -> PathBuf {
        self.path.join(format!("snap-{n:016x}.tmp"))
    }

    /// Lists the segments and snapshots.
    pub(crate) fn list(&self) -> Result<Listing, DurableError> {
        let mut l = Listing::default();
        let entries = std::fs::read_dir(&self.path).map_err(io_err("cannot list", &self.path))?;
        for e in entries {
            let e = e.map_err(io_err("cannot list", &self.path))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(n) = parse(name, "wal-", ".log") {
                l.segments.push(n);
            } else if let Some(n) = parse(name, "snap-", ".snap") {
                l.snapshots.push(n);
            } else if parse(name, "snap-", ".tmp").is_some() {
                l.partial.push(e.path());
            }
        }
        l.segments.sort_unstable();
        l.snapshots.sort_unstable();
        Ok(l)
    }

    /// Makes the directory's entries (created, renamed, removed files) durable.
    pub(crate) fn sync(&self) -> Result<(), DurableError> {
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io_err("cannot sync directory", &self.path))
    }

    /// Removes `path`, ignoring a file already gone.
    pub(crate) fn remove(&self, path: &Path) -> Result<(), DurableError> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err("cannot remove", path)(e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_locked_while_open_and_names_parse_back() {
        let base = std::env::temp_dir().join(format!("farmem-dir-{}", std::process::id()));
        let d = DataDir::open(&base).unwrap();
        assert!(matches!(
            DataDir::open(&base),
            Err(DurableError::Locked { .. })
        ));
        File::create(d.segment(3)).unwrap();
        File::create(d.segment(1)).unwrap();
        File::create(d.snapshot(2)).unwrap();
        File::create(d.snapshot_tmp(5)).unwrap();
        File::create(base.join("wal-xyz.log")).unwrap();
        let l = d.list().unwrap();
        assert_eq!(l.segments, vec![1, 3]);
        assert_eq!(l.snapshots, vec![2]);
        assert_eq!(l.partial.len(), 1);
        drop(d);
        let again = DataDir::open(&base).unwrap();
        drop(again);
        std::fs::remove_dir_all(&base).unwrap();
    }
}

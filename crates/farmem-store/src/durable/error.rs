//! Errors of durable storage.

use std::path::PathBuf;

use crate::StoreError;

/// Why a data directory could not be opened, recovered or snapshotted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// A file or directory of the data directory could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (a running server) holds the data directory's lock.
    #[error("data directory {path} is in use by another server (its lock file is held)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// Data that must be whole is not: a damaged snapshot, a log segment damaged before its
    /// end, or a segment missing from the sequence. The directory is left as it is.
    #[error("data directory is damaged: {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The recovered objects do not fit the server's capacity.
    #[error("the recovered data does not fit the capacity")]
    Capacity(#[source] StoreError),
}

/// Why a change could not be written to the log; the change was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The log cannot grow: the disk (or the data directory's limit) is full.
    #[error("the log is full: {needed} more bytes do not fit on the disk or under the limit")]
    DiskFull {
        /// Bytes the change needs.
        needed: u64,
    },
    /// Writing the log failed earlier; the server takes no more changes until it restarts.
    #[error("the log failed ({kind}); changes are refused until the server restarts")]
    Failed {
        /// The kind of the I/O error that failed it (logged in full when it happened).
        kind: std::io::ErrorKind,
    },
}

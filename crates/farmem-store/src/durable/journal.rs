//! A session's hook into the log: what the execution path calls to log its changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::LogError;
use super::record::Record;
use super::wal::{Ticket, Wal};

/// Logs the changes of one session. Held by its namespace; cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    wal: Arc<Wal>,
    session: u64,
    /// End of the last record of this session.
    last: Arc<AtomicU64>,
}

/// Room reserved for one change of a session's state: reserve before making the change,
/// [`Entry::write`] once it is made (under the same lock), drop it if the change fails.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    ticket: Ticket<'a>,
    last: &'a AtomicU64,
}

impl Entry<'_> {
    /// Logs `rec`, the change the room was reserved for.
    pub(crate) fn write(self, rec: &Record<'_>) {
        let pos = self.ticket.write(rec);
        self.last.fetch_max(pos, Ordering::Relaxed);
    }
}

impl Journal {
    pub(crate) fn new(wal: Arc<Wal>, session: u64) -> Self {
        Self {
            wal,
            session,
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The session this journal logs.
    pub(crate) fn session(&self) -> u64 {
        self.session
    }

    /// Reserves room for a record of `len` bytes (see [`Record::len`]).
    pub(crate) fn reserve(&self, len: usize) -> Result<Entry<'_>, LogError> {
        Ok(Entry {
            ticket: self.wal.reserve(len)?,
            last: &self.last,
        })
    }

    /// Logs the answer of non-idempotent request `rid` (kept for retries after a restart).
    /// When the log cannot take it, a retry after a restart runs the request again.
    pub(crate) fn answer(&self, rid: u64, answer: &[u8]) {
        let answer = if answer.len() > crate::dedup::MAX_KEPT_ANSWER {
            &[][..]
        } else {
            answer
        };
        let rec = Record::Answer {
            session: self.session,
            rid,
            answer,
        };
        match self.reserve(rec.len()) {
            Ok(e) => e.write(&rec),
            Err(e) => tracing::warn!(error = %e, rid, "the answer of a request was not logged"),
        }
    }

    /// Waits until every change this session logged is durable; only then may it be
    /// acknowledged.
    ///
    /// # Errors
    /// [`LogError::Failed`] when the log could not be written: the changes are not durable
    /// and must not be acknowledged.
    pub fn commit(&self) -> Result<(), LogError> {
        self.wal.wait(self.last.load(Ordering::Relaxed))
    }
}

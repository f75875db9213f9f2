//! Recovery: rebuild sessions, objects and tables from the newest snapshot and the log segments
//! after it, cutting a torn tail off the last segment.
//!
//! Replaying a record is idempotent against a snapshot that already holds it (a put sets the
//! bytes, a patch writes absolute bytes, a free or a close removes), which is what lets a
//! snapshot be taken while requests keep changing the state (see [`super::snapshot`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Instant;

use farmem_proto::agent::{AgentMessage, HtKeysArgs};

use super::dir::{DataDir, io_err};
use super::record::{self, FRAME, Frame, Record};
use super::{DurableError, RecoveryStats};
use crate::{Session, StoreError};

/// How a file's records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Cleanly (end of file or preallocated zeros) at this offset.
    End(u64),
    /// At a torn or corrupt record starting at this offset.
    Bad(u64),
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Calls `f` with every valid record of `path` and its offset, until the records end.
fn read_file(
    path: &Path,
    f: &mut dyn FnMut(Record<'_>) -> Result<(), DurableError>,
) -> Result<Tail, DurableError> {
    let file = File::open(path).map_err(io_err("cannot open", path))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut payload = Vec::new();
    let mut at = 0u64;
    loop {
        let mut h = [0u8; FRAME];
        let n = fill(&mut r, &mut h).map_err(io_err("cannot read", path))?;
        if n < FRAME {
            return Ok(if h[..n].iter().all(|&b| b == 0) {
                Tail::End(at)
            } else {
                Tail::Bad(at)
            });
        }
        let len = match record::frame(&h) {
            Frame::End => return Ok(Tail::End(at)),
            Frame::Bad => return Ok(Tail::Bad(at)),
            Frame::Payload(len) => len,
        };
        payload.resize(len, 0);
        if fill(&mut r, &mut payload).map_err(io_err("cannot read", path))? < len {
            return Ok(Tail::Bad(at));
        }
        let Some(rec) = record::open(&h, &payload) else {
            return Ok(Tail::Bad(at));
        };
        f(rec)?;
        at += (FRAME + len) as u64;
    }
}

/// Sessions rebuilt so far.
pub(crate) struct Replay<'m> {
    /// Key to resume secret and session.
    pub(crate) sessions: HashMap<u64, (u64, Session)>,
    make: &'m dyn Fn(u64) -> Session,
    pub(crate) stats: RecoveryStats,
}

impl std::fmt::Debug for Replay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl<'m> Replay<'m> {
    pub(crate) fn new(make: &'m dyn Fn(u64) -> Session) -> Self {
        Self {
            sessions: HashMap::new(),
            make,
            stats: RecoveryStats::default(),
        }
    }

    /// Applies one record. Records of sessions that no longer exist are skipped.
    fn apply(&mut self, rec: Record<'_>) -> Result<(), DurableError> {
        self.stats.records += 1;
        let session = match rec {
            Record::SessionOpen { session, secret } => {
                let make = self.make;
                self.sessions
                    .entry(session)
                    .or_insert_with(|| (secret, make(session)));
                return Ok(());
            }
            Record::SessionClose { session } => {
                self.sessions.remove(&session);
                return Ok(());
            }
            Record::SnapshotBegin { .. } | Record::SnapshotEnd { .. } => return Ok(()),
            Record::Put { session, .. }
            | Record::Patch { session, .. }
            | Record::Free { session, .. }
            | Record::Answer { session, .. }
            | Record::TablePut { session, .. }
            | Record::TableRemove { session, .. }
            | Record::TableDrop { session, .. } => session,
        };
        let Some((_, s)) = self.sessions.get(&session) else {
            self.stats.skipped += 1;
            return Ok(());
        };
        let ctx = s.context();
        let fits = |r: Result<(), StoreError>| match r {
            Err(e @ (StoreError::OutOfCapacity { .. } | StoreError::TooLarge { .. })) => {
                Err(DurableError::Capacity(e))
            }
            _ => Ok(()),
        };
        match rec {
            Record::Put { id, data, .. } => fits(s.ns.put(id, data))?,
            Record::Patch { id, edits, .. } => {
                // A patch replayed onto a later state (see the module doc) may not apply; the
                // put that made that state follows it in the log.
                match record::decode_patch(edits) {
                    Some(e) if s.ns.patch(id, e.iter().copied()).is_ok() => {}
                    _ => self.stats.skipped += 1,
                }
            }
            Record::Free { id, .. } => {
                s.ns.free(id);
            }
            Record::TablePut { args, .. } if s.agent.tables.put_encoded(&ctx, args).is_err() => {
                self.stats.skipped += 1;
            }
            Record::TableRemove { args, .. } => {
                let r = HtKeysArgs::decode(args)
                    .map_err(Into::into)
                    .and_then(|a| s.agent.tables.remove(&ctx, &a));
                if r.is_err() {
                    self.stats.skipped += 1;
                }
            }
            Record::TableDrop { table, .. } => {
                let _ = s.agent.tables.drop_table(&ctx, table);
            }
            Record::Answer { rid, answer, .. } => s.dedup.restore(rid, answer, &s.ns),
            _ => {}
        }
        Ok(())
    }
}

/// What recovery leaves for the writer.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The segment the writer starts.
    pub(crate) next_segment: u64,
    /// Live segments replayed (number, bytes).
    pub(crate) older: Vec<(u64, u64)>,
}

fn corrupt(path: &Path, offset: u64, reason: &'static str) -> DurableError {
    DurableError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

/// Rebuilds `replay` from `dir`.
///
/// # Errors
/// [`DurableError::Corrupt`] for a damaged snapshot, a segment damaged before its end or a
/// missing segment; [`DurableError::Io`]; [`DurableError::Capacity`].
pub(crate) fn recover(dir: &DataDir, replay: &mut Replay<'_>) -> Result<Recovered, DurableError> {
    let t0 = Instant::now();
    let listing = dir.list()?;
    for p in &listing.partial {
        dir.remove(p)?;
    }
    let base = listing.snapshots.last().copied();
    if let Some(n) = base {
        let path = dir.snapshot(n);
        let mut state = 0u8; // 0: expect begin, 1: in body, 2: ended
        let tail = read_file(&path, &mut |rec| {
            match (state, &rec) {
                (0, Record::SnapshotBegin { segment }) if *segment == n => state = 1,
                (1, Record::SnapshotEnd { .. }) => state = 2,
                (1, _) => replay.apply(rec)?,
                _ => return Err(corrupt(&path, 0, "records out of place in the snapshot")),
            }
            Ok(())
        })?;
        match tail {
            Tail::End(at) if state == 2 => replay.stats.bytes += at,
            Tail::End(at) | Tail::Bad(at) => {
                return Err(corrupt(&path, at, "the snapshot is damaged or incomplete"));
            }
        }
        for &old in listing.snapshots.iter().filter(|&&s| s < n) {
            dir.remove(&dir.snapshot(old))?;
        }
    }
    let first = base.unwrap_or(1);
    for &old in listing.segments.iter().filter(|&&s| s < first) {
        dir.remove(&dir.segment(old))?;
    }
    let live: Vec<u64> = listing
        .segments
        .iter()
        .copied()
        .filter(|&s| s >= first)
        .collect();
    let mut expect = first;
    let mut older = Vec::new();
    for (i, &seg) in live.iter().enumerate() {
        let path = dir.segment(seg);
        if seg != expect {
            return Err(corrupt(&dir.segment(expect), 0, "a log segment is missing"));
        }
        expect += 1;
        let tail = read_file(&path, &mut |rec| replay.apply(rec))?;
        let at = match tail {
            Tail::End(at) => at,
            Tail::Bad(at) if i + 1 == live.len() => {
                let size = std::fs::metadata(&path)
                    .map_err(io_err("cannot read", &path))?
                    .len();
                tracing::warn!(
                    segment = %path.display(),
                    offset = at,
                    "cutting a torn tail off the log"
                );
                replay.stats.cut_bytes = size - at;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("cannot open", &path))?;
                f.set_len(at)
                    .and_then(|()| f.sync_all())
                    .map_err(io_err("cannot cut", &path))?;
                at
            }
            Tail::Bad(at) => return Err(corrupt(&path, at, "a log segment is damaged")),
        };
        replay.stats.bytes += at;
        let size = std::fs::metadata(&path)
            .map_err(io_err("cannot read", &path))?
            .len();
        older.push((seg, size));
    }
    if base.is_some() && live.first() != base.as_ref() {
        return Err(corrupt(
            &dir.segment(first),
            0,
            "the log segment that follows the snapshot is missing",
        ));
    }
    replay.stats.sessions = replay.sessions.len() as u64;
    replay.stats.objects = replay.sessions.values().map(|(_, s)| s.ns.len()).sum();
    replay.stats.elapsed = t0.elapsed();
    Ok(Recovered {
        next_segment: expect,
        older,
    })
}

//! Snapshots: the whole state written to one file so the log before it can be removed.
//!
//! A snapshot is taken while requests run (fuzzy): the log first moves to a new segment `n`,
//! then every session registered at that point is copied one shard at a time (a shard is
//! locked only while it is copied), so the copy of each object holds at least every change
//! logged before segment `n`. Changes made during the copy are in segment `n` and later, and
//! replaying them over the copy is idempotent (see [`super::recovery`]). A session is
//! registered before its open is logged and unregistered before its close is logged, so a
//! session the copy misses has its whole history from segment `n` on. The file is written as
//! `snap-n.tmp`, synced and renamed; then the older snapshots and segments go.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::DurableError;
use super::dir::{DataDir, io_err};
use super::record::Record;
use super::wal::Wal;
use crate::Session;

/// What a snapshot wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotStats {
    /// The log segment it starts from.
    pub segment: u64,
    /// Sessions it holds.
    pub sessions: u64,
    /// Objects and table parts it holds.
    pub records: u64,
    /// Size of the snapshot file.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Table entries per snapshot record, in bytes (about).
const TABLE_PART: usize = 1 << 20;

/// Takes a snapshot of the sessions `list` gives (called once the log has moved on).
pub(crate) fn take(
    dir: &DataDir,
    wal: &Wal,
    list: impl FnOnce() -> Vec<(u64, Arc<Session>)>,
) -> Result<SnapshotStats, DurableError> {
    let t0 = Instant::now();
    let segment = wal.rotate()?;
    let sessions = list();
    let tmp = dir.snapshot_tmp(segment);
    let file = File::create(&tmp).map_err(io_err("cannot create snapshot", &tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut stats = SnapshotStats {
        segment,
        sessions: sessions.len() as u64,
        ..SnapshotStats::default()
    };
    let mut buf = Vec::new();
    let mut write = |w: &mut BufWriter<File>, rec: Record<'_>| {
        buf.clear();
        rec.encode(&mut buf);
        w.write_all(&buf)
    };
    let r = (|| -> std::io::Result<()> {
        write(&mut w, Record::SnapshotBegin { segment })?;
        for (secret, s) in &sessions {
            let session = s.key;
            write(
                &mut w,
                Record::SessionOpen {
                    session,
                    secret: *secret,
                },
            )?;
            s.ns.dump(session, &mut |bytes, n| {
                stats.records += n;
                w.write_all(bytes)
            })?;
            s.agent.tables.dump(TABLE_PART, &mut |args| {
                stats.records += 1;
                write(&mut w, Record::TablePut { session, args })
            })?;
            s.dedup.for_each(|rid, answer| {
                write(
                    &mut w,
                    Record::Answer {
                        session,
                        rid,
                        answer,
                    },
                )
            })?;
        }
        write(
            &mut w,
            Record::SnapshotEnd {
                sessions: stats.sessions,
                records: stats.records,
            },
        )?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        stats.bytes = file.metadata()?.len();
        Ok(())
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("cannot write snapshot", &tmp)(e));
    }
    let path = dir.snapshot(segment);
    std::fs::rename(&tmp, &path).map_err(io_err("cannot rename snapshot", &tmp))?;
    dir.sync()?;
    for old in wal.retire_before(segment) {
        dir.remove(&dir.segment(old))?;
    }
    for old in dir.list()?.snapshots.into_iter().filter(|&s| s < segment) {
        dir.remove(&dir.snapshot(old))?;
    }
    dir.sync()?;
    stats.elapsed = t0.elapsed();
    Ok(stats)
}

//! The write-ahead log writer: space reservation, group commit, segment rotation.
//!
//! A change is logged in two steps, both under the lock that orders it in memory (an object's
//! shard lock, a session's table lock): [`Wal::reserve`] takes room for its record *before* the
//! change is made (so a full disk refuses the change and nothing is made), then
//! [`Ticket::write`] appends the record to the in-memory buffer once the change is made. The
//! room is real disk space: segments grow by preallocated chunks (`fallocate`), so writing a
//! reserved record cannot run out of space.
//!
//! [`Wal::wait`] makes everything up to a log position durable under the [`SyncPolicy`]: the
//! first waiter becomes the leader, writes every buffered record (of every connection) with one
//! `pwrite` and, under [`SyncPolicy::Always`], one `fdatasync`; the others wait for it, and
//! their records are usually in its batch (group commit).

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::dir::{DataDir, io_err};
use super::record::Record;
use super::{DurableError, LogError, SyncPolicy};

/// Writes the log of one data directory.
#[derive(Debug)]
pub(crate) struct Wal {
    st: Mutex<State>,
    done: Condvar,
    dir: Arc<DataDir>,
    sync: SyncPolicy,
    /// Segments grow by this much at a time.
    chunk: u64,
    /// Most bytes all live segments may take together.
    limit: u64,
}

#[derive(Debug)]
struct State {
    buf: Vec<u8>,
    spare: Vec<u8>,
    /// Log position: bytes appended since the writer started.
    appended: u64,
    /// Everything up to here is durable under the policy.
    durable: u64,
    /// A leader is writing.
    flushing: bool,
    /// Writing failed: nothing more is taken.
    failed: Option<ErrorKind>,
    file: Arc<File>,
    segment: u64,
    /// Bytes allocated in the current segment.
    seg_alloc: u64,
    /// Bytes of the current segment written or buffered.
    seg_taken: u64,
    /// Bytes of the current segment handed to the file.
    seg_flushed: u64,
    /// Bytes reserved by tickets not yet written.
    reserved: u64,
    /// Older live segments and their sizes.
    older: Vec<(u64, u64)>,
}

/// Room for one record in the log; returned unused when dropped.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    wal: &'a Wal,
    len: u64,
}

impl Ticket<'_> {
    /// Appends `rec` (of the length reserved) to the log; returns its end position.
    pub(crate) fn write(mut self, rec: &Record<'_>) -> u64 {
        let len = std::mem::take(&mut self.len);
        let mut st = self.wal.st.lock();
        let at = st.buf.len();
        rec.encode(&mut st.buf);
        debug_assert_eq!((st.buf.len() - at) as u64, len);
        let n = (st.buf.len() - at) as u64;
        st.reserved -= len;
        st.seg_taken += n;
        st.appended += n;
        st.appended
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.len > 0 {
            self.wal.st.lock().reserved -= self.len;
        }
    }
}

fn create_segment(dir: &DataDir, n: u64) -> Result<File, DurableError> {
    let path = dir.segment(n);
    OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err("cannot create log segment", &path))
}

/// Grows `file` from `at` by `by` bytes of allocated (zeroed) space.
fn allocate(file: &File, at: u64, by: u64) -> std::io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), at, by) {
        Ok(()) => Ok(()),
        // A file system without preallocation: extend the file; a full disk then shows at
        // the write, which fails the log.
        Err(rustix::io::Errno::OPNOTSUPP) => file.set_len(at + by),
        Err(e) => Err(e.into()),
    }
}

fn is_full(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

impl Wal {
    /// Starts a new segment `segment` in `dir`; `older` are the live segments before it (number,
    /// bytes).
    pub(crate) fn create(
        dir: Arc<DataDir>,
        segment: u64,
        older: Vec<(u64, u64)>,
        sync: SyncPolicy,
        chunk: u64,
        limit: u64,
    ) -> Result<Self, DurableError> {
        let file = create_segment(&dir, segment)?;
        dir.sync()?;
        Ok(Self {
            st: Mutex::new(State {
                buf: Vec::new(),
                spare: Vec::new(),
                appended: 0,
                durable: 0,
                flushing: false,
                failed: None,
                file: Arc::new(file),
                segment,
                seg_alloc: 0,
                seg_taken: 0,
                seg_flushed: 0,
                reserved: 0,
                older,
            }),
            done: Condvar::new(),
            dir,
            sync,
            // A small limit gets small chunks: a chunk never takes more than an eighth of it.
            chunk: chunk.min(limit / 8).max(4096),
            limit,
        })
    }

    /// Takes room for a record of `len` bytes, growing the segment if needed.
    ///
    /// # Errors
    /// [`LogError::DiskFull`] when the disk or the limit has no room for it,
    /// [`LogError::Failed`] after a write failed.
    pub(crate) fn reserve(&self, len: usize) -> Result<Ticket<'_>, LogError> {
        let len = len as u64;
        let mut st = self.st.lock();
        if let Some(kind) = st.failed {
            return Err(LogError::Failed { kind });
        }
        let need = st.seg_taken + st.reserved + len;
        if need > st.seg_alloc {
            let by = (need - st.seg_alloc).max(self.chunk).next_multiple_of(4096);
            let live: u64 = st.older.iter().map(|s| s.1).sum::<u64>() + st.seg_alloc;
            if live.saturating_add(by) > self.limit {
                return Err(LogError::DiskFull { needed: len });
            }
            if let Err(e) = allocate(&st.file, st.seg_alloc, by) {
                if is_full(e.kind()) {
                    return Err(LogError::DiskFull { needed: len });
                }
                tracing::error!(error = %e, "cannot grow the log: it takes no more changes");
                st.failed = Some(e.kind());
                return Err(LogError::Failed { kind: e.kind() });
            }
            st.seg_alloc += by;
        }
        st.reserved += len;
        Ok(Ticket { wal: self, len })
    }

    /// The current log position (end of the last record appended).
    pub(crate) fn position(&self) -> u64 {
        self.st.lock().appended
    }

    /// Waits until the log is durable up to `pos` (writing it as the leader if no one is).
    ///
    /// # Errors
    /// [`LogError::Failed`] when writing fails (now or before).
    pub(crate) fn wait(&self, pos: u64) -> Result<(), LogError> {
        let mut st = self.st.lock();
        loop {
            if st.durable >= pos {
                return Ok(());
            }
            if let Some(kind) = st.failed {
                return Err(LogError::Failed { kind });
            }
            if st.flushing {
                self.done.wait(&mut st);
                continue;
            }
            st.flushing = true;
            let spare = std::mem::take(&mut st.spare);
            let buf = std::mem::replace(&mut st.buf, spare);
            let (file, at, end) = (st.file.clone(), st.seg_flushed, st.appended);
            st.seg_flushed += buf.len() as u64;
            drop(st);
            let r = self.write_out(&file, &buf, at);
            st = self.st.lock();
            st.flushing = false;
            let mut buf = buf;
            buf.clear();
            if buf.capacity() <= 16 << 20 {
                st.spare = buf;
            }
            match r {
                Ok(()) => st.durable = st.durable.max(end),
                Err(e) => {
                    tracing::error!(error = %e, "writing the log failed: it takes no more changes");
                    st.failed = Some(e.kind());
                }
            }
            self.done.notify_all();
        }
    }

    fn write_out(&self, file: &File, buf: &[u8], at: u64) -> std::io::Result<()> {
        if !buf.is_empty() {
            file.write_all_at(buf, at)?;
        }
        if self.sync == SyncPolicy::Always {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Starts segment `current + 1` (records appended from now on go there), then writes and
    /// syncs everything appended before it. Returns the new segment's number.
    ///
    /// Changes are not held up by it: the new segment is created, grown and its directory
    /// entry synced before the log's lock is taken, the switch itself is a few assignments,
    /// and the old segment's tail is written and synced with the lock released, this call
    /// acting as the group-commit leader (so no commit counts as durable before that sync).
    /// Rotations are serialised by the caller (one snapshot at a time).
    ///
    /// # Errors
    /// A failed write or sync (the log is failed then), or the new segment cannot be created
    /// (nothing changed then).
    pub(crate) fn rotate(&self) -> Result<u64, DurableError> {
        let (current, reserved) = {
            let st = self.st.lock();
            (st.segment, st.reserved)
        };
        let next = current + 1;
        let path = self.dir.segment(next);
        let file = create_segment(&self.dir, next)?;
        // Outstanding reservations will be written to the new segment.
        let mut by = (reserved.max(1)).next_multiple_of(4096).max(self.chunk);
        let made = allocate(&file, 0, by)
            .map_err(io_err("cannot grow log segment", &path))
            .and_then(|()| self.dir.sync());
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let mut st = self.st.lock();
        debug_assert_eq!(st.segment, current, "rotations are serialised");
        while st.flushing {
            self.done.wait(&mut st);
        }
        if st.reserved > by {
            // Reservations grew while the segment was made (rare): grow it under the lock.
            let more = (st.reserved - by).next_multiple_of(4096);
            allocate(&file, by, more).map_err(io_err("cannot grow log segment", &path))?;
            by += more;
        }
        st.flushing = true;
        let buf = std::mem::take(&mut st.buf);
        let (old, at, end) = (st.file.clone(), st.seg_flushed, st.appended);
        let old_path = self.dir.segment(st.segment);
        let (seg, size) = (st.segment, st.seg_alloc);
        st.older.push((seg, size));
        st.file = Arc::new(file);
        st.segment = next;
        st.seg_alloc = by;
        st.seg_taken = 0;
        st.seg_flushed = 0;
        drop(st);
        let r = old.write_all_at(&buf, at).and_then(|()| old.sync_data());
        let mut st = self.st.lock();
        st.flushing = false;
        match &r {
            Ok(()) => st.durable = st.durable.max(end),
            Err(e) => {
                tracing::error!(error = %e, "writing the log failed: it takes no more changes");
                st.failed = Some(e.kind());
            }
        }
        self.done.notify_all();
        drop(st);
        r.map_err(io_err("cannot write log segment", &old_path))?;
        Ok(next)
    }

    /// Forgets the older segments before `segment` (their files are about to be removed);
    /// returns their numbers.
    pub(crate) fn retire_before(&self, segment: u64) -> Vec<u64> {
        let mut st = self.st.lock();
        let (gone, kept): (Vec<_>, Vec<_>) = st.older.iter().partition(|s| s.0 < segment);
        st.older = kept;
        gone.into_iter().map(|s| s.0).collect()
    }

    /// Bytes of the live segments.
    pub(crate) fn live_bytes(&self) -> u64 {
        let st = self.st.lock();
        st.older.iter().map(|s| s.1).sum::<u64>() + st.seg_taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::record::{Next, next};

    fn dir(name: &str) -> Arc<DataDir> {
        let p = std::env::temp_dir().join(format!("farmem-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Arc::new(DataDir::open(&p).unwrap())
    }

    fn read_all(path: &std::path::Path) -> Vec<u64> {
        let d = std::fs::read(path).unwrap();
        let mut at = 0;
        let mut ids = Vec::new();
        while let Next::Record(Record::Free { id, .. }, n) = next(&d[at..]) {
            ids.push(id);
            at += n;
        }
        ids
    }

    #[test]
    fn concurrent_writers_share_commits_and_every_record_lands_in_order_of_position() {
        let d = dir("group");
        let wal = Wal::create(
            d.clone(),
            1,
            Vec::new(),
            SyncPolicy::Always,
            1 << 16,
            u64::MAX,
        )
        .unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let wal = &wal;
                s.spawn(move || {
                    for i in 0..200 {
                        let rec = Record::Free {
                            session: t,
                            id: t * 1000 + i,
                        };
                        let pos = wal.reserve(rec.len()).unwrap().write(&rec);
                        wal.wait(pos).unwrap();
                    }
                });
            }
        });
        let mut ids = read_all(&d.segment(1));
        assert_eq!(ids.len(), 800);
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 800);
        std::fs::remove_dir_all(d.path()).unwrap();
    }

    #[test]
    fn a_limit_refuses_reservations_and_dropped_tickets_give_their_room_back() {
        let d = dir("limit");
        let wal = Wal::create(d.clone(), 1, Vec::new(), SyncPolicy::None, 4096, 8192).unwrap();
        let rec = Record::Free { session: 1, id: 2 };
        let mut n = 0;
        loop {
            match wal.reserve(rec.len()) {
                Ok(t) => {
                    t.write(&rec);
                    n += 1;
                }
                Err(LogError::DiskFull { needed }) => {
                    assert_eq!(needed, rec.len() as u64);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(n, 8192 / rec.len());
        assert!(wal.reserve(rec.len()).is_err());
        wal.wait(wal.position()).unwrap();
        assert_eq!(read_all(&d.segment(1)).len(), n);
        // After a rotation the old segment counts until it is retired: the new one takes only
        // its first chunk.
        assert_eq!(wal.rotate().unwrap(), 2);
        let fill = |wal: &Wal| {
            let mut n = 0;
            while let Ok(t) = wal.reserve(rec.len()) {
                t.write(&rec);
                n += 1;
            }
            n
        };
        assert_eq!(fill(&wal), 4096 / rec.len());
        assert_eq!(wal.retire_before(2), vec![1]);
        assert!(fill(&wal) > 0);
        std::fs::remove_dir_all(d.path()).unwrap();
    }
}

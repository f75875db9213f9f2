//! The FUSE daemon: a `fuser` session whose threads serve one file, `swap`, whose 4 KiB pages
//! are objects in a memory server.
//!
//! Reads of pages never written return zeros without a round trip. A read or write of several
//! pages costs one `get_many`/`put_many` round trip. A backend error is answered with `EIO` (the
//! kernel then fails that swap-in or swap-out) and counted; it never stops the daemon.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use farmem::{Backend, ObjectId};
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, Session, SessionACL,
    WriteFlags,
};

/// Page size of the swap file (objects on the server have this size).
pub const PAGE: usize = 4096;
/// Largest read or write the kernel may send (`max_write`, `max_pages` pages).
pub const MAX_IO: usize = 1 << 20;
/// Name of the one file.
pub const FILE_NAME: &[u8] = b"swap";
const ROOT_INO: INodeNo = INodeNo(1);
const FILE_INO: INodeNo = INodeNo(2);

/// Counters of a daemon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DaemonStats {
    /// Pages stored to the memory server (swap-outs).
    pub pages_written: u64,
    /// Pages fetched from the memory server (swap-ins).
    pub pages_read: u64,
    /// Pages read that were never written (answered with zeros locally).
    pub zero_pages_read: u64,
    /// FUSE requests served.
    pub requests: u64,
    /// Requests answered with an error because the backend failed.
    pub backend_errors: u64,
    /// Most requests being served at once (how much of the kernel's concurrency was used).
    pub max_in_flight: u64,
}

/// The swap file's pages on the backend.
pub struct PageStore {
    backend: Arc<dyn Backend>,
    base: ObjectId,
    size: u64,
    present: Vec<AtomicU64>,
    pages_written: AtomicU64,
    pages_read: AtomicU64,
    zero_pages_read: AtomicU64,
    requests: AtomicU64,
    backend_errors: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Writes hold the stripes of their pages, so a partial-page read-modify-write cannot
    /// overwrite a concurrent write of the same page with stale bytes.
    write_locks: Box<[std::sync::Mutex<()>]>,
}

/// Lock stripes of [`PageStore::write`] (page `p` uses stripe `p % WRITE_STRIPES`).
const WRITE_STRIPES: u64 = 64;

impl PageStore {
    /// A file of `size` bytes (rounded down to whole pages) whose page `i` is object `base + i`.
    pub fn new(backend: Arc<dyn Backend>, base: ObjectId, size: u64) -> Self {
        let pages = size / PAGE as u64;
        Self {
            backend,
            base,
            size: pages * PAGE as u64,
            present: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            pages_written: AtomicU64::new(0),
            pages_read: AtomicU64::new(0),
            zero_pages_read: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            backend_errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            write_locks: (0..WRITE_STRIPES)
                .map(|_| std::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> DaemonStats {
        DaemonStats {
            pages_written: self.pages_written.load(Ordering::Relaxed),
            pages_read: self.pages_read.load(Ordering::Relaxed),
            zero_pages_read: self.zero_pages_read.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            backend_errors: self.backend_errors.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
        }
    }

    fn is_present(&self, page: u64) -> bool {
        let word = &self.present[(page / 64) as usize];
        word.load(Ordering::Acquire) & (1 << (page % 64)) != 0
    }

    fn mark_present(&self, page: u64) {
        self.present[(page / 64) as usize].fetch_or(1 << (page % 64), Ordering::Release);
    }

    /// Ids of every page ever written.
    fn written_ids(&self) -> Vec<ObjectId> {
        let mut ids = Vec::new();
        for (w, word) in self.present.iter().enumerate() {
            let mut bits = word.load(Ordering::Acquire);
            while bits != 0 {
                let b = bits.trailing_zeros() as u64;
                ids.push(self.base + w as u64 * 64 + b);
                bits &= bits - 1;
            }
        }
        ids
    }

    /// Frees every page ever written on the backend.
    ///
    /// # Errors
    /// The backend's error.
    pub fn free_all(&self) -> Result<(), farmem::BackendError> {
        for chunk in self.written_ids().chunks(4096) {
            self.backend.free(chunk)?;
        }
        Ok(())
    }

    /// Reads whole pages `first..first + n` into `buf` (`n * PAGE` bytes).
    fn read_pages(&self, first: u64, buf: &mut [u8]) -> Result<(), farmem::BackendError> {
        let n = (buf.len() / PAGE) as u64;
        let wanted: Vec<u64> = (first..first + n).filter(|&p| self.is_present(p)).collect();
        let zeros = n - wanted.len() as u64;
        let ids: Vec<ObjectId> = wanted.iter().map(|p| self.base + p).collect();
        let got = if ids.is_empty() {
            Vec::new()
        } else {
            self.backend.get_many(&ids)?
        };
        buf.fill(0);
        for (&p, data) in wanted.iter().zip(&got) {
            if data.len() != PAGE {
                return Err(farmem::BackendError::SizeMismatch {
                    id: self.base + p,
                    expected: PAGE as u64,
                    actual: data.len() as u64,
                });
            }
            let at = ((p - first) as usize) * PAGE;
            buf[at..at + PAGE].copy_from_slice(data);
        }
        self.pages_read
            .fetch_add(wanted.len() as u64, Ordering::Relaxed);
        self.zero_pages_read.fetch_add(zeros, Ordering::Relaxed);
        Ok(())
    }

    /// Reads `len` bytes at `offset` (clamped to the file).
    ///
    /// # Errors
    /// The backend's error.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, farmem::BackendError> {
        let end = (offset.saturating_add(len as u64)).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let first = offset / PAGE as u64;
        let last = end.div_ceil(PAGE as u64);
        let mut buf = vec![0u8; ((last - first) as usize) * PAGE];
        self.read_pages(first, &mut buf)?;
        let skip = (offset - first * PAGE as u64) as usize;
        buf.drain(..skip);
        buf.truncate((end - offset) as usize);
        Ok(buf)
    }

    /// Writes `data` at `offset`; partial pages are read, modified and written back.
    ///
    /// # Errors
    /// `None` if the write reaches past the end of the file, else the backend's error.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), Option<farmem::BackendError>> {
        let end = offset.checked_add(data.len() as u64).ok_or(None)?;
        if end > self.size {
            return Err(None);
        }
        if data.is_empty() {
            return Ok(());
        }
        let first = offset / PAGE as u64;
        let last = end.div_ceil(PAGE as u64);
        // Stripes in ascending order (no two writers can deadlock), each once.
        let mut stripes: Vec<u64> = (first..last.min(first + WRITE_STRIPES))
            .map(|p| p % WRITE_STRIPES)
            .collect();
        stripes.sort_unstable();
        let _held: Vec<_> = stripes
            .iter()
            .map(|&i| {
                self.write_locks[i as usize]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            })
            .collect();
        let aligned = offset.is_multiple_of(PAGE as u64) && end.is_multiple_of(PAGE as u64);
        let owned;
        let pages: &[u8] = if aligned {
            data
        } else {
            let mut buf = vec![0u8; ((last - first) as usize) * PAGE];
            // Only the first and last pages can be partial.
            let mut edge = |p: u64| -> Result<(), farmem::BackendError> {
                let at = ((p - first) as usize) * PAGE;
                self.read_pages(p, &mut buf[at..at + PAGE])
            };
            edge(first)?;
            if last - 1 != first {
                edge(last - 1)?;
            }
            let skip = (offset - first * PAGE as u64) as usize;
            buf[skip..skip + data.len()].copy_from_slice(data);
            owned = buf;
            &owned
        };
        let items: Vec<(ObjectId, &[u8])> = pages
            .chunks(PAGE)
            .enumerate()
            .map(|(i, chunk)| (self.base + first + i as u64, chunk))
            .collect();
        self.backend.put_many(&items)?;
        for p in first..last {
            self.mark_present(p);
        }
        self.pages_written
            .fetch_add(last - first, Ordering::Relaxed);
        Ok(())
    }

    fn file_attr(&self) -> FileAttr {
        attr(FILE_INO, FileType::RegularFile, 0o600, self.size)
    }

    /// Counts a request for [`DaemonStats`] while `f` serves it.
    fn serving<T>(&self, f: impl FnOnce() -> T) -> T {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let out = f();
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        out
    }

    /// `EIO` for a failed backend request, counted and logged (the first ten).
    fn backend_failed(&self, e: &farmem::BackendError) -> Errno {
        let n = self.backend_errors.fetch_add(1, Ordering::Relaxed);
        if n < 10 {
            tracing::warn!("netswap: memory server request failed: {e}");
        }
        Errno::EIO
    }
}

fn attr(ino: INodeNo, kind: FileType, perm: u16, size: u64) -> FileAttr {
    let t = std::time::UNIX_EPOCH;
    FileAttr {
        ino,
        size,
        blocks: size / 512,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: PAGE as u32,
        flags: 0,
    }
}

/// How long the kernel may cache names and attributes (they never change).
const TTL: Duration = Duration::from_secs(3600);

/// The file system: a root directory holding the one file, served from a [`PageStore`].
struct SwapFs {
    store: Arc<PageStore>,
}

impl Filesystem for SwapFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Direct I/O from the loop driver may be asynchronous; large requests need max_pages.
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        let _ = config.set_max_write(MAX_IO as u32);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.store.serving(|| {
            if parent == ROOT_INO && name.as_bytes() == FILE_NAME {
                reply.entry(&TTL, &self.store.file_attr(), Generation(0));
            } else {
                reply.error(Errno::ENOENT);
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.store.serving(|| match ino {
            ROOT_INO => reply.attr(&TTL, &attr(ROOT_INO, FileType::Directory, 0o755, 0)),
            FILE_INO => reply.attr(&TTL, &self.store.file_attr()),
            _ => reply.error(Errno::ENOENT),
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.store.serving(|| match ino {
            // Direct I/O: the file has no page cache, so no page is cached twice.
            FILE_INO => reply.opened(FileHandle(1), FopenFlags::FOPEN_DIRECT_IO),
            ROOT_INO => reply.error(Errno::EISDIR),
            _ => reply.error(Errno::ENOENT),
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.store.serving(|| {
            if ino != FILE_INO {
                return reply.error(Errno::EISDIR);
            }
            match self.store.read(offset, size as usize) {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(self.store.backend_failed(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.store.serving(|| {
            if ino != FILE_INO {
                return reply.error(Errno::EISDIR);
            }
            match self.store.write(offset, data) {
                Ok(()) => reply.written(data.len() as u32),
                Err(None) => reply.error(Errno::ENOSPC),
                Err(Some(e)) => reply.error(self.store.backend_failed(&e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.store.serving(|| reply.ok());
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every write reached the memory server before it was answered.
        self.store.serving(|| reply.ok());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        reply: ReplyDirectory,
    ) {
        self.store.serving(|| reply.ok());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let pages = self.store.size / PAGE as u64;
        self.store
            .serving(|| reply.statfs(pages, 0, 0, 1, 0, PAGE as u32, 255, PAGE as u32));
    }
}

/// A `fuser` session serving one mounted `/dev/fuse` connection from [`WORKERS`]-many threads.
///
/// [`WORKERS`]: super::WORKERS
pub struct Daemon {
    done: std::sync::mpsc::Receiver<std::io::Result<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").finish_non_exhaustive()
    }
}

impl Daemon {
    /// Answers the kernel's `INIT` on `fuse` (already mounted by the caller, who also unmounts
    /// it) and starts `workers` threads serving `store`.
    ///
    /// # Errors
    /// The handshake's or thread creation's error.
    pub fn start(fuse: File, store: Arc<PageStore>, workers: usize) -> std::io::Result<Self> {
        let config = {
            let mut c = Config::default();
            c.n_threads = Some(workers.max(1));
            c.clone_fd = true;
            c
        };
        let session = Session::from_fd(SwapFs { store }, fuse.into(), SessionACL::All, config)?;
        let (tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("netswap-fuse".into())
            .spawn(move || {
                let _ = tx.send(session.run());
            })?;
        Ok(Self {
            done,
            thread: Some(thread),
        })
    }

    /// Waits up to `timeout` for the session to end (after the connection was aborted or
    /// unmounted); returns whether it did. Can be called again after a `false`.
    pub fn join(&mut self, timeout: Duration) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        match self.done.recv_timeout(timeout) {
            Ok(result) => {
                if let Err(e) = result {
                    tracing::warn!("netswap: FUSE session ended with {e}");
                }
                let _ = thread.join();
                true
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                true
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                self.thread = Some(thread);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use farmem::EmbeddedStore;

    #[test]
    fn pages_round_trip_through_the_backend() {
        let backend: Arc<dyn Backend> = Arc::new(EmbeddedStore::new());
        let store = PageStore::new(backend.clone(), 1 << 40, 64 * PAGE as u64);
        // Never written: zeros, no backend traffic.
        assert_eq!(store.read(0, 3 * PAGE).unwrap(), vec![0; 3 * PAGE]);
        assert_eq!(store.stats().zero_pages_read, 3);
        let data: Vec<u8> = (0..2 * PAGE).map(|i| (i % 251) as u8).collect();
        store.write(4 * PAGE as u64, &data).unwrap();
        assert_eq!(store.read(4 * PAGE as u64, 2 * PAGE).unwrap(), data);
        // Unaligned write and read across a page boundary.
        store.write(5 * PAGE as u64 - 3, b"abcdef").unwrap();
        assert_eq!(store.read(5 * PAGE as u64 - 3, 6).unwrap(), b"abcdef");
        assert_eq!(store.read(4 * PAGE as u64, 1).unwrap(), &data[..1]);
        // Past the end: clamped reads, refused writes.
        assert!(store.read(64 * PAGE as u64, 10).unwrap().is_empty());
        assert!(matches!(
            store.write(64 * PAGE as u64 - 1, b"xy"),
            Err(None)
        ));
        assert_eq!(backend.stats().unwrap().objects, 2);
        store.free_all().unwrap();
        assert_eq!(backend.stats().unwrap().objects, 0);
    }

    #[test]
    fn concurrent_partial_writes_of_one_page_lose_nothing() {
        let backend: Arc<dyn Backend> = Arc::new(EmbeddedStore::new());
        let store = PageStore::new(backend, 1 << 40, 4 * PAGE as u64);
        const THREADS: usize = 4;
        for round in 0..8u8 {
            std::thread::scope(|sc| {
                for t in 0..THREADS {
                    let store = &store;
                    sc.spawn(move || {
                        for i in (t..PAGE).step_by(THREADS) {
                            // Each one-byte write reads, modifies and writes the whole page.
                            let v = round * 16 + t as u8 + 1;
                            store.write(PAGE as u64 + i as u64, &[v]).unwrap();
                        }
                    });
                }
            });
            let page = store.read(PAGE as u64, PAGE).unwrap();
            let lost = (0..PAGE)
                .filter(|&i| page[i] != round * 16 + (i % THREADS) as u8 + 1)
                .count();
            assert_eq!(lost, 0, "{lost} bytes lost to racing read-modify-writes");
        }
    }
}

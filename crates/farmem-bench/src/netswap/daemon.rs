//! The FUSE daemon: worker threads that read requests from `/dev/fuse` and serve one file, `swap`,
//! whose 4 KiB pages are objects in a memory server.
//!
//! Reads of pages never written return zeros without a round trip. A read or write of several
//! pages costs one `get_many`/`put_many` round trip. A backend error is answered with `EIO` (the
//! kernel then fails that swap-in or swap-out) and counted; it never stops the daemon.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use farmem::{Backend, ObjectId};

use super::proto::{self, Attr, InitIn, InitOut, IoIn, Opcode};

/// Page size of the swap file (objects on the server have this size).
pub const PAGE: usize = 4096;
/// Largest read or write the kernel may send (`max_write`, `max_pages` pages).
pub const MAX_IO: usize = 1 << 20;
/// Name of the one file.
pub const FILE_NAME: &[u8] = b"swap";
const ROOT_INO: u64 = 1;
const FILE_INO: u64 = 2;

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

    fn file_attr(&self) -> Attr {
        Attr {
            ino: FILE_INO,
            size: self.size,
            mode: libc::S_IFREG | 0o600,
            nlink: 1,
        }
    }
}

/// What to send back for one request.
enum Reply {
    None,
    Data(Vec<u8>),
    Error(i32),
}

fn handle(store: &PageStore, op: Opcode, nodeid: u64, body: &[u8]) -> Reply {
    let root = Attr {
        ino: ROOT_INO,
        size: 0,
        mode: libc::S_IFDIR | 0o755,
        nlink: 2,
    };
    let backend_failed = |e: farmem::BackendError| {
        let n = store.backend_errors.fetch_add(1, Ordering::Relaxed);
        if n < 10 {
            tracing::warn!("netswap: memory server request failed: {e}");
        }
        Reply::Error(libc::EIO)
    };
    match op {
        Opcode::Init => match InitIn::decode(body) {
            Ok(init) => Reply::Data(
                InitOut {
                    max_readahead: init.max_readahead,
                    flags: init.flags
                        & (proto::FUSE_ASYNC_READ
                            | proto::FUSE_BIG_WRITES
                            | proto::FUSE_ASYNC_DIO
                            | proto::FUSE_MAX_PAGES),
                    max_background: 64,
                    congestion_threshold: 48,
                    max_write: MAX_IO as u32,
                    max_pages: (MAX_IO / PAGE) as u16,
                }
                .encode(),
            ),
            Err(e) => {
                tracing::warn!("netswap: {e}");
                Reply::Error(libc::EPROTO)
            }
        },
        Opcode::Lookup => match proto::decode_name(body) {
            Ok(FILE_NAME) if nodeid == ROOT_INO => {
                Reply::Data(store.file_attr().encode_entry_out(3600))
            }
            Ok(_) => Reply::Error(libc::ENOENT),
            Err(_) => Reply::Error(libc::EINVAL),
        },
        Opcode::Getattr => match nodeid {
            ROOT_INO => Reply::Data(root.encode_attr_out(3600)),
            FILE_INO => Reply::Data(store.file_attr().encode_attr_out(3600)),
            _ => Reply::Error(libc::ENOENT),
        },
        Opcode::Open => match nodeid {
            FILE_INO => Reply::Data(proto::encode_open_out(1, proto::FOPEN_DIRECT_IO)),
            ROOT_INO => Reply::Error(libc::EISDIR),
            _ => Reply::Error(libc::ENOENT),
        },
        Opcode::Opendir => match nodeid {
            ROOT_INO => Reply::Data(proto::encode_open_out(0, 0)),
            _ => Reply::Error(libc::ENOTDIR),
        },
        Opcode::Readdir => Reply::Data(Vec::new()),
        Opcode::Read => match IoIn::decode_read(body) {
            Ok(io) if nodeid == FILE_INO => match store.read(io.offset, io.size as usize) {
                Ok(data) => Reply::Data(data),
                Err(e) => backend_failed(e),
            },
            Ok(_) => Reply::Error(libc::EISDIR),
            Err(_) => Reply::Error(libc::EINVAL),
        },
        Opcode::Write => match IoIn::decode_write(body) {
            Ok((io, data)) if nodeid == FILE_INO => match store.write(io.offset, data) {
                Ok(()) => Reply::Data(proto::encode_write_out(io.size)),
                Err(None) => Reply::Error(libc::ENOSPC),
                Err(Some(e)) => backend_failed(e),
            },
            Ok(_) => Reply::Error(libc::EISDIR),
            Err(_) => Reply::Error(libc::EINVAL),
        },
        Opcode::Statfs => Reply::Data(proto::encode_statfs_out(store.size / PAGE as u64)),
        Opcode::Release
        | Opcode::Flush
        | Opcode::Fsync
        | Opcode::Releasedir
        | Opcode::Fsyncdir
        | Opcode::Access
        | Opcode::Destroy => Reply::Data(Vec::new()),
        Opcode::Forget | Opcode::BatchForget | Opcode::Interrupt => Reply::None,
        Opcode::Other(_) => Reply::Error(libc::ENOSYS),
    }
}

/// Serves requests until the connection goes away (the file system is unmounted or aborted).
fn serve(fuse: &File, store: &PageStore) {
    let mut buf = vec![0u8; MAX_IO + 2 * PAGE];
    loop {
        let n = match (&*fuse).read(&mut buf) {
            Ok(n) => n,
            Err(e) => match e.raw_os_error() {
                // Interrupted, or the request was withdrawn before we read it.
                Some(libc::EINTR | libc::EAGAIN | libc::ENOENT) => continue,
                // ENODEV: unmounted or aborted. Anything else is not recoverable either.
                Some(libc::ENODEV) => return,
                _ => {
                    tracing::warn!("netswap: reading /dev/fuse: {e}");
                    return;
                }
            },
        };
        let (header, body) = match proto::decode_request(&buf[..n]) {
            Ok(x) => x,
            Err(e) => {
                // Without a trustworthy header there is no request id to answer.
                tracing::warn!("netswap: dropping a malformed request: {e}");
                continue;
            }
        };
        store.requests.fetch_add(1, Ordering::Relaxed);
        let op = header.opcode;
        let now = store.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        store.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let reply = handle(store, op, header.nodeid, body);
        store.in_flight.fetch_sub(1, Ordering::Relaxed);
        let msg = match reply {
            Reply::None => continue,
            Reply::Error(errno) => proto::encode_error(header.unique, errno).to_vec(),
            Reply::Data(data) => match proto::encode_reply(header.unique, &data) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("netswap: {e}");
                    proto::encode_error(header.unique, libc::EIO).to_vec()
                }
            },
        };
        // ENOENT: the request was interrupted meanwhile; nothing to do.
        if let Err(e) = (&*fuse).write(&msg)
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            tracing::warn!("netswap: replying on /dev/fuse: {e}");
        }
        if op == Opcode::Destroy {
            return;
        }
    }
}

/// Worker threads serving one mounted `/dev/fuse` connection.
pub struct Daemon {
    threads: Vec<JoinHandle<()>>,
    done: std::sync::mpsc::Receiver<()>,
    stopped: usize,
}

impl Daemon {
    /// Starts `workers` threads serving `fuse` (already mounted) from `store`.
    ///
    /// # Errors
    /// Thread creation errors.
    pub fn start(fuse: Arc<File>, store: Arc<PageStore>, workers: usize) -> std::io::Result<Self> {
        let (tx, done) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let (fuse, store, tx) = (fuse.clone(), store.clone(), tx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("netswap-fuse-{i}"))
                    .spawn(move || {
                        serve(&fuse, &store);
                        let _ = tx.send(());
                    })?,
            );
        }
        Ok(Self {
            threads,
            done,
            stopped: 0,
        })
    }

    /// Waits up to `timeout` for every worker to stop (after the connection was aborted or
    /// unmounted); returns whether they all did. Can be called again after a `false`.
    pub fn join(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.stopped < self.threads.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self.done.recv_timeout(left).is_err() {
                return false;
            }
            self.stopped += 1;
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        true
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

//! Durable memory servers: a write-ahead log and snapshots in a data directory, so that a
//! server keeps its sessions and objects across a restart (a `kill -9` included).
//!
//! Every change a client can be acknowledged for is logged, under the lock that orders it in
//! memory, as a checksummed record: session opens (with the resume secret) and closes,
//! puts, patches, frees, hash-table puts, removes and drops. Objects made by agent operations
//! are logged as puts. A server answers a request only after [`crate::Session::commit`]: its
//! records are on disk under the [`SyncPolicy`], several connections' records sharing one write
//! and one sync (group commit). Room for a record is taken *before* its change is made, from
//! preallocated log space: a full disk refuses the change ([`LogError::DiskFull`]) and changes
//! nothing.
//!
//! A background thread takes a snapshot once the log outgrows both
//! [`DurableConfig::snapshot_min_log`] and the data it holds, while requests keep running, and
//! removes the log before it. At start [`Durable::open`] rebuilds the sessions from the newest
//! snapshot and the log after it, cutting a torn tail (a record whose checksum fails at the end
//! of the last segment). Without a data directory none of this exists: a namespace without a
//! journal pays one untaken branch per change.
//!
//! ```
//! use std::sync::Arc;
//! use farmem_store::durable::{Durable, DurableConfig, SyncPolicy};
//! use farmem_store::{Budget, Session};
//! let dir = std::env::temp_dir().join(format!("farmem-doc-{}", std::process::id()));
//! let budget = Arc::new(Budget::new(1 << 30));
//! let make = |key| Session::new(key, budget.clone(), 1 << 20, 1);
//! let config = DurableConfig::new(&dir).sync(SyncPolicy::None);
//! let (durable, recovered) = Durable::open(config.clone(), &make).unwrap();
//! assert!(recovered.sessions.is_empty());
//! let s = durable.open_session(make(7), 42).unwrap();
//! s.ns.put(1, b"kept").unwrap();
//! s.commit().unwrap(); // now the put may be acknowledged
//! drop((s, durable));
//! let (_durable, recovered) = Durable::open(config, &make).unwrap();
//! let (s, secret) = &recovered.sessions[0];
//! assert_eq!((s.key, *secret), (7, 42));
//! assert_eq!(s.ns.get_with(1, |d| d.to_vec()).unwrap(), b"kept");
//! # drop(recovered); std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod dir;
mod error;
mod journal;
pub(crate) mod record;
mod recovery;
mod snapshot;
mod wal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

pub use error::{DurableError, LogError};
pub(crate) use journal::Entry;
pub use journal::Journal;
pub use snapshot::SnapshotStats;

use crate::Session;
use dir::DataDir;
use wal::Wal;

/// When a logged change counts as durable (and may be acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Written and synced (`fdatasync`) to the disk: survives a crash of the host. One sync per
    /// group commit. The default: a server given a data directory is asked to keep its data.
    #[default]
    Always,
    /// Written to the OS's page cache: survives a crash of the server process (`kill -9`), not
    /// of the host.
    None,
}

/// Where and how a server keeps its state.
#[derive(Debug, Clone)]
pub struct DurableConfig {
    /// The data directory (created if missing).
    pub dir: PathBuf,
    /// When a change counts as durable.
    pub sync: SyncPolicy,
    /// Most bytes the log may take on disk; a change that does not fit is refused with
    /// [`LogError::DiskFull`] (as when the disk itself is full). Default unlimited.
    pub log_limit: u64,
    /// A snapshot is taken once the log holds more than this (or half of
    /// [`DurableConfig::log_limit`]) and more than the data. Default 256 MiB.
    pub snapshot_min_log: u64,
    /// Log segments grow by this much preallocated space at a time. Default 64 MiB.
    pub segment_chunk: u64,
    /// How often the background thread checks the log's size. Default 1 s.
    pub check_every: Duration,
}

impl DurableConfig {
    /// The defaults for data directory `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
            sync: SyncPolicy::default(),
            log_limit: u64::MAX,
            snapshot_min_log: 256 << 20,
            segment_chunk: 64 << 20,
            check_every: Duration::from_secs(1),
        }
    }

    /// Sets [`DurableConfig::sync`].
    pub fn sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }
}

/// What recovery found.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecoveryStats {
    /// Sessions rebuilt.
    pub sessions: u64,
    /// Objects rebuilt.
    pub objects: u64,
    /// Records replayed (snapshot and log).
    pub records: u64,
    /// Records of sessions already closed, and patches or table changes that no longer
    /// applied (replayed over a later snapshot), skipped.
    pub skipped: u64,
    /// Bytes of snapshot and log read.
    pub bytes: u64,
    /// Bytes of torn tail cut off the log.
    pub cut_bytes: u64,
    /// How long recovery took.
    pub elapsed: Duration,
}

/// The sessions a data directory held, rebuilt.
#[derive(Debug)]
pub struct Recovered {
    /// Each session (journaled from now on) with its resume secret.
    pub sessions: Vec<(Arc<Session>, u64)>,
    /// What recovery found.
    pub stats: RecoveryStats,
}

/// Live sessions, held until they are closed: a session the server drops without closing it
/// (at shutdown) must still be in every snapshot taken until the directory is closed.
type Registry = Mutex<HashMap<u64, (u64, Arc<Session>)>>;

#[derive(Debug)]
struct Inner {
    dir: Arc<DataDir>,
    wal: Arc<Wal>,
    /// Live sessions (for snapshots): key to resume secret and session.
    registry: Registry,
    config: DurableConfig,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Serialises snapshots.
    snapshotting: Mutex<()>,
}

/// An open data directory: the log writer, the session registry and the snapshot thread.
///
/// Dropping it stops the snapshot thread, writes out what is buffered and releases the
/// directory's lock.
#[derive(Debug)]
pub struct Durable {
    inner: Arc<Inner>,
    compactor: Option<JoinHandle<()>>,
}

impl Durable {
    /// Opens and locks `config.dir`, rebuilds the sessions it holds (each made by `make` with
    /// its key, then filled) and starts logging to a new segment.
    ///
    /// # Errors
    /// [`DurableError::Locked`] when another server uses the directory,
    /// [`DurableError::Corrupt`] when its data is damaged beyond a torn tail,
    /// [`DurableError::Capacity`] when the data does not fit the sessions' budget,
    /// [`DurableError::Io`] for an unreadable or unwritable directory.
    pub fn open(
        config: DurableConfig,
        make: &dyn Fn(u64) -> Session,
    ) -> Result<(Self, Recovered), DurableError> {
        let dir = Arc::new(DataDir::open(&config.dir)?);
        let mut replay = recovery::Replay::new(make);
        let rec = recovery::recover(&dir, &mut replay)?;
        let wal = Arc::new(Wal::create(
            dir.clone(),
            rec.next_segment,
            rec.older,
            config.sync,
            config.segment_chunk,
            config.log_limit,
        )?);
        let stats = replay.stats;
        let mut registry = HashMap::new();
        let mut sessions = Vec::new();
        for (key, (secret, mut s)) in replay.sessions {
            s.ns.set_journal(Journal::new(wal.clone(), key));
            let s = Arc::new(s);
            registry.insert(key, (secret, s.clone()));
            sessions.push((s, secret));
        }
        tracing::info!(
            dir = %config.dir.display(),
            sessions = stats.sessions,
            objects = stats.objects,
            bytes = stats.bytes,
            cut = stats.cut_bytes,
            elapsed = ?stats.elapsed,
            "data directory recovered"
        );
        let inner = Arc::new(Inner {
            dir,
            wal,
            registry: Mutex::new(registry),
            config,
            stop: Mutex::new(false),
            wake: Condvar::new(),
            snapshotting: Mutex::new(()),
        });
        let i = inner.clone();
        let compactor = std::thread::Builder::new()
            .name("farmem-snapshot".into())
            .spawn(move || compact_loop(&i))
            .map_err(|source| DurableError::Io {
                what: "cannot start the snapshot thread for",
                path: inner.config.dir.clone(),
                source,
            })?;
        Ok((
            Self {
                inner,
                compactor: Some(compactor),
            },
            Recovered { sessions, stats },
        ))
    }

    /// Makes `session` durable with resume secret `secret`: its changes are logged from now
    /// on, and its open is durable when this returns.
    ///
    /// # Errors
    /// [`LogError`] when the open cannot be logged; the session is not kept then.
    pub fn open_session(
        &self,
        mut session: Session,
        secret: u64,
    ) -> Result<Arc<Session>, LogError> {
        let key = session.key;
        let journal = Journal::new(self.inner.wal.clone(), key);
        session.ns.set_journal(journal.clone());
        let s = Arc::new(session);
        // Registered before its open is logged (see `snapshot`).
        self.inner.registry.lock().insert(key, (secret, s.clone()));
        let rec = record::Record::SessionOpen {
            session: key,
            secret,
        };
        let logged = journal
            .reserve(rec.len())
            .map(|e| e.write(&rec))
            .and_then(|()| journal.commit());
        if let Err(e) = logged {
            self.inner.registry.lock().remove(&key);
            return Err(e);
        }
        Ok(s)
    }

    /// Ends session `key` for good: it is not rebuilt after a restart. Durable when this
    /// returns.
    ///
    /// # Errors
    /// [`LogError`] when the close cannot be logged: a restart then rebuilds the session.
    pub fn close_session(&self, key: u64) -> Result<(), LogError> {
        // Unregistered before its close is logged (see `snapshot`).
        self.inner.registry.lock().remove(&key);
        let rec = record::Record::SessionClose { session: key };
        let pos = self.inner.wal.reserve(rec.len())?.write(&rec);
        self.inner.wal.wait(pos)
    }

    /// Takes a snapshot now and removes the log before it (the background thread does this
    /// by itself when the log grows).
    ///
    /// # Errors
    /// [`DurableError`] when the snapshot cannot be written; the log is kept then.
    pub fn snapshot(&self) -> Result<SnapshotStats, DurableError> {
        self.inner.snapshot()
    }

    /// Bytes of log on disk (since the last snapshot).
    pub fn log_bytes(&self) -> u64 {
        self.inner.wal.live_bytes()
    }
}

impl Inner {
    fn snapshot(&self) -> Result<SnapshotStats, DurableError> {
        let _one = self.snapshotting.lock();
        let stats = snapshot::take(&self.dir, &self.wal, || {
            let reg = self.registry.lock();
            reg.values()
                .map(|(secret, s)| (*secret, s.clone()))
                .collect()
        })?;
        tracing::info!(
            segment = stats.segment,
            sessions = stats.sessions,
            records = stats.records,
            bytes = stats.bytes,
            elapsed = ?stats.elapsed,
            "snapshot taken, older log removed"
        );
        Ok(stats)
    }

    /// Bytes of data the sessions hold.
    fn data_bytes(&self) -> u64 {
        self.registry
            .lock()
            .values()
            .map(|(_, s)| s.ns.used_bytes())
            .sum()
    }
}

/// Takes a snapshot whenever the log outgrows its threshold, until stopped.
fn compact_loop(inner: &Inner) {
    let mut failing = false;
    loop {
        {
            let mut stop = inner.stop.lock();
            if !*stop {
                inner.wake.wait_for(&mut stop, inner.config.check_every);
            }
            if *stop {
                return;
            }
        }
        // Past the threshold, or half the limit, and holding more than the data (a snapshot
        // then gives space back).
        let log = inner.wal.live_bytes();
        let threshold = inner
            .config
            .snapshot_min_log
            .min(inner.config.log_limit / 2);
        if log <= threshold || log <= inner.data_bytes() {
            continue;
        }
        match inner.snapshot() {
            Ok(_) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "cannot take a snapshot; the log keeps growing");
                }
                failing = true;
            }
        }
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        *self.inner.stop.lock() = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.compactor.take() {
            let _ = t.join();
        }
        let end = self.inner.wal.position();
        if let Err(e) = self.inner.wal.wait(end) {
            tracing::warn!(error = %e, "the log could not be written out at shutdown");
        }
    }
}

#[cfg(test)]
mod tests;

//! A fault-injection wrapper for testing pools (and anything else over a [`Backend`]).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::backend::{Backend, BackendError, Edit, ObjectId, StoreStats};

/// What a [`FaultyBackend`] does to each call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Pass every call through.
    #[default]
    None,
    /// Fail every call at once, as a dead server does.
    Down,
    /// Hold every call this long, then fail it with [`BackendError::Timeout`], as a hung server
    /// behind a timeout does.
    Hang(Duration),
    /// Refuse new data (puts and agent calls) with [`BackendError::OutOfCapacity`] and report no
    /// free space, as a full server does; reads, patches and frees pass.
    Full,
    /// Fail reads with [`BackendError::Silent`] and every other call with
    /// [`BackendError::Timeout`], at once: a server that stopped answering, as a read's
    /// patience and a request's timeout see it, before anything declared it down.
    Silent,
    /// Fail reads with [`BackendError::Silent`] at once and pass every other call: a busy
    /// server, slower than a read's patience but answering within requests' timeouts.
    Slow,
}

/// Wraps a backend and can be switched to fail every call ([`Fault::Down`]), to hang
/// ([`Fault::Hang`]), to go silent ([`Fault::Silent`]) or to refuse new data ([`Fault::Full`]).
///
/// ```
/// use std::sync::Arc;
/// use farmem::{Backend, BackendError, EmbeddedStore};
/// use farmem::backend::{FaultyBackend, pool::Fault};
/// let b = FaultyBackend::new(Arc::new(EmbeddedStore::new()), "s1");
/// b.put(1, b"x").unwrap();
/// b.set(Fault::Down);
/// assert!(matches!(b.get(1), Err(BackendError::Disconnected { .. })));
/// ```
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    name: String,
    fault: RwLock<Fault>,
}

impl std::fmt::Debug for FaultyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("name", &self.name)
            .field("fault", &*self.fault.read())
            .finish_non_exhaustive()
    }
}

impl FaultyBackend {
    /// Wraps `inner`, naming it `name` (its [`Backend::describe`] and error address).
    pub fn new(inner: Arc<dyn Backend>, name: impl Into<String>) -> Self {
        Self {
            inner,
            name: name.into(),
            fault: RwLock::new(Fault::None),
        }
    }

    /// Switches the fault.
    pub fn set(&self, fault: Fault) {
        *self.fault.write() = fault;
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *self.fault.read()
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    /// Refuses `bytes` of new data when full, else as [`FaultyBackend::check`].
    fn check_room(&self, bytes: usize) -> Result<(), BackendError> {
        if self.fault() == Fault::Full {
            return Err(BackendError::OutOfCapacity {
                needed: bytes as u64,
                available: 0,
            });
        }
        self.check()
    }

    fn check(&self) -> Result<(), BackendError> {
        match self.fault() {
            Fault::None | Fault::Full | Fault::Slow => Ok(()),
            Fault::Down => Err(BackendError::Disconnected {
                addr: self.name.clone(),
                cause: crate::backend::DisconnectCause::Injected,
            }),
            Fault::Hang(d) => {
                std::thread::sleep(d);
                Err(BackendError::Timeout {
                    addr: self.name.clone(),
                    after_ms: d.as_millis() as u64,
                })
            }
            Fault::Silent => Err(BackendError::Timeout {
                addr: self.name.clone(),
                after_ms: 0,
            }),
        }
    }

    /// As [`FaultyBackend::check`], for a read.
    fn check_read(&self) -> Result<(), BackendError> {
        if matches!(self.fault(), Fault::Silent | Fault::Slow) {
            return Err(BackendError::Silent {
                addr: self.name.clone(),
                after_ms: 0,
            });
        }
        self.check()
    }
}

impl Backend for FaultyBackend {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        self.check_room(data.len())?;
        self.inner.put(id, data)
    }
    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        self.check_read()?;
        self.inner.get(id)
    }
    fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        self.check_read()?;
        self.inner.get_into(id, buf)
    }
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        self.check_read()?;
        self.inner.get_many(ids)
    }
    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        self.check_room(items.iter().map(|i| i.1.len()).sum())?;
        self.inner.put_many(items)
    }
    fn patch(&self, id: ObjectId, edits: &[Edit<'_>]) -> Result<(), BackendError> {
        self.check()?;
        self.inner.patch(id, edits)
    }
    fn patch_many(&self, items: &[(ObjectId, &[Edit<'_>])]) -> Result<(), BackendError> {
        self.check()?;
        self.inner.patch_many(items)
    }
    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        self.check()?;
        self.inner.free(ids)
    }
    fn stats(&self) -> Result<StoreStats, BackendError> {
        self.check()?;
        let mut st = self.inner.stats()?;
        if self.fault() == Fault::Full {
            st.capacity_bytes = st.used_bytes;
        }
        Ok(st)
    }
    fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.check_room(args.len())?;
        self.inner.compute(route, op, args)
    }
    fn set_read_patience(&self, patience: Option<Duration>) {
        self.inner.set_read_patience(patience);
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

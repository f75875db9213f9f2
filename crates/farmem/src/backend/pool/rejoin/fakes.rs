//! In-process memory servers with sessions, for the rejoin tests: a server can freeze (every
//! call of its sessions fails as a silent server's would), hang its probes, or restart (losing
//! every session); a session can be resumed, renewed, let go or reconnected as a TCP backend's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::backend::{Backend, BackendError, EmbeddedStore, ObjectId, StoreStats};

/// A memory server with sessions (one store each) that can freeze (`up` false) and restart
/// (losing every session).
#[derive(Debug, Default)]
pub(super) struct Server {
    pub(super) sessions: Mutex<std::collections::HashMap<u64, Arc<EmbeddedStore>>>,
    next: AtomicU64,
    pub(super) frozen: AtomicBool,
    /// A probe of it hangs while set (a server whose hello never comes), for at most 20 s.
    pub(super) hang: AtomicBool,
    /// Its sessions cannot open fresh sessions beside them ([`Backend::reconnect`] says so).
    pub(super) single: AtomicBool,
}

impl Server {
    pub(super) fn open(self: &Arc<Self>, name: &str) -> Arc<Session> {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let store = Arc::new(EmbeddedStore::new());
        self.sessions.lock().insert(id, store.clone());
        Session::over(self, name, id, store)
    }

    /// Objects of every session.
    pub(super) fn objects(&self) -> u64 {
        let s = self.sessions.lock();
        s.values().map(|st| st.stats().unwrap().objects).sum()
    }

    pub(super) fn sessions(&self) -> usize {
        self.sessions.lock().len()
    }

    pub(super) fn restart(&self) {
        self.sessions.lock().clear();
    }
}

/// One client session on a [`Server`]: fails while the server is frozen or once let go;
/// dropped while in use, it closes the session (as a TCP backend does).
#[derive(Debug)]
pub(super) struct Session {
    name: String,
    server: Arc<Server>,
    id: u64,
    store: Arc<EmbeddedStore>,
    /// Let go (resumed elsewhere, renewed, detached): fails everything, closes nothing.
    gone: AtomicBool,
}

impl Session {
    fn over(server: &Arc<Server>, name: &str, id: u64, store: Arc<EmbeddedStore>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            server: server.clone(),
            id,
            store,
            gone: AtomicBool::new(false),
        })
    }

    fn check(&self) -> Result<&EmbeddedStore, BackendError> {
        if self.server.frozen.load(Ordering::SeqCst) || self.gone.load(Ordering::SeqCst) {
            return Err(BackendError::Timeout {
                addr: self.name.clone(),
                after_ms: 1,
            });
        }
        Ok(&self.store)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.gone.load(Ordering::SeqCst) {
            self.server.sessions.lock().remove(&self.id);
        }
    }
}

impl Backend for Session {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        self.check()?.put(id, data)
    }
    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        self.check()?.get(id)
    }
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        self.check()?.get_many(ids)
    }
    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        self.check()?.put_many(items)
    }
    fn patch(&self, id: ObjectId, edits: &[crate::backend::Edit<'_>]) -> Result<(), BackendError> {
        self.check()?.patch(id, edits)
    }
    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        self.check()?.free(ids)
    }
    fn stats(&self) -> Result<StoreStats, BackendError> {
        self.check()?.stats()
    }
    fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.check()?.compute(route, op, args)
    }
    fn resume(&self, _probe: Duration) -> Option<Result<Option<Arc<dyn Backend>>, BackendError>> {
        self.gone.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while self.server.hang.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if self.server.frozen.load(Ordering::SeqCst) {
            return Some(Err(BackendError::Timeout {
                addr: self.name.clone(),
                after_ms: 1,
            }));
        }
        let store = self.server.sessions.lock().get(&self.id).cloned();
        Some(Ok(store.map(|st| {
            Session::over(&self.server, &self.name, self.id, st) as Arc<dyn Backend>
        })))
    }
    fn renew(&self, _probe: Duration) -> Option<Result<Arc<dyn Backend>, BackendError>> {
        self.gone.store(true, Ordering::SeqCst);
        if self.server.frozen.load(Ordering::SeqCst) {
            return Some(Err(BackendError::Timeout {
                addr: self.name.clone(),
                after_ms: 1,
            }));
        }
        self.server.sessions.lock().remove(&self.id);
        Some(Ok(self.server.open(&self.name) as Arc<dyn Backend>))
    }
    fn reconnect(&self) -> Option<Result<Arc<dyn Backend>, BackendError>> {
        if self.server.single.load(Ordering::SeqCst) {
            return None;
        }
        Some(Ok(self.server.open(&self.name) as Arc<dyn Backend>))
    }
    fn detach(&self) {
        self.gone.store(true, Ordering::SeqCst);
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

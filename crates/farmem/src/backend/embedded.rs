use std::sync::Arc;

use farmem_kernels::KernelError;
use farmem_store::StoreContext;
use farmem_store::agent::{self, AgentError, AgentState};
use farmem_store::{Budget, Namespace, OBJECT_OVERHEAD, StoreError};

use super::{Backend, BackendError, Edit, ObjectId, StoreStats};

/// An in-process store: far memory without a server.
///
/// The default backend, for first-time users and tests. Objects are kept in this process's heap,
/// so it saves no local memory; it exists so that every program also runs with no set-up. It
/// uses the memory server's storage engine (same capacity accounting and per-object overhead,
/// same in-place patches) and runs remote-agent operations in-process.
///
/// ```
/// use farmem::{Backend, EmbeddedStore};
/// let store = EmbeddedStore::new();
/// store.put(7, b"hello").unwrap();
/// assert_eq!(store.get(7).unwrap(), b"hello");
/// ```
pub struct EmbeddedStore {
    ns: Namespace,
    agent: AgentState,
    agent_threads: usize,
}

impl Default for EmbeddedStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("ns", &self.ns)
            .finish()
    }
}

/// Converts a storage-engine error.
pub(crate) fn store_error(e: StoreError) -> BackendError {
    match e {
        StoreError::NotFound(id) => BackendError::NotFound(id),
        StoreError::OutOfCapacity { needed, available } => {
            BackendError::OutOfCapacity { needed, available }
        }
        StoreError::SizeMismatch {
            id,
            expected,
            actual,
        } => BackendError::SizeMismatch {
            id,
            expected,
            actual,
        },
        StoreError::TooLarge { size, limit } => BackendError::TooLarge { size, limit },
        other => BackendError::Store(other),
    }
}

/// The same variants a memory server's answer would give: missing objects, exhausted capacity
/// and oversized results keep their own variants, the rest is [`BackendError::Agent`].
fn agent_error(e: AgentError) -> BackendError {
    match e {
        AgentError::Store(s) => store_error(s),
        AgentError::Kernel(KernelError::NotFound(id)) => BackendError::NotFound(id),
        AgentError::Kernel(KernelError::OutOfCapacity { needed, available }) => {
            BackendError::OutOfCapacity { needed, available }
        }
        AgentError::Kernel(KernelError::TooLarge { size, limit }) => {
            BackendError::TooLarge { size, limit }
        }
        other => BackendError::Agent(other),
    }
}

impl EmbeddedStore {
    /// An unbounded store.
    pub fn new() -> Self {
        Self::with_capacity(u64::MAX)
    }

    /// A store that refuses puts beyond `capacity` bytes (payload plus per-object overhead).
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            ns: Namespace::new(Arc::new(Budget::new(capacity)), u64::from(u32::MAX)),
            agent: AgentState::default(),
            agent_threads: agent::default_threads(),
        }
    }

    /// Sets the threads one large agent operation may use (default: the cores, at most 4).
    #[must_use]
    pub fn with_agent_threads(mut self, threads: usize) -> Self {
        self.agent_threads = threads.max(1);
        self
    }
}

impl Backend for EmbeddedStore {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        self.ns.put(id, data).map_err(store_error)
    }

    fn patch(&self, id: ObjectId, edits: &[Edit<'_>]) -> Result<(), BackendError> {
        self.ns
            .patch(id, edits.iter().copied())
            .map_err(store_error)
    }

    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        self.ns.get_with(id, <[u8]>::to_vec).map_err(store_error)
    }

    fn get_into(&self, id: ObjectId, buf: &mut [u8]) -> Result<(), BackendError> {
        self.ns
            .get_with(id, |obj| {
                if obj.len() != buf.len() {
                    return Err(BackendError::SizeMismatch {
                        id,
                        expected: buf.len() as u64,
                        actual: obj.len() as u64,
                    });
                }
                buf.copy_from_slice(obj);
                Ok(())
            })
            .map_err(store_error)?
    }

    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        ids.iter().map(|&id| self.get(id)).collect()
    }

    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        items.iter().try_for_each(|&(id, data)| self.put(id, data))
    }

    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        for &id in ids {
            self.ns.free(id);
        }
        Ok(())
    }

    fn stats(&self) -> Result<StoreStats, BackendError> {
        let b = self.ns.budget();
        Ok(StoreStats {
            used_bytes: b.used(),
            capacity_bytes: b.capacity(),
            objects: b.objects(),
            per_object_overhead: OBJECT_OVERHEAD,
            bytes_written: b.bytes_written(),
            ..StoreStats::default()
        })
    }

    fn compute(&self, _route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        let ctx = StoreContext::new(&self.ns, &self.agent, self.agent_threads);
        agent::execute(&ctx, op, args).map_err(agent_error)
    }

    fn describe(&self) -> String {
        "embedded".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERHEAD: u64 = OBJECT_OVERHEAD;

    #[test]
    fn capacity_is_enforced_and_freed_space_returns() {
        let s = EmbeddedStore::with_capacity(2 * (100 + OVERHEAD));
        s.put(1, &[1; 100]).unwrap();
        s.put(2, &[2; 100]).unwrap();
        assert!(matches!(
            s.put(3, &[3; 100]),
            Err(BackendError::OutOfCapacity { .. })
        ));
        assert_eq!(s.get(2).unwrap(), vec![2; 100]);
        s.free(&[1]).unwrap();
        s.put(3, &[3; 100]).unwrap();
        assert_eq!(s.stats().unwrap().objects, 2);
        assert!(matches!(s.get(1), Err(BackendError::NotFound(1))));
    }

    #[test]
    fn overwrite_recharges() {
        let s = EmbeddedStore::with_capacity(100 + OVERHEAD);
        s.put(1, &[1; 100]).unwrap();
        s.put(1, &[9; 50]).unwrap();
        assert_eq!(s.stats().unwrap().used_bytes, 50 + OVERHEAD);
        let mut buf = [0u8; 50];
        s.get_into(1, &mut buf).unwrap();
        assert_eq!(buf, [9; 50]);
    }

    #[test]
    fn patch_edits_in_place_and_rejects_overruns() {
        let s = EmbeddedStore::new();
        s.put(1, &[0; 128]).unwrap();
        s.patch(1, &[(64, &[7; 8]), (0, &[1])]).unwrap();
        let got = s.get(1).unwrap();
        assert_eq!(&got[64..72], &[7; 8]);
        assert_eq!(got[0], 1);
        assert_eq!(s.stats().unwrap().bytes_written, 128 + 9);
        assert!(matches!(
            s.patch(1, &[(127, &[1, 2])]),
            Err(BackendError::SizeMismatch { .. })
        ));
        assert!(matches!(
            s.patch(2, &[(0, &[1])]),
            Err(BackendError::NotFound(2))
        ));
    }

    #[test]
    fn unknown_agent_operation_is_an_agent_error() {
        let s = EmbeddedStore::new();
        assert!(matches!(
            s.compute(0, u16::MAX, &[]),
            Err(BackendError::Agent(AgentError::UnknownOp(_)))
        ));
    }
}

//! Agent operations on primitive [`FarVec`]s, offloaded to the memory server or run locally.
//!
//! Both paths run the same kernels (`farmem_server::agent::kernels`) over the same chunks in the
//! same order, so they give bit-identical results, float sums included. Offloading first writes
//! dirty local chunks back ([`FarVec::flush`]) so the server sees current data; then only the
//! arguments (chunk ids) and the result cross the network. Large results (filter, gather, argsort)
//! are written by the kernel into new objects and come back as a new [`FarVec`].
//!
//! ```
//! use farmem::{Runtime, RuntimeConfig};
//! use farmem::containers::{Cmp, FarVec, Offload, Predicate, Scalar};
//! let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
//! let v = FarVec::from_slice(&rt, &[5i32, -3, 8, 0]).unwrap();
//! for mode in [Offload::Remote, Offload::Local] {
//!     assert_eq!(v.max(mode).unwrap(), Some(8));
//!     let idx = v.filter(Predicate::new(Cmp::Gt, Scalar::I(0)), mode).unwrap();
//!     assert_eq!(idx.to_vec().unwrap(), vec![0, 2]);
//!     assert_eq!(v.gather(&idx, mode).unwrap().to_vec().unwrap(), vec![5, 8]);
//! }
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;
use farmem_proto::agent::{
    AgentMessage, Aggregates, ArgsortArgs, FilterArgs, GatherArgs, GroupByArgs, GroupByResult,
    OutSpec, Predicate, Sum, UniqueArgs, UniqueResult, VecRef, op,
};
use farmem_server::agent::{AgentError, kernels};

use super::elem::Primitive;
use super::error::{ContainerError, Result};
use super::prefetch::Window;
use super::vec::FarVec;
use crate::{FarSlice, ObjectId, Runtime};

/// Where an agent operation runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Offload {
    /// On the memory server, next to the data: only arguments and results cross the network.
    #[default]
    Remote,
    /// In this process: the chunks are fetched (non-temporally) and the same kernel runs here.
    Local,
}

/// Ids for objects the agent writes. The runtime numbers its objects from 1 upwards; agent
/// outputs take ids from the top quarter of the space so they never collide.
static NEXT_AGENT_ID: AtomicU64 = AtomicU64::new(3 << 62);

/// Process-wide bytes sent to / received from remote-agent calls by the containers.
static AGENT_SENT: AtomicU64 = AtomicU64::new(0);
static AGENT_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Bytes of agent arguments sent and results received by the containers so far (process-wide),
/// for measuring how much offloading moves.
pub fn agent_traffic() -> (u64, u64) {
    (
        AGENT_SENT.load(Ordering::Relaxed),
        AGENT_RECEIVED.load(Ordering::Relaxed),
    )
}

/// Fresh object / table ids for agent-created state.
pub(crate) fn agent_ids(n: usize) -> ObjectId {
    NEXT_AGENT_ID.fetch_add(n as u64, Ordering::Relaxed)
}

/// Calls the remote agent, counting traffic.
pub(crate) fn call(rt: &Runtime, route: ObjectId, opn: u16, args: &[u8]) -> Result<Vec<u8>> {
    AGENT_SENT.fetch_add(args.len() as u64, Ordering::Relaxed);
    let out = rt
        .backend()
        .compute(route, opn, args)
        .map_err(|e| match e {
            crate::BackendError::Compute(m) => ContainerError::Agent(m),
            other => other.into(),
        })?;
    AGENT_RECEIVED.fetch_add(out.len() as u64, Ordering::Relaxed);
    Ok(out)
}

/// Chunks of one vector, readable by the local kernels.
trait Source {
    /// Writes dirty local chunks back (before an offloaded operation reads them).
    fn flush(&self) -> Result<()>;
    fn lookup(&self, id: ObjectId) -> Option<usize>;
    fn read(&self, c: usize, f: &mut dyn FnMut(&[u8])) -> crate::Result<()>;
}

struct VecSource<'a, T: Pod> {
    vec: &'a FarVec<T>,
    index: HashMap<ObjectId, usize>,
    window: Window,
}

impl<'a, T: Pod + Send + Sync> VecSource<'a, T> {
    fn new(vec: &'a FarVec<T>) -> Self {
        Self {
            vec,
            index: vec
                .chunks
                .iter()
                .enumerate()
                .map(|(i, c)| (c.far_id(), i))
                .collect(),
            window: Window::for_objects(&vec.rt, vec.chunk_len * size_of::<T>()),
        }
    }
}

impl<T: Pod + Send + Sync> Source for VecSource<'_, T> {
    fn flush(&self) -> Result<()> {
        self.vec.flush()
    }

    fn lookup(&self, id: ObjectId) -> Option<usize> {
        self.index.get(&id).copied()
    }

    fn read(&self, c: usize, f: &mut dyn FnMut(&[u8])) -> crate::Result<()> {
        let chunks = &self.vec.chunks;
        if !chunks[c].is_local() {
            let end = (c + self.window.batch).min(chunks.len());
            self.vec.rt.prefetch(&chunks[c..end])?;
        }
        let s = self.vec.rt.scope();
        f(bytemuck::cast_slice(chunks[c].read_nt(&s)?));
        Ok(())
    }
}

/// The kernels' view of local vectors: reads their chunks, collects written outputs.
struct LocalIo<'a> {
    sources: Vec<&'a dyn Source>,
    written: RefCell<HashMap<ObjectId, Vec<u8>>>,
    error: RefCell<Option<crate::Error>>,
}

impl kernels::ChunkIo for LocalIo<'_> {
    fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), AgentError> {
        for s in &self.sources {
            if let Some(c) = s.lookup(id) {
                return s.read(c, f).map_err(|e| {
                    let msg = e.to_string();
                    *self.error.borrow_mut() = Some(e);
                    AgentError::Invalid(msg)
                });
            }
        }
        Err(AgentError::NotFound(id))
    }

    fn write(&self, id: u64, data: &[u8]) -> Result<(), AgentError> {
        self.written.borrow_mut().insert(id, data.to_vec());
        Ok(())
    }
}

impl<'a> LocalIo<'a> {
    fn new(sources: Vec<&'a dyn Source>) -> Self {
        Self {
            sources,
            written: RefCell::default(),
            error: RefCell::default(),
        }
    }

    /// Maps a kernel error, preferring the runtime error that caused it.
    fn fail(&self, e: AgentError) -> ContainerError {
        match self.error.borrow_mut().take() {
            Some(rt) => rt.into(),
            None => e.into(),
        }
    }
}

/// Output objects for a result of at most `max_len` elements.
fn out_spec(chunk_elems: usize, max_len: usize) -> OutSpec {
    let n = max_len.div_ceil(chunk_elems.max(1));
    let base = agent_ids(n);
    OutSpec {
        chunk_elems: chunk_elems as u32,
        ids: (base..base + n as u64).collect(),
    }
}

/// Builds a vector from the output chunks `out.ids[..]` holding `len` elements, taking their bytes
/// from `fetch`.
fn collect_output<U: Primitive + Send + Sync>(
    rt: &Runtime,
    out: &OutSpec,
    len: u64,
    fetch: impl FnOnce(&[ObjectId]) -> Result<Vec<Vec<u8>>>,
) -> Result<FarVec<U>> {
    let per = out.chunk_elems as usize;
    let used = usize::try_from(len)
        .map_err(|_| ContainerError::Invalid("result too long".into()))?
        .div_ceil(per.max(1));
    let ids = out.ids.get(..used).ok_or_else(|| {
        ContainerError::Agent(format!("result of {len} elements exceeds its output"))
    })?;
    let mut v = FarVec::with_chunk_len(rt, per);
    for bytes in fetch(ids)? {
        if bytes.len() % size_of::<U>() != 0 {
            return Err(ContainerError::Agent("output chunk of odd size".into()));
        }
        let mut elems = vec![U::zeroed(); bytes.len() / size_of::<U>()];
        bytemuck::cast_slice_mut::<U, u8>(&mut elems).copy_from_slice(&bytes);
        v.extend_from_slice(&elems)?;
    }
    if v.len() as u64 != len {
        return Err(ContainerError::Agent(format!(
            "output holds {} elements, expected {len}",
            v.len()
        )));
    }
    Ok(v)
}

impl<T: Primitive + Send + Sync> FarVec<T> {
    /// The agent's name for this vector: element type and `(chunk id, used elements)`.
    pub fn vec_ref(&self) -> VecRef {
        VecRef {
            ty: T::TYPE,
            chunks: (0..self.chunks.len())
                .map(|c| (self.chunks[c].far_id(), self.used_in(c) as u32))
                .collect(),
        }
    }

    fn route(&self) -> ObjectId {
        self.chunks.first().map_or(0, FarSlice::far_id)
    }

    /// Runs a small-result operation either way.
    fn small<R: AgentMessage>(
        &self,
        mode: Offload,
        opn: u16,
        args: &impl AgentMessage,
        local: impl FnOnce(&LocalIo<'_>) -> Result<R, AgentError>,
        sources: Vec<&dyn Source>,
    ) -> Result<R> {
        match mode {
            Offload::Remote => {
                for src in &sources {
                    src.flush()?;
                }
                let out = call(&self.rt, self.route(), opn, &args.encode())?;
                Ok(R::decode(&out)?)
            }
            Offload::Local => {
                let io = LocalIo::new(sources);
                local(&io).map_err(|e| io.fail(e))
            }
        }
    }

    /// Runs an operation whose result is written into `out` either way; returns the result.
    fn large<U: Primitive + Send + Sync>(
        &self,
        mode: Offload,
        opn: u16,
        args: &impl AgentMessage,
        out: &OutSpec,
        local: impl FnOnce(&LocalIo<'_>) -> Result<u64, AgentError>,
        sources: Vec<&dyn Source>,
    ) -> Result<FarVec<U>> {
        match mode {
            Offload::Remote => {
                for src in &sources {
                    src.flush()?;
                }
                let r = call(&self.rt, self.route(), opn, &args.encode())
                    .and_then(|b| Ok(u64::decode(&b)?))
                    .and_then(|len| {
                        collect_output(&self.rt, out, len, |ids| {
                            let mut all = Vec::with_capacity(ids.len());
                            for batch in ids.chunks(64) {
                                all.extend(self.rt.backend().get_many(batch)?);
                            }
                            Ok(all)
                        })
                    });
                // The output objects were copied into runtime chunks (or the call failed):
                // free the agent's copies either way.
                if let Err(e) = self.rt.backend().free(&out.ids) {
                    tracing::warn!("freeing agent output objects failed: {e}");
                }
                r
            }
            Offload::Local => {
                let io = LocalIo::new(sources);
                let len = local(&io).map_err(|e| io.fail(e))?;
                let mut written = io.written.take();
                collect_output(&self.rt, out, len, |ids| {
                    Ok(ids
                        .iter()
                        .map(|id| written.remove(id).unwrap_or_default())
                        .collect())
                })
            }
        }
    }

    /// Count, exact sum, min and max in one pass (see `farmem_proto::agent` for the exact
    /// semantics).
    ///
    /// # Errors
    /// The runtime's or the agent's error.
    pub fn aggregate(&self, mode: Offload) -> Result<Aggregates> {
        let vr = self.vec_ref();
        let src = VecSource::new(self);
        self.small(
            mode,
            op::VEC_AGGREGATE,
            &vr,
            |io| kernels::aggregate(io, &vr),
            vec![&src],
        )
    }

    /// Exact sum (`u128`/`i128` for integers, sequential `f64` for floats).
    ///
    /// # Errors
    /// As [`FarVec::aggregate`].
    pub fn sum(&self, mode: Offload) -> Result<Sum> {
        Ok(self.aggregate(mode)?.sum)
    }

    /// Smallest element (NaNs ignored).
    ///
    /// # Errors
    /// As [`FarVec::aggregate`].
    pub fn min(&self, mode: Offload) -> Result<Option<T>> {
        Ok(self.aggregate(mode)?.min.and_then(T::from_scalar))
    }

    /// Largest element (NaNs ignored).
    ///
    /// # Errors
    /// As [`FarVec::aggregate`].
    pub fn max(&self, mode: Offload) -> Result<Option<T>> {
        Ok(self.aggregate(mode)?.max.and_then(T::from_scalar))
    }

    /// `sum / count`.
    ///
    /// # Errors
    /// As [`FarVec::aggregate`].
    pub fn mean(&self, mode: Offload) -> Result<Option<f64>> {
        Ok(self.aggregate(mode)?.mean())
    }

    /// Number of elements matching `pred` (the length of [`FarVec::filter`]'s result).
    ///
    /// # Errors
    /// As [`FarVec::filter`].
    pub fn count_where(&self, pred: Predicate, mode: Offload) -> Result<usize> {
        Ok(self.filter(pred, mode)?.len())
    }

    /// Ascending indices of the elements matching `pred`, as a new far vector.
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] for operands outside `T`'s domain; the runtime's error.
    pub fn filter(&self, pred: Predicate, mode: Offload) -> Result<FarVec<u64>> {
        let domain = T::TYPE.domain();
        if pred.a.domain() != domain || pred.b.domain() != domain {
            return Err(ContainerError::Invalid(format!(
                "predicate {pred:?} does not fit {:?} elements",
                T::TYPE
            )));
        }
        let out = out_spec(FarVec::<u64>::new(&self.rt).chunk_len(), self.len);
        let args = FilterArgs {
            vec: self.vec_ref(),
            pred,
            out: out.clone(),
        };
        let src = VecSource::new(self);
        self.large(
            mode,
            op::VEC_FILTER,
            &args,
            &out,
            |io| kernels::filter(io, &args),
            vec![&src],
        )
    }

    /// `out[i] = self[idx[i]]`, as a new far vector.
    ///
    /// # Errors
    /// [`ContainerError::Agent`] for an index out of bounds; the runtime's error.
    pub fn gather(&self, idx: &FarVec<u64>, mode: Offload) -> Result<FarVec<T>> {
        let out = out_spec(self.chunk_len, idx.len());
        let args = GatherArgs {
            src: self.vec_ref(),
            idx: idx.vec_ref(),
            out: out.clone(),
        };
        let (a, b) = (VecSource::new(self), VecSource::new(idx));
        self.large(
            mode,
            op::VEC_GATHER,
            &args,
            &out,
            |io| kernels::gather(io, &args),
            vec![&a, &b],
        )
    }

    /// The distinct values, ascending (total order for floats).
    ///
    /// # Errors
    /// [`ContainerError::Agent`] when there are more than `limit`; the runtime's error.
    pub fn unique(&self, limit: u32, mode: Offload) -> Result<Vec<T>> {
        let args = UniqueArgs {
            vec: self.vec_ref(),
            limit,
        };
        let src = VecSource::new(self);
        let r: UniqueResult = self.small(
            mode,
            op::VEC_UNIQUE,
            &args,
            |io| kernels::unique(io, &args),
            vec![&src],
        )?;
        r.values
            .into_iter()
            .map(|s| T::from_scalar(s).ok_or_else(|| ContainerError::Agent("bad value".into())))
            .collect()
    }

    /// Group-by aggregate with `self` as the key column: for each distinct key (ascending), the
    /// aggregates of the `values` at the same positions.
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] for columns of different lengths; [`ContainerError::Agent`]
    /// for more than `limit` groups; the runtime's error.
    pub fn group_by<V: Primitive + Send + Sync>(
        &self,
        values: &FarVec<V>,
        limit: u32,
        mode: Offload,
    ) -> Result<Vec<(T, Aggregates)>> {
        if values.len() != self.len {
            return Err(ContainerError::Invalid(format!(
                "key column has {} elements, value column {}",
                self.len,
                values.len()
            )));
        }
        let args = GroupByArgs {
            keys: self.vec_ref(),
            values: values.vec_ref(),
            limit,
        };
        let (a, b) = (VecSource::new(self), VecSource::new(values));
        let r: GroupByResult = self.small(
            mode,
            op::VEC_GROUP_BY,
            &args,
            |io| kernels::group_by(io, &args),
            vec![&a, &b],
        )?;
        r.groups
            .into_iter()
            .map(|(k, a)| {
                T::from_scalar(k)
                    .map(|k| (k, a))
                    .ok_or_else(|| ContainerError::Agent("bad key".into()))
            })
            .collect()
    }

    /// The stable ascending sorting permutation (total order for floats), as a new far vector.
    ///
    /// # Errors
    /// The runtime's or the agent's error.
    pub fn argsort(&self, mode: Offload) -> Result<FarVec<u64>> {
        let out = out_spec(FarVec::<u64>::new(&self.rt).chunk_len(), self.len);
        let args = ArgsortArgs {
            vec: self.vec_ref(),
            out: out.clone(),
        };
        let src = VecSource::new(self);
        self.large(
            mode,
            op::VEC_ARGSORT,
            &args,
            &out,
            |io| kernels::argsort(io, &args),
            vec![&src],
        )
    }
}

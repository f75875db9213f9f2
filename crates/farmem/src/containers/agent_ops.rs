//! Agent operations on primitive [`FarVec`]s, offloaded to the memory server or run locally.
//!
//! Both paths run the same kernels (`farmem_kernels`) over the same chunks in the
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

use bytemuck::Pod;
use farmem_kernels::{self as kernels, KernelError as AgentError, derive};
use farmem_proto::agent::{
    AgentMessage, Aggregates, ArgsortArgs, CountArgs, DeriveArgs, Expr, FilterArgs, GatherArgs,
    GroupByArgs, GroupByResult, GroupMedianResult, GroupWhereArgs, OutSpec, Predicate, Sum,
    UniqueArgs, UniqueResult, VecRef, op,
};

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

/// Fresh ids for agent-created state (tables), from the runtime's own id allocator, so they
/// never collide with its objects.
pub(crate) fn agent_ids(rt: &Runtime, n: usize) -> Result<ObjectId> {
    Ok(rt.reserve_ids(n as u64)?)
}

/// Calls the remote agent, counting traffic in the runtime's statistics
/// ([`Stats::agent_bytes_sent`](crate::Stats::agent_bytes_sent) and `agent_bytes_received`).
pub(crate) fn call(rt: &Runtime, route: ObjectId, opn: u16, args: &[u8]) -> Result<Vec<u8>> {
    rt.count_agent_traffic(args.len(), 0);
    let out = rt.backend().compute(route, opn, args)?;
    rt.count_agent_traffic(0, out.len());
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
        // Dirty chunks go back in batches, not one round trip each.
        self.vec.rt.flush_many(&self.vec.chunks)?;
        Ok(())
    }

    fn lookup(&self, id: ObjectId) -> Option<usize> {
        self.index.get(&id).copied()
    }

    fn read(&self, c: usize, f: &mut dyn FnMut(&[u8])) -> crate::Result<()> {
        let chunks = &self.vec.chunks;
        if !chunks[c].is_local() {
            let end = (c + self.window.batch).min(chunks.len());
            self.vec.rt.prefetch_nt(&chunks[c..end])?;
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

/// Output objects for a result of at most `max_len` elements, under ids the runtime reserved
/// (so that they can be adopted as chunks).
fn out_spec(rt: &Runtime, chunk_elems: usize, max_len: usize) -> Result<OutSpec> {
    let n = max_len.div_ceil(chunk_elems.max(1));
    let base = rt.reserve_ids(n as u64)?;
    Ok(OutSpec {
        chunk_elems: chunk_elems as u32,
        ids: (base..base + n as u64).collect(),
    })
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

/// Takes the output chunks the agent wrote (`len` elements) as the chunks of a new vector, without
/// moving them: full chunks are adopted where they are (remote); a partial last chunk (the
/// vector's chunks are all full-size) is fetched into a new chunk and its object freed.
fn adopt_output<U: Primitive + Send + Sync>(
    rt: &Runtime,
    out: &OutSpec,
    len: u64,
) -> Result<FarVec<U>> {
    let per = (out.chunk_elems as usize).max(1);
    let len =
        usize::try_from(len).map_err(|_| ContainerError::Invalid("result too long".into()))?;
    let (full, rest) = (len / per, len % per);
    if out.ids.len() < full + usize::from(rest > 0) {
        return Err(ContainerError::Agent(format!(
            "result of {len} elements exceeds its output"
        )));
    }
    let mut v = FarVec::with_chunk_len(rt, per);
    for &id in &out.ids[..full] {
        v.chunks.push(FarSlice::from_far(rt, id, per)?);
        v.len += per;
    }
    if rest > 0 {
        let id = out.ids[full];
        let bytes = rt.backend().get(id)?;
        if bytes.len() != rest * size_of::<U>() {
            return Err(ContainerError::Agent(format!(
                "last output chunk holds {} bytes, expected {}",
                bytes.len(),
                rest * size_of::<U>()
            )));
        }
        let mut elems = vec![U::zeroed(); rest];
        bytemuck::cast_slice_mut::<U, u8>(&mut elems).copy_from_slice(&bytes);
        v.extend_from_slice(&elems)?;
        rt.backend().free(&[id])?;
    }
    Ok(v)
}

/// Runs an operation whose result is written into `out` either way; returns the result as a new
/// vector. `route` names an object of the calling client (for routing to its server).
#[allow(clippy::too_many_arguments)]
fn run_large<U: Primitive + Send + Sync>(
    rt: &Runtime,
    route: ObjectId,
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
            let r = call(rt, route, opn, &args.encode())
                .and_then(|b| Ok(u64::decode(&b)?))
                .and_then(|len| adopt_output(rt, out, len));
            if r.is_err() {
                // Some output objects may exist: free them.
                if let Err(e) = rt.backend().free(&out.ids) {
                    tracing::warn!("freeing agent output objects failed: {e}");
                }
            }
            r
        }
        Offload::Local => {
            let io = LocalIo::new(sources);
            let len = local(&io).map_err(|e| io.fail(e))?;
            let mut written = io.written.take();
            collect_output(rt, out, len, |ids| {
                Ok(ids
                    .iter()
                    .map(|id| written.remove(id).unwrap_or_default())
                    .collect())
            })
        }
    }
}

/// Runs a small-result operation either way.
fn run_small<R: AgentMessage>(
    rt: &Runtime,
    route: ObjectId,
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
            let out = call(rt, route, opn, &args.encode())?;
            Ok(R::decode(&out)?)
        }
        Offload::Local => {
            let io = LocalIo::new(sources);
            local(&io).map_err(|e| io.fail(e))
        }
    }
}

/// A far vector of any primitive type as an input of a multi-vector agent operation
/// ([`FarVec::derive`], [`FarVec::group_by_where`]); made by [`FarVec::agent_input`].
pub struct AgentInput<'a> {
    vec: VecRef,
    src: Box<dyn Source + 'a>,
}

impl AgentInput<'_> {
    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.vec.len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.vec.is_empty()
    }

    fn route(&self) -> ObjectId {
        self.vec.chunks.first().map_or(0, |c| c.0)
    }
}

/// The elements of a grouped result as the key type.
fn key_of<T: Primitive>(k: farmem_proto::agent::Scalar) -> Result<T> {
    T::from_scalar(k).ok_or_else(|| ContainerError::Agent("bad key".into()))
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
        run_small(&self.rt, self.route(), mode, opn, args, local, sources)
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
        run_large(&self.rt, self.route(), mode, opn, args, out, local, sources)
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
        self.check_pred(&pred)?;
        let args = CountArgs {
            vec: self.vec_ref(),
            pred,
        };
        let src = VecSource::new(self);
        let n: u64 = self.small(
            mode,
            op::VEC_COUNT,
            &args,
            |io| kernels::count(io, &args),
            vec![&src],
        )?;
        usize::try_from(n).map_err(|_| ContainerError::Agent(format!("count {n} too large")))
    }

    fn check_pred(&self, pred: &Predicate) -> Result<()> {
        let domain = T::TYPE.domain();
        if pred.a.domain() != domain || pred.b.domain() != domain {
            return Err(ContainerError::Invalid(format!(
                "predicate {pred:?} does not fit {:?} elements",
                T::TYPE
            )));
        }
        Ok(())
    }

    /// Ascending indices of the elements matching `pred`, as a new far vector.
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] for operands outside `T`'s domain; the runtime's error.
    pub fn filter(&self, pred: Predicate, mode: Offload) -> Result<FarVec<u64>> {
        self.check_pred(&pred)?;
        let out = out_spec(&self.rt, FarVec::<u64>::new(&self.rt).chunk_len(), self.len)?;
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
    /// An error of kind [`ErrorKind::OutOfBounds`](crate::ErrorKind) for an index out of bounds;
    /// the runtime's error.
    pub fn gather(&self, idx: &FarVec<u64>, mode: Offload) -> Result<FarVec<T>> {
        let out = out_spec(&self.rt, self.chunk_len, idx.len())?;
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
    /// An error of kind [`ErrorKind::TooManyGroups`](crate::ErrorKind) when there are more than
    /// `limit`; the runtime's error.
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

    /// The arguments of a group-by of `values` by this key column.
    fn group_args<V: Primitive + Send + Sync>(
        &self,
        values: &FarVec<V>,
        limit: u32,
    ) -> Result<GroupByArgs> {
        if values.len() != self.len {
            return Err(ContainerError::Invalid(format!(
                "key column has {} elements, value column {}",
                self.len,
                values.len()
            )));
        }
        Ok(GroupByArgs {
            keys: self.vec_ref(),
            values: values.vec_ref(),
            limit,
        })
    }

    /// Group-by aggregate with `self` as the key column: for each distinct key (ascending), the
    /// aggregates of the `values` at the same positions.
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] for columns of different lengths; kind `TooManyGroups`
    /// for more than `limit` groups; the runtime's error.
    pub fn group_by<V: Primitive + Send + Sync>(
        &self,
        values: &FarVec<V>,
        limit: u32,
        mode: Offload,
    ) -> Result<Vec<(T, Aggregates)>> {
        let args = self.group_args(values, limit)?;
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
            .map(|(k, a)| Ok((key_of(k)?, a)))
            .collect()
    }

    /// The stable ascending sorting permutation (total order for floats), as a new far vector.
    ///
    /// # Errors
    /// The runtime's or the agent's error.
    pub fn argsort(&self, mode: Offload) -> Result<FarVec<u64>> {
        let out = out_spec(&self.rt, FarVec::<u64>::new(&self.rt).chunk_len(), self.len)?;
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

    /// This vector as an input of a multi-vector operation.
    pub fn agent_input(&self) -> AgentInput<'_> {
        AgentInput {
            vec: self.vec_ref(),
            src: Box::new(VecSource::new(self)),
        }
    }

    /// A new vector computed row by row by the built-in expression `expr` from `inputs` (see
    /// [`Expr`] for the expressions, their inputs and output types). With [`Offload::Remote`]
    /// the inputs are read and the result written on the server: neither crosses the network.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{FarVec, Offload};
    /// use farmem_proto::agent::Expr;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let start = FarVec::from_slice(&rt, &[10i64, 20, 30]).unwrap();
    /// let end = FarVec::from_slice(&rt, &[15i64, 21, 90]).unwrap();
    /// for mode in [Offload::Remote, Offload::Local] {
    ///     let inputs = [start.agent_input(), end.agent_input()];
    ///     let d = FarVec::<i64>::derive(&rt, Expr::Diff, &inputs, mode).unwrap();
    ///     assert_eq!(d.to_vec().unwrap(), vec![5, 1, 60]);
    /// }
    /// ```
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] when `T` is not the expression's output type, or for the wrong
    /// number of inputs; the kernel's error for inputs of the wrong type or different
    /// lengths; the runtime's error.
    pub fn derive(
        rt: &Runtime,
        expr: Expr,
        inputs: &[AgentInput<'_>],
        mode: Offload,
    ) -> Result<FarVec<T>> {
        if T::TYPE != expr.out_type() {
            return Err(ContainerError::Invalid(format!(
                "{expr:?} yields {:?}, not {:?}",
                expr.out_type(),
                T::TYPE
            )));
        }
        let Some(first) = inputs.first() else {
            return Err(ContainerError::Invalid(format!("{expr:?} without inputs")));
        };
        let len = usize::try_from(first.len())
            .map_err(|_| ContainerError::Invalid("input too long".into()))?;
        let out = out_spec(rt, FarVec::<T>::new(rt).chunk_len(), len)?;
        let args = DeriveArgs {
            expr,
            inputs: inputs.iter().map(|i| i.vec.clone()).collect(),
            out: out.clone(),
        };
        run_large(
            rt,
            first.route(),
            mode,
            op::VEC_DERIVE,
            &args,
            &out,
            |io| derive::derive(io, &args),
            inputs.iter().map(|i| &*i.src).collect(),
        )
    }

    /// Group-by aggregate with `self` as the key column over only the rows `i` where
    /// `mask[i]` matches `pred` (in the mask's domain): for each distinct key among them
    /// (ascending), the aggregates of their `values`.
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] for an operand outside the mask's domain;
    /// kind `LengthMismatch` for vectors of different lengths, `TooManyGroups` for more than
    /// `limit` groups;
    /// the runtime's error.
    pub fn group_by_where<V: Primitive + Send + Sync>(
        &self,
        values: &FarVec<V>,
        mask: &AgentInput<'_>,
        pred: Predicate,
        limit: u32,
        mode: Offload,
    ) -> Result<Vec<(T, Aggregates)>> {
        let domain = mask.vec.ty.domain();
        if pred.a.domain() != domain || pred.b.domain() != domain {
            return Err(ContainerError::Invalid(format!(
                "predicate {pred:?} does not fit {:?} mask elements",
                mask.vec.ty
            )));
        }
        let args = GroupWhereArgs {
            group: GroupByArgs {
                keys: self.vec_ref(),
                values: values.vec_ref(),
                limit,
            },
            mask: mask.vec.clone(),
            pred,
        };
        let (a, b) = (VecSource::new(self), VecSource::new(values));
        let r: GroupByResult = self.small(
            mode,
            op::VEC_GROUP_BY_WHERE,
            &args,
            |io| kernels::group_by_where(io, &args),
            vec![&a, &b, &*mask.src],
        )?;
        r.groups
            .into_iter()
            .map(|(k, a)| Ok((key_of(k)?, a)))
            .collect()
    }

    /// Group-by aggregate with each group's lower median, `self` being the key column: for each
    /// distinct key (ascending), the aggregates of the `values` at the same positions and the
    /// lower median of the non-NaN ones (`None` if there are none).
    ///
    /// # Errors
    /// As [`FarVec::group_by`].
    pub fn group_median<V: Primitive + Send + Sync>(
        &self,
        values: &FarVec<V>,
        limit: u32,
        mode: Offload,
    ) -> Result<Vec<(T, Aggregates, Option<V>)>> {
        let args = self.group_args(values, limit)?;
        let (a, b) = (VecSource::new(self), VecSource::new(values));
        let r: GroupMedianResult = self.small(
            mode,
            op::VEC_GROUP_MEDIAN,
            &args,
            |io| kernels::group_median(io, &args),
            vec![&a, &b],
        )?;
        r.groups
            .into_iter()
            .map(|(k, a, m)| {
                let m = match m {
                    None => None,
                    Some(m) => Some(
                        V::from_scalar(m)
                            .ok_or_else(|| ContainerError::Agent("bad median".into()))?,
                    ),
                };
                Ok((key_of(k)?, a, m))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, RuntimeConfig};
    use farmem_proto::agent::{Cmp, Scalar};

    fn rt() -> Runtime {
        Runtime::new(RuntimeConfig::new(2 << 20).region_size(64 << 10)).unwrap()
    }

    const MODES: [Offload; 2] = [Offload::Remote, Offload::Local];

    /// The multi-vector operations give identical results offloaded and client-side, over
    /// vectors of different chunkings with dirty chunks.
    #[test]
    fn multi_vector_ops_identical_both_ways() {
        let rt = rt();
        let n = 20_000usize;
        let t0: Vec<i64> = (0..n as i64).map(|i| 1_451_606_400 + i * 7_919).collect();
        let mut start = FarVec::with_chunk_bytes(&rt, 4096).unwrap();
        start.extend_from_slice(&t0).unwrap();
        let mut end: FarVec<i64> = FarVec::with_chunk_bytes(&rt, 1000).unwrap();
        end.extend(t0.iter().map(|&t| t + t % 3_001)).unwrap();
        end.set(5, t0[5] + 77).unwrap();
        let keys: FarVec<u8> =
            FarVec::from_slice(&rt, &(0..n).map(|i| (i % 9) as u8).collect::<Vec<_>>()).unwrap();
        let mask: FarVec<u32> =
            FarVec::from_slice(&rt, &(0..n).map(|i| (i % 4) as u32).collect::<Vec<_>>()).unwrap();
        let pts: Vec<f64> = (0..n).map(|i| (i % 360) as f64 - 180.0).collect();
        let lon = FarVec::from_slice(&rt, &pts).unwrap();
        let lat =
            FarVec::from_slice(&rt, &pts.iter().map(|x| x / 2.0).collect::<Vec<_>>()).unwrap();
        let mut results = Vec::new();
        for mode in MODES {
            let d = FarVec::<i64>::derive(
                &rt,
                Expr::Diff,
                &[start.agent_input(), end.agent_input()],
                mode,
            )
            .unwrap()
            .to_vec()
            .unwrap();
            let h = FarVec::<f64>::derive(
                &rt,
                Expr::Haversine,
                &[
                    lon.agent_input(),
                    lat.agent_input(),
                    lat.agent_input(),
                    lon.agent_input(),
                ],
                mode,
            )
            .unwrap()
            .to_vec()
            .unwrap();
            let m = FarVec::<u8>::derive(&rt, Expr::Month, &[start.agent_input()], mode)
                .unwrap()
                .to_vec()
                .unwrap();
            let g = keys
                .group_by_where(
                    &end,
                    &mask.agent_input(),
                    Predicate::new(Cmp::Eq, Scalar::U(2)),
                    16,
                    mode,
                )
                .unwrap();
            let md = keys.group_median(&end, 16, mode).unwrap();
            let c = end
                .count_where(Predicate::new(Cmp::Gt, Scalar::I(t0[n / 2])), mode)
                .unwrap();
            assert_eq!(d.len(), n);
            assert_eq!(d[5], 77);
            assert_eq!(h.len(), n);
            assert_eq!(m[0], 1);
            assert_eq!(g.len(), 9);
            assert_eq!(md.len(), 9);
            let h_bits: Vec<u64> = h.iter().map(|x| x.to_bits()).collect();
            results.push(format!("{d:?}{h_bits:?}{m:?}{g:?}{md:?}{c}"));
        }
        assert_eq!(results[0], results[1]);
    }

    #[test]
    fn multi_vector_ops_reject_bad_input() {
        let rt = rt();
        let a = FarVec::from_slice(&rt, &[1i64, 2, 3]).unwrap();
        let b = FarVec::from_slice(&rt, &[1i64, 2]).unwrap();
        let f = FarVec::from_slice(&rt, &[1.0f64, 2.0, 3.0]).unwrap();
        for mode in MODES {
            // Output type not the expression's.
            let e =
                FarVec::<f64>::derive(&rt, Expr::Diff, &[a.agent_input(), a.agent_input()], mode);
            assert!(matches!(e, Err(ContainerError::Invalid(_))), "{mode:?}");
            // Different lengths, wrong domain, wrong arity.
            // (The kernel's verdict, the same through the agent and locally.)
            fn rejected<T>(e: Result<T>) -> bool {
                let k = e.map(|_| ()).map_err(|e| e.kind());
                matches!(
                    k,
                    Err(ErrorKind::InvalidArgument
                        | ErrorKind::LengthMismatch
                        | ErrorKind::TypeMismatch)
                )
            }
            let e =
                FarVec::<i64>::derive(&rt, Expr::Diff, &[a.agent_input(), b.agent_input()], mode);
            assert!(rejected(e), "{mode:?}");
            let e = FarVec::<u8>::derive(&rt, Expr::Hour, &[f.agent_input()], mode);
            assert!(rejected(e), "{mode:?}");
            let e =
                FarVec::<u8>::derive(&rt, Expr::Hour, &[a.agent_input(), a.agent_input()], mode);
            assert!(rejected(e), "{mode:?}");
            let e = FarVec::<u8>::derive(&rt, Expr::Hour, &[], mode);
            assert!(matches!(e, Err(ContainerError::Invalid(_))), "{mode:?}");
            // Mask of another length; operand outside the mask's domain.
            let e = a.group_by_where(
                &a,
                &b.agent_input(),
                Predicate::new(Cmp::Eq, Scalar::I(1)),
                8,
                mode,
            );
            assert_eq!(
                e.map(|_| ()).map_err(|e| e.kind()),
                Err(ErrorKind::LengthMismatch),
                "{mode:?}"
            );
            let e = a.group_by_where(
                &a,
                &f.agent_input(),
                Predicate::new(Cmp::Eq, Scalar::I(1)),
                8,
                mode,
            );
            assert!(matches!(e, Err(ContainerError::Invalid(_))), "{mode:?}");
            let e = a.group_median(&b, 8, mode);
            assert!(matches!(e, Err(ContainerError::Invalid(_))), "{mode:?}");
            let e = a.count_where(Predicate::new(Cmp::Eq, Scalar::F(1.0)), mode);
            assert!(matches!(e, Err(ContainerError::Invalid(_))), "{mode:?}");
        }
    }
}

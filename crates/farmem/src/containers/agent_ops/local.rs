//! Plumbing shared by the operations: local chunk access for the client-side path, output objects, running an operation either way, and multi-vector inputs.

#[allow(unused_imports)]
use super::*;

/// Chunks of one vector, readable by the local kernels.
pub(super) trait Source {
    /// Writes dirty local chunks back (before an offloaded operation reads them).
    fn flush(&self) -> Result<()>;
    fn lookup(&self, id: ObjectId) -> Option<usize>;
    fn read(&self, c: usize, f: &mut dyn FnMut(&[u8])) -> crate::Result<()>;
}

pub(super) struct VecSource<'a, T: Pod> {
    pub(super) vec: &'a FarVec<T>,
    pub(super) index: HashMap<ObjectId, usize>,
    pub(super) window: Window,
}

impl<'a, T: Pod + Send + Sync> VecSource<'a, T> {
    pub(super) fn new(vec: &'a FarVec<T>) -> Self {
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
pub(super) struct LocalIo<'a> {
    pub(super) sources: Vec<&'a dyn Source>,
    pub(super) written: RefCell<HashMap<ObjectId, Vec<u8>>>,
    pub(super) error: RefCell<Option<crate::Error>>,
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
    pub(super) fn new(sources: Vec<&'a dyn Source>) -> Self {
        Self {
            sources,
            written: RefCell::default(),
            error: RefCell::default(),
        }
    }

    /// Maps a kernel error, preferring the runtime error that caused it.
    pub(super) fn fail(&self, e: AgentError) -> ContainerError {
        match self.error.borrow_mut().take() {
            Some(rt) => rt.into(),
            None => e.into(),
        }
    }
}

/// Output objects for a result of at most `max_len` elements, under ids the runtime reserved
/// (so that they can be adopted as chunks).
pub(super) fn out_spec(rt: &Runtime, chunk_elems: usize, max_len: usize) -> Result<OutSpec> {
    let n = max_len.div_ceil(chunk_elems.max(1));
    let base = rt.reserve_ids(n as u64)?;
    Ok(OutSpec {
        chunk_elems: chunk_elems as u32,
        ids: (base..base + n as u64).collect(),
    })
}

/// Builds a vector from the output chunks `out.ids[..]` holding `len` elements, taking their bytes
/// from `fetch`.
pub(super) fn collect_output<U: Primitive + Send + Sync>(
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
pub(super) fn adopt_output<U: Primitive + Send + Sync>(
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
pub(super) fn run_large<U: Primitive + Send + Sync>(
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
pub(super) fn run_small<R: AgentMessage>(
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
    pub(super) vec: VecRef,
    pub(super) src: Box<dyn Source + 'a>,
}

impl std::fmt::Debug for AgentInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentInput")
            .field("vec", &self.vec)
            .finish_non_exhaustive()
    }
}

impl AgentInput<'_> {
    /// Element type.
    pub fn elem_type(&self) -> farmem_proto::agent::ElemType {
        self.vec.ty
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.vec.len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.vec.is_empty()
    }

    pub(super) fn route(&self) -> ObjectId {
        self.vec.chunks.first().map_or(0, |c| c.0)
    }
}

/// The elements of a grouped result as the key type.
pub(super) fn key_of<T: Primitive>(k: farmem_proto::agent::Scalar) -> Result<T> {
    T::from_scalar(k).ok_or_else(|| ContainerError::Agent("bad key".into()))
}

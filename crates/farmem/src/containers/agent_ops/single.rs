//! Operations on one vector: aggregates, filter, gather, unique, group-by, argsort.

#[allow(unused_imports)]
use super::*;

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
    pub(super) fn small<R: AgentMessage>(
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
    pub(super) fn large<U: Primitive + Send + Sync>(
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
        let mode = match spread_sites(&self.rt, mode) {
            Some(s) => match self.spread_aggregate(s)? {
                Some(a) => return Ok(a),
                None => Offload::Local,
            },
            None => mode,
        };
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
        let mode = match spread_sites(&self.rt, mode) {
            Some(s) => match self.spread_count(s, pred)? {
                Some(n) => return count_usize(n),
                None => Offload::Local,
            },
            None => mode,
        };
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
        count_usize(n)
    }

    pub(super) fn check_pred(&self, pred: &Predicate) -> Result<()> {
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
        let mode = match spread_sites(&self.rt, mode) {
            Some(s) => match self.spread_filter(s, pred)? {
                Some(v) => return Ok(v),
                None => Offload::Local,
            },
            None => mode,
        };
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
    /// [`ContainerError::Agent`] for an index out of bounds; the runtime's error.
    pub fn gather(&self, idx: &FarVec<u64>, mode: Offload) -> Result<FarVec<T>> {
        // Over several servers the indices may point anywhere: gathered here.
        let mode = spread_mode(&self.rt, mode);
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
    /// [`ContainerError::Agent`] when there are more than `limit`; the runtime's error.
    pub fn unique(&self, limit: u32, mode: Offload) -> Result<Vec<T>> {
        let mode = match spread_sites(&self.rt, mode) {
            Some(s) => match self.spread_unique(s, limit)? {
                Some(v) => return Ok(v),
                None => Offload::Local,
            },
            None => mode,
        };
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
    pub(super) fn group_args<V: Primitive + Send + Sync>(
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
    /// [`ContainerError::Invalid`] for columns of different lengths; [`ContainerError::Agent`]
    /// for more than `limit` groups; the runtime's error.
    pub fn group_by<V: Primitive + Send + Sync>(
        &self,
        values: &FarVec<V>,
        limit: u32,
        mode: Offload,
    ) -> Result<Vec<(T, Aggregates)>> {
        let args = self.group_args(values, limit)?;
        let (a, b) = (VecSource::new(self), VecSource::new(values));
        let spread = match spread_sites(&self.rt, mode) {
            Some(s) => self.spread_group_by(s, (&args.values, &b), None, limit)?,
            None => None,
        };
        let r: GroupByResult = match spread {
            Some(r) => r,
            None => self.small(
                spread_mode(&self.rt, mode),
                op::VEC_GROUP_BY,
                &args,
                |io| kernels::group_by(io, &args),
                vec![&a, &b],
            )?,
        };
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
        // Over several servers a sort needs every element in one place: sorted here.
        let mode = spread_mode(&self.rt, mode);
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
}

fn count_usize(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| ContainerError::Agent(format!("count {n} too large")))
}

impl FarVec<f64> {
    /// Segmented sums of gathered values, the pull step of a sparse matrix-vector product with
    /// unit weights: `out[v] = shift + scale * (self[idx[e]] summed over e in
    /// offsets[v]..offsets[v + 1])`, each sum from `0.0` left to right, as a new vector of
    /// `offsets.len() - 1` values. With a CSR graph (`offsets` per vertex into the in-edge
    /// sources `idx`) and `self` the contributions, this is one PageRank step; offloaded, the
    /// edges are read where they are stored and only the new vector's chunks are named over the
    /// network, and the server sums runs of segments with about equal edge counts on its agent
    /// threads (a run per million edges at most; the same bits as one thread).
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{FarVec, Offload};
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let x = FarVec::from_slice(&rt, &[1.0f64, 2.0, 4.0]).unwrap();
    /// let idx = FarVec::from_slice(&rt, &[0u32, 2, 1, 1, 2]).unwrap();
    /// let offsets = FarVec::from_slice(&rt, &[0u64, 2, 2, 5]).unwrap();
    /// for mode in [Offload::Remote, Offload::Local] {
    ///     let y = x.gather_sum(&idx, &offsets, 0.5, 1.0, mode).unwrap();
    ///     assert_eq!(y.to_vec().unwrap(), vec![3.5, 1.0, 5.0]);
    /// }
    /// ```
    ///
    /// # Errors
    /// [`ContainerError::Agent`] for offsets that decrease or end past `idx`, or an index past
    /// this vector; the runtime's error.
    pub fn gather_sum(
        &self,
        idx: &FarVec<u32>,
        offsets: &FarVec<u64>,
        scale: f64,
        shift: f64,
        mode: Offload,
    ) -> Result<FarVec<f64>> {
        // Over several servers the indices may point anywhere: summed here.
        let mode = spread_mode(&self.rt, mode);
        let segments = offsets.len().saturating_sub(1);
        let out = out_spec(&self.rt, self.chunk_len, segments)?;
        let args = GatherSumArgs {
            values: self.vec_ref(),
            idx: idx.vec_ref(),
            offsets: offsets.vec_ref(),
            scale,
            shift,
            out: out.clone(),
        };
        let (a, b, c) = (
            VecSource::new(self),
            VecSource::new(idx),
            VecSource::new(offsets),
        );
        self.large(
            mode,
            op::VEC_GATHER_SUM,
            &args,
            &out,
            |io| kernels::gather_sum(io, &args),
            vec![&a, &b, &c],
        )
    }
}

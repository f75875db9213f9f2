//! Operations over several vectors: derived vectors, masked group-by, group medians.

#[allow(unused_imports)]
use super::*;

/// Per group: the key, the aggregates and the two middle values (lower, upper) of its values.
pub type GroupMedians<T, V> = Vec<(T, Aggregates, Option<(V, V)>)>;

impl<T: Primitive + Send + Sync> FarVec<T> {
    /// This vector as an input of a multi-vector operation.
    pub fn agent_input(&self) -> AgentInput<'_> {
        AgentInput {
            vec: self.vec_ref(),
            src: Box::new(VecSource::new(self)),
        }
    }

    /// A new vector computed row by row by the expression `expr` over `inputs` (`Expr::col(i)`
    /// is `inputs[i]`; see [`farmem_proto::expr`]). With [`Offload::Remote`] the inputs are read
    /// and the result written on the server: neither crosses the network. Both modes evaluate
    /// through the same kernel, so the results are identical.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{FarVec, Offload};
    /// use farmem::containers::expr::Expr;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let start = FarVec::from_slice(&rt, &[10i64, 20, 30]).unwrap();
    /// let end = FarVec::from_slice(&rt, &[15i64, 21, 90]).unwrap();
    /// for mode in [Offload::Remote, Offload::Local] {
    ///     let inputs = [start.agent_input(), end.agent_input()];
    ///     let diff = Expr::col(1).sub(Expr::col(0));
    ///     let d = FarVec::<i64>::derive(&rt, &diff, &inputs, mode).unwrap();
    ///     assert_eq!(d.to_vec().unwrap(), vec![5, 1, 60]);
    /// }
    /// ```
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] when `T` is not the expression's output element type, or
    /// without inputs; [`ContainerError::Agent`] for an expression ill-typed over the inputs or
    /// inputs of different lengths; the runtime's error.
    pub fn derive(
        rt: &Runtime,
        expr: &Expr,
        inputs: &[AgentInput<'_>],
        mode: Offload,
    ) -> Result<FarVec<T>> {
        let Some(first) = inputs.first() else {
            return Err(ContainerError::Invalid("a derive without inputs".into()));
        };
        let len = usize::try_from(first.len())
            .map_err(|_| ContainerError::Invalid("input too long".into()))?;
        let mut args = DeriveArgs {
            expr: expr.clone(),
            inputs: inputs.iter().map(|i| i.vec.clone()).collect(),
            out: OutSpec {
                chunk_elems: 0,
                ids: Vec::new(),
            },
        };
        let out_ty = args.out_type().map_err(AgentError::from)?;
        if T::TYPE != out_ty {
            return Err(ContainerError::Invalid(format!(
                "the expression yields {out_ty:?}, not {:?}",
                T::TYPE
            )));
        }
        let out = out_spec(rt, FarVec::<T>::new(rt).chunk_len(), len)?;
        if let Some(sites) = spread_sites(rt, mode) {
            let r = Self::spread_derive(rt, sites, expr, inputs, &out)
                .and_then(|n| n.map(|n| adopt_output(rt, &out, n)).transpose());
            match r {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => {
                    if let Err(f) = rt.backend().free(&out.ids) {
                        tracing::warn!("freeing agent output objects failed: {f}");
                    }
                    return Err(e);
                }
            }
        }
        args.out = out.clone();
        run_large(
            rt,
            first.route(),
            spread_mode(rt, mode),
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
    /// [`ContainerError::Agent`] for vectors of different lengths or more than `limit` groups;
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
        let spread = match spread_sites(&self.rt, mode) {
            Some(s) => {
                self.spread_group_by(s, (&args.group.values, &b), Some((mask, pred)), limit)?
            }
            None => None,
        };
        let r: GroupByResult = match spread {
            Some(r) => r,
            None => self.small(
                spread_mode(&self.rt, mode),
                op::VEC_GROUP_BY_WHERE,
                &args,
                |io| kernels::group_by_where(io, &args),
                vec![&a, &b, &*mask.src],
            )?,
        };
        r.groups
            .into_iter()
            .map(|(k, a)| Ok((key_of(k)?, a)))
            .collect()
    }

    /// Group-by aggregate with each group's median, `self` being the key column: for each
    /// distinct key (ascending), the aggregates of the `values` at the same positions and the
    /// two middle values of the non-NaN ones (lower and upper, equal for an odd count; `None`
    /// if there are none), found in one pass.
    ///
    /// # Errors
    /// As [`FarVec::group_by`].
    pub fn group_median<V: Primitive + Send + Sync>(
        &self,
        values: &FarVec<V>,
        limit: u32,
        mode: Offload,
    ) -> Result<GroupMedians<T, V>> {
        let args = self.group_args(values, limit)?;
        let (a, b) = (VecSource::new(self), VecSource::new(values));
        let spread = match spread_sites(&self.rt, mode) {
            Some(s) => self.spread_group_median(s, values, limit)?,
            None => None,
        };
        let r: GroupMedianResult = match spread {
            Some(r) => r,
            None => self.small(
                spread_mode(&self.rt, mode),
                op::VEC_GROUP_MEDIAN,
                &args,
                |io| kernels::group_median(io, &args),
                vec![&a, &b],
            )?,
        };
        let value = |m| V::from_scalar(m).ok_or_else(|| ContainerError::Agent("bad median".into()));
        r.groups
            .into_iter()
            .map(|(k, a, m)| {
                let m = match m {
                    None => None,
                    Some((lo, hi)) => Some((value(lo)?, value(hi)?)),
                };
                Ok((key_of(k)?, a, m))
            })
            .collect()
    }
}

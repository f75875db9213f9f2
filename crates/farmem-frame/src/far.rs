//! Far placement: columns in farmem [`FarVec`]s, with the aggregate operations (summary, select,
//! count, unique, take), derived columns ([`Placement::derive`]), filtered value counts and
//! group-bys with medians run by the remote agent on the memory server or, for comparison, here
//! (the same kernels, identical results). Derived columns are written by the agent next to the
//! data and adopted as chunks where they are: neither the inputs nor the result cross the
//! network.

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

use farmem::containers::{self as fc, ContainerError, FarVec, Offload, Predicate, Primitive};
use farmem::{ErrorKind, Runtime};
use farmem_proto::agent::ElemType;
use farmem_proto::expr::Type;

use crate::column::ColumnData;
use crate::local_kernels::{agent_cmp, operand_as, summary_of};
use crate::storage::{BlockReader, Cmp, ColumnStore, GroupRow, Placement, Summary};
use crate::{Elem, FrameError, Result, Value};
use farmem_proto::expr::Expr;

/// Columns in far memory under a farmem [`Runtime`] (whose local budget bounds the cache).
///
/// ```
/// use std::sync::Arc;
/// use farmem::{Runtime, RuntimeConfig};
/// use farmem::containers::Offload;
/// use farmem_frame::{Column, DType, FarPlacement, Value};
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let p = FarPlacement::new(rt, Offload::Remote);
/// let c = Column::from_vec("x", DType::I64, (0..10_000i64).collect(), &p).unwrap();
/// assert_eq!(c.max().unwrap(), Some(Value::Int(9_999)));
/// ```
#[derive(Clone, Debug)]
pub struct FarPlacement {
    rt: Runtime,
    offload: Offload,
}

impl FarPlacement {
    /// Columns under `rt`; agent-capable operations run where `offload` says.
    pub fn new(rt: Runtime, offload: Offload) -> Self {
        Self { rt, offload }
    }

    fn store<T: Elem>(&self) -> Box<dyn ColumnStore<T>> {
        Box::new(FarStore {
            vec: FarVec::new(&self.rt),
            place: self.clone(),
        })
    }
}

impl Placement for FarPlacement {
    fn name(&self) -> String {
        match self.offload {
            Offload::Remote => "far+agent".into(),
            Offload::Local => "far".into(),
        }
    }
    fn new_i64(&self) -> Box<dyn ColumnStore<i64>> {
        self.store()
    }
    fn new_i32(&self) -> Box<dyn ColumnStore<i32>> {
        self.store()
    }
    fn new_u8(&self) -> Box<dyn ColumnStore<u8>> {
        self.store()
    }
    fn new_u32(&self) -> Box<dyn ColumnStore<u32>> {
        self.store()
    }
    fn new_f64(&self) -> Box<dyn ColumnStore<f64>> {
        self.store()
    }

    fn derive(&self, expr: &Expr, inputs: &[&ColumnData]) -> Option<Result<ColumnData>> {
        let ins = inputs
            .iter()
            .map(|d| match d {
                ColumnData::I64(s) => self.own::<i64>(s.as_ref()).map(|v| v.vec.agent_input()),
                ColumnData::I32(s) => self.own::<i32>(s.as_ref()).map(|v| v.vec.agent_input()),
                ColumnData::U8(s) => self.own::<u8>(s.as_ref()).map(|v| v.vec.agent_input()),
                ColumnData::U32(s) => self.own::<u32>(s.as_ref()).map(|v| v.vec.agent_input()),
                ColumnData::F64(s) => self.own::<f64>(s.as_ref()).map(|v| v.vec.agent_input()),
            })
            .collect::<Option<Vec<_>>>()?;
        let types: Vec<Type> = ins.iter().map(|i| Type::from(i.elem_type())).collect();
        let (rt, off) = (&self.rt, self.offload);
        let wrap = |e: ContainerError| FrameError::from(e);
        Some(match expr.type_of(&types).ok()?.elem() {
            ElemType::I64 => FarVec::<i64>::derive(rt, expr, &ins, off)
                .map(|vec| ColumnData::I64(self.wrap(vec)))
                .map_err(wrap),
            ElemType::I32 => FarVec::<i32>::derive(rt, expr, &ins, off)
                .map(|vec| ColumnData::I32(self.wrap(vec)))
                .map_err(wrap),
            ElemType::F64 => FarVec::<f64>::derive(rt, expr, &ins, off)
                .map(|vec| ColumnData::F64(self.wrap(vec)))
                .map_err(wrap),
            ElemType::U8 => FarVec::<u8>::derive(rt, expr, &ins, off)
                .map(|vec| ColumnData::U8(self.wrap(vec)))
                .map_err(wrap),
            _ => return None,
        })
    }
}

impl FarPlacement {
    /// `s` as a far store on this placement's backend, if it is one.
    fn own<'a, T: Elem>(&self, s: &'a dyn ColumnStore<T>) -> Option<&'a FarStore<T>> {
        let f = s.as_any().downcast_ref::<FarStore<T>>()?;
        Arc::ptr_eq(f.place.rt.backend(), self.rt.backend()).then_some(f)
    }

    fn wrap<T: Elem>(&self, vec: FarVec<T>) -> Box<dyn ColumnStore<T>> {
        Box::new(FarStore {
            vec,
            place: self.clone(),
        })
    }
}

/// A column in a [`FarVec`].
struct FarStore<T: Elem> {
    vec: FarVec<T>,
    place: FarPlacement,
}

fn indices(v: &FarVec<u64>) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(v.len());
    v.scan_nt(|xs| out.extend(xs.iter().map(|&i| i as u32)))?;
    Ok(out)
}

impl<T: Elem> FarStore<T> {
    fn far_indices(&self, idx: &[u32]) -> Result<FarVec<u64>> {
        let mut v = FarVec::new(&self.place.rt);
        for part in idx.chunks(1 << 14) {
            let wide: Vec<u64> = part.iter().map(|&i| u64::from(i)).collect();
            v.extend_from_slice(&wide)?;
        }
        Ok(v)
    }
}

/// Threshold under which a gather reads elements one by one instead of calling the agent.
const SMALL_GATHER: usize = 64;
/// Most distinct values asked of the agent before falling back to a local pass.
const UNIQUE_LIMIT: u32 = 1 << 16;

impl<T: Elem> ColumnStore<T> for FarStore<T> {
    fn len(&self) -> usize {
        self.vec.len()
    }

    fn append(&mut self, xs: &[T]) -> Result<()> {
        Ok(self.vec.extend_from_slice(xs)?)
    }

    fn scan(
        &self,
        range: Range<usize>,
        f: &mut dyn FnMut(usize, &[T]) -> Result<()>,
    ) -> Result<()> {
        let whole = range.start == 0 && range.end >= self.vec.len();
        let mut start = range.start;
        let mut err = None;
        let mut each = |xs: &[T]| {
            if err.is_none()
                && let Err(e) = f(start, xs)
            {
                err = Some(e);
            }
            start += xs.len();
        };
        if whole {
            self.vec.scan_nt(each)?;
        } else {
            // Only the chunks holding the range are fetched.
            self.vec.scan_range(range, &mut each)?;
        }
        err.map_or(Ok(()), Err)
    }

    fn gather(&self, idx: &[u32]) -> Result<Vec<T>> {
        let len = self.vec.len();
        if let Some(&bad) = idx.iter().find(|&&i| i as usize >= len) {
            return Err(FrameError::OutOfRange {
                index: bad as usize,
                len,
            });
        }
        if idx.len() <= SMALL_GATHER {
            return idx.iter().map(|&i| Ok(self.vec.get(i as usize)?)).collect();
        }
        let far_idx = self.far_indices(idx)?;
        Ok(self.vec.gather(&far_idx, self.place.offload)?.to_vec()?)
    }

    fn take(&self, idx: &[u32]) -> Result<Box<dyn ColumnStore<T>>> {
        let len = self.vec.len();
        if let Some(&bad) = idx.iter().find(|&&i| i as usize >= len) {
            return Err(FrameError::OutOfRange {
                index: bad as usize,
                len,
            });
        }
        let far_idx = self.far_indices(idx)?;
        let vec = self.vec.gather(&far_idx, self.place.offload)?;
        Ok(Box::new(FarStore {
            vec,
            place: self.place.clone(),
        }))
    }

    fn summary(&self) -> Result<Summary<T>> {
        if !T::KERNEL_SUMMARY {
            let mut s = Summary::default();
            self.scan(0..self.len(), &mut |_, xs| {
                s.add_slice(xs);
                Ok(())
            })?;
            return Ok(s);
        }
        Ok(summary_of(&self.vec.aggregate(self.place.offload)?))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn group_rows(&self, keys: &ColumnData, medians: bool) -> Option<Result<Vec<GroupRow<T>>>> {
        if !T::KERNEL_SUMMARY {
            return None;
        }
        fn go<K: Elem, T: Elem>(
            v: &FarStore<T>,
            k: &dyn ColumnStore<K>,
            medians: bool,
        ) -> Option<Result<Vec<GroupRow<T>>>> {
            // Float keys (NaN, -0.0): the caller groups them itself.
            if !K::KERNEL_SUMMARY {
                return None;
            }
            let k = v.place.own(k)?;
            let off = v.place.offload;
            let rows = if medians {
                k.vec.group_median(&v.vec, UNIQUE_LIMIT, off).map(|g| {
                    g.into_iter()
                        .map(|(key, a, middles)| GroupRow {
                            key: key.to_i64(),
                            summary: summary_of(&a),
                            middles,
                        })
                        .collect()
                })
            } else {
                k.vec.group_by(&v.vec, UNIQUE_LIMIT, off).map(|g| {
                    g.into_iter()
                        .map(|(key, a)| GroupRow {
                            key: key.to_i64(),
                            summary: summary_of(&a),
                            middles: None,
                        })
                        .collect()
                })
            };
            match rows {
                Ok(r) => Some(Ok(r)),
                // Too many groups for one answer: the caller groups itself.
                Err(e) if e.kind() == ErrorKind::TooManyGroups => None,
                Err(e) => Some(Err(e.into())),
            }
        }
        crate::column::with_store!(keys, k => go(self, k.as_ref(), medians))
    }

    fn value_counts_where(
        &self,
        mask: &ColumnData,
        cmp: Cmp,
        operand: &Value,
    ) -> Option<Result<Vec<(T, u64)>>> {
        fn run<M: Elem, T: Elem>(
            v: &FarStore<T>,
            m: &dyn ColumnStore<M>,
            cmp: Cmp,
            operand: &Value,
        ) -> Option<Result<Vec<(T, u64)>>> {
            let m = v.place.own(m)?;
            let x: M = operand_as(operand)?;
            let pred = Predicate::new(agent_cmp(cmp), x.to_scalar());
            let mask = m.vec.agent_input();
            match v
                .vec
                .group_by_where(&v.vec, &mask, pred, UNIQUE_LIMIT, v.place.offload)
            {
                Ok(groups) => Some(Ok(groups.into_iter().map(|(k, a)| (k, a.count)).collect())),
                // Too many distinct values for one answer: the caller counts them.
                Err(e) if e.kind() == ErrorKind::TooManyGroups => None,
                Err(e) => Some(Err(e.into())),
            }
        }
        crate::column::with_store!(mask, m => run(self, m.as_ref(), cmp, operand))
    }

    fn select(&self, cmp: Cmp, operand: T) -> Result<Vec<u32>> {
        let pred = Predicate::new(agent_cmp(cmp), operand.to_scalar());
        indices(&self.vec.filter(pred, self.place.offload)?)
    }

    fn count_where(&self, cmp: Cmp, operand: T) -> Result<u64> {
        let pred = Predicate::new(agent_cmp(cmp), operand.to_scalar());
        Ok(self.vec.count_where(pred, self.place.offload)? as u64)
    }

    fn value_counts(&self) -> Result<Vec<(T, u64)>> {
        match self
            .vec
            .group_by(&self.vec, UNIQUE_LIMIT, self.place.offload)
        {
            Ok(groups) => Ok(groups.into_iter().map(|(k, a)| (k, a.count)).collect()),
            // Too many distinct values for one answer: count them here.
            Err(e) if e.kind() == ErrorKind::TooManyGroups => {
                let mut counts = std::collections::HashMap::new();
                self.vec.scan_nt(|xs| {
                    for &x in xs {
                        counts.entry(x.key()).or_insert((x, 0u64)).1 += 1;
                    }
                })?;
                let mut out: Vec<(T, u64)> = counts.into_values().collect();
                out.sort_by(|a, b| a.0.total_cmp(&b.0));
                Ok(out)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn unique(&self) -> Result<Vec<T>> {
        match self.vec.unique(UNIQUE_LIMIT, self.place.offload) {
            Ok(v) => Ok(v),
            // Too many distinct values for one answer: collect them here.
            Err(e) if e.kind() == ErrorKind::TooManyGroups => {
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                self.vec.scan_nt(|xs| {
                    out.extend(xs.iter().filter(|x| seen.insert(x.key())).copied());
                })?;
                out.sort_by(T::total_cmp);
                Ok(out)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn to_vec(&self, range: Range<usize>) -> Result<Vec<T>> {
        if range.start == 0 && range.end >= self.vec.len() {
            return Ok(self.vec.to_vec()?);
        }
        let mut out = Vec::with_capacity(range.len());
        self.vec.scan_range(range, |xs| out.extend_from_slice(xs))?;
        Ok(out)
    }

    fn reader(&self) -> Box<dyn BlockReader<T> + Send + '_> {
        Box::new(FarReader(self.vec.iter()))
    }

    fn empty_like(&self) -> Box<dyn ColumnStore<T>> {
        self.place.store()
    }
}

/// Reads a far column front to back through its iterator (read-ahead in batches).
struct FarReader<'a, T: Primitive>(fc::Iter<'a, T>);

impl<T: Elem> BlockReader<T> for FarReader<'_, T> {
    fn next_block(&mut self, max: usize, out: &mut Vec<T>) -> Result<()> {
        out.clear();
        for x in self.0.by_ref().take(max) {
            out.push(x?);
        }
        Ok(())
    }
}

//! Where column elements live: the small abstraction between the DataFrame and memory.
//!
//! Every column keeps its elements in a [`ColumnStore`]. A [`Placement`] makes new stores:
//! [`LocalPlacement`] gives plain `Vec<T>`s (all-local mode, the ceiling); a far placement gives
//! stores whose elements live in far memory, which may run the aggregate operations
//! ([`ColumnStore::summary`], [`ColumnStore::select`], [`ColumnStore::unique`]) on the memory
//! server (the remote agent) instead of streaming the column here.
//!
//! The DataFrame only uses this trait, so every operation works on every placement.

use std::any::Any;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use crate::column::ColumnData;
use crate::local_kernels;
use crate::{Elem, Result, Value};
use farmem_proto::expr::Expr;

/// A comparison of a column element with an operand, for [`ColumnStore::select`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `x == operand`
    Eq,
    /// `x != operand`
    Ne,
    /// `x < operand`
    Lt,
    /// `x <= operand`
    Le,
    /// `x > operand`
    Gt,
    /// `x >= operand`
    Ge,
}

impl Cmp {
    /// Evaluates `x <cmp> operand` (NaN compares false, except with `Ne`).
    pub fn eval<T: PartialOrd>(self, x: T, operand: T) -> bool {
        match self {
            Cmp::Eq => x == operand,
            Cmp::Ne => x != operand,
            Cmp::Lt => x < operand,
            Cmp::Le => x <= operand,
            Cmp::Gt => x > operand,
            Cmp::Ge => x >= operand,
        }
    }
}

/// Count, sum, min and max of a column's non-missing elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary<T: Elem> {
    /// Non-missing elements.
    pub count: u64,
    /// Their sum (exact for integers).
    pub sum: T::Sum,
    /// The smallest, `None` if `count == 0`.
    pub min: Option<T>,
    /// The largest, `None` if `count == 0`.
    pub max: Option<T>,
}

impl<T: Elem> Default for Summary<T> {
    fn default() -> Self {
        Self {
            count: 0,
            sum: T::Sum::default(),
            min: None,
            max: None,
        }
    }
}

impl<T: Elem> Summary<T> {
    /// Adds the elements of a slice, in order.
    pub fn add_slice(&mut self, xs: &[T]) {
        for &x in xs {
            if x.is_missing() {
                continue;
            }
            self.count += 1;
            self.sum = T::add(self.sum, x);
            if self.min.is_none_or(|m| x.total_cmp(&m).is_lt()) {
                self.min = Some(x);
            }
            if self.max.is_none_or(|m| x.total_cmp(&m).is_gt()) {
                self.max = Some(x);
            }
        }
    }
}

/// One group of a group-by computed by the storage (see [`ColumnStore::group_rows`]).
#[derive(Clone, Copy, Debug)]
pub struct GroupRow<T: Elem> {
    /// The key, as `i64` (dictionary code for strings).
    pub key: i64,
    /// Aggregates of the group's values.
    pub summary: Summary<T>,
    /// The two middle values (lower, upper; equal for an odd count) of the group's non-missing
    /// values, if asked for: the median is their mean.
    pub middles: Option<(T, T)>,
}

/// A growable sequence of elements: the storage of one column.
///
/// Implementations must be deterministic: every method returns the same answer whatever the
/// placement, so that a program prints identical results in all modes.
pub trait ColumnStore<T: Elem>: Send + Sync {
    /// Number of elements.
    fn len(&self) -> usize;

    /// Whether there are no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends elements at the end.
    ///
    /// # Errors
    /// [`crate::FrameError::Storage`] if far memory refuses the data.
    fn append(&mut self, xs: &[T]) -> Result<()>;

    /// Calls `f(start, chunk)` on consecutive chunks covering `range`, in order.
    ///
    /// # Errors
    /// Errors of `f`, or storage errors.
    ///
    /// # Panics
    /// If `range` reaches past the end.
    fn scan(&self, range: Range<usize>, f: &mut dyn FnMut(usize, &[T]) -> Result<()>)
    -> Result<()>;

    /// The elements at the given indices, in that order.
    ///
    /// # Errors
    /// [`crate::FrameError::OutOfRange`] for an index past the end; storage errors.
    fn gather(&self, idx: &[u32]) -> Result<Vec<T>>;

    /// Count, sum, min and max (agent-capable).
    ///
    /// # Errors
    /// Storage errors.
    fn summary(&self) -> Result<Summary<T>> {
        let mut s = Summary::default();
        self.scan(0..self.len(), &mut |_, xs| {
            s.add_slice(xs);
            Ok(())
        })?;
        Ok(s)
    }

    /// Indices of the elements with `x <cmp> operand`, ascending (agent-capable).
    ///
    /// # Errors
    /// Storage errors.
    fn select(&self, cmp: Cmp, operand: T) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.scan(0..self.len(), &mut |start, xs| {
            out.extend(
                xs.iter()
                    .enumerate()
                    .filter(|(_, x)| cmp.eval(**x, operand))
                    .map(|(i, _)| (start + i) as u32),
            );
            Ok(())
        })?;
        Ok(out)
    }

    /// Number of elements with `x <cmp> operand` (agent-capable).
    ///
    /// # Errors
    /// Storage errors.
    fn count_where(&self, cmp: Cmp, operand: T) -> Result<u64> {
        let mut n = 0u64;
        self.scan(0..self.len(), &mut |_, xs| {
            n += xs.iter().filter(|x| cmp.eval(**x, operand)).count() as u64;
            Ok(())
        })?;
        Ok(n)
    }

    /// Distinct elements with their number of occurrences, ascending (agent-capable).
    ///
    /// # Errors
    /// Storage errors.
    fn value_counts(&self) -> Result<Vec<(T, u64)>> {
        let mut counts: std::collections::HashMap<u64, (T, u64)> = std::collections::HashMap::new();
        self.scan(0..self.len(), &mut |_, xs| {
            for &x in xs {
                counts.entry(x.key()).or_insert((x, 0)).1 += 1;
            }
            Ok(())
        })?;
        let mut out: Vec<(T, u64)> = counts.into_values().collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(out)
    }

    /// The distinct elements, sorted ascending (agent-capable).
    ///
    /// # Errors
    /// Storage errors.
    fn unique(&self) -> Result<Vec<T>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        self.scan(0..self.len(), &mut |_, xs| {
            for &x in xs {
                if seen.insert(x.key()) {
                    out.push(x);
                }
            }
            Ok(())
        })?;
        out.sort_by(T::total_cmp);
        Ok(out)
    }

    /// Copies `range` into a local vector.
    ///
    /// # Errors
    /// Storage errors.
    fn to_vec(&self, range: Range<usize>) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(range.len());
        self.scan(range, &mut |_, xs| {
            out.extend_from_slice(xs);
            Ok(())
        })?;
        Ok(out)
    }

    /// The rows at `idx`, in that order, as a new store of the same placement (agent-capable:
    /// far placements may gather on the server).
    ///
    /// # Errors
    /// [`crate::FrameError::OutOfRange`]; storage errors.
    fn take(&self, idx: &[u32]) -> Result<Box<dyn ColumnStore<T>>> {
        let mut out = self.empty_like();
        for part in idx.chunks(1 << 16) {
            out.append(&self.gather(part)?)?;
        }
        Ok(out)
    }

    /// A reader that returns the elements front to back in blocks.
    fn reader(&self) -> Box<dyn BlockReader<T> + Send + '_> {
        Box::new(RangeReader {
            store: self,
            pos: 0,
            _t: std::marker::PhantomData,
        })
    }

    /// A new, empty store with the same placement.
    fn empty_like(&self) -> Box<dyn ColumnStore<T>>;

    /// The store as [`Any`], so that a placement can recognise its own stores.
    fn as_any(&self) -> &dyn Any;

    /// Group-by with this store as the values and `keys` as the key column, computed by the
    /// placement (the remote agent, for far placements): one [`GroupRow`] per distinct key in any
    /// order, with medians when `medians`. `None` when the placement cannot do it for these
    /// columns (the caller then groups itself).
    fn group_rows(&self, _keys: &ColumnData, _medians: bool) -> Option<Result<Vec<GroupRow<T>>>> {
        None
    }

    /// Distinct elements with their counts among the rows `i` where `mask[i] <cmp> operand`
    /// (`operand` already converted to the mask's storage: string codes as integers), computed
    /// by the placement; any order. `None` when the placement cannot do it for these columns.
    fn value_counts_where(
        &self,
        _mask: &ColumnData,
        _cmp: Cmp,
        _operand: &Value,
    ) -> Option<Result<Vec<(T, u64)>>> {
        None
    }
}

/// Sequential reading of a store in blocks (several columns can be read in lockstep).
pub trait BlockReader<T>: Send {
    /// Replaces the contents of `out` with the next up to `max` elements; `out` is empty at the
    /// end.
    ///
    /// # Errors
    /// Storage errors.
    fn next_block(&mut self, max: usize, out: &mut Vec<T>) -> Result<()>;
}

/// A [`BlockReader`] over [`ColumnStore::to_vec`] of consecutive ranges.
struct RangeReader<'a, T, S: ?Sized> {
    store: &'a S,
    pos: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: Elem, S: ColumnStore<T> + ?Sized> BlockReader<T> for RangeReader<'_, T, S> {
    fn next_block(&mut self, max: usize, out: &mut Vec<T>) -> Result<()> {
        let end = (self.pos + max).min(self.store.len());
        out.clear();
        self.store.scan(self.pos..end, &mut |_, xs| {
            out.extend_from_slice(xs);
            Ok(())
        })?;
        self.pos = end;
        Ok(())
    }
}

/// Makes the stores of new columns: decides where a frame's data lives.
pub trait Placement: Send + Sync {
    /// A short name ("local", "far+agent", ...).
    fn name(&self) -> String;
    /// A new `i64` store.
    fn new_i64(&self) -> Box<dyn ColumnStore<i64>>;
    /// A new `i32` store.
    fn new_i32(&self) -> Box<dyn ColumnStore<i32>>;
    /// A new `u8` store.
    fn new_u8(&self) -> Box<dyn ColumnStore<u8>>;
    /// A new `u32` store.
    fn new_u32(&self) -> Box<dyn ColumnStore<u32>>;
    /// A new `f64` store.
    fn new_f64(&self) -> Box<dyn ColumnStore<f64>>;

    /// A column computed row by row by `expr` (type-checked, of a type the frame stores) from
    /// `inputs`, made by the placement itself (for far placements, next to the data); `None`
    /// when it cannot for these inputs (the caller then computes it locally).
    fn derive(&self, _expr: &Expr, _inputs: &[&ColumnData]) -> Option<Result<ColumnData>> {
        None
    }
}

/// Shared handle to a placement.
pub type PlacementRef = Arc<dyn Placement>;

/// Plain `Vec<T>` storage in local memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalPlacement;

impl LocalPlacement {
    /// The local placement as a shared handle.
    pub fn shared() -> PlacementRef {
        Arc::new(LocalPlacement)
    }
}

impl Placement for LocalPlacement {
    fn name(&self) -> String {
        "local".into()
    }
    fn new_i64(&self) -> Box<dyn ColumnStore<i64>> {
        Box::new(LocalStore::<i64>::default())
    }
    fn new_i32(&self) -> Box<dyn ColumnStore<i32>> {
        Box::new(LocalStore::<i32>::default())
    }
    fn new_u8(&self) -> Box<dyn ColumnStore<u8>> {
        Box::new(LocalStore::<u8>::default())
    }
    fn new_u32(&self) -> Box<dyn ColumnStore<u32>> {
        Box::new(LocalStore::<u32>::default())
    }
    fn new_f64(&self) -> Box<dyn ColumnStore<f64>> {
        Box::new(LocalStore::<f64>::default())
    }
}

/// A column in a local `Vec<T>`.
#[derive(Clone, Debug, Default)]
pub struct LocalStore<T: Elem>(pub Vec<T>);

impl<T: Elem> ColumnStore<T> for LocalStore<T> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn append(&mut self, xs: &[T]) -> Result<()> {
        self.0.extend_from_slice(xs);
        Ok(())
    }
    fn scan(
        &self,
        range: Range<usize>,
        f: &mut dyn FnMut(usize, &[T]) -> Result<()>,
    ) -> Result<()> {
        // Chunks keep the callers' working buffers small and equal to far placements'.
        const CHUNK: usize = 1 << 16;
        let mut start = range.start;
        while start < range.end {
            let end = (start + CHUNK).min(range.end);
            f(start, &self.0[start..end])?;
            start = end;
        }
        Ok(())
    }
    fn gather(&self, idx: &[u32]) -> Result<Vec<T>> {
        idx.iter()
            .map(|&i| {
                self.0
                    .get(i as usize)
                    .copied()
                    .ok_or(crate::FrameError::OutOfRange {
                        index: i as usize,
                        len: self.0.len(),
                    })
            })
            .collect()
    }
    fn to_vec(&self, range: Range<usize>) -> Result<Vec<T>> {
        Ok(self.0[range].to_vec())
    }
    fn empty_like(&self) -> Box<dyn ColumnStore<T>> {
        Box::new(LocalStore::<T>(Vec::new()))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }

    // The aggregate operations below run the remote agent's kernels over the local vectors
    // (see `local_kernels`): the same algorithms and threads as far placements with the agent.

    fn value_counts(&self) -> Result<Vec<(T, u64)>> {
        local_kernels::value_counts(&self.0)
    }

    fn summary(&self) -> Result<Summary<T>> {
        local_kernels::summary(&self.0).unwrap_or_else(|| {
            let mut s = Summary::default();
            s.add_slice(&self.0);
            Ok(s)
        })
    }

    fn count_where(&self, cmp: Cmp, operand: T) -> Result<u64> {
        local_kernels::count_where(&self.0, cmp, operand)
    }

    fn unique(&self) -> Result<Vec<T>> {
        local_kernels::unique(&self.0)
    }

    fn group_rows(&self, keys: &ColumnData, medians: bool) -> Option<Result<Vec<GroupRow<T>>>> {
        fn go<K: Elem, T: Elem>(
            vals: &[T],
            k: &dyn ColumnStore<K>,
            medians: bool,
        ) -> Option<Result<Vec<GroupRow<T>>>> {
            // Float keys (NaN, -0.0): the caller groups them itself.
            if !K::KERNEL_SUMMARY {
                return None;
            }
            let k = local_slice(k)?;
            if k.len() != vals.len() {
                return None;
            }
            local_kernels::group_rows(k, vals, medians)
        }
        crate::column::with_store!(keys, k => go(&self.0, k.as_ref(), medians))
    }

    fn value_counts_where(
        &self,
        mask: &ColumnData,
        cmp: Cmp,
        operand: &Value,
    ) -> Option<Result<Vec<(T, u64)>>> {
        fn run<M: Elem, T: Elem>(
            vals: &[T],
            m: &dyn ColumnStore<M>,
            cmp: Cmp,
            operand: &Value,
        ) -> Option<Result<Vec<(T, u64)>>> {
            let m = local_slice(m)?;
            if m.len() != vals.len() {
                return None;
            }
            local_kernels::value_counts_where(vals, m, cmp, operand)
        }
        crate::column::with_store!(mask, m => run(&self.0, m.as_ref(), cmp, operand))
    }
}

/// The elements of `s` if it is a local store.
pub(crate) fn local_slice<T: Elem>(s: &dyn ColumnStore<T>) -> Option<&[T]> {
    s.as_any()
        .downcast_ref::<LocalStore<T>>()
        .map(|l| l.0.as_slice())
}

/// Element types that a [`Placement`] can store.
pub trait Storable: Elem {
    /// A new store of this element type.
    fn new_store(p: &dyn Placement) -> Box<dyn ColumnStore<Self>>;
}

macro_rules! storable {
    ($($t:ty => $m:ident),*) => {$(
        impl Storable for $t {
            fn new_store(p: &dyn Placement) -> Box<dyn ColumnStore<Self>> { p.$m() }
        }
    )*};
}
storable!(i64 => new_i64, i32 => new_i32, u8 => new_u8, u32 => new_u32, f64 => new_f64);

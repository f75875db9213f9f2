//! Count, exact sum, min and max.

#[allow(unused_imports)]
use crate::*;

/// Running aggregates over widened values.
pub(crate) struct AggState<W: Wide> {
    pub(crate) count: u64,
    pub(crate) acc: W::Acc,
    pub(crate) min: Option<W>,
    pub(crate) max: Option<W>,
}

impl<W: Wide> AggState<W> {
    pub(crate) fn new() -> Self {
        Self {
            count: 0,
            acc: W::ZERO,
            min: None,
            max: None,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, x: W) {
        self.count += 1;
        W::add(&mut self.acc, x);
        if !x.is_nan() {
            if self.min.is_none_or(|m| x < m) {
                self.min = Some(x);
            }
            if self.max.is_none_or(|m| x > m) {
                self.max = Some(x);
            }
        }
    }

    /// Adds the aggregates of other values (exact for integers).
    pub(crate) fn merge(&mut self, o: &Self) {
        self.count += o.count;
        W::add_acc(&mut self.acc, o.acc);
        self.min = match (self.min, o.min) {
            (Some(a), Some(b)) => Some(if b < a { b } else { a }),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, o.max) {
            (Some(a), Some(b)) => Some(if b > a { b } else { a }),
            (a, b) => a.or(b),
        };
    }

    pub(crate) fn finish(&self, ty: ElemType) -> Aggregates {
        Aggregates {
            ty,
            count: self.count,
            sum: W::sum(self.acc),
            min: self.min.map(W::scalar),
            max: self.max.map(W::scalar),
        }
    }
}

/// Count, exact sum, min and max of `vec` (mean via [`Aggregates::mean`]).
///
/// # Errors
/// [`KernelError::NotFound`] for a missing chunk, [`KernelError::ShortChunk`] for a chunk shorter
/// than its element count says.
pub fn aggregate<I: ChunkIo + ?Sized>(io: &I, vec: &VecRef) -> Result<Aggregates, KernelError> {
    with_domain!(vec.ty.domain(), W => {
        let mut st = AggState::<W>::new();
        for_each_elem::<W, I>(io, vec, |x| st.push(x))?;
        Ok(st.finish(vec.ty))
    })
}

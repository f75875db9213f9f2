//! Predicates: filter and count.

#[allow(unused_imports)]
use crate::*;

/// A predicate bound to one domain.
pub(crate) struct BoundPred<W> {
    pub(crate) cmp: Cmp,
    pub(crate) a: W,
    pub(crate) b: W,
}

impl<W: Wide> BoundPred<W> {
    pub(crate) fn new(p: &Predicate) -> Result<Self, KernelError> {
        let bad = || {
            KernelError::TypeMismatch(format!("predicate operands {p:?} not in {:?}", W::DOMAIN))
        };
        Ok(Self {
            cmp: p.cmp,
            a: W::from_scalar(p.a).ok_or_else(bad)?,
            b: W::from_scalar(p.b).ok_or_else(bad)?,
        })
    }

    #[inline]
    pub(crate) fn test(&self, x: W) -> bool {
        match self.cmp {
            Cmp::Eq => x == self.a,
            Cmp::Ne => x != self.a,
            Cmp::Lt => x < self.a,
            Cmp::Le => x <= self.a,
            Cmp::Gt => x > self.a,
            Cmp::Ge => x >= self.a,
            Cmp::Between => self.a <= x && x <= self.b,
        }
    }
}

/// Runs `$body` with `$t` bound to the test of the bound predicate `$p` on `$W` elements as a
/// closure chosen once per call (a comparison per element instead of a `match` per element, so
/// that the loops using it vectorize); the same test as [`BoundPred::test`].
macro_rules! with_test {
    ($p:expr, $W:ty, $t:ident => $body:expr) => {{
        let (a, b): ($W, $W) = ($p.a, $p.b);
        match $p.cmp {
            Cmp::Eq => {
                let $t = move |x: $W| x == a;
                $body
            }
            Cmp::Ne => {
                let $t = move |x: $W| x != a;
                $body
            }
            Cmp::Lt => {
                let $t = move |x: $W| x < a;
                $body
            }
            Cmp::Le => {
                let $t = move |x: $W| x <= a;
                $body
            }
            Cmp::Gt => {
                let $t = move |x: $W| x > a;
                $body
            }
            Cmp::Ge => {
                let $t = move |x: $W| x >= a;
                $body
            }
            Cmp::Between => {
                let $t = move |x: $W| a <= x && x <= b;
                $body
            }
        }
    }};
}

/// Whether `x` satisfies `pred` (the same test [`filter`] applies). Useful to check results.
///
/// # Errors
/// [`KernelError::TypeMismatch`] when the operands are not in `x`'s domain.
pub fn matches(pred: &Predicate, x: Scalar) -> Result<bool, KernelError> {
    with_domain!(x.domain(), W => {
        let p = BoundPred::<W>::new(pred)?;
        let v = W::from_scalar(x).ok_or_else(|| KernelError::TypeMismatch(format!("{x:?} not in {:?}", W::DOMAIN)))?;
        Ok(p.test(v))
    })
}

/// Writes the ascending indices of the elements of `args.vec` matching `args.pred` as a `u64`
/// vector into `args.out`; returns its length.
///
/// # Errors
/// [`KernelError::TypeMismatch`] for operands outside the vector's domain,
/// [`KernelError::Invalid`] for too few output ids, [`KernelError::ShortChunk`];
/// [`KernelError::NotFound`] for a missing chunk; [`KernelError::OutOfCapacity`].
pub fn filter<I: ChunkIo + ?Sized>(io: &I, args: &FilterArgs) -> Result<u64, KernelError> {
    let mut out = Vec::new();
    with_domain!(args.vec.ty.domain(), W => {
        let p = BoundPred::<W>::new(&args.pred)?;
        let mut i = 0u64;
        for_each_elem::<W, I>(io, &args.vec, |x| {
            if p.test(x) {
                out.extend_from_slice(&i.to_le_bytes());
            }
            i += 1;
        })?;
    });
    write_out(io, &args.out, 8, &out)
}

/// Number of elements of `args.vec` matching `args.pred`.
///
/// # Errors
/// [`KernelError::TypeMismatch`] for operands outside the vector's domain,
/// [`KernelError::ShortChunk`]; [`KernelError::NotFound`] for a missing chunk.
pub fn count<I: ChunkIo + ?Sized>(io: &I, args: &CountArgs) -> Result<u64, KernelError> {
    with_domain!(args.vec.ty.domain(), W => {
        let p = BoundPred::<W>::new(&args.pred)?;
        let mut n = 0u64;
        with_test!(p, W, test => {
            for_each_elem::<W, I>(io, &args.vec, |x| n += u64::from(test(x)))?
        });
        Ok(n)
    })
}

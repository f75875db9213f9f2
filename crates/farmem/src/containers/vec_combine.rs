//! Whole-vector combinators: appending fallible items, mapping two vectors element by element,
//! and chunk scans that may fail or stop early. Each works a chunk at a time over plain slices,
//! so its inner loop is a slice loop.

use std::ops::ControlFlow;

use bytemuck::Pod;

use super::error::{ContainerError, Result};
use super::vec::FarVec;

/// Elements handled per step of [`FarVec::zip_map`]: large enough that each step is a
/// vectorisable slice loop, small enough that its three buffers stay in the L2 cache.
const ZIP_STEP: usize = 16 << 10;

impl<T: Pod + Send + Sync> FarVec<T> {
    /// Appends the items of `iter` until the first error, which is returned; the items before it
    /// stay appended. This is [`FarVec::extend`] for iterators of `Result`s, such as another
    /// vector's [`FarVec::iter`].
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::FarVec;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let a = FarVec::from_slice(&rt, &[1u32, 2, 3]).unwrap();
    /// let mut b: FarVec<u32> = FarVec::new(&rt);
    /// b.try_extend(a.iter().map(|x| x.map(|x| x * 10))).unwrap();
    /// assert_eq!(b.to_vec().unwrap(), [10, 20, 30]);
    /// ```
    ///
    /// # Errors
    /// The first error `iter` yields, or the runtime's error while appending (converted into
    /// `E`).
    pub fn try_extend<E>(
        &mut self,
        iter: impl IntoIterator<Item = std::result::Result<T, E>>,
    ) -> std::result::Result<(), E>
    where
        E: From<ContainerError>,
    {
        let mut buf = Vec::with_capacity(self.chunk_len());
        for x in iter {
            match x {
                Ok(x) => buf.push(x),
                Err(e) => {
                    self.extend_from_slice(&buf)?;
                    return Err(e);
                }
            }
            if buf.len() == self.chunk_len() {
                self.extend_from_slice(&buf)?;
                buf.clear();
            }
        }
        self.extend_from_slice(&buf)?;
        Ok(())
    }

    /// A new vector whose element `i` is `f(self[i], other[i])`: `C = A + B` over two far
    /// vectors without hand-made buffers. Both inputs are read a slice at a time.
    ///
    /// ```
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::FarVec;
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let a = FarVec::from_slice(&rt, &[1.0f64, 2.0, 3.0]).unwrap();
    /// let b = FarVec::from_slice(&rt, &[10u32, 20, 30]).unwrap();
    /// let c = a.zip_map(&b, |x, y| x + f64::from(y)).unwrap();
    /// assert_eq!(c.to_vec().unwrap(), [11.0, 22.0, 33.0]);
    /// ```
    ///
    /// # Errors
    /// [`ContainerError::Invalid`] when the two lengths differ; the runtime's error.
    pub fn zip_map<U, V>(
        &self,
        other: &FarVec<U>,
        mut f: impl FnMut(T, U) -> V,
    ) -> Result<FarVec<V>>
    where
        U: Pod + Send + Sync,
        V: Pod + Send + Sync,
    {
        if self.len() != other.len() {
            return Err(ContainerError::Invalid(format!(
                "zip_map over vectors of lengths {} and {}",
                self.len(),
                other.len()
            )));
        }
        let mut out = FarVec::new(self.runtime());
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::with_capacity(ZIP_STEP));
        let mut i = 0;
        while i < self.len() {
            let end = (i + ZIP_STEP).min(self.len());
            // One short-lived reader per input and step, so no scope stays open while `out`
            // grows (a scope open beside another on one thread pins everything it touched).
            self.reader().read_range(i..end, &mut a)?;
            other.reader().read_range(i..end, &mut b)?;
            c.clear();
            c.extend(a.iter().zip(&b).map(|(&x, &y)| f(x, y)));
            out.extend_from_slice(&c)?;
            i = end;
        }
        Ok(out)
    }

    /// Calls `f` with the elements chunk by chunk, in order, with read-ahead, until `f` breaks
    /// (its value is returned) or fails (its error is returned): a [`FarVec::scan`] whose
    /// closure can stop early and return errors.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use farmem::{Runtime, RuntimeConfig};
    /// use farmem::containers::{ContainerError, FarVec};
    /// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
    /// let v = FarVec::from_slice(&rt, &(0..100_000u64).collect::<Vec<_>>()).unwrap();
    /// // The first element above 70,000, stopping at the chunk that holds it.
    /// let found = v
    ///     .try_scan(|xs| {
    ///         Ok::<_, ContainerError>(match xs.iter().find(|&&x| x > 70_000) {
    ///             Some(&x) => ControlFlow::Break(x),
    ///             None => ControlFlow::Continue(()),
    ///         })
    ///     })
    ///     .unwrap();
    /// assert_eq!(found, Some(70_001));
    /// ```
    ///
    /// # Errors
    /// The first error `f` returns, or the runtime's error reading a chunk (converted into `E`).
    pub fn try_scan<B, E>(
        &self,
        mut f: impl FnMut(&[T]) -> std::result::Result<ControlFlow<B>, E>,
    ) -> std::result::Result<Option<B>, E>
    where
        E: From<ContainerError>,
    {
        for chunk in self.chunks() {
            if let ControlFlow::Break(b) = f(&chunk?)? {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Runtime, RuntimeConfig};

    /// A runtime with `budget` bytes of local memory in 64 KiB regions.
    fn rt(budget: usize) -> Runtime {
        Runtime::new(RuntimeConfig::new(budget).region_size(64 << 10)).unwrap()
    }

    #[test]
    fn zip_map_matches_std_over_many_chunks_and_a_small_budget() {
        let rt = rt(2 << 20);
        let xs: Vec<u64> = (0..300_000).map(|i| i * 7 + 1).collect();
        let ys: Vec<u32> = (0..300_000u32).map(|i| i ^ 0x5555).collect();
        let a = FarVec::from_slice(&rt, &xs).unwrap();
        let b = FarVec::from_slice(&rt, &ys).unwrap();
        let c = a.zip_map(&b, |x, y| x.wrapping_mul(u64::from(y))).unwrap();
        let want: Vec<u64> = xs
            .iter()
            .zip(&ys)
            .map(|(&x, &y)| x.wrapping_mul(u64::from(y)))
            .collect();
        assert_eq!(c.len(), want.len());
        assert_eq!(c.to_vec().unwrap(), want);
    }

    #[test]
    fn zip_map_refuses_different_lengths() {
        let rt = rt(4 << 20);
        let a = FarVec::from_slice(&rt, &[1u8, 2, 3]).unwrap();
        let b = FarVec::from_slice(&rt, &[1u8, 2]).unwrap();
        let e = a.zip_map(&b, |x, y| x + y).unwrap_err();
        assert!(matches!(e, ContainerError::Invalid(_)), "{e:?}");
    }

    #[derive(Debug, PartialEq)]
    enum AppError {
        Container,
        TooBig(u64),
    }

    impl From<ContainerError> for AppError {
        fn from(_: ContainerError) -> Self {
            AppError::Container
        }
    }

    #[test]
    fn try_extend_keeps_the_prefix_and_returns_the_first_error() {
        let rt = rt(4 << 20);
        let mut v: FarVec<u64> = FarVec::new(&rt);
        let items = (0..200_000u64).map(|i| {
            if i == 150_000 {
                Err(AppError::TooBig(i))
            } else {
                Ok(i)
            }
        });
        assert_eq!(v.try_extend(items), Err(AppError::TooBig(150_000)));
        assert_eq!(v.to_vec().unwrap(), (0..150_000).collect::<Vec<_>>());
        let a = FarVec::from_slice(&rt, &[5u64, 6]).unwrap();
        v.try_extend(a.iter()).unwrap();
        assert_eq!(v.len(), 150_002);
        assert_eq!(v.get(150_001).unwrap(), 6);
    }

    #[test]
    fn try_scan_sees_every_element_in_order_or_stops_where_told() {
        let rt = rt(4 << 20);
        let xs: Vec<u32> = (0..250_001).collect();
        let v = FarVec::from_slice(&rt, &xs).unwrap();
        let mut seen = Vec::new();
        let none: Option<()> = v
            .try_scan(|c| {
                seen.extend_from_slice(c);
                Ok::<_, ContainerError>(ControlFlow::Continue(()))
            })
            .unwrap();
        assert_eq!((none, seen), (None, xs));
        let mut chunks = 0;
        let r = v.try_scan(|c| {
            chunks += 1;
            match c.iter().find(|&&x| x >= 100_000) {
                Some(&x) => Err(AppError::TooBig(u64::from(x))),
                None => Ok(ControlFlow::<()>::Continue(())),
            }
        });
        assert_eq!(r, Err(AppError::TooBig(100_000)));
        assert!(
            chunks < v.len().div_ceil(v.chunk_len()),
            "stopped early: {chunks} chunks"
        );
    }
}

//! The far-vector kernels of the remote agent, shared by the server and the client library.
//!
//! A kernel reads chunk objects through a [`ChunkIo`] and writes large results through it. The
//! server runs them over a session's objects; the client library's *client-side* path runs the very
//! same functions over chunks it fetched itself. Both therefore visit elements in the same order
//! and produce bit-identical results (the float-summation order is part of the contract, see
//! [`farmem_proto::agent`]).
//!
//! ```
//! use std::collections::HashMap;
//! use std::cell::RefCell;
//! use farmem_proto::agent::{ElemType, Scalar, Sum, VecRef};
//! use farmem_kernels::{self as kernels, ChunkIo, KernelError};
//!
//! struct Mem(RefCell<HashMap<u64, Vec<u8>>>);
//! impl ChunkIo for Mem {
//!     fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), KernelError> {
//!         f(self.0.borrow().get(&id).ok_or(KernelError::NotFound(id))?);
//!         Ok(())
//!     }
//!     fn write(&self, id: u64, data: &[u8]) -> Result<(), KernelError> {
//!         self.0.borrow_mut().insert(id, data.to_vec());
//!         Ok(())
//!     }
//! }
//! let io = Mem(RefCell::new(HashMap::new()));
//! io.write(1, &[1, 2, 3]).unwrap();
//! let v = VecRef { ty: ElemType::U8, chunks: vec![(1, 3)] };
//! let agg = kernels::aggregate(&io, &v).unwrap();
//! assert_eq!(agg.sum, Sum::U(6));
//! assert_eq!(agg.max, Some(Scalar::U(3)));
//! ```

#![deny(missing_docs, missing_debug_implementations)]

use std::cmp::Ordering;
use std::collections::HashMap;

use farmem_proto::agent::{
    Aggregates, ArgsortArgs, Cmp, CountArgs, Domain, ElemType, FilterArgs, GatherArgs, GroupByArgs,
    GroupByResult, GroupMedianResult, GroupWhereArgs, OutSpec, Predicate, Scalar, Sum, UniqueArgs,
    UniqueResult, VecRef,
};

pub mod derive;
mod error;

pub use error::KernelError;

/// Threads a large kernel uses by default: the machine's cores, at most 4.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Object access for the kernels.
pub trait ChunkIo {
    /// Calls `f` with the bytes of object `id`.
    ///
    /// # Errors
    /// [`KernelError::NotFound`] when there is no such object (or any fetch failure).
    fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), KernelError>;

    /// Stores `data` as object `id`.
    ///
    /// # Errors
    /// [`KernelError::OutOfCapacity`] when it does not fit (or any store failure).
    fn write(&self, id: u64, data: &[u8]) -> Result<(), KernelError>;
}

/// A widened element value: `u64`, `i64` or `f64`.
pub(crate) trait Wide: Copy + PartialOrd + Send + Sync {
    type Acc: Copy + Send + Sync;
    const ZERO: Self::Acc;
    const DOMAIN: Domain;
    fn add(acc: &mut Self::Acc, v: Self);
    fn sum(acc: Self::Acc) -> Sum;
    fn scalar(self) -> Scalar;
    fn from_scalar(s: Scalar) -> Option<Self>;
    fn total(&self, other: &Self) -> Ordering;
    fn is_nan(self) -> bool;
    /// Bits that are equal exactly when the values are equal in the total order.
    fn key(self) -> u64;
    fn from_key(k: u64) -> Self;
    /// The accumulated sum of `n` copies of `self` (what `n` calls of [`Wide::add`] give).
    fn times(self, n: u64) -> Self::Acc;
    /// Adds another accumulated sum.
    fn add_acc(acc: &mut Self::Acc, other: Self::Acc);
    /// `self - base` when it is exact and fits in a `u64` (`base <= self`); `None` for floats.
    fn offset(self, base: Self) -> Option<u64>;
    /// The value `off` above `base` (inverse of [`Wide::offset`]).
    fn from_offset(base: Self, off: u64) -> Self;
    /// Calls `f` with every element of `bytes` (of element type `ty`), widened.
    fn decode(ty: ElemType, bytes: &[u8], f: &mut impl FnMut(Self)) -> Result<(), KernelError>;
}

macro_rules! decode_arms {
    ($ty:expr, $bytes:expr, $f:expr, $w:ty, $($tag:ident => $t:ty),*) => {
        match $ty {
            $(ElemType::$tag => {
                let (chunks, _) = $bytes.as_chunks::<{ size_of::<$t>() }>();
                for c in chunks {
                    $f(<$t>::from_le_bytes(*c) as $w);
                }
                Ok(())
            })*
            other => Err(KernelError::TypeMismatch(format!("element type {other:?} in the wrong domain"))),
        }
    };
}

impl Wide for u64 {
    type Acc = u128;
    const ZERO: u128 = 0;
    const DOMAIN: Domain = Domain::Unsigned;
    fn add(acc: &mut u128, v: u64) {
        *acc = acc.wrapping_add(u128::from(v));
    }
    fn sum(acc: u128) -> Sum {
        Sum::U(acc)
    }
    fn scalar(self) -> Scalar {
        Scalar::U(self)
    }
    fn from_scalar(s: Scalar) -> Option<Self> {
        if let Scalar::U(v) = s { Some(v) } else { None }
    }
    fn total(&self, other: &Self) -> Ordering {
        self.cmp(other)
    }
    fn is_nan(self) -> bool {
        false
    }
    fn key(self) -> u64 {
        self
    }
    fn from_key(k: u64) -> Self {
        k
    }
    fn add_acc(acc: &mut u128, other: u128) {
        *acc = acc.wrapping_add(other);
    }
    fn times(self, n: u64) -> u128 {
        u128::from(self).wrapping_mul(u128::from(n))
    }
    fn offset(self, base: Self) -> Option<u64> {
        self.checked_sub(base)
    }
    fn from_offset(base: Self, off: u64) -> Self {
        base.wrapping_add(off)
    }
    fn decode(ty: ElemType, bytes: &[u8], f: &mut impl FnMut(Self)) -> Result<(), KernelError> {
        decode_arms!(ty, bytes, f, u64, U8 => u8, U16 => u16, U32 => u32, U64 => u64)
    }
}

impl Wide for i64 {
    type Acc = i128;
    const ZERO: i128 = 0;
    const DOMAIN: Domain = Domain::Signed;
    fn add(acc: &mut i128, v: i64) {
        *acc = acc.wrapping_add(i128::from(v));
    }
    fn sum(acc: i128) -> Sum {
        Sum::I(acc)
    }
    fn scalar(self) -> Scalar {
        Scalar::I(self)
    }
    fn from_scalar(s: Scalar) -> Option<Self> {
        if let Scalar::I(v) = s { Some(v) } else { None }
    }
    fn total(&self, other: &Self) -> Ordering {
        self.cmp(other)
    }
    fn is_nan(self) -> bool {
        false
    }
    fn key(self) -> u64 {
        self as u64
    }
    fn from_key(k: u64) -> Self {
        k as i64
    }
    fn add_acc(acc: &mut i128, other: i128) {
        *acc = acc.wrapping_add(other);
    }
    fn times(self, n: u64) -> i128 {
        i128::from(self).wrapping_mul(i128::from(n))
    }
    fn offset(self, base: Self) -> Option<u64> {
        u64::try_from(i128::from(self) - i128::from(base)).ok()
    }
    fn from_offset(base: Self, off: u64) -> Self {
        base.wrapping_add(off as i64)
    }
    fn decode(ty: ElemType, bytes: &[u8], f: &mut impl FnMut(Self)) -> Result<(), KernelError> {
        decode_arms!(ty, bytes, f, i64, I8 => i8, I16 => i16, I32 => i32, I64 => i64)
    }
}

impl Wide for f64 {
    type Acc = f64;
    const ZERO: f64 = 0.0;
    const DOMAIN: Domain = Domain::Float;
    fn add(acc: &mut f64, v: f64) {
        *acc += v;
    }
    fn sum(acc: f64) -> Sum {
        Sum::F(acc)
    }
    fn scalar(self) -> Scalar {
        Scalar::F(self)
    }
    fn from_scalar(s: Scalar) -> Option<Self> {
        if let Scalar::F(v) = s { Some(v) } else { None }
    }
    fn total(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn key(self) -> u64 {
        self.to_bits()
    }
    fn from_key(k: u64) -> Self {
        f64::from_bits(k)
    }
    fn add_acc(acc: &mut f64, other: f64) {
        *acc += other;
    }
    fn times(self, n: u64) -> f64 {
        // Sequential, as `n` calls of `add` (float addition is not exact).
        (0..n).fold(0.0, |acc, _| acc + self)
    }
    fn offset(self, _: Self) -> Option<u64> {
        None
    }
    fn from_offset(base: Self, _: u64) -> Self {
        base
    }
    fn decode(ty: ElemType, bytes: &[u8], f: &mut impl FnMut(Self)) -> Result<(), KernelError> {
        decode_arms!(ty, bytes, f, f64, F32 => f32, F64 => f64)
    }
}

/// Runs `$body` with `$W` bound to the widened type of domain `$d`.
macro_rules! with_domain_impl {
    ($d:expr, $W:ident => $body:expr) => {
        match $d {
            Domain::Unsigned => {
                type $W = u64;
                $body
            }
            Domain::Signed => {
                type $W = i64;
                $body
            }
            Domain::Float => {
                type $W = f64;
                $body
            }
        }
    };
}

pub(crate) use with_domain_impl as with_domain;

/// Calls `f` with the raw element bytes of every chunk of `vec`, in order (exactly
/// `count * size` bytes each).
fn for_each_chunk<I: ChunkIo + ?Sized>(
    io: &I,
    vec: &VecRef,
    mut f: impl FnMut(&[u8]) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    let size = vec.ty.size();
    for &(id, count) in &vec.chunks {
        let need = count as usize * size;
        let mut res = Ok(());
        io.read(id, &mut |bytes| {
            res = if bytes.len() < need {
                Err(KernelError::ShortChunk {
                    id,
                    needed: need as u64,
                    actual: bytes.len() as u64,
                })
            } else {
                f(&bytes[..need])
            };
        })?;
        res?;
    }
    Ok(())
}

/// Calls `f` with every element of `vec`, widened, in vector order.
fn for_each_elem<W: Wide, I: ChunkIo + ?Sized>(
    io: &I,
    vec: &VecRef,
    mut f: impl FnMut(W),
) -> Result<(), KernelError> {
    for_each_chunk(io, vec, |bytes| W::decode(vec.ty, bytes, &mut f))
}

/// Running aggregates over widened values.
pub(crate) struct AggState<W: Wide> {
    count: u64,
    acc: W::Acc,
    min: Option<W>,
    max: Option<W>,
}

impl<W: Wide> AggState<W> {
    fn new() -> Self {
        Self {
            count: 0,
            acc: W::ZERO,
            min: None,
            max: None,
        }
    }

    #[inline]
    fn push(&mut self, x: W) {
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
    fn merge(&mut self, o: &Self) {
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

    fn finish(&self, ty: ElemType) -> Aggregates {
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

/// A predicate bound to one domain.
pub(crate) struct BoundPred<W> {
    cmp: Cmp,
    a: W,
    b: W,
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

/// Writes `bytes` (elements of `elem_size` bytes) as chunk objects per `out`; returns the element
/// count.
pub(crate) fn write_out<I: ChunkIo + ?Sized>(
    io: &I,
    out: &OutSpec,
    elem_size: usize,
    bytes: &[u8],
) -> Result<u64, KernelError> {
    let n = bytes.len() / elem_size;
    if n == 0 {
        return Ok(0);
    }
    if out.chunk_elems == 0 {
        return Err(KernelError::Invalid("output chunk_elems is 0".into()));
    }
    let per = out.chunk_elems as usize;
    let need = n.div_ceil(per);
    if out.ids.len() < need {
        return Err(KernelError::Invalid(format!(
            "result of {n} elements needs {need} output ids, {} given",
            out.ids.len()
        )));
    }
    for (id, chunk) in out.ids.iter().zip(bytes.chunks(per * elem_size)) {
        io.write(*id, chunk)?;
    }
    Ok(n as u64)
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

/// Reads a whole `u64` vector.
fn read_u64s<I: ChunkIo + ?Sized>(io: &I, vec: &VecRef) -> Result<Vec<u64>, KernelError> {
    if vec.ty != ElemType::U64 {
        return Err(KernelError::TypeMismatch(format!(
            "index vector must be u64, not {:?}",
            vec.ty
        )));
    }
    let mut v = Vec::with_capacity(capacity_hint(vec.len()));
    for_each_elem::<u64, I>(io, vec, |x| v.push(x))?;
    Ok(v)
}

/// Writes `out[i] = src[idx[i]]` into `args.out`; returns its length.
///
/// # Errors
/// [`KernelError::TypeMismatch`] when `idx` is not `u64`, [`KernelError::IndexOutOfBounds`] when an
/// index is out of bounds (nothing written then), plus those of [`filter`].
pub fn gather<I: ChunkIo + ?Sized>(io: &I, args: &GatherArgs) -> Result<u64, KernelError> {
    let idx = read_u64s(io, &args.idx)?;
    let size = args.src.ty.size();
    let len = args.src.len();
    // Start index of each source chunk.
    let starts: Vec<u64> = args
        .src
        .chunks
        .iter()
        .scan(0u64, |s, &(_, n)| {
            let st = *s;
            *s += u64::from(n);
            Some(st)
        })
        .collect();
    // Bucket the requests by source chunk, so every chunk is read once.
    let mut by_chunk: Vec<Vec<(u32, usize)>> = vec![Vec::new(); args.src.chunks.len()];
    for (i, &x) in idx.iter().enumerate() {
        if x >= len {
            return Err(KernelError::IndexOutOfBounds { index: x, len });
        }
        let c = starts.partition_point(|&s| s <= x) - 1;
        by_chunk[c].push(((x - starts[c]) as u32, i));
    }
    let mut out = vec![0u8; idx.len() * size];
    for (c, reqs) in by_chunk.iter().enumerate() {
        if reqs.is_empty() {
            continue;
        }
        let one = VecRef {
            ty: args.src.ty,
            chunks: vec![args.src.chunks[c]],
        };
        for_each_chunk(io, &one, |bytes| {
            for &(off, i) in reqs {
                let off = off as usize * size;
                out[i * size..(i + 1) * size].copy_from_slice(&bytes[off..off + size]);
            }
            Ok(())
        })?;
    }
    write_out(io, &args.out, size, &out)
}

/// The distinct values of `args.vec`, ascending in the total order.
///
/// # Errors
/// [`KernelError::TooManyGroups`] when there are more than `args.limit` of them, plus those of
/// [`aggregate`].
pub fn unique<I: ChunkIo + ?Sized>(io: &I, args: &UniqueArgs) -> Result<UniqueResult, KernelError> {
    let mut seen: std::collections::HashSet<u64, std::hash::BuildHasherDefault<KeyHasher>> =
        std::collections::HashSet::default();
    // Small keys in a direct table (see `DENSE_KEYS`), the rest in the set.
    let mut dense = [false; DENSE_KEYS];
    let mut distinct = 0usize;
    with_domain!(args.vec.ty.domain(), W => {
        for_each_elem::<W, I>(io, &args.vec, |x| {
            let new = match usize::try_from(x.key()) {
                Ok(k) if k < DENSE_KEYS => !std::mem::replace(&mut dense[k], true),
                _ => distinct <= args.limit as usize && seen.insert(x.key()),
            };
            distinct += usize::from(new);
        })?;
        if distinct > args.limit as usize {
            return Err(KernelError::TooManyGroups { limit: args.limit });
        }
        let small = (0..DENSE_KEYS).filter(|&k| dense[k]).map(|k| k as u64);
        let mut vals: Vec<W> = seen.into_iter().chain(small).map(W::from_key).collect();
        vals.sort_by(W::total);
        Ok(UniqueResult {
            ty: args.vec.ty,
            values: vals.into_iter().map(W::scalar).collect(),
        })
    })
}

/// Group-by aggregate: for every distinct key, the aggregates of the values with that key.
///
/// # Errors
/// [`KernelError::LengthMismatch`] for columns of different lengths, [`KernelError::TooManyGroups`]
/// for more than `args.limit` groups, plus those of [`aggregate`].
pub fn group_by<I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
) -> Result<GroupByResult, KernelError> {
    with_domain!(args.keys.ty.domain(), K => {
        with_domain!(args.values.ty.domain(), V => {
            Ok(by_result::<K, V>(args, &group_rows::<K, V, I>(io, args, None)?))
        })
    })
}

/// [`group_by`] on up to `threads` threads (integer values; float values use one).
///
/// # Errors
/// As [`group_by`].
pub fn group_by_parallel<I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    threads: usize,
) -> Result<GroupByResult, KernelError> {
    with_domain!(args.keys.ty.domain(), K => {
        with_domain!(args.values.ty.domain(), V => {
            let groups = group_rows_parallel::<K, V, I>(io, args, None, threads)?;
            Ok(by_result::<K, V>(args, &groups))
        })
    })
}

/// The result message of sorted groups.
fn by_result<K: Wide, V: Wide>(args: &GroupByArgs, groups: &[GroupEntry<V>]) -> GroupByResult {
    GroupByResult {
        key_ty: args.keys.ty,
        groups: groups
            .iter()
            .map(|(k, st)| (K::from_key(*k).scalar(), st.finish(args.values.ty)))
            .collect(),
    }
}

/// Writes the stable ascending sorting permutation of `args.vec` (as `u64` indices) into
/// `args.out`; returns its length.
///
/// # Errors
/// Those of [`filter`].
pub fn argsort<I: ChunkIo + ?Sized>(io: &I, args: &ArgsortArgs) -> Result<u64, KernelError> {
    let perm: Vec<u64> = with_domain!(args.vec.ty.domain(), W => {
        let mut vals: Vec<W> = Vec::with_capacity(capacity_hint(args.vec.len()));
        for_each_elem::<W, I>(io, &args.vec, |x| vals.push(x))?;
        let mut perm: Vec<u64> = (0..vals.len() as u64).collect();
        perm.sort_by(|&a, &b| vals[a as usize].total(&vals[b as usize]));
        perm
    });
    let bytes: Vec<u8> = perm.iter().flat_map(|i| i.to_le_bytes()).collect();
    write_out(io, &args.out, 8, &bytes)
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

/// Sequential reading of a vector in blocks whose boundaries need not match its chunks', so that
/// vectors with different chunkings can be read in lockstep.
pub(crate) struct Stream<'v> {
    vec: &'v VecRef,
    chunk: usize,
    off: usize,
}

impl<'v> Stream<'v> {
    pub(crate) fn new(vec: &'v VecRef) -> Self {
        Self {
            vec,
            chunk: 0,
            off: 0,
        }
    }

    /// A stream starting at element `start` (at the end if the vector is shorter).
    pub(crate) fn at(vec: &'v VecRef, start: u64) -> Self {
        let mut s = Self::new(vec);
        let mut left = start;
        while let Some(&(_, count)) = vec.chunks.get(s.chunk) {
            if left < u64::from(count) {
                s.off = left as usize;
                break;
            }
            left -= u64::from(count);
            s.chunk += 1;
        }
        s
    }

    /// Replaces `out` with the next up to `n` elements, widened (fewer only at the end).
    pub(crate) fn next<W: Wide, I: ChunkIo + ?Sized>(
        &mut self,
        io: &I,
        n: usize,
        out: &mut Vec<W>,
    ) -> Result<(), KernelError> {
        self.next_map(io, n, out, |x: W| x)
    }

    /// Replaces `out` with `f` of the next up to `n` elements, widened.
    pub(crate) fn next_map<W: Wide, T, I: ChunkIo + ?Sized>(
        &mut self,
        io: &I,
        n: usize,
        out: &mut Vec<T>,
        f: impl Fn(W) -> T,
    ) -> Result<(), KernelError> {
        out.clear();
        let ty = self.vec.ty;
        self.next_bytes(io, n, |bytes| W::decode(ty, bytes, &mut |x| out.push(f(x))))
    }

    /// Replaces `out` with the raw little-endian bytes of the next up to `n` elements.
    pub(crate) fn next_raw<I: ChunkIo + ?Sized>(
        &mut self,
        io: &I,
        n: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), KernelError> {
        out.clear();
        self.next_bytes(io, n, |bytes| {
            out.extend_from_slice(bytes);
            Ok(())
        })
    }

    /// Calls `f` with the bytes of the next up to `n` elements (fewer only at the end), one
    /// slice per chunk they span.
    fn next_bytes<I: ChunkIo + ?Sized>(
        &mut self,
        io: &I,
        n: usize,
        mut f: impl FnMut(&[u8]) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let size = self.vec.ty.size();
        let mut done = 0;
        while done < n && self.chunk < self.vec.chunks.len() {
            let (id, count) = self.vec.chunks[self.chunk];
            let count = count as usize;
            let take = (count - self.off).min(n - done);
            let (lo, hi) = (self.off * size, (self.off + take) * size);
            let mut res = Ok(());
            io.read(id, &mut |bytes| {
                res = if bytes.len() < count * size {
                    Err(KernelError::ShortChunk {
                        id,
                        needed: (count * size) as u64,
                        actual: bytes.len() as u64,
                    })
                } else {
                    f(&bytes[lo..hi])
                };
            })?;
            res?;
            done += take;
            self.off += take;
            if self.off == count {
                self.chunk += 1;
                self.off = 0;
            }
        }
        Ok(())
    }
}

/// Rows read per block by the multi-vector kernels.
pub(crate) const BLOCK: usize = 8192;

/// Elements to reserve for a vector whose length a client *declared*: at most 1 Mi, so a
/// request naming huge chunk counts cannot make the server allocate before any data is read
/// (the buffer still grows to the real length as chunks arrive).
pub(crate) fn capacity_hint(declared: u64) -> usize {
    usize::try_from(declared.min(1 << 20)).unwrap_or(0)
}

/// A multiply-shift hasher for `u64` group keys (keys are not attacker-chosen beyond the
/// client's own data, and a group limit bounds the table).
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        // Fold the high half of the full product in: the low bits of a plain product depend
        // only on the low bits of the key, and the table picks buckets from the low bits, so
        // keys that are multiples of a power of two would share a fraction of the buckets.
        let p = u128::from(x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }
}

/// One finished group: key bits and aggregates.
type GroupEntry<V> = (u64, AggState<V>);

/// Keys below this are looked up in a direct table instead of the hash map (every `u8` key, and
/// the small non-negative keys of wider types: hours, weekdays, months, vendor ids, ...).
const DENSE_KEYS: usize = 256;

/// No group yet for a dense key.
const NO_GROUP: u32 = u32::MAX;

/// Group number of each key: a direct table for keys below [`DENSE_KEYS`], a hash map above.
struct KeyIndex {
    dense: Box<[u32; DENSE_KEYS]>,
    map: HashMap<u64, u32, std::hash::BuildHasherDefault<KeyHasher>>,
}

impl KeyIndex {
    fn new() -> Self {
        Self {
            dense: Box::new([NO_GROUP; DENSE_KEYS]),
            map: HashMap::default(),
        }
    }

    #[inline(always)]
    fn get(&self, key: u64) -> Option<usize> {
        let g = match usize::try_from(key) {
            Ok(k) if k < DENSE_KEYS => self.dense[k],
            _ => *self.map.get(&key)?,
        };
        (g != NO_GROUP).then_some(g as usize)
    }

    /// Sets the group of `key` (`g < u32::MAX`).
    fn insert(&mut self, key: u64, g: u32) {
        match usize::try_from(key) {
            Ok(k) if k < DENSE_KEYS => self.dense[k] = g,
            _ => {
                self.map.insert(key, g);
            }
        }
    }
}

/// Groups being accumulated: per distinct key, the aggregates of its values.
struct Groups<V: Wide> {
    index: KeyIndex,
    groups: Vec<GroupEntry<V>>,
    limit: u32,
}

impl<V: Wide> Groups<V> {
    fn new(limit: u32) -> Self {
        Self {
            index: KeyIndex::new(),
            groups: Vec::new(),
            limit,
        }
    }

    /// A new group for `key`; its index.
    #[cold]
    fn add(&mut self, key: u64) -> Result<usize, KernelError> {
        // `limit` is a u32, so group numbers stay below `NO_GROUP`.
        if self.groups.len() >= self.limit as usize {
            return Err(KernelError::TooManyGroups { limit: self.limit });
        }
        let g = self.groups.len();
        self.index.insert(key, g as u32);
        self.groups.push((key, AggState::new()));
        Ok(g)
    }

    #[inline(always)]
    fn push(&mut self, key: u64, v: V) -> Result<(), KernelError> {
        let g = match self.index.get(key) {
            Some(g) => g,
            None => self.add(key)?,
        };
        self.groups[g].1.push(v);
        Ok(())
    }
}

/// `groups` ascending by key (in the key domain's total order).
fn sort_groups<K: Wide, V: Wide>(mut groups: Vec<GroupEntry<V>>) -> Vec<GroupEntry<V>> {
    groups.sort_by(|a, b| K::from_key(a.0).total(&K::from_key(b.0)));
    groups
}

/// Merges the groups of consecutive row runs (exact for integer values: counts and wrapping
/// sums add, minima and maxima combine), ascending by key.
fn merge_groups<K: Wide, V: Wide>(
    parts: Vec<Vec<GroupEntry<V>>>,
    limit: u32,
) -> Result<Vec<GroupEntry<V>>, KernelError> {
    let mut index = KeyIndex::new();
    let mut out: Vec<GroupEntry<V>> = Vec::new();
    for (k, st) in parts.into_iter().flatten() {
        match index.get(k) {
            Some(g) => out[g].1.merge(&st),
            None if out.len() >= limit as usize => {
                return Err(KernelError::TooManyGroups { limit });
            }
            None => {
                index.insert(k, out.len() as u32);
                out.push((k, st));
            }
        }
    }
    Ok(sort_groups::<K, V>(out))
}

/// Rows one thread of a parallel kernel gets at least.
pub(crate) const ROWS_PER_THREAD: u64 = 1 << 18;

/// Rows `0..len` cut into at most `threads` runs of at least [`ROWS_PER_THREAD`] rows.
pub(crate) fn split_rows(len: u64, threads: usize) -> Vec<std::ops::Range<u64>> {
    let parts = (threads as u64).min(len / ROWS_PER_THREAD).max(1);
    let each = len.div_ceil(parts);
    (0..parts)
        .map(|p| (p * each).min(len)..((p + 1) * each).min(len))
        .collect()
}

/// `f` of every run on its own thread; the results in run order, or the first run's error.
pub(crate) fn on_threads<T: Send>(
    runs: &[std::ops::Range<u64>],
    f: impl Fn(std::ops::Range<u64>) -> Result<T, KernelError> + Sync,
) -> Result<Vec<T>, KernelError> {
    if let [one] = runs {
        return Ok(vec![f(one.clone())?]);
    }
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = runs.iter().map(|r| s.spawn(move || f(r.clone()))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(KernelError::ThreadPanicked))
            })
            .collect()
    })
}

fn length_mismatch(what: &'static str, left: u64, right: u64) -> KernelError {
    KernelError::LengthMismatch { what, left, right }
}

/// Reads the next block of the mask and evaluates the predicate on it.
fn mask_block<I: ChunkIo + ?Sized>(
    io: &I,
    s: &mut Stream<'_>,
    pred: &Predicate,
    n: usize,
    out: &mut Vec<bool>,
) -> Result<(), KernelError> {
    with_domain!(s.vec.ty.domain(), M => {
        let p = BoundPred::<M>::new(pred)?;
        with_test!(p, M, test => s.next_map::<M, bool, I>(io, n, out, test))
    })
}

/// Checks the arguments of a group-by (with an optional mask) before anything is read.
fn check_group(args: &GroupByArgs, mask: Option<(&VecRef, &Predicate)>) -> Result<(), KernelError> {
    let len = args.keys.len();
    if args.values.len() != len {
        return Err(length_mismatch("keys and values", len, args.values.len()));
    }
    if let Some((m, p)) = mask {
        if m.len() != len {
            return Err(length_mismatch("keys and mask", len, m.len()));
        }
        with_domain!(m.ty.domain(), M => BoundPred::<M>::new(p).map(|_| ()))?;
    }
    Ok(())
}

/// The groups of all rows, ascending by key.
fn group_rows<K: Wide, V: Wide, I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    mask: Option<(&VecRef, &Predicate)>,
) -> Result<Vec<GroupEntry<V>>, KernelError> {
    check_group(args, mask)?;
    let groups = group_range::<K, V, I>(io, args, mask, 0..args.keys.len())?;
    Ok(sort_groups::<K, V>(groups))
}

/// [`group_rows`] on up to `threads` threads, each grouping a run of rows, the runs' groups then
/// merged. Only for integer values, whose aggregates merge exactly (float sums depend on the
/// order): float values are grouped on one thread.
fn group_rows_parallel<K: Wide, V: Wide, I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    mask: Option<(&VecRef, &Predicate)>,
    threads: usize,
) -> Result<Vec<GroupEntry<V>>, KernelError> {
    if V::DOMAIN == Domain::Float {
        return group_rows::<K, V, I>(io, args, mask);
    }
    check_group(args, mask)?;
    let runs = split_rows(args.keys.len(), threads);
    let parts = on_threads(&runs, |r| group_range::<K, V, I>(io, args, mask, r))?;
    merge_groups::<K, V>(parts, args.limit)
}

/// The groups of rows `rows` (checked arguments), in no particular order.
fn group_range<K: Wide, V: Wide, I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    mask: Option<(&VecRef, &Predicate)>,
    rows: std::ops::Range<u64>,
) -> Result<Vec<GroupEntry<V>>, KernelError> {
    if args.values == args.keys && args.keys.ty == ElemType::U8 {
        return byte_histogram::<V, I>(io, args, mask, rows);
    }
    let mut groups = Groups::<V>::new(args.limit);
    let (mut ks, mut vs) = (
        Stream::at(&args.keys, rows.start),
        Stream::at(&args.values, rows.start),
    );
    let mut ms = mask.map(|(m, p)| (Stream::at(m, rows.start), p));
    let (mut kb, mut vb, mut mb): (Vec<K>, Vec<V>, Vec<bool>) = Default::default();
    let mut left = rows.end - rows.start;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        ks.next::<K, I>(io, n, &mut kb)?;
        vs.next::<V, I>(io, n, &mut vb)?;
        if kb.is_empty() {
            break;
        }
        left -= kb.len() as u64;
        match &mut ms {
            Some((s, p)) => {
                mask_block(io, s, p, n, &mut mb)?;
                for ((&k, &v), &keep) in kb.iter().zip(&vb).zip(&mb) {
                    if keep {
                        groups.push(k.key(), v)?;
                    }
                }
            }
            None => {
                for (&k, &v) in kb.iter().zip(&vb) {
                    groups.push(k.key(), v)?;
                }
            }
        }
    }
    Ok(groups.groups)
}

/// [`group_rows`] of a `u8` column by itself (value counts), optionally masked: one counter per
/// byte value instead of a group lookup and an aggregate update per row. Every group's aggregates
/// follow from its key and count (`n` equal values), so the result equals the general path's.
fn byte_histogram<V: Wide, I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    mask: Option<(&VecRef, &Predicate)>,
    rows: std::ops::Range<u64>,
) -> Result<Vec<GroupEntry<V>>, KernelError> {
    let mut counts = [0u64; 256];
    let mut ks = Stream::at(&args.keys, rows.start);
    let mut ms = mask.map(|(m, p)| (Stream::at(m, rows.start), p));
    let (mut kb, mut mb): (Vec<u8>, Vec<bool>) = Default::default();
    let mut left = rows.end - rows.start;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        ks.next_raw(io, n, &mut kb)?;
        if kb.is_empty() {
            break;
        }
        left -= kb.len() as u64;
        match &mut ms {
            Some((s, p)) => {
                mask_block(io, s, p, n, &mut mb)?;
                for (&k, &keep) in kb.iter().zip(&mb) {
                    counts[usize::from(k)] += u64::from(keep);
                }
            }
            None => {
                for &k in &kb {
                    counts[usize::from(k)] += 1;
                }
            }
        }
    }
    let present = counts.iter().filter(|&&n| n > 0).count();
    if present > args.limit as usize {
        return Err(KernelError::TooManyGroups { limit: args.limit });
    }
    // Byte keys ascending are the key order of the unsigned domain.
    Ok((0u64..256)
        .zip(counts)
        .filter(|&(_, n)| n > 0)
        .map(|(k, n)| {
            let v = V::from_key(k);
            let st = AggState {
                count: n,
                acc: v.times(n),
                min: Some(v),
                max: Some(v),
            };
            (k, st)
        })
        .collect())
}

/// Widest value range whose medians are found by counting (4 Mi counters, 16 MiB).
const COUNTED_RANGE: u64 = 1 << 22;

/// How one group's median is found in the second pass of [`group_median`].
enum MedianOf<V> {
    /// Integer values of a range small next to their number: one counter per value above `lo`.
    Counts { lo: V, counts: Vec<u32> },
    /// The non-NaN values, selected at the end.
    Values(Vec<V>),
}

impl<V: Wide> MedianOf<V> {
    /// The collector for a group with these aggregates.
    fn for_group(st: &AggState<V>) -> Self {
        if let (Some(lo), Some(hi)) = (st.min, st.max)
            && let Some(range) = hi.offset(lo)
            && range < COUNTED_RANGE
            && range / 4 <= st.count
        {
            return MedianOf::Counts {
                lo,
                counts: vec![0; range as usize + 1],
            };
        }
        MedianOf::Values(Vec::with_capacity(capacity_hint(st.count)))
    }

    #[inline(always)]
    fn push(&mut self, v: V) {
        match self {
            // Counted groups hold integers within `lo..=hi`; anything else has no counter.
            MedianOf::Counts { lo, counts } => {
                if let Some(c) = v.offset(*lo).and_then(|o| counts.get_mut(o as usize)) {
                    *c += 1;
                }
            }
            MedianOf::Values(vals) => {
                if !v.is_nan() {
                    vals.push(v);
                }
            }
        }
    }

    /// Adds what another collector of the same group gathered.
    fn merge(&mut self, other: Self) {
        match (self, other) {
            (MedianOf::Counts { counts, .. }, MedianOf::Counts { counts: more, .. }) => {
                for (c, m) in counts.iter_mut().zip(more) {
                    *c += m;
                }
            }
            (MedianOf::Values(vals), MedianOf::Values(more)) => vals.extend(more),
            // Collectors of one group are of one kind (made from the same aggregates).
            (MedianOf::Counts { .. }, MedianOf::Values(_))
            | (MedianOf::Values(_), MedianOf::Counts { .. }) => {}
        }
    }

    /// The lower median of what was pushed; `None` if nothing.
    fn median(self) -> Option<V> {
        match self {
            MedianOf::Counts { lo, counts } => {
                let n: u64 = counts.iter().map(|&c| u64::from(c)).sum();
                let mid = n.checked_sub(1)? / 2;
                let mut seen = 0u64;
                counts.iter().enumerate().find_map(|(off, &c)| {
                    seen += u64::from(c);
                    (seen > mid).then(|| V::from_offset(lo, off as u64))
                })
            }
            MedianOf::Values(mut vals) => {
                let mid = vals.len().checked_sub(1)? / 2;
                Some(*vals.select_nth_unstable_by(mid, V::total).1)
            }
        }
    }
}

/// The group of every key, and a maker of empty median collectors (one per group, sized by the
/// group's aggregates) for the second pass of a group median.
fn median_plan<V: Wide>(
    groups: &[GroupEntry<V>],
) -> (KeyIndex, impl Fn() -> Vec<MedianOf<V>> + Sync + '_) {
    let mut index = KeyIndex::new();
    for (g, (k, _)) in groups.iter().enumerate() {
        index.insert(*k, g as u32);
    }
    let fresh = move || {
        groups
            .iter()
            .map(|(_, st)| MedianOf::for_group(st))
            .collect()
    };
    (index, fresh)
}

/// The second pass of a group median over rows `rows`: every value into its group's collector
/// (counted for small integer ranges, else kept in a buffer of the group's size), so no value
/// buffer grows or is copied.
fn median_range<K: Wide, V: Wide, I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    index: &KeyIndex,
    mut medians: Vec<MedianOf<V>>,
    rows: std::ops::Range<u64>,
) -> Result<Vec<MedianOf<V>>, KernelError> {
    let (mut ks, mut vs) = (
        Stream::at(&args.keys, rows.start),
        Stream::at(&args.values, rows.start),
    );
    let (mut kb, mut vb): (Vec<K>, Vec<V>) = Default::default();
    let mut left = rows.end - rows.start;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        ks.next::<K, I>(io, n, &mut kb)?;
        vs.next::<V, I>(io, n, &mut vb)?;
        if kb.is_empty() {
            break;
        }
        left -= kb.len() as u64;
        for (&k, &v) in kb.iter().zip(&vb) {
            let g = index
                .get(k.key())
                .ok_or_else(|| KernelError::Invalid("keys changed during a group-by".into()))?;
            medians[g].push(v);
        }
    }
    Ok(medians)
}

/// Group-by aggregate over the rows `i` where `args.mask[i]` matches `args.pred`: for every
/// distinct key among them, the aggregates of their values (ascending by key).
///
/// # Errors
/// [`KernelError::LengthMismatch`] for vectors of different lengths, [`KernelError::TypeMismatch`]
/// for operands outside the mask's domain, [`KernelError::TooManyGroups`] for more than `limit`
/// groups, plus those of [`aggregate`].
pub fn group_by_where<I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupWhereArgs,
) -> Result<GroupByResult, KernelError> {
    let (g, mask) = (&args.group, Some((&args.mask, &args.pred)));
    with_domain!(g.keys.ty.domain(), K => {
        with_domain!(g.values.ty.domain(), V => {
            Ok(by_result::<K, V>(g, &group_rows::<K, V, I>(io, g, mask)?))
        })
    })
}

/// [`group_by_where`] on up to `threads` threads (integer values; float values use one).
///
/// # Errors
/// As [`group_by_where`].
pub fn group_by_where_parallel<I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &GroupWhereArgs,
    threads: usize,
) -> Result<GroupByResult, KernelError> {
    let (g, mask) = (&args.group, Some((&args.mask, &args.pred)));
    with_domain!(g.keys.ty.domain(), K => {
        with_domain!(g.values.ty.domain(), V => {
            let groups = group_rows_parallel::<K, V, I>(io, g, mask, threads)?;
            Ok(by_result::<K, V>(g, &groups))
        })
    })
}

/// Group-by aggregate with each group's lower median (see
/// [`farmem_proto::agent::GroupMedianResult`]).
///
/// # Errors
/// As [`group_by`].
pub fn group_median<I: ChunkIo + ?Sized>(
    io: &I,
    args: &GroupByArgs,
) -> Result<GroupMedianResult, KernelError> {
    with_domain!(args.keys.ty.domain(), K => {
        with_domain!(args.values.ty.domain(), V => {
            let groups = group_rows::<K, V, I>(io, args, None)?;
            let (index, fresh) = median_plan(&groups);
            let medians = median_range::<K, V, I>(io, args, &index, fresh(), 0..args.keys.len())?;
            Ok(median_result::<K, V>(args, &groups, medians))
        })
    })
}

/// [`group_median`] on up to `threads` threads (integer values; float values use one): both
/// passes split the rows, the runs' aggregates and counters are merged.
///
/// # Errors
/// As [`group_median`].
pub fn group_median_parallel<I: ChunkIo + Sync + ?Sized>(
    io: &I,
    args: &GroupByArgs,
    threads: usize,
) -> Result<GroupMedianResult, KernelError> {
    with_domain!(args.keys.ty.domain(), K => {
        with_domain!(args.values.ty.domain(), V => {
            let groups = group_rows_parallel::<K, V, I>(io, args, None, threads)?;
            let (index, fresh) = median_plan(&groups);
            let threads = if V::DOMAIN == Domain::Float { 1 } else { threads };
            let runs = split_rows(args.keys.len(), threads);
            let parts = on_threads(&runs, |r| median_range::<K, V, I>(io, args, &index, fresh(), r))?;
            let mut parts = parts.into_iter();
            let mut medians = parts.next().unwrap_or_default();
            for part in parts {
                for (m, o) in medians.iter_mut().zip(part) {
                    m.merge(o);
                }
            }
            Ok(median_result::<K, V>(args, &groups, medians))
        })
    })
}

/// The result message of sorted groups and their medians' collectors.
fn median_result<K: Wide, V: Wide>(
    args: &GroupByArgs,
    groups: &[GroupEntry<V>],
    medians: Vec<MedianOf<V>>,
) -> GroupMedianResult {
    GroupMedianResult {
        key_ty: args.keys.ty,
        groups: groups
            .iter()
            .zip(medians)
            .map(|((k, st), m)| {
                let median = m.median().map(V::scalar);
                (K::from_key(*k).scalar(), st.finish(args.values.ty), median)
            })
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Objects in a map.
    #[derive(Default)]
    pub(crate) struct Mem(pub RefCell<HashMap<u64, Vec<u8>>>);

    impl ChunkIo for Mem {
        fn read(&self, id: u64, f: &mut dyn FnMut(&[u8])) -> Result<(), KernelError> {
            f(self.0.borrow().get(&id).ok_or(KernelError::NotFound(id))?);
            Ok(())
        }
        fn write(&self, id: u64, data: &[u8]) -> Result<(), KernelError> {
            self.0.borrow_mut().insert(id, data.to_vec());
            Ok(())
        }
    }

    impl Mem {
        /// Stores `bytes` as chunks of `per` elements starting at object `base`.
        pub(crate) fn vec(&self, ty: ElemType, bytes: &[u8], per: usize, base: u64) -> VecRef {
            let size = ty.size();
            let chunks = bytes
                .chunks(per * size)
                .enumerate()
                .map(|(i, c)| {
                    self.write(base + i as u64, c).unwrap();
                    (base + i as u64, (c.len() / size) as u32)
                })
                .collect();
            VecRef { ty, chunks }
        }

        pub(crate) fn read_vec(&self, out: &OutSpec, len: u64, size: usize) -> Vec<u8> {
            let mut v = Vec::new();
            for &id in out
                .ids
                .iter()
                .take((len as usize).div_ceil(out.chunk_elems as usize))
            {
                v.extend_from_slice(&self.0.borrow()[&id]);
            }
            assert_eq!(v.len(), len as usize * size);
            v
        }
    }

    fn le<T: Copy, const N: usize>(xs: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        xs.iter().flat_map(|&x| f(x)).collect()
    }

    fn out(base: u64, n: usize, per: u32) -> OutSpec {
        OutSpec {
            chunk_elems: per,
            ids: (base..base + n as u64).collect(),
        }
    }

    #[test]
    fn aggregate_matches_std_for_every_type() {
        let m = Mem::default();
        let xs: Vec<i16> = (0..1000)
            .map(|i| ((i * 7919) % 2001 - 1000) as i16)
            .collect();
        let v = m.vec(ElemType::I16, &le(&xs, i16::to_le_bytes), 64, 100);
        let a = aggregate(&m, &v).unwrap();
        assert_eq!(a.count, 1000);
        assert_eq!(a.sum, Sum::I(xs.iter().map(|&x| i128::from(x)).sum()));
        assert_eq!(a.min, Some(Scalar::I(i64::from(*xs.iter().min().unwrap()))));
        assert_eq!(a.max, Some(Scalar::I(i64::from(*xs.iter().max().unwrap()))));

        let us: Vec<u64> = vec![u64::MAX; 10];
        let v = m.vec(ElemType::U64, &le(&us, u64::to_le_bytes), 3, 200);
        assert_eq!(
            aggregate(&m, &v).unwrap().sum,
            Sum::U(u128::from(u64::MAX) * 10)
        );

        let fs: Vec<f32> = vec![1.5, f32::NAN, -2.0, 0.25];
        let v = m.vec(ElemType::F32, &le(&fs, f32::to_le_bytes), 3, 300);
        let a = aggregate(&m, &v).unwrap();
        assert_eq!(a.count, 4);
        assert!(a.sum.as_f64().is_nan());
        assert_eq!(a.min, Some(Scalar::F(-2.0)));
        assert_eq!(a.max, Some(Scalar::F(1.5)));

        let bytes: Vec<u8> = vec![5, 1, 255];
        let v = m.vec(ElemType::U8, &bytes, 2, 400);
        let a = aggregate(&m, &v).unwrap();
        assert_eq!((a.sum, a.mean()), (Sum::U(261), Some(87.0)));

        let empty = VecRef {
            ty: ElemType::F64,
            chunks: vec![],
        };
        let a = aggregate(&m, &empty).unwrap();
        assert_eq!((a.count, a.min, a.mean()), (0, None, None));
    }

    #[test]
    fn float_sum_is_sequential_in_vector_order() {
        let m = Mem::default();
        let fs: Vec<f64> = (0..1000)
            .map(|i| 1.0 / f64::from(i + 1) * 1e10_f64.powi(i % 3))
            .collect();
        let v = m.vec(ElemType::F64, &le(&fs, f64::to_le_bytes), 7, 1);
        let mut seq = 0.0;
        for x in &fs {
            seq += x;
        }
        assert_eq!(aggregate(&m, &v).unwrap().sum, Sum::F(seq));
    }

    #[test]
    fn filter_every_comparison() {
        let m = Mem::default();
        let xs: Vec<i32> = (0..500).map(|i| (i * 37) % 101 - 50).collect();
        let v = m.vec(ElemType::I32, &le(&xs, i32::to_le_bytes), 33, 1);
        for cmp in Cmp::ALL {
            let pred = Predicate {
                cmp,
                a: Scalar::I(-3),
                b: Scalar::I(20),
            };
            let o = out(1000, 100, 16);
            let n = filter(
                &m,
                &FilterArgs {
                    vec: v.clone(),
                    pred,
                    out: o.clone(),
                },
            )
            .unwrap();
            let got = m.read_vec(&o, n, 8);
            let want: Vec<u8> = xs
                .iter()
                .enumerate()
                .filter(|&(_, &x)| matches(&pred, Scalar::I(i64::from(x))).unwrap())
                .flat_map(|(i, _)| (i as u64).to_le_bytes())
                .collect();
            assert_eq!(got, want, "{cmp:?}");
            let naive = |x: i32| match cmp {
                Cmp::Eq => x == -3,
                Cmp::Ne => x != -3,
                Cmp::Lt => x < -3,
                Cmp::Le => x <= -3,
                Cmp::Gt => x > -3,
                Cmp::Ge => x >= -3,
                Cmp::Between => (-3..=20).contains(&x),
            };
            assert_eq!(n as usize, xs.iter().filter(|&&x| naive(x)).count());
        }
    }

    #[test]
    fn filter_rejects_bad_input() {
        let m = Mem::default();
        let v = m.vec(ElemType::U32, &le(&[1u32, 2, 3], u32::to_le_bytes), 2, 1);
        let args = |pred, o| FilterArgs {
            vec: v.clone(),
            pred,
            out: o,
        };
        // Operand in the wrong domain.
        let e = filter(
            &m,
            &args(Predicate::new(Cmp::Eq, Scalar::F(1.0)), out(10, 3, 2)),
        );
        assert!(matches!(e, Err(KernelError::TypeMismatch(_))));
        // Too few output ids.
        let e = filter(
            &m,
            &args(Predicate::new(Cmp::Ge, Scalar::U(0)), out(10, 1, 2)),
        );
        assert!(matches!(e, Err(KernelError::Invalid(_))));
        // Zero chunk size.
        let e = filter(
            &m,
            &args(Predicate::new(Cmp::Ge, Scalar::U(0)), out(10, 3, 0)),
        );
        assert!(matches!(e, Err(KernelError::Invalid(_))));
        // Missing chunk.
        let mut bad = v.clone();
        bad.chunks.push((999, 1));
        let e = aggregate(&m, &bad);
        assert!(matches!(e, Err(KernelError::NotFound(999))));
        // Chunk shorter than its count.
        let mut bad = v.clone();
        bad.chunks[0].1 = 3;
        assert!(matches!(
            aggregate(&m, &bad),
            Err(KernelError::ShortChunk { .. })
        ));
    }

    #[test]
    fn gather_and_bounds() {
        let m = Mem::default();
        let xs: Vec<u16> = (0..100).map(|i| i * 3).collect();
        let src = m.vec(ElemType::U16, &le(&xs, u16::to_le_bytes), 9, 1);
        let idx: Vec<u64> = vec![99, 0, 5, 5, 42];
        let iv = m.vec(ElemType::U64, &le(&idx, u64::to_le_bytes), 2, 100);
        let o = out(1000, 3, 2);
        let n = gather(
            &m,
            &GatherArgs {
                src: src.clone(),
                idx: iv,
                out: o.clone(),
            },
        )
        .unwrap();
        let want: Vec<u8> = idx
            .iter()
            .flat_map(|&i| xs[i as usize].to_le_bytes())
            .collect();
        assert_eq!(m.read_vec(&o, n, 2), want);

        let bad_idx = m.vec(ElemType::U64, &le(&[100u64], u64::to_le_bytes), 2, 200);
        let e = gather(
            &m,
            &GatherArgs {
                src: src.clone(),
                idx: bad_idx,
                out: o.clone(),
            },
        );
        assert!(matches!(e, Err(KernelError::IndexOutOfBounds { .. })));
        let wrong_ty = m.vec(ElemType::U32, &le(&[1u32], u32::to_le_bytes), 2, 300);
        let e = gather(
            &m,
            &GatherArgs {
                src,
                idx: wrong_ty,
                out: o,
            },
        );
        assert!(matches!(e, Err(KernelError::TypeMismatch(_))));
    }

    #[test]
    fn unique_sorted_and_limited() {
        let m = Mem::default();
        let fs = [2.0f64, -0.0, 0.0, 2.0, f64::NAN, -1.0];
        let v = m.vec(ElemType::F64, &le(&fs, f64::to_le_bytes), 4, 1);
        let u = unique(
            &m,
            &UniqueArgs {
                vec: v.clone(),
                limit: 10,
            },
        )
        .unwrap();
        let got: Vec<u64> = u.values.iter().map(|s| s.bits()).collect();
        let want: Vec<u64> = [-1.0, -0.0, 0.0, 2.0, f64::NAN]
            .iter()
            .map(|x: &f64| x.to_bits())
            .collect();
        assert_eq!(got, want);
        let e = unique(&m, &UniqueArgs { vec: v, limit: 4 });
        assert!(matches!(e, Err(KernelError::TooManyGroups { limit: 4 })));
    }

    #[test]
    fn group_by_matches_naive() {
        let m = Mem::default();
        let keys: Vec<i8> = (0..300).map(|i| (i % 7 - 3) as i8).collect();
        let vals: Vec<f64> = (0..300).map(|i| f64::from(i) * 0.1).collect();
        let kv = m.vec(ElemType::I8, &le(&keys, i8::to_le_bytes), 50, 1);
        let vv = m.vec(ElemType::F64, &le(&vals, f64::to_le_bytes), 17, 100);
        let r = group_by(
            &m,
            &GroupByArgs {
                keys: kv.clone(),
                values: vv.clone(),
                limit: 7,
            },
        )
        .unwrap();
        assert_eq!(r.groups.len(), 7);
        for (g, (k, a)) in r.groups.iter().enumerate() {
            assert_eq!(*k, Scalar::I(g as i64 - 3));
            let mut sum = 0.0;
            let mut n = 0;
            for (kk, v) in keys.iter().zip(&vals) {
                if i64::from(*kk) == g as i64 - 3 {
                    sum += v;
                    n += 1;
                }
            }
            assert_eq!((a.count, a.sum), (n, Sum::F(sum)));
        }
        let e = group_by(
            &m,
            &GroupByArgs {
                keys: kv.clone(),
                values: vv,
                limit: 6,
            },
        );
        assert!(matches!(e, Err(KernelError::TooManyGroups { limit: 6 })));
        let short = m.vec(ElemType::F64, &le(&vals[..299], f64::to_le_bytes), 17, 500);
        let e = group_by(
            &m,
            &GroupByArgs {
                keys: kv,
                values: short,
                limit: 7,
            },
        );
        assert!(matches!(e, Err(KernelError::LengthMismatch { .. })));
    }

    #[test]
    fn argsort_is_stable() {
        let m = Mem::default();
        let xs: Vec<u32> = (0..200).map(|i| (i * 13) % 17).collect();
        let v = m.vec(ElemType::U32, &le(&xs, u32::to_le_bytes), 30, 1);
        let o = out(1000, 20, 16);
        let n = argsort(
            &m,
            &ArgsortArgs {
                vec: v,
                out: o.clone(),
            },
        )
        .unwrap();
        let mut want: Vec<u64> = (0..200).collect();
        want.sort_by_key(|&i| xs[i as usize]);
        assert_eq!(m.read_vec(&o, n, 8), le(&want, u64::to_le_bytes));
    }

    #[test]
    fn count_matches_filter_length() {
        let m = Mem::default();
        let xs: Vec<f64> = (0..777).map(|i| f64::from(i % 50) - 0.5).collect();
        let v = m.vec(ElemType::F64, &le(&xs, f64::to_le_bytes), 40, 1);
        for cmp in Cmp::ALL {
            let pred = Predicate {
                cmp,
                a: Scalar::F(10.0),
                b: Scalar::F(20.0),
            };
            let o = out(1000, 100, 16);
            let n = filter(
                &m,
                &FilterArgs {
                    vec: v.clone(),
                    pred,
                    out: o,
                },
            )
            .unwrap();
            let c = count(
                &m,
                &CountArgs {
                    vec: v.clone(),
                    pred,
                },
            )
            .unwrap();
            assert_eq!(c, n, "{cmp:?}");
        }
        let bad = CountArgs {
            vec: v,
            pred: Predicate::new(Cmp::Eq, Scalar::I(1)),
        };
        assert!(matches!(count(&m, &bad), Err(KernelError::TypeMismatch(_))));
    }

    #[test]
    fn group_where_and_median_match_naive() {
        let m = Mem::default();
        let n = 3000usize;
        let keys: Vec<u8> = (0..n).map(|i| (i * 7 % 5) as u8).collect();
        let vals: Vec<i64> = (0..n).map(|i| ((i * 7919) % 1000) as i64 - 300).collect();
        let mask: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let kv = m.vec(ElemType::U8, &keys, 1000, 1);
        let vv = m.vec(ElemType::I64, &le(&vals, i64::to_le_bytes), 128, 100);
        let mv = m.vec(ElemType::U32, &le(&mask, u32::to_le_bytes), 500, 200);
        let group = GroupByArgs {
            keys: kv.clone(),
            values: vv.clone(),
            limit: 5,
        };
        let args = GroupWhereArgs {
            group: group.clone(),
            mask: mv.clone(),
            pred: Predicate::new(Cmp::Eq, Scalar::U(1)),
        };
        let r = group_by_where(&m, &args).unwrap();
        assert_eq!(r.groups.len(), 5);
        for (k, a) in &r.groups {
            let Scalar::U(k) = *k else { panic!() };
            let sel: Vec<i64> = (0..n)
                .filter(|&i| mask[i] == 1 && u64::from(keys[i]) == k)
                .map(|i| vals[i])
                .collect();
            assert_eq!(a.count, sel.len() as u64);
            assert_eq!(a.sum, Sum::I(sel.iter().map(|&x| i128::from(x)).sum()));
        }
        let med = group_median(&m, &group).unwrap();
        for (k, a, md) in &med.groups {
            let Scalar::U(k) = *k else { panic!() };
            let mut sel: Vec<i64> = (0..n)
                .filter(|&i| u64::from(keys[i]) == k)
                .map(|i| vals[i])
                .collect();
            sel.sort();
            assert_eq!(a.count, sel.len() as u64);
            assert_eq!(*md, Some(Scalar::I(sel[(sel.len() - 1) / 2])));
        }
        // Bad input: limit, mask length, mask operand domain.
        let mut few = args.clone();
        few.group.limit = 4;
        assert!(matches!(
            group_by_where(&m, &few),
            Err(KernelError::TooManyGroups { limit: 4 })
        ));
        let mut short = args.clone();
        short.mask = m.vec(ElemType::U32, &le(&mask[..10], u32::to_le_bytes), 500, 300);
        assert!(matches!(
            group_by_where(&m, &short),
            Err(KernelError::LengthMismatch { .. })
        ));
        let mut dom = args;
        dom.pred = Predicate::new(Cmp::Eq, Scalar::F(1.0));
        assert!(matches!(
            group_by_where(&m, &dom),
            Err(KernelError::TypeMismatch(_))
        ));
        let mut unequal = group;
        unequal.values = m.vec(ElemType::I64, &le(&vals[..5], i64::to_le_bytes), 128, 400);
        assert!(matches!(
            group_median(&m, &unequal),
            Err(KernelError::LengthMismatch { .. })
        ));
    }

    /// The specialised paths (byte value counts, direct-table keys, counted medians) give the
    /// general path's answers: the same data as `u8` and as `u16` (never specialised for value
    /// counts), keys mixing small and large values, medians of narrow and wide ranges.
    #[test]
    fn fast_group_paths_match_general_ones() {
        let m = Mem::default();
        let n = 5000usize;
        let bytes: Vec<u8> = (0..n).map(|i| ((i * 31) % 251) as u8 ^ 0x80).collect();
        let wide: Vec<u16> = bytes.iter().map(|&b| u16::from(b)).collect();
        let mask: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let b8 = m.vec(ElemType::U8, &bytes, 700, 1);
        let b16 = m.vec(ElemType::U16, &le(&wide, u16::to_le_bytes), 300, 100);
        let mv = m.vec(ElemType::U8, &mask, 999, 200);
        let by_itself = |v: &VecRef, limit| GroupByArgs {
            keys: v.clone(),
            values: v.clone(),
            limit,
        };
        // Groups without the element type (u8 or u16).
        let strip = |r: GroupByResult| -> Vec<_> {
            r.groups
                .into_iter()
                .map(|(k, a)| (k, a.count, a.sum, a.min, a.max))
                .collect()
        };
        let plain8 = strip(group_by(&m, &by_itself(&b8, 300)).unwrap());
        let plain16 = strip(group_by(&m, &by_itself(&b16, 300)).unwrap());
        assert_eq!(plain8, plain16);
        assert_eq!(plain8.len(), 251);
        for pred in [
            Predicate::new(Cmp::Eq, Scalar::U(1)),
            Predicate::new(Cmp::Ne, Scalar::U(1)),
        ] {
            let masked = |v: &VecRef| {
                let group = by_itself(v, 300);
                let mask = mv.clone();
                strip(group_by_where(&m, &GroupWhereArgs { group, mask, pred }).unwrap())
            };
            assert_eq!(masked(&b8), masked(&b16));
        }
        assert!(group_by(&m, &by_itself(&b8, 250)).is_err());
        // Keys below and above the direct table, values of a narrow and of a wide range.
        let keys: Vec<i64> = (0..n as i64)
            .map(|i| {
                if i % 2 == 0 {
                    i % 5
                } else {
                    -1_000_000 * (i % 3)
                }
            })
            .collect();
        let kv = m.vec(ElemType::I64, &le(&keys, i64::to_le_bytes), 256, 300);
        for spread in [7i64, 1 << 40] {
            let vals: Vec<i64> = (0..n as i64).map(|i| (i * 7919 % 1013) * spread).collect();
            let vv = m.vec(ElemType::I64, &le(&vals, i64::to_le_bytes), 100, 400);
            let r = group_median(
                &m,
                &GroupByArgs {
                    keys: kv.clone(),
                    values: vv,
                    limit: 10,
                },
            )
            .unwrap();
            let mut distinct: Vec<i64> = keys.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(r.groups.len(), distinct.len());
            for ((k, a, md), want_k) in r.groups.iter().zip(&distinct) {
                assert_eq!(*k, Scalar::I(*want_k));
                let mut sel: Vec<i64> = (0..n)
                    .filter(|&i| keys[i] == *want_k)
                    .map(|i| vals[i])
                    .collect();
                sel.sort();
                assert_eq!(a.count, sel.len() as u64);
                assert_eq!(a.min, Some(Scalar::I(sel[0])));
                assert_eq!(*md, Some(Scalar::I(sel[(sel.len() - 1) / 2])));
            }
        }
        // Unique with small and large values.
        let u = unique(&m, &UniqueArgs { vec: kv, limit: 8 }).unwrap();
        let got: Vec<Scalar> = u.values;
        assert_eq!(
            got,
            [-2_000_000, -1_000_000, 0, 1, 2, 3, 4]
                .map(Scalar::I)
                .to_vec()
        );
    }

    /// Timings of the taxi-sized kernels (run by hand: `cargo test --release -p farmem-server
    /// kernel_timings -- --ignored --nocapture`).
    #[test]
    #[ignore = "timing, run by hand"]
    fn kernel_timings() {
        use farmem_proto::agent::{DeriveArgs, Expr};
        let m = Mem::default();
        let n = 4_000_000usize;
        let keys: Vec<u8> = (0..n).map(|i| (i % 7) as u8 + 1).collect();
        let vals: Vec<i64> = (0..n).map(|i| ((i * 7919) % 3000) as i64).collect();
        let kv = m.vec(ElemType::U8, &keys, 65536, 1);
        let vv = m.vec(ElemType::I64, &le(&vals, i64::to_le_bytes), 8192, 1000);
        let args = GroupByArgs {
            keys: kv.clone(),
            values: vv.clone(),
            limit: 100,
        };
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let r = group_median(&m, &args).unwrap();
            eprintln!("group_median {:?} {}", t.elapsed(), r.groups.len());
            let t = std::time::Instant::now();
            let r = group_by(&m, &args).unwrap();
            eprintln!("group_by {:?} {}", t.elapsed(), r.groups.len());
            let t = std::time::Instant::now();
            let r = aggregate(&m, &vv).unwrap();
            eprintln!("aggregate {:?} {}", t.elapsed(), r.count);
            for (expr, inputs, base) in [
                (Expr::Month, vec![vv.clone()], 1u64 << 40),
                (Expr::Diff, vec![vv.clone(), vv.clone()], 1 << 41),
            ] {
                let out = out(base, n / 8192 + 1, 8192);
                let t = std::time::Instant::now();
                let args = DeriveArgs { expr, inputs, out };
                let d = crate::derive::derive(&m, &args).unwrap();
                eprintln!("derive {expr:?} {:?} {d}", t.elapsed());
            }
        }
    }
}

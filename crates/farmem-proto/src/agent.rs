//! Remote-agent operation numbers and argument/result encodings.
//!
//! The remote agent runs a fixed set of operations next to the data on a memory server, so that
//! only results cross the network. A client names an operation by number ([`op`]) and sends its
//! arguments encoded as below; the server answers with an encoded result.
//!
//! # Encoding
//!
//! Everything is fixed-width little-endian, with no padding and no alignment:
//! `u8`, `u16`, `u32`, `u64`, `i128`/`u128` (16 bytes), `f64` (IEEE-754 bits as `u64`).
//! A *byte string* is `u32 len` followed by `len` bytes. A *list* is `u32 count` followed by the
//! items. Trailing bytes after a complete message are an error.
//!
//! ## Far vectors
//!
//! A far vector of a primitive type lives on the server as a list of *chunk objects*, each holding
//! the raw little-endian elements back to back (no header). A [`VecRef`] names it:
//!
//! ```text
//! VecRef   = elem_type:u8  chunks:list<Chunk>
//! Chunk    = object_id:u64 count:u32          (the object must hold >= count * size bytes)
//! ```
//!
//! Element-type tags ([`ElemType`]): `0 u8, 1 u16, 2 u32, 3 u64, 4 i8, 5 i16, 6 i32, 7 i64,
//! 8 f32, 9 f64`. Every element is *widened* to its domain: unsigned types to `u64`, signed to
//! `i64`, floats to `f64`. A [`Scalar`] is 8 bytes holding a value of the domain (`u64`, `i64` two's
//! complement, or `f64` bits); the domain is implied by the element type it goes with.
//!
//! Large results stay remote: they are written into new chunk objects named by the client,
//! [`OutSpec`] = `chunk_elems:u32 ids:list<u64>`. A result of `len` elements fills chunk `i` (object
//! `ids[i]`) with `min(chunk_elems, len - i * chunk_elems)` elements; no object is written when
//! `len == 0`; unused ids are left alone. The answer is then just `len:u64`. On an error some of
//! the output objects may exist: the client frees `ids`.
//!
//! ## Exact semantics of aggregates
//!
//! - `count` counts all elements (NaNs included).
//! - Integer sums are exact: `i128` for signed, `u128` for unsigned types (cannot overflow for
//!   fewer than 2^64 elements).
//! - Float sums are computed in an `f64` accumulator starting at `+0.0`, adding the widened
//!   elements one by one in vector order (chunk by chunk in list order, elements in chunk order).
//!   The client-side path runs the very same kernel, so offloaded and local results are
//!   bit-identical.
//! - `min`/`max` ignore NaNs; among equal values the first wins; `None` when there is no non-NaN
//!   element. Ordering of ties `-0.0`/`+0.0` follows `<`, so the first of them wins.
//! - `mean = sum as f64 / count as f64` ([`Aggregates::mean`]).
//!
//! Sorting, `unique` and group-by keys use the total order of the domain (`f64::total_cmp` for
//! floats, so `-0.0 < +0.0` and NaNs sort last); equality is equality under that order.
//!
//! ## Server-side hash tables
//!
//! A table is named by a client-chosen `u64` table id within the session; it is created by its
//! first put and lives until [`op::HT_DROP`] or the end of the session. Keys and values are byte
//! strings. Every batched operation costs one round trip.

use std::cmp::Ordering;

/// Operation numbers.
pub mod op {
    /// Aggregates of a far vector: [`super::VecRef`] -> [`super::Aggregates`].
    pub const VEC_AGGREGATE: u16 = 1;
    /// Indices of the elements matching a predicate: [`super::FilterArgs`] -> `len:u64`.
    pub const VEC_FILTER: u16 = 2;
    /// `out[i] = src[idx[i]]`: [`super::GatherArgs`] -> `len:u64`.
    pub const VEC_GATHER: u16 = 3;
    /// Distinct values, ascending: [`super::UniqueArgs`] -> [`super::UniqueResult`].
    pub const VEC_UNIQUE: u16 = 4;
    /// Group-by aggregate: [`super::GroupByArgs`] -> [`super::GroupByResult`].
    pub const VEC_GROUP_BY: u16 = 5;
    /// Stable ascending argsort: [`super::ArgsortArgs`] -> `len:u64`.
    pub const VEC_ARGSORT: u16 = 6;
    /// Number of elements matching a predicate: [`super::CountArgs`] -> `count:u64`.
    pub const VEC_COUNT: u16 = 7;
    /// A new vector computed row by row from input vectors by a built-in expression:
    /// [`super::DeriveArgs`] -> `len:u64`.
    pub const VEC_DERIVE: u16 = 8;
    /// Group-by aggregate over the rows where a mask vector matches a predicate:
    /// [`super::GroupWhereArgs`] -> [`super::GroupByResult`].
    pub const VEC_GROUP_BY_WHERE: u16 = 9;
    /// Group-by aggregate plus the lower median of each group:
    /// [`super::GroupByArgs`] -> [`super::GroupMedianResult`].
    pub const VEC_GROUP_MEDIAN: u16 = 10;

    /// Batched get: [`super::HtKeysArgs`] -> [`super::HtValues`].
    pub const HT_GET: u16 = 32;
    /// Batched insert-or-replace: [`super::HtPutArgs`] -> [`super::HtValues`] (old values, or
    /// presence flags only when `return_old == 0`).
    pub const HT_PUT: u16 = 33;
    /// Batched remove, returning the removed values: [`super::HtKeysArgs`] ->
    /// [`super::HtValues`].
    pub const HT_REMOVE: u16 = 34;
    /// Number of entries: `table:u64` -> `len:u64`.
    pub const HT_LEN: u16 = 35;
    /// One page of entries in key-byte order: [`super::HtScanArgs`] -> [`super::HtScanResult`].
    pub const HT_SCAN: u16 = 36;
    /// Drops a whole table and releases its space: `table:u64` -> `entries:u64`.
    pub const HT_DROP: u16 = 37;
}

/// Why an agent message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentDecodeError {
    /// The message ended early.
    #[error("agent message truncated: needed {needed} more bytes at offset {at}")]
    Truncated {
        /// Offset of the field.
        at: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes left over after a complete message.
    #[error("{0} trailing bytes after agent message")]
    Trailing(usize),
    /// An unknown tag (element type, comparison, aggregate kind, ...).
    #[error("bad {what} tag {tag}")]
    BadTag {
        /// Which field.
        what: &'static str,
        /// The value found.
        tag: u8,
    },
}

/// Little-endian reader over an agent message.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Takes `n` raw bytes.
    ///
    /// # Errors
    /// [`AgentDecodeError::Truncated`] if fewer remain.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], AgentDecodeError> {
        let rest = self.buf.len() - self.pos;
        if n > rest {
            return Err(AgentDecodeError::Truncated {
                at: self.pos,
                needed: n - rest,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AgentDecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    /// Reads a `u8`.
    ///
    /// # Errors
    /// [`AgentDecodeError::Truncated`].
    pub fn u8(&mut self) -> Result<u8, AgentDecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a `u32`.
    ///
    /// # Errors
    /// [`AgentDecodeError::Truncated`].
    pub fn u32(&mut self) -> Result<u32, AgentDecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a `u64`.
    ///
    /// # Errors
    /// [`AgentDecodeError::Truncated`].
    pub fn u64(&mut self) -> Result<u64, AgentDecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads 16 bytes (an `i128`/`u128`).
    ///
    /// # Errors
    /// [`AgentDecodeError::Truncated`].
    pub fn u128(&mut self) -> Result<u128, AgentDecodeError> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    /// Reads a byte string (`u32` length + bytes).
    ///
    /// # Errors
    /// [`AgentDecodeError::Truncated`].
    pub fn byte_string(&mut self) -> Result<&'a [u8], AgentDecodeError> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }

    /// Reads a list count and checks that at least `count * min_item` bytes follow, so a forged
    /// count cannot make the decoder allocate much.
    ///
    /// # Errors
    /// [`AgentDecodeError::Truncated`].
    pub fn count(&mut self, min_item: usize) -> Result<usize, AgentDecodeError> {
        let n = self.u32()? as usize;
        let rest = self.buf.len() - self.pos;
        let need = n.saturating_mul(min_item);
        if need > rest {
            return Err(AgentDecodeError::Truncated {
                at: self.pos,
                needed: need - rest,
            });
        }
        Ok(n)
    }

    /// Checks that the whole message was consumed.
    ///
    /// # Errors
    /// [`AgentDecodeError::Trailing`].
    pub fn finish(self) -> Result<(), AgentDecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(AgentDecodeError::Trailing(n)),
        }
    }
}

/// Little-endian writer of agent messages.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends 16 bytes.
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a list count.
    ///
    /// # Panics
    /// If `n` exceeds `u32::MAX` (callers bound their lists far below that).
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).expect("agent list longer than u32::MAX"))
    }
    /// Appends a byte string.
    ///
    /// # Panics
    /// If `b` is longer than `u32::MAX` bytes.
    pub fn byte_string(&mut self, b: &[u8]) -> &mut Self {
        self.count(b.len());
        self.buf.extend_from_slice(b);
        self
    }
}

/// A message of the agent protocol.
pub trait AgentMessage: Sized {
    /// Appends the encoding to `w`.
    fn write(&self, w: &mut Writer);
    /// Reads one message from `r`.
    ///
    /// # Errors
    /// [`AgentDecodeError`] when the bytes are malformed.
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError>;

    /// The encoding as a fresh buffer.
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.buf
    }

    /// Decodes a complete message (no trailing bytes).
    ///
    /// # Errors
    /// [`AgentDecodeError`] when the bytes are malformed.
    fn decode(buf: &[u8]) -> Result<Self, AgentDecodeError> {
        let mut r = Reader::new(buf);
        let v = Self::read(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

impl AgentMessage for u64 {
    fn write(&self, w: &mut Writer) {
        w.u64(*self);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        r.u64()
    }
}

/// Element type of a far vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum ElemType {
    U8 = 0,
    U16 = 1,
    U32 = 2,
    U64 = 3,
    I8 = 4,
    I16 = 5,
    I32 = 6,
    I64 = 7,
    F32 = 8,
    F64 = 9,
}

/// The widened domain of an element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// Unsigned integers, widened to `u64`.
    Unsigned,
    /// Signed integers, widened to `i64`.
    Signed,
    /// Floats, widened to `f64`.
    Float,
}

impl ElemType {
    /// Every element type.
    pub const ALL: [ElemType; 10] = [
        Self::U8,
        Self::U16,
        Self::U32,
        Self::U64,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::F32,
        Self::F64,
    ];

    /// The type with tag `tag`.
    ///
    /// # Errors
    /// [`AgentDecodeError::BadTag`] for an unknown tag.
    pub fn from_tag(tag: u8) -> Result<Self, AgentDecodeError> {
        Self::ALL
            .get(tag as usize)
            .copied()
            .ok_or(AgentDecodeError::BadTag {
                what: "element type",
                tag,
            })
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    /// The domain elements widen to.
    pub fn domain(self) -> Domain {
        match self {
            Self::U8 | Self::U16 | Self::U32 | Self::U64 => Domain::Unsigned,
            Self::I8 | Self::I16 | Self::I32 | Self::I64 => Domain::Signed,
            Self::F32 | Self::F64 => Domain::Float,
        }
    }
}

/// A widened value: 8 bytes on the wire, its domain implied by the element type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// An unsigned value.
    U(u64),
    /// A signed value.
    I(i64),
    /// A float value.
    F(f64),
}

impl Scalar {
    /// The 8 wire bytes' integer form.
    pub fn bits(self) -> u64 {
        match self {
            Self::U(v) => v,
            Self::I(v) => v as u64,
            Self::F(v) => v.to_bits(),
        }
    }

    /// Interprets 8 wire bytes in `domain`.
    pub fn from_bits(domain: Domain, bits: u64) -> Self {
        match domain {
            Domain::Unsigned => Self::U(bits),
            Domain::Signed => Self::I(bits as i64),
            Domain::Float => Self::F(f64::from_bits(bits)),
        }
    }

    /// The domain of this value.
    pub fn domain(self) -> Domain {
        match self {
            Self::U(_) => Domain::Unsigned,
            Self::I(_) => Domain::Signed,
            Self::F(_) => Domain::Float,
        }
    }

    /// The value as `f64` (rounded for large integers).
    pub fn as_f64(self) -> f64 {
        match self {
            Self::U(v) => v as f64,
            Self::I(v) => v as f64,
            Self::F(v) => v,
        }
    }

    /// Total order within one domain (`f64::total_cmp` for floats); across domains, by domain.
    pub fn total_cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::U(a), Self::U(b)) => a.cmp(b),
            (Self::I(a), Self::I(b)) => a.cmp(b),
            (Self::F(a), Self::F(b)) => a.total_cmp(b),
            _ => (self.domain() as u8).cmp(&(other.domain() as u8)),
        }
    }
}

/// An exact sum: `i128`/`u128` for integers, `f64` for floats. 16 bytes on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sum {
    /// Sum of unsigned elements.
    U(u128),
    /// Sum of signed elements.
    I(i128),
    /// Sum of float elements (see the module docs for the order).
    F(f64),
}

impl Sum {
    /// The sum as `f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            Self::U(v) => v as f64,
            Self::I(v) => v as f64,
            Self::F(v) => v,
        }
    }

    fn bits(self) -> u128 {
        match self {
            Self::U(v) => v,
            Self::I(v) => v as u128,
            Self::F(v) => u128::from(v.to_bits()),
        }
    }

    fn from_bits(domain: Domain, bits: u128) -> Self {
        match domain {
            Domain::Unsigned => Self::U(bits),
            Domain::Signed => Self::I(bits as i128),
            Domain::Float => Self::F(f64::from_bits(bits as u64)),
        }
    }
}

/// A far vector on the server: element type and chunk objects, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecRef {
    /// Element type.
    pub ty: ElemType,
    /// `(object id, element count)` of each chunk, in vector order.
    pub chunks: Vec<(u64, u32)>,
}

impl VecRef {
    /// Total number of elements.
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    /// Whether the vector has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AgentMessage for VecRef {
    fn write(&self, w: &mut Writer) {
        w.u8(self.ty as u8).count(self.chunks.len());
        for &(id, n) in &self.chunks {
            w.u64(id).u32(n);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let ty = ElemType::from_tag(r.u8()?)?;
        let n = r.count(12)?;
        let chunks = (0..n)
            .map(|_| Ok((r.u64()?, r.u32()?)))
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { ty, chunks })
    }
}

/// Where a large result goes: new chunk objects named by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutSpec {
    /// Elements per output chunk (> 0).
    pub chunk_elems: u32,
    /// Object ids for the output chunks, in order; need `ceil(len / chunk_elems)` of them.
    pub ids: Vec<u64>,
}

impl AgentMessage for OutSpec {
    fn write(&self, w: &mut Writer) {
        w.u32(self.chunk_elems).count(self.ids.len());
        for &id in &self.ids {
            w.u64(id);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let chunk_elems = r.u32()?;
        let n = r.count(8)?;
        let ids = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
        Ok(Self { chunk_elems, ids })
    }
}

/// Comparison of a filter predicate. Tags in declaration order, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cmp {
    /// `x == a`
    Eq = 0,
    /// `x != a`
    Ne = 1,
    /// `x < a`
    Lt = 2,
    /// `x <= a`
    Le = 3,
    /// `x > a`
    Gt = 4,
    /// `x >= a`
    Ge = 5,
    /// `a <= x <= b`
    Between = 6,
}

impl Cmp {
    /// Every comparison.
    pub const ALL: [Cmp; 7] = [
        Self::Eq,
        Self::Ne,
        Self::Lt,
        Self::Le,
        Self::Gt,
        Self::Ge,
        Self::Between,
    ];
}

/// A predicate on widened elements: `x <cmp> a` (or `a <= x <= b`).
///
/// Comparisons use the IEEE operators for floats, so NaN matches only `Ne`.
/// The operands must be in the vector's domain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Predicate {
    /// The comparison.
    pub cmp: Cmp,
    /// First operand.
    pub a: Scalar,
    /// Second operand (only used by [`Cmp::Between`]; otherwise equal to `a`).
    pub b: Scalar,
}

impl Predicate {
    /// `x <cmp> a`.
    pub fn new(cmp: Cmp, a: Scalar) -> Self {
        Self { cmp, a, b: a }
    }

    /// `lo <= x <= hi`.
    pub fn between(lo: Scalar, hi: Scalar) -> Self {
        Self {
            cmp: Cmp::Between,
            a: lo,
            b: hi,
        }
    }
}

/// Arguments of [`op::VEC_FILTER`]:
/// `VecRef cmp:u8 a:Scalar b:Scalar OutSpec` (the operands in the vector's domain).
/// The output is a `u64` vector of the ascending indices of matching elements.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterArgs {
    /// The vector.
    pub vec: VecRef,
    /// The predicate.
    pub pred: Predicate,
    /// Where the index vector goes.
    pub out: OutSpec,
}

impl AgentMessage for FilterArgs {
    fn write(&self, w: &mut Writer) {
        self.vec.write(w);
        write_pred(w, &self.pred);
        self.out.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let vec = VecRef::read(r)?;
        let pred = read_pred(r, vec.ty.domain())?;
        let out = OutSpec::read(r)?;
        Ok(Self { vec, pred, out })
    }
}

fn write_pred(w: &mut Writer, p: &Predicate) {
    w.u8(p.cmp as u8).u64(p.a.bits()).u64(p.b.bits());
}

fn read_pred(r: &mut Reader<'_>, d: Domain) -> Result<Predicate, AgentDecodeError> {
    let tag = r.u8()?;
    let cmp = *Cmp::ALL.get(tag as usize).ok_or(AgentDecodeError::BadTag {
        what: "comparison",
        tag,
    })?;
    let a = Scalar::from_bits(d, r.u64()?);
    let b = Scalar::from_bits(d, r.u64()?);
    Ok(Predicate { cmp, a, b })
}

/// Arguments of [`op::VEC_COUNT`]: `VecRef cmp:u8 a:Scalar b:Scalar` (as [`FilterArgs`] without
/// an output). The answer is the number of matching elements.
#[derive(Clone, Debug, PartialEq)]
pub struct CountArgs {
    /// The vector.
    pub vec: VecRef,
    /// The predicate.
    pub pred: Predicate,
}

impl AgentMessage for CountArgs {
    fn write(&self, w: &mut Writer) {
        self.vec.write(w);
        write_pred(w, &self.pred);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let vec = VecRef::read(r)?;
        let pred = read_pred(r, vec.ty.domain())?;
        Ok(Self { vec, pred })
    }
}

/// A built-in row expression of [`op::VEC_DERIVE`]. Tags in declaration order, from 0.
///
/// Inputs are widened to their domain; the output element type is fixed per expression
/// ([`Expr::out_type`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Expr {
    /// `in1 - in0` (wrapping) of two signed inputs, as `i64` (e.g. a duration from two
    /// timestamps).
    Diff = 0,
    /// Great-circle distance in km between `(in0, in1)` and `(in2, in3)`, four float inputs in
    /// degrees `(lon1, lat1, lon2, lat2)`, as `f64` (Earth radius 6371 km).
    Haversine = 1,
    /// Hour of day 0..=23 of a signed input in seconds since the Unix epoch (UTC), as `u8`.
    Hour = 2,
    /// Day of week 1 = Monday ..= 7 = Sunday of a timestamp in seconds, as `u8`.
    Weekday = 3,
    /// Month 1..=12 of a timestamp in seconds (proleptic Gregorian), as `u8`.
    Month = 4,
}

impl Expr {
    /// Every expression.
    pub const ALL: [Expr; 5] = [
        Self::Diff,
        Self::Haversine,
        Self::Hour,
        Self::Weekday,
        Self::Month,
    ];

    /// Number of input vectors.
    pub fn arity(self) -> usize {
        match self {
            Self::Diff => 2,
            Self::Haversine => 4,
            Self::Hour | Self::Weekday | Self::Month => 1,
        }
    }

    /// The domain every input must have.
    pub fn input_domain(self) -> Domain {
        match self {
            Self::Haversine => Domain::Float,
            _ => Domain::Signed,
        }
    }

    /// Element type of the output.
    pub fn out_type(self) -> ElemType {
        match self {
            Self::Diff => ElemType::I64,
            Self::Haversine => ElemType::F64,
            Self::Hour | Self::Weekday | Self::Month => ElemType::U8,
        }
    }
}

/// Arguments of [`op::VEC_DERIVE`]: `expr:u8 inputs:list<VecRef> OutSpec`. All inputs must have
/// the same length (their chunking may differ); the output has that length and element type
/// [`Expr::out_type`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeriveArgs {
    /// The expression.
    pub expr: Expr,
    /// Its inputs, in argument order.
    pub inputs: Vec<VecRef>,
    /// Where the result goes.
    pub out: OutSpec,
}

impl AgentMessage for DeriveArgs {
    fn write(&self, w: &mut Writer) {
        w.u8(self.expr as u8).count(self.inputs.len());
        for v in &self.inputs {
            v.write(w);
        }
        self.out.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let tag = r.u8()?;
        let expr = *Expr::ALL
            .get(tag as usize)
            .ok_or(AgentDecodeError::BadTag {
                what: "expression",
                tag,
            })?;
        let n = r.count(5)?;
        let inputs = (0..n).map(|_| VecRef::read(r)).collect::<Result<_, _>>()?;
        let out = OutSpec::read(r)?;
        Ok(Self { expr, inputs, out })
    }
}

/// Arguments of [`op::VEC_GROUP_BY_WHERE`]: `GroupByArgs mask:VecRef cmp:u8 a:Scalar b:Scalar`
/// (operands in the mask's domain). Like [`op::VEC_GROUP_BY`] over only the rows `i` with
/// `mask[i] <cmp> a`; the mask has the keys' length.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupWhereArgs {
    /// Keys, values and group limit.
    pub group: GroupByArgs,
    /// The mask vector.
    pub mask: VecRef,
    /// The predicate a row's mask element must satisfy.
    pub pred: Predicate,
}

impl AgentMessage for GroupWhereArgs {
    fn write(&self, w: &mut Writer) {
        self.group.write(w);
        self.mask.write(w);
        write_pred(w, &self.pred);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let group = GroupByArgs::read(r)?;
        let mask = VecRef::read(r)?;
        let pred = read_pred(r, mask.ty.domain())?;
        Ok(Self { group, mask, pred })
    }
}

/// Result of [`op::VEC_GROUP_MEDIAN`]:
/// `key_type:u8 groups:list<key:Scalar Aggregates has_median:u8 median:Scalar>`, ascending by
/// key. The median of a group is its lower median (element `(n - 1) / 2` of its non-NaN values
/// sorted in the total order); absent when a group has only NaNs.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMedianResult {
    /// Element type of the key column.
    pub key_ty: ElemType,
    /// `(key, aggregates, lower median)`, ascending by key.
    pub groups: Vec<(Scalar, Aggregates, Option<Scalar>)>,
}

impl AgentMessage for GroupMedianResult {
    fn write(&self, w: &mut Writer) {
        w.u8(self.key_ty as u8).count(self.groups.len());
        for (k, a, m) in &self.groups {
            w.u64(k.bits());
            a.write(w);
            match m {
                Some(m) => w.u8(1).u64(m.bits()),
                None => w.u8(0).u64(0),
            };
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let key_ty = ElemType::from_tag(r.u8()?)?;
        let n = r.count(8 + 42 + 9)?;
        let groups = (0..n)
            .map(|_| {
                let k = Scalar::from_bits(key_ty.domain(), r.u64()?);
                let a = Aggregates::read(r)?;
                let m = match (r.u8()?, r.u64()?) {
                    (0, _) => None,
                    (1, bits) => Some(Scalar::from_bits(a.ty.domain(), bits)),
                    (tag, _) => {
                        return Err(AgentDecodeError::BadTag {
                            what: "has_median",
                            tag,
                        });
                    }
                };
                Ok((k, a, m))
            })
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { key_ty, groups })
    }
}

/// Arguments of [`op::VEC_GATHER`]: `src:VecRef idx:VecRef OutSpec`; `idx` must be `u64`.
/// The output has `src`'s element type and `idx.len()` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatherArgs {
    /// Source vector.
    pub src: VecRef,
    /// Indices into `src` (element type `u64`).
    pub idx: VecRef,
    /// Where the gathered vector goes.
    pub out: OutSpec,
}

impl AgentMessage for GatherArgs {
    fn write(&self, w: &mut Writer) {
        self.src.write(w);
        self.idx.write(w);
        self.out.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        Ok(Self {
            src: VecRef::read(r)?,
            idx: VecRef::read(r)?,
            out: OutSpec::read(r)?,
        })
    }
}

/// Arguments of [`op::VEC_ARGSORT`]: `VecRef OutSpec`. The output is a `u64` vector: the
/// permutation that sorts the vector stably ascending in the total order of its domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgsortArgs {
    /// The vector.
    pub vec: VecRef,
    /// Where the permutation goes.
    pub out: OutSpec,
}

impl AgentMessage for ArgsortArgs {
    fn write(&self, w: &mut Writer) {
        self.vec.write(w);
        self.out.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        Ok(Self {
            vec: VecRef::read(r)?,
            out: OutSpec::read(r)?,
        })
    }
}

/// Arguments of [`op::VEC_UNIQUE`]: `VecRef limit:u32`. Fails when there are more than `limit`
/// distinct values (so the answer stays small).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueArgs {
    /// The vector.
    pub vec: VecRef,
    /// Maximum number of distinct values accepted.
    pub limit: u32,
}

impl AgentMessage for UniqueArgs {
    fn write(&self, w: &mut Writer) {
        self.vec.write(w);
        w.u32(self.limit);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        Ok(Self {
            vec: VecRef::read(r)?,
            limit: r.u32()?,
        })
    }
}

/// Result of [`op::VEC_UNIQUE`]: `elem_type:u8 values:list<Scalar>`, ascending.
#[derive(Clone, Debug, PartialEq)]
pub struct UniqueResult {
    /// Element type of the vector.
    pub ty: ElemType,
    /// Distinct values, ascending in the total order.
    pub values: Vec<Scalar>,
}

impl AgentMessage for UniqueResult {
    fn write(&self, w: &mut Writer) {
        w.u8(self.ty as u8).count(self.values.len());
        for v in &self.values {
            w.u64(v.bits());
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let ty = ElemType::from_tag(r.u8()?)?;
        let n = r.count(8)?;
        let values = (0..n)
            .map(|_| Ok(Scalar::from_bits(ty.domain(), r.u64()?)))
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { ty, values })
    }
}

/// Aggregates of a vector (or of one group):
/// `elem_type:u8 count:u64 sum:16 has_minmax:u8 min:Scalar max:Scalar`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aggregates {
    /// Element type the aggregates were computed over.
    pub ty: ElemType,
    /// Number of elements.
    pub count: u64,
    /// Exact sum (see the module docs).
    pub sum: Sum,
    /// Smallest non-NaN element.
    pub min: Option<Scalar>,
    /// Largest non-NaN element.
    pub max: Option<Scalar>,
}

impl Aggregates {
    /// `sum / count` as `f64`; `None` for no elements.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum.as_f64() / self.count as f64)
    }
}

impl AgentMessage for Aggregates {
    fn write(&self, w: &mut Writer) {
        w.u8(self.ty as u8).u64(self.count).u128(self.sum.bits());
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => w.u8(1).u64(lo.bits()).u64(hi.bits()),
            _ => w.u8(0).u64(0).u64(0),
        };
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let ty = ElemType::from_tag(r.u8()?)?;
        let d = ty.domain();
        let count = r.u64()?;
        let sum = Sum::from_bits(d, r.u128()?);
        let has = r.u8()?;
        let (lo, hi) = (r.u64()?, r.u64()?);
        let (min, max) = match has {
            0 => (None, None),
            1 => (
                Some(Scalar::from_bits(d, lo)),
                Some(Scalar::from_bits(d, hi)),
            ),
            tag => {
                return Err(AgentDecodeError::BadTag {
                    what: "has_minmax",
                    tag,
                });
            }
        };
        Ok(Self {
            ty,
            count,
            sum,
            min,
            max,
        })
    }
}

/// Arguments of [`op::VEC_GROUP_BY`]: `keys:VecRef values:VecRef limit:u32`. Both vectors must
/// have the same length (their chunking may differ). Fails with more than `limit` groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupByArgs {
    /// Key column.
    pub keys: VecRef,
    /// Value column.
    pub values: VecRef,
    /// Maximum number of groups accepted.
    pub limit: u32,
}

impl AgentMessage for GroupByArgs {
    fn write(&self, w: &mut Writer) {
        self.keys.write(w);
        self.values.write(w);
        w.u32(self.limit);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        Ok(Self {
            keys: VecRef::read(r)?,
            values: VecRef::read(r)?,
            limit: r.u32()?,
        })
    }
}

/// Result of [`op::VEC_GROUP_BY`]: `key_type:u8 groups:list<key:Scalar Aggregates>`, groups in
/// ascending key order; each group's aggregates are over its values in vector order.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupByResult {
    /// Element type of the key column.
    pub key_ty: ElemType,
    /// `(key, aggregates of the values with that key)`, ascending by key.
    pub groups: Vec<(Scalar, Aggregates)>,
}

impl AgentMessage for GroupByResult {
    fn write(&self, w: &mut Writer) {
        w.u8(self.key_ty as u8).count(self.groups.len());
        for (k, a) in &self.groups {
            w.u64(k.bits());
            a.write(w);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let key_ty = ElemType::from_tag(r.u8()?)?;
        let n = r.count(8 + 42)?;
        let groups = (0..n)
            .map(|_| {
                let k = Scalar::from_bits(key_ty.domain(), r.u64()?);
                Ok((k, Aggregates::read(r)?))
            })
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { key_ty, groups })
    }
}

/// Arguments of [`op::HT_GET`] and [`op::HT_REMOVE`]: `table:u64 keys:list<bytes>`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HtKeysArgs {
    /// Table id.
    pub table: u64,
    /// The keys.
    pub keys: Vec<Vec<u8>>,
}

impl AgentMessage for HtKeysArgs {
    fn write(&self, w: &mut Writer) {
        w.u64(self.table).count(self.keys.len());
        for k in &self.keys {
            w.byte_string(k);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let table = r.u64()?;
        let n = r.count(4)?;
        let keys = (0..n)
            .map(|_| Ok(r.byte_string()?.to_vec()))
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { table, keys })
    }
}

/// Arguments of [`op::HT_PUT`]: `table:u64 return_old:u8 entries:list<key:bytes value:bytes>`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HtPutArgs {
    /// Table id (created if absent).
    pub table: u64,
    /// Whether the answer carries the replaced values (otherwise only presence flags).
    pub return_old: bool,
    /// `(key, value)` pairs, applied in order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl AgentMessage for HtPutArgs {
    fn write(&self, w: &mut Writer) {
        w.u64(self.table)
            .u8(u8::from(self.return_old))
            .count(self.entries.len());
        for (k, v) in &self.entries {
            w.byte_string(k).byte_string(v);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let table = r.u64()?;
        let return_old = match r.u8()? {
            0 => false,
            1 => true,
            tag => {
                return Err(AgentDecodeError::BadTag {
                    what: "return_old",
                    tag,
                });
            }
        };
        let n = r.count(8)?;
        let entries = (0..n)
            .map(|_| Ok((r.byte_string()?.to_vec(), r.byte_string()?.to_vec())))
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self {
            table,
            return_old,
            entries,
        })
    }
}

/// Per-key answer of the batched hash-table operations: `list<found:u8 [value:bytes]>`.
/// The value is present when `found == 1`, except for [`op::HT_PUT`] without `return_old`,
/// which sends `found = 2` (it existed, value omitted) instead.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HtValues {
    /// One entry per key, in request order.
    pub values: Vec<HtValue>,
}

/// One key's answer in [`HtValues`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HtValue {
    /// The key was absent.
    Absent,
    /// The key was present with this value.
    Value(Vec<u8>),
    /// The key was present (value not sent).
    Present,
}

impl AgentMessage for HtValues {
    fn write(&self, w: &mut Writer) {
        w.count(self.values.len());
        for v in &self.values {
            match v {
                HtValue::Absent => w.u8(0),
                HtValue::Value(b) => w.u8(1).byte_string(b),
                HtValue::Present => w.u8(2),
            };
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let n = r.count(1)?;
        let values = (0..n)
            .map(|_| match r.u8()? {
                0 => Ok(HtValue::Absent),
                1 => Ok(HtValue::Value(r.byte_string()?.to_vec())),
                2 => Ok(HtValue::Present),
                tag => Err(AgentDecodeError::BadTag { what: "found", tag }),
            })
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { values })
    }
}

/// Arguments of [`op::HT_SCAN`]: `table:u64 max:u32 has_after:u8 [after:bytes]`.
/// Returns up to `max` entries whose keys are greater (bytewise) than `after`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HtScanArgs {
    /// Table id.
    pub table: u64,
    /// Page size.
    pub max: u32,
    /// Resume after this key (the last key of the previous page).
    pub after: Option<Vec<u8>>,
}

impl AgentMessage for HtScanArgs {
    fn write(&self, w: &mut Writer) {
        w.u64(self.table).u32(self.max);
        match &self.after {
            None => w.u8(0),
            Some(k) => w.u8(1).byte_string(k),
        };
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let table = r.u64()?;
        let max = r.u32()?;
        let after = match r.u8()? {
            0 => None,
            1 => Some(r.byte_string()?.to_vec()),
            tag => {
                return Err(AgentDecodeError::BadTag {
                    what: "has_after",
                    tag,
                });
            }
        };
        Ok(Self { table, max, after })
    }
}

/// Result of [`op::HT_SCAN`]: `more:u8 entries:list<key:bytes value:bytes>`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HtScanResult {
    /// Whether entries remain after this page.
    pub more: bool,
    /// The page, ascending by key bytes.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl AgentMessage for HtScanResult {
    fn write(&self, w: &mut Writer) {
        w.u8(u8::from(self.more)).count(self.entries.len());
        for (k, v) in &self.entries {
            w.byte_string(k).byte_string(v);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let more = match r.u8()? {
            0 => false,
            1 => true,
            tag => return Err(AgentDecodeError::BadTag { what: "more", tag }),
        };
        let n = r.count(8)?;
        let entries = (0..n)
            .map(|_| Ok((r.byte_string()?.to_vec(), r.byte_string()?.to_vec())))
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { more, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip<M: AgentMessage + PartialEq + std::fmt::Debug>(m: &M) {
        let bytes = m.encode();
        assert_eq!(&M::decode(&bytes).unwrap(), m);
        // Every strict prefix is rejected, never a panic.
        for cut in 0..bytes.len() {
            assert!(M::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(M::decode(&longer), Err(AgentDecodeError::Trailing(1)));
    }

    fn vecref(ty: ElemType) -> VecRef {
        VecRef {
            ty,
            chunks: vec![(7, 100), (9, 3)],
        }
    }

    #[test]
    fn messages_roundtrip() {
        roundtrip(&vecref(ElemType::I16));
        roundtrip(&FilterArgs {
            vec: vecref(ElemType::F64),
            pred: Predicate::between(Scalar::F(-1.5), Scalar::F(2.0)),
            out: OutSpec {
                chunk_elems: 16,
                ids: vec![1, 2, 3],
            },
        });
        roundtrip(&GatherArgs {
            src: vecref(ElemType::U8),
            idx: vecref(ElemType::U64),
            out: OutSpec {
                chunk_elems: 4,
                ids: vec![],
            },
        });
        roundtrip(&ArgsortArgs {
            vec: vecref(ElemType::I64),
            out: OutSpec {
                chunk_elems: 4,
                ids: vec![5],
            },
        });
        roundtrip(&UniqueArgs {
            vec: vecref(ElemType::U32),
            limit: 10,
        });
        roundtrip(&UniqueResult {
            ty: ElemType::I8,
            values: vec![Scalar::I(-3), Scalar::I(4)],
        });
        let agg = Aggregates {
            ty: ElemType::I32,
            count: 3,
            sum: Sum::I(-(1 << 100)),
            min: Some(Scalar::I(-5)),
            max: Some(Scalar::I(9)),
        };
        roundtrip(&agg);
        roundtrip(&Aggregates {
            ty: ElemType::F32,
            count: 0,
            sum: Sum::F(0.0),
            min: None,
            max: None,
        });
        roundtrip(&GroupByArgs {
            keys: vecref(ElemType::U16),
            values: vecref(ElemType::F64),
            limit: 3,
        });
        roundtrip(&GroupByResult {
            key_ty: ElemType::I32,
            groups: vec![(Scalar::I(-1), agg), (Scalar::I(3), agg)],
        });
        roundtrip(&CountArgs {
            vec: vecref(ElemType::I32),
            pred: Predicate::new(Cmp::Ge, Scalar::I(-4)),
        });
        for expr in Expr::ALL {
            roundtrip(&DeriveArgs {
                expr,
                inputs: vec![vecref(ElemType::I64), vecref(ElemType::F64)],
                out: OutSpec {
                    chunk_elems: 8,
                    ids: vec![3, 4],
                },
            });
        }
        roundtrip(&GroupWhereArgs {
            group: GroupByArgs {
                keys: vecref(ElemType::U8),
                values: vecref(ElemType::I64),
                limit: 9,
            },
            mask: vecref(ElemType::U32),
            pred: Predicate::between(Scalar::U(1), Scalar::U(3)),
        });
        roundtrip(&GroupMedianResult {
            key_ty: ElemType::U8,
            groups: vec![
                (Scalar::U(1), agg, Some(Scalar::I(4))),
                (Scalar::U(2), agg, None),
            ],
        });
        roundtrip(&HtKeysArgs {
            table: 4,
            keys: vec![b"a".to_vec(), vec![]],
        });
        roundtrip(&HtPutArgs {
            table: 4,
            return_old: true,
            entries: vec![(b"k".to_vec(), b"v".to_vec())],
        });
        roundtrip(&HtValues {
            values: vec![
                HtValue::Absent,
                HtValue::Value(b"x".to_vec()),
                HtValue::Present,
            ],
        });
        roundtrip(&HtScanArgs {
            table: 1,
            max: 5,
            after: Some(b"zz".to_vec()),
        });
        roundtrip(&HtScanResult {
            more: true,
            entries: vec![(b"k".to_vec(), vec![1, 2])],
        });
    }

    #[test]
    fn bad_tags_are_rejected() {
        let mut b = vecref(ElemType::U8).encode();
        b[0] = 10;
        assert_eq!(
            VecRef::decode(&b),
            Err(AgentDecodeError::BadTag {
                what: "element type",
                tag: 10
            })
        );
    }

    #[test]
    fn forged_counts_do_not_allocate() {
        // A list claiming 4 G chunks in a 9-byte message.
        let mut w = Writer::default();
        w.u8(3).u32(u32::MAX).u32(0);
        assert!(matches!(
            VecRef::decode(&w.buf),
            Err(AgentDecodeError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = FilterArgs::decode(&bytes);
            let _ = GroupByResult::decode(&bytes);
            let _ = HtPutArgs::decode(&bytes);
            let _ = HtValues::decode(&bytes);
            let _ = HtScanArgs::decode(&bytes);
            let _ = Aggregates::decode(&bytes);
            let _ = CountArgs::decode(&bytes);
            let _ = DeriveArgs::decode(&bytes);
            let _ = GroupWhereArgs::decode(&bytes);
            let _ = GroupMedianResult::decode(&bytes);
        }
    }
}

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

mod aggregate;
mod derive;
mod hashtable;
mod predicate;
mod push;
mod spread;
#[cfg(test)]
mod tests;
mod values;
mod vector;

pub use self::aggregate::*;
pub use self::derive::*;
pub use self::hashtable::*;
pub use self::predicate::*;
pub use self::push::*;
pub use self::spread::*;
pub use self::values::*;
pub use self::vector::*;
pub use crate::codec::{Reader, Writer};

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
    /// A new vector computed row by row from input vectors by an expression
    /// ([`crate::expr::Expr`]): [`super::DeriveArgs`] -> `len:u64`.
    pub const VEC_DERIVE: u16 = 8;
    /// Group-by aggregate over the rows where a mask vector matches a predicate:
    /// [`super::GroupWhereArgs`] -> [`super::GroupByResult`].
    pub const VEC_GROUP_BY_WHERE: u16 = 9;
    /// Group-by aggregate plus the two middle values (the median) of each group:
    /// [`super::GroupByArgs`] -> [`super::GroupMedianResult`].
    pub const VEC_GROUP_MEDIAN: u16 = 10;
    /// Another vector operation over chunks of which some are read from a byte offset on:
    /// [`super::SlicedArgs`] -> that operation's result.
    pub const VEC_SLICED: u16 = 11;
    /// Indices (global row numbers) of the elements matching a predicate, in the answer:
    /// [`super::FilterRowsArgs`] -> [`super::U64List`].
    pub const VEC_FILTER_ROWS: u16 = 12;
    /// Per-group counts below, above and within order-key ranges (the rounds of an exact median
    /// over several servers): [`super::GroupRankArgs`] -> [`super::GroupRankResult`].
    pub const VEC_GROUP_RANK: u16 = 13;
    /// Segmented sums of gathered values (a pull-style sparse matrix-vector product with unit
    /// weights, as PageRank does): [`super::GatherSumArgs`] -> `len:u64`.
    pub const VEC_GATHER_SUM: u16 = 14;

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
    /// Copies objects of the asking session into its session on another server (see
    /// [`super::PushArgs`]): [`super::PushArgs`] -> [`super::PushResult`].
    pub const OBJ_PUSH: u16 = 48;
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
    /// The derive expression is malformed, beyond the limits, or ill-typed for its inputs.
    #[error("bad derive expression")]
    Expr(#[source] crate::expr::ExprError),
}

impl From<crate::expr::ExprError> for AgentDecodeError {
    fn from(e: crate::expr::ExprError) -> Self {
        match e {
            crate::expr::ExprError::Codec(c) => c.into(),
            e => Self::Expr(e),
        }
    }
}

impl From<crate::codec::CodecError> for AgentDecodeError {
    fn from(e: crate::codec::CodecError) -> Self {
        match e {
            crate::codec::CodecError::Truncated { at, needed } => Self::Truncated { at, needed },
            crate::codec::CodecError::Trailing(n) => Self::Trailing(n),
        }
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
        Ok(r.u64()?)
    }
}

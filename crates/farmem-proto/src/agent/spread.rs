//! Messages of vector operations spread over several servers: sliced chunks, filters with
//! global row numbers, and the rank rounds of exact group medians.

use super::*;

/// Arguments of [`op::VEC_SLICED`]: `slices:list<vid:u64 id:u64 byte_offset:u64> op:u16
/// args:bytes`. Runs vector operation `op` on `args` where a chunk named `vid` reads object `id`
/// from `byte_offset` on (so an operation can start or end inside a chunk). Other ids read their
/// objects as usual; outputs are written under their own ids. `op` may not be `VEC_SLICED`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicedArgs {
    /// `(virtual id, object id, byte offset)`.
    pub slices: Vec<(u64, u64, u64)>,
    /// The operation run.
    pub op: u16,
    /// Its encoded arguments (naming the virtual ids as chunks).
    pub args: Vec<u8>,
}

impl AgentMessage for SlicedArgs {
    fn write(&self, w: &mut Writer) {
        w.count(self.slices.len());
        for &(v, id, off) in &self.slices {
            w.u64(v).u64(id).u64(off);
        }
        w.u16(self.op).byte_string(&self.args);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let n = r.count(24)?;
        let slices = (0..n)
            .map(|_| Ok((r.u64()?, r.u64()?, r.u64()?)))
            .collect::<Result<_, AgentDecodeError>>()?;
        let op = r.u16()?;
        let args = r.byte_string()?.to_vec();
        Ok(Self { slices, op, args })
    }
}

/// Arguments of [`op::VEC_FILTER_ROWS`]: `VecRef cmp:u8 a:Scalar b:Scalar starts:list<u64>`.
/// Like [`op::VEC_FILTER`] but the index of element `j` of chunk `c` is `starts[c] + j` (the
/// chunk's first row in the whole vector), and the indices come back in the answer:
/// `list<u64>`, ascending when `starts` is.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterRowsArgs {
    /// The chunks (a part of a vector).
    pub vec: VecRef,
    /// The predicate.
    pub pred: Predicate,
    /// The row of the first element of each chunk (as many as chunks).
    pub starts: Vec<u64>,
}

impl AgentMessage for FilterRowsArgs {
    fn write(&self, w: &mut Writer) {
        self.vec.write(w);
        write_pred(w, &self.pred);
        w.count(self.starts.len());
        for &s in &self.starts {
            w.u64(s);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let vec = VecRef::read(r)?;
        let pred = read_pred(r, vec.ty.domain())?;
        let n = r.count(8)?;
        let starts = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
        Ok(Self { vec, pred, starts })
    }
}

/// A list of `u64`: `list<u64>` (the answer of [`op::VEC_FILTER_ROWS`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct U64List(pub Vec<u64>);

impl AgentMessage for U64List {
    fn write(&self, w: &mut Writer) {
        w.count(self.0.len());
        for &x in &self.0 {
            w.u64(x);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let n = r.count(8)?;
        Ok(Self((0..n).map(|_| r.u64()).collect::<Result<_, _>>()?))
    }
}

/// The order key of a value: a `u64` ordered as the values are in their domain's total order
/// (unsigned as is, signed with the sign bit flipped, floats by `f64::total_cmp`).
pub fn order_key(s: Scalar) -> u64 {
    match s {
        Scalar::U(x) => x,
        Scalar::I(x) => (x as u64) ^ (1 << 63),
        Scalar::F(x) => {
            let b = x.to_bits();
            if b >> 63 == 1 { !b } else { b | (1 << 63) }
        }
    }
}

/// The value of domain `d` with order key `k` (inverse of [`order_key`]).
pub fn from_order_key(d: Domain, k: u64) -> Scalar {
    match d {
        Domain::Unsigned => Scalar::U(k),
        Domain::Signed => Scalar::I((k ^ (1 << 63)) as i64),
        Domain::Float => Scalar::F(f64::from_bits(if k >> 63 == 1 {
            k & !(1 << 63)
        } else {
            !k
        })),
    }
}

/// One group's question in [`GroupRankArgs`]: about the non-NaN values of the rows with key
/// `key` whose [`order_key`] lies in `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RankQuery {
    /// The group's key.
    pub key: Scalar,
    /// Lowest order key of the range.
    pub lo: u64,
    /// Highest order key of the range.
    pub hi: u64,
    /// Whether to return the values in the range rather than count them in buckets.
    pub values: bool,
    /// Counted ranges: buckets `2^shift` order keys wide from `lo` (at most 65536 of them:
    /// `(hi - lo) >> shift < 65536`).
    pub shift: u8,
}

/// Arguments of [`op::VEC_GROUP_RANK`]: `GroupByArgs queries:list<key:Scalar lo:u64 hi:u64
/// values:u8 shift:u8>`. For each query, over the non-NaN values of the rows with that key: how
/// many have an order key below `lo`, above `hi`, and either the counts of the
/// `((hi - lo) >> shift) + 1` buckets of `2^shift` order keys from `lo` or (`values = 1`) the
/// order keys in the range, ascending. The rounds of an exact median over several servers.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupRankArgs {
    /// Keys and values (`limit` unused).
    pub group: GroupByArgs,
    /// The questions, one per group asked about.
    pub queries: Vec<RankQuery>,
}

impl AgentMessage for GroupRankArgs {
    fn write(&self, w: &mut Writer) {
        self.group.write(w);
        w.count(self.queries.len());
        for q in &self.queries {
            w.u64(q.key.bits())
                .u64(q.lo)
                .u64(q.hi)
                .u8(u8::from(q.values))
                .u8(q.shift);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let group = GroupByArgs::read(r)?;
        let d = group.keys.ty.domain();
        let n = r.count(26)?;
        let queries = (0..n)
            .map(|_| {
                let key = Scalar::from_bits(d, r.u64()?);
                let (lo, hi) = (r.u64()?, r.u64()?);
                let values = match r.u8()? {
                    0 => false,
                    1 => true,
                    tag => {
                        return Err(AgentDecodeError::BadTag {
                            what: "values",
                            tag,
                        });
                    }
                };
                Ok(RankQuery {
                    key,
                    lo,
                    hi,
                    values,
                    shift: r.u8()?,
                })
            })
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { group, queries })
    }
}

/// One answer of [`GroupRankResult`]: `below:u64 above:u64 counts:list<u64>` where `counts` are
/// the bucket counts or the order keys in the range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankAnswer {
    /// Values below the range.
    pub below: u64,
    /// Values above the range.
    pub above: u64,
    /// Bucket counts, or the order keys in the range (ascending).
    pub counts: Vec<u64>,
}

/// Result of [`op::VEC_GROUP_RANK`]: `list<RankAnswer>`, one per query, in query order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRankResult(pub Vec<RankAnswer>);

impl AgentMessage for GroupRankResult {
    fn write(&self, w: &mut Writer) {
        w.count(self.0.len());
        for a in &self.0 {
            w.u64(a.below).u64(a.above).count(a.counts.len());
            for &c in &a.counts {
                w.u64(c);
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let n = r.count(20)?;
        let answers = (0..n)
            .map(|_| {
                let (below, above) = (r.u64()?, r.u64()?);
                let k = r.count(8)?;
                let counts = (0..k).map(|_| r.u64()).collect::<Result<_, _>>()?;
                Ok(RankAnswer {
                    below,
                    above,
                    counts,
                })
            })
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self(answers))
    }
}

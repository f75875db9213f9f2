//! Far-vector references, output specs, and the gather/argsort/unique messages.

use super::*;

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

/// Arguments of [`op::VEC_GATHER_SUM`]: `values:VecRef idx:VecRef offsets:VecRef scale:f64
/// shift:f64 OutSpec`. `values` is `f64`, `idx` is `u32`, `offsets` is `u64` and non-decreasing,
/// with its last element at most `idx.len()`. The output is an `f64` vector of
/// `offsets.len() - 1` elements:
/// `out[v] = shift + scale * (values[idx[offsets[v]]] + ... + values[idx[offsets[v + 1] - 1]])`,
/// the sum taken from `0.0` left to right.
#[derive(Clone, Debug, PartialEq)]
pub struct GatherSumArgs {
    /// The values gathered (`f64`).
    pub values: VecRef,
    /// Indices into `values` (`u32`), segment after segment.
    pub idx: VecRef,
    /// Where each segment starts in `idx` (`u64`), and where the last one ends.
    pub offsets: VecRef,
    /// Factor applied to each segment's sum.
    pub scale: f64,
    /// Added to each scaled sum.
    pub shift: f64,
    /// Where the sums go.
    pub out: OutSpec,
}

impl AgentMessage for GatherSumArgs {
    fn write(&self, w: &mut Writer) {
        self.values.write(w);
        self.idx.write(w);
        self.offsets.write(w);
        w.u64(self.scale.to_bits()).u64(self.shift.to_bits());
        self.out.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        Ok(Self {
            values: VecRef::read(r)?,
            idx: VecRef::read(r)?,
            offsets: VecRef::read(r)?,
            scale: f64::from_bits(r.u64()?),
            shift: f64::from_bits(r.u64()?),
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

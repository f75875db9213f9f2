//! Aggregates and the group-by messages.

use super::*;

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

/// The two middle values of a group's sorted values, `(lower, upper)`: their mean is the median.
pub type Middles = (Scalar, Scalar);

/// Result of [`op::VEC_GROUP_MEDIAN`]:
/// `key_type:u8 groups:list<key:Scalar Aggregates has_median:u8 lower:Scalar upper:Scalar>`,
/// ascending by key. A group's median is given by its two middle values: the lower (element
/// `(n - 1) / 2` of its non-NaN values sorted in the total order) and the upper (element
/// `n / 2`), equal for an odd count; absent when a group has only NaNs.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMedianResult {
    /// Element type of the key column.
    pub key_ty: ElemType,
    /// `(key, aggregates, (lower, upper) middle values)`, ascending by key.
    pub groups: Vec<(Scalar, Aggregates, Option<Middles>)>,
}

impl AgentMessage for GroupMedianResult {
    fn write(&self, w: &mut Writer) {
        w.u8(self.key_ty as u8).count(self.groups.len());
        for (k, a, m) in &self.groups {
            w.u64(k.bits());
            a.write(w);
            match m {
                Some((lo, hi)) => w.u8(1).u64(lo.bits()).u64(hi.bits()),
                None => w.u8(0).u64(0).u64(0),
            };
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let key_ty = ElemType::from_tag(r.u8()?)?;
        let n = r.count(8 + 42 + 17)?;
        let groups = (0..n)
            .map(|_| {
                let k = Scalar::from_bits(key_ty.domain(), r.u64()?);
                let a = Aggregates::read(r)?;
                let m = match (r.u8()?, r.u64()?, r.u64()?) {
                    (0, _, _) => None,
                    (1, lo, hi) => Some((
                        Scalar::from_bits(a.ty.domain(), lo),
                        Scalar::from_bits(a.ty.domain(), hi),
                    )),
                    (tag, _, _) => {
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

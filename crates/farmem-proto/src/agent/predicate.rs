//! Predicates and the filter/count messages.

use super::*;

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

pub(super) fn write_pred(w: &mut Writer, p: &Predicate) {
    w.u8(p.cmp as u8).u64(p.a.bits()).u64(p.b.bits());
}

pub(super) fn read_pred(r: &mut Reader<'_>, d: Domain) -> Result<Predicate, AgentDecodeError> {
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

//! The derive message.

use super::*;

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

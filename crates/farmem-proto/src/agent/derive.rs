//! The derive message.

use super::*;
use crate::expr::{Expr, ExprError, Type};

/// Arguments of [`op::VEC_DERIVE`]: `expr:Expr inputs:list<VecRef> OutSpec` (see
/// [`crate::expr`] for the expression encoding). All inputs must have the same length (their
/// chunking may differ); the output has that length and element type [`DeriveArgs::out_type`].
/// Decoding checks the expression's limits and types against the inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct DeriveArgs {
    /// The expression; `Expr::Col(i)` is `inputs[i]`.
    pub expr: Expr,
    /// Its input columns.
    pub inputs: Vec<VecRef>,
    /// Where the result goes.
    pub out: OutSpec,
}

impl DeriveArgs {
    /// The type of the expression over these inputs.
    ///
    /// # Errors
    /// [`ExprError`] when it does not type-check.
    pub fn expr_type(&self) -> Result<Type, ExprError> {
        let types: Vec<Type> = self.inputs.iter().map(|v| Type::from(v.ty)).collect();
        self.expr.type_of(&types)
    }

    /// Element type of the output column (`bool` results are stored as `u8` 0/1).
    ///
    /// # Errors
    /// [`ExprError`] when the expression does not type-check.
    pub fn out_type(&self) -> Result<ElemType, ExprError> {
        self.expr_type().map(Type::elem)
    }
}

impl AgentMessage for DeriveArgs {
    fn write(&self, w: &mut Writer) {
        self.expr.write(w);
        w.count(self.inputs.len());
        for v in &self.inputs {
            v.write(w);
        }
        self.out.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let expr = Expr::read(r)?;
        let n = r.count(5)?;
        let inputs = (0..n).map(|_| VecRef::read(r)).collect::<Result<_, _>>()?;
        let out = OutSpec::read(r)?;
        let args = Self { expr, inputs, out };
        args.expr_type()?;
        Ok(args)
    }
}
